"""
Requests per build, TCP connections per hook, and detection latency, in real time.

``python -m benchmarks.builds --output FILE [--poll-interval 2]``

Against the emulator, served by the fake server process (:mod:`benchmarks.fake_server`) with one model per
build, so every request can be told apart: each build of known duration ``D`` (time ``new`` plus build time)
runs through the operator, ``durable=False`` (every try posts), executed with a minimal context, in both
waiting modes at once:

- sync: ``deferrable=False``; the operator polls on its worker thread (one thread per build here);
- deferred: ``deferrable=True``; ``execute`` starts the build and defers, the trigger runs to its event on
  an event loop, and ``execute_complete`` takes the event, as Airflow does.

Requests are counted per model from the server's record and compared with the fewest that can follow a
build, ``1 + ceil(D / poll_interval)`` (one POST, one GET per interval until the end). Connections are the
distinct client ports the server saw per hook (a TCP connection keeps its port while it lives), and for the
triggers, which share their event loop's connection pool, the ports of that pool. Detection latency is the
time from the batch's end (its ``endTime`` in the emulator) to the moment the task knows: the operator's
wait returns (sync) or the trigger emits its event (deferred).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.fake_server import running_fake_server
from benchmarks.report import BenchResult, Figure, verdict

REQUESTS_SECTION = "3. Requests per build"
LATENCY_SECTION = "4. Detection latency"
BUILD_SECONDS = (2.2, 4.7, 7.0, 9.3)
QUEUE_SECONDS = 0.5
LONG_POLL_INTERVAL = 6.0
"""Longer than httpx's default keep-alive expiry (5 s): does a hook keep its connection across a long idle?"""
LONG_POLL_BUILD_SECONDS = 9.3
LATENCY_SLACK_SECONDS = 1.0
MODES = ("sync", "deferred")


@dataclass(frozen=True)
class Build:
    """
    One build: how it waits, on which model, how long it takes and how often it is polled.

    :param mode: ``sync`` or ``deferred``.
    :param model_id: the model built (one model per build).
    :param duration: seconds from the batch's creation to its end.
    :param poll_interval: seconds between polls.
    :param long_poll: polled every :data:`LONG_POLL_INTERVAL`, for connections only.
    """

    mode: str
    model_id: str
    duration: float
    poll_interval: float
    long_poll: bool


@dataclass(frozen=True)
class Measured:
    """
    One build as the task saw it and as the server saw it.

    :param build: the build.
    :param status: the final status the task returned.
    :param requests: POSTs plus GETs for the build.
    :param minimum: the fewest requests that can follow it.
    :param hook_ports: client ports of the build's own hook: every request of a sync wait, the operator's
        POST of a deferred one (its trigger polls through the pool the event loop's triggers share).
    :param poll_ports: client ports of the GETs.
    :param latency: seconds from the batch's end to the task knowing.
    """

    build: Build
    status: str
    requests: int
    minimum: int
    hook_ports: frozenset[int]
    poll_ports: frozenset[int]
    latency: float


def _context() -> dict[str, Any]:
    """The slice of a task's context the operator uses: a task instance that takes XCom pushes."""
    return {"ti": SimpleNamespace(xcom_push=lambda key, value: None)}


def make_operator(build: Build, catalog_id: str) -> Any:
    """
    The operator for one build, as a DAG would declare it.

    :param build: the build.
    :param catalog_id: the catalog.
    """
    from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator

    return AtScaleAggregateBuildOperator(
        task_id=f"{build.mode}_{build.model_id[:8]}",
        catalog_id=catalog_id,
        model_id=build.model_id,
        full_build=True,
        poll_interval=build.poll_interval,
        deferrable=build.mode == "deferred",
        durable=False,
    )


