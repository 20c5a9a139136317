"""``shelf model add``: graphs are read, probed and registered whole, or refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto

from pipeline.cli import main
from pipeline.detect.card import load_model
from pipeline.detect.detector import Detector
from pipeline.detect.register import (
    ModelRejectedError,
    inspect_model,
    parse_imgsz,
    parse_names,
    register_model,
)
from pipeline.image import encode_jpeg
from pipeline.messages import PhotoRef, StageMessage
from pipeline.settings import get_settings
from pipeline.storage.keys import artifact_key
from pipeline.storage.ledger import MemoryLedger
from pipeline.storage.memory import MemoryStore
from pipeline.tasks import steps
from pipeline.tasks.runtime import Runtime
from tests.unit.onnx_models import constant_model

F32 = npt.NDArray[np.float32]
ANCHORS_640 = 80 * 80 + 40 * 40 + 20 * 20  # 8400


def yolo_columns(nc: int, *, normalized: bool, n: int = ANCHORS_640, size: int = 640) -> F32:
    """``[1, 4+nc, n]``: candidates spread over the frame, one confident box at (320, 240)."""
    rng = np.random.default_rng(1)
    out = np.zeros((1, 4 + nc, n), np.float32)
    out[0, 0] = rng.uniform(0, size, n)
    out[0, 1] = rng.uniform(0, size, n)
    out[0, 2] = rng.uniform(4, 60, n)
    out[0, 3] = rng.uniform(4, 60, n)
    out[0, 4:] = rng.uniform(0, 0.05, (nc, n))
    out[0, :4, 0] = np.array([320, 240, 40, 80]) * size / 640
    out[0, 4, 0] = 0.9
    if normalized:
        out[0, :4] /= size
    return out


def with_metadata(model: onnx.ModelProto, **meta: str) -> onnx.ModelProto:
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    return model


def save(tmp_path: Path, model: onnx.ModelProto, name: str = "byo.onnx") -> Path:
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def ultralytics(tmp_path: Path, *, normalized: bool, nc: int = 1,
                transposed: bool = False) -> Path:
    out = yolo_columns(nc, normalized=normalized)
    if transposed:
        out = np.ascontiguousarray(out.transpose(0, 2, 1))
    names = {i: ("object" if nc == 1 else f"sku{i}") for i in range(nc)}
    model = with_metadata(constant_model([out], input_shape=[1, 3, 640, 640]),
                          names=str(names), imgsz="[640, 640]", task="detect", stride="32")
    return save(tmp_path, model)


@pytest.mark.parametrize(("normalized", "transposed"), [
    (True, False), (False, False), (True, True), (False, True)],
    ids=["normalized", "pixels", "normalized-rows", "pixels-rows"])
def test_ultralytics_export_is_registered_with_probed_boxes(
        tmp_path: Path, normalized: bool, transposed: bool) -> None:
    # Given an Ultralytics one-class export, boxes either normalized (TFLite style) or pixels
    path = ultralytics(tmp_path, normalized=normalized, transposed=transposed)
    models = tmp_path / "models"

    # When it is registered with no flags
    dest, info = register_model(path, models=models)

    # Then the probe found the box convention, and the model is a product detector
    assert dest == models / "byo" / "1"
    assert info.normalized_boxes is normalized
    assert (info.format, info.task, info.labels) == ("yolov8", "product", ["object"])
    files = load_model(models, "byo")
    assert files.finds_products
    assert json.loads((dest / "labels.json").read_text()) == {"0": "object"}
    # fed the photo's own lighting, its neighbours suppressed only past Ultralytics' overlap
    assert files.card.input.lighting == "original" and not files.normalized_lighting
    assert files.card.postprocess.iou_threshold == 0.7
    assert files.card.postprocess.max_detections >= 700
    # And the detector puts the confident box where it is, in the image's pixels
    det = Detector(files, device="cpu").detect(np.zeros((640, 640, 3), np.uint8))
    assert len(det) >= 1
    np.testing.assert_allclose(det.xyxy[0], [300, 200, 340, 280], atol=1.0)


def end2end_rows(*, normalized: bool, classes: tuple[int, ...] = (0,), size: int = 640) -> F32:
    """``[1, 300, 6]`` after the graph's own NMS: boxes best first, then zero rows."""
    out = np.zeros((1, 300, 6), np.float32)
    for k, c in enumerate(classes):
        out[0, k] = [300 + 60 * k, 200, 340 + 60 * k, 280, 0.9 - 0.1 * k, c]
    out[0, len(classes):len(classes) + 40, :5] = [10, 10, 30, 40, 0.05]  # weak leftovers
    if normalized:
        out[0, :, :4] /= size
    return out


