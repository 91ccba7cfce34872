"""
The flow/driver protocol: how the provider's logic asks for I/O without doing any.

A *flow* is a generator that holds the logic of one operation — a build request with its authentication
and retries, a poll of a batch, a whole wait — and yields *instructions*:

- :class:`Send`: send this request with these headers; the driver sends back the :class:`RawResponse`;
- :data:`POLL`: read the batch being waited on; the driver sends back the ``AggregateBatch``;
- :class:`Sleep`: wait this long; the driver sends back nothing.

When an instruction fails, the driver throws the ``AtScaleError`` into the flow at the ``yield`` that asked
for it, so the flow handles it where it would handle any exception. The flow's return value is the result.

:func:`drive` runs a flow on a worker (blocking I/O, ``time.sleep``); :func:`adrive` on the triggerer's
event loop (async I/O, ``asyncio.sleep``). Flows hold no transport, so the sync and async paths cannot
disagree, and tests drive flows by feeding them answers, without HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from airflow_provider_atscale import _clock
from airflow_provider_atscale.errors import AtScaleError, AtScaleResponseError, AtScaleTransportError

T = TypeVar("T")
Flow = Generator[Any, Any, T]
"""A flow returning ``T``: it yields instructions and is sent their answers."""


_NOTHING: Mapping[str, str] = MappingProxyType({})


class ApiRequest(NamedTuple):
    """
    One request to the AtScale API, without a transport.

    :param method: the HTTP method.
    :param path: the API path below the connection's base URL, ids already escaped.
    :param params: query parameters.
    :param json_body: the JSON body, or ``None`` for none.
    :param form: a form-encoded body (token endpoints); never shown in a repr: it may hold a password.
    :param headers: headers of the request's own (token endpoints); never shown in a repr.
    :param authenticated: send the connection's current bearer token with it.
    :param private: a Design Center API (``/wapi``) rather than the public ``/v1`` one: it wants a
        short-lived JWT, never the raw API token, so in ``token`` mode the token is exchanged for it.
    :param idempotent: repeating it is harmless, so any failure that may pass is retried; ``False`` for
        the POST that starts a build, which is retried only when AtScale surely did not start one.
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
        # Never the form or the headers: they may hold a password or a token.
        return f"ApiRequest(method={self.method!r}, path={self.path!r}, params={dict(self.params)!r})"

    def describe(self) -> str:
        """``METHOD /path`` for messages."""
        return f"{self.method} {self.path}"

    def no_answer(self, base_url: str, error: BaseException, *, opened: bool) -> AtScaleTransportError:
        """
        The error for this request getting no HTTP answer at all.

        :param base_url: where it was sent.
        :param error: what the transport raised; its text names the URL and pool, never a header.
        :param opened: whether a connection had opened (if not, AtScale surely did not see the request).
        """
        text = str(error) or type(error).__name__
        text = text if len(text) <= 300 else text[:300] + "..."
        return AtScaleTransportError(
            f"AtScale {self.describe()} got no answer from {base_url}: {type(error).__name__} ({text})",
            method=self.method,
            path=self.path,
            connection_opened=opened,
        )

    def unexpected_answer(self, status_code: int, what: str) -> AtScaleResponseError:
        """The error for an answer to this request that is not what the API promises, and why."""
        return AtScaleResponseError(
            f"AtScale {self.describe()} answered HTTP {status_code} {what}",
            method=self.method,
            path=self.path,
            status_code=status_code,
        )

    @property
    def key(self) -> tuple[str, str, tuple[tuple[str, str], ...], str | None]:
        """What makes two requests the same, for counting attempts: method, path, query, and grant type."""
        grant = self.form.get("grant_type") if self.form is not None else None
        return self.method, self.path, tuple(sorted(self.params.items())), grant


class RawResponse(NamedTuple):
    """
    An HTTP answer as a transport received it.

    :param status_code: the HTTP status.
    :param headers: the response headers, names lower-cased.
    :param body: the raw body.
    """

    status_code: int
    headers: Mapping[str, str]
    body: bytes


class Send(NamedTuple):
    """
    Instruction: send this request with these headers and answer the :class:`RawResponse` (or throw the
    ``AtScaleTransportError`` of no answer).

    :param request: the request.
    :param headers: its headers, the bearer token included; never shown in a repr.
    """

    request: ApiRequest
    headers: Mapping[str, str]

    def __repr__(self) -> str:
        return f"Send(request={self.request!r})"


class Sleep(NamedTuple):
    """Instruction: wait this many seconds (the driver knows how: sync or async)."""

    seconds: float


class _Poll:
    def __repr__(self) -> str:
        return "POLL"


POLL: Any = _Poll()
"""Instruction of the waiting flow: read the batch now, and answer it (or throw the ``AtScaleError``)."""


def drive(flow: Flow[T], act: Callable[[Any], Any]) -> T:
    """
    Run a flow on a worker.

    :param flow: the flow.
    :param act: carries out every instruction but :class:`Sleep` (which sleeps through the provider's clock)
        and returns its answer; an ``AtScaleError`` it raises is thrown into the flow.
    :return: the flow's result.
    """
    reply: Any = None
    error: AtScaleError | None = None
    while True:
        try:
            instruction = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as stop:
            result: T = stop.value
            return result
        reply, error = None, None
        if isinstance(instruction, Sleep):
            _clock.sleep(instruction.seconds)
            continue
        try:
            reply = act(instruction)
        except AtScaleError as failure:
            error = failure


async def adrive(flow: Flow[T], act: Callable[[Any], Awaitable[Any]]) -> T:
    """Run a flow on an event loop: :func:`drive`, with ``act`` awaited and sleeps yielding to the loop."""
    reply: Any = None
    error: AtScaleError | None = None
    while True:
        try:
            instruction = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as stop:
            result: T = stop.value
            return result
        reply, error = None, None
        if isinstance(instruction, Sleep):
            await _clock.asleep(instruction.seconds)
            continue
        try:
            reply = await act(instruction)
        except AtScaleError as failure:
            error = failure
