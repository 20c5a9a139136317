"""Model directories (card, labels, graph), execution providers and lazily built sessions."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.detect.card import ModelCard, load_model
from pipeline.detect.session import CPU, CUDA, LazySession, choose_providers
from pipeline.errors import ModelError, PermanentError
from pipeline.settings import ComplianceSettings
from tests.unit.onnx_models import constant_model, write_model_dir

CARD: dict[str, Any] = {"format": "yolov8", "input": {"size": [320, 320]}}
LABELS = ["SKU-A", "SKU-B"]
FAKE_ONNX = b"not really a graph"


def model_dir(root: Path, name: str = "m", version: str = "1", *, card: dict[str, Any] = CARD,
              labels: Any = LABELS, onnx: bytes | None = FAKE_ONNX) -> Path:
    mdir = write_model_dir(root, name, card=card, labels=labels, version=version)
    if onnx is not None:
        (mdir / "model.onnx").write_bytes(onnx)
    return mdir


def test_load_model_reads_card_labels_and_path(tmp_path: Path) -> None:
    mdir = model_dir(tmp_path, card={**CARD, "postprocess": {"score_threshold": 0.4},
                                     "tiling": {"grid": [3, 2]}, "output": {"extra": "ignored"}})

    files = load_model(tmp_path, "m")

    assert files.ref == "m/1"
    assert files.labels == ("SKU-A", "SKU-B")
    assert files.onnx_path == mdir / "model.onnx"
    assert isinstance(files.card, ModelCard)
    assert files.card.format == "yolov8"
    assert files.card.input.size == (320, 320)
    assert files.card.input.layout is None  # read from the graph later
    assert files.card.postprocess.score_threshold == 0.4
    assert files.card.postprocess.iou_threshold == 0.6  # default
    assert files.card.tiling is not None
    assert (files.card.tiling.grid, files.card.tiling.overlap) == ((3, 2), 0.2)


@pytest.mark.parametrize(("versions", "chosen"), [
    (["1"], "1"),
    (["1", "2"], "2"),
    (["2", "10", "9"], "10"),
    (["20240101", "20240315"], "20240315"),
], ids=["single", "two", "numeric-not-lexical", "dates"])
def test_latest_version_is_chosen(tmp_path: Path, versions: list[str], chosen: str) -> None:
    for v in versions:
        model_dir(tmp_path, version=v)
    (tmp_path / "m" / "99").mkdir()  # a version without a card is not a version

    files = load_model(tmp_path, "m")

    assert files.card.version == chosen
    assert files.onnx_path.parent.name == chosen


def test_explicit_version_wins_over_latest(tmp_path: Path) -> None:
    model_dir(tmp_path, version="1")
    model_dir(tmp_path, version="2")

    assert load_model(tmp_path, "m", "1").ref == "m/1"


@pytest.mark.parametrize(("labels", "expected"), [
    (["a", "b", "c"], ("a", "b", "c")),
    ({"0": "a", "1": "b"}, ("a", "b")),
    ({"3": "k", "2": "c", "0": "a", "1": "b", "10": "x", "4": "d", "5": "e", "6": "f",
      "7": "g", "8": "h", "9": "i"}, ("a", "b", "c", "k", "d", "e", "f", "g", "h", "i", "x")),
    ([1, 2], ("1", "2")),
    ([], ()),
], ids=["list", "dict", "dict-sorted-numerically", "numbers-as-strings", "empty"])
def test_labels_list_or_dict(tmp_path: Path, labels: Any, expected: tuple[str, ...]) -> None:
    model_dir(tmp_path, labels=labels)

    assert load_model(tmp_path, "m").labels == expected


def _no_model_dir(root: Path) -> None:
    (root / "other").mkdir()


def _no_card(root: Path) -> None:
    (root / "m" / "1").mkdir(parents=True)


def _bad_card_json(root: Path) -> None:
    (model_dir(root) / "card.json").write_text("{not json")


def _unknown_format(root: Path) -> None:
    model_dir(root, card={"format": "yolov3"})


def _card_without_format(root: Path) -> None:
    model_dir(root, card={"input": {}})


def _bad_pad_value(root: Path) -> None:
    model_dir(root, card={**CARD, "input": {"pad_value": 300}})


def _negative_box_agreement(root: Path) -> None:
    model_dir(root, card={**CARD, "postprocess": {"box_agreement": -1.0}})


def _missing_labels(root: Path) -> None:
    (model_dir(root) / "labels.json").unlink()


def _bad_labels_json(root: Path) -> None:
    (model_dir(root) / "labels.json").write_text("[1, 2")


def _labels_not_a_mapping(root: Path) -> None:
    model_dir(root, labels="SKU-A")


def _labels_with_non_numeric_keys(root: Path) -> None:
    model_dir(root, labels={"a": "SKU-A"})


def _labels_with_gaps(root: Path) -> None:
    model_dir(root, labels={"0": "SKU-A", "2": "SKU-C"})


def _missing_onnx(root: Path) -> None:
    model_dir(root, onnx=None)


def _unknown_version(root: Path) -> None:
    model_dir(root, version="1")


BROKEN = {
    "missing-model-dir": (_no_model_dir, None, "not found"),
    "no-version-with-card": (_no_card, None, "no model version"),
    "bad-card-json": (_bad_card_json, None, "unreadable"),
    "unknown-format": (_unknown_format, None, "unreadable"),
    "card-without-format": (_card_without_format, None, "unreadable"),
    "pad-value-out-of-range": (_bad_pad_value, None, "unreadable"),
    "negative-box-agreement": (_negative_box_agreement, None, "unreadable"),
    "missing-labels": (_missing_labels, None, "unreadable"),
    "bad-labels-json": (_bad_labels_json, None, "unreadable"),
    "labels-not-a-mapping": (_labels_not_a_mapping, None, "must map class index"),
    "labels-with-non-numeric-keys": (_labels_with_non_numeric_keys, None, "class indices"),
    "labels-with-gaps": (_labels_with_gaps, None, "cover class indices"),
    "missing-onnx": (_missing_onnx, None, "is missing"),
    "unknown-version": (_unknown_version, "7", "unreadable"),
}


@pytest.mark.parametrize(("make", "version", "message"), BROKEN.values(), ids=list(BROKEN))
def test_load_model_errors(tmp_path: Path, make: Any, version: str | None,
                           message: str) -> None:
    # Given a model directory broken in one way
    make(tmp_path)

    # Then loading it raises a permanent ModelError that says what is wrong
    with pytest.raises(ModelError, match=message) as info:
        load_model(tmp_path, "m", version)
    assert isinstance(info.value, PermanentError)


@pytest.mark.parametrize(("card_sha", "verify", "ok"), [
    ("right", True, True),
    ("wrong", True, False),
    ("wrong", False, True),
    (None, True, True),
], ids=["matching", "mismatch", "mismatch-not-verified", "no-digest-in-card"])
def test_sha256_verification(tmp_path: Path, card_sha: str | None, verify: bool,
                             ok: bool) -> None:
    digest = {"right": hashlib.sha256(FAKE_ONNX).hexdigest(), "wrong": "0" * 64, None: None}
    model_dir(tmp_path, card={**CARD, "sha256": digest[card_sha]})

    if ok:
        assert load_model(tmp_path, "m", verify_sha256=verify).ref == "m/1"
    else:
        with pytest.raises(ModelError, match="sha256"):
            load_model(tmp_path, "m", verify_sha256=verify)


# --- providers and sessions ------------------------------------------------------------------

@pytest.mark.parametrize(("device", "available", "expected"), [
    ("cpu", [CUDA, CPU], [CPU]),
    ("cpu", [CPU], [CPU]),
    ("auto", [CUDA, CPU], [CUDA, CPU]),
    ("auto", ["TensorrtExecutionProvider", CUDA, CPU], [CUDA, CPU]),
    ("auto", [CPU], [CPU]),
    ("auto", ["AzureExecutionProvider", CPU], [CPU]),
    ("cuda", [CUDA, CPU], [CUDA, CPU]),
], ids=["cpu-with-cuda", "cpu", "auto-with-cuda", "auto-ignores-tensorrt", "auto-without-cuda",
        "auto-ignores-azure", "cuda-with-cuda"])
def test_choose_providers(device: str, available: list[str], expected: list[str]) -> None:
    assert choose_providers(device, available) == expected


@pytest.mark.parametrize("available", [[CPU], [], ["AzureExecutionProvider", CPU]],
                         ids=["cpu-only", "nothing", "azure-and-cpu"])
def test_choose_providers_cuda_without_cuda_raises(available: list[str]) -> None:
    with pytest.raises(ModelError, match="CUDA requested"):
        choose_providers("cuda", available)


def test_lazy_session_is_built_once_per_process(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a lazy session on a real (tiny) graph
    mdir = write_model_dir(tmp_path, "s", card=CARD, labels=LABELS,
                           model=constant_model([np.ones((1, 6, 2), np.float32)],
                                                input_shape=[1, 3, 8, 8]))
    lazy = LazySession(mdir / "model.onnx", device="cpu")

    # When it is asked for twice in this process, then from a "forked child" (another pid)
    first = lazy.get()
    again = lazy.get()
    monkeypatch.setattr(os, "getpid", lambda: -12345)
    child = lazy.get()

    # Then the first two are the same session, the child gets its own, and all run on the CPU
    assert again is first
    assert child is not first
    assert lazy.get() is child
    assert lazy.providers == [CPU]
    out = child.run(None, {"images": np.zeros((1, 3, 8, 8), np.float32)})[0]
    np.testing.assert_array_equal(out, np.ones((1, 6, 2), np.float32))


def test_lazy_session_wraps_load_failures(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(FAKE_ONNX)
    lazy = LazySession(path, device="cpu")  # nothing is read yet

    with pytest.raises(ModelError, match="cannot load"):
        lazy.get()


def test_card_json_round_trip_keeps_declared_fields(tmp_path: Path) -> None:
    card = {**CARD, "input": {"size": [640, 480], "layout": "NHWC", "channels": "BGR",
                              "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            "metrics": {"map50": 0.8}}
    mdir = model_dir(tmp_path, card=card)

    files = load_model(tmp_path, "m")

    spec = files.card.input
    assert (spec.size, spec.layout, spec.channels) == ((640, 480), "NHWC", "BGR")
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.25, 0.25, 0.25)
    assert files.card.metrics == {"map50": 0.8}
    assert json.loads((mdir / "card.json").read_text())["name"] == "m"



@pytest.mark.parametrize(("settings", "card", "expected"), [
    ((None, None), (None, None), (0.25, 0.18)),  # neither says: the defaults
    ((None, None), (0.22, 0.16), (0.22, 0.16)),  # the card's, on its model's scale
    ((0.3, None), (0.22, 0.16), (0.3, 0.16)),  # what the settings set wins, field by field
    ((None, 0.3), (0.22, None), (0.22, 0.22)),  # evidence never above the facing score
], ids=["defaults", "card", "settings-win", "evidence-capped"])
def test_facing_and_evidence_scores_come_from_settings_then_card_then_defaults(
        settings: tuple[float | None, float | None], card: tuple[float | None, float | None],
        expected: tuple[float, float]) -> None:
    cfg = ComplianceSettings(min_score=settings[0], evidence_score=settings[1])

    assert cfg.scores(*card) == pytest.approx(expected)


@pytest.mark.parametrize("change", [
    {"input": {"size": [100_000, 320]}},
    {"input": {"size": [320, -5]}},
    {"input": {"scale": float("nan")}},
    {"input": {"std": [0, 1, 1]}},
    {"input": {"mean": [float("inf"), 0, 0]}},
    {"tiling": {"grid": [1000, 1000]}},
    {"postprocess": {"max_detections": 10_000_000}},
], ids=["huge-input", "negative-side", "nan-scale", "zero-std", "infinite-mean",
        "million-tiles", "unbounded-detections"])
def test_a_card_that_would_take_the_host_or_read_garbage_is_refused(
        tmp_path: Path, change: dict[str, Any]) -> None:
    card = {**CARD, **change, "input": {**CARD["input"], **change.get("input", {})}}
    model_dir(tmp_path, card=card)
    with pytest.raises(ModelError, match="unreadable model card"):
        load_model(tmp_path, "m")
