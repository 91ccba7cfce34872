"""
One family's round of the trigger comparison, in a fresh process.

``python -m benchmarks.compare_run --family ours --server JSON --seconds JSON --output FILE [...]``

Points Airflow at the fake server (a throwaway ``AIRFLOW_HOME`` and the family's ``AIRFLOW_CONN_*``), imports
the family's trigger and hook, asks the fake server for the jobs (one per duration given, plus one that has
already ended), and warms up with one trigger on the ended job (so the first-use costs every process pays
once, such as TLS contexts and provider metadata, are not charged to the measured triggers). Then it runs
one trigger per job at once on one asyncio loop, as the triggerer runs them (``async for event in
trigger.run()``).

Measured here: CPU time of this process over the run, the event loop's lag (a 10 ms sleeper) and its full
garbage collections, resident memory when every trigger has had a poll answered and the most wait for their
next one at once, and every event; read from the fake server: requests, response bytes and the distinct
client ports of the family's API.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
from benchmarks.loop_probes import FullCollections, LagMonitor, SleepGauge, raise_open_file_limit, rss_bytes
from benchmarks.report import percentile

LAG_INTERVAL = 0.010
HARNESS_CALIBRATION_SECONDS = 3.0
"""How long the harness's own work (the lag sleeper, memory sampling) runs alone, to measure its CPU rate."""
WARM_UP_TIME_LIMIT = 60.0


def count_answered_polls(family: Family, answered: set[int]) -> Callable[[], None]:
    """
    Note each hook that has had a poll answered (one hook per trigger); returns the undo.

    Wraps the family's poll method: an instrument that only counts, the request and answer are the hook's.

    :param family: the family.
    :param answered: where the hooks' ids go.
    """
    module, _, name = family.hook_class.partition(":")
    cls = getattr(importlib.import_module(module), name)
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
    if len(payloads) != 1 or not isinstance(payloads[0], dict):
        return {"_events": [str(payload) for payload in payloads]}
    return {**payloads[0], "_received_at": time.time()}


async def run_triggers(
    family: Family, server: FakeServerInfo, jobs: Sequence[Job], poll_interval: float, time_limit: float
) -> dict[str, Any]:
    """
    Measure the harness alone for a while, then run one trigger per job at once, and measure.

    :param family: the family.
    :param server: the fake server (its counts are reset just before the triggers start).
    :param jobs: the jobs.
    :param poll_interval: seconds between polls.
    :param time_limit: seconds after which the run is abandoned.
    """
    count = len(jobs)
    answered: set[int] = set()
    undo_polls = count_answered_polls(family, answered)
    original_sleep = asyncio.sleep
    # Every family waits between polls in asyncio.sleep; ours through _clock.asleep, which is asyncio.sleep
    # as it was when the provider was imported: gauged too.
    gauge = SleepGauge(original_sleep, min_seconds=poll_interval / 2)
    asyncio.sleep = gauge  # type: ignore[assignment]
    from airflow_provider_atscale import _clock

    provider_sleep, _clock.asleep = _clock.asleep, gauge
    memory: dict[str, Any] = {"waiting": None, "waiting_count": 0}

    def sample() -> None:
        # The first moment the most triggers wait at once, once every trigger has had a poll answered: all
        # of them on a quiet machine; on a loaded one a few may be in the middle of their next poll.
        if len(answered) == count and memory["waiting_count"] < gauge.sleeping:
            memory["waiting"], memory["waiting_count"] = rss_bytes(), gauge.sleeping

    monitor = LagMonitor(LAG_INTERVAL, on_tick=sample)
    collections = FullCollections()
    monitoring = asyncio.create_task(monitor.run())
    try:
        # The harness's own CPU per second (the lag sleeper and the memory sampling, no trigger yet): the
        # same for every family, it is taken out of the CPU charged to the triggers' polls.
        await original_sleep(0.1)
        calibration_cpu = time.process_time()
        await original_sleep(HARNESS_CALIBRATION_SECONDS)
        harness_rate = (time.process_time() - calibration_cpu) / HARNESS_CALIBRATION_SECONDS
        server.control("reset", {})
        gc.collect()
        baseline = rss_bytes()
        triggers = [family.make_trigger(job, family.conn_id, poll_interval) for job in jobs]
        first_lag = len(monitor.lags)
        cpu_before, started = time.process_time(), time.perf_counter()
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
        _clock.asleep = provider_sleep
        undo_polls()
    payloads = [e if isinstance(e, dict) else {"_error": f"{type(e).__name__}: {e}"} for e in events]
    right = [family.succeeded(job, payload) for job, payload in zip(jobs, payloads, strict=True)]
    detection = [p["_received_at"] - job.ends for job, p, ok in zip(jobs, payloads, right, strict=True) if ok]
    lags = monitor.lags[first_lag:]
    stats = server.control("stats")[family.api]
    requests, net_cpu_ms = stats["requests"] or math.nan, (cpu_seconds - harness_rate * wall) * 1000
    waiting = memory["waiting"]
    return {
        "triggers": count,
        "events_right": sum(right),
        "wrong_events": [
            json.dumps(p, default=str)[:300] for p, ok in zip(payloads, right, strict=True) if not ok
        ][:5],
        "wall_seconds": wall,
        "server": stats,
        "full_gc": {"count": collections.count, "longest_ms": collections.longest * 1000},
        "rss": {"baseline_bytes": baseline, "waiting_bytes": waiting, "waiting": memory["waiting_count"]},
        "detection_seconds": {"p50": percentile(detection, 0.5), "max": max(detection, default=math.nan)},
        # The figures the comparison shows, as the rows of benchmarks.compare.ROWS name them.
        "figures": {
            "cpu_ms_per_poll": net_cpu_ms / requests,
            "process_cpu_ms_per_poll": cpu_seconds * 1000 / requests,
            "cpu_ms_per_trigger": net_cpu_ms / count,
            "lag_p99_ms": percentile(lags, 0.99) * 1000,
            "lag_max_ms": max(lags, default=0.0) * 1000,
            "bytes_per_poll": stats["wire_bytes"] / requests,
            "connections_per_trigger": stats["ports"] / count,
            "rss_kib_per_trigger": None if waiting is None else (waiting - baseline) / count / 1024,
            "requests_per_trigger": stats["requests"] / count,
        },
    }


