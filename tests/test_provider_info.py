"""The provider as Airflow's ProvidersManager finds it through the package's entry point."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import airflow_provider_atscale
from airflow_provider_atscale import __version__, get_provider_info
from tests.compat import skip_on


def test_the_entry_point_names_get_provider_info() -> None:
    (entry,) = [
        e
        for e in entry_points(group="apache_airflow_provider")
        if e.value.startswith("airflow_provider_atscale")
    ]

    assert entry.load() is get_provider_info


def test_provider_info_is_valid_for_airflow() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import airflow

    schema_file = Path(airflow.__file__).parent / "provider_info.schema.json"
    if not schema_file.exists():
        pytest.skip("this Airflow version ships no provider info schema")

    jsonschema.validate(get_provider_info(), json.loads(schema_file.read_text()))


def test_providers_manager_finds_the_provider_and_its_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()

    assert manager.providers["airflow-provider-atscale"].version == __version__
    hook = manager.hooks["atscale"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_atscale.hooks.atscale.AtScaleHook"
    assert hook.connection_id_attribute_name == "atscale_conn_id"
    assert hook.hook_name == "AtScale"
    assert hook.connection_testable is True


@skip_on("3.0", "3.1", reason="their connection forms need WTForms, from the FAB provider: not installed")
def test_the_connection_form_relabels_hides_and_adds_fields() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    behaviour = manager.field_behaviours["atscale"]
    widgets = {
        name.removeprefix("extra__atscale__") for name in manager.connection_form_widgets if "atscale" in name
    }

    assert behaviour["relabeling"]["password"] == "API token"
    assert behaviour["relabeling"]["host"] == "AtScale URL"
    assert set(behaviour["hidden_fields"]) == {"schema", "extra"}
    assert "https://atscale.example.com" in behaviour["placeholders"].values()
    assert widgets == {
        "verify",
        "timeout",
        "auth_type",
        "client_id",
        "client_secret",
        "realm",
        "max_retries",
        "retry_max_wait",
        "lineage_namespaces",
    }
    assert manager.connection_form_widgets["extra__atscale__client_secret"].is_sensitive is True


def test_the_version_lives_in_one_place() -> None:
    from importlib.metadata import version

    assert version("airflow-provider-atscale") == airflow_provider_atscale.__version__
    assert get_provider_info()["versions"] == [__version__]
