"""
The ``atscale`` connection form for Airflow 2.11, 3.0 and 3.1, which build it from the hook class's own
``get_connection_form_widgets`` and ``get_ui_field_behaviour`` (Airflow 3.2 and later read it from
``get_provider_info()``). :func:`with_connection_form` puts both on the hook class, built from the provider
info, so the form is declared once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from airflow_provider_atscale import CONNECTION_TYPE, get_provider_info
from airflow_provider_atscale._compat import AIRFLOW_V_3_2_PLUS

HookClass = TypeVar("HookClass", bound=type)


def with_connection_form(hook_class: HookClass) -> HookClass:
    """Class decorator: give the hook the form methods where Airflow reads them (a no-op from 3.2, which warns
    about hooks that define them)."""
    if not AIRFLOW_V_3_2_PLUS:
        methods: dict[str, Callable[[type], dict[str, Any]]] = {
            "get_connection_form_widgets": connection_form_widgets,
            "get_ui_field_behaviour": ui_field_behaviour,
        }
        for name, method in methods.items():
            setattr(hook_class, name, classmethod(method))
    return hook_class


def connection_form_widgets(hook_class: type | None = None) -> dict[str, Any]:
    """The form's extra fields as WTForms fields, from the provider info's ``conn-fields``. Airflow calls it
    only where Flask-AppBuilder and WTForms are (the Airflow 2 webserver, 3.0 and 3.1 with the FAB provider).
    """
    return {name: _widget(spec) for name, spec in _connection_type_info()["conn-fields"].items()}


def _widget(spec: Mapping[str, Any]) -> Any:
    # Neither typed nor installed where mypy runs (Airflow 3.2+ without the FAB provider).
    from flask_appbuilder.fieldwidgets import (  # type: ignore[import-not-found,unused-ignore]
        BS3PasswordFieldWidget,
        BS3TextFieldWidget,
    )
    from flask_babel import lazy_gettext  # type: ignore[import-not-found,unused-ignore]
    from wtforms import (  # type: ignore[import-untyped,unused-ignore]
        BooleanField,
        IntegerField,
        PasswordField,
        StringField,
    )
    from wtforms.validators import NumberRange, Optional, any_of  # type: ignore[import-untyped,unused-ignore]

    schema: Mapping[str, Any] = spec.get("schema", {})
    types = schema.get("type", "string")
    types = {types} if isinstance(types, str) else set(types)
    default = schema.get("default")
    validators: list[Any] = [Optional()]
    widget: Any = BS3TextFieldWidget()
    if "boolean" in types:
        field_class, widget = BooleanField, None
    elif "integer" in types:
        field_class = IntegerField
        if "minimum" in schema or "maximum" in schema:
            validators.append(NumberRange(min=schema.get("minimum"), max=schema.get("maximum")))
    elif schema.get("format") == "password":
        field_class, widget = PasswordField, BS3PasswordFieldWidget()
    else:
        # Airflow accepts no float or select field: numbers are typed as text and checked when the
        # connection is read; a choice is text checked against its values.
        field_class = StringField
        default = None if default is None else str(default)
        if "enum" in schema:
            validators.append(any_of(schema["enum"]))
    return field_class(
        lazy_gettext(spec["label"]),
        validators=validators,
        widget=widget,
        description=spec.get("description", ""),
        default=default,
    )


def ui_field_behaviour(hook_class: type | None = None) -> dict[str, Any]:
    """Hidden, relabelled and pre-filled standard fields, from the provider info's ``ui-field-behaviour``."""
    declared: Mapping[str, Any] = _connection_type_info()["ui-field-behaviour"]
    return {key.replace("-", "_"): value for key, value in declared.items()}


def _connection_type_info() -> Mapping[str, Any]:
    for connection_type in get_provider_info()["connection-types"]:
        if connection_type["connection-type"] == CONNECTION_TYPE:
            info: Mapping[str, Any] = connection_type
            return info
    raise LookupError(f"get_provider_info() declares no {CONNECTION_TYPE!r} connection type")
