"""
What differs between the Airflow versions this provider supports: 2.11 and every Airflow 3 minor.

Where Airflow keeps its base classes, exceptions and ``conf`` in each version is the business of Airflow's own
compatibility provider: the provider imports them from ``airflow.providers.common.compat.sdk``. What is left
is here: the version flags the provider branches on; ``mask_secret``, which the compatibility provider finds
only from 1.21, a release Python 3.10 cannot install; and the trigger classes (``airflow.triggers.base`` in
every version), imported on first use because DAG files import the operator module, and this import would
add about 5 ms to every parse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow import __version__ as AIRFLOW_VERSION
from packaging.version import Version

_installed = Version(Version(AIRFLOW_VERSION).base_version)

AIRFLOW_V_3_0_PLUS = _installed >= Version("3.0")
"""Airflow 3: the Task SDK, assets rather than datasets, no database access from tasks."""
AIRFLOW_V_3_2_PLUS = _installed >= Version("3.2")
"""The connection form comes from provider info, not from the hook class."""
AIRFLOW_V_3_3_PLUS = _installed >= Version("3.3")
"""Each task instance has a ``task_state_store`` that survives its retries; triggers have ``on_kill``."""

if TYPE_CHECKING:
    from airflow.sdk.log import mask_secret
    from airflow.triggers.base import BaseTrigger, TriggerEvent
elif AIRFLOW_V_3_0_PLUS:
    from airflow.sdk.log import mask_secret
else:
    from airflow.utils.log.secrets_masker import mask_secret


def __getattr__(name: str) -> object:
    if name in ("BaseTrigger", "TriggerEvent"):
        from airflow.triggers import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AIRFLOW_VERSION", "AIRFLOW_V_3_0_PLUS", "AIRFLOW_V_3_2_PLUS", "AIRFLOW_V_3_3_PLUS"]
__all__ += ["BaseTrigger", "TriggerEvent", "mask_secret"]  # re-exported, for the modules that import them
