"""
HTTP to AtScale: the request and answer types, the two instructions a flow yields, the two drivers that carry
them out — :func:`run` with requests on a worker, :func:`arun` with aiohttp on the triggerer — and what an
error answer says. A *flow* (``hooks/_calls.py``) yields :class:`Send` (the driver answers the
:class:`RawResponse`, or throws the ``AtScaleTransportError`` of no answer into it) and :class:`Sleep`; it
decides the rest.

aiohttp is imported only when a trigger runs. A triggerer's triggers share one aiohttp session per event loop
and TLS setting, so one connection pool serves them all.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import weakref
from collections.abc import Generator, Mapping
from datetime import timezone
from email.utils import parsedate_to_datetime
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from airflow_provider_atscale import __version__, _clock
from airflow_provider_atscale.errors import (
    AtScaleError,
    AtScaleHTTPError,
    AtScaleResponseError,
    AtScaleTransportError,
    clip,
    http_error_class,
)

if TYPE_CHECKING:
    import aiohttp
    import requests
    import yarl

    from airflow_provider_atscale._inputs import ConnectionSettings

T = TypeVar("T")
Flow = Generator[Any, Any, T]
"""A flow returning ``T``: it yields :class:`Send` and :class:`Sleep` and is sent their answers."""

HEADERS = {"User-Agent": f"airflow-provider-atscale/{__version__}", "Accept": "application/json"}
"""Headers of every request."""
KEEPALIVE_SECONDS = 600.0
"""How long the triggerer keeps an idle connection: longer than poll intervals, so polls reuse connections
(and TLS sessions) instead of opening new ones."""
_NOTHING: Mapping[str, str] = MappingProxyType({})
_ERROR_TEXT_KEYS = ("message", "error_description", "errorMessage", "detail", "error", "errors")
"""Keys under which AtScale and the proxies in front of it put an error's text."""
_STATUS_HINTS = {
    401: "check the connection's API token (AtScale API tokens expire after 90 days)",
    403: "the token's user needs the aggregates_manage role, and the model must be deployed",
}


class ApiRequest(NamedTuple):
    """
    One request to the AtScale API, without a transport: its ``path`` below the connection's base URL (ids
    escaped), a JSON body or a ``form`` (token endpoints), headers of its own; whether it carries the
    connection's bearer token (``authenticated``), goes to the private Design Center API (``private``: it
    wants a short-lived JWT, never the raw API token), and may be repeated harmlessly (``idempotent``: not
    the POST that starts a build). The form and headers may hold secrets: never shown in a repr.
    """

    method: str
    path: str
    params: Mapping[str, str] = _NOTHING
    json_body: Any = None
    form: Mapping[str, str] | None = None
    headers: Mapping[str, str] = _NOTHING
    authenticated: bool = True
    private: bool = False
    idempotent: bool = True

    def __repr__(self) -> str:
        return f"ApiRequest(method={self.method!r}, path={self.path!r}, params={dict(self.params)!r})"

    def describe(self) -> str:
        """``METHOD /path`` for messages."""
        return f"{self.method} {self.path}"

    def unexpected_answer(self, status_code: int, what: str) -> AtScaleResponseError:
        """The error for an answer that is not what the API promises, and why."""
        return AtScaleResponseError(
            f"AtScale {self.describe()} answered HTTP {status_code} {what}",
            method=self.method,
            path=self.path,
            status_code=status_code,
        )

    def no_answer(self, base_url: str, error: BaseException, *, opened: bool) -> AtScaleTransportError:
        """The error for no answer at all, and whether a connection had opened (else AtScale saw nothing);
        the transport's text names the URL and pool, never a header."""
        return AtScaleTransportError(
            f"AtScale {self.describe()} got no answer from {base_url}: "
            f"{type(error).__name__} ({clip(str(error) or type(error).__name__)})",
            method=self.method,
            path=self.path,
            connection_opened=opened,
        )


class Send(NamedTuple):
    """Instruction: send this request with these headers (the bearer token among them: never shown in a
    repr), and answer the :class:`RawResponse`."""

    request: ApiRequest
    headers: Mapping[str, str]

    def __repr__(self) -> str:
        return f"Send(request={self.request!r})"


