"""Where Airflow keeps what the tests use, per version (the provider's own needs are in ``_compat``, whose
version flags this module shares), and a skip marker for tests some Airflow versions cannot pass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale._compat import (
    AIRFLOW_V_3_0_PLUS,
    AIRFLOW_V_3_2_PLUS,
    AIRFLOW_V_3_3_PLUS,
    AIRFLOW_VERSION,
)

AIRFLOW_V_3_1_PLUS = AIRFLOW_V_3_0_PLUS and AIRFLOW_VERSION.split(".")[1] not in ("0",)

AIRFLOW_MINOR = ".".join(AIRFLOW_VERSION.split(".")[:2])

if TYPE_CHECKING:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.sdk import DAG
    from airflow.sdk._shared.secrets_masker import redact
    from airflow.sdk.exceptions import TaskDeferred
else:
    if AIRFLOW_V_3_0_PLUS:
        from airflow.models.xcom import XComModel
        from airflow.sdk import DAG
    else:
        from airflow.models.dag import DAG
        from airflow.models.xcom import BaseXCom as XComModel

    if AIRFLOW_V_3_2_PLUS:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.sdk.exceptions import TaskDeferred
    else:
        from airflow.exceptions import TaskDeferred
        from airflow.models.dagbag import DagBag

    if AIRFLOW_V_3_1_PLUS:
        from airflow.sdk._shared.secrets_masker import redact
    elif AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.execution_time.secrets_masker import redact
    else:
        from airflow.utils.log.secrets_masker import redact


def xcom_row_value(row: XComModel) -> Any:
    """An XCom row's value: Airflow 3's model deserializes it on request, Airflow 2's when loaded."""
    if AIRFLOW_V_3_0_PLUS:
        return XComModel.deserialize_value(row)
    return row.value


def skip_on(*minors: str, reason: str) -> pytest.MarkDecorator:
    """Skip on the given Airflow minors (``"3.0"``), saying what they do differently."""
    return pytest.mark.skipif(
        AIRFLOW_MINOR in minors, reason=f"not on Airflow {' or '.join(minors)}: {reason}"
    )


__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "DAG",
    "DagBag",
    "TaskDeferred",
    "XComModel",
    "redact",
    "skip_on",
    "xcom_row_value",
]
