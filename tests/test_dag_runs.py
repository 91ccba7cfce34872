"""
Real DAG runs with dag.test() against the emulator: templating, XCom, waiting in both modes, failures,
retries, and every example DAG.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_atscale.emulator import DEFAULT_CATALOG_ID as CATALOG_ID
from airflow_provider_atscale.emulator import DEFAULT_MODEL_ID, FAILING_MODEL_ID, SECOND_MODEL_ID
from tests.compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS, only_on_airflow_3, skip_on
from tests.dag_runs import load_dag, task_states, xcoms

if TYPE_CHECKING:
    from airflow_provider_atscale.emulator import EmulatorServer
    from airflow_provider_atscale.emulator.requestlog import RecordedRequest

pytestmark = pytest.mark.usefixtures("airflow_db")

TRIGGER_PATH = "/v1/aggregates-batch/"

only_on_airflow_3_3 = pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS, reason="Airflow 3.3 and later: only its task state store records a finished build"
)


def run(dag_id: str, **kwargs: Any) -> Any:
    dag_run = load_dag(dag_id).test(**kwargs)
    return dag_run


def build_posts(emulator: EmulatorServer) -> list[RecordedRequest]:
    entries = emulator.request_log.entries()
    return [r for r in entries if r.method == "POST" and r.path.startswith(TRIGGER_PATH)]


def posted_bodies(emulator: EmulatorServer) -> list[Any]:
    return [r.body for r in build_posts(emulator)]


class TestTemplating:
    def test_a_dict_of_templated_values(self, emulator: EmulatorServer) -> None:
        dag_run = run("atscale_test_overrides_dict")

        assert dag_run.state == "success"
        assert posted_bodies(emulator) == [
            {"gracePeriodOverrides": {"factinternetsales": 30, "factresellersales": 0}}
        ]
        (post,) = build_posts(emulator)
        assert post.query == {"isFullBuild": "false"}

    def test_one_template_rendering_to_a_json_object(
        self, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AIRFLOW_VAR_ATSCALE_GRACE", '{"factinternetsales": 45}')

        dag_run = run("atscale_test_overrides_json")

        assert dag_run.state == "success"
        assert posted_bodies(emulator) == [{"gracePeriodOverrides": {"factinternetsales": 45}}]

    def test_a_native_dict(self, emulator: EmulatorServer) -> None:
        dag_run = run("atscale_test_overrides_native")

        assert dag_run.state == "success"
        assert posted_bodies(emulator) == [{"gracePeriodOverrides": {"factinternetsales": 15}}]

    def test_a_bad_rendered_value_fails_without_any_request(self, emulator: EmulatorServer) -> None:
        dag_run = run("atscale_test_bad_overrides")

        assert dag_run.state == "failed"
        assert emulator.request_log.entries() == []


class TestWaiting:
    @pytest.mark.parametrize("mode", ["sync", "deferrable"])
    def test_a_full_build_is_waited_on_to_the_end(self, emulator: EmulatorServer, mode: str) -> None:
        dag_id = f"atscale_test_full_build_{mode}"

        dag_run = run(dag_id)

        assert dag_run.state == "success"
        (batch,) = emulator.state.batches()
        values = xcoms(dag_id, dag_run.run_id)
        assert values[("build", -1, "batch_id")] == batch.id
        assert values[("build", -1, "batch_status")] == "done"
        assert values[("build", -1, "return_value")]["status"] == "done"
        assert values[("build", -1, "return_value")]["id"] == batch.id
        assert emulator.request_log.count("POST", TRIGGER_PATH) == 1

    @skip_on("3.0", reason="its dag.test() shows no failed task's exception, in output or logs")
    def test_a_failing_model_fails_the_task_with_the_aggregates_messages(
        self, emulator: EmulatorServer, capsys: pytest.CaptureFixture[str]
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
        assert xcoms("atscale_test_failing_model", dag_run.run_id)[("build", -1, "batch_status")] == "failed"
        assert asset_events(f"atscale://{emulator.url.split('://')[1]}/") == [], "a failed build emits none"


@skip_on("3.0", reason="its dag.test() refuses an outlet asset that no DAG processor has registered")
def test_a_successful_build_emits_its_model_asset_event_with_the_build(emulator: EmulatorServer) -> None:
    dag_run = run("atscale_test_asset")

    assert dag_run.state == "success"
    uri = f"atscale://{emulator.url.split('://')[1]}/{CATALOG_ID}/{DEFAULT_MODEL_ID}"
    (batch,) = emulator.state.batches()
    tables = [
        "as_agg_internet_sales_by_day",
        "as_agg_internet_sales_by_product",
        "as_agg_internet_sales_by_customer_geo",
    ]
    extra = {
        "batch_id": batch.id,
        "build_type": "full",
        "status": "done",
        "aggregate_tables": [f"atscale_aggs.{table}" for table in tables],
    }
    assert asset_events(uri) == [(uri, extra)]


class WorkerDied(Exception):
    """Stands for a worker lost while the task waited."""


def builds_posted(emulator: EmulatorServer) -> int:
    return emulator.request_log.count("POST", TRIGGER_PATH)


def die_on_first_sleep(monkeypatch: pytest.MonkeyPatch, advance: float = 0.0) -> None:
    """The first wait of the first try: let ``advance`` seconds pass, then lose the worker."""
    from airflow_provider_atscale import _clock

    real_asleep = _clock.asleep
    calls: list[float] = []

    async def sleep_then_die_once(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 1:
            await real_asleep(advance)
            raise WorkerDied("the worker went away mid-wait")
        await real_asleep(seconds)

    monkeypatch.setattr(_clock, "asleep", sleep_then_die_once)


def outage_during_the_wait(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> list[float]:
    """
    AtScale answers 503 to everything from the provider's first wait on, for ``seconds`` of its clock.

    :return: the outage's start and end, filled in as they happen.
    """
    from airflow_provider_atscale import _clock
    from airflow_provider_atscale.emulator import FaultConfig

    sleep, asleep, now = _clock.sleep, _clock.asleep, _clock.now
    window: list[float] = []

    def follow_the_outage() -> None:
        if not window:
            window.append(now())
            emulator.faults.configure(FaultConfig(rate_503=1.0))
        elif len(window) == 1 and now() >= window[0] + seconds:
            window.append(now())
            emulator.faults.configure(FaultConfig())

    def sleep_in_outage(delay: float) -> None:
        sleep(delay)
        follow_the_outage()

    async def asleep_in_outage(delay: float) -> None:
        await asleep(delay)
        follow_the_outage()

    monkeypatch.setattr(_clock, "sleep", sleep_in_outage)
    monkeypatch.setattr(_clock, "asleep", asleep_in_outage)
    return window


class TestRetries:
    def test_a_retry_after_the_worker_died_mid_wait_resumes_the_same_batch(
        self, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        die_on_first_sleep(monkeypatch)

        dag_run = run("atscale_test_retry")

        assert dag_run.state == "success"
        assert task_states("atscale_test_retry", dag_run.run_id)[("build", -1)] == ("success", 2)
        assert builds_posted(emulator) == 1
        (batch,) = emulator.state.batches()
        assert xcoms("atscale_test_retry", dag_run.run_id)[("build", -1, "batch_id")] == batch.id

    @pytest.mark.parametrize("skew", [-3.0, 3.0], ids=["atscale-3s-behind", "atscale-3s-ahead"])
    def test_a_retry_after_the_first_try_timed_out_resumes_the_same_batch(
        self, emulator: EmulatorServer, skew: float
    ) -> None:
        from airflow_provider_atscale.emulator import FaultConfig

        emulator.faults.configure(FaultConfig(clock_offset_seconds=skew))

        dag_run = run("atscale_test_timeout_retry")

        assert dag_run.state == "success"
        assert task_states("atscale_test_timeout_retry", dag_run.run_id)[("build", -1)] == ("success", 2)
        assert builds_posted(emulator) == 1
        (batch,) = emulator.state.batches()
        values = xcoms("atscale_test_timeout_retry", dag_run.run_id)
        assert values[("build", -1, "batch_id")] == batch.id
        assert values[("build", -1, "batch_status")] == "done"

    @only_on_airflow_3_3
    def test_a_retry_after_the_batch_finished_good_does_not_post(
        self, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # The worker is lost after the build finished (110 s) but before the task heard of it.
        die_on_first_sleep(monkeypatch, advance=300)

        dag_run = run("atscale_test_retry")

        assert dag_run.state == "success"
        assert task_states("atscale_test_retry", dag_run.run_id)[("build", -1)] == ("success", 2)
        assert builds_posted(emulator) == 1
        (batch,) = emulator.state.batches()
        values = xcoms("atscale_test_retry", dag_run.run_id)
        assert (values[("build", -1, "batch_id")], values[("build", -1, "batch_status")]) == (
            batch.id,
            "done",
        )
        assert f"AtScale batch {batch.id}, which an earlier try of this task started, finished done" in (
            capsys.readouterr().out
        )

    def test_a_first_try_beside_a_running_build_of_the_model_posts_its_own_with_its_overrides(
        self, emulator: EmulatorServer
    ) -> None:
        dag_run = run("atscale_test_beside_another_build")

        assert dag_run.state == "success"
        assert posted_bodies(emulator) == [
            {"gracePeriodOverrides": {}},
            {"gracePeriodOverrides": {"factinternetsales": 30}},
        ]
        other, ours = emulator.state.batches()
        assert dict(ours.grace_period_overrides) == {"factinternetsales": 30}
        values = xcoms("atscale_test_beside_another_build", dag_run.run_id)
        assert values[("other", -1, "batch_id")] == other.id
        assert values[("ours", -1, "batch_id")] == ours.id
        assert values[("ours", -1, "batch_status")] == "done"


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_a_60s_outage_during_the_wait_ends_in_success_on_the_first_try(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    dag_id = f"atscale_test_full_build_{mode}"
    window = outage_during_the_wait(emulator, monkeypatch, seconds=60)

    dag_run = run(dag_id)

    assert dag_run.state == "success"
    assert task_states(dag_id, dag_run.run_id)[("build", -1)] == ("success", 1)
    began, ended = window
    assert ended - began >= 60, "the outage happened and lasted a minute"
    assert emulator.request_log.count(status=503) > 0
    assert builds_posted(emulator) == 1
    assert xcoms(dag_id, dag_run.run_id)[("build", -1, "batch_status")] == "done"


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


@only_on_airflow_3("the example DAGs are written with airflow.sdk (DAG, Asset, Param, task)")
class TestExampleDags:
    def test_every_example_dag_imports_cleanly(self) -> None:
        from tests.compat import DagBag
        from tests.conftest import _ROOT

        bag = DagBag(dag_folder=str(_ROOT / "example_dags"))

        assert bag.import_errors == {}
        assert set(bag.dag_ids) == {
            "atscale_nightly_incremental_build",
            "atscale_refresh_sales_dashboard",
            "atscale_sales_etl",
            "atscale_post_etl_full_rebuild",
            "atscale_build_many_models",
        }

    @skip_on("3.0", reason="its dag.test() refuses an outlet asset that no DAG processor has registered")
    def test_nightly_incremental_build_updates_the_model_asset_the_dashboard_dag_is_scheduled_on(
        self, emulator: EmulatorServer
    ) -> None:
        dag = load_dag("atscale_nightly_incremental_build")

        dag_run = dag.test()

        assert dag_run.state == "success"
        assert dag.catchup is False
        assert posted_bodies(emulator) == [
            {"gracePeriodOverrides": {"factinternetsales": 30, "factresellersales": 7}}
        ]
        values = xcoms(dag.dag_id, dag_run.run_id)
        assert values[("incremental_build", -1, "batch_status")] == "done"
        uri = f"atscale://{emulator.url.split('://')[1]}/Sales%20Insights/Internet%20Sales"
        (batch,) = emulator.state.batches()
        assert asset_events(uri) == [
            (
                uri,
                {
                    "batch_id": batch.id,
                    "build_type": "incremental",
                    "status": "done",
                    "aggregate_tables": [
                        "atscale_aggs.as_agg_internet_sales_by_day",
                        "atscale_aggs.as_agg_internet_sales_by_product",
                        "atscale_aggs.as_agg_internet_sales_by_customer_geo",
                    ],
                },
            )
        ]
        assert (dag.dag_id, uri, "atscale_refresh_sales_dashboard") in asset_links(name=uri)

    @skip_on(
        "3.0",
        reason="its dag.test() refuses an outlet asset that no DAG processor has registered "
        "(AirflowInactiveAssetInInletOrOutletException)",
    )
    def test_post_etl_full_rebuild_follows_the_etl_asset(self, emulator: EmulatorServer) -> None:
        etl = load_dag("atscale_sales_etl")
        rebuild = load_dag("atscale_post_etl_full_rebuild")

        etl_run = etl.test()
        rebuild_run = rebuild.test()

        assert etl_run.state == "success"
        assert asset_links(name="sales_warehouse") == {
            ("atscale_sales_etl", "sales_warehouse", "atscale_post_etl_full_rebuild")
        }
        assert rebuild_run.state == "success"
        (post,) = build_posts(emulator)
        assert post.query == {"isFullBuild": "true"}
        assert xcoms(rebuild.dag_id, rebuild_run.run_id)[("full_rebuild", -1, "batch_status")] == "done"

    def test_build_many_models_maps_one_build_per_model_and_senses_the_other(
        self, emulator: EmulatorServer
    ) -> None:
        dag_run = run("atscale_build_many_models")

        assert dag_run.state == "success"
        states = task_states("atscale_build_many_models", dag_run.run_id)
        assert states[("build_models", 0)][0] == "success"
        assert states[("build_models", 1)][0] == "success"
        assert states[("wait_for_elsewhere", -1)][0] == "success"
        created = emulator.state.batches()
        assert sorted((b.model_id, b.is_full_build) for b in created) == sorted(
            [(DEFAULT_MODEL_ID, False), (SECOND_MODEL_ID, False), (SECOND_MODEL_ID, True)]
        )
        values = xcoms("atscale_build_many_models", dag_run.run_id)
        elsewhere = values[("start_elsewhere", -1, "batch_id")]
        assert values[("wait_for_elsewhere", -1, "return_value")]["id"] == elsewhere
        assert values[("wait_for_elsewhere", -1, "return_value")]["status"] == "done"


class TestConnectionChanges:
    """A connection edited in Airflow reaches the builds that start after it and the waits already running."""

    def test_a_deferred_build_right_after_the_host_moved_posts_and_polls_the_new_host(
        self, emulator: EmulatorServer, emulator_clock: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from airflow_provider_atscale.emulator import EmulatorConfig, run_emulator
        from tests.conftest import EMULATOR_BUILD_SECONDS, EMULATOR_QUEUE_SECONDS
        from tests.helpers import connection_uri

        dag_id = "atscale_test_full_build_deferrable"
        assert run(dag_id).state == "success"
        polls_of_the_old_host = emulator.request_log.count("GET")
        config = EmulatorConfig(
            default_queue_seconds=EMULATOR_QUEUE_SECONDS, default_build_seconds=EMULATOR_BUILD_SECONDS
        )
        with run_emulator(config, clock=emulator_clock) as moved:
            monkeypatch.setenv(
                "AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(host=moved.url, password=moved.token)
            )

            dag_run = run(dag_id)

            assert dag_run.state == "success"
            assert (builds_posted(emulator), builds_posted(moved)) == (1, 1)
            assert emulator.request_log.count("GET") == polls_of_the_old_host
            assert moved.request_log.count("GET", "/wapi/") > 0
            (batch,) = moved.state.batches()
            assert xcoms(dag_id, dag_run.run_id)[("build", -1, "batch_status")] == "done"
            assert xcoms(dag_id, dag_run.run_id)[("build", -1, "batch_id")] == batch.id

    @pytest.mark.parametrize("mode", ["sync", "deferrable"])
    def test_a_token_rotated_while_the_build_waits_reaches_the_wait(
        self,
        emulator: EmulatorServer,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
        mode: str,
    ) -> None:
        from airflow_provider_atscale import _clock
        from tests.helpers import connection_uri

        asleep, waits = _clock.asleep, []

        async def rotate_after_the_first_poll(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:
                # A new token revokes the old one and the JWTs exchanged for it; then the connection changes.
                token = emulator.rotate_api_token()
                monkeypatch.setenv(
                    "AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(host=emulator.url, password=token)
                )
            await asleep(seconds)

        monkeypatch.setattr(_clock, "asleep", rotate_after_the_first_poll)
        dag_id = f"atscale_test_full_build_{mode}"

        dag_run = run(dag_id)

        assert dag_run.state == "success"
        assert task_states(dag_id, dag_run.run_id)[("build", -1)] == ("success", 1)
        assert builds_posted(emulator) == 1
        assert emulator.request_log.count(status=401) > 0, "the old token was refused"
        assert xcoms(dag_id, dag_run.run_id)[("build", -1, "batch_status")] == "done"
        assert "Connection 'atscale_default' changed" in caplog.text
