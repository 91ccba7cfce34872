"""
Fixtures of the connection form tests: the emulator, Airflow's api-server and Debian's Chromium.

Playwright is imported inside the fixtures only, so this file loads where Playwright is not installed and
the tests can skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.ui.helpers import (
    BROWSER_LAUNCH_TIMEOUT_MS,
    BROWSER_TIMEOUT_MS,
    CHROMIUM_ARGS,
    DB_MIGRATE_TIMEOUT_SECONDS,
    HOST,
    VIEWPORT_HEIGHT,
    VIEWPORT_WIDTH,
    AirflowServer,
    Emulator,
    airflow_env,
    chromium_executable,
    free_port,
    open_add_connection_form,
    process_group,
    wait_for_emulator,
    wait_for_health,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page


@pytest.fixture(scope="module", autouse=True)
def _teardown_on_sigterm() -> Iterator[None]:
    """
    Turn a SIGTERM to pytest (a CI job's timeout, say) into a KeyboardInterrupt, so that the fixtures
    still stop the servers and the browser instead of leaving them running.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """The AtScale emulator's command line on a free port of 127.0.0.1 (port 0: the system picks it)."""
    log_path = tmp_path_factory.mktemp("emulator") / "emulator.log"
    command = [sys.executable, "-m", "airflow_provider_atscale.emulator", "--host", HOST, "--port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with process_group(command, env, log_path) as process:
        yield wait_for_emulator(process, log_path)


@pytest.fixture(scope="module")
def airflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServer]:
    """``airflow api-server`` on a free port of 127.0.0.1, with a fresh SQLite metadata database."""
    airflow_home = tmp_path_factory.mktemp("airflow-home")
    (airflow_home / "dags").mkdir()
    port = free_port()
    env = airflow_env(airflow_home, port)
    migrate = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DB_MIGRATE_TIMEOUT_SECONDS,
        check=False,
    )
    if migrate.returncode != 0:
        pytest.fail(f"airflow db migrate failed ({migrate.returncode}):\n{migrate.stdout}\n{migrate.stderr}")
    url = f"http://{HOST}:{port}"
    log_path = airflow_home / "api-server.log"
    command = [
        sys.executable,
        "-m",
        "airflow",
        "api-server",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--apps",
        "core",
    ]
    with process_group(command, env, log_path) as process:
        wait_for_health(process, url, log_path)
        yield AirflowServer(url=url)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright; Playwright's own browsers are never used."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    with sync_playwright() as playwright:
        # A browser started by launch() gets a new, empty profile directory of its own.
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(),
            headless=True,
            args=CHROMIUM_ARGS,
            timeout=BROWSER_LAUNCH_TIMEOUT_MS,
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser_context(chromium: Browser) -> Iterator[BrowserContext]:
    """
    One browser context for the module, with bounded waits: its cache keeps Airflow's UI bundle
    (megabytes of JavaScript) from being fetched again for every test.
    """
    context = chromium.new_context(viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT})
    context.set_default_timeout(BROWSER_TIMEOUT_MS)
    context.set_default_navigation_timeout(BROWSER_TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(browser_context: BrowserContext) -> Iterator[Page]:
    """A new page (tab) for one test."""
    page = browser_context.new_page()
    try:
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def atscale_form(browser_context: BrowserContext, airflow_server: AirflowServer) -> Iterator[Locator]:
    """
    The Add Connection dialog with the AtScale type chosen, opened once for the tests that only look at
    it (opening it costs seconds); each such test opens the section it reads.
    """
    page = browser_context.new_page()
    try:
        yield open_add_connection_form(page, airflow_server, "AtScale")
    finally:
        page.close()
