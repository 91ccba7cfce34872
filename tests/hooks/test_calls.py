"""The flows of ``hooks/_calls.py`` driven by hand, as h11's tests drive its state machine: a test feeds a
flow AtScale's answers in order and reads the instructions it yields. No HTTP, no hook, no connection."""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_atscale._inputs import BatchRef, BuildRequest, ConnectionSettings
from airflow_provider_atscale.errors import (
    AtScaleAuthError,
    AtScaleBadRequestError,
    AtScaleError,
    AtScaleHTTPError,
    AtScaleNotFoundError,
    AtScaleRateLimitError,
    AtScaleResponseError,
    AtScaleServerError,
)
from airflow_provider_atscale.hooks import _calls
from airflow_provider_atscale.hooks._auth import forget_tokens
from airflow_provider_atscale.hooks._http import ApiRequest, RawResponse, Send, Sleep, parse_retry_after
from tests.helpers import BASE_URL, BATCH_ID, CATALOG_ID, MODEL_ID, TOKEN, FakeClock, batch_object, iso, jwt

SETTINGS = ConnectionSettings(conn_id="atscale_default", base_url=BASE_URL, token=TOKEN)
BUILD = BuildRequest(CATALOG_ID, MODEL_ID, full_build=False, grace_period_overrides={})
REF = BatchRef(CATALOG_ID, MODEL_ID, BATCH_ID)
BUILD_PATH = f"/v1/aggregates-batch/catalogs/{CATALOG_ID}/models/{MODEL_ID}"
HISTORY_PATH = "/wapi/p/aggregate/batch-history"
pytestmark = pytest.mark.usefixtures("fake_clock")

Answer = RawResponse | str
"""A response, or ``"dropped"`` / ``"refused"`` for none (see :class:`Feed`)."""


def server(**settings: Any) -> _calls.ServerState:
    return _calls.ServerState(replace(SETTINGS, **settings))


def answer(status: int, body: Any = None, **headers: str) -> RawResponse:
    """A response with a JSON body; header names are written with ``_`` for ``-``."""
    encoded = b"" if body is None else json.dumps(body).encode()
    return RawResponse(status, {name.replace("_", "-"): value for name, value in headers.items()}, encoded)


class Feed:
    """
    Runs a flow to its end as a driver would, recording what it yields: each :class:`Send` gets the next of
    ``answers`` (a list, to be used up) or ``answers(send)``, each :class:`Sleep` nothing. ``"dropped"`` and
    ``"refused"`` are thrown in as the error of no answer, the connection having opened or not.
    """

    def __init__(self, answers: Sequence[Answer] | Callable[[Send], Answer]) -> None:
        self.answers = answers
        self.seen: list[Any] = []

    def __call__(self, flow: Any) -> Any:
        pending = None if callable(self.answers) else list(self.answers)
        reply: Any = None
        try:
            while True:
                instruction = flow.throw(reply) if isinstance(reply, BaseException) else flow.send(reply)
                self.seen.append(instruction)
                if isinstance(instruction, Sleep):
                    reply = None
                    continue
                reply = pending.pop(0) if pending is not None else self.answers(instruction)  # type: ignore[operator]
                if isinstance(reply, str):
                    error = ConnectionError("aborted" if reply == "dropped" else "refused")
                    reply = instruction.request.no_answer(BASE_URL, error, opened=reply == "dropped")
        except StopIteration as stop:
            assert not pending, f"answers left over: {pending}"
            return stop.value

    @property
    def paths(self) -> list[str]:
        return [i.request.path for i in self.seen if isinstance(i, Send)]

    @property
    def sleeps(self) -> list[float]:
        return [i.seconds for i in self.seen if isinstance(i, Sleep)]


def catalogs(**settings: Any) -> Any:
    return _calls.list_catalogs(server(**settings))


CREATED = answer(201, {"batch": batch_object(), "success": True})
EXCHANGED = answer(201, {"accessToken": "jwt-1"})
OK = answer(200, [])


