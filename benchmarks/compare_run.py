"""
One family's round of the trigger comparison, in a fresh process.

``python -m benchmarks.compare_run --family ours --server JSON --output FILE [--triggers 1000 ...]``

Points Airflow at the fake server (a throwaway ``AIRFLOW_HOME`` and the family's ``AIRFLOW_CONN_*``), imports
the family's trigger and hook, and warms them up with one trigger on a job that has already ended (so the
first-use costs every process pays once, such as TLS contexts and provider metadata, are not charged to the
measured triggers). Then it asks the fake server for the jobs, each ending at a time drawn from the range,
and runs one trigger per job at once on one asyncio loop, as the triggerer runs them
(``async for event in trigger.run()``).

Measured here: CPU time of this process over the run, the event loop's lag (a 10 ms sleeper), resident
memory when every trigger has had a poll answered and all wait for their next one at once, and every event;
read from the fake server: requests, response bytes and the distinct client ports of the family's API.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.fake_server import FakeServerInfo
from benchmarks.families import FAMILIES, Family, Job, jobs_from_answer
from benchmarks.loop_probes import GcPauses, LagMonitor, SleepGauge, raise_open_file_limit, rss_bytes
from benchmarks.report import percentile

LAG_INTERVAL = 0.010
HARNESS_CALIBRATION_SECONDS = 3.0
"""How long the harness's own work (the lag sleeper, memory sampling) runs alone, to measure its CPU rate."""
WARM_UP_TIME_LIMIT = 60.0


def prepare_environment(family: Family, server: FakeServerInfo, tls: bool) -> None:
    """
    Give this process a throwaway Airflow home and the family's connection; call before importing Airflow.

    :param family: the family.
    :param server: the fake server.
    :param tls: whether every family speaks HTTPS.
    """
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bench-compare-airflow-home-")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.update(family.connection_environment(server, tls))


