"""
The ``atscale`` connection form for the Airflow versions that build it from hook methods.

Airflow 3.2 and later read the form from :func:`airflow_provider_atscale.get_provider_info`
(``conn-fields`` and ``ui-field-behaviour``) without importing the hook. Airflow 2.11, 3.0 and 3.1 call the
hook class's ``get_connection_form_widgets`` and ``get_ui_field_behaviour`` instead, and only where the
class itself defines them: they look in the class's own ``__dict__``, so methods inherited from a mixin are
not seen. :func:`with_connection_form` puts both on the hook class, built from the provider info, so the
form is declared once, in ``get_provider_info()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from airflow_provider_atscale import CONNECTION_TYPE, get_provider_info
from airflow_provider_atscale._compat import AIRFLOW_V_3_2_PLUS

HookClass = TypeVar("HookClass", bound=type)


def with_connection_form(hook_class: HookClass) -> HookClass:
    """
    Class decorator: give the hook the connection form methods on Airflow versions that read them.

    A no-op from Airflow 3.2, which reads the form from the provider info and warns about hooks that
    still define the methods.

    :param hook_class: the hook class, whose ``conn_type`` is ``atscale``.
    """
    if not AIRFLOW_V_3_2_PLUS:
        methods: dict[str, Callable[[type], dict[str, Any]]] = {
            "get_connection_form_widgets": connection_form_widgets,
            "get_ui_field_behaviour": ui_field_behaviour,
        }
        for name, method in methods.items():
            setattr(hook_class, name, classmethod(method))
    return hook_class


def connection_form_widgets(hook_class: type | None = None) -> dict[str, Any]:
    """
    The form's extra fields as WTForms fields, from the provider info's ``conn-fields``.

    Imports Flask-AppBuilder, Flask-Babel and WTForms, which only the Airflow 2 webserver (or Airflow 3.0
    and 3.1 with the FAB provider) has: Airflow calls this only there, and copes with their absence.

    :param hook_class: the hook class, when called as its classmethod; unused.
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
    """
    Hidden, relabelled and pre-filled standard fields, from the provider info's ``ui-field-behaviour``.

    :param hook_class: the hook class, when called as its classmethod; unused.
    """
    declared: Mapping[str, Any] = _connection_type_info()["ui-field-behaviour"]
    return {key.replace("-", "_"): value for key, value in declared.items()}


def _connection_type_info() -> Mapping[str, Any]:
    for connection_type in get_provider_info()["connection-types"]:
        if connection_type["connection-type"] == CONNECTION_TYPE:
            info: Mapping[str, Any] = connection_type
            return info
    raise LookupError(f"get_provider_info() declares no {CONNECTION_TYPE!r} connection type")
