"""
Command line: ``python -m airflow_provider_atscale.emulator [--port 8711] [options]``.

Prints ``AtScale emulator listening on <url>`` and ``Demo API token: <token>`` (one line each, first),
then serves until SIGINT or SIGTERM. Faults can be replaced while it runs with ``PUT <url>/_emulator/faults``
and a JSON body of :class:`~airflow_provider_atscale.emulator.config.FaultConfig` fields (fields left out
take their defaults); ``GET <url>/_emulator/requests`` lists the recorded requests.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from uvicorn.config import LOGGING_CONFIG

from airflow_provider_atscale.emulator.config import (
    DEFAULT_BUILD_SECONDS,
    DEFAULT_QUEUE_SECONDS,
    DEFAULT_REFRESH_TOKEN_TTL_SECONDS,
    DEFAULT_TOKEN_TTL_SECONDS,
    DEMO_TOKEN,
    DROP_MODES,
    EmulatorConfig,
    FaultConfig,
    default_catalogs,
)
from airflow_provider_atscale.emulator.server import DEFAULT_HOST, EmulatorServer, serve_until_signalled

DEFAULT_PORT = 8711


def build_parser() -> argparse.ArgumentParser:
    """Return the command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_atscale.emulator",
        description="Serve a local emulator of the AtScale engine REST API.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 for any free port")
    models = parser.add_argument_group("batches")
    models.add_argument("--queue-seconds", type=float, default=DEFAULT_QUEUE_SECONDS, help="time spent 'new'")
    models.add_argument(
        "--build-seconds", type=float, default=DEFAULT_BUILD_SECONDS, help="time spent 'inprogress'"
    )
    models.add_argument(
        "--fail-model", action="append", default=[], metavar="MODEL_ID", help="make this model's batches fail"
    )
    models.add_argument(
        "--disable-batch-history",
        action="store_true",
        help="answer 404 on /wapi/p/aggregate/batch-history, as servers without it do",
    )
    auth = parser.add_argument_group("authentication")
    auth.add_argument(
        "--api-token", action="append", default=[], metavar="TOKEN", help="accept this API token too"
    )
    auth.add_argument(
        "--token-ttl", type=float, default=DEFAULT_TOKEN_TTL_SECONDS, help="access token lifetime"
    )
    auth.add_argument(
        "--refresh-token-ttl",
        type=float,
        default=DEFAULT_REFRESH_TOKEN_TTL_SECONDS,
        help="refresh token lifetime",
    )
    auth.add_argument("--client-secret", help="client secret the password grant must send")
    faults = parser.add_argument_group("faults (rates are probabilities per request)")
    faults.add_argument("--seed", type=int, default=0, help="seed of the fault generator")
    faults.add_argument("--rate-503", type=float, default=0.0)
    faults.add_argument("--rate-429", type=float, default=0.0)
    faults.add_argument("--retry-after", type=int, default=1, help="seconds announced with a 429")
    faults.add_argument(
        "--retry-after-http-date", action="store_true", help="send Retry-After as an HTTP date"
    )
    faults.add_argument("--rate-500", type=float, default=0.0, help="process the request, then answer 500")
    faults.add_argument("--rate-drop-before", type=float, default=0.0, help="drop without processing")
    faults.add_argument(
        "--rate-drop-after", type=float, default=0.0, help="process, then drop the connection"
    )
    faults.add_argument(
        "--drop-mode", choices=DROP_MODES, default="close", help="how connections are dropped"
    )
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added before each answer")
    faults.add_argument("--rate-slow", type=float, default=0.0, help="share of requests answered late")
    faults.add_argument("--slow-seconds", type=float, default=0.5, help="how late a slow answer comes")
    logs = parser.add_argument_group("logging")
    logs.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    logs.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """
    Build the emulator configuration from parsed command line arguments.

    :param args: Result of :func:`build_parser` ``().parse_args()``.
    :raises ValueError: For an unknown model id or an invalid value.
    """
    catalogs = default_catalogs()
    known = {model.id for catalog in catalogs for model in catalog.models}
    unknown = sorted(set(args.fail_model) - known)
    if unknown:
        raise ValueError(
            f"Unknown model id(s) for --fail-model: {', '.join(unknown)}; known: {', '.join(known)}"
        )
    catalogs = tuple(
        dataclasses.replace(
            catalog,
            models=tuple(
                dataclasses.replace(model, fail=True) if model.id in args.fail_model else model
                for model in catalog.models
            ),
        )
        for catalog in catalogs
    )
    faults = FaultConfig(
        seed=args.seed,
        rate_503=args.rate_503,
        rate_429=args.rate_429,
        retry_after=args.retry_after,
        retry_after_http_date=args.retry_after_http_date,
        rate_500=args.rate_500,
        rate_drop_before=args.rate_drop_before,
        rate_drop_after=args.rate_drop_after,
        drop_mode=args.drop_mode,
        latency_seconds=args.latency,
        rate_slow=args.rate_slow,
        slow_seconds=args.slow_seconds,
        token_ttl_seconds=args.token_ttl,
    )
    return EmulatorConfig(
        catalogs=catalogs,
        api_tokens=(DEMO_TOKEN, *args.api_token),
        client_secret=args.client_secret,
        refresh_token_ttl_seconds=args.refresh_token_ttl,
        default_queue_seconds=args.queue_seconds,
        default_build_seconds=args.build_seconds,
        serve_batch_history=not args.disable_batch_history,
        faults=faults,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the emulator until SIGINT or SIGTERM.

    :param argv: Command line arguments without the program name; defaults to ``sys.argv[1:]``.
    :return: Exit status.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
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
    print(f"AtScale emulator listening on {server.url}", flush=True)
    print(f"Demo API token: {server.token}", flush=True)
    for catalog in config.catalogs:
        for model in catalog.models:
            outcome = "fails" if model.fail else "builds"
            print(f"Catalog {catalog.id} model {model.id} ({model.name}, {outcome})", flush=True)
    return serve_until_signalled(server)


if __name__ == "__main__":
    sys.exit(main())
