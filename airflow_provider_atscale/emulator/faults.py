"""Seeded, thread-safe choice of the fault (if any) each API request meets."""

from __future__ import annotations

import random
import threading
from enum import Enum

from airflow_provider_atscale.emulator.config import FaultConfig


class Fault(str, Enum):
    """The kinds of injected fault, as recorded in the request log."""

    DROP_BEFORE = "drop_before"
    UNAVAILABLE = "503"
    TOO_MANY_REQUESTS = "429"
    SERVER_ERROR = "500"
    DROP_AFTER = "drop_after"
    SLOW = "slow"


class FaultInjector:
    """
    Holds the :class:`FaultConfig` in effect and draws a fault per request.

    :param config: Initial fault configuration.
    """

    def __init__(self, config: FaultConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._random = random.Random(config.seed)

    @property
    def config(self) -> FaultConfig:
        """The fault configuration in effect."""
        with self._lock:
            return self._config

    def configure(self, config: FaultConfig) -> None:
        """
        Apply a fault configuration and restart the random sequence from its seed.

        :param config: New fault configuration.
        """
        with self._lock:
            self._config = config
            self._random = random.Random(config.seed)

    def decide(self) -> tuple[Fault | None, FaultConfig]:
        """Pick the fault of one request, or ``None``, and return it with the configuration it came from."""
        with self._lock:
            config = self._config
            # Drawn even when no fault is configured: the sequence stays tied to the request count.
            roll = self._random.random()
        threshold = 0.0
        for fault, rate in (
            (Fault.DROP_BEFORE, config.rate_drop_before),
            (Fault.UNAVAILABLE, config.rate_503),
            (Fault.TOO_MANY_REQUESTS, config.rate_429),
            (Fault.SERVER_ERROR, config.rate_500),
            (Fault.DROP_AFTER, config.rate_drop_after),
            (Fault.SLOW, config.rate_slow),
        ):
            threshold += rate
            if roll < threshold:
                return fault, config
        return None, config