@pytest.mark.parametrize(("meta", "classes", "normalized", "labels"), [
    ({"names": "{0: 'object'}", "end2end": "True"}, (0,), False, ["object"]),
    ({"names": str({i: f"c{i}" for i in range(80)}), "end2end": "False",
      "args": "{'batch': 1, 'nms': True}"}, (7, 0), False, [f"c{i}" for i in range(80)]),
    ({"names": "{0: 'a', 1: 'b'}"}, (1, 0), False, ["a", "b"]),
    ({}, (0,), True, ["product"]),
], ids=["yolo26-end2end", "nms-export-80-classes", "two-classes-by-the-rows", "no-metadata"])
def test_an_export_with_nms_inside_the_graph_is_registered(
        tmp_path: Path, meta: dict[str, str], classes: tuple[int, ...], normalized: bool,
        labels: list[str]) -> None:
    # Given an export whose graph ends in NMS ([1, N, 6]: x1 y1 x2 y2 score class)
    model = constant_model([end2end_rows(normalized=normalized, classes=classes)],
                           input_shape=[1, 3, 640, 640])
    path = save(tmp_path, with_metadata(model, **meta))

    # When it is registered with no flags
    _, info = register_model(path, models=tmp_path / "m")

    # Then its rows are read as boxes after NMS, in the convention the probe found
    assert (info.format, info.normalized_boxes, info.labels) == ("end2end", normalized, labels)
    det = Detector(load_model(tmp_path / "m", "byo"), device="cpu").detect(
        np.zeros((640, 640, 3), np.uint8))
    np.testing.assert_allclose(det.xyxy[:len(classes)],
                               [[300 + 60 * k, 200, 340 + 60 * k, 280]
                                for k in range(len(classes))], atol=1.0)
    assert det.class_ids.tolist() == list(classes)


@pytest.mark.parametrize("meta", [{"names": "{0: 'object'}", "stride": "32"}, {}],
                         ids=["names", "no-metadata"])
def test_a_yolov5_export_scores_objectness_times_class(
        tmp_path: Path, meta: dict[str, str]) -> None:
    # Given a one-class YOLOv5 export: [1, 25200, 6] = cx cy w h objectness class-score,
    # its one object at (320, 240) sure of its class but only 0.5 sure it is an object
    rows = yolo_columns(1, normalized=False, n=3 * ANCHORS_640).transpose(0, 2, 1)
    rows = np.insert(rows, 4, np.random.default_rng(2).uniform(0, 0.3, rows.shape[1]), axis=2)
    rows[0, 0, 4:] = [0.5, 1.0]
    path = save(tmp_path, with_metadata(
        constant_model([np.ascontiguousarray(rows)], input_shape=[1, 3, 640, 640]), **meta))

    # When it is registered with no flags
    _, info = register_model(path, models=tmp_path / "m")

    # Then it is read as YOLOv5, and the box scores 0.5
    assert (info.format, info.normalized_boxes, info.task) == ("yolov5", False, "product")
    det = Detector(load_model(tmp_path / "m", "byo"), device="cpu").detect(
        np.zeros((640, 640, 3), np.uint8))
    np.testing.assert_allclose(det.xyxy[0], [300, 200, 340, 280], atol=1.0)
    assert float(det.scores[0]) == pytest.approx(0.5)


