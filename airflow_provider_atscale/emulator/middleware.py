"""
ASGI middleware that records every API request and injects the configured faults.

It must be the outermost application uvicorn runs: dropping a connection needs uvicorn's own ``send``.

How a connection is dropped (``FaultConfig.drop_mode``):

``"close"``
    The socket is closed before any byte of a response is written. uvicorn gives an application no
    public handle on its transport, so the transport is reached through the bound ``send`` method uvicorn
    passes in (``send.__self__.transport``, present in both its httptools and h11 protocols); when that
    handle is missing the middleware falls back to ``"truncate"``. Clients see ``requests.ConnectionError``
    (``RemoteDisconnected('Remote end closed connection without response')``) and
    ``httpx.RemoteProtocolError('Server disconnected without sending a response.')``.
``"truncate"``
    The status line and headers go out with a ``Content-Length`` larger than the body bytes that follow,
    then the application returns and uvicorn closes the connection. Clients see
    ``requests.exceptions.ChunkedEncodingError`` (``IncompleteRead``) and ``httpx.RemoteProtocolError``
    once they read the body.

Injected errors take the body shape of the service the path belongs to
(:func:`~airflow_provider_atscale.emulator.errors.error_body_for_path`). Every response carries a ``Date``
header written here rather than by uvicorn, so that it follows ``FaultConfig.clock_offset_seconds`` as the
other timestamps do.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import json
import logging
import time
import urllib.parse
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_atscale.emulator.config import FaultConfig
from airflow_provider_atscale.emulator.errors import (
    INTERNAL_ERROR_MESSAGE,
    SERVICE_UNAVAILABLE_MESSAGE,
    TOO_MANY_REQUESTS_MESSAGE,
    error_body_for_path,
)
from airflow_provider_atscale.emulator.faults import Fault, FaultInjector
from airflow_provider_atscale.emulator.requestlog import RecordedRequest, RequestLog

CONTROL_PREFIX = "/_emulator"

log = logging.getLogger(__name__)

# Set inside a request whose connection is dropped on purpose, so uvicorn's complaint about the
# unfinished response (logged later in the same task) is not reported as an error.
_dropping: contextvars.ContextVar[bool] = contextvars.ContextVar("atscale_emulator_dropping", default=False)


class _IgnoreDeliberateDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _dropping.get()


def install_log_filter() -> None:
    """Keep uvicorn from logging deliberately dropped connections as errors; safe to call repeatedly."""
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _IgnoreDeliberateDrops) for existing in uvicorn_logger.filters):
        uvicorn_logger.addFilter(_IgnoreDeliberateDrops())


class _CapturedResponse:
    """Holds what the application sent, so it can be replayed, replaced or cut short."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.status: int | None = None
        self.complete = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        self.messages.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    def content_type(self) -> bytes:
        for message in self.messages:
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-type":
                        return bytes(value)
        return b"application/json"

    async def replay(self, send: Send) -> None:
        for message in self.messages:
            await send(message)


