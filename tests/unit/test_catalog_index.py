"""The catalog's index as stored: its galleries, whatever a hand edit did to it."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from pipeline.storage.catalog import CatalogEntry, CatalogIndex, Signature

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def entry(sku: str, embedding: list[float], colour: list[float] | None = None,
          embedder: str = "sku-embed/7") -> CatalogEntry:
    sig = Signature(source=f"{sku}.jpg", embedding=embedding, colour=colour or [0.5] * 6,
                    aspect=1.0)
    return CatalogEntry(sku=sku, embedder=embedder, signatures=[sig], added_at=NOW)


def test_signatures_of_the_wrong_shape_are_left_out_not_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    # Given an index where one SKU's embedding was cut short and another's colour grew
    index = CatalogIndex(built_at=NOW, entries=[
        entry("A", [1.0, 0.0, 0.0, 0.0]), entry("B", [0.0, 1.0, 0.0, 0.0]),
        entry("SHORT", [0.0, 0.0, 1.0]), entry("WIDE", [0.0, 0.0, 0.0, 1.0], [0.5] * 7),
        entry("NAN", [float("nan"), 0.0, 0.0, 1.0]), entry("INF", [0.0, 1.0, 0.0, 0.0],
                                                            [float("inf")] + [0.5] * 5),
        entry("OTHER", [1.0, 0.0], embedder="sku-embed/6")])

    # When the gallery of a 4-dimensional embedder is built
    gallery = index.gallery("sku-embed/7", 4)

    # Then it holds the SKUs that fit, and says which it left out
    assert list(gallery.skus) == ["A", "B"]
    assert np.asarray(gallery.embeddings).shape == (2, 4)
    assert "INF, NAN, SHORT, WIDE" in caplog.text and "left out" in caplog.text


def test_a_gallery_with_nothing_that_fits_is_empty() -> None:
    index = CatalogIndex(built_at=NOW, entries=[entry("SHORT", [1.0, 0.0])])

    assert len(index.gallery("sku-embed/7", 4).skus) == 0


@pytest.mark.parametrize("sku", ["A B!", "../x", "ok\n", "-lead", ""])
def test_a_stored_entry_whose_sku_is_no_sku_id_does_not_read(sku: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        entry(sku, [1.0, 0.0, 0.0, 0.0])


def test_an_index_entry_that_does_not_read_is_left_out_not_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.storage.catalog import CatalogStore
    from pipeline.storage.memory import MemoryStore

    store = MemoryStore()
    good = entry("A", [1.0, 0.0, 0.0, 0.0]).model_dump(mode="json")
    store.put_json("cfg", "catalog/index.json", {
        "built_at": NOW.isoformat(), "entries": [good, {**good, "sku": "A B!"}, "junk"]})
    index = CatalogStore(store, "cfg").index()
    assert [e.sku for e in index.entries] == ["A"]
    assert "2 entries" in caplog.text and "A B!" in caplog.text


def test_removing_a_sku_the_catalog_lacks_says_so() -> None:
    from pipeline.errors import CatalogError
    from pipeline.storage.catalog import PREFIX, CatalogStore
    from pipeline.storage.memory import MemoryStore

    store = MemoryStore()
    catalog = CatalogStore(store, "config")
    store.put_json("config", f"{PREFIX}skus/A1.json",
                   entry("A1", [1.0, 0.0]).model_dump(mode="json"))
    with pytest.raises(CatalogError, match="no SKU 'A1x' in the catalog"):
        catalog.remove("A1x")  # mistyped
    catalog.remove("A1")
    assert catalog.get("A1") is None
    with pytest.raises(CatalogError, match="no SKU 'A1'"):
        catalog.remove("A1")  # removed already


@pytest.mark.parametrize("value", ["Caf\u00e9 Noir", "Ben & Jerry's"])
def test_printable_facts_are_kept(value: str) -> None:
    from pipeline.storage.catalog import check_fact

    assert check_fact(value, "name", 120) == value


@pytest.mark.parametrize("value", ["Cola\u2028Zero", "\u202eenolC", "Co\u200bla", "Cola\nZero"],
                         ids=["line-separator", "direction-override", "zero-width", "newline"])
def test_facts_with_invisible_or_layout_characters_are_refused(value: str) -> None:
    from pipeline.errors import CatalogError
    from pipeline.storage.catalog import check_fact

    with pytest.raises(CatalogError, match="printable"):
        check_fact(value, "name", 120)
