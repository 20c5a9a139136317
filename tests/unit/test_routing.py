"""Routing rules: which detector sees a photo, and why."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.routing import HEAVY, LIGHT, Route, RouteRules, choose_route

RULES = RouteRules(heavy_store_formats=("flagship",), heavy_display_types=("endcap", "promo"),
                   heavy_cameras=("cam-9",), dark_luminance=60.0, low_contrast=25.0)

# A photo that matches no rule: standard store, gondola, ordinary camera, good light.
PLAIN: dict[str, Any] = {"store_format": "standard", "display_type": "gondola",
                         "camera": "cam-1", "mean_luminance": 130.0, "contrast": 48.0}


def route(rules: RouteRules = RULES, **changes: Any) -> Route:
    return choose_route(rules=rules, **{**PLAIN, **changes})


@pytest.mark.parametrize(("changes", "path", "reason_part"), [
    ({}, LIGHT, "standard gondola in good light"),
    ({"store_format": "flagship"}, HEAVY, "store format flagship"),
    ({"display_type": "endcap"}, HEAVY, "display type endcap"),
    ({"display_type": "promo"}, HEAVY, "display type promo"),
    ({"camera": "cam-9"}, HEAVY, "camera cam-9"),
    ({"mean_luminance": 42.4}, HEAVY, "poor light: mean luminance 42"),
    ({"contrast": 12.0}, HEAVY, "poor light: contrast 12"),
], ids=["no-rule-light", "store-format", "display-endcap", "display-promo", "camera",
        "dark", "low-contrast"])
def test_each_rule(changes: dict[str, Any], path: str, reason_part: str) -> None:
    r = route(**changes)

    assert r.path == path
    assert reason_part in r.reason


@pytest.mark.parametrize(("changes", "path"), [
    ({"mean_luminance": 60.0}, LIGHT),
    ({"mean_luminance": 59.99}, HEAVY),
    ({"contrast": 25.0}, LIGHT),
    ({"contrast": 24.99}, HEAVY),
], ids=["luminance-at-threshold", "luminance-just-below", "contrast-at-threshold",
        "contrast-just-below"])
def test_light_thresholds_are_strict(changes: dict[str, Any], path: str) -> None:
    assert route(**changes).path == path


@pytest.mark.parametrize(("changes", "reason_start"), [
    ({"store_format": "flagship", "display_type": "endcap", "camera": "cam-9",
      "mean_luminance": 10.0, "contrast": 3.0}, "store format"),
    ({"display_type": "promo", "camera": "cam-9", "mean_luminance": 10.0, "contrast": 3.0},
     "display type"),
    ({"camera": "cam-9", "mean_luminance": 10.0, "contrast": 3.0}, "camera"),
    ({"mean_luminance": 10.0, "contrast": 3.0}, "poor light: mean luminance"),
], ids=["store-before-all", "display-before-camera-and-light", "camera-before-light",
        "luminance-before-contrast"])
def test_first_matching_rule_wins(changes: dict[str, Any], reason_start: str) -> None:
    # Given a photo that several rules would send to the heavy model
    r = route(**changes)

    # Then the reason names the earliest rule in the order, not a later one
    assert r.path == HEAVY
    assert r.reason.startswith(reason_start), r.reason


@pytest.mark.parametrize("changes", [
    {"store_format": "FLAGSHIP"},
    {"store_format": "Flagship"},
    {"display_type": "EndCap"},
    {"display_type": "PROMO"},
], ids=["store-upper", "store-title", "display-mixed", "display-upper"])
def test_store_format_and_display_type_ignore_case(changes: dict[str, Any]) -> None:
    assert route(**changes).path == HEAVY


def test_reason_keeps_the_value_as_given() -> None:
    assert route(store_format="Flagship").reason == "store format Flagship"


def test_camera_matches_exactly() -> None:
    assert route(camera="CAM-9").path == LIGHT


def test_no_heavy_rules_and_good_light_is_light() -> None:
    rules = RouteRules(heavy_store_formats=(), heavy_display_types=(), heavy_cameras=(),
                       dark_luminance=60.0, low_contrast=25.0)

    assert route(rules, store_format="flagship", display_type="endcap").path == LIGHT


def test_the_configured_rules_are_what_production_routes_by() -> None:
    from pipeline.settings import Settings

    rules = RouteRules.from_settings(Settings().routing)

    assert route(rules).path == LIGHT
    assert route(rules, store_format="flagship").path == HEAVY
    assert route(rules, camera="cam-9").path == LIGHT  # no camera is heavy by default


def test_rules_written_in_mixed_case_still_match() -> None:
    rules = RouteRules(heavy_store_formats=("Flagship",), heavy_display_types=("EndCap",),
                       heavy_cameras=(), dark_luminance=60.0, low_contrast=25.0)

    assert route(rules, store_format="flagship").path == HEAVY
