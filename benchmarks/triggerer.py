"""
Triggerer capacity: many ``AtScaleAggregateBatchTrigger``s at once on one asyncio event loop.

``python -m benchmarks.triggerer --output FILE [--triggers 1000 --poll-interval 5 ...]``

Against the benchmark emulator in a process of its own: the batches are created first (sync hook), their
build times drawn at random so they end at random over the run; then every trigger runs at once, as the
triggerer runs them (``async for event in trigger.run()``), each polling every ``poll_interval`` seconds.
Time is compressed against real use: the default 5 s poll stands for the operator's default 60 s, so a
15 to 75 s build stands for 3 to 15 minutes, and the loop sees twelve times the request rate it would.

Measured in this process: the largest event-loop lag (a coroutine sleeping 10 ms again and again, and how
late it wakes), resident memory once every trigger waits for its next poll, CPU time, and every event.
Then, separately, Python heap memory per waiting trigger with ``tracemalloc`` (it slows the interpreter,
so it runs apart from the timed run, on batches that do not finish).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.emulator_client import EmulatorInfo, running_emulator, use_emulator_connection
from benchmarks.loop_probes import GcPauses, LagMonitor, SleepGauge, raise_open_file_limit, rss_bytes
from benchmarks.report import BenchResult, Figure, Verdict, percentile

if TYPE_CHECKING:
    from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger

SECTION = "2. Triggerer capacity"
LAG_TARGET_MS = 100.0
MEMORY_TARGET_KB = 50.0
LAG_INTERVAL = 0.010
LONG_BUILD_SECONDS = 3600.0
MEMORY_PROBE_POLL_INTERVAL = 60.0
TRIGGER_TIMEOUT_SECONDS = 3600.0


@dataclass(frozen=True)
class Scenario:
    """
    What the capacity run does.

    :param triggers: triggers running at once.
    :param poll_interval: seconds between a trigger's polls.
    :param build_range: each batch's build time is drawn from this range, in seconds.
    :param queue_seconds: how long each batch stays ``new``.
    :param models: models the batches are spread over, the emulator's failing model among them.
    :param memory_probe: also measure heap memory per waiting trigger with tracemalloc.
    """

    triggers: int = 1000
    poll_interval: float = 5.0
    build_range: tuple[float, float] = (15.0, 75.0)
    queue_seconds: float = 1.0
    models: int = 20
    memory_probe: bool = True

    def emulator_options(self) -> list[str]:
        """The emulator's command line: models with drawn build times, and never-ending ones for the probe."""
        lo, hi = self.build_range
        options = ["--models", str(self.models - 1), "--failing", "--build-range", str(lo), str(hi)]
        options += ["--queue-seconds", str(self.queue_seconds)]
        return [*options, "--fixed", *([str(LONG_BUILD_SECONDS)] * self.models)]


@dataclass(frozen=True)
class Target:
    """
    A batch a trigger waits on, and the outcome its event must carry.

    :param batch_id: the batch.
    :param model_id: its model.
    :param expected: ``succeeded``, or ``failed`` for the failing model.
    """

    batch_id: str
    model_id: str
    expected: str


@dataclass
class CapacityRun:
    """
    What the timed run measured.

    :param events: each trigger's event payload, in trigger order.
    :param lags: every lag the monitor saw, in seconds.
    :param wakes: when the monitor woke each time (``time.perf_counter()``).
    :param worst_lag_at: seconds into the run when the worst lag happened.
    :param collections: the garbage collections during the run.
    :param baseline_rss: resident memory before the triggers started.
    :param waiting_rss: resident memory when every trigger first waited at once (``None`` if never).
    :param waiting_at: seconds into the run when that was.
    :param peak_rss: the largest resident memory seen.
    :param cpu_seconds: this process's CPU time over the run.
    :param wall_seconds: the run's length.
    :param started_at: wall-clock time the triggers started.
    """

    events: list[dict[str, Any]]
    lags: list[float]
    wakes: list[float]
    worst_lag_at: float
    collections: GcPauses
    baseline_rss: int
    waiting_rss: int | None
    waiting_at: float | None
    peak_rss: int
    cpu_seconds: float
    wall_seconds: float
    started_at: float


