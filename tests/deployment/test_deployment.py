"""
The provider in a real Airflow deployment: api-server, scheduler (LocalExecutor), dag-processor and
triggerer as separate processes, the AtScale emulator in its own, everything on 127.0.0.1.

Each scenario drives DAG runs through the REST API and checks what AtScale received (the emulator's request
log: exactly one build POST per build task) and what Airflow recorded (task states, tries, XComs, logs).
The scenarios share one deployment and run one after the other, in this file's order: some of them break
things for everyone (the triggerer, AtScale itself).

Opt-in: ``make test-deployment`` sets ``ATSCALE_DEPLOYMENT_TESTS=1``; without it these tests skip.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import datetime
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import pytest

if os.environ.get("ATSCALE_DEPLOYMENT_TESTS") != "1":
    pytest.skip("deployment tests are opt-in: run `make test-deployment`", allow_module_level=True)
if int(version("apache-airflow").split(".")[0]) < 3:
    pytest.skip("the deployment is Airflow 3's (api-server, dag-processor)", allow_module_level=True)

from airflow_provider_atscale.emulator import default_catalogs
from airflow_provider_atscale.emulator.state import TABLE_SCHEMA
from tests.deployment.clients import is_build_post, model_of
from tests.deployment.dags.deployment_catalog import (
    DEMO_MODEL_ID,
    FAILING_MODEL_ID,
    MANY_DEFERRED,
    OUTAGE,
    ROTATING_CONN_ID,
    TOKEN_ROTATION,
    TRIGGERER_RESTART,
    WORKER_KILL,
    ModelGroup,
)
from tests.deployment.deployment import BAD_TOKEN, HOST, ROTATING_TOKEN
from tests.deployment.processes import command_line, descendants
from tests.deployment.scenarios import XCOM_BATCH_ID, XCOM_BATCH_STATUS, all_done, key, states

if TYPE_CHECKING:
    from tests.deployment.deployment import Deployment
    from tests.deployment.scenarios import Scenario

IN_PROGRESS_STATUSES = {"new", "pending", "inprogress", "running"}
OUTAGE_SECONDS = 60.0
# A failure "at once": one answer of AtScale and no retries; generous for a loaded machine.
AT_ONCE_SECONDS = 30.0
# What a wait logs when AtScale refuses its token and the connection has not changed yet.
REFUSED_LOG = "AtScale refuses the token of the connection"
# The demo model's aggregate tables, as a build of it names them (``schema.table``).
DEMO_MODEL_TABLES = [
    f"{TABLE_SCHEMA}.{aggregate.table_name}"
    for catalog in default_catalogs()
    for model in catalog.models
    if model.id == DEMO_MODEL_ID
    for aggregate in model.aggregates
]


def test_every_process_listens_on_127_0_0_1_only(deployment: Deployment) -> None:
    sockets = deployment.listeners()

    assert [str(sock) for sock in sockets if not sock.loopback] == [], "reachable from other machines"
    # The check sees sockets at all: the api-server's and the emulator's.
    assert {deployment.api_port, deployment.emulator_port} <= {sock.port for sock in sockets}, sockets


# The example DAGs


def test_example_nightly_build_runs_on_its_schedule_and_its_asset_event_triggers_the_dashboard_refresh(
    deployment: Deployment, scenario: Scenario
) -> None:
    dag_id, dashboard = "atscale_nightly_incremental_build", "atscale_refresh_sales_dashboard"
    asset_uri = f"atscale://{HOST}:{deployment.emulator_port}/Sales%20Insights/Internet%20Sales"

    # The dashboard first, so the build's asset event finds it ready. Unpaused, a cron DAG without catch-up
    # runs once at once, for its latest schedule.
    deployment.api.set_paused(dashboard, False)
    deployment.api.set_paused(dag_id, False)
    try:
        run = deployment.wait_until(
            f"a scheduled run of {dag_id}", lambda: deployment.api.dag_runs(dag_id), timeout=120
        )[0]
        run = scenario.wait_for_run(dag_id, run["dag_run_id"])
        refresh = deployment.wait_until(
            f"a run of {dashboard} triggered by the build's asset event",
            lambda: deployment.api.dag_runs(dashboard),
            timeout=120,
        )[0]
        refresh = scenario.wait_for_run(dashboard, refresh["dag_run_id"])
    finally:
        deployment.api.set_paused(dag_id, True)
        deployment.api.set_paused(dashboard, True)
    [ti] = scenario.task_instances(dag_id, run["dag_run_id"])
    [refresh_ti] = scenario.task_instances(dashboard, refresh["dag_run_id"])

    assert run["run_type"] == "scheduled"
    assert (run["state"], ti["state"], ti["try_number"]) == ("success", "success", 1), states([ti])
    [post] = scenario.build_posts()
    assert post["query"]["isFullBuild"] == "false"
    assert post["body"]["gracePeriodOverrides"] == {"factinternetsales": 30, "factresellersales": 7}
    batch_id = scenario.xcom(ti, XCOM_BATCH_ID)
    assert batch_id in {batch["id"] for batch in scenario.batches()}
    assert scenario.xcom(ti, XCOM_BATCH_STATUS) == "done"
    assert scenario.xcom(ti, "return_value")["id"] == batch_id
    # The build's asset event, as the dashboard's run consumed it.
    assert refresh["run_type"] == "asset_triggered"
    assert [r["dag_run_id"] for r in deployment.api.dag_runs(dashboard)] == [refresh["dag_run_id"]]
    assert (refresh["state"], refresh_ti["state"], refresh_ti["try_number"]) == ("success", "success", 1), (
        states([refresh_ti])
    )
    [event] = deployment.api.upstream_asset_events(dashboard, refresh["dag_run_id"])
    assert (event["uri"], event["source_dag_id"], event["source_run_id"]) == (
        asset_uri,
        dag_id,
        run["dag_run_id"],
    )
    assert {name: event["extra"].get(name) for name in ("batch_id", "build_type", "status")} == {
        "batch_id": batch_id,
        "build_type": "incremental",
        "status": "done",
    }
    assert sorted(event["extra"]["aggregate_tables"]) == sorted(DEMO_MODEL_TABLES)
    assert scenario.xcom(refresh_ti, "return_value") == batch_id, "the dashboard read the build's batch"


def test_example_many_models_build_each_model_and_the_sensor_waits_on_the_started_batch(
    deployment: Deployment, scenario: Scenario
) -> None:
    dag_id = "atscale_build_many_models"

    run_id = scenario.trigger(dag_id)
    try:
        run = scenario.wait_for_run(dag_id, run_id)
    finally:
        deployment.api.set_paused(dag_id, True)
    tis = {key(ti): ti for ti in scenario.task_instances(dag_id, run_id)}

    assert run["state"] == "success", states(tis.values())
    assert {name: ti["try_number"] for name, ti in tis.items()} == {
        "build_models[0]": 1,
        "build_models[1]": 1,
        "start_elsewhere": 1,
        "wait_for_elsewhere": 1,
    }
    builds = [tis["build_models[0]"], tis["build_models[1]"], tis["start_elsewhere"]]
    posts = scenario.build_posts()
    assert len(posts) == len(builds), "one build POST per build task, none by the sensor"
    batch_ids = {
        name: scenario.xcom(tis[name], XCOM_BATCH_ID) for name in ("build_models[0]", "build_models[1]")
    }
    assert len(set(batch_ids.values())) == 2, batch_ids
    for name in batch_ids:
        assert scenario.xcom(tis[name], XCOM_BATCH_STATUS) == "done", name
    started_elsewhere = scenario.xcom(tis["start_elsewhere"], XCOM_BATCH_ID)
    assert scenario.xcom(tis["start_elsewhere"], XCOM_BATCH_STATUS) in IN_PROGRESS_STATUSES
    waited_on = scenario.xcom(tis["wait_for_elsewhere"], "return_value")
    assert waited_on["id"] == started_elsewhere
    assert waited_on["status"] == "done"


def test_example_post_etl_rebuild_runs_when_the_etl_updates_its_asset(
    deployment: Deployment, scenario: Scenario
) -> None:
    etl, rebuild = "atscale_sales_etl", "atscale_post_etl_full_rebuild"

    # The consumer first, so the asset event finds it ready; the ETL then runs once for its latest day.
    deployment.api.set_paused(rebuild, False)
    deployment.api.set_paused(etl, False)
    try:
        etl_run = deployment.wait_until(
            f"a scheduled run of {etl}", lambda: deployment.api.dag_runs(etl), timeout=120
        )[0]
        etl_run = scenario.wait_for_run(etl, etl_run["dag_run_id"])
        rebuild_run = deployment.wait_until(
            f"a run of {rebuild} triggered by the asset",
            lambda: deployment.api.dag_runs(rebuild),
            timeout=120,
        )[0]
        rebuild_run = scenario.wait_for_run(rebuild, rebuild_run["dag_run_id"])
    finally:
        deployment.api.set_paused(etl, True)
        deployment.api.set_paused(rebuild, True)
    etl_tis = scenario.task_instances(etl, etl_run["dag_run_id"])
    [ti] = scenario.task_instances(rebuild, rebuild_run["dag_run_id"])

    assert etl_run["state"] == "success", states(etl_tis)
    assert rebuild_run["run_type"] == "asset_triggered"
    assert [run["dag_run_id"] for run in deployment.api.dag_runs(rebuild)] == [rebuild_run["dag_run_id"]]
    assert (rebuild_run["state"], ti["state"], ti["try_number"]) == ("success", "success", 1), states([ti])
    [post] = scenario.build_posts()
    assert post["query"]["isFullBuild"] == "true"
    assert scenario.xcom(ti, XCOM_BATCH_STATUS) == "done"
    assert scenario.xcom(ti, XCOM_BATCH_ID) in {batch["id"] for batch in scenario.batches()}


# Scenarios of the deployment tests' own DAGs


def test_thirty_deferred_builds_at_once_all_succeed(deployment: Deployment, scenario: Scenario) -> None:
    dag_id, group = "atscale_deployment_many_deferred", MANY_DEFERRED
    scenario.models = set(group.model_ids)
    deferred_at_once = 0

    def count_deferred(tis: list[dict[str, Any]]) -> bool:
        nonlocal deferred_at_once
        deferred_at_once = max(deferred_at_once, sum(ti["state"] == "deferred" for ti in tis))
        return len(tis) == group.count and all_done(tis)

    run_id = scenario.trigger(dag_id)
    scenario.wait_for_tasks(dag_id, run_id, "every build finished", count_deferred)
    run = scenario.wait_for_run(dag_id, run_id)
    tis = scenario.task_instances(dag_id, run_id)
    scenario.figures.extra["deferred at once"] = deferred_at_once

    assert run["state"] == "success", states(tis)
    assert [(ti["state"], ti["try_number"]) for ti in tis] == [("success", 1)] * group.count, states(tis)
    assert deferred_at_once == group.count, "every build waited on the triggerer at the same time"
    assert_one_batch_per_task(scenario, tis, group)
    batches = scenario.batches()
    created = sorted(_time(batch["createDate"]) for batch in batches)
    scenario.figures.extra["POSTs spread over s"] = round(created[-1] - created[0], 1)
    assert created[-1] < min(_time(batch["endTime"]) for batch in batches), (
        "every build ran in AtScale at the same time"
    )


def test_triggerer_killed_while_tasks_are_deferred_its_successor_finishes_them(
    deployment: Deployment, scenario: Scenario
) -> None:
    dag_id, group = "atscale_deployment_triggerer_restart", TRIGGERER_RESTART
    scenario.models = set(group.model_ids)
    [old_job] = [job for job in deployment.api.jobs("TriggererJob") if job["state"] == "running"]

    run_id = scenario.trigger(dag_id)
    _wait_until_every_build_waits_on_the_triggerer(scenario, dag_id, run_id, group)
    deployment.kill_triggerer()
    killed_at = time.monotonic()
    new_job_id = deployment.start_triggerer(dead_job_ids={old_job["id"]})
    scenario.figures.extra["new triggerer heartbeating after s"] = round(time.monotonic() - killed_at, 1)
    tis = scenario.wait_for_tasks(dag_id, run_id, "every build finished", all_done)
    scenario.count_tasks(tis)

    assert [(ti["state"], ti["try_number"]) for ti in tis] == [("success", 1)] * group.count, states(tis)
    assert_one_batch_per_task(scenario, tis, group)
    fired = {key(ti): dict(scenario.events_fired(ti)) for ti in tis}
    assert fired == {key(ti): {new_job_id: 1} for ti in tis}, (
        "each trigger fired exactly one event, on the new triggerer"
    )


def test_worker_killed_during_a_sync_wait_the_retry_resumes_the_same_batch(
    deployment: Deployment, scenario: Scenario
) -> None:
    dag_id, group = "atscale_deployment_worker_kill", WORKER_KILL
    scenario.models = set(group.model_ids)

    run_id = scenario.trigger(dag_id)
    [ti] = scenario.wait_for_tasks(
        dag_id,
        run_id,
        "the build started",
        lambda tis: tis[0]["state"] == "running" and scenario.xcom(tis[0], XCOM_BATCH_ID) is not None,
        logs=["scheduler"],
    )
    first_batch_id = scenario.xcom(ti, XCOM_BATCH_ID)
    # A status check after the POST tells that the worker is in its wait.
    deployment.wait_until(
        "the worker asking AtScale about its build",
        lambda: _get_after_post(scenario.requests()),
        timeout=60,
        logs=["scheduler"],
    )
    worker_pid = _task_process(deployment, ti)
    os.kill(worker_pid, signal.SIGKILL)
    [ti] = scenario.wait_for_tasks(
        dag_id, run_id, "the build's retry finished", all_done, retries_expected=True, logs=["scheduler"]
    )
    scenario.count_tasks([ti])

    assert (ti["state"], ti["try_number"]) == ("success", 2), states([ti])
    assert scenario.xcom(ti, XCOM_BATCH_ID) == first_batch_id, "the retry resumed the killed try's batch"
    assert scenario.xcom(ti, XCOM_BATCH_STATUS) == "done"
    assert len(scenario.build_posts()) == 1, "one build POST for both tries"
    assert [batch["id"] for batch in scenario.batches()] == [first_batch_id]
    assert first_batch_id in scenario.task_log(ti, try_number=2)


def test_atscale_unavailable_for_a_minute_while_deferred_every_build_succeeds_on_its_first_try(
    deployment: Deployment, scenario: Scenario
) -> None:
    dag_id, group = "atscale_deployment_outage", OUTAGE
    scenario.models = set(group.model_ids)

    run_id = scenario.trigger(dag_id)
    _wait_until_every_build_waits_on_the_triggerer(scenario, dag_id, run_id, group)
    deployment.emulator.set_faults(rate_503=1.0)
    try:
        unavailable = _hold_outage(scenario, dag_id, run_id, OUTAGE_SECONDS)
    finally:
        deployment.emulator.set_faults()
    outage_ended = time.monotonic()
    scenario.figures.extra["503s"] = unavailable
    tis = scenario.wait_for_tasks(dag_id, run_id, "every build finished", all_done)
    scenario.figures.extra["all done s after the outage"] = round(time.monotonic() - outage_ended, 1)
    scenario.count_tasks(tis)

    assert unavailable > 0, "the triggers met the outage"
    assert [(ti["state"], ti["try_number"]) for ti in tis] == [("success", 1)] * group.count, states(tis)
    assert_one_batch_per_task(scenario, tis, group)


def test_bad_credentials_fail_the_task_at_once_naming_the_connection_and_the_token_is_in_no_log(
    deployment: Deployment, scenario: Scenario
) -> None:
    dag_id = "atscale_deployment_bad_credentials"
    batches_before = len(deployment.emulator.batches())

    run_id = scenario.trigger(dag_id)
    try:
        run = scenario.wait_for_run(dag_id, run_id, failures_expected=True)
    finally:
        deployment.api.set_paused(dag_id, True)
    [ti] = scenario.task_instances(dag_id, run_id)
    log = scenario.task_log(ti)
    requests = scenario.requests()

    assert (run["state"], ti["state"], ti["try_number"]) == ("failed", "failed", 1), states([ti])
    assert ti["duration"] < AT_ONCE_SECONDS, f"failed after {ti['duration']} s"
    assert "atscale_bad_token" in log, "the failure names the connection"
    assert "401" in log
    assert len(deployment.emulator.batches()) == batches_before, "no build started"
    assert scenario.xcom(ti, XCOM_BATCH_ID) is None
    assert {request["status"] for request in requests} == {401}, "AtScale refused every request"
    sent = [r for r in requests if BAD_TOKEN in str(r["headers"].get("authorization", ""))]
    assert sent, "AtScale was sent the bad token: the search below looks for something that was there"
    leaks = [str(path) for path in deployment.log_files() if BAD_TOKEN in path.read_text(errors="replace")]
    assert leaks == [], "the token was written to these logs"


def test_failing_build_fails_its_tasks_with_each_failing_aggregate_and_its_message(
    deployment: Deployment, scenario: Scenario
) -> None:
    dag_id = "atscale_deployment_failing_build"
    scenario.models = {FAILING_MODEL_ID}

    run_id = scenario.trigger(dag_id)
    try:
        run = scenario.wait_for_run(dag_id, run_id, failures_expected=True)
    finally:
        deployment.api.set_paused(dag_id, True)
    tis = scenario.task_instances(dag_id, run_id)

    assert run["state"] == "failed"
    assert [(ti["state"], ti["try_number"]) for ti in tis] == [("failed", 1)] * 2, states(tis)
    assert len(scenario.build_posts()) == len(tis)
    for ti in tis:
        log = scenario.task_log(ti)
        assert scenario.xcom(ti, XCOM_BATCH_STATUS) == "failed", key(ti)
        assert scenario.xcom(ti, XCOM_BATCH_ID) in log, key(ti)
        for table, message in (
            ("as_agg_broken_sales_by_product", "permission denied on schema 'atscale_aggs'"),
            ("as_agg_broken_sales_by_promotion", "invalid identifier 'PROMOTIONKEY'"),
        ):
            assert table in log, (key(ti), table)
            assert message in log, (key(ti), message)


def test_token_rotated_while_builds_are_deferred_every_wait_carries_on_with_the_patched_connection(
    deployment: Deployment, scenario: Scenario
) -> None:
    dag_id, group, conn_id = "atscale_deployment_token_rotation", TOKEN_ROTATION, ROTATING_CONN_ID
    scenario.models = set(group.model_ids)

    # In Airflow's database, as a user keeps it: every process reads it from there when it reads it again.
    deployment.api.create_connection(
        conn_id, "atscale", host=deployment.emulator_url, password=ROTATING_TOKEN
    )
    try:
        run_id = scenario.trigger(dag_id)
        _wait_until_every_build_waits_on_the_triggerer(scenario, dag_id, run_id, group)
        # Each trigger reads the connection at its first poll: once each has polled, each holds the old token.
        deferred_at = time.time()
        scenario.wait_for_tasks(
            dag_id,
            run_id,
            "every trigger polling AtScale",
            lambda tis: _polled_since(scenario, deferred_at) == set(group.model_ids),
        )
        # As a person rotates a token: mint the new one (AtScale revokes the old one at once), then, while the
        # waits are refused the old one, put the new one in the connection.
        rotated_at = time.time()
        new_token = deployment.emulator.rotate_api_token(ROTATING_TOKEN)
        scenario.wait_for_tasks(
            dag_id,
            run_id,
            "AtScale refusing the old token to every wait",
            lambda tis: all(REFUSED_LOG in _trigger_log(scenario, ti) for ti in tis),
        )
        deployment.api.patch_connection(conn_id, "atscale", password=new_token)
        tis = scenario.wait_for_tasks(dag_id, run_id, "every build finished", all_done)
    finally:
        deployment.api.delete_connection(conn_id)
    scenario.count_tasks(tis)
    refused = _refused_since(deployment, rotated_at)
    scenario.figures.extra["401s after the rotation"] = len(refused)

    assert [(ti["state"], ti["try_number"]) for ti in tis] == [("success", 1)] * group.count, states(tis)
    assert_one_batch_per_task(scenario, tis, group)
    assert refused, "AtScale refused the old token mid-wait"
    for ti in tis:
        assert f"Connection '{conn_id}' changed" in _trigger_log(scenario, ti), key(ti)


def test_every_process_still_listens_on_127_0_0_1_only(deployment: Deployment) -> None:
    sockets = deployment.listeners()

    assert [str(sock) for sock in sockets if not sock.loopback] == [], "reachable from other machines"
    assert deployment.api_port in {sock.port for sock in sockets}, sockets


# Helpers


def assert_one_batch_per_task(scenario: Scenario, tis: list[dict[str, Any]], group: ModelGroup) -> None:
    """
    Exactly one build POST and one batch per task, each task's XComs naming its own batch, finished.

    :param scenario: the scenario.
    :param tis: its task instances, mapped over ``group``'s models in order.
    :param group: the models built.
    """
    posts = Counter(model_of(post) for post in scenario.build_posts())
    assert posts == Counter(group.model_ids), "exactly one build POST per task"
    batches = {batch["modelId"]: batch for batch in scenario.batches()}
    assert len(scenario.batches()) == group.count, "exactly one batch per task"
    for ti in tis:
        batch = batches[group.model_ids[ti["map_index"]]]
        assert scenario.xcom(ti, XCOM_BATCH_ID) == batch["id"], key(ti)
        assert scenario.xcom(ti, XCOM_BATCH_STATUS) == "done", key(ti)


def _get_after_post(requests: list[dict[str, Any]]) -> bool:
    """Whether AtScale was asked a GET after a build POST."""
    posts = [index for index, request in enumerate(requests) if is_build_post(request)]
    return bool(posts) and any(request["method"] == "GET" for request in requests[posts[0] + 1 :])


def _time(value: str) -> float:
    """Seconds since the epoch of one of AtScale's ISO-8601 times."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _trigger_log(scenario: Scenario, ti: dict[str, Any]) -> str:
    return "".join(path.read_text(errors="replace") for path in scenario.trigger_log_files(ti))


