"""
The AtScale emulator of the deployment tests: ``python -m airflow_provider_atscale.emulator`` with the same
options, serving the deployment tests' catalog (``deployment_catalog``) next to its demo catalog.

Run from the project root: ``python -m tests.deployment.emulator --port 8711 --queue-seconds 1 ...``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from airflow_provider_atscale.emulator import CatalogConfig, ModelConfig, default_catalogs
from airflow_provider_atscale.emulator.__main__ import main as emulator_main
from tests.deployment.dags.deployment_catalog import CATALOG_ID, CATALOG_NAME, GROUPS


def deployment_catalog() -> CatalogConfig:
    """The catalog of every model the deployment scenarios build, each timed as its scenario needs."""
    # The demo model's aggregates: what a batch materializes does not matter to these scenarios.
    aggregates = next(
        model.aggregates for catalog in default_catalogs() for model in catalog.models if not model.fail
    )
    models = tuple(
        ModelConfig(
            id=model_id,
            name=name,
            aggregates=aggregates,
            queue_seconds=group.queue_seconds,
            build_seconds=group.build_seconds,
        )
        for group in GROUPS
        for name, model_id in zip(group.model_names, group.model_ids, strict=True)
    )
    return CatalogConfig(id=CATALOG_ID, name=CATALOG_NAME, models=models)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Serve until SIGINT or SIGTERM, as the emulator's command line does, with the deployment catalog too.

    :param argv: the emulator's command line options; defaults to ``sys.argv[1:]``.
    :return: exit status.
    """
    return emulator_main(argv, extra_catalogs=(deployment_catalog(),))


if __name__ == "__main__":
    sys.exit(main())