@dataclass
class MemoryProbe:
    """
    Heap memory held per waiting trigger, by tracemalloc.

    :param bytes_per_trigger: traced memory added once every trigger waited, after a collection.
    :param top_sources: the files that allocated most of it, with their bytes.
    """

    bytes_per_trigger: float
    top_sources: list[tuple[str, int]] = field(default_factory=list)


def create_batches(emulator: EmulatorInfo, models: Sequence[dict[str, Any]], count: int) -> list[Target]:
    """
    Start ``count`` builds spread evenly over ``models``, with one sync hook.

    :param emulator: the running emulator.
    :param models: the models, as the emulator described them.
    :param count: how many batches.
    """
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

    hook = AtScaleHook()
    targets = []
    try:
        for index in range(count):
            model = models[index % len(models)]
            batch = hook.trigger_aggregate_build(emulator.catalog_id, model["id"], full_build=True)
            targets.append(Target(batch.id, model["id"], "failed" if model["fail"] else "succeeded"))
    finally:
        hook.close()
    return targets


def make_triggers(
    targets: Sequence[Target], catalog_id: str, poll_interval: float
) -> list[AtScaleAggregateBatchTrigger]:
    """
    One trigger per target, as the operator defers with them.

    :param targets: the batches.
    :param catalog_id: their catalog.
    :param poll_interval: seconds between polls.
    """
    from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger

    now = time.time()
    return [
        AtScaleAggregateBatchTrigger(
            atscale_conn_id="atscale_default",
            catalog_id=catalog_id,
            model_id=target.model_id,
            batch_id=target.batch_id,
            poll_interval=poll_interval,
            deadline=now + TRIGGER_TIMEOUT_SECONDS,
            timeout=TRIGGER_TIMEOUT_SECONDS,
            started_at=now,
            last_status="new",
        )
        for target in targets
    ]


async def first_event(trigger: AtScaleAggregateBatchTrigger) -> dict[str, Any]:
    """
    Run a trigger to its end, as the triggerer does, and return its (one) event's payload.

    :param trigger: the trigger.
    """
    payloads = [event.payload async for event in trigger.run()]
    if len(payloads) != 1:
        return {"outcome": f"{len(payloads)} events"}
    payload: dict[str, Any] = payloads[0]
    return {**payload, "received_at": time.time()}


def patched_asleep(gauge: SleepGauge) -> Callable[[], None]:
    """
    Count the provider's waits: every trigger sleeps through ``_clock.asleep``. Returns the undo.

    :param gauge: the counting wrapper.
    """
    from airflow_provider_atscale import _clock

    original = _clock.asleep
    _clock.asleep = gauge
    return lambda: setattr(_clock, "asleep", original)


def patched_polls(answered: set[str]) -> Callable[[], None]:
    """
    Note each batch whose poll was answered (wraps ``AtScaleHook.aget_aggregate_batch``). Returns the undo.

    :param answered: where the batch ids go.
    """
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

    original = AtScaleHook.aget_aggregate_batch

    async def counted(self: AtScaleHook, catalog_id: str, model_id: str, batch_id: str) -> Any:
        batch = await original(self, catalog_id, model_id, batch_id)
        answered.add(batch_id)
        return batch

    AtScaleHook.aget_aggregate_batch = counted  # type: ignore[method-assign]
    return lambda: setattr(AtScaleHook, "aget_aggregate_batch", original)


def all_waiting(gauge: SleepGauge, answered: set[str], count: int) -> bool:
    """
    Whether every trigger has had a poll answered and waits for its next one.

    :param gauge: counts the triggers sleeping now.
    :param answered: the batches polled so far.
    :param count: the number of triggers.
    """
    return len(answered) == count and gauge.sleeping == count


async def check_async_settings() -> str:
    """Read the connection through ``AtScaleHook.aget_settings()`` (Airflow's async connection API)."""
    from airflow_provider_atscale.hooks.atscale import AtScaleHook

    hook = AtScaleHook()
    settings = await hook.aget_settings()
    await hook.aclose()
    return settings.base_url


