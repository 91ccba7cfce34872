"""
The AtScale emulator as the benchmarks serve it, in a process of its own.

``python -m benchmarks.emulator_process [--models N --build-range LO HI] [--fixed S ...] [--failing]``

A separate process, so the server does not share the benchmark's interpreter lock and skew its figures.
Compared with ``python -m airflow_provider_atscale.emulator`` it adds:

- models made for the benchmark: ``--models`` models whose batches each draw their build time at random
  (seeded) from ``--build-range``, so batches end at random over a span; ``--fixed`` models whose every
  batch builds for a known time; ``--failing`` adds the emulator's failing model, drawing build times too.
- the client port of every request, served at ``GET /_bench/requests``: a TCP connection keeps one client
  port, so the distinct ports seen are the connections the clients opened.

Prints ``AtScale emulator listening on <url>``, then one line ``BENCH_EMULATOR <json>`` describing the
models, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from airflow_provider_atscale.emulator import (
    DEFAULT_CATALOG_ID,
    DEFAULT_MODEL_ID,
    FAILING_MODEL_ID,
    BatchRecord,
    CatalogConfig,
    Clock,
    EmulatorConfig,
    EmulatorServer,
    EmulatorState,
    ModelConfig,
    create_app,
    default_catalogs,
    install_stop_handlers,
    serve_until_signalled,
)

READY_PREFIX = "BENCH_EMULATOR "
REQUESTS_PATH = "/_bench/requests"
_MODEL_NAMESPACE = uuid.UUID("6f0e3a52-0d1b-4c8e-9d7e-3a9b1c2d4e5f")


@dataclass(frozen=True)
class ModelPlan:
    """
    One model the benchmark emulator serves.

    :param id: the model id.
    :param build_seconds: every batch's build time, or ``None`` where each batch draws its own.
    :param fail: whether the model's batches end ``failed``.
    """

    id: str
    build_seconds: float | None
    fail: bool

    def to_json(self) -> dict[str, Any]:
        """The plan as printed for the benchmark."""
        return {"id": self.id, "build_seconds": self.build_seconds, "fail": self.fail}


def bench_model_id(index: int) -> str:
    """
    A stable model id for the benchmark's ``index``-th model.

    :param index: the model's position.
    """
    return str(uuid.uuid5(_MODEL_NAMESPACE, f"model-{index}"))


def plan_models(drawn: int, fixed: Sequence[float], failing: bool) -> list[ModelPlan]:
    """
    The models to serve: ``drawn`` with random build times, one per ``fixed`` time, and the failing one.

    :param drawn: how many models draw a build time per batch.
    :param fixed: the build time of each fixed model.
    :param failing: add the emulator's failing model (drawing build times).
    """
    plans = [ModelPlan(bench_model_id(index), None, False) for index in range(drawn)]
    plans += [ModelPlan(bench_model_id(drawn + index), seconds, False) for index, seconds in enumerate(fixed)]
    if failing:
        plans.append(ModelPlan(FAILING_MODEL_ID, None, True))
    return plans


def build_config(plans: Sequence[ModelPlan], queue_seconds: float) -> EmulatorConfig:
    """
    The emulator configuration serving ``plans`` in the default catalog.

    Good models build the default model's aggregates; the failing model keeps its own (and their messages).

    :param plans: the models.
    :param queue_seconds: how long every batch stays ``new``.
    """
    defaults = {model.id: model for model in default_catalogs()[0].models}
    models = tuple(
        ModelConfig(
            id=plan.id,
            name=f"Benchmark model {index}" if not plan.fail else defaults[FAILING_MODEL_ID].name,
            aggregates=defaults[FAILING_MODEL_ID if plan.fail else DEFAULT_MODEL_ID].aggregates,
            queue_seconds=queue_seconds,
            build_seconds=plan.build_seconds,
            fail=plan.fail,
        )
        for index, plan in enumerate(plans)
    )
    catalog = CatalogConfig(id=DEFAULT_CATALOG_ID, name="Benchmark catalog", models=models)
    return EmulatorConfig(catalogs=(catalog,), default_queue_seconds=queue_seconds)


class DrawnDurationState(EmulatorState):
    """
    Emulator state in which every batch of the models without a fixed build time draws its own.

    :param config: what to serve.
    :param clock: the server's clock.
    :param drawn_models: ids of the models whose batches draw a build time.
    :param build_range: the uniform range drawn from, in seconds.
    :param seed: seed of the draws.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        clock: Clock,
        drawn_models: frozenset[str],
        build_range: tuple[float, float],
        seed: int,
    ) -> None:
        super().__init__(config, clock)
        self._drawn_models = drawn_models
        self._build_range = build_range
        self._random = random.Random(seed)

    def create_batch(
        self,
        catalog_id: str,
        model_id: str,
        *,
        is_full_build: bool,
        grace_period_overrides: Mapping[str, Any] | None = None,
    ) -> BatchRecord:
        """Draw the new batch's build time (for a drawing model), then create it as the emulator does."""
        if model_id in self._drawn_models:
            # Routes run on the server's event loop thread, one at a time: nothing runs in between.
            self.configure_model(model_id, build_seconds=self._random.uniform(*self._build_range))
        return super().create_batch(
            catalog_id, model_id, is_full_build=is_full_build, grace_period_overrides=grace_period_overrides
        )


