"""
The one set of parsers every boundary uses (``_inputs.py``): what each accepts, and each refusal's message,
checked here once. Callers (the hook, the operator, the sensor) test only that they refuse before any request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_atscale._inputs import (
    BatchRef,
    BuildRequest,
    ConnectionSettings,
    LineageTarget,
    check_one_of,
    parse_bool,
    parse_count,
    parse_grace_period_overrides,
    parse_id,
    parse_name,
    parse_seconds,
)
from airflow_provider_atscale.errors import AtScaleConfigurationError

Parser = Callable[[str, object], object]


def overrides(_field: str, value: object) -> object:
    return parse_grace_period_overrides(value)


@pytest.mark.parametrize(
    ("parse", "value", "expected"),
    [
        (parse_id, "c0ffee00-0000-4000-8000-000000000001", "c0ffee00-0000-4000-8000-000000000001"),
        (parse_name, "Internet Sales", "Internet Sales"),
        (parse_bool, True, True),
        (parse_bool, " FALSE ", False),
        (parse_bool, "true", True),
        (parse_seconds, 7, 7.0),
        (parse_seconds, " 7.5 ", 7.5),
        (parse_seconds, timedelta(minutes=2), 120.0),
        (partial(parse_seconds, zero=True), 0, 0.0),
        (parse_count, 0, 0),
        (parse_count, " 30 ", 30),
        (parse_count, 2.0, 2),
        (partial(parse_count, maximum=100), 100, 100),
        (overrides, None, {}),
        (overrides, " ", {}),
        (overrides, {"sales": "30", " returns ": " 0 "}, {"sales": 30, "returns": 0}),
        (overrides, '{"sales": 30, "returns": "7"}', {"sales": 30, "returns": 7}),
    ],
)
def test_a_parser_accepts_and_normalises(parse: Parser, value: object, expected: object) -> None:
    parsed = parse("field", value)

    assert parsed == expected
    assert type(parsed) is type(expected)


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (parse_id, "", "field must be a non-empty string id, got ''"),
        (parse_id, None, "field must be a non-empty string id, got None"),
        (parse_id, 7, "field must be a non-empty string id, got 7"),
        *(
            (
                parse_id,
                bad,
                f"field must be an AtScale id without whitespace, slashes, '?', '#' or '%', got {bad!r}",
            )
            for bad in ("a/b", "a b", "a\tb", "a?b", "a#b", "a%2Fb", "a\\b")
        ),
        (parse_name, "  ", "field must be a non-empty name, got '  '"),
        (parse_name, None, "field must be a non-empty name, got None"),
        *(
            (parse_bool, bad, f"field must be True, False, 'true' or 'false', got {bad!r}")
            for bad in ("yes", "1", 1, 0, None, "")
        ),
        *(
            (parse_seconds, bad, f"field must be a positive number of seconds, got {bad!r}")
            for bad in (0, -1, "soon", True, float("inf"), float("nan"), None)
        ),
        (partial(parse_seconds, zero=True), -1, "field must be a number of seconds, 0 or more, got -1"),
        *(
            (parse_count, bad, f"field must be a whole number, 0 or more, got {bad!r}")
            for bad in (-1, "-1", 2.5, True, None, "thirty")
        ),
        (partial(parse_count, maximum=100), 101, "field must be a whole number from 0 to 100, got 101"),
        (
            overrides,
            "{not json",
            "grace_period_overrides must be a mapping or a JSON object string such as "
            "'{\"factinternetsales\": 30}', got '{not json'",
        ),
        (
            overrides,
            "[1]",
            "grace_period_overrides must map dataset names to non-negative integers, got list [1]",
        ),
        (overrides, 42, "grace_period_overrides must map dataset names to non-negative integers, got int 42"),
        (
            overrides,
            {"sales": -1},
            "grace_period_overrides['sales'] must be a whole number, 0 or more, got -1",
        ),
        (overrides, {"": 1}, "grace_period_overrides keys must be non-empty dataset names, got ''"),
        (overrides, {1: 1}, "grace_period_overrides keys must be non-empty dataset names, got 1"),
    ],
)
def test_a_parser_refuses_naming_the_field_the_value_and_what_is_accepted(
    parse: Parser, value: object, message: str
) -> None:
    with pytest.raises(AtScaleConfigurationError) as excinfo:
        parse("field", value)

    assert str(excinfo.value) == message


@pytest.mark.parametrize(
    ("id_value", "name_value", "message"),
    [
        (None, None, "give exactly one of catalog_id or catalog_name, got neither"),
        (
            "c-1",
            "Sales",
            "give exactly one of catalog_id or catalog_name, got both "
            "(catalog_id='c-1', catalog_name='Sales')",
        ),
    ],
)
def test_a_catalog_is_named_by_exactly_one_of_its_id_and_its_name(
    id_value: str | None, name_value: str | None, message: str
) -> None:
    check_one_of("catalog_id", "c-1", "catalog_name", None)
    check_one_of("catalog_id", None, "catalog_name", "Sales")
    with pytest.raises(AtScaleConfigurationError) as excinfo:
        check_one_of("catalog_id", id_value, "catalog_name", name_value)

    assert str(excinfo.value) == message


def test_a_build_request_is_checked_and_normalised() -> None:
    build = BuildRequest.parse(
        catalog_id="c-1", model_id="m-1", full_build="false", grace_period_overrides='{"sales": "30"}'
    )

    assert build == BuildRequest("c-1", "m-1", False, {"sales": 30})
    assert build.build_type == "incremental"
    assert build.describe() == "an incremental build of model m-1 in catalog c-1 with overrides {'sales': 30}"
    full = BuildRequest.parse(catalog_id="c-1", model_id="m-1", full_build=True, grace_period_overrides={})
    assert (full.build_type, full.describe()) == ("full", "a full build of model m-1 in catalog c-1")


def test_a_full_build_with_overrides_is_refused() -> None:
    with pytest.raises(
        AtScaleConfigurationError, match="apply to incremental builds only, but full_build=True"
    ):
        BuildRequest.parse(catalog_id="c", model_id="m", full_build=True, grace_period_overrides={"sales": 3})


def test_a_batch_reference_checks_each_id() -> None:
    assert BatchRef.parse(catalog_id="c", model_id="m", batch_id="b") == BatchRef("c", "m", "b")
    with pytest.raises(AtScaleConfigurationError, match=r"^batch_id must be an AtScale id"):
        BatchRef.parse(catalog_id="c", model_id="m", batch_id="../b")


# The connection


def read(
    host: str | None = "https://atscale.test", password: str | None = "tok", **fields: Any
) -> ConnectionSettings:
    """Settings of a connection ``atscale_x`` with these fields; an ``extra`` dict is stored as JSON."""
    extra = fields.pop("extra", None)
    conn = {"host": host, "port": None, "login": None, "password": password, **fields}
    conn["extra"] = json.dumps(extra) if isinstance(extra, (dict, list)) else extra
    return ConnectionSettings.read("atscale_x", SimpleNamespace(**conn))  # type: ignore[arg-type]


def test_a_connection_with_only_a_host_and_a_token_takes_the_defaults() -> None:
    settings = read()

    assert (settings.base_url, settings.token) == ("https://atscale.test", "tok")
    assert (settings.verify, settings.timeout, settings.auth_type) == (True, 30.0, "token")
    assert (settings.max_retries, settings.retry_max_wait) == (5, 300.0)
    assert (settings.client_id, settings.realm, settings.lineage_namespaces) == (
        "atscale-ai-link",
        "atscale",
        {},
    )


@pytest.mark.parametrize(
    ("host", "port", "base_url"),
    [
        ("atscale.test", None, "https://atscale.test"),
        ("http://atscale.test:8080/engine/", None, "http://atscale.test:8080/engine"),
        ("atscale.test/engine/", 8443, "https://atscale.test:8443/engine"),
        ("https://[::1]:9000", None, "https://[::1]:9000"),
    ],
)
def test_the_host_becomes_a_base_url_keeping_a_proxy_path_and_the_port(
    host: str, port: int | None, base_url: str
) -> None:
    assert read(host, port=port).base_url == base_url


def test_extras_are_read_in_either_spelling_blank_ones_as_defaults(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    settings = read(
        login="svc",
        extra={
            "verify": f" {bundle} ",
            "extra__atscale__timeout": "7.5",
            "auth_type": " PASSWORD ",
            "client_secret": "s3cr3t",
            "realm": "",
            "max_retries": "2",
            "retry_max_wait": 0,
            "lineage_namespaces": json.dumps(
                {"wh": "snowflake://acme", "pg": {"namespace": "postgres://db:5432", "database": "DW"}}
            ),
        },
    )

    assert (settings.verify, settings.timeout, settings.auth_type) == (str(bundle), 7.5, "password")
    assert (settings.login, settings.client_secret, settings.realm) == ("svc", "s3cr3t", "atscale")
    assert (settings.max_retries, settings.retry_max_wait) == (2, 0.0)
    assert settings.lineage_namespaces == {
        "wh": LineageTarget("snowflake://acme"),
        "pg": LineageTarget("postgres://db:5432", "DW"),
    }
    assert settings.secrets == ("tok", "s3cr3t")
    assert read(extra={"verify": "False"}).verify is False


# Each message begins "Connection 'atscale_x'"; the table holds the rest.
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": ""}, " has no host: set it to AtScale's URL, e.g. https://atscale.example.com"),
        *(
            (
                {"host": host},
                ": host must be an http(s) URL such as https://atscale.example.com (a path prefix is "
                f"allowed, no query), got {host!r}",
            )
            for host in (
                "ftp://a.test",
                "https://",
                "https://a.test?x=1",
                "https://a.test#top",
                "a test",
                "a:b",
            )
        ),
        ({"port": 70000}, ": port must be a number from 1 to 65535, got 70000"),
        (
            {"password": None},
            " has no API token: put the AtScale API token in its password field (Design Center > Account > "
            "API Token)",
        ),
        (
            {"extra": "{not json"},
            ': extra must be a JSON object such as {"verify": true, "timeout": 30}, but it is not valid JSON',
        ),
        ({"extra": [1]}, ": extra must be a JSON object, got list"),
        (
            {"extra": {"verify": "maybe"}},
            ": extra 'verify' must be true, false or the path of an existing CA bundle file, got 'maybe'",
        ),
        ({"extra": {"timeout": -1}}, ": extra 'timeout' must be a positive number of seconds, got -1"),
        (
            {"extra": {"auth_type": "kerberos"}},
            ": extra 'auth_type' must be one of token, token_exchange, password, got 'kerberos'",
        ),
        *(
            (
                fields,
                f" has auth_type 'password' but no {missing}: set the AtScale user's name as login and its "
                "password as password",
            )
            for fields, missing in (
                ({"extra": {"auth_type": "password"}}, "login"),
                ({"login": "svc", "password": "", "extra": {"auth_type": "password"}}, "password"),
            )
        ),
        (
            {"extra": {"max_retries": 101}},
            ": extra 'max_retries' must be a whole number from 0 to 100, got 101",
        ),
        (
            {"extra": {"retry_max_wait": "long"}},
            ": extra 'retry_max_wait' must be a number of seconds, 0 or more, got 'long'",
        ),
        ({"extra": {"realm": "a/b"}}, ": extra 'realm' must be a non-empty string without '/', got 'a/b'"),
        # A secret is never quoted back.
        (
            {"extra": {"client_secret": "s3/cr"}},
            ": extra 'client_secret' must be a non-empty string without '/'",
        ),
        *(
            (
                {"extra": {"lineage_namespaces": value}},
                ": extra 'lineage_namespaces' must map AtScale connection ids to OpenLineage namespaces, "
                f'e.g. {{"snowflake-warehouse": "snowflake://acme-xy12345"}}; {got}',
            )
            for value, got in (
                (["snowflake://a"], "got ['snowflake://a']"),
                ("{not json", "got None"),
                ({"wh": {"database": "DB"}}, "got {'database': 'DB'} for 'wh'"),
                ({"wh": " "}, "got ' ' for 'wh'"),
            )
        ),
    ],
)
def test_a_bad_connection_is_refused_naming_it_the_field_and_what_is_accepted(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(AtScaleConfigurationError) as excinfo:
        read(**fields)

    assert str(excinfo.value) == f"Connection 'atscale_x'{message}"
