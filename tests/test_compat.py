"""The compat module: the names it picks per Airflow version, and its backport of aget_connection."""

from __future__ import annotations

import asyncio
import threading

import pytest
from packaging.version import Version

from airflow_provider_atscale import _compat
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_VERSION


def test_version_flags_follow_the_installed_airflow() -> None:
    release = Version(AIRFLOW_VERSION).release

    assert _compat.AIRFLOW_V_3_0_PLUS is (release >= (3, 0))
    assert _compat.AIRFLOW_V_3_1_PLUS is (release >= (3, 1))
    assert _compat.AIRFLOW_V_3_2_PLUS is (release >= (3, 2))


def test_the_provider_errors_are_the_exceptions_airflow_handles() -> None:
    from airflow_provider_atscale.errors import AtScaleConfigurationError, AtScaleError

    assert issubclass(AtScaleError, _compat.AirflowException)
    assert issubclass(AtScaleConfigurationError, _compat.AirflowFailException)


def test_aget_connection_reads_the_connection(atscale_conn: str) -> None:
    conn = asyncio.run(AtScaleHook.aget_connection(atscale_conn))

    assert conn.host == "https://atscale.test"
    assert conn.conn_type == "atscale"


def test_aget_connection_of_an_unknown_id_raises_not_found() -> None:
    with pytest.raises(_compat.AirflowNotFoundException):
        asyncio.run(AtScaleHook.aget_connection("atscale_nowhere"))


@pytest.mark.skipif(AIRFLOW_V_3_1_PLUS, reason="Airflow 3.1 and later have their own aget_connection")
def test_the_backported_aget_connection_looks_up_off_the_event_loop(
    atscale_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[int] = []
    original = AtScaleHook.get_connection

    def recording_get_connection(conn_id: str) -> object:
        lookups.append(threading.get_ident())
        return original(conn_id)

    monkeypatch.setattr(AtScaleHook, "get_connection", recording_get_connection)

    async def lookup() -> int:
        await AtScaleHook.aget_connection(atscale_conn)
        return threading.get_ident()

    loop_thread = asyncio.run(lookup())

    assert len(lookups) == 1
    assert lookups[0] != loop_thread
