"""
The async transport (the triggerer's): aiohttp, with one client session per event loop and TLS setting,
shared by every hook on that loop.

A triggerer runs each waiting task's trigger, each with a hook of its own, on one event loop. One aiohttp
session there serves them all: its connection pool keeps connections to AtScale open between polls and lends
them to whichever trigger polls next, so a thousand waiting builds cost a handful of connections, not a
session and a connection each. A session is closed when the last hook that uses it closes.

Imported only when a hook makes its first async call: DAG files and workers never load aiohttp.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl

from airflow_provider_atscale._flow import ApiRequest, RawResponse, Send

if TYPE_CHECKING:
    import ssl

MAX_CACHED_URLS = 16
"""URLs a hook keeps built: its poll, the pages after it, the token exchange."""
KEEPALIVE_SECONDS = 600.0
"""How long an idle connection is kept: longer than poll intervals, so polls reuse connections (and TLS
sessions) instead of opening new ones."""


@dataclass
class _Shared:
    session: aiohttp.ClientSession
    users: int = 0


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[object, _Shared]] = (
    weakref.WeakKeyDictionary()
)


class AsyncTransport:
    """
    Sends a hook's requests with aiohttp, through the session its event loop shares.

    :param base_url: the connection's base URL.
    :param timeout: seconds for each request.
    :param ssl_context: the TLS context (verification on, off, or a CA bundle), the key of the shared session.
    :param headers: headers of every request.
    """

    def __init__(
        self, base_url: str, timeout: float, ssl_context: ssl.SSLContext, headers: dict[str, str]
    ) -> None:
        self._base_url = base_url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = ssl_context
        self._headers = headers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[Any, yarl.URL] = {}

    async def send(self, send: Send) -> RawResponse:
        """Send one request; no retries here. No answer at all is an ``AtScaleTransportError``."""
        request = send.request
        session = self._session()
        try:
            async with session.request(
                request.method,
                self._url(request),
                json=request.json_body,
                data=request.form,
                headers=send.headers,
                timeout=self._timeout,
            ) as response:
                body = await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            raise request.no_answer(self._base_url, error, opened=False) from error
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise request.no_answer(self._base_url, error, opened=True) from error
        return RawResponse(response.status, response.headers, body)

    async def close(self) -> None:
        """Stop using the shared session; the last user closes it."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        shared = _sessions.get(loop, {}).get(self._ssl)
        if shared is None:
            return
        shared.users -= 1
        if shared.users <= 0:
            del _sessions[loop][self._ssl]
            await shared.session.close()

    def _url(self, request: ApiRequest) -> yarl.URL:
        """The request's URL with its query, built once: a trigger sends the same poll again and again."""
        key = (request.path, tuple(request.params.items()))
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= MAX_CACHED_URLS:
                self._urls.clear()
            url = self._urls[key] = yarl.URL(self._base_url + request.path).extend_query(request.params)
        return url

    def session(self) -> aiohttp.ClientSession:
        """The session this loop shares, opened on first use."""
        return self._session()

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        by_setting = _sessions.setdefault(loop, {})
        shared = by_setting.get(self._ssl)
        if shared is None or shared.session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS, ssl=self._ssl)
            session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                cookie_jar=aiohttp.DummyCookieJar(),  # AtScale's API sets no cookies worth keeping
            )
            # aiohttp quietly sends an idempotent request again when a kept-alive connection drops; the
            # provider's own loop retries, within its budget, and must see every attempt it makes.
            session._retry_connection = False
            shared = by_setting[self._ssl] = _Shared(session)
        if self._loop is not loop:
            self._loop = loop
            shared.users += 1
        return shared.session
