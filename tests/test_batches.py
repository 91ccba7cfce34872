"""Batches as AtScale sends them: what their statuses mean, their timestamps, and back to AtScale's form."""

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
    format_duration,
    parse_api_datetime,
)
from tests.helpers import batch_object

IN_PROGRESS, SUCCEEDED = BatchStatusClass.IN_PROGRESS, BatchStatusClass.SUCCEEDED
FAILED, UNKNOWN = BatchStatusClass.FAILED, BatchStatusClass.UNKNOWN


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        # Every status AtScale documents:
        *((status, IN_PROGRESS) for status in ("new", "pending", "inprogress", "running")),
        *((status, SUCCEEDED) for status in ("done", "success", "active")),
        *(
            (status, FAILED)
            for status in ("failed", "error", "cancelled", "invalid", "unreliable", "deleted")
        ),
        # As sent in another case or with blanks, and what is not documented (never success):
        ("InProgress", IN_PROGRESS),
        (" done ", SUCCEEDED),
        ("archived", UNKNOWN),
        ("", UNKNOWN),
        (None, UNKNOWN),
    ],
)
def test_classify_status(status: str | None, expected: BatchStatusClass) -> None:
    assert classify_status(status) is expected
    if status:
        assert AggregateBatch(id="b", catalog_id="c", model_id="m", status=status).status_class is expected


def test_no_status_is_in_two_classes() -> None:
    sets = (IN_PROGRESS_STATUSES, SUCCEEDED_STATUSES, FAILED_STATUSES)

    assert sum(map(len, sets)) == len(set().union(*sets))


def test_from_api_reads_every_field() -> None:
    batch = AggregateBatch.from_api(
        batch_object(isFullBuild=True, status="inprogress", startTime="2025-02-27T09:53:30Z")
    )

    assert batch == AggregateBatch(
        id="5b9f7a1e-1111-4222-8333-944455556666",
        catalog_id="c0ffee00-0000-4000-8000-000000000001",
        model_id="c0ffee00-0000-4000-8000-000000000002",
        status="inprogress",
        create_date=datetime(2025, 2, 27, 9, 53, 22, 654000, tzinfo=timezone.utc),
        estimate_time=1053,
        is_full_build=True,
        batch_type="aggregate_batch",
        start_time=datetime(2025, 2, 27, 9, 53, 30, tzinfo=timezone.utc),
    )
    assert (batch.build_type, batch.describe_estimate()) == ("full", "1.1s")


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


def test_to_api_gives_back_a_copy_of_exactly_what_atscale_sent() -> None:
    sent = batch_object(startTime="2025-02-27T09:53:23Z", unknownFutureField={"kept": [1, 2]})
    batch = AggregateBatch.from_api(sent)

    batch.to_api()["unknownFutureField"]["kept"].append(3)

    assert batch.to_api() == sent


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
        end_time=datetime(2025, 2, 27, 10, 0, tzinfo=timezone.utc),
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
        "endTime": "2025-02-27T10:00:00.000Z",
    }


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
        ("", None),
        (None, None),
    ],
)
def test_parse_api_datetime_reads_atscale_timestamps_on_every_python(
    text: str | None, expected: datetime | None
) -> None:
    # Python 3.10's fromisoformat refuses the trailing Z, 1- or 7-digit fractions and "+0100"; the suite
    # runs on 3.10 in CI, so these cases fail there if the normalisation goes.
    assert parse_api_datetime(text) == expected


@pytest.mark.parametrize(
    ("seconds", "text"), [(-3, "0.0s"), (0.84, "0.8s"), (42.4, "42s"), (1053, "17m 33s"), (7500, "2h 05m")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