class ClientPortLog:
    """
    ASGI middleware recording each request's client port, method, path and model; serves the record.

    :param app: the emulator's application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.entries: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == REQUESTS_PATH:
            await JSONResponse(self.entries)(scope, receive, send)
            return
        if not scope["path"].startswith("/_emulator"):
            self.entries.append(_entry(scope))
        # The emulator's own middleware needs uvicorn's send as it is, to drop connections.
        await self.app(scope, receive, send)


def _entry(scope: Scope) -> dict[str, Any]:
    query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    path: str = scope["path"]
    model_id = query.get("modelId")
    if model_id is None and "/models/" in path:
        model_id = path.rsplit("/models/", 1)[1]
    client = scope.get("client") or ("", 0)
    return {"port": client[1], "method": scope["method"], "path": path, "model_id": model_id}


def start_server(args: argparse.Namespace) -> tuple[EmulatorServer, list[ModelPlan]]:
    """
    Start the emulator described by the command line.

    :param args: the parsed command line.
    """
    plans = plan_models(args.models, args.fixed, args.failing)
    config = build_config(plans, args.queue_seconds)
    server = EmulatorServer(config, port=args.port, log_level="warning")
    drawn = frozenset(plan.id for plan in plans if plan.build_seconds is None)
    server.state = DrawnDurationState(config, server.clock, drawn, tuple(args.build_range), args.seed)
    server.app = ClientPortLog(create_app(server.state, server.faults, server.request_log, server.tokens))
    return server.start(), plans


def build_parser() -> argparse.ArgumentParser:
    """The command line parser."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emulator_process", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 for any free one")
    parser.add_argument("--models", type=int, default=0, help="models whose batches draw a build time")
    parser.add_argument("--build-range", type=float, nargs=2, default=(10.0, 60.0), metavar=("LO", "HI"))
    parser.add_argument("--fixed", type=float, nargs="*", default=[], help="one model per build time")
    parser.add_argument("--failing", action="store_true", help="add the failing model (drawn times)")
    parser.add_argument("--queue-seconds", type=float, default=0.5, help="time every batch stays new")
    parser.add_argument("--seed", type=int, default=20250227)
    return parser


def main() -> int:
    """Serve until SIGTERM or SIGINT."""
    stop = install_stop_handlers()  # before anything starts or prints: the benchmark may signal at once
    args = build_parser().parse_args()
    server, plans = start_server(args)
    ready = {
        "url": server.url,
        "token": server.token,
        "catalog_id": DEFAULT_CATALOG_ID,
        "queue_seconds": args.queue_seconds,
        "models": [plan.to_json() for plan in plans],
    }
    print(f"AtScale emulator listening on {server.url}", flush=True)
    print(READY_PREFIX + json.dumps(ready), flush=True)
    return serve_until_signalled(server, stop)


if __name__ == "__main__":
    sys.exit(main())