class EmulatorMiddleware:
    """
    Record API requests, add latency and inject faults around the emulator's routes.

    Requests under ``/_emulator`` (control endpoints) pass straight through, unrecorded and fault-free.

    :param app: The routes.
    :param faults: Decides the fault of each request.
    :param request_log: Where requests are recorded.
    """

    def __init__(self, app: ASGIApp, faults: FaultInjector, request_log: RequestLog) -> None:
        self.app = app
        self.faults = faults
        self.request_log = request_log
        install_log_filter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, _dated(send, self.faults.config))
            return
        received_at = time.time()
        body = await _read_body(receive)
        fault, config = self.faults.decide()
        if config.latency_seconds > 0:
            await asyncio.sleep(config.latency_seconds)
        if fault is Fault.SLOW:
            await asyncio.sleep(config.slow_seconds)
        path = scope["path"]
        # uvicorn's own send stays within reach for dropping the connection.
        dated_send = _dated(send, config)

        def record(status: int | None) -> None:
            # Recorded before the answer goes out, so a client that got its answer finds the entry.
            self.request_log.record(_recorded(scope, body, status, fault, received_at))

        if fault is Fault.DROP_BEFORE:
            record(None)
            error = _json_bytes(error_body_for_path(path, 503, SERVICE_UNAVAILABLE_MESSAGE))
            await _drop_connection(send, config, 503, error)
        elif fault is Fault.UNAVAILABLE:
            record(503)
            await _error(path, 503, SERVICE_UNAVAILABLE_MESSAGE)(scope, receive, dated_send)
        elif fault is Fault.TOO_MANY_REQUESTS:
            record(429)
            headers = {"Retry-After": _retry_after(config)}
            await _error(path, 429, TOO_MANY_REQUESTS_MESSAGE, headers)(scope, receive, dated_send)
        else:
            captured = await self._run_app(scope, body, receive)
            if fault is Fault.SERVER_ERROR:
                record(500)
                await _error(path, 500, INTERNAL_ERROR_MESSAGE)(scope, receive, dated_send)
            elif fault is Fault.DROP_AFTER:
                record(None)
                await _drop_connection(
                    send, config, captured.status or 200, captured.body(), captured.content_type()
                )
            else:
                record(captured.status)
                await captured.replay(dated_send)

    async def _run_app(self, scope: Scope, body: bytes, receive: Receive) -> _CapturedResponse:
        captured = _CapturedResponse()
        try:
            await self.app(scope, _replay_body(body, receive), captured.send)
        except Exception:
            log.exception("Unhandled error in %s %s", scope["method"], scope["path"])
            captured = _CapturedResponse()
        if not captured.complete:
            captured = _CapturedResponse()
            error = _error(scope["path"], 500, INTERNAL_ERROR_MESSAGE)
            await error(scope, _replay_body(b"", receive), captured.send)
        return captured


async def _drop_connection(
    send: Send, config: FaultConfig, status: int, body: bytes, content_type: bytes = b"application/json"
) -> None:
    _dropping.set(True)
    if config.drop_mode == "close" and await _close_transport(send):
        return
    body = body or b"{}"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"date", _http_date(config).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})


async def _close_transport(send: Send) -> bool:
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not callable(getattr(transport, "close", None)):
        return False
    transport.close()
    # uvicorn learns of the closed connection one loop iteration later; returning before that would make
    # it answer a 500 on the dead connection.
    deadline = time.monotonic() + 1.0
    while not getattr(cycle, "disconnected", True) and time.monotonic() < deadline:
        await asyncio.sleep(0)
    return True


def _error(path: str, status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body_for_path(path, status, message), status_code=status, headers=headers)


def _dated(send: Send, config: FaultConfig) -> Send:
    date = (b"date", _http_date(config).encode())

    async def send_dated(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"date"]
            message = {**message, "headers": [*headers, date]}
        await send(message)

    return send_dated


def _http_date(config: FaultConfig, seconds_from_now: float = 0.0) -> str:
    # Wall-clock time, shifted as AtScale's clock is: the client compares dates in headers with its own
    # clock, not with the emulator's (a test's manual clock may stand still).
    return email.utils.formatdate(time.time() + config.clock_offset_seconds + seconds_from_now, usegmt=True)


def _retry_after(config: FaultConfig) -> str:
    if config.retry_after_http_date:
        return _http_date(config, config.retry_after)
    return str(config.retry_after)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _recorded(
    scope: Scope, body: bytes, status: int | None, fault: Fault | None, received_at: float
) -> RecordedRequest:
    query = dict(
        urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    )
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return RecordedRequest(
        method=scope["method"],
        path=scope["path"],
        query=query,
        headers=headers,
        body=_parse_body(body),
        status=status,
        fault=fault.value if fault is not None else None,
        received_at=received_at,
    )


def _parse_body(body: bytes) -> Any:
    if not body:
        return None
    text = body.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