# Starting a build, never two


@pytest.mark.parametrize("failure", [answer(503), answer(429, retry_after="3"), "refused"])
def test_a_post_atscale_surely_did_not_receive_is_posted_again_unchecked(failure: Answer) -> None:
    run = Feed([failure, CREATED])

    assert run(_calls.trigger_build(server(), BUILD)).id == BATCH_ID
    assert run.paths == [BUILD_PATH, BUILD_PATH]


@pytest.mark.parametrize("failure", [answer(500), answer(502), answer(504), "dropped"])
def test_after_an_ambiguous_post_the_batch_started_anyway_is_found_in_history(
    failure: Answer, fake_clock: FakeClock
) -> None:
    started = batch_object(id="started-anyway", createDate=iso(fake_clock.now()))
    run = Feed([failure, EXCHANGED, answer(200, {"data": [started]})])

    assert run(_calls.trigger_build(server(), BUILD)).id == "started-anyway"
    assert run.paths == [BUILD_PATH, "/v1/token", HISTORY_PATH]


def test_after_an_ambiguous_post_with_no_such_batch_running_the_build_is_posted_again(
    fake_clock: FakeClock,
) -> None:
    now = fake_clock.now()
    not_it = [
        batch_object(id="cleanup", status="inprogress", batchType="aggregate_cleanup", createDate=iso(now)),
        batch_object(id="full", status="new", isFullBuild=True, createDate=iso(now)),
        batch_object(id="done", status="done", createDate=iso(now)),
        batch_object(id="older", status="inprogress", createDate=iso(now - 3600)),
    ]
    run = Feed([answer(500), EXCHANGED, answer(200, {"data": not_it}), CREATED])

    assert run(_calls.trigger_build(server(), BUILD)).id == BATCH_ID
    assert run.paths == [BUILD_PATH, "/v1/token", HISTORY_PATH, BUILD_PATH]


@pytest.mark.parametrize(
    "history",
    [
        [answer(404, {"message": "Cannot GET"})],
        [answer(503), answer(503)],
        [answer(401), EXCHANGED, answer(401)],  # a 401 is answered with a new JWT, once
        [answer(200, {"no": "data"})],
        [answer(200, {"data": [{"id": "no status"}]})],
    ],
    ids=["404", "503", "401", "no data", "malformed batch"],
)
def test_after_an_ambiguous_post_unreadable_history_raises_the_posts_failure_without_posting_again(
    history: list[RawResponse],
) -> None:
    with pytest.raises(AtScaleServerError, match=f"POST {BUILD_PATH} failed with HTTP 500"):
        Feed([answer(500), EXCHANGED, *history])(_calls.trigger_build(server(max_retries=1), BUILD))


def test_an_ambiguous_post_without_an_attempt_left_is_raised_unchecked() -> None:
    with pytest.raises(AtScaleServerError, match="HTTP 500"):
        Feed([answer(500)])(_calls.trigger_build(server(max_retries=0), BUILD))


def test_a_failed_token_request_for_the_post_is_raised_and_no_build_is_looked_for() -> None:
    with pytest.raises(AtScaleServerError, match="POST /v1/token failed with HTTP 502"):
        Feed([answer(502)])(_calls.trigger_build(server(auth_type="token_exchange", max_retries=0), BUILD))


def test_reposts_after_ambiguous_failures_count_against_the_posts_retries() -> None:
    run = Feed([answer(500), EXCHANGED, answer(200, {"data": []}), *[answer(503)] * 3])

    with pytest.raises(AtScaleServerError, match="HTTP 503"):
        run(_calls.trigger_build(server(max_retries=3), BUILD))

    assert run.paths.count(BUILD_PATH) == 4


