from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import requests
import requests_mock as rm

from airflow_provider_atscale import __version__
from airflow_provider_atscale.batches import AggregateBatch
from airflow_provider_atscale.errors import (
    AtScaleAuthError,
    AtScaleBadRequestError,
    AtScaleConfigurationError,
    AtScaleError,
    AtScaleHTTPError,
    AtScaleNotFoundError,
    AtScaleRateLimitError,
    AtScaleResponseError,
    AtScaleServerError,
    AtScaleTransportError,
)
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.compat import skip_on
from tests.helpers import BASE_URL, CATALOG_ID, MODEL_ID, TOKEN, FakeClock, batch_object, connection_uri

# Airflow 3.0 and 3.1 drop such a connection while looking it up: the hook is told it does not exist.
NOT_OBJECT = skip_on("3.0", "3.1", reason="a connection whose extra is no JSON object is not found")

TRIGGER_URL = f"{BASE_URL}/v1/aggregates-batch/catalogs/{CATALOG_ID}/models/{MODEL_ID}"
CATALOGS_URL = f"{BASE_URL}/v1/catalogs"


@pytest.fixture(autouse=True)
def _no_real_waits(fake_clock: FakeClock) -> FakeClock:
    """Retries wait on the fake clock: no test here sleeps."""
    return fake_clock


@pytest.fixture
def hook(atscale_conn: str, monkeypatch: pytest.MonkeyPatch) -> AtScaleHook:
    # requests swaps verify=True for a CA bundle named in the environment; keep the assertions exact.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return AtScaleHook(atscale_conn_id=atscale_conn)


def created(batch: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"json": {"batch": batch or batch_object(), "success": True}, "status_code": 201}


class TestTriggerRequest:
    @pytest.mark.parametrize(("full_build", "expected_query"), [(True, "true"), (False, "false")])
    def test_sends_exactly_the_documented_request(
        self, hook: AtScaleHook, requests_mock: rm.Mocker, full_build: bool, expected_query: str
    ) -> None:
        requests_mock.post(TRIGGER_URL, **created())

        hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=full_build)

        (request,) = requests_mock.request_history
        assert request.method == "POST"
        assert request.path == f"/v1/aggregates-batch/catalogs/{CATALOG_ID}/models/{MODEL_ID}"
        assert request.qs == {"isfullbuild": [expected_query]}
        assert f"isFullBuild={expected_query}" in request.url
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["User-Agent"] == f"airflow-provider-atscale/{__version__}"
        assert request.json() == {"gracePeriodOverrides": {}}
        assert request.timeout == 30.0
        assert request.verify is True

    def test_sends_grace_period_overrides_as_integers(
        self, hook: AtScaleHook, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.post(TRIGGER_URL, **created())

        hook.trigger_aggregate_build(
            CATALOG_ID, MODEL_ID, full_build=False, grace_period_overrides={"factinternetsales": "30", "x": 0}
        )

        assert requests_mock.last_request.json() == {
            "gracePeriodOverrides": {"factinternetsales": 30, "x": 0}
        }

    def test_returns_the_batch_as_atscale_sent_it(self, hook: AtScaleHook, requests_mock: rm.Mocker) -> None:
        requests_mock.post(TRIGGER_URL, **created())

        batch = hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert isinstance(batch, AggregateBatch)
        assert batch.id == "5b9f7a1e-1111-4222-8333-944455556666"
        assert batch.status == "new"
        assert batch.to_api() == batch_object()

    def test_keeps_a_proxy_path_prefix_and_the_port(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
    ) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_ATSCALE_PROXY",
            json.dumps(
                {"conn_type": "atscale", "host": "atscale.test/engine/", "port": 8443, "password": TOKEN}
            ),
        )
        url = f"https://atscale.test:8443/engine/v1/aggregates-batch/catalogs/{CATALOG_ID}/models/{MODEL_ID}"
        requests_mock.post(url, **created())

        AtScaleHook("atscale_proxy").trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=True)

        assert requests_mock.last_request.url == f"{url}?isFullBuild=true"

    def test_uses_the_connection_timeout_and_ca_bundle(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, tmp_path: Any
    ) -> None:
        bundle = tmp_path / "ca.pem"
        bundle.write_text("not read by the mock")
        monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(verify=str(bundle), timeout="7.5"))
        requests_mock.post(TRIGGER_URL, **created())

        AtScaleHook().trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert requests_mock.last_request.timeout == 7.5
        assert requests_mock.last_request.verify == str(bundle)

    def test_reuses_one_session_for_every_call(self, hook: AtScaleHook, requests_mock: rm.Mocker) -> None:
        requests_mock.post(TRIGGER_URL, **created())
        requests_mock.get(CATALOGS_URL, json=[])

        hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)
        session = hook.get_conn()
        hook.list_catalogs()
        hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=True)

        assert hook.get_conn() is session
        assert requests_mock.call_count == 3


