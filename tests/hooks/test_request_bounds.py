"""
The bounds the README promises, checked against any sequence of faults (hypothesis).

Whatever AtScale answers — 401, 429 with any ``Retry-After``, 5xx, no answer before or after the request
reached it — one logical call of the hook (a build, a poll, a listing), with every token fetched on its
behalf, sends each distinct request at most ``1 + max_retries`` times, sleeps at most ``retry_max_wait``
seconds in all, and never posts a build again without first checking batch history, unless AtScale surely
started nothing. For every auth mode, through the real sync and async drivers of the hook; only the
transport is replaced, by one that answers from the drawn faults.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_atscale import _clock
from airflow_provider_atscale._flow import RawResponse, Send
from airflow_provider_atscale.errors import AtScaleError, AtScaleTransportError
from airflow_provider_atscale.hooks._auth import forget_tokens
from airflow_provider_atscale.hooks.atscale import AtScaleHook, forget_settings
from tests.helpers import BATCH_ID, CATALOG_ID, MODEL_ID, FakeClock, batch_object, connection_uri

BUILD_PATH = f"/v1/aggregates-batch/catalogs/{CATALOG_ID}/models/{MODEL_ID}"
HISTORY_PATH = "/wapi/p/aggregate/batch-history"

FAULTS = ("ok", "401", "429", "500", "502", "503", "504", "refused", "dropped")
NOT_STARTED = {"401", "429", "503", "refused"}
"""Answers to a build POST after which AtScale surely started nothing (a 401 is a request refused): it may be
sent again as it is."""


@dataclass
class Transport:
    """Answers each request with the next drawn fault ("ok" once they run out), and records what it saw."""

    faults: list[str]
    retry_after: int
    history_has_the_batch: bool
    only_path: str | None = None
    """Draw faults for requests to this path only; answer every other one well."""
    sent: list[tuple[str, str, str]] = field(default_factory=list)
    keys: Counter[Any] = field(default_factory=Counter)

    def answer(self, send: Send) -> RawResponse:
        request = send.request
        drawn = self.only_path is None or request.path == self.only_path
        fault = self.faults.pop(0) if self.faults and drawn else "ok"
        self.sent.append((request.method, request.path, fault))
        self.keys[request.key] += 1
        if fault == "refused":
            raise AtScaleTransportError(
                "refused", method=request.method, path=request.path, connection_opened=False
            )
        if fault == "dropped":
            raise AtScaleTransportError(
                "dropped", method=request.method, path=request.path, connection_opened=True
            )
        if fault != "ok":
            headers = {"retry-after": str(self.retry_after)} if fault == "429" else {}
            return RawResponse(int(fault), headers, json.dumps({"message": f"fault {fault}"}).encode())
        return RawResponse(
            200 if request.method == "GET" else 201, {}, json.dumps(self.ok(request.path)).encode()
        )

    def ok(self, path: str) -> Any:
        if path == "/v1/token":
            return {"accessToken": "exchanged"}
        if path.startswith("/auth/"):
            return {
                "access_token": "issued",
                "expires_in": 300,
                "refresh_token": "r",
                "refresh_expires_in": 600,
            }
        if path == BUILD_PATH:
            return {"batch": batch_object(), "success": True}
        if path == HISTORY_PATH:
            entries = [batch_object(status="inprogress", createDate="2099-01-01T00:00:00.000Z")]
            return {"data": entries if self.history_has_the_batch else [], "total": 1}
        return {"data": [], "total": 0}

    async def aanswer(self, send: Send) -> RawResponse:
        return self.answer(send)


@contextmanager
def hook_on(
    transport: Transport, auth_type: str, max_retries: int, max_wait: float
) -> Iterator[tuple[AtScaleHook, FakeClock]]:
    """A hook whose transport is ``transport`` and whose clock is fake (sleeps are recorded, not slept)."""
    clock = FakeClock()
    # Hooks of one process share tokens and, for async calls, connection settings: each example starts afresh.
    forget_tokens()
    forget_settings()
    with pytest.MonkeyPatch.context() as patch:
        conn = json.loads(
            connection_uri(auth_type=auth_type, max_retries=max_retries, retry_max_wait=max_wait)
        )
        conn["login"] = "svc"
        patch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", json.dumps(conn))
        patch.setattr(_clock, "now", clock.now)
        patch.setattr(_clock, "sleep", clock.sleep)
        patch.setattr(_clock, "asleep", clock.asleep)
        hook = AtScaleHook()
        patch.setattr(hook, "_send", transport.answer)
        patch.setattr(hook, "_asend", transport.aanswer)
        yield hook, clock


def call(hook: AtScaleHook, operation: str, mode: str) -> None:
    """One logical call of the hook; an AtScaleError is an allowed end."""
    try:
        if operation == "build":
            hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)
        elif operation == "poll" and mode == "async":
            asyncio.run(hook.aget_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID))
        elif operation == "poll":
            hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)
        else:
            hook.list_catalogs()
    except AtScaleError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    faults=st.lists(st.sampled_from(FAULTS), max_size=40),
    retry_after=st.integers(min_value=0, max_value=120),
    history_has_the_batch=st.booleans(),
    auth_type=st.sampled_from(["token", "token_exchange", "password"]),
    operation=st.sampled_from(["build", "poll", "catalogs"]),
    mode=st.sampled_from(["sync", "async"]),
    max_retries=st.integers(min_value=0, max_value=5),
    max_wait=st.floats(min_value=0, max_value=300),
)
def test_one_call_keeps_to_its_retry_budget_whatever_the_faults(
    faults: list[str],
    retry_after: int,
    history_has_the_batch: bool,
    auth_type: str,
    operation: str,
    mode: str,
    max_retries: int,
    max_wait: float,
) -> None:
    transport = Transport(list(faults), retry_after, history_has_the_batch)
    with hook_on(transport, auth_type, max_retries, max_wait) as (hook, clock):
        call(hook, operation, mode if operation == "poll" else "sync")

    assert max(transport.keys.values(), default=0) <= 1 + max_retries, transport.keys
    assert sum(clock.sleeps) <= max_wait + 1e-9, clock.sleeps
    assert_no_blind_repost(transport.sent)


def assert_no_blind_repost(sent: list[tuple[str, str, str]]) -> None:
    """Between two build POSTs: the first failed surely unstarted, or batch history was read in between."""
    last_post: str | None = None
    checked = False
    for method, path, fault in sent:
        if (method, path) == ("POST", BUILD_PATH):
            if last_post is not None:
                assert last_post in NOT_STARTED or checked, (
                    f"a POST repeated after {last_post} unchecked: {sent}"
                )
            last_post, checked = fault, False
        elif path == HISTORY_PATH and fault == "ok":
            checked = True


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_token_requests_made_for_a_call_share_its_budget(mode: str) -> None:
    """The exchange answering 503 for ever: 1 + max_retries token requests for the whole call, no more."""
    transport = Transport(["503"] * 100, 0, False)
    transport.ok = lambda path: {"data": []}  # type: ignore[method-assign]
    with hook_on(transport, "token_exchange", 3, 300) as (hook, _):
        call(hook, "poll", mode)

    token_requests = [sent for sent in transport.sent if sent[1] == "/v1/token"]
    assert len(token_requests) == 4
    assert {path for _, path, _ in transport.sent} == {"/v1/token"}, "nothing sent without a token"


def test_retry_after_is_honoured_within_the_calls_waiting_budget() -> None:
    transport = Transport(["429"] * 10, 40, False)
    with hook_on(transport, "token", 5, 100) as (hook, clock):
        call(hook, "catalogs", "sync")

    assert clock.sleeps == [40.0, 40.0], "a third wait of 40 s would pass the 100 s budget"
    assert len(transport.sent) == 3


def test_reposts_after_ambiguous_failures_count_against_the_posts_retries() -> None:
    """A 500, then 503s, with no batch in history: four POSTs in all with max_retries=3."""
    transport = Transport(["500", "503", "503", "503", "503", "503"], 0, False, only_path=BUILD_PATH)
    with hook_on(transport, "token_exchange", 3, 300) as (hook, _):
        call(hook, "build", "sync")

    posts = [fault for method, path, fault in transport.sent if (method, path) == ("POST", BUILD_PATH)]
    assert len(posts) == 4
    assert posts[0] == "500"