async def run_capacity(triggers: Sequence[AtScaleAggregateBatchTrigger], time_limit: float) -> CapacityRun:
    """
    Run every trigger at once, with the lag monitor, and measure.

    :param triggers: the triggers.
    :param time_limit: seconds after which the run is abandoned.
    """
    gauge, answered = SleepGauge(asyncio.sleep), set[str]()
    undo_sleep, undo_polls = patched_asleep(gauge), patched_polls(answered)
    count = len(triggers)
    memory: dict[str, Any] = {"waiting": None, "waiting_at": None, "peak": 0}
    started = 0.0

    def sample() -> None:
        rss = rss_bytes()
        memory["peak"] = max(memory["peak"], rss)
        if memory["waiting"] is None and all_waiting(gauge, answered, count):
            memory["waiting"], memory["waiting_at"] = rss, time.perf_counter() - started

    monitor = LagMonitor(LAG_INTERVAL, on_tick=sample)
    collections = GcPauses()
    monitoring = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.1)
    gc.collect()
    baseline = rss_bytes()
    cpu_before, started, wall_start = time.process_time(), time.perf_counter(), time.time()
    collections.install()
    try:
        events = await asyncio.wait_for(asyncio.gather(*(first_event(t) for t in triggers)), time_limit)
    finally:
        cpu_seconds, wall = time.process_time() - cpu_before, time.perf_counter() - started
        collections.uninstall()
        monitor.stop()
        await monitoring
        undo_sleep()
        undo_polls()
    return CapacityRun(
        events=list(events),
        lags=monitor.lags,
        wakes=monitor.wakes,
        worst_lag_at=monitor.worst_at - (started - monitor.started),
        collections=collections,
        baseline_rss=baseline,
        waiting_rss=memory["waiting"],
        waiting_at=memory["waiting_at"],
        peak_rss=memory["peak"],
        cpu_seconds=cpu_seconds,
        wall_seconds=wall,
        started_at=wall_start,
    )


async def probe_memory(triggers: Sequence[AtScaleAggregateBatchTrigger], time_limit: float) -> MemoryProbe:
    """
    Traced heap memory added per trigger once all of them wait; the triggers are then cancelled.

    :param triggers: triggers on batches that do not finish during the probe.
    :param time_limit: seconds to wait for every trigger to be waiting.
    """
    gauge, answered = SleepGauge(asyncio.sleep), set[str]()
    undo_sleep, undo_polls = patched_asleep(gauge), patched_polls(answered)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    traced_before = tracemalloc.get_traced_memory()[0]
    tasks = [asyncio.create_task(first_event(trigger)) for trigger in triggers]
    try:
        await _until(lambda: all_waiting(gauge, answered, len(triggers)), time_limit)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
        after = tracemalloc.take_snapshot()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tracemalloc.stop()
        undo_sleep()
        undo_polls()
    sources = [
        (str(stat.traceback[0].filename), stat.size_diff) for stat in after.compare_to(before, "filename")[:8]
    ]
    return MemoryProbe(traced / len(triggers), _shorten(sources))


async def _until(condition: Callable[[], bool], time_limit: float) -> None:
    deadline = time.perf_counter() + time_limit
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"Condition not met within {time_limit} s")
        await asyncio.sleep(0.05)


def _shorten(sources: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(path.split("site-packages/")[-1].split("/work/")[-1], size) for path, size in sources]


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def detection_latencies(emulator: EmulatorInfo, run: CapacityRun) -> list[float]:
    """
    Seconds from each batch's end (``endTime`` in the emulator) to its trigger's event.

    :param emulator: the emulator.
    :param run: the capacity run.
    """
    ends = {
        batch["id"]: _parse_time(batch["endTime"]) for batch in emulator.batches() if batch.get("endTime")
    }
    return [
        event["received_at"] - ends[event["batch_id"]]
        for event in run.events
        if "received_at" in event and event.get("batch_id") in ends
    ]


