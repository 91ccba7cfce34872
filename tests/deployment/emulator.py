"""
The AtScale emulator of the deployment tests: ``python -m airflow_provider_atscale.emulator`` with the same
options, serving the deployment tests' catalog (``deployment_catalog``) next to its demo catalog, and
accepting each ``--api-token`` given besides the demo token.

Run from the project root: ``python -m tests.deployment.emulator --port 8711 --api-token <token> ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from uvicorn.config import LOGGING_CONFIG

from airflow_provider_atscale.emulator import CatalogConfig, ModelConfig, default_catalogs
from airflow_provider_atscale.emulator.__main__ import build_parser, config_from_args
from airflow_provider_atscale.emulator.server import (
    EmulatorServer,
    install_stop_handlers,
    serve_until_signalled,
)
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
    Serve until SIGINT or SIGTERM, as the emulator's command line does, with the deployment catalog and the
    extra API tokens too. The emulator's ``main`` takes extra catalogs but no extra tokens, so this is its
    body with both.

    :param argv: the emulator's command line options and ``--api-token``; defaults to ``sys.argv[1:]``.
    :return: exit status.
    """
    stop = install_stop_handlers()  # first: the deployment may stop this process as soon as it starts
    # Read apart from the emulator's own options, so that a flag of the same name there cannot clash.
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--api-token", action="append", default=[], metavar="TOKEN")
    tokens, rest = extra.parse_known_args(argv)
    args = build_parser().parse_args(rest)
    config = config_from_args(args)
    config = dataclasses.replace(
        config,
        catalogs=(*config.catalogs, deployment_catalog()),
        api_tokens=(*config.api_tokens, *tokens.api_token),
    )
    server = EmulatorServer(
        config, host=args.host, port=args.port, log_level=args.log_level, log_config=LOGGING_CONFIG
    ).start()
    print(f"AtScale emulator listening on {server.url}", flush=True)
    return serve_until_signalled(server, stop)


if __name__ == "__main__":
    sys.exit(main())
