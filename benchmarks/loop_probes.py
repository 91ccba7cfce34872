"""Instruments for an asyncio event loop under load: wake-up lag, waiting coroutines, memory, collections."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def raise_open_file_limit() -> None:
    """Raise the soft limit of open files to the hard limit: a socket per trigger, or more."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class LagMonitor:
    """
    How late the event loop wakes a coroutine that sleeps ``interval`` seconds again and again.

    Every callback that holds the loop delays the wake-up: the lag is what any trigger would suffer.

    :param interval: the sleep between two measurements, in seconds.
    :param on_tick: called after each wake-up (to sample other figures); must be quick.
    """

    def __init__(self, interval: float, on_tick: Callable[[], None]) -> None:
        self.interval = interval
        self.on_tick = on_tick
        self.lags: list[float] = []
        self._stop = False

    async def run(self) -> None:
        """Measure until :meth:`stop` is called."""
        while not self._stop:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, time.perf_counter() - before - self.interval))
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

    def __init__(self, sleep: Callable[..., Awaitable[Any]], min_seconds: float) -> None:
        self._sleep = sleep
        self._min_seconds = min_seconds
        self.sleeping = 0

    async def __call__(self, seconds: float, *args: Any, **kwargs: Any) -> Any:
        """Sleep as the wrapped function does, counted."""
        if seconds < self._min_seconds:
            return await self._sleep(seconds, *args, **kwargs)
        self.sleeping += 1
        try:
            return await self._sleep(seconds, *args, **kwargs)
        finally:
            self.sleeping -= 1


class FullCollections:
    """Counts full garbage collections while installed (``gc.callbacks``), and the longest one's seconds."""

    def __init__(self) -> None:
        self.count = 0
        self.longest = 0.0
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.longest = max(self.longest, time.perf_counter() - self._started)

    def install(self) -> None:
        """Start recording."""
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Stop recording."""
        gc.callbacks.remove(self._callback)
