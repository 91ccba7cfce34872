"""
Processes and page steps shared by the connection form tests.

Airflow's api-server and the AtScale emulator run as child processes, each in its own process group so
that stopping the group also stops anything it started. Every wait has a deadline. Playwright is only
imported for type checking, so this module loads where Playwright is not installed.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

HOST = "127.0.0.1"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Flags that let Debian's Chromium run as root in a container whose network is closed.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT_WIDTH = 1280
VIEWPORT_HEIGHT = 1600

DB_MIGRATE_TIMEOUT_SECONDS = 180.0
API_SERVER_START_SECONDS = 120.0
EMULATOR_START_SECONDS = 30.0
PROCESS_STOP_SECONDS = 15.0
# Pause between two readiness probes; it ends early if the process exits.
PROBE_INTERVAL_SECONDS = 0.2
# Playwright's limit for each action and assertion, in milliseconds.
BROWSER_TIMEOUT_MS = 20_000
LOG_TAIL_LINES = 40
BROWSER_LAUNCH_TIMEOUT_MS = 60_000

# prctl(2) option: the signal the kernel sends a process when its parent dies.
PR_SET_PDEATHSIG = 1

# Whole lines only: the log may be read while a line is half written, cutting a URL or token short.
EMULATOR_LISTENING = re.compile(r"^AtScale emulator listening on (http://\S+)\n", re.MULTILINE)
EMULATOR_TOKEN = re.compile(r"^Demo API token: (\S+)\n", re.MULTILINE)


def chromium_executable() -> str:
    """The Chromium the tests drive: ``$ATSCALE_UI_CHROMIUM``, else Debian's."""
    return os.environ.get("ATSCALE_UI_CHROMIUM", DEFAULT_CHROMIUM)


@dataclass(frozen=True)
class Emulator:
    """A running emulator: its base URL and the API token it accepts."""

    url: str
    token: str

    def recorded_requests(self) -> list[dict[str, object]]:
        """Every request the emulator has answered, oldest first."""
        with urllib.request.urlopen(f"{self.url}/_emulator/requests", timeout=5) as response:
            requests: list[dict[str, object]] = json.load(response)
        return requests


@dataclass(frozen=True)
class AirflowServer:
    """A running Airflow api-server."""

    url: str

    def get_json(self, path: str) -> dict[str, object]:
        """GET an API path; the simple auth manager lets every caller in as admin."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            body: dict[str, object] = json.load(response)
        return body


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path) -> str:
    """The last lines of a process log, for failure messages."""
    if not path.exists():
        return "(no log)"
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


@contextmanager
def process_group(
    command: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """
    Run ``command`` in a new process group with its output in ``log_path``; stop the whole group on exit.

    SIGTERM first, SIGKILL if the group has not ended within ``PROCESS_STOP_SECONDS``.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_terminate_with_parent if sys.platform == "linux" else None,
        )
    try:
        yield process
    finally:
        _stop_group(process)


def _terminate_with_parent() -> None:
    """
    In the child, before ``exec``: have Linux send it SIGTERM if the test process dies first (killed
    with SIGKILL, say), when no fixture teardown runs.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=PROCESS_STOP_SECONDS)
    # Whatever the group still holds: a leader that ignored SIGTERM, or children that outlived it.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=PROCESS_STOP_SECONDS)


def pause_unless_exited(process: subprocess.Popen[bytes]) -> None:
    """Wait up to ``PROBE_INTERVAL_SECONDS``, less if the process exits meanwhile."""
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=PROBE_INTERVAL_SECONDS)


def airflow_env(airflow_home: Path, api_port: int) -> dict[str, str]:
    """
    The environment of the Airflow processes: this process's, without any Airflow setting, plus a
    throwaway AIRFLOW_HOME on SQLite, the simple auth manager with everyone admin, and connection testing.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/airflow.db",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(airflow_home / "dags"),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API__BASE_URL": f"http://{HOST}:{api_port}/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        }
    )
    return env


def wait_for_health(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    """Wait until Airflow's health endpoint reports a healthy metadata database, or fail at the deadline."""
    deadline = time.monotonic() + API_SERVER_START_SECONDS
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"airflow api-server exited with {process.returncode}:\n{log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
                health = json.load(response)
            if health.get("metadatabase", {}).get("status") == "healthy":
                return
            last_error = f"health: {health}"
        except (OSError, ValueError) as error:
            last_error = str(error)
        pause_unless_exited(process)
    pytest.fail(
        f"airflow api-server not healthy at {url} within {API_SERVER_START_SECONDS:.0f} s ({last_error}):\n"
        f"{log_tail(log_path)}"
    )


def wait_for_emulator(process: subprocess.Popen[bytes], log_path: Path) -> Emulator:
    """
    Read the emulator's URL and token from its first lines, or fail at the deadline.

    The emulator prints them once it serves, with its SIGTERM handler already installed, so the fixture may
    stop it at any time after; each line counts once its newline is written.
    """
    deadline = time.monotonic() + EMULATOR_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the emulator exited with {process.returncode}:\n{log_tail(log_path)}")
        text = log_path.read_text(errors="replace")
        url, token = EMULATOR_LISTENING.search(text), EMULATOR_TOKEN.search(text)
        if url and token:
            return Emulator(url=url.group(1), token=token.group(1))
        pause_unless_exited(process)
    pytest.fail(f"the emulator did not start within {EMULATOR_START_SECONDS:.0f} s:\n{log_tail(log_path)}")


def open_add_connection_form(page: Page, server: AirflowServer, connection_type: str) -> Locator:
    """Open Admin > Connections > Add Connection and choose ``connection_type``; return the dialog."""
    page.goto(f"{server.url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox", name="Connection Type").fill(connection_type)
    page.get_by_role("option", name=connection_type, exact=True).click()
    return dialog