def test_rtdetr_queries(tmp_path: Path) -> None:
    q = np.zeros((1, 300, 4 + 3), np.float32)
    q[0, :, :4] = np.random.default_rng(0).uniform(0.05, 0.95, (300, 4)) * [1, 1, 0.1, 0.1]
    q[0, 0] = [0.5, 0.5, 0.1, 0.2, 0.1, 0.8, 0.1]
    path = save(tmp_path, constant_model([q], input_shape=[1, 3, 640, 640]))

    dest, info = register_model(path, models=tmp_path / "m", name="Detr Model")

    assert dest.parent.name == "detr-model"
    assert (info.format, info.normalized_boxes, info.task) == ("rtdetr", True, "sku")
    assert info.labels == ["class-0", "class-1", "class-2"]
    det = Detector(load_model(tmp_path / "m", "detr-model"), device="cpu").detect(
        np.zeros((640, 640, 3), np.uint8))
    np.testing.assert_allclose(det.xyxy[0], [288, 256, 352, 384], atol=1.0)
    assert int(det.class_ids[0]) == 1


def test_nhwc_uint8_and_dynamic_size_from_metadata(tmp_path: Path) -> None:
    out = yolo_columns(1, normalized=False, n=4 * 4 + 2 * 2 + 1, size=32)
    model = with_metadata(constant_model([out], input_shape=["b", "h", "w", 3],
                                         input_type=TensorProto.UINT8), imgsz="[32, 32]",
                          names="{0: 'product'}")

    _, info = register_model(save(tmp_path, model), models=tmp_path / "m")

    assert (info.layout, info.dtype, info.size_wh) == ("NHWC", "tensor(uint8)", (32, 32))
    assert any("imgsz" in n for n in info.notes)


def test_explicit_boxes_flag_wins_over_the_probe(tmp_path: Path) -> None:
    path = ultralytics(tmp_path, normalized=False)

    info = inspect_model(path, boxes="normalized")

    assert info.normalized_boxes is True


@pytest.mark.parametrize(("widest", "warned"), [(None, False), (64, False), (-65, True),
                                               (127, True)],
                         ids=["float", "7-bit", "8-bit-negative", "8-bit"])
def test_int8_weights_that_can_saturate_without_vnni_are_noted(
        tmp_path: Path, widest: int | None, warned: bool) -> None:
    model = onnx.load(str(ultralytics(tmp_path, normalized=False)))
    if widest is not None:  # a quantized weight among the initializers
        w = np.array([[3, -7, widest, 0]], np.int8)
        model.graph.initializer.append(onnx.numpy_helper.from_array(w, "conv_w_quantized"))

    info = inspect_model(save(tmp_path, model, "q.onnx"))

    notes = [n for n in info.notes if "VNNI" in n]
    assert bool(notes) is warned
    if warned:
        assert f"up to {abs(widest or 0)}" in notes[0] and "reduce_range" in notes[0]


def _classifier(tmp_path: Path) -> Path:
    return save(tmp_path, constant_model([np.zeros((1, 1000), np.float32)],
                                         input_shape=[1, 3, 224, 224]))


def _names_mismatch(tmp_path: Path) -> Path:
    model = constant_model([yolo_columns(2, normalized=True)], input_shape=[1, 3, 640, 640])
    return save(tmp_path, with_metadata(model, names="{0: 'a', 1: 'b', 2: 'c'}"))


def _logit_scores(tmp_path: Path) -> Path:
    out = yolo_columns(1, normalized=True)
    out[0, 4] = np.linspace(-8, 8, out.shape[2])
    return save(tmp_path, constant_model([out], input_shape=[1, 3, 640, 640]))


