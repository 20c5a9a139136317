"""``shelf eval-recognition`` over folders of packshots and query photos, with the shipped
embedder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.eval.recognition import labelled_images


# Two products that look nothing alike: a red can with a white band, a blue striped box.
def _can(h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.rectangle(img, (w // 4, h // 8), (3 * w // 4, 7 * h // 8), (30, 30, 200), -1)
    cv2.rectangle(img, (w // 4, h // 2 - h // 12), (3 * w // 4, h // 2 + h // 12),
                  (240, 240, 240), -1)
    return img


def _box(h: int, w: int) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.rectangle(img, (w // 8, h // 4), (7 * w // 8, 3 * h // 4), (200, 120, 20), -1)
    for y in range(h // 4, 3 * h // 4, max(4, h // 16)):
        cv2.line(img, (w // 8, y), (7 * w // 8, y), (40, 200, 250), max(1, h // 64))
    return img


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gallery, queries = tmp_path / "gallery", tmp_path / "queries"
    _write(gallery / "can" / "pack.jpg", _can(400, 300))
    _write(gallery / "box" / "pack.png", _box(300, 400))
    # Queries as a shelf photo shows them: on grey, smaller, a little off centre.
    for sku, draw in (("can", _can), ("box", _box)):
        for i, size in enumerate((160, 220)):
            scene = np.full((480, 480, 3), 110, np.uint8)
            item = cv2.resize(draw(400, 400), (size, size))
            scene[60 + 20 * i:60 + 20 * i + size, 90:90 + size] = item
            _write(queries / "Packages" / sku / f"{i}.jpg", scene)
    (queries / "Packages" / "can" / "broken.jpg").write_bytes(b"\xff\xd8\xff not an image")
    return gallery, queries


def test_folders_are_read_per_sku_and_group(folders: tuple[Path, Path]) -> None:
    _, queries = folders

    found = {(p.name, sku, group) for p, sku, group in labelled_images(queries)}

    assert ("0.jpg", "can", "Packages") in found and ("1.jpg", "box", "Packages") in found
    assert len(found) == 5


def test_eval_recognition_json_names_and_leaves_out_broken_photos(
        folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gallery, queries = folders

    assert main(["eval-recognition", "--gallery", str(gallery), "--queries", str(queries),
                 "--threads", "1", "--json"]) == 0

    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["gallery"] == 4  # two signatures per packshot
    assert report["queries"] == 4 and report["skipped"] == 1
    assert report["top1"] == 1.0 and report["top5"] == 1.0
    assert report["groups"]["Packages"]["queries"] == 4
    assert "broken.jpg: left out" in captured.err


def test_eval_recognition_with_a_reference_of_other_store_photos(
        folders: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    gallery, queries = folders
    reference = tmp_path / "reference"
    # Other aisles: shelves of products that are neither SKU, no SKU folders needed.
    rng = np.random.default_rng(0)
    for i, shade in enumerate((90, 110, 140)):
        aisle = np.full((300, 400, 3), shade, np.uint8)
        for x in range(10, 390, 50):
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.rectangle(aisle, (x, 40 + 20 * i), (x + 40, 260), colour, -1)
        _write(reference / f"aisle-{i}.jpg", aisle)

    assert main(["eval-recognition", "--gallery", str(gallery), "--queries", str(queries),
                 "--reference", str(reference), "--reference-k", "2", "--threads", "1",
                 "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["reference"] == 3
    assert report["queries"] == 4 and report["top1"] == 1.0


def test_a_reference_holding_the_queries_is_refused(
        folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gallery, queries = folders

    assert main(["eval-recognition", "--gallery", str(gallery), "--queries", str(queries),
                 "--reference", str(queries / "Packages"), "--threads", "1"]) != 0

    assert "holds query photos" in capsys.readouterr().err


def test_a_gallery_of_which_no_packshot_decodes_is_refused_with_why(
        folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, queries = folders
    broken = tmp_path / "broken-gallery" / "can" / "pack.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not an image")

    assert main(["eval-recognition", "--gallery", str(broken.parents[1]), "--queries",
                 str(queries), "--threads", "1"]) != 0

    assert "none of its packshots decodes" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_a_limit_is_a_count_of_one_or_more(folders: tuple[Path, Path], limit: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    gallery, queries = folders
    with pytest.raises(SystemExit) as refused:  # argparse's refusal, exit status 2
        main(["eval-recognition", "--gallery", str(gallery), "--queries", str(queries),
              "--limit", limit])
    assert refused.value.code == 2 and "a count of 1 or more" in capsys.readouterr().err
