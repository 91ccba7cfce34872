"""Builds through the operator against an emulator that misbehaves: for each kind of fault at a 30% rate, 30
builds in sync mode and 30 in deferrable mode all succeed, AtScale creates exactly one batch per build, and no
secret reaches the logs."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale.emulator import (
    DEFAULT_CATALOG_ID,
    DEFAULT_MODEL_ID,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    FaultConfig,
)
from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from tests.helpers import RecordingTaskInstance, use_connection

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer
    from tests.helpers import DrivenClock

BUILDS = 30
RATE = 0.3

# Each kind of fault, with the connection extras it needs. Token expiry needs tokens that expire:
# the exchanged and password-grant tokens (the API token itself does not).
FAULT_KINDS: dict[str, tuple[FaultConfig, dict[str, Any]]] = {
    "503": (FaultConfig(seed=11, rate_503=RATE), {}),
    "429 Retry-After seconds": (FaultConfig(seed=12, rate_429=RATE, retry_after=7), {}),
    "429 Retry-After date": (
        FaultConfig(seed=13, rate_429=RATE, retry_after=7, retry_after_http_date=True),
        {},
    ),
    "500 after processing": (FaultConfig(seed=14, rate_500=RATE), {}),
    "dropped before processing": (FaultConfig(seed=15, rate_drop_before=RATE), {}),
    "dropped after processing": (FaultConfig(seed=16, rate_drop_after=RATE), {}),
    "slow answers": (FaultConfig(seed=17, rate_slow=RATE, slow_seconds=0.02), {}),
    "exchanged token expires": (FaultConfig(seed=18, token_ttl_seconds=45), {"auth_type": "token_exchange"}),
    "password token expires": (FaultConfig(seed=19, token_ttl_seconds=45), {"auth_type": "password"}),
}


def run_build(index: int, deferrable: bool, clock: DrivenClock) -> dict[str, Any]:
    """One build through the operator, deferring to the trigger and resuming as Airflow would."""
    from tests.compat import TaskDeferred

    task = AtScaleAggregateBuildOperator(
        task_id=f"build_{index}",
        catalog_id=DEFAULT_CATALOG_ID,
        model_id=DEFAULT_MODEL_ID,
        full_build=index % 2 == 0,
        poll_interval=30,
        deferrable=deferrable,
    )
    started = datetime.fromtimestamp(clock.now(), tz=timezone.utc)
    context: Any = {"ti": RecordingTaskInstance(), "dag_run": SimpleNamespace(start_date=started)}
    try:
        return task.execute(context)
    except TaskDeferred as deferral:
        trigger = deferral.trigger

    async def first_event() -> Any:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger emitted no event")

    return task.execute_complete(context, asyncio.run(first_event()))


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
@pytest.mark.parametrize("kind", list(FAULT_KINDS))
def test_every_build_succeeds_once_despite_faults(
    emulator: EmulatorServer,
    emulator_clock: DrivenClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    kind: str,
    deferrable: bool,
) -> None:
    faults, extras = FAULT_KINDS[kind]
    by_password = extras.get("auth_type") == "password"
    login, password = (DEFAULT_USERNAME, DEFAULT_PASSWORD) if by_password else (None, emulator.token)
    use_connection(monkeypatch, emulator.url, password, login, max_retries=10, **extras)
    emulator.faults.configure(faults)

    results = [run_build(index, deferrable, emulator_clock) for index in range(BUILDS)]

    assert [result["status"] for result in results] == ["done"] * BUILDS
    created = emulator.state.batches()
    assert len(created) == BUILDS, "exactly one batch per build"
    assert sorted(result["id"] for result in results) == sorted(batch.id for batch in created)
    injected = sum(1 for request in emulator.request_log.entries() if request.fault is not None)
    if "expires" not in kind:
        assert injected >= BUILDS, f"the emulator injected only {injected} faults"
    logged = capsys.readouterr()
    text = logged.out + logged.err + caplog.text
    for secret in _secrets(emulator, password):
        assert secret not in text


def _secrets(emulator: EmulatorServer, password: str) -> set[str]:
    """The API token or password, and every access token the emulator saw in an Authorization header."""
    tokens = {password, emulator.token}
    for request in emulator.request_log.entries():
        header = {k.lower(): v for k, v in request.headers.items()}.get("authorization", "")
        if header.startswith("Bearer "):
            tokens.add(header.removeprefix("Bearer "))
    return tokens
