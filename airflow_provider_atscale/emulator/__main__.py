"""
Command line: ``python -m airflow_provider_atscale.emulator [--port 8711] [options]``.

Prints ``AtScale emulator listening on <url>`` and ``Demo API token: <token>`` (one line each, first),
then serves until SIGINT or SIGTERM. Both signals are handled from before the server starts, so a
supervisor may send one as soon as it reads the first line. Faults can be replaced while it runs with
``PUT <url>/_emulator/faults`` and a JSON body of
:class:`~airflow_provider_atscale.emulator.config.FaultConfig` fields (fields left out take their
defaults); ``GET <url>/_emulator/requests`` lists the recorded requests.

Every option of :class:`~airflow_provider_atscale.emulator.config.EmulatorConfig` and
:class:`~airflow_provider_atscale.emulator.config.FaultConfig` with a plain type (number, text, flag,
choice) is a flag named after its field, with the field's documentation as its help; the catalogs, tokens
and clients have flags of their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, Union

from uvicorn.config import LOGGING_CONFIG

from airflow_provider_atscale.emulator.config import (
    DEMO_TOKEN,
    CatalogConfig,
    ClientConfig,
    EmulatorConfig,
    FaultConfig,
    default_catalogs,
)
from airflow_provider_atscale.emulator.server import (
    DEFAULT_HOST,
    EmulatorServer,
    install_stop_handlers,
    serve_until_signalled,
)

DEFAULT_PORT = 8711
# Flags whose names predate their generation from the configuration fields.
FLAG_NAMES = {
    "default_queue_seconds": "--queue-seconds",
    "default_build_seconds": "--build-seconds",
    "latency_seconds": "--latency",
    "token_ttl_seconds": "--token-ttl",
    "refresh_token_ttl_seconds": "--refresh-token-ttl",
    "serve_batch_history": "--batch-history",
}
NONE_VALUE = "none"


def build_parser() -> argparse.ArgumentParser:
    """Return the command line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_atscale.emulator",
        description="Serve a local emulator of the AtScale engine REST API.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind, 0 for any free port")
    server = parser.add_argument_group("server")
    add_config_options(server, EmulatorConfig)
    server.add_argument(
        "--fail-model", action="append", default=[], metavar="MODEL_ID", help="make this model's batches fail"
    )
    server.add_argument(
        "--api-token", action="append", default=[], metavar="TOKEN", help="accept this API token too"
    )
    server.add_argument(
        "--client-secret",
        action="append",
        default=[],
        type=_client,
        metavar="CLIENT_ID=SECRET",
        help="make this OAuth client confidential with this secret (or change the secret of one that is)",
    )
    faults = parser.add_argument_group("faults (rates are probabilities per request)")
    add_config_options(faults, FaultConfig)
    logs = parser.add_argument_group("logging")
    logs.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    logs.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def add_config_options(group: argparse._ArgumentGroup, config_class: type[Any]) -> None:
    """
    Add a flag for every field of a configuration data class whose type a flag can carry.

    :param group: Where the flags go.
    :param config_class: A data class whose docstring documents its fields as ``:param name: text``.
    """
    hints = typing.get_type_hints(config_class)
    docs = field_docs(config_class)
    for field in dataclasses.fields(config_class):
        options = _flag_options(hints[field.name])
        if options is None:
            continue
        default = field.default
        flag = FLAG_NAMES.get(field.name, "--" + field.name.replace("_", "-"))
        shown = NONE_VALUE if default is None else "%(default)s"
        # argparse formats help text with %: a literal one must be doubled.
        help_text = docs.get(field.name, "").replace("%", "%%")
        group.add_argument(
            flag, dest=field.name, default=default, help=f"{help_text} (default: {shown})", **options
        )


def config_values(args: argparse.Namespace, config_class: type[Any]) -> dict[str, Any]:
    """
    Return the parsed values of the flags :func:`add_config_options` added, by field name.

    :param args: Parsed command line.
    :param config_class: The data class the flags were made from.
    """
    return {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config_class)
        if field.name in args
    }


def field_docs(config_class: type[Any]) -> dict[str, str]:
    """
    Return the ``:param name: text`` entries of a class docstring, each on one line, without markup.

    :param config_class: A documented class.
    """
    docs: dict[str, str] = {}
    name = None
    for line in inspect.cleandoc(config_class.__doc__ or "").splitlines():
        match = re.match(r":param (\w+):\s*(.*)", line)
        if match:
            name = match.group(1)
            docs[name] = match.group(2)
        elif name is not None and line.startswith(" ") and line.strip():
            docs[name] += " " + line.strip()
        else:
            name = None
    return {key: text.replace("``", "") for key, text in docs.items()}


def _flag_options(hint: Any) -> dict[str, Any] | None:
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is Literal:
        return {"choices": typing.get_args(hint)}
    if hint in (int, float, str):
        return {"type": hint, "metavar": hint.__name__.upper()}
    if typing.get_origin(hint) in (Union, types.UnionType):
        kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
        if len(kinds) == 1 and kinds[0] in (int, float, str):
            return {"type": _or_none(kinds[0]), "metavar": f"{kinds[0].__name__.upper()}|{NONE_VALUE}"}
    return None


def _or_none(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() == NONE_VALUE else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _client(text: str) -> ClientConfig:
    client_id, separator, secret = text.partition("=")
    if not separator or not client_id or not secret:
        raise argparse.ArgumentTypeError(f"expected CLIENT_ID=SECRET, got {text!r}")
    return ClientConfig(client_id, secret)


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
            f"Unknown model id(s) for --fail-model: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
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
    secrets = {client.id: client for client in args.client_secret}
    clients = tuple(secrets.pop(client.id, client) for client in EmulatorConfig().clients)
    return EmulatorConfig(
        catalogs=catalogs,
        api_tokens=(DEMO_TOKEN, *args.api_token),
        clients=(*clients, *secrets.values()),
        faults=FaultConfig(**config_values(args, FaultConfig)),
        **config_values(args, EmulatorConfig),
    )


def main(argv: Sequence[str] | None = None, *, extra_catalogs: Sequence[CatalogConfig] = ()) -> int:
    """
    Run the emulator until SIGINT or SIGTERM.

    :param argv: Command line arguments without the program name; defaults to ``sys.argv[1:]``.
    :param extra_catalogs: catalogs served beside those the command line asks for (a test harness's own).
    :return: Exit status.
    """
    stop = install_stop_handlers()  # before anything starts or prints: whoever runs it may signal at once
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    if extra_catalogs:
        config = dataclasses.replace(config, catalogs=(*config.catalogs, *extra_catalogs))
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
    return serve_until_signalled(server, stop)


if __name__ == "__main__":
    sys.exit(main())
