"""Planogram files as store staff save them: encodings, and what is wrong said plainly."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import PlanogramError
from pipeline.messages import PhotoRef
from pipeline.storage.memory import MemoryStore
from pipeline.storage.planograms import load_planogram

DOC = {"planogram_id": "PG-1", "version": 1,
       "shelves": [{"index": 0, "positions": [{"sku": "7310865004703", "facings": 2}]}]}
PHOTO = PhotoRef(bucket="shelf-raw", key="raw/S1/A1/B1/c1/p.jpg", store="S1", aisle="A1",
                 bay="B1", camera="c1")


def _load(body: bytes) -> object:
    store = MemoryStore()
    store.put_bytes("cfg", "planograms/S1/A1/B1.json", body, "application/json")
    return load_planogram(store, "cfg", PHOTO)


@pytest.mark.parametrize("body", [
    json.dumps(DOC).encode(),
    b"\xef\xbb\xbf" + json.dumps(DOC).encode(),  # Notepad, Excel's "CSV UTF-8" family
    json.dumps(DOC).encode("utf-16"),  # PowerShell 5 Out-File (little-endian, with BOM)
    b"\xfe\xff" + json.dumps(DOC).encode("utf-16-be"),
    json.dumps(DOC).encode("utf-32"),
], ids=["utf-8", "utf-8-bom", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_planogram_is_read_in_the_encoding_its_byte_order_mark_names(body: bytes) -> None:
    plan = _load(body)

    assert plan is not None and plan.planned_facings == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(("body", "said"), [
    (json.dumps(DOC).encode("latin-1").replace(b"PG-1", b"PG-\xe9"), "not UTF-8 text"),
    (json.dumps({**DOC, "shelves": [{"index": 0, "positions": [{"sku": 7310865004703}]}]}
                ).encode(), "quote EAN and UPC codes"),
    (json.dumps({**DOC, "shelves": [{"index": 0, "positions": [{"sku": "unknown"}]}]}
                ).encode(), "what unnamed products are called"),
    (json.dumps({**DOC, "shelves": [{"index": 0, "positions": []}]}).encode(),
     "no shelf plans a position"),
    (json.dumps(DOC).replace('"facings": 2', '"facings": 2, "facings": 5').encode(),
     "gives 'facings' twice"),
    (json.dumps({**DOC, "version": 10 ** 100}).encode(), "version"),
], ids=["latin-1", "sku-as-number", "reserved-sku", "nothing-planned", "a-key-twice",
        "version-past-exact-integers"])
def test_a_planogram_that_cannot_be_used_says_why(body: bytes, said: str) -> None:
    with pytest.raises(PlanogramError) as refused:
        _load(body)

    assert said in str(refused.value) and "planograms/S1/A1/B1.json" in str(refused.value)


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_a_bays_planogram_is_found_however_its_accents_were_spelled(form: str) -> None:
    from unicodedata import normalize

    # Given a photo of aisle "Allée" (its identity composed, as the key's parsing gives it)
    # and the bay's planogram saved from a Mac (key and aisle field decomposed) or not
    photo = PHOTO.model_copy(update={"key": "raw/S1/All\u00e9e/B1/c1/p.jpg",
                                     "aisle": "All\u00e9e"})
    store = MemoryStore()
    aisle = normalize(form, "All\u00e9e")
    store.put_bytes("cfg", f"planograms/S1/{aisle}/B1.json",
                    json.dumps({**DOC, "aisle": aisle}).encode(), "application/json")
    # Then it is the bay's planogram
    plan = load_planogram(store, "cfg", photo)
    assert plan is not None and plan.planogram_id == "PG-1"
