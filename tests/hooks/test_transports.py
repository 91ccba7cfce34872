"""
The two transports against a real HTTP server on 127.0.0.1 (the emulator): what each makes of no answer, and
how each verifies TLS.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING

import pytest

from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, FaultConfig
from airflow_provider_atscale.errors import AtScaleConfigurationError, AtScaleTransportError
from airflow_provider_atscale.hooks.atscale import AtScaleHook, _ssl_context
from tests.helpers import connection_uri

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def use(monkeypatch: pytest.MonkeyPatch, url: str, token: str, **extra: object) -> AtScaleHook:
    monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(host=url, password=token, **extra))
    return AtScaleHook()


def poll(hook: AtScaleHook, mode: str) -> None:
    """Read a batch through the sync or the async transport."""
    if mode == "sync":
        hook.get_aggregate_batch(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, "b-1")
        return

    async def apoll() -> None:
        try:
            await hook.aget_aggregate_batch(DEFAULT_CATALOG_ID, DEFAULT_MODEL_ID, "b-1")
        finally:
            await hook.aclose()

    asyncio.run(apoll())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refused_connection_is_a_transport_error_that_never_reached_atscale(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, mode: str
) -> None:
    hook = use(monkeypatch, f"http://127.0.0.1:{closed_port()}", "t", max_retries=0)

    with pytest.raises(AtScaleTransportError, match=r"got no answer from http://127\.0\.0\.1") as excinfo:
        poll(hook, mode)

    assert excinfo.value.connection_opened is False


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_connection_dropped_after_the_request_is_a_transport_error_that_may_have_reached_atscale(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer, mode: str
) -> None:
    hook = use(monkeypatch, emulator.url, emulator.token, max_retries=0)
    emulator.faults.configure(FaultConfig(rate_drop_after=1.0))

    with pytest.raises(AtScaleTransportError) as excinfo:
        poll(hook, mode)

    assert excinfo.value.connection_opened is True
    assert excinfo.value.path == "/v1/aggregates/instances", "history failed first, then its fallback"
    assert [r.path for r in emulator.request_log.entries()] == ["/v1/token", "/v1/aggregates/instances"]


def test_an_async_lookup_of_an_unknown_connection_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_ATSCALE_DEFAULT", raising=False)

    with pytest.raises(AtScaleConfigurationError, match="atscale_conn_id 'atscale_default' names no Airflow"):
        asyncio.run(AtScaleHook().aget_aggregate_batch("c", "m", "b"))


def test_a_ca_bundle_named_by_the_connection_is_what_the_async_client_trusts(tmp_path: object) -> None:
    import certifi

    context = _ssl_context(certifi.where())

    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] > 0, "the bundle's certificates are loaded"
    assert _ssl_context(certifi.where()) is context, "built once per setting for the process"
    assert _ssl_context(False).verify_mode is ssl.CERT_NONE


def test_the_async_transport_uses_the_connections_ca_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    hook = use(monkeypatch, "https://atscale.test", "t", verify=certifi.where())

    async def transport_context() -> object:
        try:
            return (await hook._async_transport())._ssl
        finally:
            await hook.aclose()

    assert asyncio.run(transport_context()) is _ssl_context(certifi.where())


def test_hooks_on_one_event_loop_share_one_session_closed_by_the_last(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer
) -> None:
    first, second = AtScaleHook(), AtScaleHook()

    async def sessions() -> tuple[object, object, bool, bool]:
        one, two = await first.aget_conn(), await second.aget_conn()
        await first.aclose()
        still_open = not one.closed
        await second.aclose()
        return one, two, still_open, one.closed

    one, two, open_after_first, closed_after_last = asyncio.run(sessions())

    assert one is two
    assert open_after_first
    assert closed_after_last


def test_async_hooks_of_one_connection_reuse_its_settings_for_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_atscale.hooks import atscale

    monkeypatch.setenv(
        "AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(host="https://atscale.test", password="t")
    )
    lookups: list[str] = []
    original = AtScaleHook.aget_connection
    now = [1000.0]

    async def counting(conn_id: str) -> object:
        lookups.append(conn_id)
        return await original(conn_id)

    monkeypatch.setattr(AtScaleHook, "aget_connection", staticmethod(counting))
    monkeypatch.setattr(atscale.time, "monotonic", lambda: now[0])

    async def settings_of_a_new_hook() -> object:
        return await AtScaleHook().aget_settings()

    first = asyncio.run(settings_of_a_new_hook())
    second = asyncio.run(settings_of_a_new_hook())
    now[0] += atscale.ASYNC_SETTINGS_REUSE_SECONDS
    third = asyncio.run(settings_of_a_new_hook())

    assert lookups == ["atscale_default", "atscale_default"], "one lookup serves the hooks of the next 30 s"
    assert first is second
    assert third is not first
