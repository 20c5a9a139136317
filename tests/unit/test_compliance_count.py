"""Count-based planogram compliance: planned facings, found facings, gaps and surprises."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.compliance import count_compliance, facing_counts, planned_facings

# Two shelves; SKU-A appears on both, SKU-C has no explicit facings (defaults to 1).
PLANOGRAM: dict[str, Any] = {
    "planogram_id": "pg-endcap-12",
    "version": 3,
    "shelves": [
        {"shelf": 1, "positions": [{"sku": "SKU-A", "facings": 2},
                                   {"sku": "SKU-B", "facings": 3}]},
        {"shelf": 2, "positions": [{"sku": "SKU-A", "facings": 1},
                                   {"sku": "SKU-C"}]},
    ],
}
# planned: A=3, B=3, C=1 -> 7 facings


@pytest.mark.parametrize(("planogram", "expected"), [
    (PLANOGRAM, {"SKU-A": 3, "SKU-B": 3, "SKU-C": 1}),
    ({}, {}),
    ({"shelves": []}, {}),
    ({"shelves": [{"shelf": 1}]}, {}),
    ({"shelves": [{"positions": [{"sku": 4006381333931, "facings": "2"}]}]},
     {"4006381333931": 2}),
    ({"shelves": [{"positions": [{"sku": "Z"}, {"sku": "A"}, {"sku": "M"}]}]},
     {"A": 1, "M": 1, "Z": 1}),
], ids=["sums-across-shelves", "no-shelves-key", "no-shelves", "shelf-without-positions",
        "numeric-sku-and-string-facings", "sorted-by-sku"])
def test_planned_facings(planogram: dict[str, Any], expected: dict[str, int]) -> None:
    result = planned_facings(planogram)

    assert result == expected
    assert list(result) == sorted(result)


def test_facing_counts_sorted_counter() -> None:
    assert list(facing_counts(["b", "a", "b", "c", "b"]).items()) == [("a", 1), ("b", 3),
                                                                       ("c", 1)]


@pytest.mark.parametrize(("detected", "compliance", "found", "out_of_stock", "unexpected",
                          "unknown"), [
    (["SKU-A"] * 3 + ["SKU-B"] * 3 + ["SKU-C"], 1.0, 7, [], [], 0),
    (["SKU-A"] * 9 + ["SKU-B"] * 3 + ["SKU-C"] * 4, 1.0, 7, [], [], 0),
    (["SKU-A"] * 9, round(3 / 7, 4), 3, ["SKU-B", "SKU-C"], [], 0),
    (["SKU-A"] * 3 + ["SKU-B"] * 3, round(6 / 7, 4), 6, ["SKU-C"], [], 0),
    (["SKU-A", "SKU-B", "SKU-C"], round(3 / 7, 4), 3, [], [], 0),
    (["SKU-A"] * 3 + ["SKU-B"] * 3 + ["SKU-C", "SKU-X", "SKU-X", "SKU-W"], 1.0, 7, [],
     ["SKU-W", "SKU-X"], 0),
    (["SKU-A"] * 3 + ["SKU-B"] * 3 + ["unknown"] * 2, round(6 / 7, 4), 6, ["SKU-C"], [], 2),
    ([], 0.0, 0, ["SKU-A", "SKU-B", "SKU-C"], [], 0),
], ids=["all-present", "extra-facings-capped", "extra-of-one-does-not-cover-others",
        "missing-sku-out-of-stock", "partial-facings", "unexpected-skus-listed-sorted",
        "unknown-counted-not-unexpected", "empty-shelf"])
def test_count_compliance(detected: list[str], compliance: float, found: int,
                          out_of_stock: list[str], unexpected: list[str], unknown: int) -> None:
    result = count_compliance(planogram=PLANOGRAM, detected=detected)

    assert result["compliance"] == pytest.approx(compliance)
    assert result["planned_facings"] == 7
    assert result["found_facings"] == found
    assert result["out_of_stock"] == out_of_stock
    assert result["unexpected"] == unexpected
    assert result["unknown_products"] == unknown


def test_count_compliance_report_details() -> None:
    # Given a shelf with SKU-A over-stocked, SKU-B short, SKU-C gone and a stray SKU-X
    detected = ["SKU-A"] * 5 + ["SKU-B"] + ["SKU-X"]

    # When compliance is counted
    result = count_compliance(planogram=PLANOGRAM, detected=detected)

    # Then per-SKU figures report what was seen (uncapped), while compliance caps each SKU
    assert result["per_sku"] == {"SKU-A": {"planned": 3, "found": 5},
                                 "SKU-B": {"planned": 3, "found": 1},
                                 "SKU-C": {"planned": 1, "found": 0}}
    assert result["found_facings"] == 3 + 1
    assert result["compliance"] == round(4 / 7, 4)
    assert result["facings"] == {"SKU-A": 5, "SKU-B": 1, "SKU-X": 1}
    assert result["planogram"] == {"id": "pg-endcap-12", "version": 3}


def test_custom_unknown_label() -> None:
    result = count_compliance(planogram=PLANOGRAM, detected=["SKU-A", "?", "?", "unknown"],
                              unknown_label="?")

    assert result["unknown_products"] == 2
    assert result["unexpected"] == ["unknown"]


def test_no_planogram_gives_no_compliance() -> None:
    result = count_compliance(planogram=None, detected=["SKU-B", "SKU-A", "SKU-B"])

    assert result == {"compliance": None, "facings": {"SKU-A": 1, "SKU-B": 2},
                      "planogram": None}


@pytest.mark.parametrize("planogram", [
    {"planogram_id": "pg-empty", "shelves": []},
    {"planogram_id": "pg-empty"},
    {"planogram_id": "pg-zero", "shelves": [{"positions": [{"sku": "SKU-A", "facings": 0}]}]},
], ids=["no-positions", "no-shelves-key", "zero-facings"])
def test_empty_planogram_gives_no_compliance(planogram: dict[str, Any]) -> None:
    result = count_compliance(planogram=planogram, detected=["SKU-A"])

    assert result["compliance"] is None
    assert result["planned_facings"] == 0
    assert result["planogram"]["id"] == planogram["planogram_id"]


def test_compliance_is_rounded_to_four_places() -> None:
    plan = {"shelves": [{"positions": [{"sku": "A", "facings": 3}]}]}

    assert count_compliance(planogram=plan, detected=["A"])["compliance"] == 0.3333
