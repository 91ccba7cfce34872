"""
Command line: ``python -m airflow_provider_atscale.emulator [--port 8711] [options]``.

Prints ``AtScale emulator listening on <url>`` and ``Demo API token: <token>`` first, one line each, then the
catalogs and models, and serves until SIGINT or SIGTERM, both handled from before the server starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from uvicorn.config import LOGGING_CONFIG

from airflow_provider_atscale.emulator.config import (
    DEFAULT_BUILD_SECONDS,
    DEFAULT_INSTANCES_ROW_LIMIT,
    DEFAULT_QUEUE_SECONDS,
    CatalogConfig,
    EmulatorConfig,
    FaultConfig,
)
from airflow_provider_atscale.emulator.server import (
    DEFAULT_HOST,
    EmulatorServer,
    install_stop_handlers,
    serve_until_signalled,
)

DEFAULT_PORT = 8711


def build_parser() -> argparse.ArgumentParser:
    """Return the command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_atscale.emulator",
        description="Serve a local emulator of the AtScale engine REST API.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 for any free one")
    parser.add_argument(
        "--queue-seconds", type=float, default=DEFAULT_QUEUE_SECONDS, help="time batches are new"
    )
    parser.add_argument(
        "--build-seconds", type=float, default=DEFAULT_BUILD_SECONDS, help="time batches build"
    )
    parser.add_argument("--no-batch-history", action="store_true", help="answer 403 to all at batch history")
    parser.add_argument(
        "--instances-row-limit",
        type=int,
        default=DEFAULT_INSTANCES_ROW_LIMIT,
        help="most rows of an instances answer, 0 for all",
    )
    parser.add_argument(
        "--faults",
        type=_fault_config,
        default="{}",
        metavar="JSON",
        help='faults at start, as PUT /_emulator/faults takes them, e.g. \'{"rate_503": 0.1, "seed": 7}\'',
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser


def _fault_config(text: str) -> FaultConfig:
    try:
        return FaultConfig(**json.loads(text))
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object of FaultConfig fields: {exc}") from exc


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """
    Build the emulator configuration from a parsed command line.

    :param args: Result of ``build_parser().parse_args()``.
    :raises ValueError: For an invalid value.
    """
    return EmulatorConfig(
        default_queue_seconds=args.queue_seconds,
        default_build_seconds=args.build_seconds,
        serve_batch_history=not args.no_batch_history,
        instances_row_limit=args.instances_row_limit or None,
        faults=args.faults,
    )


def main(argv: Sequence[str] | None = None, *, extra_catalogs: Sequence[CatalogConfig] = ()) -> int:
    """
    Run the emulator until SIGINT or SIGTERM.

    :param argv: Command line arguments without the program name; defaults to ``sys.argv[1:]``.
    :param extra_catalogs: Catalogs served beside the demo catalog (a test harness's own).
    :return: Exit status.
    """
    stop = install_stop_handlers()  # before anything starts or prints: whoever runs it may signal at once
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    config = dataclasses.replace(config, catalogs=(*config.catalogs, *extra_catalogs))
    server = EmulatorServer(
        config, host=args.host, port=args.port, log_level=args.log_level, log_config=LOGGING_CONFIG
    )
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        print(f"Cannot start the emulator on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"AtScale emulator listening on {server.url}", flush=True)
    print(f"Demo API token: {server.token}", flush=True)
    for catalog in config.catalogs:
        for model in catalog.models:
            outcome = "fails" if model.fail else "builds"
            print(f"Catalog {catalog.id} model {model.id} ({model.name}, {outcome})", flush=True)
    return serve_until_signalled(server, stop)


if __name__ == "__main__":
    sys.exit(main())