@pytest.mark.parametrize(
    ("created", "match"),
    [
        (RawResponse(201, {}, b"not json"), "with a body that is not JSON: 'not json'"),
        (answer(201, {"success": True}), "without a valid batch object: 'batch'"),
        (answer(201, {"batch": {"status": "new"}}), "without a valid batch object: batch has no id"),
        (answer(200, {"success": False, "message": "busy"}), 'with "success": false: busy'),
        (answer(200, {"success": False}), 'with "success": false: no error text'),
    ],
)
def test_an_answer_not_as_documented_is_a_response_error(created: RawResponse, match: str) -> None:
    with pytest.raises(AtScaleResponseError, match=f"AtScale POST {BUILD_PATH} answered HTTP 20[01] {match}"):
        Feed([created])(_calls.trigger_build(server(), BUILD))


# What an answer means, and retries of one request


@pytest.mark.parametrize(
    ("status", "error_class", "retried"),
    [
        (400, AtScaleBadRequestError, False),
        (401, AtScaleAuthError, False),  # the raw API token: sending it again cannot change the answer
        (403, AtScaleAuthError, False),
        (404, AtScaleNotFoundError, False),
        (409, AtScaleHTTPError, False),
        (429, AtScaleRateLimitError, True),
        (500, AtScaleServerError, True),
        (502, AtScaleServerError, True),
        (503, AtScaleServerError, True),
        (504, AtScaleServerError, True),
    ],
)
def test_each_error_status_is_its_error_class_retried_only_if_it_may_pass(
    status: int, error_class: type, retried: bool
) -> None:
    run = Feed(
        [answer(status, {"success": False, "error": {"message": f"AtScale says no ({status})"}})]
        * (1 + retried)
    )

    with pytest.raises(AtScaleHTTPError) as excinfo:
        run(catalogs(max_retries=1))

    error = excinfo.value
    assert type(error) is error_class
    assert (error.method, error.path, error.http_status) == ("GET", "/v1/catalogs", status)
    assert error.atscale_message == f"AtScale says no ({status})"
    assert str(error).startswith(
        f"AtScale GET /v1/catalogs failed with HTTP {status}: AtScale says no ({status})"
    )
    assert isinstance(error, AirflowFailException) is (status in (401, 403)), "the same token fails again"
    assert len(run.paths) == 1 + retried


@pytest.mark.parametrize("failure", [answer(503), "dropped", "refused"])
def test_a_failure_that_may_pass_is_retried_after_growing_jittered_waits(failure: Answer) -> None:
    run = Feed([failure, failure, OK])

    assert run(catalogs()) == []

    first, second = run.sleeps
    assert 0.5 <= first <= 1.0 <= second <= 2.0


