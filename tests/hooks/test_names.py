"""Catalogs and models by name: the hook's lookup, the operator's and the sensor's use of it."""

from __future__ import annotations

from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_atscale._compat import AirflowFailException
from airflow_provider_atscale.errors import AtScaleConfigurationError
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from airflow_provider_atscale.operators.atscale import AtScaleAggregateBuildOperator
from airflow_provider_atscale.sensors.atscale import AtScaleAggregateBatchSensor
from tests.helpers import BASE_URL, CATALOG_ID, MODEL_ID, TRIGGER_URL, RecordingTaskInstance, batch_object

pytestmark = pytest.mark.usefixtures("atscale_conn")

CATALOGS_URL = f"{BASE_URL}/v1/catalogs"
CATALOGS = [
    {
        "id": CATALOG_ID,
        "name": "Sales Insights",
        "models": [
            {"id": MODEL_ID, "name": "Internet Sales"},
            {"id": "m-reseller", "name": "Reseller Sales"},
            {"id": "m-returns-1", "name": "Returns"},
            {"id": "m-returns-2", "name": "RETURNS"},
        ],
    },
    {"id": "c-finance", "name": "Finance", "models": [{"id": "m-ledger", "name": "Ledger"}]},
]


@pytest.fixture
def catalogs(requests_mock: rm.Mocker) -> rm.Mocker:
    requests_mock.get(CATALOGS_URL, json=CATALOGS)
    return requests_mock