class TestErrors:
    @pytest.fixture
    def hook(self, monkeypatch: pytest.MonkeyPatch) -> AtScaleHook:
        """Without retries: these tests are about how each answer maps to an error."""
        monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_DEFAULT", connection_uri(max_retries=0))
        return AtScaleHook()

    @pytest.mark.parametrize(
        ("status", "error_class"),
        [
            (400, AtScaleBadRequestError),
            (401, AtScaleAuthError),
            (403, AtScaleAuthError),
            (404, AtScaleNotFoundError),
            (409, AtScaleHTTPError),
            (429, AtScaleRateLimitError),
            (500, AtScaleServerError),
            (503, AtScaleServerError),
        ],
    )
    def test_each_status_maps_to_its_error_with_atscale_message(
        self, hook: AtScaleHook, requests_mock: rm.Mocker, status: int, error_class: type[AtScaleHTTPError]
    ) -> None:
        body = {"success": False, "error": {"code": status, "message": f"AtScale says no ({status})"}}
        requests_mock.post(TRIGGER_URL, status_code=status, json=body)
        requests_mock.get(CATALOGS_URL, json=[])

        with pytest.raises(error_class) as excinfo:
            hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        error = excinfo.value
        assert type(error) is error_class
        assert isinstance(error, AtScaleError)
        assert error.http_status == status
        assert error.method == "POST"
        assert error.atscale_message == f"AtScale says no ({status})"
        message = str(error)
        assert f"POST /v1/aggregates-batch/catalogs/{CATALOG_ID}/models/{MODEL_ID}" in message
        assert f"HTTP {status}" in message
        assert f"AtScale says no ({status})" in message
        assert TOKEN not in message

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({"message": "plain message"}, "plain message"),
            ({"error": "invalid_grant", "error_description": "bad password"}, "bad password"),
            ({"errors": [{"message": "first"}, {"message": "second"}]}, "first; second"),
            ({"detail": "from a proxy"}, "from a proxy"),
        ],
    )
    def test_finds_atscale_error_text_in_each_known_body_shape(
        self, hook: AtScaleHook, requests_mock: rm.Mocker, body: dict[str, Any], expected: str
    ) -> None:
        requests_mock.post(TRIGGER_URL, status_code=400, json=body)

        with pytest.raises(AtScaleBadRequestError) as excinfo:
            hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert excinfo.value.atscale_message == expected

    def test_a_non_json_error_body_is_quoted(self, hook: AtScaleHook, requests_mock: rm.Mocker) -> None:
        requests_mock.post(TRIGGER_URL, status_code=502, text="<html>Bad Gateway</html>")

        with pytest.raises(AtScaleServerError, match="Bad Gateway"):
            hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

    def test_a_token_echoed_by_the_server_is_scrubbed(
        self, hook: AtScaleHook, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.post(TRIGGER_URL, status_code=401, json={"message": f"token {TOKEN} expired"})

        with pytest.raises(AtScaleAuthError) as excinfo:
            hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert TOKEN not in str(excinfo.value)
        assert "token *** expired" in str(excinfo.value)

    def test_not_found_lists_the_models_of_the_catalog(
        self, hook: AtScaleHook, requests_mock: rm.Mocker
    ) -> None:
        requests_mock.post(TRIGGER_URL, status_code=404, json={"message": "model not found"})
        requests_mock.get(
            CATALOGS_URL,
            json=[{"id": CATALOG_ID, "name": "Sales", "models": [{"id": "m-1", "name": "Internet Sales"}]}],
        )

        with pytest.raises(AtScaleNotFoundError) as excinfo:
            hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert "model not found" in str(excinfo.value)
        assert "m-1 (Internet Sales)" in str(excinfo.value)
        assert excinfo.value.http_status == 404

    @pytest.mark.parametrize(
        ("response", "match"),
        [
            ({"status_code": 201, "text": "not json"}, "not JSON"),
            ({"status_code": 201, "json": {"success": True}}, "without a valid batch"),
            ({"status_code": 201, "json": {"batch": {"status": "new"}, "success": True}}, "no id"),
            ({"status_code": 200, "json": {"success": False, "message": "busy"}}, '"success": false: busy'),
        ],
    )
    def test_malformed_or_unsuccessful_answers_raise_response_error(
        self, hook: AtScaleHook, requests_mock: rm.Mocker, response: dict[str, Any], match: str
    ) -> None:
        requests_mock.post(TRIGGER_URL, **response)

        with pytest.raises(AtScaleResponseError, match=match):
            hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

    def test_no_answer_raises_transport_error(self, hook: AtScaleHook, requests_mock: rm.Mocker) -> None:
        requests_mock.post(TRIGGER_URL, exc=requests.ConnectTimeout("connect timed out"))

        with pytest.raises(AtScaleTransportError, match=r"got no answer from https://atscale\.test"):
            hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)


