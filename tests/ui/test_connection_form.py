"""
The ``atscale`` connection form in Airflow's UI, driven in headless Chromium.

Opt-in: ``make test-ui`` installs Chromium and Playwright and sets ``ATSCALE_UI_TESTS=1``; without them
these tests skip. With ``ATSCALE_UI_SCREENSHOT_DIR`` set, the form's screenshot is also copied there as
``connection-form.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_atscale import CONNECTION_TYPE, get_provider_info
from tests.ui.helpers import AirflowServer, Emulator, chromium_executable, open_add_connection_form

if os.environ.get("ATSCALE_UI_TESTS") != "1":
    pytest.skip("browser tests are opt-in: run `make test-ui`", allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: run `make test-ui`")
if int(version("apache-airflow").split(".")[0]) < 3:
    pytest.skip("the form is Airflow 3's (airflow api-server); this is Airflow 2", allow_module_level=True)
if not Path(chromium_executable()).exists():
    pytest.skip(f"no Chromium at {chromium_executable()}: run `make test-ui`", allow_module_level=True)

from playwright.sync_api import expect

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

SCREENSHOT_DIR_VARIABLE = "ATSCALE_UI_SCREENSHOT_DIR"
SCREENSHOT_NAME = "connection-form.png"

ATSCALE_TYPE: dict[str, Any] = next(
    conn_type
    for conn_type in get_provider_info()["connection-types"]
    if conn_type["connection-type"] == CONNECTION_TYPE
)
FIELD_BEHAVIOUR: dict[str, Any] = ATSCALE_TYPE["ui-field-behaviour"]
CONN_FIELDS: dict[str, Any] = ATSCALE_TYPE["conn-fields"]
# How Airflow's form labels the standard fields a connection type can hide.
STANDARD_FIELD_LABELS = {
    "description": "Description",
    "host": "Host",
    "login": "Login",
    "password": "Password",
    "port": "Port",
    "schema": "Schema",
}
# Airflow 3.3's form always shows its "Extra Fields JSON" editor: hiding "extra" has no effect there.
HIDDEN_FIELDS = sorted(set(FIELD_BEHAVIOUR["hidden-fields"]) - {"extra"})


def extra_field(form: Locator, label: str) -> Locator:
    """
    One field of the "Extra Fields" section, found by its label.

    Airflow's form does not tie these labels to their inputs (the label's ``for`` names another id), so
    the field is found through the group that holds both.
    """
    exact_label = form.page.locator("label").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    return form.locator('[data-part="root"][role="group"]').filter(has=exact_label)


def open_section(form: Locator, title: str) -> None:
    """Open a section of the form ("Standard Fields", "Extra Fields"); opening one closes the others."""
    trigger = form.get_by_role("button", name=title, exact=True)
    if trigger.get_attribute("aria-expanded") != "true":
        trigger.click()
    expect(trigger).to_have_attribute("aria-expanded", "true")


def fill_atscale_connection(form: Locator, connection_id: str, emulator: Emulator, *, timeout: int) -> None:
    """Fill the form for a connection to the emulator, with the emulator's demo token."""
    form.get_by_label("Connection ID").fill(connection_id)
    form.get_by_label("AtScale URL", exact=True).fill(emulator.url)
    form.get_by_label("API token", exact=True).fill(emulator.token)
    # Airflow 3.3's Test button sends port 0 for an empty Port, which the server then refuses as "a
    # different destination" (apache/airflow#73298): the port is given explicitly.
    form.get_by_label("Port", exact=True).fill(str(urlsplit(emulator.url).port))
    open_section(form, "Extra Fields")
    extra_field(form, "Request timeout (seconds)").locator("input").fill(str(timeout))


def save(form: Locator) -> None:
    """Press Save and wait for the dialog to close."""
    form.get_by_role("button", name="Save").click()
    expect(form).to_be_hidden()


def publish_screenshot(shot: Path) -> None:
    """Copy a screenshot to ``$ATSCALE_UI_SCREENSHOT_DIR`` (for the README), if that is set."""
    target_dir = os.environ.get(SCREENSHOT_DIR_VARIABLE)
    if target_dir:
        Path(target_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(target_dir) / SCREENSHOT_NAME)


def test_host_is_asked_for_as_atscale_url_with_an_example(atscale_form: Locator) -> None:
    open_section(atscale_form, "Standard Fields")
    host = atscale_form.get_by_label("AtScale URL", exact=True)
    expect(host).to_have_attribute("name", "host")
    expect(host).to_have_attribute("placeholder", "https://atscale.example.com")


def test_password_is_asked_for_as_an_api_token_and_masked(atscale_form: Locator) -> None:
    open_section(atscale_form, "Standard Fields")
    token = atscale_form.get_by_label("API token", exact=True)
    expect(token).to_have_attribute("name", "password")
    expect(token).to_have_attribute("type", "password")