def _refused_since(deployment: Deployment, moment: float) -> list[dict[str, Any]]:
    """The requests AtScale answered 401 since ``moment`` (epoch s)."""
    return [r for r in deployment.emulator.requests() if r["status"] == 401 and r["received_at"] >= moment]


def _polled_since(scenario: Scenario, moment: float) -> set[str]:
    """The models of the scenario whose batch AtScale answered a GET about since ``moment`` (epoch s)."""
    return {
        str(model_of(request))
        for request in scenario.requests()
        if request["method"] == "GET" and request["status"] == 200 and request["received_at"] >= moment
    }


def _wait_until_every_build_waits_on_the_triggerer(
    scenario: Scenario, dag_id: str, run_id: str, group: ModelGroup
) -> None:
    """Wait until every build task of a run is deferred and a triggerer has started running its trigger (its
    trigger log says so)."""

    def trigger_started(ti: dict[str, Any]) -> bool:
        return any("starting" in path.read_text(errors="replace") for path in scenario.trigger_log_files(ti))

    scenario.wait_for_tasks(
        dag_id,
        run_id,
        "every build deferred and its trigger running on the triggerer",
        lambda tis: (
            len(tis) == group.count and all(ti["state"] == "deferred" and trigger_started(ti) for ti in tis)
        ),
    )