class TestBadInputIsRejectedBeforeAnyRequest:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"catalog_id": ""}, "catalog_id must be a non-empty string id"),
            ({"model_id": ""}, "model_id must be a non-empty string id"),
            ({"model_id": None}, "model_id must be a non-empty string id, got None"),
            ({"model_id": "a/b"}, "model_id must be an AtScale id without whitespace, slashes"),
            ({"catalog_id": "a b"}, "catalog_id must be an AtScale id"),
            ({"full_build": "yes"}, "full_build must be True, False, 'true' or 'false', got 'yes'"),
            ({"grace_period_overrides": {"sales": -1}}, r"grace_period_overrides\['sales'\]"),
            ({"grace_period_overrides": {"sales": True}}, "must be a non-negative integer, got True"),
            ({"grace_period_overrides": {"": 3}}, "keys must be non-empty dataset names"),
            ({"grace_period_overrides": [1, 2]}, "got list"),
            ({"full_build": True, "grace_period_overrides": {"sales": 3}}, "incremental builds only"),
        ],
    )
    def test_bad_argument(
        self, hook: AtScaleHook, requests_mock: rm.Mocker, kwargs: dict[str, Any], match: str
    ) -> None:
        arguments: dict[str, Any] = {"catalog_id": CATALOG_ID, "model_id": MODEL_ID, "full_build": False}
        arguments.update(kwargs)

        with pytest.raises(AtScaleConfigurationError, match=match):
            hook.trigger_aggregate_build(arguments.pop("catalog_id"), arguments.pop("model_id"), **arguments)

        assert requests_mock.call_count == 0

    @pytest.mark.parametrize(
        ("conn", "match"),
        [
            ({"host": ""}, "has no host"),
            ({"host": "ftp://atscale.test"}, "host must be an http"),
            ({"host": "https://"}, "host must be an http"),
            ({"host": "https://atscale.test?x=1"}, "host must be an http"),
            ({"host": "atscale test"}, "host must be an http"),
            ({"password": None}, "has no API token"),
            pytest.param({"extra": "{not json"}, "extra must be a JSON object", marks=NOT_OBJECT),
            pytest.param({"extra": "[1]"}, "extra must be a JSON object, got list", marks=NOT_OBJECT),
            ({"extra": {"verify": "maybe"}}, "extra 'verify' must be true, false or the path"),
            ({"extra": {"timeout": -1}}, "extra 'timeout' must be a positive number of seconds, got -1"),
            ({"extra": {"timeout": "soon"}}, "got 'soon'"),
            ({"extra": {"timeout": True}}, "got True"),
            (
                {"extra": {"lineage_namespaces": ["snowflake://a"]}},
                "extra 'lineage_namespaces' must map AtScale connection ids to OpenLineage namespaces",
            ),
            (
                {"extra": {"lineage_namespaces": {"wh": {"database": "DB"}}}},
                "got {'database': 'DB'} for 'wh'",
            ),
            ({"extra": {"lineage_namespaces": "{not json"}}, "lineage_namespaces' must map"),
        ],
    )
    def test_bad_connection(
        self, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker, conn: dict[str, Any], match: str
    ) -> None:
        definition: dict[str, Any] = {"conn_type": "atscale", "host": BASE_URL, "password": TOKEN}
        definition.update(conn)
        if isinstance(definition.get("extra"), dict):
            definition["extra"] = json.dumps(definition["extra"])
        monkeypatch.setenv("AIRFLOW_CONN_ATSCALE_BAD", json.dumps(definition))

        with pytest.raises(AtScaleConfigurationError, match=match) as excinfo:
            AtScaleHook("atscale_bad").trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert "atscale_bad" in str(excinfo.value)
        assert requests_mock.call_count == 0

    def test_unknown_connection_id(self, requests_mock: rm.Mocker) -> None:
        with pytest.raises(AtScaleConfigurationError, match="atscale_conn_id 'atscale_missing' names no"):
            AtScaleHook("atscale_missing").trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)

        assert requests_mock.call_count == 0


