"""``shelf eval`` and ``shelf eval-compliance`` print one JSON object with ``--json``."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main


def test_eval_json_scores_each_display_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", "product-light", "--count", "1", "--seed", "3",
                 "--threads", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (ref, kinds), = report["models"].items()
    assert ref.startswith("product-light/")
    assert set(kinds) == {"gondola", "endcap"}
    for r in kinds.values():
        assert 0.0 <= r["map50"] <= 1.0 and r["latency_ms_median"] > 0


def test_eval_compliance_json_gives_errors_per_display(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval-compliance", "--count", "2", "--seed", "3", "--threads", "1",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["displays"]) == {"gondola", "endcap", "all"}
    assert report["displays"]["all"]["photos"] == 2
    assert report["displays"]["all"]["error_p50"] >= 0
