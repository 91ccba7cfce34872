from __future__ import annotations

from datetime import datetime, timezone

import pytest

from airflow_provider_atscale.batches import (
    FAILED_STATUSES,
    IN_PROGRESS_STATUSES,
    SUCCEEDED_STATUSES,
    AggregateBatch,
    BatchStatusClass,
    classify_status,
    parse_api_datetime,
)
from tests.helpers import batch_object

DOCUMENTED_STATUSES = {
    "done", "invalid", "new", "inprogress", "unreliable", "cancelled", "error",
    "success", "deleted", "running", "active", "failed", "pending",
}  # fmt: skip


def test_every_documented_status_has_exactly_one_class() -> None:
    classes = [IN_PROGRESS_STATUSES, SUCCEEDED_STATUSES, FAILED_STATUSES]

    assert set().union(*classes) == DOCUMENTED_STATUSES
    assert sum(len(c) for c in classes) == len(DOCUMENTED_STATUSES)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("new", BatchStatusClass.IN_PROGRESS),
        ("InProgress", BatchStatusClass.IN_PROGRESS),
        (" done ", BatchStatusClass.SUCCEEDED),
        ("active", BatchStatusClass.SUCCEEDED),
        ("failed", BatchStatusClass.FAILED),
        ("cancelled", BatchStatusClass.FAILED),
        ("paused", BatchStatusClass.UNKNOWN),
        ("", BatchStatusClass.UNKNOWN),
        (None, BatchStatusClass.UNKNOWN),
    ],
)
def test_classify_status(status: str | None, expected: BatchStatusClass) -> None:
    assert classify_status(status) is expected


def test_unknown_is_never_success() -> None:
    assert classify_status("archived") is BatchStatusClass.UNKNOWN
    assert BatchStatusClass.UNKNOWN is not BatchStatusClass.SUCCEEDED
    assert classify_status("something-new") is not BatchStatusClass.SUCCEEDED


def test_from_api_reads_every_field() -> None:
    batch = AggregateBatch.from_api(batch_object(isFullBuild=True, status="inprogress"))

    assert batch.id == "5b9f7a1e-1111-4222-8333-944455556666"
    assert batch.catalog_id == "c0ffee00-0000-4000-8000-000000000001"
    assert batch.model_id == "c0ffee00-0000-4000-8000-000000000002"
    assert batch.create_date == datetime(2025, 2, 27, 9, 53, 22, 654000, tzinfo=timezone.utc)
    assert batch.create_date.tzinfo is not None
    assert batch.status == "inprogress"
    assert batch.status_class is BatchStatusClass.IN_PROGRESS
    assert batch.estimate_time == 1053
    assert batch.is_full_build is True
    assert batch.batch_type == "aggregate_batch"
    assert batch.start_time is None


def test_to_api_gives_back_exactly_what_atscale_sent() -> None:
    sent = batch_object(startTime="2025-02-27T09:53:23Z", unknownFutureField={"kept": [1, 2]})

    assert AggregateBatch.from_api(sent).to_api() == sent


def test_to_api_of_a_batch_built_in_python_uses_atscale_names_and_format() -> None:
    batch = AggregateBatch(
        id="b1",
        catalog_id="c1",
        model_id="m1",
        status="done",
        create_date=datetime(2025, 2, 27, 9, 53, 22, 654321, tzinfo=timezone.utc),
        estimate_time=5,
        is_full_build=False,
        batch_type="aggregate_batch",
    )

    assert batch.to_api() == {
        "id": "b1",
        "catalogId": "c1",
        "modelId": "m1",
        "createDate": "2025-02-27T09:53:22.654Z",
        "status": "done",
        "estimateTime": 5,
        "isFullBuild": False,
        "batchType": "aggregate_batch",
    }


def test_batches_are_frozen_and_compare_by_fields() -> None:
    first = AggregateBatch.from_api(batch_object())
    second = AggregateBatch.from_api(batch_object(extra="ignored in comparison"))

    assert first == second
    with pytest.raises(AttributeError):
        first.status = "done"  # type: ignore[misc]


def test_to_api_returns_a_copy() -> None:
    batch = AggregateBatch.from_api(batch_object())

    batch.to_api()["status"] = "tampered"

    assert batch.to_api()["status"] == "new"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"status": "new"}, "no id"),
        ({"id": "b1"}, "no status"),
        ({"id": "b1", "status": "new", "createDate": "yesterday"}, "Invalid isoformat"),
        ({"id": "b1", "status": "new", "estimateTime": "long"}, "non-numeric estimateTime"),
        ({"id": "b1", "status": "new", "isFullBuild": "yes"}, "non-boolean isFullBuild"),
        ([], "expected a batch object"),
    ],
)
def test_from_api_rejects_malformed_batches(data: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AggregateBatch.from_api(data)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-02-27T09:53:22.654Z", datetime(2025, 2, 27, 9, 53, 22, 654000, tzinfo=timezone.utc)),
        ("2025-02-27T09:53:22Z", datetime(2025, 2, 27, 9, 53, 22, tzinfo=timezone.utc)),
        ("2025-02-27T09:53:22.6Z", datetime(2025, 2, 27, 9, 53, 22, 600000, tzinfo=timezone.utc)),
        ("2025-02-27T09:53:22.1234567Z", datetime(2025, 2, 27, 9, 53, 22, 123456, tzinfo=timezone.utc)),
        ("2025-02-27T10:53:22.654+0100", datetime(2025, 2, 27, 9, 53, 22, 654000, tzinfo=timezone.utc)),
        ("2025-02-27T04:23:22.654-05:30", datetime(2025, 2, 27, 9, 53, 22, 654000, tzinfo=timezone.utc)),
        ("2025-02-27T09:53:22.654", datetime(2025, 2, 27, 9, 53, 22, 654000, tzinfo=timezone.utc)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=timezone.utc)),
    ],
)
def test_parse_api_datetime_reads_atscale_timestamps_on_every_python(text: str, expected: datetime) -> None:
    # Python 3.10's fromisoformat refuses the trailing Z, 1- or 7-digit fractions and "+0100"; the suite
    # runs on 3.10 in CI, so these cases fail there if the normalisation goes.
    assert parse_api_datetime(text) == expected