def judge(
    scenario: Scenario,
    targets: Sequence[Target],
    run: CapacityRun,
    probe: MemoryProbe | None,
    requests: Sequence[dict[str, Any]],
    latencies: Sequence[float],
    base_url: str,
    emulator_cpu: float,
) -> BenchResult:
    """
    The capacity figures and their verdicts.

    :param scenario: what ran.
    :param targets: the batches and their expected outcomes.
    :param run: the timed run.
    :param probe: the tracemalloc probe, if it ran.
    :param requests: the emulator's client-port log of the timed run's polls.
    :param latencies: see :func:`detection_latencies`.
    :param base_url: what ``aget_settings()`` read.
    :param emulator_cpu: the emulator process's CPU seconds over the run.
    """
    n = len(targets)
    right = sum(
        1
        for target, event in zip(targets, run.events, strict=True)
        if event.get("outcome") == target.expected
    )
    failed_expected = sum(1 for target in targets if target.expected == "failed")
    worst_ms = max(run.lags, default=0.0) * 1000
    gc_in_worst_ms, worst_without_gc_ms = _lag_and_collections(run)
    rss_kb = (run.waiting_rss - run.baseline_rss) / n / 1024 if run.waiting_rss is not None else float("nan")
    polls = [entry for entry in requests if entry["method"] == "GET"]
    ports = len({entry["port"] for entry in polls})
    figures = [
        Figure(SECTION, "AtScaleHook.aget_settings() (Airflow async connection API)", f"ok: {base_url}"),
        Figure(
            SECTION,
            f"events right ({n - failed_expected} succeeded + {failed_expected} failed expected)",
            f"{right} / {n}",
            f"all {n}",
            Verdict.of(right == n),
            right,
        ),
        Figure(
            SECTION,
            "largest event-loop lag (10 ms sleeper)",
            f"{worst_ms:.0f} ms at {run.worst_lag_at:.1f} s (GC {gc_in_worst_ms:.0f} ms of it)",
            f"< {LAG_TARGET_MS:.0f} ms",
            Verdict.of(worst_ms < LAG_TARGET_MS),
            worst_ms,
        ),
        Figure(
            SECTION,
            "largest lag less the GC inside it / lag p99 / p50",
            f"{worst_without_gc_ms:.0f} / {percentile(run.lags, 0.99) * 1000:.0f} / "
            f"{percentile(run.lags, 0.5) * 1000:.1f} ms",
        ),
        Figure(
            SECTION,
            "garbage collections: full ones, longest, all together",
            f"{run.collections.count(2)} full, longest {run.collections.longest() * 1000:.0f} ms, "
            f"{run.collections.total():.1f} s in all",
        ),
        Figure(
            SECTION,
            "RSS added per waiting trigger (all waiting)",
            f"{rss_kb:.1f} KB",
            f"< {MEMORY_TARGET_KB:.0f} KB",
            Verdict.of(rss_kb < MEMORY_TARGET_KB),
            rss_kb,
        ),
    ]
    if probe is not None:
        heap_kb = probe.bytes_per_trigger / 1024
        figures.append(
            Figure(
                SECTION,
                "Python heap per waiting trigger (tracemalloc)",
                f"{heap_kb:.1f} KB",
                f"< {MEMORY_TARGET_KB:.0f} KB",
                Verdict.of(heap_kb < MEMORY_TARGET_KB),
                heap_kb,
            )
        )
    figures += [
        Figure(
            SECTION,
            f"CPU time of the run ({run.wall_seconds:.0f} s wall)",
            f"{run.cpu_seconds:.1f} s ({run.cpu_seconds / n * 1000:.1f} ms per trigger, "
            f"{run.cpu_seconds / max(1, len(polls)) * 1000:.2f} ms per poll)",
            raw=run.cpu_seconds,
        ),
        Figure(
            SECTION,
            f"polls; batch end to event, p50 / max (poll {scenario.poll_interval:g} s)",
            f"{len(polls)} ({len(polls) / run.wall_seconds:.0f} per s); "
            f"{percentile(latencies, 0.5):.1f} / {max(latencies, default=float('nan')):.1f} s",
            raw={"polls": len(polls), "latencies": list(latencies)},
        ),
        Figure(
            SECTION,
            "TCP connections per trigger",
            f"{ports / n:.2f}",
            "<= 1 (the triggers share the event loop's connection pool)",
            Verdict.of(0 < ports <= n),
            ports,
        ),
    ]
    details = {
        "scenario": scenario.__dict__,
        "wall_seconds": run.wall_seconds,
        "emulator_cpu_seconds": emulator_cpu,
        "gc": {
            "full": run.collections.count(2),
            "young": run.collections.count(0) + run.collections.count(1),
            "longest_ms": run.collections.longest() * 1000,
            "total_seconds": run.collections.total(),
        },
        "lag_ms": {
            "max": worst_ms,
            "p999": percentile(run.lags, 0.999) * 1000,
            "p99": percentile(run.lags, 0.99) * 1000,
            "samples": len(run.lags),
        },
        "rss_mb": {
            "baseline": run.baseline_rss / 2**20,
            "all_waiting": (run.waiting_rss or 0) / 2**20,
            "all_waiting_at_seconds": run.waiting_at,
            "peak": run.peak_rss / 2**20,
        },
        "heap_top_sources": probe.top_sources if probe is not None else None,
        "outcomes": _count(event.get("outcome") for event in run.events),
    }
    return BenchResult(figures, details)


