"""Catalog operations as an operator runs them: replacing a SKU's packshots, signing the
catalog again after the embedder changed, and packshots with nothing in them."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.core.packshot import Cutout
from pipeline.detect.embedder import Embedder
from pipeline.detect.recognizer import Recognizer, decode_packshot, weights_from
from pipeline.errors import CatalogError
from pipeline.settings import Settings
from pipeline.storage.catalog import CatalogStore
from pipeline.storage.memory import MemoryStore
from pipeline.synth.catalog import CATALOG, draw_packshot
from pipeline.synth.enrol import on_white

B = "config"


def png(i: int) -> bytes:
    image, mask = draw_packshot(CATALOG[i], 120)
    return bytes(cv2.imencode(".png", on_white(Cutout(image, mask)))[1].tobytes())


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    s = Settings()
    return Embedder.from_dir(s.models.root, s.recognition.embedder, device="cpu")


def _recognizer(store: MemoryStore, embedder: Embedder) -> Recognizer:
    return Recognizer(embedder, CatalogStore(store, B), weights_from(Settings().recognition))


def test_replacing_a_sku_s_packshots_keeps_its_facts_and_never_overwrites_one_it_signed(
        embedder: Embedder) -> None:
    store = MemoryStore()
    rec = _recognizer(store, embedder)
    first = rec.enrol("A", [("front.png", png(0))], brand="Acme", name="Cola 33 cl",
                      size_cm=(6.5, 12.0))
    # When its packshots are replaced without naming its facts again
    entry = rec.enrol("A", [("new.png", png(1))], brand=None, name=None, replace=True)
    # Then its facts stay, and the new packshot took a number of its own
    assert (entry.brand, entry.name, entry.size_cm) == ("Acme", "Cola 33 cl", (6.5, 12.0))
    assert entry.added_at == first.added_at
    assert [s.source for s in entry.signatures][:1] == ["catalog/images/A/1.png"]
    assert list(store.list_keys(B, "catalog/images/A/")) == ["catalog/images/A/1.png"]


def test_signing_again_goes_on_past_a_sku_whose_packshot_is_gone_and_indexes_the_rest(
        embedder: Embedder) -> None:
    store = MemoryStore()
    rec = _recognizer(store, embedder)
    for sku, i in (("K1", 0), ("K2", 1), ("K3", 2)):
        rec.enrol(sku, [("front.png", png(i))], brand=None, name=None)
    catalog = rec.catalog
    for e in catalog.entries():  # signed by an embedder since replaced
        catalog.put(e.model_copy(update={"embedder": "sku-embed/0"}), reindex=False)
    catalog.reindex()
    store.delete(B, "catalog/images/K2/0.png")

    with pytest.raises(CatalogError, match=r"signed 2 SKUs again; not K2 \(.*missing\)"):
        rec.sign_again()
    index = catalog.index()
    assert {e.sku: e.embedder for e in index.entries} == {
        "K1": embedder.ref, "K2": "sku-embed/0", "K3": embedder.ref}


def test_a_fully_transparent_packshot_is_refused_not_signed_as_a_white_sku() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((300, 200, 4), np.uint8), "RGBA").save(buf, "PNG")
    with pytest.raises(CatalogError, match="fully transparent"):
        decode_packshot(buf.getvalue(), "export.png")
