"""Real DAG runs with dag.test() against the emulator: templating, XCom, waiting in both modes, failures,
retries, connection changes, and every example DAG."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale import _clock
from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID as CATALOG_ID
from airflow_provider_atscale.emulator import DEFAULT_MODEL_ID, FAILING_MODEL_ID, SECOND_MODEL_ID, FaultConfig
from tests.compat import (
    AIRFLOW_V_3_0_PLUS,
    AIRFLOW_V_3_3_PLUS,
    DAG,
    DagBag,
    XComModel,
    skip_on,
    xcom_row_value,
)
from tests.conftest import _ROOT
from tests.helpers import use_connection

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer

pytestmark = pytest.mark.usefixtures("airflow_db")

TRIGGER_PATH = "/v1/aggregates-batch/"
EXAMPLE_DAGS = (_ROOT / "example_dags",) if AIRFLOW_V_3_0_PLUS else ()
"""Written for Airflow 3's ``airflow.sdk``, so parsed only there."""
only_on_airflow_3 = pytest.mark.skipif(
    not AIRFLOW_V_3_0_PLUS, reason="the example DAGs are written with airflow.sdk"
)
only_on_airflow_3_3 = pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS, reason="Airflow 3.3 and later: only its task state store records a finished build"
)
no_unregistered_outlets = skip_on(
    "3.0", reason="its dag.test() refuses an outlet asset no DAG processor registered"
)


def load_dag(dag_id: str) -> DAG:
    """A DAG from the example DAGs or the test suite's DAGs, parsed as Airflow parses it."""
    for folder in (*EXAMPLE_DAGS, _ROOT / "tests" / "dags"):
        bag = DagBag(dag_folder=str(folder))
        assert not bag.import_errors, bag.import_errors
        if dag_id in bag.dags:
            return bag.dags[dag_id]
    raise LookupError(dag_id)


def run(dag_id: str) -> Any:
    return load_dag(dag_id).test()


def xcoms(dag_id: str, run_id: str) -> dict[tuple[str, int, str], Any]:
    """Every XCom of a DAG run, by (task id, map index, key)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id).all()
        return {(row.task_id, row.map_index, row.key): xcom_row_value(row) for row in rows}


def build_xcoms(dag_id: str, run_id: str, task_id: str = "build") -> dict[str, Any]:
    """The XComs of one unmapped task of a DAG run, by key."""
    return {key: value for (task, _, key), value in xcoms(dag_id, run_id).items() if task == task_id}


def task_states(dag_id: str, run_id: str) -> dict[tuple[str, int], tuple[str | None, int]]:
    """Each task instance's final state and try number."""
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TI).filter(TI.dag_id == dag_id, TI.run_id == run_id).all()
        return {(ti.task_id, ti.map_index): (ti.state, ti.try_number) for ti in rows}


def build_posts(emulator: EmulatorServer) -> list[Any]:
    return [
        r for r in emulator.request_log.entries() if r.method == "POST" and r.path.startswith(TRIGGER_PATH)
    ]


def asset_events(uri_prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """The URI and ``extra`` of every asset (Airflow 2: dataset) event of an asset whose URI starts so."""
    from airflow.utils.session import create_session

    if AIRFLOW_V_3_0_PLUS:
        from airflow.models.asset import AssetEvent as Event
        from airflow.models.asset import AssetModel as Model

        asset_id = Event.asset_id
    else:
        from airflow.models.dataset import DatasetEvent as Event
        from airflow.models.dataset import DatasetModel as Model

        asset_id = Event.dataset_id
    with create_session() as session:
        rows = session.query(Model.uri, Event.extra).join(Model, Model.id == asset_id)
        return [(uri, extra) for uri, extra in rows if uri.startswith(uri_prefix)]


def asset_links(name: str) -> set[tuple[str, str, str]]:
    """(DAG that updated the asset named so, the asset, a DAG scheduled on it), as Airflow recorded them."""
    from airflow.models.asset import AssetEvent, AssetModel, DagScheduleAssetReference
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent.source_dag_id, AssetModel.name, DagScheduleAssetReference.dag_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .join(DagScheduleAssetReference, DagScheduleAssetReference.asset_id == AssetModel.id)
        )
        return {(source, asset, target) for source, asset, target in rows if asset == name}