@pytest.mark.parametrize("field", sorted(FIELD_BEHAVIOUR["relabeling"]))
def test_every_declared_relabel_is_shown(atscale_form: Locator, field: str) -> None:
    open_section(atscale_form, "Standard Fields")
    label = FIELD_BEHAVIOUR["relabeling"][field]
    expect(atscale_form.get_by_label(label, exact=True)).to_have_attribute("name", field)


@pytest.mark.parametrize("field", sorted(FIELD_BEHAVIOUR["placeholders"]))
def test_every_declared_placeholder_is_shown(atscale_form: Locator, field: str) -> None:
    open_section(atscale_form, "Standard Fields")
    placeholder = FIELD_BEHAVIOUR["placeholders"][field]
    expect(atscale_form.locator(f'input[name="{field}"]')).to_have_attribute("placeholder", placeholder)


@pytest.mark.parametrize("field", HIDDEN_FIELDS)
def test_hidden_field_is_not_in_the_form(atscale_form: Locator, field: str) -> None:
    open_section(atscale_form, "Standard Fields")
    # The section is drawn once the host field shows: only then does an absent field mean a hidden one.
    expect(atscale_form.locator('input[name="host"]')).to_be_visible()
    expect(atscale_form.locator(f'[name="{field}"]')).to_have_count(0)
    expect(atscale_form.get_by_text(STANDARD_FIELD_LABELS[field], exact=True)).to_have_count(0)


@pytest.mark.parametrize(
    ("name", "label", "shown_default"),
    [("verify", "Verify TLS", "true"), ("timeout", "Request timeout (seconds)", "30")],
    ids=["verify", "timeout"],
)
def test_extra_field_is_shown_with_its_label_description_and_default(
    atscale_form: Locator, name: str, label: str, shown_default: str
) -> None:
    open_section(atscale_form, "Extra Fields")
    field = extra_field(atscale_form, label)
    expect(field.locator(f'input[name="element_{name}"]')).to_have_value(shown_default)
    expect(field).to_contain_text(CONN_FIELDS[name]["description"])


@pytest.mark.parametrize("name", sorted(CONN_FIELDS))
def test_every_declared_extra_field_is_shown_with_its_description(atscale_form: Locator, name: str) -> None:
    open_section(atscale_form, "Extra Fields")
    field = extra_field(atscale_form, CONN_FIELDS[name]["label"])
    expect(field).to_have_count(1)
    if "description" in CONN_FIELDS[name]:
        expect(field).to_contain_text(CONN_FIELDS[name]["description"])


@pytest.mark.parametrize(
    "name", sorted(name for name, spec in CONN_FIELDS.items() if spec["schema"].get("format") == "password")
)
def test_secret_extra_field_is_a_password_input(atscale_form: Locator, name: str) -> None:
    open_section(atscale_form, "Extra Fields")
    field = extra_field(atscale_form, CONN_FIELDS[name]["label"])
    expect(field.locator(f'input[name="element_{name}"]')).to_have_attribute("type", "password")


def test_saved_connection_keeps_the_extra_fields_in_extra(
    page: Page, airflow_server: AirflowServer, emulator_process: Emulator
) -> None:
    form = open_add_connection_form(page, airflow_server, "AtScale")
    fill_atscale_connection(form, "atscale_saved_extras", emulator_process, timeout=15)
    save(form)
    saved = airflow_server.get_json("/api/v2/connections/atscale_saved_extras")
    assert saved["conn_type"] == CONNECTION_TYPE
    assert saved["host"] == emulator_process.url
    extra = json.loads(str(saved["extra"]))
    assert (extra["verify"], extra["timeout"]) == ("true", 15)


def test_test_button_connects_to_the_emulator(
    page: Page, airflow_server: AirflowServer, emulator_process: Emulator, tmp_path: Path
) -> None:
    form = open_add_connection_form(page, airflow_server, "AtScale")
    connection_id = form.get_by_label("Connection ID")
    connection_id.fill("atscale_default")
    connection_id.blur()
    # The form as a user first sees it: labels and placeholders, nothing typed in yet.
    empty_form_shot = tmp_path / SCREENSHOT_NAME
    form.screenshot(path=empty_form_shot, animations="disabled")
    publish_screenshot(empty_form_shot)

    fill_atscale_connection(form, "atscale_default", emulator_process, timeout=30)
    form.screenshot(path=tmp_path / "connection-form-filled.png", animations="disabled")
    save(form)
    row = page.get_by_role("row").filter(has_text="atscale_default")
    row.get_by_role("button", name="Test Connection").click()

    toast = page.get_by_role("status").filter(has_text="Test Connection Successful")
    expect(toast).to_contain_text(f"Connected to AtScale at {emulator_process.url}")
    page.screenshot(path=tmp_path / "test-connection-result.png", animations="disabled")
    catalog_calls = [
        request
        for request in emulator_process.recorded_requests()
        if request["method"] == "GET" and request["path"] == "/v1/catalogs"
    ]
    assert catalog_calls, "the Test button's success did not come from the emulator"