class RawResponse(NamedTuple):
    """An HTTP answer as a transport received it (its headers looked up without regard to case)."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes


class Sleep(NamedTuple):
    """Instruction: wait this many seconds."""

    seconds: float


def run(flow: Flow[T], http: requests.Session, settings: ConnectionSettings) -> T:
    """Carry out a flow on a worker with the hook's requests session and the connection's settings; the flow
    is closed however it ends."""
    import requests

    answer: Any = None
    try:
        while True:
            # Written out in each driver rather than shared: a helper would be a call more on every request.
            try:
                instruction = flow.throw(answer) if isinstance(answer, AtScaleError) else flow.send(answer)
            except StopIteration as stop:
                result: T = stop.value
                return result
            if isinstance(instruction, Sleep):
                _clock.sleep(instruction.seconds)
                answer = None
                continue
            request = instruction.request
            try:
                response = http.request(
                    request.method,
                    settings.base_url + request.path,
                    params=request.params,
                    json=request.json_body,
                    data=request.form,
                    headers=instruction.headers,
                    timeout=settings.timeout,
                    # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override its verify.
                    verify=settings.verify,
                )
            except requests.RequestException as failure:
                answer = request.no_answer(settings.base_url, failure, opened=_opened(failure))
                continue
            answer = RawResponse(response.status_code, response.headers, response.content)
    finally:
        flow.close()


async def arun(flow: Flow[T], settings: ConnectionSettings) -> T:
    """:func:`run` on an event loop, with the aiohttp session the loop shares (see :func:`open_session`)."""
    import aiohttp

    session = open_session(settings.verify)
    timeout = _timeout(settings.timeout)
    answer: Any = None
    try:
        while True:
            try:
                instruction = flow.throw(answer) if isinstance(answer, AtScaleError) else flow.send(answer)
            except StopIteration as stop:
                result: T = stop.value
                return result
            if isinstance(instruction, Sleep):
                await _clock.asleep(instruction.seconds)
                answer = None
                continue
            request = instruction.request
            try:
                async with session.request(
                    request.method,
                    _url(settings.base_url, request.path, tuple(request.params.items())),
                    json=request.json_body,
                    data=request.form,
                    headers=instruction.headers,
                    timeout=timeout,
                ) as response:
                    body = await response.read()
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as failure:
                answer = request.no_answer(settings.base_url, failure, opened=False)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as failure:
                answer = request.no_answer(settings.base_url, failure, opened=True)
                continue
            answer = RawResponse(response.status, response.headers, body)
    finally:
        flow.close()


# The triggerer's shared aiohttp sessions: one per event loop and TLS setting, with the number of hooks
# using it.
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool | str, list[Any]]] = (
    weakref.WeakKeyDictionary()
)


def open_session(verify: bool | str) -> aiohttp.ClientSession:
    """The aiohttp session this event loop shares for a TLS setting, opened on first use."""
    import aiohttp

    by_verify = _sessions.setdefault(asyncio.get_running_loop(), {})
    shared = by_verify.get(verify)
    if shared is None or shared[0].closed:
        connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=KEEPALIVE_SECONDS, ssl=ssl_context(verify)
        )
        # AtScale's API sets no cookies worth keeping.
        session = aiohttp.ClientSession(
            connector=connector, headers=HEADERS, cookie_jar=aiohttp.DummyCookieJar()
        )
        # aiohttp quietly sends an idempotent request again when a kept-alive connection drops; the flow
        # retries within its budget and must see every attempt it makes.
        session._retry_connection = False
        # A session closed under its hooks is replaced for them: they are still counted in.
        shared = by_verify[verify] = [session, shared[1] if shared is not None else 0]
    return shared[0]  # type: ignore[no-any-return]


def hold_session(verify: bool | str, users: int) -> aiohttp.ClientSession | None:
    """
    Count a hook in (``users=1``) or out (``users=-1``) of this loop's session for a TLS setting; returns the
    session once its last hook is out, for the caller to close.
    """
    shared = _sessions.get(asyncio.get_running_loop(), {}).get(verify)
    if shared is None:
        return None
    shared[1] += users
    if shared[1] > 0:
        return None
    del _sessions[asyncio.get_running_loop()][verify]
    return shared[0]  # type: ignore[no-any-return]


@lru_cache(maxsize=8)
def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """
    The TLS context of a ``verify`` setting, one per process: building one loads the CA bundle, too much to
    repeat for each of thousands of waiting triggers. certifi's bundle, as requests uses on workers.
    """
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    import certifi

    context = ssl.create_default_context(cafile=certifi.where())
    if not verify:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


@lru_cache(maxsize=8)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    import aiohttp

    return aiohttp.ClientTimeout(total=seconds)


@lru_cache(maxsize=256)
def _url(base_url: str, path: str, params: tuple[tuple[str, str], ...]) -> yarl.URL:
    # Built once: a trigger sends the same poll again and again.
    import yarl

    return yarl.URL(base_url + path).with_query(params)


def _opened(error: BaseException) -> bool:
    """Whether requests had opened a connection before failing (if not, the server surely saw nothing)."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (requests.ConnectTimeout, NewConnectionError, ConnectTimeoutError)):
            return False
        pending.extend(
            [getattr(current, "reason", None), current.__cause__, current.__context__, *current.args]
        )
    return True


