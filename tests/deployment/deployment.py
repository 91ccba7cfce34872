"""
A real Airflow deployment started from the project's venv, as users run Airflow: ``airflow api-server``,
``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer`` as separate processes on one SQLite
metadata database, and the AtScale emulator in a process of its own. Everything binds 127.0.0.1.

Readiness is what the processes report, polled with a deadline: the emulator's and the execution API's
health answers, the heartbeats in ``/api/v2/monitor/health``, the DAGs the dag processor parsed.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from airflow_provider_atscale.emulator.config import DEMO_TOKEN
from tests.deployment.clients import AirflowApi, EmulatorControl, HttpError
from tests.deployment.processes import (
    ListeningSocket,
    ManagedProcess,
    descendants,
    kill_group,
    listening_sockets,
    log_tail,
    start_process,
    stop_process,
)

T = TypeVar("T")

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = ROOT / "example_dags"
DEPLOYMENT_DAGS = ROOT / "tests" / "deployment" / "dags"

EXAMPLE_DAG_IDS = frozenset(
    {
        "atscale_nightly_incremental_build",
        "atscale_refresh_sales_dashboard",
        "atscale_build_many_models",
        "atscale_sales_etl",
        "atscale_post_etl_full_rebuild",
    }
)
DEPLOYMENT_DAG_IDS = frozenset(
    {
        "atscale_deployment_many_deferred",
        "atscale_deployment_triggerer_restart",
        "atscale_deployment_outage",
        "atscale_deployment_worker_kill",
        "atscale_deployment_bad_credentials",
        "atscale_deployment_failing_build",
        "atscale_deployment_token_rotation",
    }
)

# The demo catalog's batches: 1 s queued, 4 s building.
EMULATOR_QUEUE_SECONDS = 1
EMULATOR_BUILD_SECONDS = 4
EXAMPLE_POLL_INTERVAL = 2
# A token AtScale refuses, distinctive enough to find wherever it might leak.
BAD_TOKEN = f"deployment-bad-token-{secrets.token_hex(12)}"
# The API token the rotation scenario's connection starts with: the emulator accepts it beside its demo token,
# and nothing else uses it, so rotating it leaves ``atscale_default`` working for every other scenario.
ROTATING_TOKEN = f"deployment-rotating-token-{secrets.token_hex(12)}"

# Deadlines: generous, since the machine may be shared; none of them is ever waited out on success.
DB_MIGRATE_SECONDS = 300.0
START_SECONDS = 180.0
PARSE_SECONDS = 180.0
PROBE_INTERVAL_SECONDS = 0.5
# Four Airflow processes and up to 30 task processes write to one SQLite file. A writer waits this long
# for the lock (Python's default is 5 s, which a loaded machine exceeds: the triggerer and dag processor
# then die on "database is locked").
SQLITE_BUSY_SECONDS = 60
# How soon a task's supervisor notices its task process has exited (Airflow's default is 5 s). Airflow 3.3
# fails a resumed deferred task as "killed externally" when its trigger fires before the scheduler heard
# that the deferring process exited; with seconds-long builds, 5 s is too wide a window.
WORKER_HEARTBEAT_SECONDS = 1
# How soon a triggerer that stopped heartbeating is taken for dead and its triggers handed to another.
TRIGGERER_HEARTBEAT_SECONDS = 1
TRIGGERER_DEAD_AFTER_SECONDS = 10


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def connection_json(host: str, token: str) -> str:
    """
    An ``atscale`` connection in Airflow's JSON form, with every extra left at its default.

    :param host: AtScale's URL.
    :param token: the API token.
    """
    return json.dumps({"conn_type": "atscale", "host": host, "password": token})


@dataclass
class Deployment:
    """
    The running deployment: its processes, their logs, and clients of Airflow's and the emulator's APIs.

    :param root: the folder holding everything: ``logs/`` (one file per process) and ``airflow-home/``.
    :param processes: every process started, in order; a restarted triggerer is a new one.
    :param api_port: the api-server's port on 127.0.0.1.
    :param emulator_port: the emulator's port on 127.0.0.1.
    :param emulator_token: the API token the emulator accepts, in ``atscale_default``.
    :param jwt_secret: the secret every Airflow process signs and checks its tokens with.
    """

    root: Path
    processes: list[ManagedProcess] = field(default_factory=list)
    api_port: int = field(default_factory=free_port)
    emulator_port: int = field(default_factory=free_port)
    emulator_token: str = DEMO_TOKEN
    # One for all: the scheduler signs the workers' execution API tokens, the api-server checks them.
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(64), repr=False)

    @property
    def log_dir(self) -> Path:
        """One log per process started."""
        return self.root / "logs"

    @property
    def airflow_home(self) -> Path:
        """AIRFLOW_HOME: the SQLite database, and the task logs in ``logs/``."""
        return self.root / "airflow-home"

    @property
    def database(self) -> Path:
        """The SQLite metadata database."""
        return self.airflow_home / "airflow.db"

    @property
    def task_log_dir(self) -> Path:
        """Where workers and triggerers write task logs."""
        return self.airflow_home / "logs"

    @property
    def api_url(self) -> str:
        """The api-server's base URL."""
        return f"http://{HOST}:{self.api_port}"

    @property
    def execution_api_url(self) -> str:
        """The execution API that task workers talk to."""
        return f"{self.api_url}/execution/"

    @property
    def emulator_url(self) -> str:
        """The emulator's base URL."""
        return f"http://{HOST}:{self.emulator_port}"

    @property
    def api(self) -> AirflowApi:
        """Airflow's REST API."""
        return AirflowApi(self.api_url)

    @property
    def emulator(self) -> EmulatorControl:
        """The emulator's control endpoints."""
        return EmulatorControl(self.emulator_url)

    def process(self, name: str) -> ManagedProcess:
        """
        The newest process of that name.

        :param name: e.g. ``scheduler`` or ``triggerer``.
        """
        return next(process for process in reversed(self.processes) if process.name == name)

    # Environment

    def airflow_env(self) -> dict[str, str]:
        """
        The environment of every Airflow process: this one's without any Airflow setting (the test suite's
        own AIRFLOW_HOME among them), plus the deployment's settings and connections.
        """
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        bundles = [
            {
                "name": name,
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(path)},
            }
            for name, path in (("atscale_examples", EXAMPLE_DAGS), ("atscale_deployment", DEPLOYMENT_DAGS))
        ]
        env.update(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                    f"sqlite:///{self.database}?timeout={SQLITE_BUSY_SECONDS}"
                ),
                # No connection pool: with 30 tasks calling the execution API at once, the api-server's
                # pool (15) ran dry while a request holding SQLite's write lock waited for a connection of
                # it, and every request stalled for the pool's 30 s timeout. SQLite connections are cheap.
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_ENABLED": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                # The bundles below replace the DAGs folder; an empty one keeps anything else out.
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.airflow_home / "dags"),
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                # The REST API without tokens: only this machine can reach it.
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__HOST": HOST,
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": f"{self.api_url}/",
                # Workers reach the execution API where the api-server listens, on 127.0.0.1.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": self.execution_api_url,
                "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
                # The scheduler's health server would bind 0.0.0.0: off, and on 127.0.0.1 if turned on.
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": str(WORKER_HEARTBEAT_SECONDS),
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": str(TRIGGERER_HEARTBEAT_SECONDS),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_DEAD_AFTER_SECONDS),
                "AIRFLOW_CONN_ATSCALE_DEFAULT": connection_json(self.emulator_url, self.emulator_token),
                "AIRFLOW_CONN_ATSCALE_BAD_TOKEN": connection_json(self.emulator_url, BAD_TOKEN),
                "ATSCALE_EXAMPLE_POLL_INTERVAL": str(EXAMPLE_POLL_INTERVAL),
                # The AtScale URL the example DAGs name their model assets with, as the connection does.
                "ATSCALE_URL": self.emulator_url,
            }
        )
        return env

    # Start and stop

    def start(self) -> None:
        """Start the emulator, migrate the database, start Airflow's four processes, wait for the DAGs."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.airflow_home / "dags").mkdir(parents=True, exist_ok=True)
        self._start_emulator()
        self._migrate()
        # Started together: none needs another to start, so their start-ups overlap.
        self._start_api_server()
        for name in ("scheduler", "dag-processor", "triggerer"):
            self.start_airflow(name)
        self._wait_for_api_server()
        self.wait_until(
            "scheduler, triggerer and dag processor heartbeating",
            self._components_healthy,
            timeout=START_SECONDS,
            logs=["scheduler", "triggerer", "dag-processor"],
        )
        self.wait_for_dags(EXAMPLE_DAG_IDS | DEPLOYMENT_DAG_IDS)

    def stop(self) -> None:
        """Stop every process started, newest first, whether or not it is still running."""
        for process in reversed(self.processes):
            stop_process(process)

    def _start_emulator(self) -> None:
        command = [
            sys.executable,
            "-m",
            "tests.deployment.emulator",
            "--host",
            HOST,
            "--port",
            str(self.emulator_port),
            "--queue-seconds",
            str(EMULATOR_QUEUE_SECONDS),
            "--build-seconds",
            str(EMULATOR_BUILD_SECONDS),
            "--api-token",
            ROTATING_TOKEN,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # From the project's root, where its launcher (a module of the tests) is importable.
        self._start("emulator", command, env, cwd=ROOT)
        self.wait_until(
            "the emulator answering", self.emulator.health, timeout=START_SECONDS, logs=["emulator"]
        )

    def _migrate(self) -> None:
        log_path = self.log_dir / "db-migrate.log"
        with log_path.open("wb") as log:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=self.airflow_env(),
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=DB_MIGRATE_SECONDS,
                check=False,
            )
        if result.returncode != 0:
            pytest.fail(
                f"airflow db migrate failed ({result.returncode}); read {log_path}:\n{log_tail(log_path)}"
            )
        # Write-ahead logging: readers no longer block the writer, nor it them. It stays with the file.
        with closing(sqlite3.connect(self.database)) as database:
            mode = database.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        assert mode == "wal", f"SQLite refused write-ahead logging for {self.database}: {mode}"

    def _start_api_server(self) -> None:
        self.start_airflow("api-server", "--host", HOST, "--port", str(self.api_port), "--workers", "1")

    def _wait_for_api_server(self) -> None:
        def ready() -> bool:
            if self.api.health().get("metadatabase", {}).get("status") != "healthy":
                return False
            # The execution API builds its versioned routes on first use: this pays for it before any
            # worker calls, and shows the URL workers are given answers on 127.0.0.1.
            return self.api.execution_api_health(self.execution_api_url).get("status") == "healthy"

        self.wait_until("the api-server and its execution API answering", ready, timeout=START_SECONDS)

    def start_airflow(self, name: str, *args: str) -> ManagedProcess:
        """
        Start one Airflow component. Log servers are never started: they bind every interface.

        :param name: ``api-server``, ``scheduler``, ``dag-processor`` or ``triggerer``.
        :param args: further options.
        """
        options = list(args)
        if name in ("scheduler", "triggerer"):
            options.append("--skip-serve-logs")
        command = [sys.executable, "-m", "airflow", name, *options]
        # Outside the project's source tree, as a deployment runs: the provider comes from the venv.
        return self._start(name, command, self.airflow_env(), cwd=self.root)

    def _start(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> ManagedProcess:
        count = sum(1 for process in self.processes if process.name == name)
        log_name = f"{name}.log" if count == 0 else f"{name}-{count + 1}.log"
        process = start_process(name, command, env, self.log_dir / log_name, cwd=cwd)
        self.processes.append(process)
        return process

    # Readiness

    def _components_healthy(self) -> bool:
        health = self.api.health()
        return all(health.get(part, {}).get("status") == "healthy" for part in _COMPONENTS)

    def wait_for_dags(self, dag_ids: Iterable[str]) -> None:
        """
        Wait until the dag processor has parsed every DAG of ``dag_ids``; fail at once on an import error.

        :param dag_ids: the DAGs to wait for.
        """
        wanted = set(dag_ids)

        def parsed() -> bool:
            errors = self.api.import_errors()
            if errors:
                pytest.fail(
                    "DAG files failed to import; read "
                    f"{self.log_dir / 'dag-processor.log'}:\n{json.dumps(errors, indent=2)[:3000]}"
                )
            return wanted <= self.api.dag_ids()

        self.wait_until(
            f"DAGs {sorted(wanted)} parsed", parsed, timeout=PARSE_SECONDS, logs=["dag-processor"]
        )

    def wait_until(
        self,
        description: str,
        probe: Callable[[], T | None],
        *,
        timeout: float,
        logs: Iterable[str] = ("api-server",),
        interval: float = PROBE_INTERVAL_SECONDS,
    ) -> T:
        """
        Poll ``probe`` until it returns something true, and return that; fail at the deadline, or as soon as
        a process of the deployment exits, naming the logs to read.

        :param description: what is awaited, for the failure message ("DAG run x finished").
        :param probe: the check; an HTTP or connection error counts as "not yet".
        :param timeout: seconds until the deadline.
        :param logs: names of the processes whose logs tell why it did not happen.
        :param interval: seconds between two probes.
        """
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while True:
            self.check_running()
            try:
                value = probe()
            except (OSError, HttpError, ValueError) as error:
                last_error = f"{type(error).__name__}: {error}"
            else:
                if value:
                    return value
                last_error = f"last answer: {value!r}"
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"Not {description} within {timeout:.0f} s ({last_error}).\n{self.logs_to_read(logs)}"
                )
            time.sleep(interval)

    def check_running(self) -> None:
        """Fail naming its log if a process that should be running has exited."""
        for process in self.processes:
            if process.exited() and not process.killed_on_purpose:
                pytest.fail(
                    f"{process.name} exited with {process.popen.returncode}; read {process.log_path}:\n"
                    f"{log_tail(process.log_path)}"
                )

    def logs_to_read(self, names: Iterable[str] = ()) -> str:
        """
        Where to look: the named processes' logs first (with their last lines), then every other log.

        :param names: the processes most likely to say what went wrong.
        """
        named = [process for process in self.processes if process.name in set(names)]
        lines = []
        for process in named:
            lines.append(f"--- {process.describe()} (last lines):\n{log_tail(process.log_path)}")
        lines.append(self.log_index())
        return "\n".join(lines)

    def log_index(self) -> str:
        """Every log of the deployment: one per process, and the task logs' folder."""
        entries = [f"  {process.describe()}" for process in self.processes]
        entries.append(f"  task logs (workers and triggerers): {self.task_log_dir}")
        return "Deployment logs:\n" + "\n".join(entries)

    # Processes

    def kill_triggerer(self) -> ManagedProcess:
        """SIGKILL the triggerer and everything it started, as a lost machine would; return it."""
        triggerer = self.process("triggerer")
        kill_group(triggerer)
        triggerer.popen.wait(timeout=30)
        return triggerer

    def start_triggerer(self, dead_job_ids: set[int]) -> int:
        """
        Start a new triggerer and wait until it heartbeats; return its job id.

        :param dead_job_ids: the job ids of triggerers that ran before, none of which counts.
        """
        self.start_airflow("triggerer")

        def new_job() -> int | None:
            for job in self.api.jobs("TriggererJob"):
                if job["id"] not in dead_job_ids and job["state"] == "running" and job["latest_heartbeat"]:
                    job_id: int = job["id"]
                    return job_id
            return None

        return self.wait_until(
            "a new triggerer heartbeating", new_job, timeout=START_SECONDS, logs=["triggerer"]
        )

    def all_pids(self) -> list[int]:
        """Every live process the deployment started, and every process those started."""
        pids: list[int] = []
        for process in self.processes:
            pids.extend(descendants(process))
        return pids

    def listeners(self) -> list[ListeningSocket]:
        """Every TCP socket a process of the deployment listens on."""
        return listening_sockets(self.all_pids())

    def log_files(self) -> list[Path]:
        """Every log file written so far: the processes' and the task logs (worker and triggerer)."""
        files = [path for path in self.log_dir.rglob("*") if path.is_file()]
        files += [path for path in self.task_log_dir.rglob("*") if path.is_file()]
        return files


# The parts of /api/v2/monitor/health that must say "healthy".
_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
