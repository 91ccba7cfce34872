"""
What the scenarios share: driving a DAG run through the REST API, reading back its task instances, XComs and
logs, counting what AtScale received, and each scenario's figures.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.deployment.clients import is_build_post, model_of

if TYPE_CHECKING:
    from tests.deployment.deployment import Deployment

TI_STATES_DONE = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
TI_STATES_FAILED = frozenset({"failed", "upstream_failed"})
RUN_STATES_DONE = frozenset({"success", "failed"})
XCOM_BATCH_ID = "batch_id"
XCOM_BATCH_STATUS = "batch_status"
# The line a triggerer writes to a task's trigger log each time a trigger yields an event.
TRIGGER_FIRED = '"Trigger fired event"'

# Deadlines: generous, for a machine shared with other work; none is waited out when things go right, and
# a task that fails or is retried unexpectedly ends the wait at once.
RUN_SECONDS = 300.0
FAILURE_LOG_LINES = 15


@dataclass
class ScenarioFigures:
    """
    What one scenario cost and did.

    :param name: the scenario.
    :param seconds: its wall time.
    :param posts: build POSTs AtScale received.
    :param gets: GETs AtScale received.
    :param tasks: task instances that ran.
    :param tries: their tries, summed.
    :param outcome: ``passed``, ``failed`` or ``skipped``.
    :param extra: figures of this scenario only (503s answered, tasks deferred at once, ...).
    """

    name: str
    seconds: float = 0.0
    posts: int | None = None
    gets: int | None = None
    tasks: int | None = None
    tries: int | None = None
    outcome: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain data, for JSON."""
        return asdict(self)


def format_figures(figures: Iterable[ScenarioFigures]) -> list[str]:
    """
    A small table of every scenario's figures, and the total wall time.

    :param figures: the scenarios' figures, in the order they ran.
    """
    figures = list(figures)
    header = (
        f"{'scenario':<58} {'outcome':<8} {'wall s':>7} {'POSTs':>5} {'GETs':>5} {'tasks':>5} {'tries':>5}"
    )
    lines = [header, "-" * len(header)]
    for figure in figures:
        cells = [_cell(value) for value in (figure.posts, figure.gets, figure.tasks, figure.tries)]
        line = f"{figure.name[:58]:<58} {figure.outcome:<8} {figure.seconds:>7.1f} " + " ".join(
            f"{cell:>5}" for cell in cells
        )
        if figure.extra:
            line += "  " + ", ".join(f"{key}={value}" for key, value in figure.extra.items())
        lines.append(line)
    lines.append(f"{'total':<58} {'':<8} {sum(figure.seconds for figure in figures):>7.1f}")
    return lines


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