async def run_deferred(build: Build, catalog_id: str) -> tuple[Build, dict[str, Any], float]:
    """
    Execute the operator in deferrable mode: start and defer, run the trigger, resume with its event.

    :param build: the build.
    :param catalog_id: the catalog.
    """
    from airflow.sdk.exceptions import TaskDeferred

    operator = make_operator(build, catalog_id)
    context = _context()
    try:
        # The POST is a blocking call in the task, as on a worker: keep it off this event loop.
        await asyncio.to_thread(operator.execute, context)
    except TaskDeferred as deferred:
        trigger, method_name = deferred.trigger, deferred.method_name
    else:
        raise RuntimeError("The deferrable operator finished without deferring")
    payloads = [event.payload async for event in trigger.run()]
    known_at = time.time()
    return build, getattr(operator, method_name)(context, payloads[0]), known_at


def run_builds(builds: Sequence[Build], catalog_id: str) -> list[tuple[Build, dict[str, Any], float]]:
    """
    Run every build at once, sync ones on threads, deferred ones on an event loop; each returned batch and
    when the task knew it had ended.

    :param builds: the builds.
    :param catalog_id: the catalog.
    """
    outcomes: list[tuple[Build, dict[str, Any], float]] = []

    def run_sync(build: Build) -> None:
        batch = make_operator(build, catalog_id).execute(_context())
        outcomes.append((build, batch, time.time()))

    threads = [threading.Thread(target=run_sync, args=(b,), daemon=True) for b in builds if b.mode == "sync"]
    for thread in threads:
        thread.start()

    async def deferred() -> list[tuple[Build, dict[str, Any], float]]:
        return await asyncio.gather(*(run_deferred(b, catalog_id) for b in builds if b.mode == "deferred"))

    outcomes += asyncio.run(deferred())
    for thread in threads:
        thread.join()
    return outcomes


def measure(
    outcomes: Sequence[tuple[Build, dict[str, Any], float]],
    requests: Sequence[tuple[int, str, str | None]],
    batches: Sequence[dict[str, Any]],
) -> list[Measured]:
    """
    Count each build's requests and connections from the server's record, and its detection latency.

    :param outcomes: each build, the batch its task returned, and when the task knew.
    :param requests: the server's record of AtScale requests: client port, method, model.
    :param batches: the emulator's batches.
    """
    ends = {
        b["id"]: datetime.fromisoformat(b["endTime"].replace("Z", "+00:00")).timestamp()
        for b in batches
        if b.get("endTime")
    }
    measured = []
    for build, batch, known_at in outcomes:
        mine = [(port, method) for port, method, model in requests if model == build.model_id]
        posts = {port for port, method in mine if method == "POST"}
        gets = {port for port, method in mine if method == "GET"}
        measured.append(
            Measured(
                build=build,
                status=batch["status"],
                requests=len(mine),
                minimum=1 + math.ceil(build.duration / build.poll_interval),
                hook_ports=frozenset(posts | gets if build.mode == "sync" else posts),
                poll_ports=frozenset(gets),
                latency=known_at - ends[batch["id"]],
            )
        )
    return sorted(measured, key=lambda m: (MODES.index(m.build.mode), m.build.long_poll, m.build.duration))