def _end2end_class_past_names(tmp_path: Path) -> Path:
    model = constant_model([end2end_rows(normalized=False, classes=(3,))],
                           input_shape=[1, 3, 640, 640])
    return save(tmp_path, with_metadata(model, names="{0: 'object'}"))


def _end2end_logit_scores(tmp_path: Path) -> Path:
    rows = end2end_rows(normalized=False)
    rows[0, 0, 4] = 3.5
    model = constant_model([rows], input_shape=[1, 3, 640, 640])
    return save(tmp_path, with_metadata(model, names="{0: 'object'}", end2end="True"))


def _end2end_flag_on_other_output(tmp_path: Path) -> Path:
    model = constant_model([yolo_columns(1, normalized=False)], input_shape=[1, 3, 640, 640])
    return save(tmp_path, with_metadata(model, names="{0: 'object'}", end2end="True"))


def _segmentation(tmp_path: Path) -> Path:
    model = constant_model([yolo_columns(1, normalized=True)], input_shape=[1, 3, 640, 640])
    return save(tmp_path, with_metadata(model, task="segment"))


def _not_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "x.onnx"
    path.write_bytes(b"GIF89a not a graph")
    return path


def _not_an_image_input(tmp_path: Path) -> Path:
    return save(tmp_path, constant_model([yolo_columns(1, normalized=True)],
                                         input_shape=[1, 640]))


def _nan_boxes(tmp_path: Path) -> Path:
    out = yolo_columns(1, normalized=True)
    out[0, 0, :10] = np.nan
    return save(tmp_path, constant_model([out], input_shape=[1, 3, 640, 640]))


def _bad_names(tmp_path: Path) -> Path:
    model = constant_model([yolo_columns(1, normalized=True)], input_shape=[1, 3, 640, 640])
    return save(tmp_path, with_metadata(model, names="__import__('os')"))


REFUSED: dict[str, tuple[Any, str]] = {
    "classifier": (_classifier, "not a detection layout"),
    "names-mismatch": (_names_mismatch, "does not carry 4 box values"),
    "logit-scores": (_logit_scores, "not probabilities"),
    "end2end-class-past-names": (_end2end_class_past_names, "class ids reach 3"),
    "end2end-logit-scores": (_end2end_logit_scores, "scores range .* not probabilities"),
    "end2end-flag-on-other-output": (_end2end_flag_on_other_output, "is not \\[1, N, 6\\]"),
    "segmentation": (_segmentation, "only detection models"),
    "not-onnx": (_not_onnx, "not an ONNX model"),
    "not-an-image-input": (_not_an_image_input, "4-D"),
    "nan-boxes": (_nan_boxes, "NaN"),
    "names-not-a-literal-dict": (_bad_names, "not a dict of class names"),
}


@pytest.mark.parametrize(("make", "message"), REFUSED.values(), ids=list(REFUSED))
def test_unreadable_models_are_refused_and_nothing_is_written(
        tmp_path: Path, make: Any, message: str) -> None:
    models = tmp_path / "models"

    with pytest.raises(ModelRejectedError, match=message):
        register_model(make(tmp_path), models=models, name="bad")

    assert not (models / "bad").exists() or not any((models / "bad").iterdir())


def test_existing_version_is_refused_and_kept(tmp_path: Path) -> None:
    path = ultralytics(tmp_path, normalized=True)
    models = tmp_path / "models"
    first, _ = register_model(path, models=models, version="1")
    card = (first / "card.json").read_text()

    with pytest.raises(ModelRejectedError, match="already exists"):
        register_model(path, models=models, version="1")

    assert (first / "card.json").read_text() == card
    assert sorted(p.name for p in (models / "byo").iterdir()) == ["1"]
    second, _ = register_model(path, models=models)
    assert second.name == "2"


