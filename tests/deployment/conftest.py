"""
Fixtures of the deployment tests: one deployment for the whole session, shared by every scenario, and the
figures each scenario records (wall time, requests, tasks, tries), printed at the end of the run.

Opt-in (``make test-deployment`` sets ``ATSCALE_DEPLOYMENT_TESTS=1``): the test module skips otherwise, so
nothing here starts. Nothing heavy is imported at module level, so collecting this folder costs nothing.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pluggy
import pytest

from tests.deployment.scenarios import Scenario, ScenarioFigures, format_figures

if TYPE_CHECKING:
    from tests.deployment.deployment import Deployment

_FIGURES = pytest.StashKey[list[ScenarioFigures]]()
_DEPLOYMENT = pytest.StashKey["Deployment"]()


@pytest.fixture(scope="session")
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """
    The deployment, started once for the session and stopped at its end, pass or fail.

    A SIGTERM to pytest (a CI job's timeout, say) becomes a KeyboardInterrupt, so this teardown still stops
    every process instead of leaving them running.
    """
    from tests.deployment.deployment import Deployment

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    deployment = Deployment(root=tmp_path_factory.mktemp("deployment", numbered=False))
    request.config.stash[_DEPLOYMENT] = deployment
    started = time.monotonic()
    try:
        deployment.start()
        request.config.stash.setdefault(_FIGURES, []).append(
            ScenarioFigures(name="start-up", seconds=time.monotonic() - started, outcome="passed")
        )
        yield deployment
    finally:
        deployment.stop()
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def scenario(request: pytest.FixtureRequest, deployment: Deployment) -> Iterator[Scenario]:
    """
    One scenario's figures: its wall time, and the POSTs and GETs AtScale received while it ran, counted
    from the emulator's request log (cleared when the scenario starts).
    """
    deployment.emulator.clear_requests()
    scenario = Scenario(deployment=deployment, name=request.node.name.removeprefix("test_"))
    yield scenario
    scenario.finish(outcome=_outcome(request.node))
    request.config.stash.setdefault(_FIGURES, []).append(scenario.figures)


def _outcome(item: pytest.Item) -> str:
    report = getattr(item, "deployment_call_report", None)
    return "not run" if report is None else str(report.outcome)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """Keep the call's report for the scenario's figures; on a failure, point to every log to read."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.deployment_call_report = report  # type: ignore[attr-defined]
    deployment = item.config.stash.get(_DEPLOYMENT, None)
    if report.failed and deployment is not None:
        report.sections.append(("deployment logs", deployment.log_index()))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print each scenario's figures, and save them next to the deployment's logs."""
    figures = config.stash.get(_FIGURES, [])
    if not figures:
        return
    terminalreporter.section("deployment scenarios")
    for line in format_figures(figures):
        terminalreporter.write_line(line)
    deployment = config.stash.get(_DEPLOYMENT, None)
    if deployment is not None:
        path = deployment.root / "figures.json"
        path.write_text(json.dumps([figure.as_dict() for figure in figures], indent=2))
        terminalreporter.write_line(f"Figures: {path}")
        terminalreporter.write_line(deployment.log_index())
