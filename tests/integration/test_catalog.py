"""The catalog in real S3 (LocalStack): signing SKUs again when the embedder changes."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.packshot import Cutout
from pipeline.detect.embedder import Embedder
from pipeline.detect.recognizer import Recognizer, weights_from
from pipeline.errors import CatalogError
from pipeline.storage.catalog import CatalogEntry, CatalogStore, Signature
from pipeline.synth.catalog import CATALOG, draw_packshot
from pipeline.synth.enrol import on_white
from tests.conftest import Stack


@pytest.fixture()
def recognizer(stack: Stack) -> Recognizer:
    s = stack.settings
    bucket = f"catalog-{uuid.uuid4().hex[:8]}"
    stack.s3.create_bucket(Bucket=bucket)
    embedder = Embedder.from_dir(s.models.root, s.recognition.embedder, device="cpu")
    return Recognizer(embedder, CatalogStore(stack.store, bucket), weights_from(s.recognition))


def _packshot(i: int) -> bytes:
    image, mask = draw_packshot(CATALOG[i], 120)
    return bytes(cv2.imencode(".png", on_white(Cutout(image, mask)))[1].tobytes())


def test_skus_of_an_earlier_embedder_are_signed_again_from_their_packshots(
        recognizer: Recognizer) -> None:
    catalog = recognizer.catalog
    # Given one SKU signed by the current embedder and two by an earlier one, whose
    # signatures (another length) the current one cannot compare
    recognizer.enrol("current", [("a.png", _packshot(0))], brand="B0", name=None)
    for n, sku in enumerate(("old-1", "old-2"), start=1):
        key = catalog.put_image(sku, 0, _packshot(n), ".png")
        catalog.put(CatalogEntry(
            sku=sku, brand=f"B{n}", name=f"pack {n}", embedder="sku-embed/0",
            signatures=[Signature(source=key, embedding=[1.0, 0.0], colour=[1.0], aspect=0.5)],
            added_at=datetime.now(UTC)))
    dim = recognizer.embedder.embed([np.zeros((8, 8, 3), np.uint8)]).shape[1]
    assert len(catalog.index().gallery(recognizer.embedder.ref, dim)) == 2  # "current" only

    # When the catalog is signed again
    assert recognizer.sign_again() == (2, 1)

    # Then every SKU is in the current embedder's gallery, facts kept, and a second run
    # has nothing to do
    index = catalog.index()
    gallery = index.gallery(recognizer.embedder.ref, dim)
    assert sorted(set(gallery.skus)) == ["current", "old-1", "old-2"]
    assert gallery.embeddings.shape == (6, dim)
    assert index.brands()["old-2"] == "B2"
    assert {e.sku: e.name for e in index.entries}["old-1"] == "pack 1"
    assert recognizer.sign_again() == (0, 3)


def test_every_sku_is_signed_again_when_asked(recognizer: Recognizer) -> None:
    # Given a SKU the current embedder signed in an earlier release, whose aspect ratio was
    # read from a wrong cut-out
    catalog = recognizer.catalog
    recognizer.enrol("white", [("a.png", _packshot(24))], brand="MILK", name=None)
    entry = catalog.get("white")
    assert entry is not None
    right = entry.signatures[0].aspect
    catalog.put(entry.model_copy(update={"signatures": [
        s.model_copy(update={"aspect": 1.77}) for s in entry.signatures]}))

    # When every SKU is signed again
    assert recognizer.sign_again(every=True) == (1, 0)

    # Then its signatures are read from its packshot again
    again = catalog.get("white")
    assert again is not None and {s.aspect for s in again.signatures} == {right}


def test_skus_signed_before_colour_layouts_are_named_without_one_until_signed_again(
        recognizer: Recognizer) -> None:
    # Given two SKUs, one signed by an earlier release that stored no colour layout
    catalog = recognizer.catalog
    for n, sku in enumerate(("new", "old")):
        recognizer.enrol(sku, [("a.png", _packshot(n))], brand=None, name=None)
    old = catalog.get("old")
    assert old is not None and all(s.layout is not None for s in old.signatures)
    catalog.put(old.model_copy(update={"signatures": [
        s.model_copy(update={"layout": None}) for s in old.signatures]}))

    # Then the gallery holds the layouts it has, and none for the old SKU's rows
    layouts = recognizer.gallery()[1].layouts
    skus = recognizer.gallery()[1].skus
    assert layouts is not None
    assert all(np.isnan(row).all() == (sku == "old") for sku, row in zip(skus, layouts,
                                                                           strict=True))
    image = np.full((200, 200, 3), 128, np.uint8)
    _, ranked = recognizer.candidates(image, image, np.array([[10, 10, 90, 150]],
                                                              np.float32), 3)
    assert {sku for sku, _ in ranked[0]} == {"new", "old"}

    # And signing every SKU again gives the old one its layout
    assert recognizer.sign_again(every=True) == (2, 0)
    layouts = recognizer.gallery()[1].layouts
    assert layouts is not None and np.isfinite(layouts).all()


def test_skus_only_another_embedder_can_compare_are_reported_once_per_catalog_version(
        recognizer: Recognizer, caplog: pytest.LogCaptureFixture) -> None:
    catalog = recognizer.catalog
    recognizer.enrol("current", [("a.png", _packshot(0))], brand="B0", name=None)
    key = catalog.put_image("old-1", 0, _packshot(1), ".png")
    catalog.put(CatalogEntry(
        sku="old-1", embedder="sku-embed/0", added_at=datetime.now(UTC),
        signatures=[Signature(source=key, embedding=[1.0, 0.0], colour=[1.0], aspect=0.5)]))
    image = np.full((200, 200, 3), 128, np.uint8)
    boxes = np.array([[10, 10, 90, 150]], np.float32)
    with caplog.at_level(logging.WARNING, logger="pipeline.detect.recognizer"):
        recognizer.candidates(image, image, boxes, 3)
        recognizer.candidates(image, image, boxes, 3)
    stale = [r.getMessage() for r in caplog.records if "another embedder" in r.getMessage()]
    assert stale == [f"1 catalog SKUs were signed by another embedder (sku-embed/0: 1) and "
                     f"cannot be named by {recognizer.embedder.ref}: run `shelf catalog resign`"]
    caplog.clear()
    recognizer.sign_again()
    with caplog.at_level(logging.WARNING, logger="pipeline.detect.recognizer"):
        recognizer.candidates(image, image, boxes, 3)
    assert not [r for r in caplog.records if "another embedder" in r.getMessage()]


def test_a_missing_packshot_is_a_clear_error(recognizer: Recognizer) -> None:
    recognizer.catalog.put(CatalogEntry(
        sku="ghost", embedder="sku-embed/0", added_at=datetime.now(UTC),
        signatures=[Signature(source="catalog/images/ghost/0.png", embedding=[1.0],
                              colour=[1.0], aspect=1.0)]))
    with pytest.raises(CatalogError, match="missing"):
        recognizer.sign_again()


def _in_store(i: int, size: int, shade: int) -> np.ndarray:
    """Packshot ``i`` as a store photo shows it: smaller, on a shelf-coloured ground."""
    image, mask = draw_packshot(CATALOG[i], size)
    photo = np.full((size + 60, size + 80, 3), shade, np.uint8)
    h, w = mask.shape
    region = photo[30:30 + h, 40:40 + w]
    region[mask > 127] = image[mask > 127]
    return photo


def test_reference_photos_offset_the_packshots_they_resemble(
        recognizer: Recognizer, caplog: pytest.LogCaptureFixture) -> None:
    catalog = recognizer.catalog
    recognizer.enrol("hub", [("a.png", _packshot(0))], brand=None, name=None)
    recognizer.enrol("other", [("b.png", _packshot(5))], brand=None, name=None)
    assert recognizer.gallery()[1].offsets is None

    # Store photos that all look like the first packshot make it a hub: its scores go down
    photos = [_in_store(0, size, shade) for size in (90, 120, 150) for shade in (80, 140)]
    assert recognizer.set_reference((p, p) for p in photos) == 6
    index = catalog.index()
    assert index.reference is not None and index.reference.count == 6
    assert index.reference.embedder == recognizer.embedder.ref
    gallery = recognizer.gallery()[1]
    assert gallery.offsets is not None
    offsets = dict(zip(gallery.skus, gallery.offsets, strict=True))
    assert offsets["hub"] > 0 > offsets["other"]
    assert abs(float(gallery.offsets.mean())) < 1e-5

    # Replaced behind the index's back (or unreadable): names without offsets, a warning
    from pipeline.storage.catalog import REFERENCE_KEY

    catalog.store.put_bytes(catalog.bucket, REFERENCE_KEY, b"not an npz", "x/y")
    catalog.reindex()
    with caplog.at_level(logging.WARNING, logger="pipeline.detect.recognizer"):
        assert recognizer.gallery()[1].offsets is None
    assert any("reference changed since the index" in r.getMessage() for r in caplog.records)

    # Signed by another embedder, the reference cannot be compared: no offsets, a warning
    catalog.put_reference("sku-embed/0", np.ones((2, 2), np.float32),
                          np.ones((2, 1), np.float32), np.ones(2, np.float32))
    with caplog.at_level(logging.WARNING, logger="pipeline.detect.recognizer"):
        assert recognizer.gallery()[1].offsets is None
    assert any("signed by sku-embed/0" in r.getMessage() for r in caplog.records)

    # Cleared: none
    catalog.clear_reference()
    assert catalog.index().reference is None
    assert recognizer.gallery()[1].offsets is None
    with pytest.raises(CatalogError, match="at least one reference photo"):
        recognizer.set_reference(iter([]))


def test_shelf_catalog_reference_from_shelf_photos(
        stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main
    from pipeline.synth.world import make_photo

    for i in range(2):
        (tmp_path / f"aisle-{i}.jpg").write_bytes(make_photo(4242, i, max_long_side=1400).jpeg)
    (tmp_path / "notes.txt").write_text("not a photo")  # not an image suffix: not read
    catalog = CatalogStore(stack.store, stack.settings.s3.config_bucket)
    try:
        assert main(["catalog", "reference", str(tmp_path), "--detect"]) == 0
        out = capsys.readouterr().out
        count = int(out.split()[1])
        assert out.startswith("signed ") and "reference products" in out
        assert count > 2  # the products on two shelf photos, not the photos
        ref = catalog.index().reference
        assert ref is not None and ref.count == count
        assert main(["catalog", "list"]) == 0
        assert f"reference: {count} in-store images" in capsys.readouterr().out
    finally:
        assert main(["catalog", "reference", "--clear"]) == 0
    assert catalog.index().reference is None
    assert main(["catalog", "reference"]) == 1
    assert "give store photos" in capsys.readouterr().err


def test_adding_packshots_to_a_sku_keeps_its_others_and_its_facts(
        recognizer: Recognizer) -> None:
    catalog = recognizer.catalog
    # Given a SKU enrolled with two packshots, a brand and a name
    recognizer.enrol("7310865004703", [("front.png", _packshot(0)), ("back.png", _packshot(1))],
                     brand="Oatly", name="Barista 1 l", size_cm=(7.5, 24.5))
    # When one more packshot is added, with no brand, name or size given
    entry = recognizer.enrol("7310865004703", [("top.png", _packshot(2))], brand=None,
                             name=None)
    # Then the SKU holds all three, each stored once, and keeps its brand, name and size
    images = catalog.image_keys("7310865004703")
    assert len(images) == 3 and {s.source for s in entry.signatures} == set(images)
    stored = sorted(catalog.get_image(k) for k in images)
    assert stored == sorted([_packshot(0), _packshot(1), _packshot(2)])
    assert (entry.brand, entry.name, entry.size_cm) == ("Oatly", "Barista 1 l", (7.5, 24.5))
    assert catalog.index().brands()["7310865004703"] == "Oatly"
    embedder = recognizer.embedder
    assert catalog.index().gallery(embedder.ref, embedder.dim).sizes == {
        "7310865004703": (7.5, 24.5)}
    # When it is replaced by one packshot, then that one is all it holds and stores, and
    # its facts not given again are kept
    entry = recognizer.enrol("7310865004703", [("new.png", _packshot(3))], brand="Oatly",
                             name=None, replace=True)
    assert catalog.image_keys("7310865004703") == [s.source for s in entry.signatures][:1]
    assert (entry.name, entry.size_cm) == ("Barista 1 l", (7.5, 24.5))
    # And removed, nothing of it is left
    catalog.remove("7310865004703")
    assert catalog.get("7310865004703") is None and catalog.image_keys("7310865004703") == []


def test_the_name_of_unnamed_products_is_no_sku(recognizer: Recognizer) -> None:
    with pytest.raises(CatalogError, match="what unnamed products are called"):
        recognizer.enrol("unknown", [("a.png", _packshot(0))], brand=None, name=None)
    catalog = recognizer.catalog
    assert list(catalog.store.list_keys(catalog.bucket, "catalog/")) == []


@pytest.mark.parametrize(("brand", "name"), [
    ("\x1b[2J\x1b[HOatly", None),  # a terminal escape: clears an analyst's screen
    ("Oatly", "Barista\x07"),
    ("O" * 5000, None),
    ("   ", None),
], ids=["escape-in-brand", "bell-in-name", "too-long", "blank"])
def test_a_brand_or_name_that_is_not_plain_text_is_refused(
        recognizer: Recognizer, brand: str, name: str | None) -> None:
    with pytest.raises(CatalogError, match="printable characters"):
        recognizer.enrol("7310865004703", [("a.png", _packshot(0))], brand=brand, name=name)
    assert recognizer.catalog.get("7310865004703") is None


@pytest.mark.parametrize("size", [(0.1, 20.0), (8.0, 1000.0), (0.0, 0.0)])
def test_a_size_no_pack_has_is_refused(recognizer: Recognizer,
                                       size: tuple[float, float]) -> None:
    with pytest.raises(CatalogError, match="a width and a height"):
        recognizer.enrol("7310865004703", [("a.png", _packshot(0))], brand=None, name=None,
                         size_cm=size)
    assert recognizer.catalog.get("7310865004703") is None


def _shelf(bottle_cm: float) -> tuple[np.ndarray, np.ndarray]:
    """A board at 5 px/cm: five cans (6.5 x 12 cm) and, at its left end, a bottle of
    SKU-013's print ``bottle_cm`` tall; the photo and the products' boxes."""
    image = np.full((400, 700, 3), 200, np.uint8)
    boxes = []

    def paste(pack: int, x: int, w: int, h: int) -> None:
        img, mask = draw_packshot(CATALOG[pack], 240)
        front = cv2.resize(on_white(Cutout(img, mask)), (w, h), interpolation=cv2.INTER_AREA)
        image[350 - h:350, x:x + w] = front
        boxes.append([x, 350 - h, x + w, 350])

    paste(12, 20, 40, round(bottle_cm * 5))
    for i in range(5):
        paste(2, 100 + 60 * i, 32, 60)
    return image, np.array(boxes, np.float32)


@pytest.mark.parametrize(("bottle_cm", "named"), [(26.0, "SHINE-750"), (22.0, "SHINE-500")])
def test_a_product_line_in_two_sizes_is_told_apart_by_the_catalogs_sizes(
        recognizer: Recognizer, bottle_cm: float, named: str) -> None:
    # Given one print enrolled as two SKUs, a 22 cm and a 26 cm bottle, and a can
    shine = _packshot(12)
    recognizer.enrol("SHINE-500", [("f.png", shine)], brand="SHINE", name=None,
                     size_cm=(8.0, 22.0))
    recognizer.enrol("SHINE-750", [("f.png", shine)], brand="SHINE", name=None,
                     size_cm=(8.0, 26.0))
    recognizer.enrol("FIZZ-330", [("f.png", _packshot(2))], brand="FIZZ", name=None,
                     size_cm=(6.5, 12.0))
    # When a shelf of cans with one such bottle is named
    image, boxes = _shelf(bottle_cm)
    _, cands = recognizer.candidates(image, image, boxes, 5)
    # Then the cans are cans, and the bottle is the one of its size against them
    assert [c[0][0] for c in cands[1:]] == ["FIZZ-330"] * 5
    assert cands[0][0][0] == named
    # And without sizes in the catalog the two are one score: a coin toss
    for sku in ("SHINE-500", "SHINE-750", "FIZZ-330"):
        entry = recognizer.catalog.get(sku)
        assert entry is not None
        recognizer.catalog.put(entry.model_copy(update={"size_cm": None}))
    _, plain = recognizer.candidates(image, image, boxes, 5)
    assert {sku for sku, _ in plain[0][:2]} == {"SHINE-500", "SHINE-750"}
    assert plain[0][0][1] == plain[0][1][1]


@pytest.mark.parametrize("date", ["2025-06-02/../../../x", "yesterday", "2025-13-01"])
def test_a_report_or_rollup_date_is_a_date(date: str, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    from pipeline.cli import build_parser

    for command in (["report", "--store", "S1", "--date", date], ["aggregate", "--date", date]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(command)
        assert "is not a date (YYYY-MM-DD)" in capsys.readouterr().err


@pytest.mark.parametrize(("given", "size"), [
    ("8x22", (8.0, 22.0)), ("7.5 X 19.5", (7.5, 19.5)), ("8x", None), ("8x22x4", None),
    ("eightx22", None), ("nanx22", None), ("8,5x22", None),
])
def test_a_catalog_size_is_width_x_height_in_cm(
        given: str, size: tuple[float, float] | None, capsys: pytest.CaptureFixture[str]
        ) -> None:
    from pipeline.cli import build_parser

    command = ["catalog", "add", "SKU-1", "a.png", "--size", given]
    if size is None:
        with pytest.raises(SystemExit):
            build_parser().parse_args(command)
        err = capsys.readouterr().err
        assert "WIDTHxHEIGHT in cm" in err or "two finite numbers" in err
    else:
        assert build_parser().parse_args(command).size == size


def test_entries_stored_before_the_checks_are_read_and_any_sku_can_be_removed(
        recognizer: Recognizer) -> None:
    catalog = recognizer.catalog
    for sku, brand in (("old-blank-brand", ""), ("unknown", "B")):
        key = catalog.put_image(sku, 0, _packshot(0), ".png")
        catalog.put(CatalogEntry(
            sku=sku, brand=brand, embedder="sku-embed/0", added_at=datetime.now(UTC),
            signatures=[Signature(source=key, embedding=[1.0], colour=[1.0], aspect=1.0)]))
    assert {e.sku for e in catalog.entries()} == {"old-blank-brand", "unknown"}
    catalog.remove("unknown")  # enrolled by mistake before it was refused
    assert [e.sku for e in catalog.entries()] == ["old-blank-brand"]