@dataclass
class Scenario:
    """
    One scenario under way: its deployment, and the figures it records.

    :param deployment: the running deployment.
    :param name: the scenario's name.
    :param started: when it started (``time.monotonic()``).
    :param models: the models it builds: requests and batches of other models are not counted as its own;
        ``None`` (the example DAGs) counts every request received while it runs.
    """

    deployment: Deployment
    name: str
    started: float = field(default_factory=time.monotonic)
    models: set[str] | None = None
    figures: ScenarioFigures = field(init=False)

    def __post_init__(self) -> None:
        self.figures = ScenarioFigures(name=self.name)

    # AtScale's side

    def requests(self) -> list[dict[str, Any]]:
        """The API requests AtScale received during this scenario (about its models, when it has some)."""
        requests = self.deployment.emulator.requests()
        if self.models is None:
            return requests
        return [request for request in requests if model_of(request) in self.models]

    def build_posts(self) -> list[dict[str, Any]]:
        """The build POSTs AtScale received during this scenario."""
        return [request for request in self.requests() if is_build_post(request)]

    def batches(self) -> list[dict[str, Any]]:
        """The batches AtScale created for this scenario's models (all scenarios' when it has none)."""
        batches = self.deployment.emulator.batches()
        if self.models is None:
            return batches
        return [batch for batch in batches if batch["modelId"] in self.models]

    # Airflow's side

    def trigger(self, dag_id: str) -> str:
        """
        Unpause a DAG and start a run of it now; return the run id.

        :param dag_id: the DAG.
        """
        self.deployment.api.set_paused(dag_id, False)
        return self.deployment.api.trigger(dag_id)

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = RUN_SECONDS,
        *,
        failures_expected: bool = False,
        retries_expected: bool = False,
    ) -> dict[str, Any]:
        """
        Wait until a DAG run has ended; return it.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param timeout: seconds until the deadline.
        :param failures_expected: a failed task is what the scenario wants, not a reason to stop waiting.
        :param retries_expected: so is a task up for retry.
        """

        def ended() -> dict[str, Any] | None:
            run = self.deployment.api.dag_run(dag_id, run_id)
            if run["state"] in RUN_STATES_DONE:
                return run
            if not failures_expected:
                self.fail_on_unexpected(self.deployment.api.task_instances(dag_id, run_id), retries_expected)
            return None

        return self.deployment.wait_until(
            f"DAG run {dag_id}/{run_id} finished",
            ended,
            timeout=timeout,
            logs=["scheduler", "triggerer"],
        )

    def wait_for_tasks(
        self,
        dag_id: str,
        run_id: str,
        description: str,
        condition: Callable[[list[dict[str, Any]]], bool],
        timeout: float = RUN_SECONDS,
        *,
        retries_expected: bool = False,
        logs: Iterable[str] = ("scheduler", "triggerer"),
    ) -> list[dict[str, Any]]:
        """
        Wait until a run's task instances meet ``condition``; return them. A task that fails, or is up
        for retry when no retry is expected, ends the wait at once.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param description: what is awaited, for the failure message.
        :param condition: the check, given every task instance of the run.
        :param timeout: seconds until the deadline.
        :param retries_expected: a task up for retry is no reason to stop waiting.
        :param logs: the processes whose logs would tell why not.
        """

        def met() -> list[dict[str, Any]] | None:
            tis = self.deployment.api.task_instances(dag_id, run_id)
            if tis and condition(tis):
                return tis
            self.fail_on_unexpected(tis, retries_expected)
            return None

        return self.deployment.wait_until(
            f"{description} in {dag_id}/{run_id}", met, timeout=timeout, logs=logs
        )

    def fail_on_unexpected(self, tis: list[dict[str, Any]], retries_expected: bool) -> None:
        """
        Fail the scenario at once if a task failed, or is up for retry when no retry is expected, with its
        state and the errors of its log.

        :param tis: the run's task instances.
        :param retries_expected: a task up for retry is expected.
        """
        unexpected = [
            ti
            for ti in tis
            if ti["state"] in TI_STATES_FAILED or (ti["state"] == "up_for_retry" and not retries_expected)
        ]
        if not unexpected:
            return
        ti = unexpected[0]
        self.count_tasks(tis)
        errors = [line for line in self.task_log(ti).splitlines() if '"level": "error"' in line]
        pytest.fail(
            f"{key(ti)} is {ti['state']} after try {ti['try_number']}; states: {states(tis)}\n"
            f"Errors of its log:\n" + "\n".join(errors[-FAILURE_LOG_LINES:]) + "\n"
            f"{self.deployment.logs_to_read(['scheduler', 'triggerer'])}"
        )

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """
        Every task instance of a run, and the figures' task and try counts from them.

        :param dag_id: the DAG.
        :param run_id: the run.
        """
        tis = self.deployment.api.task_instances(dag_id, run_id)
        self.count_tasks(tis)
        return tis

    def count_tasks(self, tis: list[dict[str, Any]]) -> None:
        """
        Add task instances to the figures.

        :param tis: task instances from the REST API.
        """
        self.figures.tasks = (self.figures.tasks or 0) + len(tis)
        self.figures.tries = (self.figures.tries or 0) + sum(ti["try_number"] for ti in tis)

    def xcom(self, ti: dict[str, Any], key: str) -> Any:
        """
        An XCom of a task instance, or ``None``.

        :param ti: the task instance.
        :param key: the key.
        """
        return self.deployment.api.xcom(ti["dag_id"], ti["dag_run_id"], ti["task_id"], key, ti["map_index"])

    def task_log(self, ti: dict[str, Any], try_number: int | None = None) -> str:
        """
        A try's whole log (the worker's and the triggerer's lines), as the REST API serves it.

        :param ti: the task instance.
        :param try_number: the try; its latest by default.
        """
        return self.deployment.api.task_log(
            ti["dag_id"], ti["dag_run_id"], ti["task_id"], try_number or ti["try_number"], ti["map_index"]
        )

    def trigger_log_files(self, ti: dict[str, Any], try_number: int = 1) -> list[Path]:
        """
        The files triggerers wrote a try's trigger lines to: one per triggerer that ran its trigger,
        named ``attempt=<try>.log.trigger.<triggerer job id>.log``.

        :param ti: the task instance.
        :param try_number: the try.
        """
        folder = self.deployment.task_log_dir / f"dag_id={ti['dag_id']}" / f"run_id={ti['dag_run_id']}"
        folder = folder / f"task_id={ti['task_id']}"
        if ti["map_index"] >= 0:
            folder = folder / f"map_index={ti['map_index']}"
        return sorted(folder.glob(f"attempt={try_number}.log.trigger.*.log"))

    def events_fired(self, ti: dict[str, Any]) -> Counter[int]:
        """
        How many events each triggerer (by job id) fired for a task's first try.

        :param ti: the task instance.
        """
        fired: Counter[int] = Counter()
        for path in self.trigger_log_files(ti):
            job_id = int(re.search(r"\.trigger\.(\d+)\.log$", path.name).group(1))  # type: ignore[union-attr]
            fired[job_id] += path.read_text(errors="replace").count(TRIGGER_FIRED)
        return +fired

    # Figures

    def finish(self, outcome: str) -> None:
        """
        Close the figures: wall time and what AtScale received. Counted even when the scenario failed.

        :param outcome: the test's outcome.
        """
        self.figures.seconds = time.monotonic() - self.started
        self.figures.outcome = outcome
        try:
            requests = self.requests()
        except OSError:
            return
        self.figures.posts = sum(1 for request in requests if is_build_post(request))
        self.figures.gets = sum(1 for request in requests if request["method"] == "GET")


def key(ti: dict[str, Any]) -> str:
    """
    A task instance's name in messages: ``task_id``, or ``task_id[map_index]`` for a mapped one.

    :param ti: a task instance from the REST API.
    """
    return ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"


def states(tis: Iterable[dict[str, Any]]) -> dict[str, tuple[str | None, int]]:
    """
    Each task instance's state and try number, by name: what assertion messages show.

    :param tis: task instances from the REST API.
    """
    return {key(ti): (ti["state"], ti["try_number"]) for ti in tis}


def all_done(tis: list[dict[str, Any]]) -> bool:
    """
    Whether every task instance has ended.

    :param tis: task instances from the REST API.
    """
    return all(ti["state"] in TI_STATES_DONE for ti in tis)