# What an error answer says


def answer_error(request: ApiRequest, response: RawResponse, settings: ConnectionSettings) -> AtScaleError:
    """
    The error an answer that is not a success means: for an error status, the ``AtScaleHTTPError`` subclass of
    that status with AtScale's own error text (scrubbed of the connection's secrets) and any ``Retry-After``;
    else an ``AtScaleResponseError`` for a body that is not JSON or says ``"success": false``.
    """
    status_code, body = response.status_code, response.body
    parsed = _parse(body)
    if status_code >= 400:
        return http_error(request, response, parsed, settings)
    if parsed is _NOT_JSON:
        text = _scrub(clip(body.decode("utf-8", errors="replace").strip()), settings.secrets)
        return request.unexpected_answer(status_code, f"with a body that is not JSON: {text!r}")
    message = _scrub(_error_text(parsed) or "no error text", settings.secrets)
    return request.unexpected_answer(status_code, f'with "success": false: {message}')


def http_error(
    request: ApiRequest, response: RawResponse, parsed: Any, settings: ConnectionSettings
) -> AtScaleHTTPError:
    """The error for an HTTP error status, carrying AtScale's own error text and any ``Retry-After``."""
    status_code, body = response.status_code, response.body
    text = _error_text(parsed) if parsed is not _NOT_JSON else clip(body.decode("utf-8", "replace").strip())
    text = _scrub(text, settings.secrets) if text else None
    message = f"AtScale {request.describe()} failed with HTTP {status_code}"
    message += f": {text}" if text else " and no error text"
    if hint := (unauthorized_hint(settings) if status_code == 401 else _STATUS_HINTS.get(status_code)):
        message += f" ({hint})"
    error = http_error_class(status_code)(
        message, method=request.method, path=request.path, status_code=status_code, atscale_message=text
    )
    error.retry_after = parse_retry_after(response.headers.get("retry-after"))
    return error


def unauthorized_hint(settings: ConnectionSettings) -> str:
    """What to check after a 401 that survived authenticating again, naming the connection and auth type."""
    where = f"connection {settings.conn_id!r}, auth_type {settings.auth_type!r}"
    if settings.auth_type == "password":
        return (
            f"{where}: AtScale refused the token it issued for the connection's user; check the user's "
            f"roles, or "
            "whether an administrator signed its session out"
        )
    return (
        f"{where}: AtScale refused its API token. API tokens expire after 90 days; minting a new token for "
        f"the "
        "same user revokes the previous one; an administrator may have signed its session out (Identity "
        "Broker, Sessions). Put a current API token in the connection's password"
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); ``None`` if absent or bad."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - _clock.now())


class _NotJson:
    pass


_NOT_JSON: Any = _NotJson()


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        # An empty body is no JSON, and no text either.
        return None if not body.strip() else _NOT_JSON


def _error_text(parsed: Any) -> str | None:
    """Find the error's text in a JSON error body of any of the shapes seen in the wild."""
    if isinstance(parsed, str):
        return clip(parsed) if parsed.strip() else None
    if isinstance(parsed, list):
        texts = [text for item in parsed if (text := _error_text(item))]
        return clip("; ".join(texts)) if texts else None
    if isinstance(parsed, dict):
        for key in _ERROR_TEXT_KEYS:
            if key in parsed and (text := _error_text(parsed[key])):
                return text
    return None


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
