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
    Holds the current :class:`FaultConfig` and draws a fault per request.

    :param config: Initial fault configuration.
    """

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._random = random.Random(0)
        self.configure(config if config is not None else FaultConfig())

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

    def draw(self) -> Fault | None:
        """Pick the fault for one request, or ``None``; exactly one random number is drawn per call."""
        return self.decide()[0]

    def decide(self) -> tuple[Fault | None, FaultConfig]:
        """Pick the fault for one request and return it with the configuration it was drawn from."""
        with self._lock:
            config = self._config
            # Drawing even when no fault is configured keeps the sequence tied to the request count.
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