class TestConnectionTest:
    def test_success_counts_catalogs(self, hook: AtScaleHook, requests_mock: rm.Mocker) -> None:
        requests_mock.get(CATALOGS_URL, json=[{"id": "c1", "models": []}, {"id": "c2", "models": []}])

        ok, message = hook.test_connection()

        assert ok is True
        assert message == "Connected to AtScale at https://atscale.test: 2 catalog(s) visible"
        assert requests_mock.last_request.headers["Authorization"] == f"Bearer {TOKEN}"

    def test_failure_reports_atscale_message(self, hook: AtScaleHook, requests_mock: rm.Mocker) -> None:
        requests_mock.get(CATALOGS_URL, status_code=401, json={"message": "Invalid token"})

        ok, message = hook.test_connection()

        assert ok is False
        assert "HTTP 401: Invalid token" in message
        assert TOKEN not in message


class TestSecrets:
    def test_token_is_absent_from_reprs_logs_and_errors(
        self, hook: AtScaleHook, requests_mock: rm.Mocker, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        requests_mock.post(TRIGGER_URL, **created())
        requests_mock.get(CATALOGS_URL, status_code=500, json={"message": "down"})

        hook.trigger_aggregate_build(CATALOG_ID, MODEL_ID, full_build=False)
        with pytest.raises(AtScaleServerError) as excinfo:
            hook.list_catalogs()

        assert TOKEN not in repr(hook)
        assert TOKEN not in repr(hook.settings)
        assert TOKEN not in str(excinfo.value)
        assert TOKEN not in caplog.text
        assert caplog.records, "the hook is expected to log its requests at debug level"

    def test_each_secret_is_registered_once_per_process_however_many_hooks(
        self, atscale_conn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from airflow_provider_atscale.hooks import atscale

        registered: list[str] = []
        monkeypatch.setattr(atscale, "_masked", set())
        monkeypatch.setattr(atscale, "mask_secret", registered.append)

        for _ in range(3):
            AtScaleHook().settings  # noqa: B018 - reading the settings registers the token

        assert registered == [TOKEN], "a triggerer builds a hook per trigger; registering costs milliseconds"

    def test_token_is_registered_with_the_secret_masker(self, hook: AtScaleHook) -> None:
        from tests.compat import redact

        hook.settings  # noqa: B018 - reading the settings registers the token

        assert redact(f"the token is {TOKEN}") == "the token is ***"
