"""
Shared test set-up.

Airflow reads its configuration when first imported, so the throwaway AIRFLOW_HOME (SQLite, no examples)
is set here, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="atscale-test-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).parent.parent / "example_dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ.pop("AIRFLOW_CONN_ATSCALE_DEFAULT", None)

import pytest  # noqa: E402

from tests.helpers import FakeClock, connection_uri  # noqa: E402


@pytest.fixture
def atscale_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    """The default ``atscale`` connection, pointing at a host only requests-mock answers."""
    monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri())
    return "atscale_default"


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replace the provider's clock: sleeps return at once and move time forward."""
    from airflow_provider_atscale import _clock

    clock = FakeClock()
    monkeypatch.setattr(_clock, "now", clock.now)
    monkeypatch.setattr(_clock, "sleep", clock.sleep)
    monkeypatch.setattr(_clock, "asleep", clock.asleep)
    return clock
