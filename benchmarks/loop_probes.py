"""Instruments for an asyncio event loop under load: wake-up lag, waiting coroutines, resident memory."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def raise_open_file_limit() -> int:
    """Raise the soft limit of open files to the hard limit (a socket per trigger); return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class LagMonitor:
    """
    Measures how late the event loop wakes a coroutine that sleeps ``interval`` seconds again and again.

    Every callback that holds the loop delays the wake-up: the lag is what any trigger would suffer.

    :param interval: the sleep between two measurements, in seconds.
    :param on_tick: called after each wake-up (e.g. to sample other figures); must be quick.
    """

    interval: float = 0.010
    on_tick: Callable[[], None] | None = None
    lags: list[float] = field(default_factory=list)
    wakes: list[float] = field(default_factory=list)
    worst: float = 0.0
    worst_at: float = 0.0
    started: float = 0.0
    _stop: bool = False

    async def run(self) -> None:
        """Measure until :meth:`stop` is called."""
        self.started = time.perf_counter()
        while not self._stop:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            woke = time.perf_counter()
            lag = max(0.0, woke - before - self.interval)
            if lag > self.worst:
                self.worst, self.worst_at = lag, woke - self.started
            self.lags.append(lag)
            self.wakes.append(woke)
            if self.on_tick is not None:
                self.on_tick()

    def stop(self) -> None:
        """End :meth:`run` after its current sleep."""
        self._stop = True


class SleepGauge:
    """
    Wraps an async sleep function and counts the coroutines inside it: the ones waiting for their next poll.

    :param sleep: the sleep function to wrap, e.g. ``asyncio.sleep``.
    :param min_seconds: count only sleeps at least this long (to tell poll waits from short internal ones).
    """

    def __init__(self, sleep: Callable[..., Awaitable[Any]], min_seconds: float = 0.0) -> None:
        self._sleep = sleep
        self._min_seconds = min_seconds
        self.sleeping = 0
        self.sleeps = 0

    async def __call__(self, seconds: float, *args: Any, **kwargs: Any) -> Any:
        """Sleep as the wrapped function does, counted."""
        if seconds < self._min_seconds:
            return await self._sleep(seconds, *args, **kwargs)
        self.sleeping += 1
        self.sleeps += 1
        try:
            return await self._sleep(seconds, *args, **kwargs)
        finally:
            self.sleeping -= 1


class GcPauses:
    """Records every garbage collection's generation, start and end while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float, float]] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], self._started, time.perf_counter()))

    def install(self) -> None:
        """Start recording."""
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop recording."""
        gc.callbacks.remove(self._callback)

    def longest(self, generation: int | None = None) -> float:
        """
        The longest pause in seconds, of one generation or of all.

        :param generation: 0, 1 or 2; ``None`` for any.
        """
        return max((end - start for g, start, end in self.pauses if generation in (None, g)), default=0.0)

    def count(self, generation: int) -> int:
        """
        How many collections of a generation ran.

        :param generation: 0, 1 or 2.
        """
        return sum(1 for g, _, _ in self.pauses if g == generation)

    def total(self) -> float:
        """Seconds spent collecting in all."""
        return sum(end - start for _, start, end in self.pauses)

    def within(self, start: float, end: float) -> float:
        """
        Seconds spent collecting between two ``time.perf_counter()`` readings.

        :param start: the window's start.
        :param end: the window's end.
        """
        return sum(max(0.0, min(end, e) - max(start, s)) for _, s, e in self.pauses)
