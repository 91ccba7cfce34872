"""
Requests per build, TCP connections per hook, and detection latency, in real time.

``python -m benchmarks.builds --output FILE [--poll-interval 2]``

Against the benchmark emulator in a process of its own, with one model per build so every request can be
told apart: each build of known duration ``D`` (time ``new`` plus build time) runs through the operator,
``durable=False`` (every try posts), executed with a minimal context, in both waiting modes at once:

- sync: ``deferrable=False``; the operator polls on its worker thread (one thread per build here);
- deferred: ``deferrable=True``; ``execute`` starts the build and defers, the trigger runs to its event on
  an event loop, and ``execute_complete`` takes the event, as Airflow does.

Requests are counted from the emulator's request log and compared with the fewest that can follow a build,
``1 + ceil(D / poll_interval)`` (one POST, one GET per interval until the end). Connections are the
distinct client ports the server saw per hook (a TCP connection keeps its port while it lives), and for the
triggers, which share their event loop's connection pool, the ports of that pool. Detection
latency is the time from the batch's end (its ``endTime`` in the emulator) to the moment the task knows:
the operator's wait returns (sync) or the trigger emits its event (deferred).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.emulator_client import EmulatorInfo, running_emulator, use_emulator_connection
from benchmarks.report import BenchResult, Figure, Verdict

REQUESTS_SECTION = "3. Requests per build"
LATENCY_SECTION = "4. Detection latency"
BUILD_SECONDS = (2.2, 4.7, 7.0, 9.3)
QUEUE_SECONDS = 0.5
DEFAULT_POLL_INTERVAL = 2.0
# Longer than httpx's default keep-alive expiry (5 s): does a hook keep its connection across a long idle?
LONG_POLL_INTERVAL = 6.0
LONG_POLL_BUILD_SECONDS = 9.3
LATENCY_SLACK_SECONDS = 1.0
MODES = ("sync", "deferred")
PROVIDER_MODULES = ("airflow_provider_atscale.operators.atscale", "airflow_provider_atscale.triggers.atscale")


@dataclass(frozen=True)
class Build:
    """
    One build to run.

    :param mode: ``sync`` or ``deferred``.
    :param model_id: the model built (one model per build).
    :param duration: seconds from the batch's creation to its end.
    :param poll_interval: seconds between polls.
    :param long_poll: one of the builds polled less often than httpx keeps an idle connection by default.
    """

    mode: str
    model_id: str
    duration: float
    poll_interval: float
    long_poll: bool = False


@dataclass(frozen=True)
class Outcome:
    """
    How a build ended for the task.

    :param build: the build.
    :param batch_id: the batch the operator started.
    :param status: the final status the task returned.
    :param known_at: wall-clock time the task knew the batch had ended.
    """

    build: Build
    batch_id: str
    status: str
    known_at: float


class RecordingTaskInstance:
    """The slice of a task instance the operator uses: XCom pushes, kept."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        """
        Keep a pushed value.

        :param key: the XCom key.
        :param value: the value.
        """
        self.xcom[key] = value


def build_plan(poll_interval: float) -> list[tuple[str, float, float, bool]]:
    """
    Each build's mode, build time and poll interval: every build time in both modes, and one long poll.

    :param poll_interval: the poll interval of the timed builds.
    """
    plan = []
    for mode in MODES:
        plan += [(mode, seconds, poll_interval, False) for seconds in BUILD_SECONDS]
        plan.append((mode, LONG_POLL_BUILD_SECONDS, LONG_POLL_INTERVAL, True))
    return plan


def plan_builds(emulator: EmulatorInfo, plan: Sequence[tuple[str, float, float, bool]]) -> list[Build]:
    """
    Give each planned build its model: the emulator's fixed models, in the plan's order.

    :param emulator: the emulator, started with ``--fixed`` and the plan's build times.
    :param plan: see :func:`build_plan`.
    """
    fixed = [model for model in emulator.models if model["build_seconds"] is not None]
    return [
        Build(mode, model["id"], emulator.queue_seconds + seconds, poll, long_poll)
        for (mode, seconds, poll, long_poll), model in zip(plan, fixed, strict=True)
    ]


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


def run_sync(build: Build, catalog_id: str, results: list[Outcome]) -> None:
    """
    Execute the operator in sync mode to the end; append the outcome.

    :param build: the build.
    :param catalog_id: the catalog.
    :param results: where to append.
    """
    context = {"ti": RecordingTaskInstance()}
    batch = make_operator(build, catalog_id).execute(context)
    results.append(Outcome(build, batch["id"], batch["status"], time.time()))


async def run_deferred(build: Build, catalog_id: str) -> Outcome:
    """
    Execute the operator in deferrable mode: start and defer, run the trigger, resume with its event.

    :param build: the build.
    :param catalog_id: the catalog.
    """
    from airflow.sdk.exceptions import TaskDeferred

    operator = make_operator(build, catalog_id)
    context = {"ti": RecordingTaskInstance()}
    try:
        # The POST is a blocking call in the task, as on a worker: keep it off this event loop.
        await asyncio.to_thread(operator.execute, context)
    except TaskDeferred as deferred:
        trigger, method_name = deferred.trigger, deferred.method_name
    else:
        raise RuntimeError("The deferrable operator finished without deferring")
    payloads = [event.payload async for event in trigger.run()]
    known_at = time.time()
    batch = getattr(operator, method_name)(context, payloads[0])
    return Outcome(build, batch["id"], batch["status"], known_at)


def run_builds(builds: Sequence[Build], catalog_id: str) -> list[Outcome]:
    """
    Run every build at once: sync ones on threads, deferred ones on an event loop.

    :param builds: the builds.
    :param catalog_id: the catalog.
    """
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(target=run_sync, args=(build, catalog_id, outcomes))
        for build in builds
        if build.mode == "sync"
    ]
    for thread in threads:
        thread.start()

    async def deferred() -> list[Outcome]:
        return await asyncio.gather(
            *(run_deferred(build, catalog_id) for build in builds if build.mode == "deferred")
        )

    outcomes += asyncio.run(deferred())
    for thread in threads:
        thread.join()
    return outcomes


@dataclass(frozen=True)
class Measured:
    """
    What the server saw of one build, and when the task knew.

    :param outcome: the build's outcome.
    :param posts: POST requests for the build.
    :param gets: GET requests for the build.
    :param minimum: the fewest requests that can follow it.
    :param post_ports: client ports of the POSTs (the operator's hook).
    :param get_ports: client ports of the GETs (the operator's hook, or the trigger's).
    :param latency: seconds from the batch's end to the task knowing.
    """

    outcome: Outcome
    posts: int
    gets: int
    minimum: int
    post_ports: frozenset[int]
    get_ports: frozenset[int]
    latency: float

    @property
    def connections_per_hook(self) -> int:
        """
        Connections the build's own hook opened: the one hook of a sync wait, the operator's of a deferred
        one (its trigger polls through the pool the event loop's triggers share: see :func:`_pool_figure`).
        """
        if self.outcome.build.mode == "sync":
            return len(self.post_ports | self.get_ports)
        return len(self.post_ports)


def _end_time(batch: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(batch["endTime"]).replace("Z", "+00:00")).timestamp()


def measure(emulator: EmulatorInfo, outcomes: Sequence[Outcome]) -> list[Measured]:
    """
    Count each build's requests and connections from the emulator's records, and its detection latency.

    :param emulator: the emulator.
    :param outcomes: the builds' outcomes.
    """
    log = emulator.api_requests()
    ports = emulator.client_ports()
    ends = {batch["id"]: _end_time(batch) for batch in emulator.batches() if batch.get("endTime")}
    measured = []
    for outcome in outcomes:
        model = outcome.build.model_id
        mine = [entry for entry in log if _model_of(entry) == model]
        my_ports = [entry for entry in ports if entry["model_id"] == model]
        measured.append(
            Measured(
                outcome=outcome,
                posts=sum(1 for entry in mine if entry["method"] == "POST"),
                gets=sum(1 for entry in mine if entry["method"] == "GET"),
                minimum=1 + math.ceil(outcome.build.duration / outcome.build.poll_interval),
                post_ports=frozenset(e["port"] for e in my_ports if e["method"] == "POST"),
                get_ports=frozenset(e["port"] for e in my_ports if e["method"] == "GET"),
                latency=outcome.known_at - ends[outcome.batch_id],
            )
        )
    return sorted(measured, key=lambda m: (MODES.index(m.outcome.build.mode), m.outcome.build.long_poll))


def _model_of(entry: dict[str, Any]) -> str | None:
    query = entry.get("query") or {}
    if "modelId" in query:
        return str(query["modelId"])
    path = str(entry.get("path", ""))
    return path.rsplit("/models/", 1)[1] if "/models/" in path else None


def judge(measured: Sequence[Measured], poll_interval: float) -> BenchResult:
    """
    The request, connection and latency figures with their verdicts.

    :param measured: every build, measured.
    :param poll_interval: seconds between polls of the timed builds.
    """
    figures: list[Figure] = []
    for mode in MODES:
        figures += _request_figures(mode, [m for m in measured if m.outcome.build.mode == mode])
    for mode in MODES:
        timed = [m for m in measured if m.outcome.build.mode == mode and not m.outcome.build.long_poll]
        figures.append(_latency_figure(mode, timed, poll_interval))
    details = {
        "poll_interval": poll_interval,
        "long_poll_interval": LONG_POLL_INTERVAL,
        "builds": [
            {
                "mode": m.outcome.build.mode,
                "duration": m.outcome.build.duration,
                "poll_interval": m.outcome.build.poll_interval,
                "status": m.outcome.status,
                "posts": m.posts,
                "gets": m.gets,
                "minimum": m.minimum,
                "connections_per_hook": m.connections_per_hook,
                "latency_seconds": m.latency,
            }
            for m in measured
        ],
    }
    return BenchResult(figures, details)


def _label(mode: str) -> str:
    return "sync wait (worker)" if mode == "sync" else "deferred wait (trigger)"


def _request_figures(mode: str, group: Sequence[Measured]) -> list[Figure]:
    timed = [m for m in group if not m.outcome.build.long_poll]
    long_polls = [m for m in group if m.outcome.build.long_poll]
    durations = ", ".join(f"{m.outcome.build.duration:g}" for m in timed)
    succeeded = all(m.outcome.status == "done" for m in group)
    hooks = "hook" if mode == "sync" else "operator hook"
    # A trigger's first poll comes at a point of the second half of its first interval, set by the batch id,
    # so that triggers deferred together do not poll in lock-step: that costs a deferred build at most one
    # GET over the minimum, depending on where its end falls. The sync wait polls on exact intervals.
    allowed = 0 if mode == "sync" else 1
    figures = [
        Figure(
            REQUESTS_SECTION,
            f"{_label(mode)}: requests / minimum, builds of {durations} s",
            ", ".join(f"{m.posts + m.gets}/{m.minimum}" for m in timed),
            "= 1 + ceil(D / poll)" if not allowed else "1 + ceil(D / poll), + at most 1 (spread first poll)",
            Verdict.of(
                succeeded and all(m.minimum <= m.posts + m.gets <= m.minimum + allowed for m in timed)
            ),
            [[m.posts, m.gets, m.minimum] for m in timed],
        ),
        _connections_figure(
            mode, timed, f"TCP connections per {hooks}, {timed[0].outcome.build.poll_interval:g} s polls"
        ),
        _connections_figure(
            mode,
            long_polls,
            f"TCP connections per {hooks}, {LONG_POLL_INTERVAL:g} s polls (requests {_counts(long_polls)})",
        ),
    ]
    if mode == "deferred":
        figures.append(_pool_figure(group))
    return figures


def _counts(group: Sequence[Measured]) -> str:
    return ", ".join(f"{m.posts + m.gets}/{m.minimum}" for m in group)


def _connections_figure(mode: str, group: Sequence[Measured], name: str) -> Figure:
    connections = [m.connections_per_hook for m in group]
    return Figure(
        REQUESTS_SECTION,
        f"{_label(mode)}: {name}",
        ", ".join(str(n) for n in connections),
        "1 per hook",
        Verdict.of(all(n == 1 for n in connections)),
        connections,
    )


def _pool_figure(group: Sequence[Measured]) -> Figure:
    """
    The connections of the pool the deferred builds' triggers share: they run on one event loop, as on a
    triggerer, and a poll takes whichever of the pool's connections is free, so the pool is what is counted.
    """
    ports = frozenset().union(*(m.get_ports for m in group))
    return Figure(
        REQUESTS_SECTION,
        f"{_label('deferred')}: TCP connections of the pool the triggers share",
        f"{len(ports)} for {len(group)} triggers",
        "<= 1 per trigger",
        Verdict.of(len(ports) <= len(group)),
        [len(ports), len(group)],
    )


def _latency_figure(mode: str, group: Sequence[Measured], poll_interval: float) -> Figure:
    bound = poll_interval + LATENCY_SLACK_SECONDS
    worst = max(m.latency for m in group)
    what = "operator's wait returns" if mode == "sync" else "trigger emits its event"
    return Figure(
        LATENCY_SECTION,
        f"{_label(mode)}: batch end to {what} (poll {poll_interval:g} s)",
        ", ".join(f"{m.latency:.2f}" for m in group) + f" s (max {worst:.2f} s)",
        f"<= poll + {LATENCY_SLACK_SECONDS:g} s = {bound:g} s",
        Verdict.of(worst <= bound),
        [m.latency for m in group],
    )


def run(poll_interval: float) -> BenchResult:
    """
    Start the emulator, run the builds in both modes, and judge.

    :param poll_interval: seconds between polls.
    """
    plan = build_plan(poll_interval)
    options = ["--fixed", *(str(entry[1]) for entry in plan), "--queue-seconds", str(QUEUE_SECONDS)]
    with running_emulator(options) as emulator:
        use_emulator_connection(emulator)
        # Import once here: a first import racing on several threads can see half-initialised modules.
        for module in PROVIDER_MODULES:
            importlib.import_module(module)

        builds = plan_builds(emulator, plan)
        outcomes = run_builds(builds, emulator.catalog_id)
        measured = measure(emulator, outcomes)
    return judge(measured, poll_interval)


def main() -> None:
    """Parse the command line, run, and write the result."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.builds", description=__doc__)
    parser.add_argument("--output", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL)
    args = parser.parse_args()
    run(args.poll_interval).write(args.output)


if __name__ == "__main__":
    main()
