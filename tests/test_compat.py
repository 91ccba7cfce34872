"""The compat module's version flags and names; the provider's errors as Airflow's task runner sees them."""

from __future__ import annotations

import pytest
from packaging.version import Version

from airflow_provider_atscale import _compat
from airflow_provider_atscale.errors import AtScaleAuthError, AtScaleConfigurationError, AtScaleError
from tests.compat import redact


@pytest.mark.parametrize(
    ("flag", "since"),
    [("AIRFLOW_V_3_0_PLUS", (3, 0)), ("AIRFLOW_V_3_2_PLUS", (3, 2)), ("AIRFLOW_V_3_3_PLUS", (3, 3))],
)
def test_version_flags_follow_the_installed_airflow(flag: str, since: tuple[int, int]) -> None:
    from airflow import __version__

    assert getattr(_compat, flag) is (Version(__version__).release >= since)


def test_a_secret_given_to_mask_secret_is_redacted_from_logs() -> None:
    # Upper case and digits: Airflow 2.11's masker keeps every secret the session registered, short ones too.
    _compat.mask_secret("QZX9Q7KWPVJ2")

    assert redact("Bearer QZX9Q7KWPVJ2") == "Bearer ***"


def task_runner() -> object:
    """The module whose ``except`` clauses decide a task's fate in this Airflow version."""
    if _compat.AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.execution_time import task_runner

        return task_runner
    from airflow.models import taskinstance

    return taskinstance


def handled(name: str) -> type[BaseException]:
    """The exception class the task runner catches by this name (Airflow 3.0 and 3.1 import it where used)."""
    import airflow.exceptions

    found: type[BaseException] = getattr(task_runner(), name, None) or getattr(airflow.exceptions, name)
    return found


def test_every_provider_error_is_an_airflow_exception_of_the_task_runner() -> None:
    assert issubclass(AtScaleError, handled("AirflowException"))


@pytest.mark.parametrize("error", [AtScaleConfigurationError, AtScaleAuthError])
def test_errors_that_fail_again_on_a_retry_fail_the_task_without_retries(error: type[AtScaleError]) -> None:
    assert issubclass(error, handled("AirflowFailException"))
