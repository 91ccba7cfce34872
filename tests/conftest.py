"""Shared set-up. Airflow reads its configuration when first imported, so the throwaway AIRFLOW_HOME (SQLite,
no examples) is set here, before any test module imports Airflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="atscale-test-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
_ROOT = Path(__file__).parent.parent
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_ROOT / "example_dags")
# Airflow 3's dag.test() runs DAGs from a DAG bundle: the example DAGs and the test suite's own DAGs are
# two bundles. Airflow 2 has no bundles and ignores the setting.
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(path), "refresh_interval": 0},
        }
        for name, path in (
            ("atscale_examples", _ROOT / "example_dags"),
            ("atscale_tests", _ROOT / "tests" / "dags"),
        )
    ]
)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ.pop("AIRFLOW_CONN_ATSCALE_DEFAULT", None)

import pytest  # noqa: E402

from tests.helpers import DrivenClock, FakeClock, use_connection  # noqa: E402

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: builds the package and installs it into a fresh virtualenv (about 30 s); "
        "`make test` runs it, `pytest -m 'not slow'` leaves it out",
    )


@pytest.fixture(autouse=True)
def _no_tokens_from_earlier_tests() -> Iterator[None]:
    """Hooks of one process share their tokens; each test starts afresh."""
    from airflow_provider_atscale.hooks._auth import forget_tokens

    forget_tokens()
    yield
    forget_tokens()


@pytest.fixture
def atscale_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    """The default ``atscale`` connection, pointing at a host only requests-mock answers."""
    use_connection(monkeypatch)
    return "atscale_default"


def drive_the_provider(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """The provider reads time and sleeps through this clock: its sleeps return at once."""
    from airflow_provider_atscale import _clock

    for name in ("now", "sleep", "asleep"):
        monkeypatch.setattr(_clock, name, getattr(clock, name))


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    drive_the_provider(monkeypatch, clock)
    return clock


# Batches in the integration tests take 10 s to start and 100 s to build, in emulator time; the provider
# polls every 30 s, so a status change never lands exactly on a poll.
EMULATOR_QUEUE_SECONDS = 10.0
EMULATOR_BUILD_SECONDS = 100.0


@pytest.fixture(scope="session")
def emulator_clock() -> DrivenClock:
    return DrivenClock()


@pytest.fixture(scope="session")
def emulator_server(emulator_clock: DrivenClock) -> Iterator[EmulatorServer]:
    """One emulator for the whole session on a free port of 127.0.0.1, reset before each test."""
    from airflow_provider_atscale.emulator import EmulatorConfig, run_emulator

    config = EmulatorConfig(
        default_queue_seconds=EMULATOR_QUEUE_SECONDS, default_build_seconds=EMULATOR_BUILD_SECONDS
    )
    with run_emulator(config, clock=emulator_clock) as server:
        yield server


@pytest.fixture
def emulator(
    emulator_server: EmulatorServer, emulator_clock: DrivenClock, monkeypatch: pytest.MonkeyPatch
) -> EmulatorServer:
    """The emulator, reset, as the ``atscale_default`` connection; the provider's clock is the emulator's,
    so every wait the provider makes moves emulator time forward instead of sleeping."""
    emulator_server.reset()
    # Back to real time: Airflow stamps its own dates (a try's start) with the real clock, and a test may
    # compare them with AtScale's, as a retry looking for its build does.
    emulator_clock.rewind()
    use_connection(monkeypatch, emulator_server.url, emulator_server.token)
    # The AtScale URL DAGs name their model's asset with, when they are parsed.
    monkeypatch.setenv("ATSCALE_URL", emulator_server.url)
    drive_the_provider(monkeypatch, emulator_clock)
    return emulator_server


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database (SQLite in the throwaway AIRFLOW_HOME), for dag.test()."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
    )
