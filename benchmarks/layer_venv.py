"""
Create a venv layered on the running interpreter's venv: ``python benchmarks/layer_venv.py DIR``.

The new venv reads the running venv's site-packages after its own (a ``.pth`` file calls
:func:`site.addsitedir`, so the project's editable install is seen too). Packages installed into it add
to the project's venv without changing it; its pip finds everything the project venv has as installed.
"""

from __future__ import annotations

import argparse
import sysconfig
import venv
from pathlib import Path

PTH_NAME = "_project_venv.pth"


def base_site_dirs() -> list[str]:
    """The running venv's site-packages directories (pure and platform), without duplicates."""
    return list(dict.fromkeys((sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))))


def layer_site_packages(layer: Path) -> Path:
    """
    The site-packages directory of a venv created at ``layer``.

    :param layer: the venv's directory.
    """
    relative = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return layer / relative


def create_layer(layer: Path) -> None:
    """
    Create the layered venv, with pip.

    :param layer: where to create it; must not exist yet.
    """
    venv.EnvBuilder(with_pip=True, clear=False).create(layer)
    lines = [f"import site; site.addsitedir({directory!r})" for directory in base_site_dirs()]
    (layer_site_packages(layer) / PTH_NAME).write_text("\n".join(lines) + "\n")


def main() -> None:
    """Parse the command line and create the layer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("directory", type=Path, help="where to create the venv")
    args = parser.parse_args()
    create_layer(args.directory.absolute())


if __name__ == "__main__":
    main()