class TestLookup:
    def test_names_as_written_give_the_ids_in_one_request(self, catalogs: rm.Mocker) -> None:
        ids = AtScaleHook().lookup_model(catalog_name="Sales Insights", model_name="Internet Sales")

        assert ids == (CATALOG_ID, MODEL_ID)
        assert catalogs.call_count == 1

    def test_a_name_in_another_case_is_taken_where_only_one_has_it(self, catalogs: rm.Mocker) -> None:
        assert AtScaleHook().lookup_model(catalog_name="sales insights", model_name="reseller sales") == (
            CATALOG_ID,
            "m-reseller",
        )

    def test_a_name_as_written_wins_over_others_in_another_case(self, catalogs: rm.Mocker) -> None:
        assert AtScaleHook().lookup_model(catalog_id=CATALOG_ID, model_name="RETURNS")[1] == "m-returns-2"

    def test_a_name_only_another_case_of_several_is_ambiguous(self, catalogs: rm.Mocker) -> None:
        with pytest.raises(AtScaleConfigurationError) as excinfo:
            AtScaleHook().lookup_model(catalog_name="Sales Insights", model_name="returns")

        assert str(excinfo.value) == (
            "2 models are named 'returns' among the models of catalog 'Sales Insights' "
            "(m-returns-1, m-returns-2): name it by model_id instead"
        )

    def test_an_unknown_model_lists_the_models_of_the_catalog(self, catalogs: rm.Mocker) -> None:
        with pytest.raises(AtScaleConfigurationError) as excinfo:
            AtScaleHook().lookup_model(catalog_name="Sales Insights", model_name="Web Sales")

        assert str(excinfo.value) == (
            "no model named 'Web Sales' among the models of catalog 'Sales Insights': "
            "'Internet Sales', 'RETURNS', 'Reseller Sales', 'Returns'"
        )
        assert isinstance(excinfo.value, AirflowFailException), "a name that is wrong now is wrong on a retry"

    def test_an_unknown_catalog_lists_the_catalogs(self, catalogs: rm.Mocker) -> None:
        with pytest.raises(
            AtScaleConfigurationError,
            match="no catalog named 'Sales' among the catalogs this token sees: 'Finance', 'Sales Insights'",
        ):
            AtScaleHook().lookup_model(catalog_name="Sales", model_name="Internet Sales")

    def test_an_unknown_catalog_id_with_a_model_name_lists_the_catalogs(self, catalogs: rm.Mocker) -> None:
        with pytest.raises(AtScaleConfigurationError, match="catalog_id 'c-nope' is not among the catalogs"):
            AtScaleHook().lookup_model(catalog_id="c-nope", model_name="Ledger")

    def test_ids_are_given_back_without_a_request(self, catalogs: rm.Mocker) -> None:
        assert AtScaleHook().lookup_model(catalog_id=CATALOG_ID, model_id=MODEL_ID) == (CATALOG_ID, MODEL_ID)
        assert catalogs.call_count == 0

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"model_id": MODEL_ID}, "give exactly one of catalog_id or catalog_name, got neither"),
            (
                {"catalog_id": CATALOG_ID, "catalog_name": "Sales Insights", "model_id": MODEL_ID},
                "give exactly one of catalog_id or catalog_name, got both",
            ),
            ({"catalog_id": CATALOG_ID, "model_name": "  "}, "model_name must be a non-empty name, got '  '"),
        ],
    )
    def test_a_pair_named_neither_or_twice_or_blank_is_refused_before_any_request(
        self, catalogs: rm.Mocker, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(AtScaleConfigurationError, match=message):
            AtScaleHook().lookup_model(**kwargs)

        assert catalogs.call_count == 0


class TestOperatorByName:
    def test_builds_the_named_model_and_pushes_its_ids(
        self, catalogs: rm.Mocker, capsys: pytest.CaptureFixture[str]
    ) -> None:
        catalogs.post(TRIGGER_URL, status_code=201, json={"batch": batch_object(), "success": True})
        ti = RecordingTaskInstance()
        task = AtScaleAggregateBuildOperator(
            task_id="build",
            catalog_name="Sales Insights",
            model_name="Internet Sales",
            wait_for_completion=False,
        )

        task.execute({"ti": ti})

        assert [(r.method, r.path) for r in catalogs.request_history] == [
            ("GET", "/v1/catalogs"),
            ("POST", f"/v1/aggregates-batch/catalogs/{CATALOG_ID}/models/{MODEL_ID}".lower()),
        ]
        assert ti.xcom["catalog_id"] == [CATALOG_ID]
        assert ti.xcom["model_id"] == [MODEL_ID]
        assert f"AtScale model 'Internet Sales' of catalog 'Sales Insights': model id {MODEL_ID}" in (
            capsys.readouterr().out
        )

    def test_an_unknown_name_fails_before_any_build(self, catalogs: rm.Mocker) -> None:
        task = AtScaleAggregateBuildOperator(
            task_id="build", catalog_name="Sales Insights", model_name="Web Sales"
        )

        with pytest.raises(
            AtScaleConfigurationError, match="the models of catalog 'Sales Insights': 'Internet Sales'"
        ):
            task.execute({"ti": RecordingTaskInstance()})

        assert [r.method for r in catalogs.request_history] == ["GET"]

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"model_id": MODEL_ID}, "catalog_id or catalog_name, got neither"),
            ({"catalog_id": CATALOG_ID, "model_id": MODEL_ID, "model_name": "Internet Sales"}, "got both"),
        ],
    )
    def test_a_pair_named_neither_or_twice_fails_when_the_dag_is_parsed(
        self, kwargs: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(AtScaleConfigurationError, match=message):
            AtScaleAggregateBuildOperator(task_id="build", **kwargs)
        with pytest.raises(AtScaleConfigurationError, match=message):
            AtScaleAggregateBatchSensor(task_id="wait", batch_id="b", **kwargs)

    def test_names_are_templated(self) -> None:
        for task_class in (AtScaleAggregateBuildOperator, AtScaleAggregateBatchSensor):
            assert {"catalog_name", "model_name"} <= set(task_class.template_fields)


def test_the_sensor_looks_the_names_up_once(catalogs: rm.Mocker) -> None:
    from tests.helpers import ACCESS_TOKEN, HISTORY_URL, TOKEN_URL, history_page

    catalogs.post(TOKEN_URL, json={"accessToken": ACCESS_TOKEN})
    catalogs.get(
        HISTORY_URL, [{"json": history_page(batch_object(status=s))} for s in ("inprogress", "done")]
    )
    sensor = AtScaleAggregateBatchSensor(
        task_id="wait",
        catalog_name="Sales Insights",
        model_name="Internet Sales",
        batch_id=batch_object()["id"],
    )

    assert sensor.poke({}) is False
    assert sensor.poke({}).is_done is True

    assert sum(r.path == "/v1/catalogs" for r in catalogs.request_history) == 1
    assert {r.qs["modelid"][0] for r in catalogs.request_history if r.path.startswith("/wapi")} == {MODEL_ID}
