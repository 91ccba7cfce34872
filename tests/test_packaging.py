"""
The built package: the sdist and wheel `make dist` makes, checked with twine, and the wheel installed into
a fresh virtualenv, where Airflow must find the provider and its connection type.

The fresh virtualenv installs the wheel with the versions of the environment running the tests as
constraints, so pip resolves nothing new and reads every download from its cache: about 30 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_atscale import __version__
from tests.conftest import _ROOT

pytestmark = pytest.mark.slow

PACKAGE = "airflow_provider_atscale"


def run(*command: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output if it fails."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, the wheel built from the sdist (so the sdist is complete)."""
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: hatchling comes from the test environment, so nothing is downloaded.
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, _ROOT)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (path,) = dist.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its bin directory."""
    root = tmp_path_factory.mktemp("wheel-venv")
    venv = root / "venv"
    constraints = root / "constraints.txt"
    frozen = run(sys.executable, "-m", "pip", "freeze", "--exclude-editable").stdout
    constraints.write_text(frozen)
    run(sys.executable, "-m", "venv", venv)
    bin_dir = venv / "bin"
    run(
        bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check",
        "--constraint", constraints, wheel,
    )  # fmt: skip
    return bin_dir


def airflow_json(bin_dir: Path, *args: str) -> Any:
    """Run the virtualenv's `airflow` CLI with JSON output, in a throwaway AIRFLOW_HOME."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(bin_dir.parent / "airflow-home")
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    # Airflow 3.0 logs to stdout before the JSON.
    env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    output = run(bin_dir / "airflow", *args, "--output", "json", env=env, cwd=bin_dir).stdout
    (document,) = [line for line in output.splitlines() if line.startswith(("[{", "[]"))]
    return json.loads(document)


def test_wheel_carries_the_package_py_typed_and_the_emulator_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()

    assert f"{PACKAGE}/py.typed" in names
    assert f"{PACKAGE}/emulator/__init__.py" in names
    assert f"{PACKAGE}/hooks/atscale.py" in names
    dist_info = f"{PACKAGE}-{__version__}.dist-info/"
    assert [n for n in names if not n.startswith((f"{PACKAGE}/", dist_info))] == []
    assert [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))] == []
    assert [n for n in names if "/tests/" in n or Path(n).name.startswith(("test_", "conftest"))] == []


def test_wheel_metadata_declares_the_airflow_range_and_the_provider_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"{PACKAGE}-{__version__}.dist-info/METADATA").decode()
        entry_points = archive.read(f"{PACKAGE}-{__version__}.dist-info/entry_points.txt").decode()

    assert "Requires-Dist: apache-airflow<4,>=2.11" in metadata.splitlines()
    assert f"provider_info = {PACKAGE}:get_provider_info" in entry_points


def test_twine_accepts_the_sdist_and_the_wheel(dist: Path) -> None:
    files = sorted(dist.iterdir())

    result = run(sys.executable, "-m", "twine", "check", "--strict", *files)

    assert result.stdout.count("PASSED") == len(files) == 2


def test_airflow_lists_the_installed_provider_with_its_version(installed: Path) -> None:
    providers = airflow_json(installed, "providers", "list")

    assert {"package_name": "airflow-provider-atscale", "version": __version__} in [
        {"package_name": p["package_name"], "version": p["version"]} for p in providers
    ]


def test_airflow_registers_the_atscale_connection_type(installed: Path) -> None:
    hooks = airflow_json(installed, "providers", "hooks")

    (atscale,) = [hook for hook in hooks if hook["connection_type"] == "atscale"]
    assert atscale["class"] == f"{PACKAGE}.hooks.atscale.AtScaleHook"
    assert atscale["package_name"] == "airflow-provider-atscale"
