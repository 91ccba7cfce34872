"""Reading an ``atscale`` Airflow connection into checked settings: no HTTP here."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_atscale import CONNECTION_TYPE
from airflow_provider_atscale.errors import AtScaleConfigurationError

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for each HTTP request when the connection does not say (never unlimited)."""
DEFAULT_MAX_RETRIES = 5
"""Retries of a request that failed in a way that may pass (429, 502, 503, 504, no answer)."""
DEFAULT_RETRY_MAX_WAIT = 300.0
"""Seconds a request may spend waiting between its retries, in all."""
DEFAULT_CLIENT_ID = "atscale-ai-link"
"""AtScale's public Identity Broker client (no secret), the one its own SDK and utilities use."""
DEFAULT_REALM = "atscale"
AUTH_TYPES = ("token", "token_exchange", "password")


class ConnectionLike(Protocol):
    """The parts of an Airflow ``Connection`` this module reads."""

    host: str | None
    port: int | None
    login: str | None
    password: str | None
    extra: str | None


@dataclass(frozen=True)
class ConnectionSettings:
    """
    Checked settings of one ``atscale`` connection.

    :param conn_id: the Airflow connection id, for messages.
    :param base_url: scheme, host, port and any proxy path prefix, without a trailing slash.
    :param token: the API token, or the password for ``auth_type="password"``; never shown in a repr.
    :param verify: ``True``/``False`` to verify TLS certificates or not, or the path of a CA bundle.
    :param timeout: seconds to wait for each request.
    :param auth_type: ``token`` (the API token as bearer), ``token_exchange`` (the API token exchanged
        for short-lived access tokens) or ``password`` (the Identity Broker's password grant).
    :param login: the user name, for ``auth_type="password"``.
    :param client_id: the Identity Broker client, for ``auth_type="password"``.
    :param client_secret: its secret, if the client has one; never shown in a repr.
    :param realm: the Identity Broker realm.
    :param max_retries: retries of a request that failed in a way that may pass.
    :param retry_max_wait: seconds one call may spend waiting between retries, in all.
    :param lineage_namespaces: AtScale data-warehouse connection id to where its aggregate tables live, for
        OpenLineage: an OpenLineage namespace (``snowflake://acme-xy12345``), and the database the table
        names are prefixed with, if any.
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
    def from_connection(cls, conn_id: str, conn: ConnectionLike) -> ConnectionSettings:
        """
        Check a connection and read its settings.

        :param conn_id: the connection id, for messages.
        :param conn: the Airflow connection.
        :raises AtScaleConfigurationError: a field is missing or invalid; the message names it.
        """
        extras = _extras(conn_id, conn.extra)
        auth_type = _auth_type(conn_id, _extra(extras, "auth_type"))
        if auth_type == "password":
            if not conn.login or not conn.password:
                raise AtScaleConfigurationError(
                    f"Connection {conn_id!r} has auth_type 'password' but no "
                    f"{'login' if not conn.login else 'password'}: set the AtScale user's name as login "
                    "and its password as password"
                )
        elif not conn.password:
            raise AtScaleConfigurationError(
                f"Connection {conn_id!r} has no API token: put the AtScale API token in its password "
                "field (Design Center > Account > API Token)"
            )
        return cls(
            conn_id=conn_id,
            base_url=_base_url(conn_id, conn.host, conn.port),
            token=conn.password,
            verify=_verify(conn_id, _extra(extras, "verify")),
            timeout=_positive_number(conn_id, "timeout", _extra(extras, "timeout"), DEFAULT_TIMEOUT),
            auth_type=auth_type,
            login=conn.login or None,
            client_id=_text(conn_id, "client_id", _extra(extras, "client_id"), DEFAULT_CLIENT_ID),
            client_secret=_text(conn_id, "client_secret", _extra(extras, "client_secret"), None),
            realm=_text(conn_id, "realm", _extra(extras, "realm"), DEFAULT_REALM),
            max_retries=_max_retries(conn_id, _extra(extras, "max_retries")),
            retry_max_wait=_non_negative_number(
                conn_id, "retry_max_wait", _extra(extras, "retry_max_wait"), DEFAULT_RETRY_MAX_WAIT
            ),
            lineage_namespaces=_lineage_namespaces(conn_id, _extra(extras, "lineage_namespaces")),
        )


class LineageTarget(NamedTuple):
    """
    Where the aggregate tables of one AtScale data-warehouse connection live, for OpenLineage.

    :param namespace: the OpenLineage namespace of the warehouse, e.g. ``snowflake://acme-xy12345``.
    :param database: the database the tables' ``schema.table`` names are prefixed with, if any.
    """

    namespace: str
    database: str | None = None


def _lineage_namespaces(conn_id: str, value: Any) -> dict[str, LineageTarget]:
    """
    Read ``lineage_namespaces``: a JSON object (or its text) of AtScale connection id to a namespace string
    or to ``{"namespace": ..., "database": ...}``.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    problem = f"Connection {conn_id!r}: extra 'lineage_namespaces' must map AtScale connection ids to"
    problem += ' OpenLineage namespaces, e.g. {"snowflake-warehouse": "snowflake://acme-xy12345"}'
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


