"""Labelled photo folders (YOLO, VOC, COCO) and ``shelf eval-real`` over them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.core.orientation import apply_orientation
from pipeline.datasets import labels_upright, load_dataset, yolo_boxes
from pipeline.detect.register import register_model
from pipeline.errors import DatasetError
from tests.unit.onnx_models import constant_model

BOXES = [(40.0, 30.0, 100.0, 150.0), (200.0, 60.0, 260.0, 200.0)]
SIZE = (400, 300)  # w, h


def _photo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((SIZE[1], SIZE[0], 3), 90, np.uint8)
    for x1, y1, x2, y2 in BOXES:
        cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), (20, 180, 240), -1)
    cv2.imwrite(str(path), img)


def yolo(root: Path) -> Path:
    _photo(root / "images" / "a.jpg")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text(_yolo_rows())
    return root


def voc(root: Path) -> Path:
    _photo(root / "JPEGImages" / "a.jpg")
    objs = "".join(f"<object><name>p</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
                   f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
                   for x1, y1, x2, y2 in BOXES)
    (root / "Annotations").mkdir()
    (root / "Annotations" / "a.xml").write_text(
        f"<annotation><filename>a.jpg</filename>{objs}</annotation>")
    return root


def coco(root: Path) -> Path:
    _photo(root / "images" / "a.jpg")
    anns = [{"id": i, "image_id": 7, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1]}
            for i, (x1, y1, x2, y2) in enumerate(BOXES)]
    (root / "instances.json").write_text(json.dumps(
        {"images": [{"id": 7, "file_name": "a.jpg", "width": SIZE[0], "height": SIZE[1]}],
         "annotations": anns}))
    return root


def _yolo_rows() -> str:
    w, h = SIZE
    return "".join(f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n"
                   for x1, y1, x2, y2 in BOXES)


def yolo_ultralytics(root: Path) -> Path:
    """images/<split>/ mirrored by labels/<split>/, as Ultralytics lays a data set out."""
    _photo(root / "images" / "test" / "a.jpg")
    (root / "labels" / "test").mkdir(parents=True)
    (root / "labels" / "test" / "a.txt").write_text(_yolo_rows())
    return root


def yolo_with_renders(root: Path) -> Path:
    """Photos under images/ and, beside them, rendered predictions that are not data."""
    yolo(root)
    _photo(root / "runs" / "predict" / "a.jpg")
    return root


def yolo_roboflow(root: Path) -> Path:
    """<split>/images/ beside <split>/labels/, polygon rows, a stray classes file."""
    _photo(root / "test" / "images" / "a.jpg")
    (root / "test" / "labels").mkdir(parents=True)
    w, h = SIZE
    (root / "test" / "labels" / "a.txt").write_text("".join(
        f"0 {x1 / w} {y1 / h} {x2 / w} {y1 / h} {x2 / w} {y2 / h} {x1 / w} {y2 / h}\n"
        for x1, y1, x2, y2 in BOXES) + "a stray line\n")
    (root / "test" / "classes.txt").write_text("product\n")
    return root


def voc_renamed(root: Path) -> Path:
    """An annotation whose <filename> names a file that is not there (renamed images)."""
    voc(root)
    xml = root / "Annotations" / "a.xml"
    xml.write_text(xml.read_text().replace("<filename>a.jpg</filename>",
                                           "<filename>IMG_0001.JPG</filename>"))
    return root


def coco_nested(root: Path) -> Path:
    """Roboflow's COCO export: the annotations file among the images, string image ids."""
    _photo(root / "test" / "a.jpg")
    anns = [{"id": i, "image_id": "a", "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1]}
            for i, (x1, y1, x2, y2) in enumerate(BOXES)]
    anns += [{"id": 9, "image_id": "a", "bbox": []}, {"id": 10, "caption": "a shelf"}]
    (root / "test" / "_annotations.coco.json").write_text(json.dumps(
        {"images": [{"id": "a", "file_name": "test/a.jpg"}, {"id": "b"}],
         "annotations": anns}))
    return root


def sku110k_csv(root: Path) -> Path:
    """SKU-110K's own rows, no header: name, x1, y1, x2, y2, class, width, height."""
    _photo(root / "images" / "a.jpg")
    (root / "annotations_test.csv").write_text("".join(
        f"a.jpg,{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f},object,{SIZE[0]},{SIZE[1]}\n"
        for x1, y1, x2, y2 in BOXES) + "missing.jpg,1,2,3,4,object,10,10\n")
    return root


LAYOUTS = [yolo, yolo_ultralytics, yolo_with_renders, yolo_roboflow, voc, voc_renamed, coco,
           coco_nested, sku110k_csv]


@pytest.mark.parametrize("make", LAYOUTS, ids=[f.__name__ for f in LAYOUTS])
def test_formats_read_the_same_boxes(tmp_path: Path, make: object) -> None:
    root = make(tmp_path)  # type: ignore[operator]

    items = load_dataset(root)

    assert [p.path.name for p in items] == ["a.jpg"]
    np.testing.assert_allclose(items[0].boxes, BOXES, atol=1e-3)


@pytest.mark.parametrize(("rows", "expected"), [
    ("0 0.5 0.5 0.2 0.4", [(160, 90, 240, 210)]),
    ("3 0.5 0.5 0.2 0.4 0.87", [(160, 90, 240, 210)]),  # a prediction's confidence
    ("0 0.1 0.2 0.3 0.2 0.2 0.6", [(40, 60, 120, 180)]),  # a triangle
    ("0 0.5 0.5\n\n# comment\nx y z w h", []),
], ids=["box", "box-confidence", "polygon", "junk"])
def test_yolo_rows(rows: str, expected: list[tuple[float, ...]]) -> None:
    np.testing.assert_allclose(np.array(yolo_boxes(rows, *SIZE)).reshape(-1, 4),
                               np.array(expected, np.float64).reshape(-1, 4), atol=1e-6)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        load_dataset(tmp_path)


def test_yolo_labels_that_match_no_image_are_refused(tmp_path: Path) -> None:
    _photo(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "b.txt").write_text(_yolo_rows())

    with pytest.raises(DatasetError, match="no YOLO label file"):
        load_dataset(tmp_path)


def test_yolo_image_without_label_has_no_products(tmp_path: Path) -> None:
    yolo(tmp_path)
    _photo(tmp_path / "images" / "empty.jpg")

    items = {i.path.name: i for i in load_dataset(tmp_path, "yolo")}

    assert items["a.jpg"].boxes.shape == (2, 4) and items["empty.jpg"].boxes.shape == (0, 4)


def _model_finding(tmp_path: Path, boxes: list[tuple[float, float, float, float]]) -> Path:
    """A registered one-class YOLO-layout model whose output is ``boxes`` of the photo."""
    # The photo (400x300) is letterboxed into 640x640: scale 1.6, 80 px of padding on top.
    out = np.zeros((1, 5, 16), np.float32)
    out[0, 0] = out[0, 1] = 600.0
    out[0, 2] = out[0, 3] = 10.0
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        out[0, :, i] = [(x1 + x2) / 2 * 1.6, (y1 + y2) / 2 * 1.6 + 80, (x2 - x1) * 1.6,
                        (y2 - y1) * 1.6, 0.9]
    path = tmp_path / "m.onnx"
    onnx.save(constant_model([out], input_shape=[1, 3, 640, 640]), str(path))
    register_model(path, models=tmp_path / "models", name="m")
    return tmp_path / "models"


@pytest.mark.parametrize(("found", "recall", "precision"), [
    (BOXES, 1.0, 1.0),
    (BOXES[:1], 0.5, 1.0),
    ([*BOXES, (300.0, 200.0, 350.0, 280.0)], 1.0, 2 / 3),
], ids=["all", "half", "one-false-positive"])
def test_eval_real_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        found: list[tuple[float, float, float, float]], recall: float,
                        precision: float) -> None:
    data = yolo(tmp_path / "data")
    models = _model_finding(tmp_path, found)

    assert main(["eval-real", "--model", "m", "--models", str(models), "--data", str(data),
                 "--json", "--threads", "1"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 1 and report["truths"] == 2
    assert report["recall50"] == pytest.approx(recall)
    assert report["precision"] == pytest.approx(precision)
    assert report["map50"] == pytest.approx(recall, abs=0.02)
    assert report["p50_ms"] > 0


def test_eval_real_leaves_out_a_photo_that_does_not_decode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yolo(tmp_path / "data")
    (data / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (data / "labels" / "broken.txt").write_text(_yolo_rows())
    models = _model_finding(tmp_path, BOXES)

    assert main(["eval-real", "--model", "m", "--models", str(models), "--data", str(data),
                 "--json", "--threads", "1"]) == 0

    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["images"] == 2 and report["skipped"] == 1 and report["truths"] == 2
    assert report["recall50"] == pytest.approx(1.0)
    assert "broken.jpg: left out" in captured.err


def _turned_photo(path: Path, orientation: int) -> None:
    """The upright photo of ``_photo``, stored turned so that EXIF ``orientation`` turns it
    back (6: stored a quarter turn anticlockwise, displayed turned clockwise)."""
    _photo(path)
    upright = cv2.imread(str(path))
    stored = {1: upright, 3: upright[::-1, ::-1], 6: np.rot90(upright, 1),
              8: np.rot90(upright, -1)}[orientation]
    assert apply_orientation(np.ascontiguousarray(stored), orientation).shape == upright.shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored[:, :, ::-1])).save(path, exif=exif)


@pytest.mark.parametrize(("orientation", "declared", "expected"), [
    (6, (SIZE[0], SIZE[1]), True),  # labelled as displayed, stored turned: upright
    (8, (SIZE[0], SIZE[1]), True),
    (6, (SIZE[1], SIZE[0]), False),  # the stored size: labels on the stored pixels
    (6, None, False),  # no size declared: stored pixels, as most tools label
    (1, (SIZE[0], SIZE[1]), False),  # no turn: both readings agree
    (3, (SIZE[0], SIZE[1]), False),  # a half turn does not show in the size
], ids=["quarter-cw", "quarter-ccw", "stored-size", "undeclared", "no-exif", "half-turn"])
def test_labels_upright_when_their_size_is_the_displayed_one(
        tmp_path: Path, orientation: int, declared: tuple[float, float] | None,
        expected: bool) -> None:
    path = tmp_path / "a.jpg"
    _turned_photo(path, orientation)

    assert labels_upright(path, declared) is expected


def test_eval_real_reads_labels_of_the_displayed_photo_upright(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SKU-110K rows that declare the displayed size of a photo stored turned a quarter: the
    photo is scored as displayed, where its boxes are."""
    data = sku110k_csv(tmp_path / "data")
    _turned_photo(data / "images" / "a.jpg", 6)
    models = _model_finding(tmp_path, BOXES)

    assert load_dataset(data)[0].upright
    assert main(["eval-real", "--model", "m", "--models", str(models), "--data", str(data),
                 "--json", "--threads", "1"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["recall50"] == pytest.approx(1.0)
    assert report["precision"] == pytest.approx(1.0)


def test_a_command_that_cannot_do_what_it_is_asked_says_why_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yolo(tmp_path / "data")

    code = main(["eval-real", "--model", "missing", "--models", str(tmp_path / "none"),
                 "--data", str(data)])

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("shelf eval-real: ") and "not found" in err
    assert "Traceback" not in err
