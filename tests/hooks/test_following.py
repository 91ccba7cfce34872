"""Following a batch, request by request: batch history with the JWT it wants, and the aggregate instances
when history is refused or fails (requests-mock, a fake clock)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_atscale.errors import AtScaleAuthError, AtScaleNotFoundError, AtScaleResponseError
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.helpers import (
    BATCH_ID,
    CATALOG_ID,
    GRANT_URL,
    HISTORY_URL,
    INSTANCES_URL,
    MODEL_ID,
    TOKEN,
    TOKEN_URL,
    batch_object,
    history_page,
    instance_object,
    use_connection,
)

pytestmark = pytest.mark.usefixtures("atscale_conn", "fake_clock")

ACCESS_TOKEN = "exchanged-access-token"
PUBLIC_INSTANCES_URL = INSTANCES_URL.replace("/v1/aggregates/", "/v1/public/aggregates/")
HISTORY_PATH, INSTANCES_PATH = "/wapi/p/aggregate/batch-history", "/v1/aggregates/instances"


def poll(hook: AtScaleHook) -> str:
    return hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status


def sent_to(mock: rm.Mocker, path: str, what: Any = lambda r: r.headers.get("Authorization")) -> list[Any]:
    """``what`` of each request sent to ``path`` (its bearer token unless told)."""
    return [what(r) for r in mock.request_history if r.path == path]


def instances(*statuses: str) -> dict[str, Any]:
    """An instances answer as AtScale documents it: ``{"data": [...]}``, no total."""
    return {"data": [instance_object(status, f"agg_{i}") for i, status in enumerate(statuses)]}


def status_filter(request: Any) -> str | None:
    return request.qs.get("status", [None])[0]


@pytest.fixture
def exchanged(requests_mock: rm.Mocker) -> rm.Mocker:
    requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
    return requests_mock


@pytest.fixture
def no_history(exchanged: rm.Mocker) -> rm.Mocker:
    """A server that refuses batch history outright."""
    exchanged.get(HISTORY_URL, status_code=403, json={"message": "Forbidden"})
    return exchanged


# Batch history


def test_token_mode_exchanges_the_api_token_once_for_history_and_keeps_it_for_v1(
    exchanged: rm.Mocker,
) -> None:
    exchanged.get(HISTORY_URL, json=history_page(batch_object(status="inprogress")))
    exchanged.get(INSTANCES_URL, json=instances("active"))
    hook = AtScaleHook()

    poll(hook)
    poll(hook)
    hook.list_batch_aggregates(CATALOG_ID, MODEL_ID, BATCH_ID)

    assert sent_to(exchanged, "/v1/token") == [f"Bearer {TOKEN}"]
    assert sent_to(exchanged, HISTORY_PATH) == [f"Bearer {ACCESS_TOKEN}"] * 2
    assert sent_to(exchanged, INSTANCES_PATH) == [f"Bearer {TOKEN}"]


@pytest.mark.parametrize(
    ("found_at", "pages"), [(0, [("1", "3")]), (50, [("1", "3"), ("1", "50"), ("2", "50")])]
)
def test_a_poll_reads_the_newest_three_then_pages_of_fifty(
    exchanged: rm.Mocker, found_at: int, pages: list[tuple[str, str]]
) -> None:
    entries = [batch_object(id=f"other-{i}", status="done") for i in range(80)]
    entries.insert(found_at, batch_object(status="inprogress"))

    def history(request: Any, context: Any) -> dict[str, Any]:
        page, limit = int(request.qs["page"][0]), int(request.qs["limit"][0])
        return {"data": entries[(page - 1) * limit : page * limit], "total": len(entries)}

    exchanged.get(HISTORY_URL, json=history)

    assert poll(AtScaleHook()) == "inprogress"
    assert sent_to(exchanged, HISTORY_PATH, lambda r: (r.qs["page"][0], r.qs["limit"][0])) == pages


def test_a_batch_in_none_of_the_newest_500_batches_nor_with_instances_is_not_found(
    exchanged: rm.Mocker,
) -> None:
    def history(request: Any, context: Any) -> dict[str, Any]:
        page, limit = int(request.qs["page"][0]), int(request.qs["limit"][0])
        return history_page(*(batch_object(id=f"other-{page}-{i}") for i in range(limit)), total=10_000)

    exchanged.get(HISTORY_URL, json=history)
    exchanged.get(INSTANCES_URL, json={"data": []})

    with pytest.raises(AtScaleNotFoundError) as excinfo:
        poll(AtScaleHook())

    assert str(excinfo.value) == (
        f"AtScale batch {BATCH_ID} of model {MODEL_ID} is neither among the model's newest 500 batches "
        "nor has aggregate instances"
    )
    assert len(sent_to(exchanged, HISTORY_PATH)) == 11


def test_a_401_on_history_exchanges_again_once_then_gives_up_on_history_said_once(
    requests_mock: rm.Mocker, caplog: pytest.LogCaptureFixture
) -> None:
    requests_mock.post(TOKEN_URL, [{"json": {"accessToken": "jwt-1"}}, {"json": {"accessToken": "jwt-2"}}])
    requests_mock.get(HISTORY_URL, status_code=401, json={"statusCode": 401, "message": "Unauthorized"})
    requests_mock.get(INSTANCES_URL, json=instances("active", "pending"))
    hook = AtScaleHook()

    with caplog.at_level(logging.WARNING):
        assert [poll(hook), poll(hook)] == ["inprogress", "inprogress"]

    assert sent_to(requests_mock, HISTORY_PATH) == ["Bearer jwt-1", "Bearer jwt-2"]
    (refusal,) = [r.getMessage() for r in caplog.records if "does not serve batch history" in r.getMessage()]
    assert "HTTP 401" in refusal


@pytest.mark.parametrize("status", [400, 403, 404])
def test_a_refused_exchange_means_history_is_not_served_said_once(
    requests_mock: rm.Mocker, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    requests_mock.post(TOKEN_URL, status_code=status, json={"statusCode": status, "message": "no"})
    requests_mock.get(INSTANCES_URL, json=instances("active", "active"))
    hook = AtScaleHook()

    with caplog.at_level(logging.WARNING):
        assert [poll(hook), poll(hook)] == ["done", "done"]

    assert [r.path for r in requests_mock.request_history] == ["/v1/token", INSTANCES_PATH, INSTANCES_PATH]
    assert caplog.text.count("does not serve batch history") == 1


@pytest.mark.parametrize(("auth_type", "url"), [("token", TOKEN_URL), ("password", GRANT_URL)])
def test_a_token_refused_with_401_is_an_auth_error_not_history_unserved(
    requests_mock: rm.Mocker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    auth_type: str,
    url: str,
) -> None:
    use_connection(monkeypatch, login="svc", auth_type=auth_type)
    requests_mock.post(url, status_code=401, json={"message": "Invalid token"})

    with caplog.at_level(logging.INFO), pytest.raises(AtScaleAuthError) as excinfo:
        poll(AtScaleHook())

    assert f"refused to authenticate connection 'atscale_default' (auth_type {auth_type!r})" in str(
        excinfo.value
    )
    assert excinfo.value.http_status == 401
    assert [r.url for r in requests_mock.request_history] == [url], "no fall back to instances"
    assert "batch history" not in caplog.text


@pytest.mark.parametrize(
    "failures",
    [[{"status_code": 503}] * 2, [{"json": history_page({"id": BATCH_ID})}]],
    ids=["503", "malformed"],
)
def test_history_failing_in_passing_is_read_from_instances_this_time_and_tried_again_next_time(
    exchanged: rm.Mocker, monkeypatch: pytest.MonkeyPatch, failures: list[dict[str, Any]]
) -> None:
    use_connection(monkeypatch, max_retries=1)
    exchanged.get(HISTORY_URL, [*failures, {"json": history_page(batch_object(status="done"))}])
    exchanged.get(INSTANCES_URL, json=instances("pending"))
    hook = AtScaleHook()

    assert [poll(hook), poll(hook)] == ["inprogress", "done"]


@pytest.mark.parametrize(("status", "reads"), [(403, 1), (503, 2)])
def test_find_running_batch_finds_none_where_history_cannot_be_read_remembering_a_refusal(
    exchanged: rm.Mocker, monkeypatch: pytest.MonkeyPatch, status: int, reads: int
) -> None:
    use_connection(monkeypatch, max_retries=0)
    exchanged.get(HISTORY_URL, status_code=status)
    hook, since = AtScaleHook(), datetime.now(tz=timezone.utc)

    for _ in range(2):
        assert hook.find_running_batch(CATALOG_ID, MODEL_ID, full_build=False, created_since=since) is None

    assert len(sent_to(exchanged, HISTORY_PATH)) == reads


# The aggregate instances, where history is not served: never a partial listing called done


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("active", "active", "active"), "done"),
        (("active", "invalid"), "failed"),
        (("active", "pending"), "inprogress"),
        ((), "inprogress"),
    ],
)
def test_a_short_listing_decides_in_one_request(
    no_history: rm.Mocker, statuses: tuple[str, ...], expected: str
) -> None:
    no_history.get(INSTANCES_URL, json=instances(*statuses))

    assert poll(AtScaleHook()) == expected
    assert len(sent_to(no_history, INSTANCES_PATH)) == 1


@pytest.mark.parametrize(
    ("hidden", "expected"), [(None, "done"), ("pending", "inprogress"), ("invalid", "failed")]
)
def test_ten_built_instances_where_paging_is_ignored_lead_to_a_question_per_open_or_failed_status(
    no_history: rm.Mocker, hidden: str | None, expected: str
) -> None:
    def answer(request: Any, context: Any) -> dict[str, Any]:
        asked = status_filter(request)
        if asked is None:
            return instances(*["active"] * 10)
        return {"data": [instance_object(hidden, "agg_hidden")] if asked == hidden else []}

    no_history.get(INSTANCES_URL, json=answer)

    assert poll(AtScaleHook()) == expected
    statuses = ["inprogress", "pending", "cancelled", "deleted", "error", "failed", "invalid", "unreliable"]
    asked = [None, None, *statuses[: statuses.index(hidden) + 1 if hidden else None]]
    assert sent_to(no_history, INSTANCES_PATH, status_filter) == asked, (
        "page 2 repeats page 1: paging is ignored"
    )


def test_a_server_that_ignores_the_status_filter_too_leaves_the_batch_in_progress(
    no_history: rm.Mocker, caplog: pytest.LogCaptureFixture
) -> None:
    no_history.get(INSTANCES_URL, json=instances(*["active"] * 10))

    with caplog.at_level(logging.WARNING):
        assert poll(AtScaleHook()) == "inprogress"

    assert "ignores the status filter" in caplog.text


@pytest.mark.parametrize(("rows", "pages"), [(130, ["1", "2"]), (3000, [str(page) for page in range(1, 21)])])
def test_pages_are_read_until_a_short_one_twenty_at_most(
    no_history: rm.Mocker, rows: int, pages: list[str]
) -> None:
    def answer(request: Any, context: Any) -> dict[str, Any]:
        if status_filter(request) is not None:
            return {"data": []}
        page, size = int(request.qs["page"][0]), int(request.qs["size"][0])
        return {
            "data": [instance_object("active", f"agg_{i}") for i in range(rows)][
                (page - 1) * size : page * size
            ]
        }

    no_history.get(INSTANCES_URL, json=answer)
    hook = AtScaleHook()

    assert poll(hook) == "done"
    assert [
        p
        for p, asked in sent_to(no_history, INSTANCES_PATH, lambda r: (r.qs["page"][0], status_filter(r)))
        if not asked
    ] == pages
    assert len(hook.list_batch_aggregates(CATALOG_ID, MODEL_ID, BATCH_ID)) == min(rows, 2000)


def test_instances_of_other_batches_are_left_out(no_history: rm.Mocker) -> None:
    other = instance_object("pending", "agg_other", batch_id="another-batch")
    no_history.get(INSTANCES_URL, json={"data": [instance_object("active", "agg_0"), other]})

    assert poll(AtScaleHook()) == "done"


@pytest.mark.parametrize(
    ("answer", "error_class", "message"),
    [
        (
            {"status_code": 404},
            AtScaleNotFoundError,
            "GET /v1/public/aggregates/instances failed with HTTP 404",
        ),
        (
            {"json": {"rows": []}},
            AtScaleResponseError,
            "answered HTTP 200 without a list of instances under 'data'",
        ),
        (
            {"json": {"data": [{"id": "i"}]}},
            AtScaleResponseError,
            "answered HTTP 200 with a malformed instance",
        ),
    ],
)
def test_instances_that_cannot_be_listed_are_raised(
    no_history: rm.Mocker, answer: dict[str, Any], error_class: type, message: str
) -> None:
    no_history.get(INSTANCES_URL, **answer)
    no_history.get(PUBLIC_INSTANCES_URL, **answer)

    with pytest.raises(error_class, match=message):
        poll(AtScaleHook())


def test_the_second_instances_path_is_used_where_only_it_answers_and_remembered(
    no_history: rm.Mocker,
) -> None:
    no_history.get(INSTANCES_URL, status_code=404, json={"statusCode": 404, "message": "Cannot GET"})
    no_history.get(PUBLIC_INSTANCES_URL, json=instances("active"))
    hook = AtScaleHook()

    assert [poll(hook), poll(hook)] == ["done", "done"]

    assert len(sent_to(no_history, INSTANCES_PATH)) == 1, "tried once, then not again"
    assert len(sent_to(no_history, "/v1/public/aggregates/instances")) == 2
