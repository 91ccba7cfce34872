"""A thread-safe record of every API request the emulator received."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    """
    One request and how it was answered.

    :param method: HTTP method.
    :param path: URL path.
    :param query: Query parameters (the last value wins when a name repeats).
    :param headers: Request headers, names lower-cased.
    :param body: The body parsed as JSON, else the raw text; ``None`` when empty.
    :param status: Status code answered, ``None`` when the connection was dropped.
    :param fault: Injected fault (a :class:`~airflow_provider_atscale.emulator.faults.Fault` value), if any.
    :param received_at: Wall-clock time the request arrived, in seconds since the Unix epoch.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int | None
    fault: str | None
    received_at: float


class RequestLog:
    """The recorded requests, oldest first, appended and read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[RecordedRequest] = []

    def record(self, entry: RecordedRequest) -> None:
        """
        Append a request.

        :param entry: The request to record.
        """
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[RecordedRequest]:
        """Return a copy of the recorded requests, oldest first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Forget every recorded request."""
        with self._lock:
            self._entries.clear()

    def count(
        self,
        method: str | None = None,
        path_prefix: str | None = None,
        *,
        status: int | None = None,
        fault: str | None = None,
    ) -> int:
        """
        Count the recorded requests that match every criterion given.

        :param method: HTTP method, case-insensitive.
        :param path_prefix: Start of the path, e.g. ``/v1/aggregates-batch``.
        :param status: Status code answered.
        :param fault: Injected fault, e.g. ``"503"`` or ``"drop_after"``.
        """
        return sum(
            1
            for entry in self.entries()
            if (method is None or entry.method == method.upper())
            and (path_prefix is None or entry.path.startswith(path_prefix))
            and (status is None or entry.status == status)
            and (fault is None or entry.fault == fault)
        )
