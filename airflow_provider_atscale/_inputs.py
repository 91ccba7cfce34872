"""
What users hand the provider, checked once, at the boundary, into typed values: an operator's or sensor's
arguments (:class:`BuildRequest`, :class:`BatchRef`) and an ``atscale`` connection's fields
(:class:`ConnectionSettings`). One set of small parsers serves both; code past the boundary trusts the values.

Every refusal is an :class:`~airflow_provider_atscale.errors.AtScaleConfigurationError` naming the field, the
value and what is accepted, raised before any request.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_atscale import CONNECTION_TYPE
from airflow_provider_atscale.errors import AtScaleConfigurationError, clip

# Ids become URL path segments: anything that would change the URL's meaning is refused, not escaped.
_ID_FORBIDDEN = re.compile(r"[\s/\\?#%]")
_DIGITS = re.compile(r"\d+")


def parse_id(name: str, value: object) -> str:
    """An AtScale id (catalog, model or batch): a non-empty string that is safe in a URL path."""
    if not isinstance(value, str) or not value:
        raise AtScaleConfigurationError(f"{name} must be a non-empty string id, got {value!r}")
    if _ID_FORBIDDEN.search(value):
        raise AtScaleConfigurationError(
            f"{name} must be an AtScale id without whitespace, slashes, '?', '#' or '%', got {value!r}"
        )
    return value


def parse_name(name: str, value: object) -> str:
    """A catalog or model name, as written in AtScale."""
    if not isinstance(value, str) or not value.strip():
        raise AtScaleConfigurationError(f"{name} must be a non-empty name, got {value!r}")
    return value


def parse_bool(name: str, value: object) -> bool:
    """A bool, or (after templating, or in a connection's extra) ``"true"`` or ``"false"`` in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise AtScaleConfigurationError(f"{name} must be True, False, 'true' or 'false', got {value!r}")


def parse_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """Seconds: a finite number above zero (or also zero), a numeric string, or a ``timedelta``."""
    number: object = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(number, str):
        with contextlib.suppress(ValueError):
            number = float(number.strip())
    if (
        isinstance(number, (int, float))
        and not isinstance(number, bool)
        and (number >= 0 if zero else number > 0)
        and number < float("inf")
    ):
        return float(number)
    which = "a number of seconds, 0 or more" if zero else "a positive number of seconds"
    raise AtScaleConfigurationError(f"{name} must be {which}, got {value!r}")


def parse_count(name: str, value: object, *, maximum: int | None = None) -> int:
    """A whole number from 0 (to ``maximum``): an int, a whole float or a string of digits."""
    number: object = value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if (
        isinstance(number, int)
        and not isinstance(number, bool)
        and 0 <= number <= (number if maximum is None else maximum)
    ):
        return number
    upto = f" from 0 to {maximum}" if maximum is not None else ", 0 or more"
    raise AtScaleConfigurationError(f"{name} must be a whole number{upto}, got {value!r}")


def parse_grace_period_overrides(value: object) -> dict[str, int]:
    """
    ``grace_period_overrides``: dataset name to a non-negative integer. Accepted: ``None`` or ``""`` (none);
    a mapping whose values are integers or integer strings (``"30"`` becomes ``30``); or a string holding
    such a JSON object, as one template renders it.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise AtScaleConfigurationError(
                "grace_period_overrides must be a mapping or a JSON object string such as "
                f"'{{\"factinternetsales\": 30}}', got {clip(value)!r}"
            ) from None
    if not isinstance(value, Mapping):
        raise AtScaleConfigurationError(
            "grace_period_overrides must map dataset names to non-negative integers, "
            f"got {type(value).__name__} {clip(repr(value))}"
        )
    overrides: dict[str, int] = {}
    for dataset, grace in value.items():
        if not isinstance(dataset, str) or not dataset.strip():
            raise AtScaleConfigurationError(
                f"grace_period_overrides keys must be non-empty dataset names, got {dataset!r}"
            )
        overrides[dataset.strip()] = parse_count(f"grace_period_overrides[{dataset!r}]", grace)
    return overrides


def check_one_of(id_field: str, id_value: object, name_field: str, name_value: object) -> None:
    """Refuse a catalog or model named neither or twice: exactly one of its id and its name is given."""
    given = [field for field, value in ((id_field, id_value), (name_field, name_value)) if value is not None]
    if len(given) != 1:
        got = "neither" if not given else f"both ({id_field}={id_value!r}, {name_field}={name_value!r})"
        raise AtScaleConfigurationError(f"give exactly one of {id_field} or {name_field}, got {got}")


def parse_build_options(full_build: object, grace_period_overrides: object) -> tuple[bool, dict[str, int]]:
    """``full_build`` and ``grace_period_overrides``, checked together: no overrides on a full build."""
    full = parse_bool("full_build", full_build)
    overrides = parse_grace_period_overrides(grace_period_overrides)
    if full and overrides:
        raise AtScaleConfigurationError(
            "grace_period_overrides apply to incremental builds only, but full_build=True was given "
            f"with {overrides!r}: remove the overrides or set full_build=False"
        )
    return full, overrides


class BuildRequest(NamedTuple):
    """A checked request for an aggregate build: the model, full or not, and any grace-period overrides."""

    catalog_id: str
    model_id: str
    full_build: bool
    grace_period_overrides: Mapping[str, int]

    @classmethod
    def parse(
        cls, *, catalog_id: object, model_id: object, full_build: object, grace_period_overrides: object
    ) -> BuildRequest:
        """Check and normalise a build's arguments (:func:`parse_build_options`, the ids)."""
        full, overrides = parse_build_options(full_build, grace_period_overrides)
        return cls(parse_id("catalog_id", catalog_id), parse_id("model_id", model_id), full, overrides)

    @property
    def build_type(self) -> str:
        """``full`` or ``incremental``."""
        return "full" if self.full_build else "incremental"

    def describe(self) -> str:
        """``a full build of model m in catalog c`` (with its overrides), for logs."""
        overrides = (
            f" with overrides {dict(self.grace_period_overrides)}" if self.grace_period_overrides else ""
        )
        what = "a full build" if self.full_build else "an incremental build"
        return f"{what} of model {self.model_id} in catalog {self.catalog_id}{overrides}"


class BatchRef(NamedTuple):
    """A checked reference to one batch of one model."""

    catalog_id: str
    model_id: str
    batch_id: str

    @classmethod
    def parse(cls, *, catalog_id: object, model_id: object, batch_id: object) -> BatchRef:
        """Check the three ids."""
        return cls(
            parse_id("catalog_id", catalog_id), parse_id("model_id", model_id), parse_id("batch_id", batch_id)
        )


# The connection


DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for each HTTP request when the connection does not say (never unlimited)."""
DEFAULT_MAX_RETRIES = 5
"""Retries of a request that failed in a way that may pass (429, 502, 503, 504, no answer)."""
DEFAULT_RETRY_MAX_WAIT = 300.0
"""Seconds one call may spend waiting between its retries, in all."""
DEFAULT_CLIENT_ID = "atscale-ai-link"
"""AtScale's public Identity Broker client (no secret), the one its own SDK and utilities use."""
DEFAULT_REALM = "atscale"
AUTH_TYPES = ("token", "token_exchange", "password")


class LineageTarget(NamedTuple):
    """Where one AtScale warehouse connection's aggregate tables live for OpenLineage: a namespace
    (``snowflake://acme-xy12345``), and a database to prefix their ``schema.table`` names with, if any."""

    namespace: str
    database: str | None = None


@dataclass(frozen=True)
class ConnectionSettings:
    """
    The checked settings of one ``atscale`` connection: ``host`` (and ``port``) as ``base_url`` (scheme, host,
    port, any proxy path prefix); ``password`` as ``token`` (the API token, or the password with
    ``auth_type="password"``); ``login``; and the extras ``verify`` (true, false or a CA bundle), ``timeout``,
    ``auth_type`` (``token``, ``token_exchange`` or ``password``), ``client_id``, ``client_secret`` and
    ``realm`` (the Identity Broker's password grant), ``max_retries``, ``retry_max_wait`` and
    ``lineage_namespaces``. Secrets are never shown in a repr. The hook compares two settings to tell whether
    a connection changed.
    """

    conn_id: str
    base_url: str
    token: str = field(repr=False)
    verify: bool | str = True
    timeout: float = DEFAULT_TIMEOUT
    auth_type: str = "token"
    login: str | None = None
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str | None = field(default=None, repr=False)
    realm: str = DEFAULT_REALM
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_max_wait: float = DEFAULT_RETRY_MAX_WAIT
    lineage_namespaces: Mapping[str, LineageTarget] = field(default_factory=dict)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret of the connection, to keep out of messages."""
        return tuple(secret for secret in (self.token, self.client_secret) if secret)

    @classmethod
    def read(cls, conn_id: str, conn: Any) -> ConnectionSettings:
        """Check an Airflow connection and read its settings; a bad field is refused, named."""
        where = f"Connection {conn_id!r}"
        extras = _extras(where, conn.extra)

        def extra(name: str, default: Any = None) -> Any:
            # Older connection forms stored custom fields as extra__<conn type>__<name>.
            value = extras.get(name, extras.get(f"extra__{CONNECTION_TYPE}__{name}"))
            return default if value is None or value == "" else value

        auth_type = extra("auth_type", "token")
        if not isinstance(auth_type, str) or auth_type.strip().lower() not in AUTH_TYPES:
            raise AtScaleConfigurationError(
                f"{where}: extra 'auth_type' must be one of {', '.join(AUTH_TYPES)}, got {auth_type!r}"
            )
        auth_type = auth_type.strip().lower()
        if auth_type == "password" and (not conn.login or not conn.password):
            raise AtScaleConfigurationError(
                f"{where} has auth_type 'password' but no {'login' if not conn.login else 'password'}: set "
                "the AtScale user's name as login and its password as password"
            )
        if not conn.password:
            raise AtScaleConfigurationError(
                f"{where} has no API token: put the AtScale API token in its password field "
                "(Design Center > Account > API Token)"
            )
        return cls(
            conn_id=conn_id,
            base_url=_base_url(where, conn.host, conn.port),
            token=conn.password,
            verify=_verify(where, extra("verify", True)),
            timeout=parse_seconds(f"{where}: extra 'timeout'", extra("timeout", DEFAULT_TIMEOUT)),
            auth_type=auth_type,
            login=conn.login or None,
            client_id=_word(where, "client_id", extra("client_id", DEFAULT_CLIENT_ID)),
            client_secret=_word(where, "client_secret", extra("client_secret")),
            realm=_word(where, "realm", extra("realm", DEFAULT_REALM)),
            max_retries=parse_count(
                f"{where}: extra 'max_retries'", extra("max_retries", DEFAULT_MAX_RETRIES), maximum=100
            ),
            retry_max_wait=parse_seconds(
                f"{where}: extra 'retry_max_wait'", extra("retry_max_wait", DEFAULT_RETRY_MAX_WAIT), zero=True
            ),
            lineage_namespaces=_lineage_namespaces(where, extra("lineage_namespaces", {})),
        )


def _extras(where: str, raw: str | None) -> Mapping[str, Any]:
    if not raw or not raw.strip():
        return {}
    try:
        extras = json.loads(raw)
    except ValueError:
        raise AtScaleConfigurationError(
            f"{where}: extra must be a JSON object such as "
            '{"verify": true, "timeout": 30}, but it is not valid JSON'
        ) from None
    if not isinstance(extras, dict):
        raise AtScaleConfigurationError(f"{where}: extra must be a JSON object, got {type(extras).__name__}")
    return extras


def _base_url(where: str, host: str | None, port: int | None) -> str:
    host = (host or "").strip()
    if not host:
        raise AtScaleConfigurationError(
            f"{where} has no host: set it to AtScale's URL, e.g. https://atscale.example.com"
        )
    url = host if "://" in host else f"https://{host}"
    parts = urlsplit(url)
    try:
        url_port = parts.port
    except ValueError:
        url_port, parts = None, parts._replace(netloc="")
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in url)
        or parts.query
        or parts.fragment
    ):
        raise AtScaleConfigurationError(
            f"{where}: host must be an http(s) URL such as https://atscale.example.com "
            f"(a path prefix is allowed, no query), got {host!r}"
        )
    if port is not None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise AtScaleConfigurationError(f"{where}: port must be a number from 1 to 65535, got {port!r}")
        url_port = port
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = netloc if url_port is None else f"{netloc}:{url_port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _verify(where: str, value: Any) -> bool | str:
    if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false")):
        return parse_bool("verify", value)
    if isinstance(value, str) and os.path.isfile(value.strip()):
        return value.strip()
    raise AtScaleConfigurationError(
        f"{where}: extra 'verify' must be true, false or the path of an existing CA bundle file, got "
        f"{value!r}"
    )


def _word(where: str, name: str, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip() and "/" not in value.strip()):
        return value.strip() if isinstance(value, str) else None
    shown = "" if name == "client_secret" else f", got {value!r}"
    raise AtScaleConfigurationError(f"{where}: extra {name!r} must be a non-empty string without '/'{shown}")


def _lineage_namespaces(where: str, value: Any) -> dict[str, LineageTarget]:
    """AtScale connection id to a namespace or to ``{"namespace": ..., "database": ...}`` (or its JSON)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    problem = f"{where}: extra 'lineage_namespaces' must map AtScale connection ids to OpenLineage "
    problem += 'namespaces, e.g. {"snowflake-warehouse": "snowflake://acme-xy12345"}'
    if not isinstance(value, dict):
        raise AtScaleConfigurationError(f"{problem}; got {value!r}")
    targets: dict[str, LineageTarget] = {}
    for connection, target in value.items():
        if isinstance(target, str) and target.strip():
            targets[str(connection)] = LineageTarget(target.strip())
        elif (
            isinstance(target, dict)
            and isinstance(target.get("namespace"), str)
            and target["namespace"].strip()
            and isinstance(target.get("database"), (str, type(None)))
        ):
            targets[str(connection)] = LineageTarget(
                target["namespace"].strip(), target.get("database") or None
            )
        else:
            raise AtScaleConfigurationError(f"{problem}; got {target!r} for {connection!r}")
    return targets
