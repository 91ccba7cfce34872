"""
The request flows driven by hand, as h11's tests drive its state machine: each test reads the instruction a
flow yields and feeds it an answer. No HTTP, no hook, no Airflow connection.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_atscale._flow import RawResponse, Send, Sleep
from airflow_provider_atscale._validation import BuildRequest
from airflow_provider_atscale.errors import AtScaleServerError, AtScaleTransportError
from airflow_provider_atscale.hooks import _operations
from airflow_provider_atscale.hooks._session import ApiSession
from airflow_provider_atscale.hooks._settings import ConnectionSettings
from tests.helpers import BASE_URL, CATALOG_ID, MODEL_ID, TOKEN, FakeClock, batch_object

BUILD = BuildRequest.checked(
    catalog_id=CATALOG_ID, model_id=MODEL_ID, full_build=False, grace_period_overrides={"sales": 30}
)


def session(**settings: Any) -> ApiSession:
    return ApiSession(
        ConnectionSettings(conn_id="atscale_default", base_url=BASE_URL, token=TOKEN, **settings)
    )


def answer(status: int, body: Any, **headers: str) -> RawResponse:
    return RawResponse(status, headers, json.dumps(body).encode())


CREATED = answer(201, {"batch": batch_object(), "success": True})


def test_a_build_is_one_post_with_the_api_token(fake_clock: FakeClock) -> None:
    flow = _operations.trigger_aggregate_build(session().begin(), BUILD)

    send = next(flow)

    assert isinstance(send, Send)
    assert (send.request.method, send.request.params) == ("POST", {"isFullBuild": "false"})
    assert send.request.json_body == {"gracePeriodOverrides": {"sales": 30}}
    assert send.headers == {"Authorization": f"Bearer {TOKEN}"}
    with pytest.raises(StopIteration) as done:
        flow.send(CREATED)
    assert done.value.value.id == batch_object()["id"]


def test_a_503_is_waited_out_and_posted_again(fake_clock: FakeClock) -> None:
    flow = _operations.trigger_aggregate_build(session().begin(), BUILD)
    next(flow)

    wait = flow.send(answer(503, {"message": "restarting"}, **{"retry-after": "7"}))
    again = flow.send(None)

    assert wait == Sleep(7.0)
    assert isinstance(again, Send)
    assert again.request.path.startswith("/v1/aggregates-batch/")


def test_after_an_ambiguous_failure_history_is_read_with_a_jwt_before_anything_is_posted_again(
    fake_clock: FakeClock,
) -> None:
    flow = _operations.trigger_aggregate_build(session().begin(), BUILD)
    post = next(flow).request

    # The connection dropped after the POST went out: AtScale may have started the build.
    exchange = flow.throw(
        AtScaleTransportError("dropped", method="POST", path=post.path, connection_opened=True)
    )

    assert (exchange.request.method, exchange.request.path) == ("POST", "/v1/token")
    history = flow.send(answer(201, {"accessToken": "jwt-1"}))
    assert history.request.path == "/wapi/p/aggregate/batch-history"
    assert history.headers == {"Authorization": "Bearer jwt-1"}

    started = batch_object(id="started-anyway", createDate="2099-01-01T00:00:00.000Z")
    with pytest.raises(StopIteration) as done:
        flow.send(answer(200, {"data": [started], "total": 1}))
    assert done.value.value.id == "started-anyway"


def test_a_500_answered_to_the_post_after_its_last_attempt_is_raised(fake_clock: FakeClock) -> None:
    flow = _operations.trigger_aggregate_build(session(max_retries=0).begin(), BUILD)
    next(flow)

    with pytest.raises(AtScaleServerError, match="HTTP 500"):
        flow.send(answer(500, {"message": "internal"}))
