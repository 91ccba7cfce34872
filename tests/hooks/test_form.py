"""The connection form: declared once in get_provider_info(), read by every supported Airflow."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from airflow_provider_atscale import get_provider_info
from airflow_provider_atscale.hooks._form import (
    connection_form_widgets,
    ui_field_behaviour,
    with_connection_form,
)
from airflow_provider_atscale.hooks.atscale import AtScaleHook
from tests.compat import AIRFLOW_V_3_2_PLUS


def declared() -> dict[str, Any]:
    (atscale,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == "atscale"]
    return atscale


def test_field_behaviour_is_the_declared_one_in_the_hook_method_spelling() -> None:
    behaviour = declared()["ui-field-behaviour"]

    assert ui_field_behaviour() == {
        "hidden_fields": behaviour["hidden-fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }


def test_the_decorator_defines_the_methods_on_the_class_itself_where_airflow_reads_them() -> None:
    # Airflow before 3.2 reads the methods only from the hook class's own __dict__.
    decorated = with_connection_form(type("DecoratedHook", (AtScaleHook,), {}))

    assert ("get_connection_form_widgets" in decorated.__dict__) is not AIRFLOW_V_3_2_PLUS
    assert ("get_ui_field_behaviour" in decorated.__dict__) is not AIRFLOW_V_3_2_PLUS
    assert decorated.get_ui_field_behaviour() == (ui_field_behaviour() if not AIRFLOW_V_3_2_PLUS else {})


@pytest.mark.skipif(
    importlib.util.find_spec("flask_appbuilder") is None,
    reason="the WTForms connection form needs Flask-AppBuilder: part of Airflow 2, not of Airflow 3",
)
def test_widgets_carry_the_declared_labels_descriptions_and_defaults() -> None:
    widgets = connection_form_widgets()

    assert set(widgets) == set(declared()["conn-fields"])
    for name, spec in declared()["conn-fields"].items():
        (label,) = widgets[name].args
        assert str(label) == spec["label"]
        assert widgets[name].kwargs["description"] == spec["description"]
        declared_default, shown_default = spec["schema"].get("default"), widgets[name].kwargs["default"]
        assert (None if shown_default is None else str(shown_default)) == (
            None if declared_default is None else str(declared_default)
        )
        is_secret = spec["schema"].get("format") == "password"
        assert (widgets[name].field_class.__name__ == "PasswordField") is is_secret