@pytest.mark.parametrize("given_as", ["seconds", "an HTTP date"])
def test_retry_after_is_honoured(given_as: str, fake_clock: FakeClock) -> None:
    when = datetime.fromtimestamp(fake_clock.now() + 42, tz=timezone.utc)
    run = Feed(
        [answer(429, retry_after="42" if given_as == "seconds" else format_datetime(when, usegmt=True)), OK]
    )

    run(catalogs())

    assert run.sleeps == [42.0]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (" ", None),
        ("soon", None),
        ("-5", 0.0),
        ("2.5", 2.5),
        ("Wed, 01 Jan 2025 00:00:00", 0.0),
    ],
)
def test_a_retry_after_header_is_read_as_seconds_never_negative(
    value: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(value) == seconds


def test_retries_stop_before_a_wait_would_pass_retry_max_wait() -> None:
    run = Feed([answer(429, retry_after="40")] * 3)

    with pytest.raises(AtScaleRateLimitError):
        run(catalogs(max_retries=50, retry_max_wait=100))

    assert run.sleeps == [40.0, 40.0], "a third wait would pass 100 s in all"


def test_each_retry_is_one_warning_naming_the_request_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        Feed([answer(503, {"message": "busy"}), OK])(catalogs())

    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("AtScale GET /v1/catalogs failed with HTTP 503: busy; attempt 2 of 6 in ")
    assert warning.count("/v1/catalogs") == 1


def test_token_requests_made_for_a_call_share_its_budget() -> None:
    run = Feed(lambda send: answer(503))

    with pytest.raises(AtScaleServerError, match="POST /v1/token failed with HTTP 503"):
        run(_calls.read_batch(server(auth_type="token_exchange", max_retries=3), REF))

    assert run.paths == ["/v1/token"] * 4, "nothing sent without a token"


def test_a_401_once_the_call_has_spent_its_token_requests_is_the_auth_error() -> None:
    # History refuses two JWTs, then the instances refuse the last: the 401 is raised, not a stale token.
    run = Feed([EXCHANGED, answer(401), EXCHANGED, answer(401), answer(401)])

    with pytest.raises(AtScaleAuthError, match="GET /v1/aggregates/instances failed with HTTP 401"):
        run(_calls.read_batch(server(auth_type="token_exchange", max_retries=1), REF))


def test_a_token_stale_on_arrival_is_asked_for_within_the_budget_then_raised() -> None:
    stale = answer(200, {"accessToken": jwt(exp=1_000, iat=1_000)})
    run = Feed([stale, stale])

    with pytest.raises(
        AtScaleResponseError, match="POST /v1/token answered HTTP 200 with a token already expired"
    ):
        run(catalogs(auth_type="token_exchange", max_retries=1))

    assert run.paths == ["/v1/token"] * 2, "nothing sent without a token"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"message": "plain message"}, "plain message"),
        ({"error": "invalid_grant", "error_description": "bad password"}, "bad password"),
        ({"errors": [{"message": "first"}, {"message": "second"}]}, "first; second"),
        ({"detail": "from a proxy"}, "from a proxy"),
        ({"message": " ", "errorMessage": "the second key"}, "the second key"),
        ({"code": 7}, None),
        ([], None),
        (None, None),
    ],
)
def test_atscales_error_text_is_found_in_each_known_body_shape(body: Any, text: str | None) -> None:
    with pytest.raises(AtScaleBadRequestError) as excinfo:
        Feed([answer(400, body)])(catalogs())

    assert excinfo.value.atscale_message == text
    assert str(excinfo.value).endswith(f"HTTP 400: {text}" if text else "HTTP 400 and no error text")


def test_an_error_body_that_is_not_json_is_quoted_clipped() -> None:
    with pytest.raises(AtScaleServerError) as excinfo:
        Feed([RawResponse(502, {}, b"<html>Bad Gateway" + b"x" * 999)])(catalogs(max_retries=0))

    assert str(excinfo.value).endswith(f"HTTP 502: <html>Bad Gateway{'x' * 283}...")


@pytest.mark.parametrize(
    ("status", "auth_type", "hint"),
    [
        (401, "token", "auth_type 'token': AtScale refused its API token. API tokens expire after 90 days;"),
        (
            401,
            "password",
            "auth_type 'password': AtScale refused the token it issued for the connection's user;",
        ),
        (403, "token", "(the token's user needs the aggregates_manage role, and the model must be deployed)"),
    ],
)
def test_a_refusal_says_what_to_check(status: int, auth_type: str, hint: str) -> None:
    with pytest.raises(AtScaleAuthError) as excinfo:
        _calls.read_answer(
            ApiRequest("GET", "/v1/catalogs"), answer(status), replace(SETTINGS, auth_type=auth_type)
        )

    assert hint in str(excinfo.value)


def test_an_empty_answer_is_a_success_without_json() -> None:
    assert _calls.read_answer(ApiRequest("GET", "/v1/x"), RawResponse(204, {}, b""), SETTINGS) == (204, None)


@pytest.mark.parametrize("body", [[{"id": "c1"}], {"data": [{"id": "c1"}]}])
def test_catalogs_are_read_bare_or_wrapped_in_data(body: Any) -> None:
    assert Feed([answer(200, body)])(catalogs()) == [{"id": "c1"}]


@pytest.mark.parametrize("body", [{"catalogs": []}, [1]])
def test_catalogs_not_in_a_list_are_a_response_error(body: Any) -> None:
    with pytest.raises(AtScaleResponseError, match="answered HTTP 200 without a list of catalogs"):
        Feed([answer(200, body)])(catalogs())