def test_cli_add_then_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = ultralytics(tmp_path, normalized=True)
    models = tmp_path / "models"

    assert main(["model", "add", str(path), "--name", "sku110k", "--models", str(models)]) == 0
    assert main(["model", "list", "--models", str(models)]) == 0
    assert main(["model", "add", str(_classifier(tmp_path)), "--models", str(models)]) == 1

    out, err = capsys.readouterr()
    assert "registered" in out and "normalized" in out
    assert "sku110k/1" in out and "product" in out
    assert "refused" in err and "not a detection layout" in err


@pytest.mark.parametrize(("text", "expected"), [
    ("{0: 'object'}", ["object"]),
    ("{1: 'b', 0: 'a'}", ["a", "b"]),
    ("['x', 'y']", ["x", "y"]),
])
def test_parse_names(text: str, expected: list[str]) -> None:
    assert parse_names(text) == expected


@pytest.mark.parametrize("text", ["{'a': 'x'}", "{0: 'a', 2: 'c'}", "{None: 'x'}", "42",
                                  "__import__('os')"])
def test_names_that_are_no_class_list_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ModelRejectedError, match="metadata 'names'"):
        parse_names(text)


@pytest.mark.parametrize("imgsz", ["[100000, 100000]", "[8, 8]"])
def test_an_input_size_no_detector_has_is_refused_before_any_probe(
        tmp_path: Path, imgsz: str) -> None:
    # A dynamic graph whose metadata claims a size: probing 100000 x 100000 would ask for
    # 30 GB of pixels
    out = yolo_columns(1, normalized=False)
    model = with_metadata(constant_model([out], input_shape=[1, 3, "h", "w"]),
                          names="{0: 'object'}", imgsz=imgsz, task="detect")
    with pytest.raises(ModelRejectedError, match=r"outside 32\.\.4096"):
        register_model(save(tmp_path, model), models=tmp_path / "m")
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.parametrize(("text", "expected"), [
    ("[640, 640]", (640, 640)), ("[480, 640]", (640, 480)), ("320", (320, 320)),
    ("garbage", None), ("[1, 2, 3]", None), ("['a', 640]", None), ("[True, 640]", None),
    ("{1: 2}", None)])
