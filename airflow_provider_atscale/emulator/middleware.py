"""
ASGI middleware around the emulator's routes: it records every API request and injects the faults drawn for
it; control routes (under :data:`CONTROL_PREFIX`) pass through unrecorded and fault-free. It writes every
``Date`` header, rather than uvicorn, so that it follows ``FaultConfig.clock_offset_seconds``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
import urllib.parse
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_atscale.emulator.config import FaultConfig
from airflow_provider_atscale.emulator.errors import FAULT_MESSAGES, error_body_for_path
from airflow_provider_atscale.emulator.faults import Fault, FaultInjector
from airflow_provider_atscale.emulator.requestlog import RecordedRequest, RequestLog

CONTROL_PREFIX = "/_emulator"
# Loop iterations uvicorn may take to notice a connection closed under it.
_CLOSE_ITERATIONS = 100

log = logging.getLogger(__name__)


class EmulatorMiddleware:
    """
    Record API requests, add latency and inject faults around the emulator's routes.

    It must receive uvicorn's own ``send``: dropping a connection goes through it.

    :param app: The routes.
    :param faults: Decides the fault of each request.
    :param request_log: Where requests are recorded.
    """

    def __init__(self, app: ASGIApp, faults: FaultInjector, request_log: RequestLog) -> None:
        self.app = app
        self.faults = faults
        self.request_log = request_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, _dated(send, self.faults.config))
            return
        received_at = time.time()
        body = await _read_body(receive)
        fault, config = self.faults.decide()
        delay = config.latency_seconds + (config.slow_seconds if fault is Fault.SLOW else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)

        status: int | None = None
        messages: list[Message] = []
        if fault in (Fault.UNAVAILABLE, Fault.TOO_MANY_REQUESTS):
            status = int(fault.value)
            messages = _error(scope, status, {"Retry-After": _retry_after(config)} if status == 429 else None)
        elif fault is not Fault.DROP_BEFORE:
            status, messages = await self._run_app(scope, body, receive)
            if fault is Fault.SERVER_ERROR:
                status, messages = 500, _error(scope, 500)
            elif fault is Fault.DROP_AFTER:
                status, messages = None, []
        # Recorded before the answer goes out, so a client that got its answer finds the entry.
        self.request_log.record(_recorded(scope, body, status, fault, received_at))
        if status is None:
            await _close_connection(send)
        dated = _dated(send, config)
        for message in messages:
            await dated(message)

    async def _run_app(self, scope: Scope, body: bytes, receive: Receive) -> tuple[int, list[Message]]:
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        try:
            await self.app(scope, _replay_body(body, receive), capture)
        except Exception:
            log.exception("Unhandled error in %s %s", scope["method"], scope["path"])
            messages = []
        if not messages or messages[-1]["type"] != "http.response.body" or messages[-1].get("more_body"):
            return 500, _error(scope, 500)
        return int(messages[0]["status"]), messages


async def _close_connection(send: Send) -> None:
    # A dropped connection must look like "no answer after the request was sent", with no byte of a
    # response: that is the case in which aiohttp silently sends an idempotent request again on a fresh
    # connection, which the provider turns off and its tests check. ASGI cannot close a connection without
    # answering, so the socket is reached through the request cycle behind uvicorn's bound ``send`` (its
    # httptools and h11 protocols both hold it as ``transport``).
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("The emulator can drop connections only when it receives uvicorn's own send")
    transport.close()
    # uvicorn notices the closed connection a loop iteration or two later; returning before would make it
    # log an unfinished answer and try to send a 500 on the dead connection.
    for _ in range(_CLOSE_ITERATIONS):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)


def _error(scope: Scope, code: int, headers: dict[str, str] | None = None) -> list[Message]:
    body = error_body_for_path(scope["path"], code, FAULT_MESSAGES[code])
    response = JSONResponse(body, status_code=code, headers=headers)
    return [
        {"type": "http.response.start", "status": code, "headers": response.raw_headers},
        {"type": "http.response.body", "body": response.body},
    ]


def _dated(send: Send, config: FaultConfig) -> Send:
    date = (b"date", _http_date(config).encode())

    async def send_dated(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"date"]
            message = {**message, "headers": [*headers, date]}
        await send(message)

    return send_dated


def _http_date(config: FaultConfig, seconds_from_now: float = 0.0) -> str:
    # Wall-clock time, shifted as AtScale's clock is: a client compares these dates with its own clock, not
    # with the emulator's (a test's manual clock may stand still).
    return email.utils.formatdate(time.time() + config.clock_offset_seconds + seconds_from_now, usegmt=True)


def _retry_after(config: FaultConfig) -> str:
    if config.retry_after_http_date:
        return _http_date(config, config.retry_after)
    return str(config.retry_after)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return b"".join(chunks)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _recorded(
    scope: Scope, body: bytes, status: int | None, fault: Fault | None, received_at: float
) -> RecordedRequest:
    query = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    text = body.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return RecordedRequest(
        method=scope["method"],
        path=scope["path"],
        query=dict(query),
        headers=headers,
        body=parsed,
        status=status,
        fault=fault.value if fault is not None else None,
        received_at=received_at,
    )
