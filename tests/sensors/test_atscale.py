"""The batch sensor against the emulator: each poke is one poll of the waiting loop, or it defers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale.emulator import (
    DEFAULT_CATALOG_ID,
    DEFAULT_MODEL_ID,
    FAILING_MODEL_ID,
    FaultConfig,
)
from airflow_provider_atscale.errors import (
    AtScaleAuthError,
    AtScaleBuildFailedError,
    AtScaleConfigurationError,
    AtScaleError,
)
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from airflow_provider_atscale.sensors.atscale import AtScaleAggregateBatchSensor
from tests.compat import TaskDeferred
from tests.helpers import batch_object, use_connection

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer
    from tests.helpers import DrivenClock

BY_NAME = {
    "catalog_id": None,
    "model_id": None,
    "catalog_name": "Sales Insights",
    "model_name": "Internet Sales",
}
SUCCEEDED = {"outcome": "succeeded", "batch_id": "b-1", "batch": batch_object(status="done"), "message": ""}


def sensor(batch_id: str, **kwargs: Any) -> AtScaleAggregateBatchSensor:
    ids = {"catalog_id": DEFAULT_CATALOG_ID, "model_id": DEFAULT_MODEL_ID}
    return AtScaleAggregateBatchSensor(
        task_id="wait", batch_id=batch_id, poke_interval=30, **{**ids, **kwargs}
    )


def start_batch(model_id: str = DEFAULT_MODEL_ID) -> str:
    return AtScaleHook().trigger_aggregate_build(DEFAULT_CATALOG_ID, model_id, full_build=False).id


def test_a_poke_is_false_while_the_batch_runs_then_returns_it(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    batch_id = start_batch()
    task = sensor(batch_id)

    running = task.poke({})
    emulator_clock.advance(200)
    done = task.poke({})

    assert running is False
    assert done.is_done is True
    assert (done.xcom_value["id"], done.xcom_value["status"]) == (batch_id, "done")


def test_a_failed_batch_fails_the_sensor_at_its_first_poke(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    batch_id = start_batch(FAILING_MODEL_ID)
    emulator_clock.advance(200)

    with pytest.raises(AtScaleBuildFailedError, match="permission denied on schema 'atscale_aggs'"):
        sensor(batch_id, model_id=FAILING_MODEL_ID).poke({})


def test_an_outage_across_pokes_is_not_yet_and_is_logged_once_when_it_starts_and_ends(
    emulator: EmulatorServer,
    emulator_clock: DrivenClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    batch_id = start_batch()
    use_connection(monkeypatch, emulator.url, emulator.token, max_retries=0)
    task = sensor(batch_id)
    emulator.faults.configure(FaultConfig(rate_503=1.0))

    during = [task.poke({}), task.poke({}), task.poke({})]
    emulator.faults.configure(FaultConfig())
    emulator_clock.advance(200)
    after = task.poke({})

    assert during == [False, False, False]
    assert after.is_done is True
    logged = capsys.readouterr().out
    assert logged.count(f"AtScale does not answer polls of batch {batch_id}") == 1
    assert logged.count(f"AtScale answers polls of batch {batch_id} again") == 1


def test_a_refused_token_the_connection_does_not_change_fails_the_sensor(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, emulator.url, "revoked")

    with pytest.raises(AtScaleAuthError, match="connection 'atscale_default'"):
        sensor("b-1").poke({})


def test_deferrable_mode_defers_to_the_trigger_with_the_sensor_s_interval_and_timeout(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    with pytest.raises(TaskDeferred) as excinfo:
        sensor("b-1", deferrable=True, timeout=600).execute({})

    assert excinfo.value.method_name == "execute_complete"
    _, kwargs = excinfo.value.trigger.serialize()
    assert kwargs == {
        "atscale_conn_id": "atscale_default",
        "catalog_id": DEFAULT_CATALOG_ID,
        "model_id": DEFAULT_MODEL_ID,
        "batch_id": "b-1",
        "poll_interval": 30.0,
        "deadline": kwargs["started_at"] + 600,
        "timeout": 600.0,
        "started_at": pytest.approx(emulator_clock.now(), abs=5),
        "last_status": None,
    }
    assert emulator.request_log.entries() == [], "ids given: nothing to look up"


def test_execute_complete_returns_the_batch_of_a_succeeded_event_and_refuses_a_missing_one() -> None:
    task = sensor("b-1", deferrable=True)

    assert task.execute_complete({}, SUCCEEDED) == batch_object(status="done")
    with pytest.raises(AtScaleError, match="refusing to guess"):
        task.execute_complete({}, None)


@pytest.mark.parametrize(
    ("batch_id", "names"),
    [("", {}), ("a/b", {}), ("has space", {}), pytest.param("a/b", BY_NAME, id="names")],
)
def test_a_bad_batch_id_is_refused_before_any_request(
    emulator: EmulatorServer, batch_id: str, names: dict[str, Any]
) -> None:
    with pytest.raises(AtScaleConfigurationError, match="batch_id must be"):
        sensor(batch_id, deferrable=True, **names).execute({})

    assert emulator.request_log.entries() == []


@pytest.mark.parametrize("kwargs", [{"catalog_id": None}, {"model_name": "Internet Sales"}])
def test_a_model_named_neither_or_twice_fails_when_the_dag_is_parsed(kwargs: dict[str, Any]) -> None:
    with pytest.raises(AtScaleConfigurationError):
        sensor("b-1", **kwargs)


def test_names_are_looked_up_once_for_every_poke(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    task = sensor(start_batch(), **BY_NAME)

    assert task.poke({}) is False
    emulator_clock.advance(200)
    assert task.poke({}).is_done is True

    assert emulator.request_log.count("GET", "/v1/catalogs") == 1
    polls = [r for r in emulator.request_log.entries() if r.path.startswith("/wapi")]
    assert {r.query["modelId"] for r in polls} == {DEFAULT_MODEL_ID}


def test_an_unknown_name_fails_before_any_poll(emulator: EmulatorServer) -> None:
    with pytest.raises(AtScaleConfigurationError, match=r"no catalog named 'Sales' among .*'Sales Insights'"):
        sensor("b-1", **{**BY_NAME, "catalog_name": "Sales"}).poke({})

    assert [r.path for r in emulator.request_log.entries()] == ["/v1/catalogs"]
