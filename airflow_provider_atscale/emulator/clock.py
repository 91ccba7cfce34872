"""Clocks that drive the emulator's batches and token lifetimes."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time in seconds since the Unix epoch."""

    def now(self) -> float:
        """Return the current time in seconds since the Unix epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """Return ``time.time()``."""
        return time.time()


class ManualClock:
    """
    A clock that moves only when told to, so tests drive batches and tokens without sleeping.

    :param start: Initial time in seconds since the Unix epoch; by default the current whole second, so
        the dates it produces look plausible to a client that compares them with its own clock.
    """

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._now = float(int(time.time())) if start is None else float(start)

    def now(self) -> float:
        """Return the current manual time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """
        Move the clock forward and return the new time.

        :param seconds: How far to move; must not be negative.
        """
        if seconds < 0:
            raise ValueError(f"A clock cannot go back in time: advance({seconds!r})")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """
        Jump to a given time, forwards or backwards.

        :param now: New time in seconds since the Unix epoch.
        """
        with self._lock:
            self._now = float(now)
