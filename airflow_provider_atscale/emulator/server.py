"""Serve the emulator with uvicorn in a background thread, in-process or as a command-line server."""

from __future__ import annotations

import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import uvicorn

from airflow_provider_atscale.emulator.app import create_app
from airflow_provider_atscale.emulator.clock import Clock, SystemClock
from airflow_provider_atscale.emulator.config import EmulatorConfig
from airflow_provider_atscale.emulator.faults import FaultInjector
from airflow_provider_atscale.emulator.requestlog import RequestLog
from airflow_provider_atscale.emulator.state import EmulatorState
from airflow_provider_atscale.emulator.tokens import TokenIssuer

DEFAULT_HOST = "127.0.0.1"
LISTEN_BACKLOG = 4096
GRACEFUL_SHUTDOWN_SECONDS = 2
# Longer than the idle time of common client pools: a server closing an idle connection just as a poller
# reuses it produces a connection error that would be indistinguishable from an injected drop.
KEEP_ALIVE_SECONDS = 65
# How often a command-line server checks that its uvicorn thread still runs.
CHECK_SECONDS = 1.0


class _ThreadedUvicorn(uvicorn.Server):
    """A uvicorn server that tells another thread when it has started, or failed to."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


class EmulatorServer:
    """
    An emulated AtScale engine API served over HTTP on a local port, by uvicorn in a daemon thread.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Its parts are shared with the
    caller's thread and asked directly: ``state`` (batches, models), ``tokens``, ``faults``, ``request_log``.

    :param config: What to serve; defaults to :class:`EmulatorConfig` ().
    :param host: Interface to bind.
    :param port: Port to bind; 0 picks a free one.
    :param clock: Time source of the batches and tokens; defaults to the system clock.
    :param log_level: uvicorn log level.
    :param log_config: uvicorn logging configuration (a :func:`logging.config.dictConfig` dict); ``None``
        leaves the process's logging alone.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        clock: Clock | None = None,
        log_level: str = "warning",
        log_config: dict[str, Any] | None = None,
    ) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.state = EmulatorState(self.config, self.clock)
        self.faults = FaultInjector(self.config.faults)
        self.tokens = TokenIssuer(self.config, self.clock, self.faults)
        self.request_log = RequestLog()
        self.app = create_app(self.state, self.faults, self.request_log, self.tokens)
        self.host = host
        self.port = port
        self._logging: dict[str, Any] = {"log_level": log_level, "log_config": log_config}
        self._server: _ThreadedUvicorn | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8711``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def token(self) -> str:
        """The first accepted API token: the demo token unless configured otherwise, or rotated."""
        accepted = self.tokens.api_tokens()
        if not accepted:
            raise RuntimeError("The emulator accepts no API tokens; add one to EmulatorConfig.api_tokens")
        return accepted[0]

    def rotate_api_token(self, old: str | None = None) -> str:
        """
        Mint a new API token in place of ``old``, as AtScale does when its user creates one: the old token
        and the access tokens exchanged for it at ``POST /v1/token`` are refused from now on.

        :param old: The API token to replace; defaults to the first accepted one (:attr:`token`).
        :raises KeyError: When ``old`` is not an accepted API token.
        """
        return self.tokens.rotate_api_token(old)

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        """
        Bind the port, start uvicorn in a daemon thread and wait until it serves.

        :param timeout: Seconds to wait for uvicorn to start.
        :raises RuntimeError: When the server is already running or does not start in time.
        """
        if self._thread is not None:
            raise RuntimeError("The emulator is already running")
        # Bound here rather than by uvicorn, so the real port is known before the thread starts.
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((self.host, self.port), family=family, backlog=LISTEN_BACKLOG)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            backlog=LISTEN_BACKLOG,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            access_log=False,
            # The application writes its own Date header, on AtScale's clock.
            date_header=False,
            **self._logging,
        )
        server = _ThreadedUvicorn(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"atscale-emulator-{self.port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        if not server.ready.wait(timeout) or not server.started:
            self.stop(timeout)
            sock.close()
            raise RuntimeError(f"The emulator did not start on {self.url} within {timeout} seconds")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """
        Ask uvicorn to shut down and wait for its thread.

        :param timeout: Seconds to wait for the thread to end, then again after forcing it.
        :raises RuntimeError: When the thread is still running after that.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server, self._thread = None, None
        if thread.is_alive():
            raise RuntimeError(f"The emulator on {self.url} did not stop within {timeout} seconds")

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """
        Return to the configured start: no batches, requests or issued tokens, the configured API tokens,
        models, faults and batch history settings. The clock is left alone.
        """
        self.state.reset()
        self.tokens.reset()
        self.faults.configure(self.config.faults)
        self.request_log.clear()


@contextmanager
def run_emulator(
    config: EmulatorConfig | None = None,
    *,
    port: int = 0,
    host: str = DEFAULT_HOST,
    clock: Clock | None = None,
) -> Iterator[EmulatorServer]:
    """
    Serve an emulator for the duration of a ``with`` block.

    :param config: What to serve; defaults to :class:`EmulatorConfig` ().
    :param port: Port to bind; 0 picks a free one.
    :param host: Interface to bind.
    :param clock: Time source, e.g. a :class:`~airflow_provider_atscale.emulator.clock.ManualClock`.
    """
    with EmulatorServer(config, host=host, port=port, clock=clock) as server:
        yield server


def install_stop_handlers() -> threading.Event:
    """
    Make SIGINT and SIGTERM set the returned event instead of ending the process. Call it in the main thread
    before a command-line server starts or prints anything: whoever runs it may signal as soon as it reads
    the first line, and a signal that arrives before the handlers are in place kills the process.
    """
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def serve_until_signalled(server: EmulatorServer, stop: threading.Event) -> int:
    """
    Keep a started server running until SIGINT or SIGTERM, then stop it: the body of a command-line server.

    :param server: A started server.
    :param stop: The event of :func:`install_stop_handlers`, called before the server started.
    :return: 0 after a signal, 1 if the server stopped by itself.
    """
    try:
        while not stop.wait(CHECK_SECONDS):
            if not server.running:
                print("The emulator stopped unexpectedly", file=sys.stderr, flush=True)
                return 1
    finally:
        server.stop()
    return 0