def on_sleep(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Call ``action(n)`` before the provider's n-th wait (sync or async), from the first on."""
    sleep, asleep, waits = _clock.sleep, _clock.asleep, []

    def act_then_sleep(seconds: float) -> None:
        waits.append(seconds)
        action(len(waits))
        sleep(seconds)

    async def act_then_asleep(seconds: float) -> None:
        waits.append(seconds)
        action(len(waits))
        await asleep(seconds)

    monkeypatch.setattr(_clock, "sleep", act_then_sleep)
    monkeypatch.setattr(_clock, "asleep", act_then_asleep)


@pytest.mark.parametrize(
    ("dag_id", "variable", "overrides"),
    [
        ("atscale_test_overrides_dict", None, {"factinternetsales": 30, "factresellersales": 0}),
        ("atscale_test_overrides_json", '{"factinternetsales": 45}', {"factinternetsales": 45}),
        ("atscale_test_overrides_native", None, {"factinternetsales": 15}),
    ],
    ids=["a dict of templated values", "one template rendering a JSON object", "a native dict"],
)
def test_each_templated_form_of_the_overrides_is_posted_as_integers(
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    dag_id: str,
    variable: str | None,
    overrides: Any,
) -> None:
    if variable is not None:
        monkeypatch.setenv("AIRFLOW_VAR_ATSCALE_GRACE", variable)

    assert run(dag_id).state == "success"

    (post,) = build_posts(emulator)
    assert (post.body, post.query) == ({"gracePeriodOverrides": overrides}, {"isFullBuild": "false"})


def test_a_bad_rendered_value_fails_without_any_request(emulator: EmulatorServer) -> None:
    assert run("atscale_test_bad_overrides").state == "failed"

    assert emulator.request_log.entries() == []


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_a_full_build_is_waited_on_to_the_end(emulator: EmulatorServer, mode: str) -> None:
    dag_id = f"atscale_test_full_build_{mode}"

    dag_run = run(dag_id)

    assert dag_run.state == "success"
    (batch,) = emulator.state.batches()
    values = build_xcoms(dag_id, dag_run.run_id)
    assert (values["batch_id"], values["batch_status"]) == (batch.id, "done")
    assert (values["return_value"]["id"], values["return_value"]["status"]) == (batch.id, "done")
    assert len(build_posts(emulator)) == 1


@skip_on("3.0", reason="its dag.test() shows no failed task's exception, in output or logs")
def test_a_failing_model_fails_the_task_with_the_aggregates_messages(
    emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    dag_run = run("atscale_test_failing_model")

    assert dag_run.state == "failed"
    (batch,) = emulator.state.batches()
    logged = capsys.readouterr().out
    assert f"AtScale batch {batch.id} of model {FAILING_MODEL_ID} ended in status 'failed'" in logged
    assert "Failing aggregates:" in logged
    assert (
        "atscale_aggs.as_agg_broken_sales_by_product (invalid): Table 'as_agg_broken_sales_by_product' "
        "could not be created: permission denied on schema 'atscale_aggs'"
    ) in logged
    assert build_xcoms("atscale_test_failing_model", dag_run.run_id)["batch_status"] == "failed"
    assert asset_events(f"atscale://{emulator.url.split('://')[1]}/") == [], "a failed build emits none"


# Retries


class WorkerDied(Exception):
    """Stands for a worker lost while the task waited."""


def die_on_first_sleep(monkeypatch: pytest.MonkeyPatch, advance: float = 0.0) -> None:
    """The first wait of the first try: let ``advance`` seconds pass, then lose the worker."""
    real_asleep, calls = _clock.asleep, []

    async def sleep_then_die_once(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 1:
            await real_asleep(advance)
            raise WorkerDied("the worker went away mid-wait")
        await real_asleep(seconds)

    monkeypatch.setattr(_clock, "asleep", sleep_then_die_once)


@pytest.mark.parametrize(
    "advance",
    [0, pytest.param(300, marks=only_on_airflow_3_3)],
    ids=["while it runs", "after it finished good"],
)
def test_a_retry_after_the_worker_died_resumes_the_same_batch(
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    advance: float,
) -> None:
    # Lost while waiting, or after the build finished (110 s) but before the task heard of it.
    die_on_first_sleep(monkeypatch, advance)

    dag_run = run("atscale_test_retry")

    assert dag_run.state == "success"
    assert task_states("atscale_test_retry", dag_run.run_id)[("build", -1)] == ("success", 2)
    (batch,) = emulator.state.batches()
    values = build_xcoms("atscale_test_retry", dag_run.run_id)
    assert (values["batch_id"], values["batch_status"]) == (batch.id, "done")
    assert len(build_posts(emulator)) == 1
    finished = f"AtScale batch {batch.id}, which an earlier try of this task started, finished done"
    assert (finished in capsys.readouterr().out) is (advance > 0)


@pytest.mark.parametrize("skew", [-3.0, 3.0], ids=["atscale-3s-behind", "atscale-3s-ahead"])
def test_a_retry_after_the_first_try_timed_out_resumes_the_same_batch(
    emulator: EmulatorServer, skew: float
) -> None:
    emulator.faults.configure(FaultConfig(clock_offset_seconds=skew))

    dag_run = run("atscale_test_timeout_retry")

    assert dag_run.state == "success"
    assert task_states("atscale_test_timeout_retry", dag_run.run_id)[("build", -1)] == ("success", 2)
    (batch,) = emulator.state.batches()
    values = build_xcoms("atscale_test_timeout_retry", dag_run.run_id)
    assert (values["batch_id"], values["batch_status"]) == (batch.id, "done")
    assert len(build_posts(emulator)) == 1


def test_a_first_try_beside_a_running_build_of_the_model_posts_its_own_with_its_overrides(
    emulator: EmulatorServer,
) -> None:
    dag_run = run("atscale_test_beside_another_build")

    assert dag_run.state == "success"
    bodies = [post.body for post in build_posts(emulator)]
    assert bodies == [{"gracePeriodOverrides": {}}, {"gracePeriodOverrides": {"factinternetsales": 30}}]
    other, ours = emulator.state.batches()
    assert dict(ours.grace_period_overrides) == {"factinternetsales": 30}
    values = xcoms("atscale_test_beside_another_build", dag_run.run_id)
    assert (values[("other", -1, "batch_id")], values[("ours", -1, "batch_id")]) == (other.id, ours.id)
    assert values[("ours", -1, "batch_status")] == "done"


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_a_60s_outage_during_the_wait_ends_in_success_on_the_first_try(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    dag_id = f"atscale_test_full_build_{mode}"
    window: list[float] = []

    def follow_the_outage(waits: int) -> None:
        # AtScale answers 503 to everything from the provider's first wait on, for 60 s of its clock.
        if not window:
            window.append(_clock.now())
            emulator.faults.configure(FaultConfig(rate_503=1.0))
        elif len(window) == 1 and _clock.now() >= window[0] + 60:
            window.append(_clock.now())
            emulator.faults.configure(FaultConfig())

    on_sleep(monkeypatch, follow_the_outage)

    dag_run = run(dag_id)

    assert dag_run.state == "success"
    assert task_states(dag_id, dag_run.run_id)[("build", -1)] == ("success", 1)
    began, ended = window
    assert ended - began >= 60, "the outage happened and lasted a minute"
    assert emulator.request_log.count(status=503) > 0
    assert len(build_posts(emulator)) == 1
    assert build_xcoms(dag_id, dag_run.run_id)["batch_status"] == "done"


# The example DAGs


@only_on_airflow_3
def test_every_example_dag_imports_cleanly() -> None:
    bag = DagBag(dag_folder=str(_ROOT / "example_dags"))

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "atscale_nightly_incremental_build",
        "atscale_refresh_sales_dashboard",
        "atscale_sales_etl",
        "atscale_post_etl_full_rebuild",
        "atscale_build_many_models",
    }


@only_on_airflow_3
@no_unregistered_outlets
def test_nightly_incremental_build_updates_the_model_asset_the_dashboard_dag_is_scheduled_on(
    emulator: EmulatorServer,
) -> None:
    dag = load_dag("atscale_nightly_incremental_build")

    dag_run = dag.test()

    assert dag_run.state == "success"
    assert dag.catchup is False
    (post,) = build_posts(emulator)
    assert post.body == {"gracePeriodOverrides": {"factinternetsales": 30, "factresellersales": 7}}
    assert build_xcoms(dag.dag_id, dag_run.run_id, "incremental_build")["batch_status"] == "done"
    uri = f"atscale://{emulator.url.split('://')[1]}/Sales%20Insights/Internet%20Sales"
    (batch,) = emulator.state.batches()
    tables = ["by_day", "by_product", "by_customer_geo"]
    assert asset_events(uri) == [
        (
            uri,
            {
                "batch_id": batch.id,
                "build_type": "incremental",
                "status": "done",
                "aggregate_tables": [f"atscale_aggs.as_agg_internet_sales_{table}" for table in tables],
            },
        )
    ]
    assert (dag.dag_id, uri, "atscale_refresh_sales_dashboard") in asset_links(name=uri)


@only_on_airflow_3
@no_unregistered_outlets
def test_post_etl_full_rebuild_follows_the_etl_asset(emulator: EmulatorServer) -> None:
    etl, rebuild = load_dag("atscale_sales_etl"), load_dag("atscale_post_etl_full_rebuild")

    etl_run = etl.test()
    rebuild_run = rebuild.test()

    assert etl_run.state == "success"
    assert asset_links(name="sales_warehouse") == {
        ("atscale_sales_etl", "sales_warehouse", "atscale_post_etl_full_rebuild")
    }
    assert rebuild_run.state == "success"
    (post,) = build_posts(emulator)
    assert post.query == {"isFullBuild": "true"}
    assert build_xcoms(rebuild.dag_id, rebuild_run.run_id, "full_rebuild")["batch_status"] == "done"


@only_on_airflow_3
def test_build_many_models_maps_one_build_per_model_and_senses_the_other(emulator: EmulatorServer) -> None:
    dag_run = run("atscale_build_many_models")

    assert dag_run.state == "success"
    states = task_states("atscale_build_many_models", dag_run.run_id)
    tasks = [("build_models", 0), ("build_models", 1), ("wait_for_elsewhere", -1)]
    assert [states[task][0] for task in tasks] == ["success"] * 3
    created = sorted((b.model_id, b.is_full_build) for b in emulator.state.batches())
    assert created == sorted([(DEFAULT_MODEL_ID, False), (SECOND_MODEL_ID, False), (SECOND_MODEL_ID, True)])
    values = xcoms("atscale_build_many_models", dag_run.run_id)
    waited = values[("wait_for_elsewhere", -1, "return_value")]
    assert (waited["id"], waited["status"]) == (values[("start_elsewhere", -1, "batch_id")], "done")


# A connection edited in Airflow reaches the builds that start after it and the waits already running


def test_a_deferred_build_right_after_the_host_moved_posts_and_polls_the_new_host(
    emulator: EmulatorServer, emulator_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_atscale.emulator import EmulatorConfig, run_emulator
    from tests.conftest import EMULATOR_BUILD_SECONDS, EMULATOR_QUEUE_SECONDS

    dag_id = "atscale_test_full_build_deferrable"
    assert run(dag_id).state == "success"
    polls_of_the_old_host = emulator.request_log.count("GET")
    config = EmulatorConfig(
        default_queue_seconds=EMULATOR_QUEUE_SECONDS, default_build_seconds=EMULATOR_BUILD_SECONDS
    )
    with run_emulator(config, clock=emulator_clock) as moved:
        use_connection(monkeypatch, moved.url, moved.token)

        dag_run = run(dag_id)

        assert dag_run.state == "success"
        assert (len(build_posts(emulator)), len(build_posts(moved))) == (1, 1)
        assert emulator.request_log.count("GET") == polls_of_the_old_host
        assert moved.request_log.count("GET", "/wapi/") > 0
        (batch,) = moved.state.batches()
        values = build_xcoms(dag_id, dag_run.run_id)
        assert (values["batch_id"], values["batch_status"]) == (batch.id, "done")


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_a_token_rotated_while_the_build_waits_reaches_the_wait(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    def rotate_after_the_first_poll(waits: int) -> None:
        if waits == 2:
            # A new token revokes the old one and the JWTs exchanged for it; then the connection changes.
            token = emulator.rotate_api_token()
            use_connection(monkeypatch, emulator.url, token)

    on_sleep(monkeypatch, rotate_after_the_first_poll)
    dag_id = f"atscale_test_full_build_{mode}"

    dag_run = run(dag_id)

    assert dag_run.state == "success"
    assert task_states(dag_id, dag_run.run_id)[("build", -1)] == ("success", 1)
    assert len(build_posts(emulator)) == 1
    assert emulator.request_log.count(status=401) > 0, "the old token was refused"
    assert build_xcoms(dag_id, dag_run.run_id)["batch_status"] == "done"
    assert "Connection 'atscale_default' changed" in caplog.text


@no_unregistered_outlets
def test_a_successful_build_emits_its_model_asset_event_with_the_build(emulator: EmulatorServer) -> None:
    dag = load_dag("atscale_test_asset")
    if not AIRFLOW_V_3_0_PLUS:
        dag.sync_to_db()  # Airflow 2's dag.test() records events only of datasets a DAG processor registered

    dag_run = dag.test()

    assert dag_run.state == "success"
    uri = f"atscale://{emulator.url.split('://')[1]}/{CATALOG_ID}/{DEFAULT_MODEL_ID}"
    (batch,) = emulator.state.batches()
    tables = [f"atscale_aggs.as_agg_internet_sales_by_{by}" for by in ("day", "product", "customer_geo")]
    extra = {"batch_id": batch.id, "build_type": "full", "status": "done", "aggregate_tables": tables}
    assert asset_events(uri) == [(uri, extra)]
