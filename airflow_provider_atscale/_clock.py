"""
Time as the provider sees it: every read of the clock and every wait goes through these three names, so tests
replace them with a clock they drive and no test waits on real time.

They are the standard functions themselves, not wrappers: a poll reads the time and sleeps once or twice, and
a wrapper would add a call to each for nothing.
"""

from __future__ import annotations

import asyncio
import time

now = time.time
"""Seconds since the epoch: wall-clock time, so a deadline survives a move to another machine."""
sleep = time.sleep
"""Block for some seconds (waiting on a worker)."""
asleep = asyncio.sleep
"""Yield to the event loop for some seconds (waiting on the triggerer)."""
