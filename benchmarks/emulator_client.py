"""Start the benchmark emulator in its own process, point Airflow at it, and read its records."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from benchmarks.announced_process import announced_process
from benchmarks.emulator_process import READY_PREFIX, REQUESTS_PATH

CONN_ENV = "AIRFLOW_CONN_ATSCALE_DEFAULT"


@dataclass(frozen=True)
class EmulatorInfo:
    """
    A running benchmark emulator, as it described itself.

    :param url: its base URL on 127.0.0.1.
    :param token: the API token it accepts.
    :param catalog_id: the catalog holding every model.
    :param queue_seconds: how long each batch stays ``new``.
    :param models: each model's ``id``, ``build_seconds`` (``None`` when drawn per batch) and ``fail``.
    :param pid: the server process id.
    """

    url: str
    token: str
    catalog_id: str
    queue_seconds: float
    models: list[dict[str, Any]]
    pid: int

    def get_json(self, path: str) -> Any:
        """
        GET a control path of the emulator and return its JSON.

        :param path: e.g. ``/_emulator/requests``.
        """
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def api_requests(self) -> list[dict[str, Any]]:
        """The emulator's own request log (method, path, query, status, ...)."""
        result: list[dict[str, Any]] = self.get_json("/_emulator/requests")
        return result

    def client_ports(self) -> list[dict[str, Any]]:
        """Each API request's client port, method, path and model id, oldest first."""
        result: list[dict[str, Any]] = self.get_json(REQUESTS_PATH)
        return result

    def batches(self) -> list[dict[str, Any]]:
        """Every batch with its status now, ``startTime`` and ``endTime``."""
        result: list[dict[str, Any]] = self.get_json("/_emulator/batches")
        return result


@contextmanager
def running_emulator(options: Sequence[str]) -> Iterator[EmulatorInfo]:
    """
    Run ``python -m benchmarks.emulator_process OPTIONS`` for the duration of a ``with`` block.

    :param options: command line options of :mod:`benchmarks.emulator_process`.
    """
    command = [sys.executable, "-m", "benchmarks.emulator_process", *options]
    with announced_process(
        command, READY_PREFIX, what="The benchmark emulator", env=_emulator_environment()
    ) as (found, pid):
        yield EmulatorInfo(
            url=found["url"],
            token=found["token"],
            catalog_id=found["catalog_id"],
            queue_seconds=float(found["queue_seconds"]),
            models=found["models"],
            pid=pid,
        )


def _emulator_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # The server needs no Airflow; keep the benchmark's connection out of its sight all the same.
    environment.pop(CONN_ENV, None)
    return environment


def use_emulator_connection(emulator: EmulatorInfo) -> None:
    """
    Point this process's Airflow at the emulator: a throwaway ``AIRFLOW_HOME`` and ``atscale_default``.

    Call before Airflow is imported: it reads its configuration once, on first import.

    :param emulator: the running emulator.
    """
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="atscale-bench-airflow-home-"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ[CONN_ENV] = json.dumps(
        {"conn_type": "atscale", "host": emulator.url, "password": emulator.token}
    )