def hook_class(family: Family) -> type:
    """
    The family's hook class.

    :param family: the family.
    """
    module, _, name = family.hook_class.partition(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def count_answered_polls(family: Family, answered: set[int]) -> Callable[[], None]:
    """
    Note each hook that has had a poll answered (one hook per trigger); returns the undo.

    Wraps the family's poll method: an instrument that only counts, the request and answer are the hook's.

    :param family: the family.
    :param answered: where the hooks' ids go.
    """
    cls = hook_class(family)
    original = getattr(cls, family.poll_method)

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        answered.add(id(self))
        return result

    setattr(cls, family.poll_method, counted)
    return lambda: setattr(cls, family.poll_method, original)


async def first_event(trigger: Any) -> dict[str, Any]:
    """
    Run a trigger to its end, as the triggerer does, and return its (one) event's payload.

    :param trigger: the trigger.
    """
    payloads = [event.payload async for event in trigger.run()]
    if len(payloads) != 1:
        return {"_events": len(payloads)}
    payload = payloads[0]
    return {**payload, "_received_at": time.time()} if isinstance(payload, dict) else {"_payload": payload}


async def warm_up(family: Family, server: FakeServerInfo, poll_interval: float) -> bool:
    """
    Run one trigger on a job that has already ended; whether its event was right.

    :param family: the family.
    :param server: the fake server.
    :param poll_interval: seconds between polls.
    """
    answer = server.control(
        "jobs", {"api": family.api, "count": 1, "min_seconds": 0, "max_seconds": 0, "seed": 1}
    )
    job = jobs_from_answer(answer)[0]
    # Deferred one interval ago: a trigger that waits before its first poll polls at once.
    job = Job(job.id, job.created - poll_interval, job.ends, job.model_id, job.catalog_id, job.account_id)
    trigger = family.make_trigger(job, family.conn_id, poll_interval)
    payload = await asyncio.wait_for(first_event(trigger), WARM_UP_TIME_LIMIT)
    return family.succeeded(job, payload)


async def run_triggers(
    family: Family, jobs: Sequence[Job], poll_interval: float, time_limit: float
) -> dict[str, Any]:
    """
    Run one trigger per job at once with the lag monitor, and measure.

    :param family: the family.
    :param jobs: the jobs.
    :param poll_interval: seconds between polls.
    :param time_limit: seconds after which the run is abandoned.
    """
    count = len(jobs)
    answered: set[int] = set()
    undo_polls = count_answered_polls(family, answered)
    original_sleep = asyncio.sleep
    # Every trigger family waits between polls in asyncio.sleep, ours through _clock.asleep.
    gauge = SleepGauge(original_sleep, min_seconds=poll_interval / 2)
    asyncio.sleep = gauge  # type: ignore[assignment]
    memory: dict[str, Any] = {"waiting": None, "waiting_at": None, "waiting_count": 0, "peak": 0}
    started = 0.0

    def sample() -> None:
        rss = rss_bytes()
        memory["peak"] = max(memory["peak"], rss)
        # The first moment the most triggers wait at once, once every trigger has had a poll answered: all
        # of them on a quiet machine; on a loaded one a few may be in the middle of their next poll.
        if len(answered) == count and memory["waiting_count"] < gauge.sleeping:
            memory["waiting"], memory["waiting_count"] = rss, gauge.sleeping
            memory["waiting_at"] = time.perf_counter() - started

    monitor = LagMonitor(LAG_INTERVAL, on_tick=sample)
    collections = GcPauses()
    monitoring = asyncio.create_task(monitor.run())
    try:
        await original_sleep(0.1)
        # The harness's own CPU per second (the lag sleeper and the memory sampling, no trigger yet): the
        # same for every family, it is taken out of the CPU charged to the triggers' polls.
        calibration_cpu = time.process_time()
        await original_sleep(HARNESS_CALIBRATION_SECONDS)
        harness_rate = (time.process_time() - calibration_cpu) / HARNESS_CALIBRATION_SECONDS
        gc.collect()
        baseline = rss_bytes()
        triggers = family.make_triggers(jobs, poll_interval)
        cpu_before, started, wall_start = time.process_time(), time.perf_counter(), time.time()
        collections.install()
        try:
            events = await asyncio.wait_for(
                asyncio.gather(*(first_event(t) for t in triggers), return_exceptions=True), time_limit
            )
        finally:
            cpu_seconds, wall = time.process_time() - cpu_before, time.perf_counter() - started
            collections.uninstall()
            monitor.stop()
            await monitoring
    finally:
        asyncio.sleep = original_sleep
        undo_polls()
    payloads = [e if isinstance(e, dict) else {"_error": f"{type(e).__name__}: {e}"} for e in events]
    right = [family.succeeded(job, payload) for job, payload in zip(jobs, payloads, strict=True)]
    detection = [
        float(payload["_received_at"]) - job.ends
        for job, payload, ok in zip(jobs, payloads, right, strict=True)
        if ok and "_received_at" in payload
    ]
    lags = monitor.lags
    return {
        "triggers": count,
        "events_right": sum(right),
        "wrong_events": [_shorten(p) for p, ok in zip(payloads, right, strict=True) if not ok][:5],
        "cpu_seconds": cpu_seconds,
        "harness_cpu_seconds": harness_rate * wall,
        "wall_seconds": wall,
        "started_at": wall_start,
        "lag_ms": {
            "p50": percentile(lags, 0.5) * 1000,
            "p99": percentile(lags, 0.99) * 1000,
            "p999": percentile(lags, 0.999) * 1000,
            "max": max(lags, default=0.0) * 1000,
            "max_at_seconds": monitor.worst_at - (started - monitor.started),
            "samples": len(lags),
        },
        "gc": {
            "full": collections.count(2),
            "young": collections.count(0) + collections.count(1),
            "longest_ms": collections.longest() * 1000,
            "total_seconds": collections.total(),
        },
        "rss": {
            "baseline_bytes": baseline,
            "waiting_bytes": memory["waiting"],
            "waiting_at_seconds": memory["waiting_at"],
            "waiting_triggers": memory["waiting_count"],
            "peak_bytes": memory["peak"],
        },
        "detection_seconds": {
            "p50": percentile(detection, 0.5),
            "max": max(detection, default=float("nan")),
        },
    }


def _shorten(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, default=str)
    return text if len(text) <= 300 else text[:300] + "..."


def run(
    family: Family,
    server: FakeServerInfo,
    *,
    triggers: int,
    poll_interval: float,
    seconds: tuple[float, float],
    seed: int,
    tls: bool,
) -> dict[str, Any]:
    """
    Warm up, make the jobs, run the triggers, and read the fake server's counts.

    :param family: the family.
    :param server: the fake server.
    :param triggers: how many triggers (and jobs).
    :param poll_interval: seconds between polls.
    :param seconds: the range each job's duration is drawn from.
    :param seed: seed of the draw (the same for every family of a round).
    :param tls: whether every family speaks HTTPS.
    """
    prepare_environment(family, server, tls)
    raise_open_file_limit()
    for module in family.modules:
        importlib.import_module(module)
    warmed = asyncio.run(warm_up(family, server, poll_interval))
    server.control("reset", {})
    answer = server.control(
        "jobs",
        {
            "api": family.api,
            "count": triggers,
            "min_seconds": seconds[0],
            "max_seconds": seconds[1],
            "seed": seed,
        },
    )
    jobs = jobs_from_answer(answer)
    # The fewest polls that see each job end within one interval of its end: one every interval, not at 0.
    needed = sum(math.ceil((job.ends - job.created) / poll_interval) for job in jobs) / len(jobs)
    time_limit = seconds[1] + 4 * poll_interval + 60
    server_cpu = _process_cpu(server.pid)
    measured = asyncio.run(run_triggers(family, jobs, poll_interval, time_limit))
    server_cpu = _process_cpu(server.pid) - server_cpu
    stats = server.control("stats")
    return {
        "family": family.key,
        "tls": family.uses_tls(tls),
        "warm_up_right": warmed,
        "polls_needed_per_trigger": needed,
        **measured,
        "server": stats["apis"][family.api],
        "server_cpu_seconds": server_cpu,
        "connections": stats["connections"],
    }


def _process_cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> None:
    """Parse the command line, run, and write the result."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_run", description=__doc__)
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--server", required=True, help="the fake server's description (JSON)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--job-seconds", type=float, nargs=2, default=(20.0, 60.0), metavar=("LO", "HI"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tls", action="store_true", help="every family over HTTPS")
    args = parser.parse_args()
    result = run(
        FAMILIES[args.family],
        FakeServerInfo.from_json(json.loads(args.server)),
        triggers=args.triggers,
        poll_interval=args.poll_interval,
        seconds=(args.job_seconds[0], args.job_seconds[1]),
        seed=args.seed,
        tls=args.tls,
    )
    args.output.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