def test_requests_and_instructions_show_no_secret_in_their_repr() -> None:
    request = ApiRequest(
        "POST", "/auth", form={"password": TOKEN}, headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert repr(request) == "ApiRequest(method='POST', path='/auth', params={})"
    assert repr(Send(request, {"Authorization": f"Bearer {TOKEN}"})) == f"Send(request={request!r})"


# The bounds of one call, whatever AtScale answers

FAULTS = ("ok", "401", "429", "500", "502", "503", "504", "refused", "dropped")
NOT_STARTED = {"401", "429", "503", "refused"}
"""Answers to a build POST after which AtScale surely started nothing (a 401 is a request refused)."""
GRANTED = {"access_token": "issued", "expires_in": 300, "refresh_token": "r", "refresh_expires_in": 600}
GOOD = {
    "/v1/token": answer(200, {"accessToken": "x"}),
    "/auth/realms/atscale/protocol/openid-connect/token": answer(200, GRANTED),
    BUILD_PATH: CREATED,
}
CALLS: dict[str, Callable[[_calls.ServerState], Any]] = {
    "build": lambda state: _calls.trigger_build(state, BUILD),
    "poll": lambda state: _calls.read_batch(state, REF),
    "catalogs": _calls.list_catalogs,
}


@settings(max_examples=300, deadline=None)
@given(
    faults=st.lists(st.sampled_from(FAULTS), max_size=40),
    retry_after=st.integers(min_value=0, max_value=120),
    history_has_the_batch=st.booleans(),
    auth_type=st.sampled_from(["token", "token_exchange", "password"]),
    call=st.sampled_from(sorted(CALLS)),
    max_retries=st.integers(min_value=0, max_value=5),
    max_wait=st.floats(min_value=0, max_value=300),
)
def test_one_call_keeps_to_its_retry_budget_whatever_the_faults(
    faults: list[str],
    retry_after: int,
    history_has_the_batch: bool,
    auth_type: str,
    call: str,
    max_retries: int,
    max_wait: float,
) -> None:
    """
    Each distinct request at most ``1 + max_retries`` times, at most ``retry_max_wait`` seconds of sleep, and
    a build never posted again without reading batch history first, unless AtScale surely started nothing.
    """
    faults = list(faults)  # the transport takes them one by one
    sent: list[tuple[str, str, str]] = []
    times: Counter[Any] = Counter()
    running = [batch_object(status="inprogress", createDate="2099-01-01T00:00:00.000Z")]

    def transport(send: Send) -> Answer:
        request, fault = send.request, faults.pop(0) if faults else "ok"
        sent.append((request.method, request.path, fault))
        # What makes two requests distinct, as the README promises the bound: method, path, query, grant.
        grant = (request.form or {}).get("grant_type")
        times[request.method, request.path, tuple(sorted(request.params.items())), grant] += 1
        if fault in ("refused", "dropped"):
            return fault
        if fault != "ok":
            return answer(int(fault), {"message": f"fault {fault}"}, retry_after=str(retry_after))
        return GOOD.get(request.path) or answer(
            200, {"data": running if history_has_the_batch and request.path == HISTORY_PATH else []}
        )

    forget_tokens()  # hooks of one process share tokens: each example starts afresh
    state = server(auth_type=auth_type, login="svc", max_retries=max_retries, retry_max_wait=max_wait)
    run = Feed(transport)
    with contextlib.suppress(AtScaleError):  # an allowed end
        run(CALLS[call](state))

    assert max(times.values(), default=0) <= 1 + max_retries, times
    assert sum(run.sleeps) <= max_wait + 1e-9, run.sleeps
    last_post, checked = None, False
    for method, path, fault in sent:
        if (method, path) == ("POST", BUILD_PATH):
            assert last_post is None or last_post in NOT_STARTED or checked, f"a blind re-post: {sent}"
            last_post, checked = fault, False
        elif path == HISTORY_PATH and fault == "ok":
            checked = True
