from __future__ import annotations

import pytest

from airflow_provider_atscale._validation import (
    check_overrides_allowed,
    normalize_full_build,
    normalize_grace_period_overrides,
    validate_id,
)
from airflow_provider_atscale.errors import AtScaleConfigurationError


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("FALSE", False), (" True ", True), ("false", False)],
)
def test_full_build_accepts_bools_and_their_strings(value: object, expected: bool) -> None:
    assert normalize_full_build(value) is expected


@pytest.mark.parametrize("value", ["yes", "1", 1, 0, None, "", "truthy"])
def test_full_build_refuses_anything_else_naming_the_value(value: object) -> None:
    with pytest.raises(AtScaleConfigurationError, match=rf"full_build must be .*got {value!r}"):
        normalize_full_build(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ("", {}),
        ({}, {}),
        ({"sales": 30}, {"sales": 30}),
        ({"sales": "30", " returns ": " 0 "}, {"sales": 30, "returns": 0}),
        ('{"sales": 30, "returns": "7"}', {"sales": 30, "returns": 7}),
    ],
)
def test_overrides_are_normalised(value: object, expected: dict[str, int]) -> None:
    assert normalize_grace_period_overrides(value) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("{not json", "must be a mapping or a JSON object string"),
        ("[1, 2]", "got list"),
        (42, "got int 42"),
        ({"sales": -1}, r"grace_period_overrides\['sales'\] must be a non-negative integer, got -1"),
        ({"sales": "-1"}, "got '-1'"),
        ({"sales": 1.5}, "got 1.5"),
        ({"sales": False}, "got False"),
        ({"sales": None}, "got None"),
        ({"sales": "thirty"}, "got 'thirty'"),
        ({"": 1}, "keys must be non-empty dataset names, got ''"),
        ({1: 1}, "keys must be non-empty dataset names, got 1"),
    ],
)
def test_overrides_refuse_bad_values_naming_them(value: object, match: str) -> None:
    with pytest.raises(AtScaleConfigurationError, match=match):
        normalize_grace_period_overrides(value)


def test_overrides_on_a_full_build_are_refused() -> None:
    with pytest.raises(AtScaleConfigurationError, match="incremental builds only"):
        check_overrides_allowed(True, {"sales": 3})


def test_empty_overrides_on_a_full_build_are_fine() -> None:
    check_overrides_allowed(True, {})
    check_overrides_allowed(False, {"sales": 3})


@pytest.mark.parametrize("value", ["", None, 7, "a/b", "a b", "a\tb", "a?b", "a#b", "a%2Fb", "a\\b"])
def test_ids_refuse_empty_non_strings_and_url_characters(value: object) -> None:
    with pytest.raises(AtScaleConfigurationError, match="model_id must be"):
        validate_id("model_id", value)


def test_ids_pass_through_unchanged() -> None:
    assert validate_id("catalog_id", "c0ffee00-0000-4000-8000-000000000001") == (
        "c0ffee00-0000-4000-8000-000000000001"
    )
