"""
The one place that knows where Airflow keeps the classes this provider builds on.

Everything else imports ``BaseHook``, ``BaseOperator``, ... from here, so supporting another Airflow
version is a change to this file alone. Supported: Airflow 2.11 and every Airflow 3 minor from 3.0.

Where each name lives, by Airflow version:

- ``BaseOperator``, ``BaseSensorOperator``, ``PokeReturnValue``, ``Context``, ``mask_secret``: the Task SDK
  (``airflow.sdk``) from 3.0; in 2.11 ``airflow.models.baseoperator``, ``airflow.sensors.base``,
  ``airflow.utils.context`` and ``airflow.utils.log.secrets_masker``.
- ``BaseHook``: ``airflow.sdk`` from 3.1; ``airflow.hooks.base`` before, without ``aget_connection``, which
  is backported below.
- ``conf`` and the exceptions: ``airflow.sdk`` from 3.2; ``airflow.configuration`` and
  ``airflow.exceptions`` before.
- ``BaseTrigger``, ``TriggerEvent``: ``airflow.triggers.base`` in every version, imported on first use:
  DAG files import the operator module, and this import would add about 5 ms to every parse.

mypy reads the newest layout (the ``TYPE_CHECKING`` branch); at run time the installed version picks.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow import __version__ as AIRFLOW_VERSION
from packaging.version import Version

_installed = Version(Version(AIRFLOW_VERSION).base_version)

AIRFLOW_V_3_0_PLUS = _installed >= Version("3.0")
"""Airflow 3: the Task SDK (``airflow.sdk``), DAG bundles, no direct database access from tasks."""
AIRFLOW_V_3_1_PLUS = _installed >= Version("3.1")
"""``BaseHook`` lives in the Task SDK and has ``aget_connection``."""
AIRFLOW_V_3_2_PLUS = _installed >= Version("3.2")
"""``conf`` and the exceptions live in the Task SDK; the connection form comes from provider info."""
AIRFLOW_V_3_3_PLUS = _installed >= Version("3.3")
"""Each task instance has a ``task_state_store`` that survives its retries."""

if TYPE_CHECKING:
    from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator, Context, PokeReturnValue, conf
    from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException
    from airflow.sdk.log import mask_secret
    from airflow.triggers.base import BaseTrigger, TriggerEvent
else:
    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import BaseOperator, BaseSensorOperator, Context, PokeReturnValue
        from airflow.sdk.log import mask_secret
    else:
        from airflow.models.baseoperator import BaseOperator
        from airflow.sensors.base import BaseSensorOperator, PokeReturnValue
        from airflow.utils.context import Context
        from airflow.utils.log.secrets_masker import mask_secret

    if AIRFLOW_V_3_2_PLUS:
        from airflow.sdk import conf
        from airflow.sdk.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowNotFoundException,
        )
    else:
        from airflow.configuration import conf
        from airflow.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

    if AIRFLOW_V_3_1_PLUS:
        from airflow.sdk import BaseHook
    else:
        from airflow.hooks.base import BaseHook as _AirflowBaseHook

        class BaseHook(_AirflowBaseHook):
            """
            Airflow's ``BaseHook`` with the ``aget_connection`` that Airflow 3.1 added.

            Airflow 2.11 and 3.0 have no async connection lookup. Their triggerers run triggers on an
            event loop that a blocking lookup would stall (3.0's asks for ``sync_to_async`` around it),
            so the synchronous lookup runs in asgiref's worker thread, as their own providers do.
            """

            @classmethod
            async def aget_connection(cls, conn_id: str) -> Any:
                from asgiref.sync import sync_to_async

                return await sync_to_async(cls.get_connection)(conn_id)


def try_number(context: Any) -> int:
    """The running try of the task instance, from 1."""
    number = getattr(context.get("ti"), "try_number", None)
    return number if isinstance(number, int) and number > 0 else 1


def try_started_at(context: Any) -> float | None:
    """When this try of the task instance started, in seconds since the epoch, if Airflow says."""
    start = getattr(context.get("ti"), "start_date", None)
    return start.timestamp() if isinstance(start, datetime) and start.tzinfo is not None else None


def first_try_started_at(context: Any) -> tuple[float, str] | None:
    """
    When this task instance's first try started, where Airflow tells a retry; else when its DAG run did.

    Airflow 2 keeps earlier tries in ``TaskInstanceHistory``, which a task may read. Airflow 3 tasks have no
    database access and Airflow 3.0-3.2 tell a try nothing of the tries before it (3.3's task state store
    does, and is used instead): there, the DAG run's start is the best bound.

    :return: the time in seconds since the epoch and what it is, for logs; ``None`` if nothing tells.
    """
    ti = context.get("ti")
    if not AIRFLOW_V_3_0_PLUS and ti is not None:
        from airflow.models.taskinstancehistory import TaskInstanceHistory as History
        from airflow.utils.session import create_session

        with create_session() as session:
            tries = session.query(History.start_date).filter(
                History.dag_id == ti.dag_id,
                History.task_id == ti.task_id,
                History.run_id == ti.run_id,
                History.map_index == ti.map_index,
            )
            first = min((start for (start,) in tries if start is not None), default=None)
        if isinstance(first, datetime):
            return _aware(first).timestamp(), "this task instance's first try started"
    start = getattr(context.get("dag_run"), "start_date", None)
    if isinstance(start, datetime):
        return _aware(start).timestamp(), "this DAG run started"
    return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


_LAZY = {"BaseTrigger", "TriggerEvent"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from airflow.triggers import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Context",
    "PokeReturnValue",
    "TriggerEvent",
    "conf",
    "first_try_started_at",
    "mask_secret",
    "try_number",
    "try_started_at",
]
