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
    "mask_secret",
]
