"""The two transports against a real HTTP server on 127.0.0.1 (the emulator): what each makes of no answer,
how each verifies TLS, the triggerer's shared aiohttp session, and the connection read anew."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import certifi
import pytest

from airflow_provider_atscale._inputs import BatchRef
from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, FaultConfig
from airflow_provider_atscale.errors import AtScaleConfigurationError, AtScaleTransportError
from airflow_provider_atscale.hooks import _http
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.helpers import use_connection as use

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_a_loop(hook: AtScaleHook, call: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async call of the hook on an event loop of its own, as a triggerer would, closing after."""

    async def run() -> Any:
        try:
            return await call()
        finally:
            await hook.aclose()

    return asyncio.run(run())


def poll(hook: AtScaleHook, mode: str, batch_id: str = "b-1") -> Any:
    """Read a batch through the sync or the async transport."""
    if mode == "sync":
        return hook.get_aggregate_batch(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, batch_id)
    return on_a_loop(hook, lambda: hook.aget_aggregate_batch(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, batch_id))


MODES = pytest.mark.parametrize("mode", ["sync", "async"])


@MODES
def test_a_refused_connection_is_a_transport_error_that_never_reached_atscale(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, mode: str
) -> None:
    use(monkeypatch, f"http://127.0.0.1:{closed_port()}", "t", max_retries=0)

    with pytest.raises(AtScaleTransportError, match=r"got no answer from http://127\.0\.0\.1") as excinfo:
        poll(AtScaleHook(), mode)

    assert excinfo.value.connection_opened is False


@MODES
def test_a_connection_dropped_after_the_request_is_a_transport_error_that_may_have_reached_atscale(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, mode: str
) -> None:
    use(monkeypatch, emulator.url, emulator.token, max_retries=0)
    emulator.faults.configure(FaultConfig(rate_drop_after=1.0))

    with pytest.raises(AtScaleTransportError) as excinfo:
        poll(AtScaleHook(), mode)

    assert excinfo.value.connection_opened is True
    assert excinfo.value.path == "/v1/aggregates/instances", "history failed first, then its fallback"
    # Each request sent once: neither client may quietly send again what the flow did not ask for.
    assert [r.path for r in emulator.request_log.entries()] == ["/v1/token", "/v1/aggregates/instances"]


def test_an_async_lookup_of_an_unknown_connection_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_ATSCALE_DEFAULT", raising=False)

    with pytest.raises(AtScaleConfigurationError, match="atscale_conn_id 'atscale_default' names no Airflow"):
        poll(AtScaleHook(), "async")


def test_areconnect_says_whether_the_connection_changed_and_the_next_request_uses_it(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer
) -> None:
    batch = emulator.state.create_batch(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, is_full_build=False)
    use(monkeypatch, f"http://127.0.0.1:{closed_port()}", emulator.token)
    hook = AtScaleHook()

    async def moved() -> tuple[bool, bool, bool, str]:
        first, same = await hook.areconnect(), await hook.areconnect()
        use(monkeypatch, emulator.url, emulator.token)
        changed = await hook.areconnect()
        return (
            first,
            same,
            changed,
            (await hook.aread_batch(BatchRef(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, batch.id))).id,
        )

    # The first read has nothing to differ from; the next request goes to the new host.
    assert on_a_loop(hook, moved) == (False, False, True, batch.id)


# TLS and the shared aiohttp session


def test_each_verify_setting_has_one_tls_context_per_process() -> None:
    bundle = _http.ssl_context(certifi.where())

    assert bundle.verify_mode is ssl.CERT_REQUIRED
    assert bundle.cert_store_stats()["x509_ca"] > 0, "the bundle's certificates are loaded"
    assert _http.ssl_context(certifi.where()) is bundle
    assert (_http.ssl_context(True).verify_mode, _http.ssl_context(True).check_hostname) == (
        ssl.CERT_REQUIRED,
        True,
    )
    assert (_http.ssl_context(False).verify_mode, _http.ssl_context(False).check_hostname) == (
        ssl.CERT_NONE,
        False,
    )


def test_the_async_transport_trusts_the_connections_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, verify=certifi.where())
    hook = AtScaleHook()

    async def context() -> Any:
        return (await hook.aget_conn()).connector._ssl  # type: ignore[union-attr]

    assert on_a_loop(hook, context) is _http.ssl_context(certifi.where())


def test_hooks_on_one_event_loop_share_one_session_closed_by_the_last(emulator: EmulatorServer) -> None:
    first, second = AtScaleHook(), AtScaleHook()

    async def sessions() -> tuple[bool, bool, bool]:
        one, two = await first.aget_conn(), await second.aget_conn()
        await first.aclose()
        still_open = not one.closed
        await second.aclose()
        return one is two, still_open, one.closed

    assert asyncio.run(sessions()) == (True, True, True)


def test_a_shared_session_closed_under_a_hook_is_opened_anew(emulator: EmulatorServer) -> None:
    hook = AtScaleHook()

    async def sessions() -> tuple[bool, bool]:
        closed = await hook.aget_conn()
        await closed.close()
        again = await hook.aget_conn()
        return again is closed, again.closed

    assert on_a_loop(hook, sessions) == (False, False)


def test_the_replacement_of_a_closed_shared_session_is_closed_by_the_last_hook_only(
    emulator: EmulatorServer,
) -> None:
    first, second = AtScaleHook(), AtScaleHook()

    async def sessions() -> tuple[bool, bool]:
        await (await first.aget_conn()).close()
        replacement = await second.aget_conn()
        await first.aget_conn()
        await first.aclose()
        open_after_first = not replacement.closed
        await second.aclose()
        return open_after_first, replacement.closed

    assert asyncio.run(sessions()) == (True, True)


def test_counting_a_hook_out_of_a_loop_without_a_session_closes_nothing() -> None:
    async def count_out() -> Any:
        return _http.hold_session(True, -1)

    assert asyncio.run(count_out()) is None