async def run(
    family: Family, server: FakeServerInfo, seconds: Sequence[float], poll_interval: float
) -> dict[str, Any]:
    """
    Make the jobs, warm up, and run the triggers.

    :param family: the family.
    :param server: the fake server.
    :param seconds: each job's duration.
    :param poll_interval: seconds between polls.
    """
    warm_up, *jobs = jobs_from_answer(server.control("jobs", {"api": family.api, "seconds": [0.0, *seconds]}))
    # Deferred one interval ago: a trigger that waits before its first poll polls at once.
    warm_up = dataclasses.replace(warm_up, created=warm_up.created - poll_interval)
    payload = await asyncio.wait_for(
        first_event(family.make_trigger(warm_up, family.conn_id, poll_interval)), WARM_UP_TIME_LIMIT
    )
    # The fewest polls that see each job end within one interval of its end: one every interval, not at 0.
    needed = sum(math.ceil((job.ends - job.created) / poll_interval) for job in jobs) / len(jobs)
    measured = await run_triggers(family, server, jobs, poll_interval, max(seconds) + 4 * poll_interval + 60)
    measured["figures"]["polls_needed"] = needed
    return {"family": family.key, "warm_up_right": family.succeeded(warm_up, payload), **measured}


def main() -> None:
    """Parse the command line, point Airflow at the fake server, run, and write the result."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_run", description=__doc__)
    parser.add_argument("--family", choices=sorted(FAMILIES), required=True)
    parser.add_argument("--server", required=True, help="the fake server's description (JSON)")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seconds", required=True, help="each job's duration (a JSON list)")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--tls", action="store_true", help="every family over HTTPS")
    args = parser.parse_args()
    family, server = FAMILIES[args.family], FakeServerInfo(**json.loads(args.server))
    # Before Airflow is imported: it reads its configuration once.
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bench-compare-airflow-home-")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ.update(family.connection_environment(server, args.tls))
    raise_open_file_limit()
    for module in family.modules:
        importlib.import_module(module)
    result = asyncio.run(run(family, server, json.loads(args.seconds), args.poll_interval))
    args.output.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
