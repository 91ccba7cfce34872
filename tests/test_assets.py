"""The model's asset: its URI, by ids or by names, and the ``atscale`` scheme's normaliser Airflow runs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from airflow_provider_atscale.assets import model_asset, model_uri, sanitize_uri
from tests.compat import AIRFLOW_V_3_0_PLUS


@pytest.mark.parametrize(
    ("host", "expected_host"),
    [
        ("https://AtScale.Example.com", "atscale.example.com"),
        ("https://atscale.example.com:443", "atscale.example.com"),
        ("atscale.example.com:10500", "atscale.example.com:10500"),
        ("http://127.0.0.1:8711/prefix", "127.0.0.1:8711"),
    ],
)
def test_the_host_is_the_connection_urls_host_and_port(host: str, expected_host: str) -> None:
    assert model_uri(host, "c-1", "m-1") == f"atscale://{expected_host}/c-1/m-1"


def test_names_are_url_quoted() -> None:
    uri = model_uri("atscale.example.com", catalog_name="Sales Insights", model_name="Internet/Sales")

    assert uri == "atscale://atscale.example.com/Sales%20Insights/Internet%2FSales"


@pytest.mark.parametrize(
    "names",
    [
        {"catalog_id": "c"},
        {"catalog_id": "c", "model_name": "m"},
        {"catalog_id": "c", "model_id": "m", "model_name": "m"},
    ],
)
def test_a_model_named_by_anything_but_both_ids_or_both_names_is_refused(names: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="by catalog_id and model_id, or by catalog_name and model_name"):
        model_uri("atscale.example.com", **names)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("atscale:///c/m", "has no host"),
        ("atscale://host/c", "the path '/c' instead of /<catalog>/<model>"),
        ("atscale://host/c/m/x", "the path '/c/m/x' instead of /<catalog>/<model>"),
        ("atscale://host/c/m?x=1", "a query ('x=1')"),
    ],
)
def test_the_normaliser_refuses_a_malformed_uri_naming_what_is_wrong(uri: str, problem: str) -> None:
    with pytest.raises(ValueError, match="must be atscale://<host>/<catalog>/<model>") as refused:
        sanitize_uri(urlsplit(uri))

    assert problem in str(refused.value)


def test_the_asset_carries_the_normalised_uri_and_the_extra_arguments() -> None:
    asset = model_asset("HTTPS://Host:443", catalog_id="c", model_id="m", extra={"team": "bi"})

    assert asset.uri == "atscale://host/c/m"
    assert asset.extra == {"team": "bi"}


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2.11's datasets are checked when they are used")
def test_a_malformed_atscale_uri_in_a_dag_fails_its_parse_with_the_normalisers_message(
    tmp_path: Path,
) -> None:
    from tests.compat import DagBag

    (tmp_path / "bad_asset.py").write_text(
        "from airflow.sdk import DAG, Asset\n"
        "with DAG('bad_atscale_asset', schedule=[Asset('atscale://atscale.example.com/only-a-catalog')]):\n"
        "    pass\n"
    )

    bag = DagBag(dag_folder=str(tmp_path))

    (error,) = bag.import_errors.values()
    assert "atscale://<host>/<catalog>/<model>" in error
    assert "the path '/only-a-catalog'" in error
