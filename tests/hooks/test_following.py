"""
Following a batch, request by request: batch history with the JWT it wants, and the aggregate instances
when history is refused or fails (requests-mock, a fake clock).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_atscale.hooks._operations import HISTORY_FIRST_PAGE_SIZE
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.helpers import (
    ACCESS_TOKEN,
    BATCH_ID,
    CATALOG_ID,
    HISTORY_URL,
    INSTANCES_URL,
    MODEL_ID,
    TOKEN,
    TOKEN_URL,
    FakeClock,
    batch_object,
    connection_uri,
    history_page,
    instance_object,
)

pytestmark = pytest.mark.usefixtures("atscale_conn", "fake_clock")

NEST_401 = {"statusCode": 401, "message": "Unauthorized", "error": {"cause": "UnauthorizedException"}}


def bearer(request: Any) -> str:
    return str(request.headers.get("Authorization", ""))


def requests_to(mock: rm.Mocker, path: str) -> list[Any]:
    return [r for r in mock.request_history if r.path == path]


def instances(*statuses: str, batch_id: str = BATCH_ID) -> dict[str, Any]:
    """An instances answer as AtScale documents it: ``{"data": [...]}``, no total."""
    return {
        "data": [instance_object(status, f"agg_{i}", batch_id=batch_id) for i, status in enumerate(statuses)]
    }


def status_filter(request: Any) -> str | None:
    values = request.qs.get("status")
    return values[0] if values else None


class TestHistoryWantsAJwt:
    def test_token_mode_exchanges_the_api_token_once_for_history_and_keeps_it_for_v1(
        self, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
        requests_mock.get(HISTORY_URL, json=history_page(batch_object(status="inprogress")))
        requests_mock.get(INSTANCES_URL, json=instances("active"))
        hook = AtScaleHook()

        hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)
        hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)
        hook.list_batch_aggregates(CATALOG_ID, MODEL_ID, BATCH_ID)

        (exchange,) = requests_to(requests_mock, "/v1/token")
        assert bearer(exchange) == f"Bearer {TOKEN}"
        assert [bearer(r) for r in requests_to(requests_mock, "/wapi/p/aggregate/batch-history")] == [
            f"Bearer {ACCESS_TOKEN}"
        ] * 2
        assert [bearer(r) for r in requests_to(requests_mock, "/v1/aggregates/instances")] == [
            f"Bearer {TOKEN}"
        ]

    def test_a_401_on_history_exchanges_again_once_before_giving_up_on_history(
        self, requests_mock: rm.Mocker, caplog: pytest.LogCaptureFixture
    ) -> None:
        requests_mock.post(
            TOKEN_URL, [{"json": {"accessToken": "jwt-1"}}, {"json": {"accessToken": "jwt-2"}}]
        )
        requests_mock.get(HISTORY_URL, status_code=401, json=NEST_401)
        requests_mock.get(INSTANCES_URL, json=instances("active", "pending"))
        hook = AtScaleHook()

        with caplog.at_level(logging.WARNING):
            first = hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)
            second = hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)

        assert (first.status, second.status) == ("inprogress", "inprogress")
        assert [bearer(r) for r in requests_to(requests_mock, "/wapi/p/aggregate/batch-history")] == [
            "Bearer jwt-1",
            "Bearer jwt-2",
        ], "one more try with a fresh JWT, then never again for this hook"
        refusals = [r for r in caplog.records if "does not serve batch history" in r.getMessage()]
        assert len(refusals) == 1, "said once"
        assert "HTTP 401" in refusals[0].getMessage()

    @pytest.mark.parametrize("status", [400, 401, 403, 404])
    def test_a_refused_exchange_falls_back_to_instances(self, requests_mock: rm.Mocker, status: int) -> None:
        requests_mock.post(TOKEN_URL, status_code=status, json={"statusCode": status, "message": "no"})
        requests_mock.get(HISTORY_URL, json=history_page(batch_object(status="done")))
        requests_mock.get(INSTANCES_URL, json=instances("active", "active"))

        batch = AtScaleHook().get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)

        assert batch.status == "done"
        assert requests_to(requests_mock, "/wapi/p/aggregate/batch-history") == []

    def test_history_that_fails_in_passing_is_read_from_instances_this_time_and_tried_again_next_time(
        self, requests_mock: rm.Mocker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(max_retries=1))
        requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
        requests_mock.get(
            HISTORY_URL,
            [{"status_code": 503, "json": {}}] * 2 + [{"json": history_page(batch_object(status="done"))}],
        )
        requests_mock.get(INSTANCES_URL, json=instances("pending"))
        hook = AtScaleHook()

        assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == "inprogress"
        assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == "done"


class TestInstancesNeverCallAPartialListDone:
    @pytest.fixture
    def hook(self, requests_mock: rm.Mocker) -> AtScaleHook:
        """A hook on a server that refuses batch history outright."""
        requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
        requests_mock.get(HISTORY_URL, status_code=403, json={"message": "Forbidden"})
        return AtScaleHook()

    def test_a_short_answer_of_built_instances_is_done_in_one_request(
        self, hook: AtScaleHook, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.get(INSTANCES_URL, json=instances("active", "active", "active"))

        assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == "done"
        assert len(requests_to(requests_mock, "/v1/aggregates/instances")) == 1

    @pytest.mark.parametrize(
        ("statuses", "expected"),
        [(("active", "invalid"), "failed"), (("active", "pending"), "inprogress"), ((), "inprogress")],
    )
    def test_a_failed_or_unbuilt_instance_decides_at_once(
        self, hook: AtScaleHook, requests_mock: rm.Mocker, statuses: tuple[str, ...], expected: str
    ) -> None:
        requests_mock.get(INSTANCES_URL, json=instances(*statuses))

        assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == expected

    def test_ten_built_instances_from_a_server_that_ignores_paging_lead_to_the_precise_questions(
        self, hook: AtScaleHook, requests_mock: rm.Mocker
    ) -> None:
        ten = instances(*["active"] * 10)

        def answer(request: Any, context: Any) -> dict[str, Any]:
            asked = status_filter(request)
            return ten if asked is None else {"data": []}

        requests_mock.get(INSTANCES_URL, json=answer)

        assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == "done"
        asked = [status_filter(r) for r in requests_to(requests_mock, "/v1/aggregates/instances")]
        assert asked == [None, None, "pending", "inprogress", "invalid", "deleted"], (
            "page 2 repeats page 1 (paging ignored), so each open or failed status is asked about"
        )

    @pytest.mark.parametrize(("hidden", "expected"), [("pending", "inprogress"), ("invalid", "failed")])
    def test_a_hidden_instance_found_by_its_status_decides(
        self, hook: AtScaleHook, requests_mock: rm.Mocker, hidden: str, expected: str
    ) -> None:
        ten = instances(*["active"] * 10)

        def answer(request: Any, context: Any) -> dict[str, Any]:
            asked = status_filter(request)
            if asked is None:
                return ten
            return {"data": [instance_object(hidden, "agg_hidden")]} if asked == hidden else {"data": []}

        requests_mock.get(INSTANCES_URL, json=answer)

        assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == expected

    def test_a_server_that_ignores_the_status_filter_too_leaves_the_batch_in_progress(
        self, hook: AtScaleHook, requests_mock: rm.Mocker, caplog: pytest.LogCaptureFixture
    ) -> None:
        requests_mock.get(INSTANCES_URL, json=instances(*["active"] * 10))

        with caplog.at_level(logging.WARNING):
            batch = hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)

        assert batch.status == "inprogress"
        assert "ignores the status filter" in caplog.text

    def test_pages_are_read_until_a_short_one_where_the_server_honours_paging(
        self, hook: AtScaleHook, requests_mock: rm.Mocker
    ) -> None:
        def answer(request: Any, context: Any) -> dict[str, Any]:
            page = int(request.qs["page"][0])
            size = int(request.qs["size"][0])
            rows = [instance_object("active", f"agg_{i}") for i in range(130)]
            return {"data": rows[(page - 1) * size : page * size]}

        requests_mock.get(INSTANCES_URL, json=answer)

        assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == "done"
        pages = [r.qs["page"][0] for r in requests_to(requests_mock, "/v1/aggregates/instances")]
        assert pages == ["1", "2"]
        assert len(hook.list_batch_aggregates(CATALOG_ID, MODEL_ID, BATCH_ID)) == 130

    def test_instances_of_other_batches_are_left_out(
        self, hook: AtScaleHook, requests_mock: rm.Mocker
    ) -> None:
        other = instance_object("pending", "agg_other", batch_id="another-batch")
        requests_mock.get(INSTANCES_URL, json={"data": [instance_object("active", "agg_0"), other]})

        assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == "done"


def test_find_running_batch_attaches_only_to_aggregate_builds(
    requests_mock: rm.Mocker, fake_clock: FakeClock
) -> None:
    from datetime import datetime, timezone

    now = datetime.fromtimestamp(fake_clock.now(), tz=timezone.utc)
    created = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
    requests_mock.get(
        HISTORY_URL,
        json=history_page(
            batch_object(
                id="cleanup", status="inprogress", batchType="aggregate_cleanup", createDate=created
            ),
            batch_object(id="ours", status="inprogress", createDate=created),
        ),
    )

    batch = AtScaleHook().find_running_batch(CATALOG_ID, MODEL_ID, full_build=False, created_since=now)

    assert batch is not None
    assert batch.id == "ours"


class TestHistoryPages:
    def test_a_poll_reads_the_newest_few_then_pages_of_fifty(self, requests_mock: rm.Mocker) -> None:
        entries = [batch_object(id=f"other-{i}", status="done") for i in range(50)]
        entries.append(batch_object(status="inprogress"))

        def history(request: Any, context: Any) -> dict[str, Any]:
            page, limit = int(request.qs["page"][0]), int(request.qs["limit"][0])
            return {"data": entries[(page - 1) * limit : page * limit], "total": len(entries)}

        requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
        requests_mock.get(HISTORY_URL, json=history)

        batch = AtScaleHook().get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)

        assert batch.status == "inprogress"
        asked = [
            (r.qs["page"][0], r.qs["limit"][0])
            for r in requests_to(requests_mock, "/wapi/p/aggregate/batch-history")
        ]
        assert asked == [("1", str(HISTORY_FIRST_PAGE_SIZE)), ("1", "50"), ("2", "50")]

    def test_a_newest_batch_takes_one_small_page(self, requests_mock: rm.Mocker) -> None:
        requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
        requests_mock.get(HISTORY_URL, json=history_page(batch_object(status="inprogress"), total=80))

        AtScaleHook().get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)

        (poll,) = requests_to(requests_mock, "/wapi/p/aggregate/batch-history")
        assert (poll.qs["page"], poll.qs["limit"]) == (["1"], [str(HISTORY_FIRST_PAGE_SIZE)])

    def test_a_batch_neither_in_history_nor_with_instances_is_not_found(
        self, requests_mock: rm.Mocker
    ) -> None:
        from airflow_provider_atscale.errors import AtScaleNotFoundError

        requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
        requests_mock.get(HISTORY_URL, json=history_page(batch_object(id="another", status="done")))
        requests_mock.get(INSTANCES_URL, json={"data": []})

        with pytest.raises(
            AtScaleNotFoundError, match=f"AtScale batch {BATCH_ID} of model {MODEL_ID} is neither"
        ):
            AtScaleHook().get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID)


def test_the_second_instances_path_is_used_where_only_it_answers_and_remembered(
    requests_mock: rm.Mocker,
) -> None:
    public = INSTANCES_URL.replace("/v1/aggregates/", "/v1/public/aggregates/")
    requests_mock.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
    requests_mock.get(HISTORY_URL, status_code=404, json={"message": "Cannot GET"})
    requests_mock.get(INSTANCES_URL, status_code=404, json={"statusCode": 404, "message": "Cannot GET"})
    requests_mock.get(public, json=instances("active"))
    hook = AtScaleHook()

    assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == "done"
    assert hook.get_aggregate_batch(CATALOG_ID, MODEL_ID, BATCH_ID).status == "done"

    assert len(requests_to(requests_mock, "/v1/aggregates/instances")) == 1, "tried once, then not again"
    assert len(requests_to(requests_mock, "/v1/public/aggregates/instances")) == 2
