"""Which photo of a bay's day counts in the rollups."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.result import PhotoResult
from pipeline.core.rollup import latest_per_bay


def _result(name: str, compliance: float | None, uploaded: str, taken: str | None
            ) -> PhotoResult:
    doc: dict[str, Any] = {
        "sha256": name * 64, "upload_id": name * 32, "store": "S1", "aisle": "A1", "bay": "B1",
        "camera": "phone-7", "date": "2025-06-02", "captured_at": uploaded, "taken_at": taken,
        "store_format": "standard", "display_type": "gondola", "detections": 4,
        "source": {"bucket": "shelf-raw", "key": f"raw/S1/A1/B1/phone-7/{name}.jpg"},
        "compliance": compliance, "completed_at": uploaded}
    return PhotoResult.model_validate(doc)


@pytest.mark.parametrize(("results", "latest"), [
    # shot at 09:00 (before restocking) and 17:00, synced at 18:04 in the other order
    ([("a", 0.25, "2025-06-02T18:04:01+00:00", "2025-06-02T09:00:00+00:00"),
      ("b", 1.0, "2025-06-02T18:04:00+00:00", "2025-06-02T17:00:00+00:00")], "b"),
    # no EXIF time: the later upload
    ([("a", 0.25, "2025-06-02T18:04:01+00:00", None),
      ("b", 1.0, "2025-06-02T18:04:00+00:00", None)], "a"),
    # a photo with a compliance figure beats a later one without (no planogram yet)
    ([("a", 0.5, "2025-06-02T09:00:00+00:00", "2025-06-02T09:00:00+00:00"),
      ("b", None, "2025-06-02T18:00:00+00:00", "2025-06-02T18:00:00+00:00")], "a"),
    # the same instants spelled in other ways: an offset, a Z, a fraction of a second
    ([("a", 0.2, "2025-06-02T10:30:00+02:00", None),
      ("b", 0.9, "2025-06-02T09:00:00+00:00", None)], "b"),
    ([("a", 0.2, "2025-06-02T09:00:00Z", None),
      ("b", 0.9, "2025-06-02T09:00:00.500000+00:00", None)], "b"),
], ids=["synced-out-of-order", "no-exif", "figure-first", "offset", "z-and-fraction"])
def test_the_bay_counts_its_latest_photo_by_when_it_was_taken(
        results: list[tuple[str, float | None, str, str | None]], latest: str) -> None:
    chosen = latest_per_bay([_result(*r) for r in results])

    assert [r.upload_id for r in chosen] == [latest * 32]


def test_capture_and_upload_times_are_never_compared_with_each_other() -> None:
    # Given a bay shot at 18:00 local time in a UTC+9 store (EXIF, uploaded 09:02 UTC), then
    # again at 19:01 local as a PNG, which carries no EXIF time (uploaded 10:01 UTC)
    first = _result("a", 0.5, "2025-06-02T09:02:00+00:00", "2025-06-02T18:00:00+00:00")
    second = _result("b", 1.0, "2025-06-02T10:01:00+00:00", None)

    # Then the one uploaded last counts: the EXIF time is local, the upload time UTC
    assert [r.upload_id for r in latest_per_bay([first, second])] == ["b" * 32]