def judge(measured: Sequence[Measured], poll_interval: float) -> BenchResult:
    """
    The request, connection and latency figures with their verdicts.

    :param measured: every build, measured.
    :param poll_interval: seconds between polls of the timed builds.
    """
    figures: list[Figure] = []
    latency: list[Figure] = []
    for mode in MODES:
        group = [m for m in measured if m.build.mode == mode]
        timed = [m for m in group if not m.build.long_poll]
        long_polls = [m for m in group if m.build.long_poll]
        label = "sync wait (worker)" if mode == "sync" else "deferred wait (trigger)"
        # A trigger's first poll comes at a point of the second half of its first interval, set by the batch
        # id, so that triggers deferred together do not poll in lock-step: that costs a deferred build at
        # most one GET over the minimum, depending on where its end falls. The sync wait polls on exact
        # intervals.
        allowed = 0 if mode == "sync" else 1
        counts = ", ".join(f"{m.requests}/{m.minimum}" for m in timed)
        figures.append(
            Figure(
                REQUESTS_SECTION,
                f"{label}: requests / minimum, builds of "
                + ", ".join(f"{m.build.duration:g}" for m in timed)
                + " s",
                counts,
                "= 1 + ceil(D / poll)"
                if not allowed
                else "1 + ceil(D / poll), + at most 1 (spread first poll)",
                verdict(
                    all(m.status == "done" for m in group)
                    and all(m.minimum <= m.requests <= m.minimum + allowed for m in timed)
                ),
                [[m.requests, m.minimum] for m in timed],
            )
        )
        connections = [len(m.hook_ports) for m in group]
        figures.append(
            Figure(
                REQUESTS_SECTION,
                f"{label}: TCP connections per {'hook' if mode == 'sync' else 'operator hook'}, "
                f"{poll_interval:g} s polls; {LONG_POLL_INTERVAL:g} s polls",
                ", ".join(str(len(m.hook_ports)) for m in timed)
                + "; "
                + ", ".join(f"{len(m.hook_ports)} ({m.requests}/{m.minimum} requests)" for m in long_polls),
                "1 per hook",
                verdict(all(n == 1 for n in connections)),
                connections,
            )
        )
        if mode == "deferred":
            # The triggers run on one event loop, as on a triggerer, and a poll takes whichever of the
            # pool's connections is free: the pool is what is counted.
            pool = frozenset().union(*(m.poll_ports for m in group))
            figures.append(
                Figure(
                    REQUESTS_SECTION,
                    f"{label}: TCP connections of the pool the triggers share",
                    f"{len(pool)} for {len(group)} triggers",
                    "<= 1 per trigger",
                    verdict(len(pool) <= len(group)),
                    [len(pool), len(group)],
                )
            )
        bound = poll_interval + LATENCY_SLACK_SECONDS
        worst = max(m.latency for m in timed)
        what = "operator's wait returns" if mode == "sync" else "trigger emits its event"
        latency.append(
            Figure(
                LATENCY_SECTION,
                f"{label}: batch end to {what} (poll {poll_interval:g} s)",
                ", ".join(f"{m.latency:.2f}" for m in timed) + f" s (max {worst:.2f} s)",
                f"<= poll + {LATENCY_SLACK_SECONDS:g} s = {bound:g} s",
                verdict(worst <= bound),
                [m.latency for m in timed],
            )
        )
    details = {
        "poll_interval": poll_interval,
        "builds": [vars(m) | {"build": vars(m.build)} for m in measured],
    }
    return BenchResult(figures + latency, details)


def main() -> None:
    """Start the server, point Airflow at it, run the builds in both modes, judge, and write the result."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.builds", description=__doc__)
    parser.add_argument("--output", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    args = parser.parse_args()
    plan = [(mode, seconds, args.poll_interval, False) for mode in MODES for seconds in BUILD_SECONDS]
    plan += [(mode, LONG_POLL_BUILD_SECONDS, LONG_POLL_INTERVAL, True) for mode in MODES]
    with running_fake_server() as server:
        answer = server.control("atscale", {"timings": [[QUEUE_SECONDS, entry[1]] for entry in plan]})
        builds = [
            Build(mode, model_id, QUEUE_SECONDS + seconds, poll, long_poll)
            for (mode, seconds, poll, long_poll), model_id in zip(plan, answer["model_ids"], strict=True)
        ]
        # Before Airflow is imported: it reads its configuration once.
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="atscale-bench-airflow-home-")
        os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
        connection = {"conn_type": "atscale", "host": server.url, "password": server.token}
        os.environ["AIRFLOW_CONN_ATSCALE_DEFAULT"] = json.dumps(connection)
        # Import once here: a first import racing on several threads can see half-initialised modules.
        for module in (
            "airflow_provider_atscale.operators.atscale",
            "airflow_provider_atscale.triggers.atscale",
        ):
            importlib.import_module(module)
        outcomes = run_builds(builds, answer["catalog_id"])
        measured = measure(outcomes, server.control("requests"), server.atscale_batches())
    judge(measured, args.poll_interval).write(args.output)


if __name__ == "__main__":
    main()
