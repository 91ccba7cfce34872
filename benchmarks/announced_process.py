"""A server process of the benchmark that announces itself with one JSON line on its standard output."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


@contextmanager
def announced_process(
    command: Sequence[str], prefix: str, *, what: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[dict[str, Any], int]]:
    """
    Run ``command`` for the duration of a ``with`` block, once it has announced itself.

    Ready means the process printed a line ``prefix`` + JSON object: the object and the process id are
    yielded. The process is sent SIGTERM at the end of the block (killed if it outlives
    ``STOP_TIMEOUT_SECONDS``).

    :param command: the program and its arguments.
    :param prefix: what the announcing line starts with.
    :param what: the process, as an error names it (``"The fake server"``).
    :param env: its environment; defaults to this process's.
    :raises RuntimeError: it exited, or did not announce itself within ``START_TIMEOUT_SECONDS``.
    """
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, text=True, env=env)
    try:
        yield _announcement(process, prefix, what), process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _announcement(process: subprocess.Popen[str], prefix: str, what: str) -> dict[str, Any]:
    found: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        announced = False
        # Read to the end, so the server never blocks on a full pipe.
        for line in process.stdout:
            if not announced and line.startswith(prefix):
                found.put(json.loads(line[len(prefix) :]))
                announced = True
        if not announced:
            found.put(None)

    threading.Thread(target=read, name=f"{what} stdout", daemon=True).start()
    try:
        announcement = found.get(timeout=START_TIMEOUT_SECONDS)
    except queue.Empty:
        announcement = None
    if announcement is None:
        raise RuntimeError(f"{what} did not start (exit status {process.poll()})")
    return announcement