def _extras(conn_id: str, raw: str | None) -> Mapping[str, Any]:
    if not raw or not raw.strip():
        return {}
    try:
        extras = json.loads(raw)
    except ValueError:
        raise AtScaleConfigurationError(
            f"Connection {conn_id!r}: extra must be a JSON object such as "
            '{"verify": true, "timeout": 30}, but it is not valid JSON'
        ) from None
    if not isinstance(extras, dict):
        raise AtScaleConfigurationError(
            f"Connection {conn_id!r}: extra must be a JSON object, got {type(extras).__name__}"
        )
    return extras


def _extra(extras: Mapping[str, Any], name: str) -> Any:
    # Older connection forms stored custom fields as extra__<conn type>__<name>.
    return extras.get(name, extras.get(f"extra__{CONNECTION_TYPE}__{name}"))


def _base_url(conn_id: str, host: str | None, port: int | None) -> str:
    host = (host or "").strip()
    if not host:
        raise AtScaleConfigurationError(
            f"Connection {conn_id!r} has no host: set it to AtScale's URL, e.g. https://atscale.example.com"
        )
    url = host if "://" in host else f"https://{host}"
    parts = urlsplit(url)
    try:
        url_port = parts.port
    except ValueError:
        url_port = None
        parts = parts._replace(netloc="")
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in url)
        or parts.query
        or parts.fragment
    ):
        raise AtScaleConfigurationError(
            f"Connection {conn_id!r}: host must be an http(s) URL such as https://atscale.example.com "
            f"(a path prefix is allowed, no query), got {host!r}"
        )
    if port is not None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise AtScaleConfigurationError(
                f"Connection {conn_id!r}: port must be a number from 1 to 65535, got {port!r}"
            )
        url_port = port
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if url_port is not None:
        netloc = f"{netloc}:{url_port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _verify(conn_id: str, value: Any) -> bool | str:
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if os.path.isfile(value.strip()):
            return value.strip()
    raise AtScaleConfigurationError(
        f"Connection {conn_id!r}: extra 'verify' must be true, false or the path of an existing CA bundle "
        f"file, got {value!r}"
    )


def _auth_type(conn_id: str, value: Any) -> str:
    if value is None or value == "":
        return "token"
    if isinstance(value, str) and value.strip().lower() in AUTH_TYPES:
        return value.strip().lower()
    raise AtScaleConfigurationError(
        f"Connection {conn_id!r}: extra 'auth_type' must be one of {', '.join(AUTH_TYPES)}, got {value!r}"
    )


def _text(conn_id: str, name: str, value: Any, default: str | None) -> Any:
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip() and "/" not in value.strip():
        return value.strip()
    raise AtScaleConfigurationError(
        f"Connection {conn_id!r}: extra {name!r} must be a non-empty string without '/'"
        + (f", got {value!r}" if name != "client_secret" else "")
    )


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _positive_number(conn_id: str, name: str, value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    number = _number(value)
    if number is None or not 0 < number < float("inf"):
        raise AtScaleConfigurationError(
            f"Connection {conn_id!r}: extra {name!r} must be a positive number of seconds, got {value!r}"
        )
    return number


def _non_negative_number(conn_id: str, name: str, value: Any, default: float) -> float:
    if value is None or value == "":
        return default
    number = _number(value)
    if number is None or not 0 <= number < float("inf"):
        raise AtScaleConfigurationError(
            f"Connection {conn_id!r}: extra {name!r} must be a number of seconds, 0 or more, got {value!r}"
        )
    return number


def _max_retries(conn_id: str, value: Any) -> int:
    if value is None or value == "":
        return DEFAULT_MAX_RETRIES
    number = _number(value)
    if number is None or not number.is_integer() or not 0 <= number <= 100:
        raise AtScaleConfigurationError(
            f"Connection {conn_id!r}: extra 'max_retries' must be a whole number from 0 to 100, got {value!r}"
        )
    return int(number)