def _lag_and_collections(run: CapacityRun) -> tuple[float, float]:
    """The GC time inside the worst lag, and the worst lag once the GC inside each lag is taken out (ms)."""
    in_worst, without = 0.0, 0.0
    worst = max(run.lags, default=0.0)
    for lag, woke in zip(run.lags, run.wakes, strict=True):
        collecting = run.collections.within(woke - lag - LAG_INTERVAL, woke)
        without = max(without, lag - collecting)
        if lag == worst:
            in_worst = collecting
    return in_worst * 1000, without * 1000


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def _process_cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run(scenario: Scenario) -> BenchResult:
    """
    Start the emulator, create the batches, run the triggers, and judge.

    :param scenario: what to run.
    """
    raise_open_file_limit()
    with running_emulator(scenario.emulator_options()) as emulator:
        use_emulator_connection(emulator)
        base_url = asyncio.run(check_async_settings())
        drawn = [m for m in emulator.models if m["build_seconds"] is None]
        long_running = [m for m in emulator.models if m["build_seconds"] == LONG_BUILD_SECONDS]
        targets = create_batches(emulator, drawn, scenario.triggers)
        triggers = make_triggers(targets, emulator.catalog_id, scenario.poll_interval)
        ports_before = len(emulator.client_ports())
        emulator_cpu = _process_cpu(emulator.pid)
        time_limit = scenario.queue_seconds + scenario.build_range[1] + 10 * scenario.poll_interval + 60
        run_result = asyncio.run(run_capacity(triggers, time_limit))
        emulator_cpu = _process_cpu(emulator.pid) - emulator_cpu
        requests = emulator.client_ports()[ports_before:]
        latencies = detection_latencies(emulator, run_result)
        probe = None
        if scenario.memory_probe:
            parked = create_batches(emulator, long_running, scenario.triggers)
            parked_triggers = make_triggers(parked, emulator.catalog_id, MEMORY_PROBE_POLL_INTERVAL)
            # First polls come half to one interval after the start, second ones an interval after those.
            probe = asyncio.run(probe_memory(parked_triggers, 1.5 * MEMORY_PROBE_POLL_INTERVAL))
    return judge(scenario, targets, run_result, probe, requests, latencies, base_url, emulator_cpu)


def main() -> None:
    """Parse the command line, run, and write the result."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.triggerer", description=__doc__)
    parser.add_argument("--output", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--triggers", type=int, default=Scenario.triggers)
    parser.add_argument("--poll-interval", type=float, default=Scenario.poll_interval)
    parser.add_argument("--build-range", type=float, nargs=2, default=Scenario.build_range)
    parser.add_argument("--no-memory-probe", action="store_true", help="skip the tracemalloc probe")
    args = parser.parse_args()
    scenario = Scenario(
        triggers=args.triggers,
        poll_interval=args.poll_interval,
        build_range=tuple(args.build_range),
        memory_probe=not args.no_memory_probe,
    )
    run(scenario).write(args.output)


if __name__ == "__main__":
    main()
