"""Reading an ``atscale`` Airflow connection into checked settings: no HTTP here."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_atscale import CONNECTION_TYPE
from airflow_provider_atscale.errors import AtScaleConfigurationError

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for each HTTP request when the connection does not say (never unlimited)."""


class ConnectionLike(Protocol):
    """The parts of an Airflow ``Connection`` this module reads."""

    host: str | None
    port: int | None
    password: str | None
    extra: str | None


@dataclass(frozen=True)
class ConnectionSettings:
    """
    Checked settings of one ``atscale`` connection.

    :param conn_id: the Airflow connection id, for messages.
    :param base_url: scheme, host, port and any proxy path prefix, without a trailing slash.
    :param token: the API token; never shown in a repr.
    :param verify: ``True``/``False`` to verify TLS certificates or not, or the path of a CA bundle.
    :param timeout: seconds to wait for each request.
    """

    conn_id: str
    base_url: str
    token: str = field(repr=False)
    verify: bool | str = True
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_connection(cls, conn_id: str, conn: ConnectionLike) -> ConnectionSettings:
        """
        Check a connection and read its settings.

        :param conn_id: the connection id, for messages.
        :param conn: the Airflow connection.
        :raises AtScaleConfigurationError: a field is missing or invalid; the message names it.
        """
        extras = _extras(conn_id, conn.extra)
        if not conn.password:
            raise AtScaleConfigurationError(
                f"Connection {conn_id!r} has no API token: put the AtScale API token in its password "
                "field (Design Center > Account > API Token)"
            )
        return cls(
            conn_id=conn_id,
            base_url=_base_url(conn_id, conn.host, conn.port),
            token=conn.password,
            verify=_verify(conn_id, _extra(extras, "verify")),
            timeout=_timeout(conn_id, _extra(extras, "timeout")),
        )


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


def _timeout(conn_id: str, value: Any) -> float:
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not number > 0 or number == float("inf"):
        raise AtScaleConfigurationError(
            f"Connection {conn_id!r}: extra 'timeout' must be a positive number of seconds, got {value!r}"
        )
    return number