def _task_process(deployment: Deployment, ti: dict[str, Any]) -> int:
    """
    The pid of the process running a task's try: the task runner the scheduler's executor started, which
    names itself after the task instance. Only a descendant of the scheduler is ever picked.
    """
    title = f"airflow worker -- {ti['id']}"
    scheduler = deployment.process("scheduler")
    members = {pid: command_line(pid) for pid in descendants(scheduler)}
    matches = [pid for pid, command in members.items() if title in command]
    assert len(matches) == 1, f"one process titled {title!r} under the scheduler: {members}"
    return matches[0]


def _hold_outage(scenario: Scenario, dag_id: str, run_id: str, seconds: float) -> int:
    """
    Keep AtScale unavailable for ``seconds``: the outage is the scenario, not a wait for readiness. A task
    that fails or is up for retry meanwhile ends the scenario at once. Return how many requests AtScale
    answered with 503.
    """
    end = time.monotonic() + seconds

    def over() -> bool:
        scenario.fail_on_unexpected(scenario.deployment.api.task_instances(dag_id, run_id), False)
        return time.monotonic() >= end

    scenario.deployment.wait_until(f"{seconds:.0f} s of outage", over, timeout=seconds + 30, interval=1.0)
    return sum(1 for request in scenario.deployment.emulator.requests() if request["status"] == 503)
