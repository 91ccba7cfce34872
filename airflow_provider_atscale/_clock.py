"""
Time as the waiting code sees it.

Operators, sensors and triggers read the time and sleep only through these functions, so tests replace
them with a clock they drive: no test waits on real time.
"""

from __future__ import annotations

import asyncio
import time


def now() -> float:
    """Seconds since the epoch: wall-clock time, so a deadline survives a move to another machine."""
    return time.time()


def sleep(seconds: float) -> None:
    """Block for ``seconds`` (sync waiting on a worker)."""
    time.sleep(seconds)


async def asleep(seconds: float) -> None:
    """Yield to the event loop for ``seconds`` (triggers)."""
    await asyncio.sleep(seconds)
