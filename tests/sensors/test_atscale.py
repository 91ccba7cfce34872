from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, FAILING_MODEL_ID
from airflow_provider_atscale.errors import AtScaleBuildFailedError, AtScaleConfigurationError
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from airflow_provider_atscale.sensors.atscale import AtScaleAggregateBatchSensor
from airflow_provider_atscale.triggers.atscale import AtScaleAggregateBatchTrigger

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer
    from tests.helpers import DrivenClock


def sensor(batch_id: str, model_id: str = DEFAULT_MODEL_ID, **kwargs: Any) -> AtScaleAggregateBatchSensor:
    return AtScaleAggregateBatchSensor(
        task_id="wait",
        catalog_id=DEFAULT_CATALOG_ID,
        model_id=model_id,
        batch_id=batch_id,
        poke_interval=30,
        **kwargs,
    )


def start_batch(model_id: str = DEFAULT_MODEL_ID) -> str:
    return AtScaleHook().trigger_aggregate_build(DEFAULT_CATALOG_ID, model_id, full_build=False).id


def test_batch_id_is_templated() -> None:
    assert "batch_id" in AtScaleAggregateBatchSensor.template_fields
    assert {"catalog_id", "model_id"} <= set(AtScaleAggregateBatchSensor.template_fields)


def test_poke_is_false_while_in_progress_then_returns_the_batch(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    batch_id = start_batch()
    task = sensor(batch_id)

    in_progress = task.poke({})
    emulator_clock.advance(200)
    done = task.poke({})

    assert in_progress is False
    assert done.is_done is True
    assert done.xcom_value["id"] == batch_id
    assert done.xcom_value["status"] == "done"


def test_a_failed_batch_fails_the_sensor_at_once(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    batch_id = start_batch(FAILING_MODEL_ID)
    emulator_clock.advance(200)

    with pytest.raises(AtScaleBuildFailedError, match="permission denied on schema 'atscale_aggs'"):
        sensor(batch_id, FAILING_MODEL_ID).poke({})


def test_an_unknown_status_fails_the_sensor(emulator: EmulatorServer, emulator_clock: DrivenClock) -> None:
    emulator.state.configure_model(DEFAULT_MODEL_ID, final_status="archived")
    batch_id = start_batch()
    emulator_clock.advance(200)

    with pytest.raises(AtScaleBuildFailedError, match="'archived', which this provider does not know"):
        sensor(batch_id).poke({})


def test_deferrable_mode_defers_to_the_trigger_with_its_own_deadline(
    emulator: EmulatorServer, emulator_clock: DrivenClock
) -> None:
    from tests.compat import TaskDeferred

    with pytest.raises(TaskDeferred) as excinfo:
        sensor("batch-1", deferrable=True, timeout=600).execute({"ti": SimpleNamespace()})

    trigger = excinfo.value.trigger
    assert isinstance(trigger, AtScaleAggregateBatchTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["batch_id"] == "batch-1"
    assert kwargs["poll_interval"] == 30.0
    assert kwargs["deadline"] == pytest.approx(emulator_clock.now() + 600, abs=5)
    assert excinfo.value.method_name == "execute_complete"


def test_execute_complete_refuses_a_missing_event() -> None:
    from airflow_provider_atscale.errors import AtScaleError

    with pytest.raises(AtScaleError, match="refusing to guess"):
        sensor("batch-1", deferrable=True).execute_complete({}, None)


@pytest.mark.parametrize("batch_id", ["", "a/b", "has space"])
def test_bad_batch_id_is_refused_before_any_request(emulator: EmulatorServer, batch_id: str) -> None:
    with pytest.raises(AtScaleConfigurationError, match="batch_id must be"):
        sensor(batch_id).execute({})

    assert emulator.request_log.entries() == []


def test_a_poke_during_an_outage_is_not_yet_and_the_outage_is_logged_once_at_each_end(
    emulator: EmulatorServer,
    emulator_clock: DrivenClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from airflow_provider_atscale.emulator import FaultConfig
    from tests.helpers import connection_uri

    batch_id = start_batch()
    monkeypatch.setenv(
        "AIRFLOW_CONN_ATSCALE_DEFAULT",
        connection_uri(host=emulator.url, password=emulator.token, max_retries=0),
    )
    task = sensor(batch_id)
    emulator.faults.configure(FaultConfig(rate_503=1.0))

    during = [task.poke({}), task.poke({})]
    emulator.faults.configure(FaultConfig())
    emulator_clock.advance(200)
    after = task.poke({})

    assert during == [False, False]
    assert after.is_done is True
    logged = capsys.readouterr().out
    assert logged.count(f"AtScale does not answer pokes of batch {batch_id}") == 1
    assert logged.count(f"AtScale answers pokes of batch {batch_id} again") == 1


def test_a_poke_that_meets_an_error_that_stays_fails_the_sensor(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_atscale.errors import AtScaleAuthError
    from tests.helpers import connection_uri

    monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(host=emulator.url, password="revoked"))

    with pytest.raises(AtScaleAuthError, match="connection 'atscale_default'"):
        sensor("b-1").poke({})