def test_parse_imgsz(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_imgsz(text) == expected


@pytest.mark.parametrize(("image_wh", "expected"), [
    ((1280, 960), (768, 576)), ((960, 1280), (576, 768)), ((1280, 720), (768, 448)),
    ((400, 300), (768, 576)), ((768, 768), (768, 768))],
    ids=["4:3", "3:4", "16:9", "small-4:3", "square"])
def test_keep_aspect_fits_the_photo_inside_the_input(tmp_path: Path, image_wh: tuple[int, int],
                                                     expected: tuple[int, int]) -> None:
    out = np.zeros((1, 5, 40), np.float32)
    out[0, :4, :] = [[300], [300], [20], [20]]
    out[0, :, 0] = [100, 100, 40, 40, 0.9]
    path = save(tmp_path, constant_model([out], input_shape=[1, 3, "h", "w"]))
    register_model(path, models=tmp_path / "m", name="dyn", size_wh=(768, 768), boxes="pixels")
    det = Detector(load_model(tmp_path / "m", "dyn"), device="cpu")

    assert det.input_wh(image_wh) == expected
    w, h = image_wh
    found = det.detect(np.zeros((h, w, 3), np.uint8))
    assert len(found) == 1  # the graph ran on the fitted input


def test_list_names_the_embedder_and_a_broken_card_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.settings import REPO_ROOT

    models = tmp_path / "models"
    (models / "broken" / "1").mkdir(parents=True)
    (models / "broken" / "1" / "card.json").write_text("{}")
    (models / "sku-embed").symlink_to(REPO_ROOT / "models" / "sku-embed")

    assert main(["model", "list", "--models", str(models)]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("broken") and "unusable" in lines[0]
    assert lines[1].startswith("sku-embed/7") and "embedder" in lines[1]


@pytest.mark.parametrize(("lighting", "seen_wh"), [("original", [640, 480]),
                                                   ("normalized", [320, 240])])
def test_detect_stage_feeds_the_working_image_the_card_asks_for(
        tmp_path: Path, lighting: str, seen_wh: list[int]) -> None:
    # Given a registered SKU detector whose card asks for one lighting, and a photo whose
    # ingested and normalized artifacts differ (in size, so the result tells them apart)
    models = tmp_path / "models"
    dest, _ = register_model(ultralytics(tmp_path, normalized=False, nc=2), models=models)
    card = json.loads((dest / "card.json").read_text())
    card["input"]["lighting"] = lighting
    (dest / "card.json").write_text(json.dumps(card))
    base = get_settings()
    settings = base.model_copy(update={"models": base.models.model_copy(
        update={"root": models, "light": "byo", "device": "cpu"})})
    store, sha = MemoryStore(), "ab" * 32
    bucket = settings.s3.artifacts_bucket
    for name, (w, h) in (("ingested.jpg", (640, 480)), ("normalized.jpg", (320, 240))):
        store.put_bytes(bucket, artifact_key(sha, name), encode_jpeg(
            np.full((h, w, 3), 90, np.uint8), 90), "image/jpeg")
    rt = Runtime(settings, store, None, 0, MemoryLedger())  # type: ignore[arg-type]
    msg = StageMessage(photo=PhotoRef(bucket="raw", key="s1/a1/b1/c1/p.jpg"), sha256=sha,
                       route="light")

    # When the detect stage runs
    out = steps.detect(msg, rt)

    # Then the detector saw the image its card names
    doc = store.get_json(bucket, out.artifacts["detections"].key)
    assert doc["image_size"] == seen_wh and doc["model"] == "byo/1"


def _pack(bgr: tuple[int, int, int], w: int = 320, h: int = 240) -> npt.NDArray[np.uint8]:
    """A striped pack of one colour: two SKUs differ only in it."""
    out = np.empty((h, w, 3), np.uint8)
    out[:] = bgr
    out[:, ::16] = (np.array(bgr) * 0.5).astype(np.uint8)
    return out


@pytest.mark.parametrize("lighting", ["normalized", "original"])
def test_products_are_named_from_both_images_whatever_the_detector_sees(
        tmp_path: Path, lighting: str) -> None:
    # Given a product detector fed one lighting, a catalog of a lemon-yellow pack and the
    # same pack in grey, and a shelf photo of the yellow one, stored as ingest and normalize
    # store it (white balance makes the normalized one grey)
    from pipeline.core.lighting import normalize_lighting
    from pipeline.detect.recognizer import crop_views, rank_crops
    from pipeline.image import decode_jpeg
    from pipeline.settings import REPO_ROOT

    models = tmp_path / "models"
    dest, _ = register_model(ultralytics(tmp_path, normalized=False), models=models)
    card = json.loads((dest / "card.json").read_text())
    card["input"]["lighting"] = lighting
    (dest / "card.json").write_text(json.dumps(card))
    (models / "sku-embed").symlink_to(REPO_ROOT / "models" / "sku-embed")
    base = get_settings()
    settings = base.model_copy(update={"models": base.models.model_copy(
        update={"root": models, "light": "byo", "device": "cpu"})})
    store, sha = MemoryStore(), "cd" * 32
    rt = Runtime(settings, store, None, 0, MemoryLedger())  # type: ignore[arg-type]
    for sku, bgr in (("lemon-pack", (40, 210, 230)), ("grey-pack", (150, 150, 150))):
        rt.recognizer().enrol(sku, [(f"{sku}.jpg", encode_jpeg(_pack(bgr), 95))], brand=None,
                              name=None)
    photo = np.tile(_pack((40, 210, 230), 64, 96), (5, 10, 1))
    bucket = settings.s3.artifacts_bucket
    stored = {}
    for name, image in (("ingested.jpg", photo), ("normalized.jpg", normalize_lighting(photo))):
        store.put_bytes(bucket, artifact_key(sha, name), encode_jpeg(image, 92), "image/jpeg")
        stored[name] = decode_jpeg(store.get_bytes(bucket, artifact_key(sha, name)))
    msg = StageMessage(photo=PhotoRef(bucket="raw", key="s1/a1/b1/c1/p.jpg"), sha256=sha,
                       route="light")

    # When the detect stage runs
    out = steps.detect(msg, rt)

    # Then its product is embedded under normalized lighting and coloured as photographed,
    # whichever image the detector was fed
    doc = store.get_json(bucket, out.artifacts["detections"].key)
    box = np.array([doc["detections"][0]["box"]], np.float32)
    gallery, weights, k = rt.recognizer().gallery()[1], rt.recognizer().weights, 3

    def ranked(lit: str, photographed: str) -> list[list[object]]:
        views = crop_views(stored[lit], stored[photographed], box)
        return [[sku, score] for sku, score in
                rank_crops(rt.recognizer().embedder, views, gallery, weights, k)[0]]

    got = doc["detections"][0]["candidates"]
    assert got == ranked("normalized.jpg", "ingested.jpg")
    assert got != ranked("ingested.jpg", "ingested.jpg")
    assert got != ranked("normalized.jpg", "normalized.jpg")


def _hostile(kind: str, amount: float) -> bytes:
    """A graph that is one image in, one tensor out, and on any photo either fills
    ``amount`` GiB with ones (``memory``) or loops ``amount`` times (``spin``); the amount
    is scaled by the image's brightest pixel so that nothing is folded at load time."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMax", ["images"], ["mx"], keepdims=0),
             helper.make_node("Mul", ["mx", "K"], ["kf"]),
             helper.make_node("Cast", ["kf"], ["k"], to=TensorProto.INT64)]
    inits = [numpy_helper.from_array(np.array(amount * (2**28 if kind == "memory" else 1),
                                              np.float32), "K")]
    if kind == "memory":
        nodes += [helper.make_node("Reshape", ["k", "one"], ["shape"]),
                  helper.make_node("ConstantOfShape", ["shape"], ["big"],
                                   value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1])),
                  helper.make_node("ReduceSum", ["big"], ["out"], keepdims=1)]
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    else:
        body = helper.make_graph(
            [helper.make_node("Identity", ["c"], ["c_out"]),
             helper.make_node("Add", ["a", "one_f"], ["a_out"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("c", TensorProto.BOOL, []),
             helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("a_out", TensorProto.FLOAT, [1])],
            [numpy_helper.from_array(np.ones(1, np.float32), "one_f")])
        nodes.append(helper.make_node("Loop", ["k", "", "a0"], ["out"], body=body))
        inits.append(numpy_helper.from_array(np.zeros(1, np.float32), "a0"))
    graph = helper.make_graph(
        nodes, kind, [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]
                             ).SerializeToString()


@pytest.mark.parametrize(("kind", "amount", "limits", "said"), [
    ("memory", 1.0, {"max_rss_mb": 512}, "MB for one"),
    ("spin", 1e12, {"timeout_s": 3.0}, "did not finish one"),
], ids=["memory-hog", "endless-loop"])
def test_a_graph_that_hogs_memory_or_never_ends_is_refused_from_its_probe(
        kind: str, amount: float, limits: dict[str, float], said: str) -> None:
    from pipeline.detect.register import probe

    image = np.ones((1, 3, 64, 64), np.float32)
    with pytest.raises(ModelRejectedError, match=said):
        probe(_hostile(kind, amount), "images", image, "64x64 NCHW", **limits)  # type: ignore[arg-type]
    assert probe(_hostile("memory", 0.01), "images", image, "64x64 NCHW")[0].shape == (1,)
