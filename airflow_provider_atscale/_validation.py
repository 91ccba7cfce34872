"""
Checks and normalisation of user input, run before any request is sent.

Every failure is an :class:`~airflow_provider_atscale.errors.AtScaleConfigurationError` naming the argument,
the bad value and what is accepted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NamedTuple

from airflow_provider_atscale.errors import AtScaleConfigurationError


class BuildRequest(NamedTuple):
    """
    A checked request for an aggregate build: what an operator's rendered arguments, or a hook caller, ask.

    Build it with :meth:`checked`, the one set of rules for every caller.

    :param catalog_id: the catalog's id.
    :param model_id: the model's id.
    :param full_build: a full build rather than an incremental one.
    :param grace_period_overrides: dataset name to grace period (incremental builds only).
    """

    catalog_id: str
    model_id: str
    full_build: bool
    grace_period_overrides: Mapping[str, int]

    @classmethod
    def checked(
        cls, *, catalog_id: object, model_id: object, full_build: object, grace_period_overrides: object
    ) -> BuildRequest:
        """
        Check and normalise a build's arguments; raises before anything is sent to AtScale.

        :raises AtScaleConfigurationError: an argument is invalid; the message names it and its value.
        """
        full, overrides = check_build_arguments(full_build, grace_period_overrides)
        return cls(
            catalog_id=validate_id("catalog_id", catalog_id),
            model_id=validate_id("model_id", model_id),
            full_build=full,
            grace_period_overrides=overrides,
        )

    @property
    def build_type(self) -> str:
        """``full`` or ``incremental``, for logs."""
        return "full" if self.full_build else "incremental"

    def describe_build_type(self) -> str:
        """``a full build`` or ``an incremental build``, for logs."""
        return "a full build" if self.full_build else "an incremental build"


class BatchRef(NamedTuple):
    """
    A checked reference to one batch of one model.

    :param catalog_id: the catalog's id.
    :param model_id: the model's id.
    :param batch_id: the batch's id.
    """

    catalog_id: str
    model_id: str
    batch_id: str

    @classmethod
    def checked(cls, *, catalog_id: object, model_id: object, batch_id: object) -> BatchRef:
        """Check the ids; raises before anything is sent to AtScale."""
        return cls(
            catalog_id=validate_id("catalog_id", catalog_id),
            model_id=validate_id("model_id", model_id),
            batch_id=validate_id("batch_id", batch_id),
        )


def check_build_arguments(full_build: object, grace_period_overrides: object) -> tuple[bool, dict[str, int]]:
    """What to build, checked: ``full_build`` and ``grace_period_overrides`` read and refused together."""
    full = normalize_full_build(full_build)
    overrides = normalize_grace_period_overrides(grace_period_overrides)
    check_overrides_allowed(full, overrides)
    return full, overrides


def check_one_of(id_field: str, id_value: object, name_field: str, name_value: object) -> None:
    """
    Refuse a pair of arguments that names a catalog or model neither or twice: one of an id and a name.

    Run when the DAG is parsed (on the arguments as written) and again once they are rendered.

    :param id_field: the id argument's name, ``catalog_id`` or ``model_id``.
    :param id_value: its value.
    :param name_field: the name argument's name, ``catalog_name`` or ``model_name``.
    :param name_value: its value.
    """
    given = [field for field, value in ((id_field, id_value), (name_field, name_value)) if value is not None]
    if len(given) != 1:
        raise AtScaleConfigurationError(
            f"give exactly one of {id_field} or {name_field}, "
            + (
                "got neither"
                if not given
                else f"got both ({id_field}={id_value!r}, {name_field}={name_value!r})"
            )
        )


def validate_name(name: str, value: object) -> str:
    """
    Check a catalog or model name, as written in AtScale.

    :param name: the argument's name, for the error message.
    :param value: the value to check.
    """
    if not isinstance(value, str) or not value.strip():
        raise AtScaleConfigurationError(f"{name} must be a non-empty name, got {value!r}")
    return value


# Ids become URL path segments: anything that would change the URL's meaning is refused, not escaped.
_ID_FORBIDDEN = re.compile(r"[\s/\\?#%]")
_NON_NEGATIVE_INTEGER = re.compile(r"\d+")


def validate_id(name: str, value: object) -> str:
    """
    Check an AtScale id (catalog, model or batch).

    :param name: the argument's name, for the error message.
    :param value: the value to check.
    :return: the id.
    """
    if not isinstance(value, str):
        raise AtScaleConfigurationError(f"{name} must be a non-empty string id, got {value!r}")
    if not value:
        raise AtScaleConfigurationError(f"{name} must be a non-empty string id, got an empty string")
    if _ID_FORBIDDEN.search(value):
        raise AtScaleConfigurationError(
            f"{name} must be an AtScale id without whitespace, slashes, '?', '#' or '%', got {value!r}"
        )
    return value


def normalize_full_build(value: object) -> bool:
    """
    Read ``full_build``: a bool, or after templating the string ``"true"`` or ``"false"`` in any case.

    :param value: the rendered argument.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise AtScaleConfigurationError(f"full_build must be True, False, 'true' or 'false', got {value!r}")


def normalize_grace_period_overrides(value: object) -> dict[str, int]:
    """
    Read ``grace_period_overrides`` into a dict of dataset name to a non-negative integer.

    Accepted: ``None`` or ``""`` (no overrides); a mapping whose values are integers or integer strings
    (``"30"`` becomes ``30``); or a string holding such a JSON object, as one template renders it.

    :param value: the rendered argument.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise AtScaleConfigurationError(
                "grace_period_overrides must be a mapping or a JSON object string such as "
                f"'{{\"factinternetsales\": 30}}', got {_shorten(value)!r}"
            ) from None
    if not isinstance(value, Mapping):
        raise AtScaleConfigurationError(
            "grace_period_overrides must map dataset names to non-negative integers, "
            f"got {type(value).__name__} {_shorten(value)}"
        )
    overrides: dict[str, int] = {}
    for dataset, grace in value.items():
        if not isinstance(dataset, str) or not dataset.strip():
            raise AtScaleConfigurationError(
                f"grace_period_overrides keys must be non-empty dataset names, got {dataset!r}"
            )
        overrides[dataset.strip()] = _non_negative_int(f"grace_period_overrides[{dataset!r}]", grace)
    return overrides


def check_overrides_allowed(full_build: bool, overrides: Mapping[str, int]) -> None:
    """Refuse grace-period overrides on a full build: AtScale takes them for incremental builds only."""
    if full_build and overrides:
        raise AtScaleConfigurationError(
            "grace_period_overrides apply to incremental builds only, but full_build=True was given "
            f"with {dict(overrides)!r}: remove the overrides or set full_build=False"
        )


def validate_positive_seconds(name: str, value: object) -> float:
    """
    Check a duration in seconds: a positive, finite number (``timedelta`` accepted).

    :param name: the argument's name, for the error message.
    :param value: the value to check.
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    raise AtScaleConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")


def _non_negative_int(name: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _NON_NEGATIVE_INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    raise AtScaleConfigurationError(f"{name} must be a non-negative integer, got {value!r}")


def _shorten(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
