"""
The AtScale emulator of the deployment tests: ``python -m airflow_provider_atscale.emulator`` with the same
options, serving the deployment tests' catalog (``deployment_catalog``) next to its demo catalog.

Run from the project root: ``python -m tests.deployment.emulator --port 8711 --queue-seconds 1 ...``.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from uvicorn.config import LOGGING_CONFIG

from airflow_provider_atscale.emulator import (
    CatalogConfig,
    EmulatorConfig,
    EmulatorServer,
    ModelConfig,
    default_catalogs,
    install_stop_handlers,
    serve_until_signalled,
)
from airflow_provider_atscale.emulator.__main__ import build_parser, config_from_args
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


def config_with_deployment_catalog(config: EmulatorConfig) -> EmulatorConfig:
    """
    ``config`` with the deployment catalog added to its catalogs.

    :param config: the configuration the emulator's command line made.
    """
    return dataclasses.replace(config, catalogs=(*config.catalogs, deployment_catalog()))


def main(argv: Sequence[str] | None = None) -> int:
    """
    Serve until SIGINT or SIGTERM, as the emulator's command line does.

    :param argv: the emulator's command line options; defaults to ``sys.argv[1:]``.
    :return: exit status.
    """
    stop = install_stop_handlers()  # before anything starts or prints: whoever runs it may signal at once
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_with_deployment_catalog(config_from_args(args))
    except ValueError as exc:
        parser.error(str(exc))
    server = EmulatorServer(
        config,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        log_config=LOGGING_CONFIG,
    )
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        print(f"Cannot start the emulator on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    models = sum(len(catalog.models) for catalog in config.catalogs)
    print(f"AtScale emulator listening on {server.url}: {models} models", flush=True)
    return serve_until_signalled(server, stop)


if __name__ == "__main__":
    sys.exit(main())
