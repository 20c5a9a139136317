"""What the fault campaign's proxy damages on the way: objects' bytes and listings of object
versions, nothing else."""

from __future__ import annotations

import pytest

from pipeline.chaos import Faults

BODY = b"<ListVersionsResult><Version><Key>raw/S1/A1/B1/c1/p.jpg</Key></Version>"


@pytest.mark.parametrize(("command", "path", "damaged", "counted"), [
    ("GET", "/shelf-raw/raw/S1/A1/B1/c1/p.jpg", True, "damaged"),  # an object's bytes back
    ("PUT", "/shelf-raw/raw/S1/A1/B1/c1/p.jpg", True, "damaged"),  # and on their way in
    ("GET", "/shelf-raw/raw/p.jpg?versionId=v1", True, "damaged"),  # one version of it
    ("GET", "/shelf-raw?versions&prefix=raw%2F", True, "damaged listings"),  # reconciliation
    ("GET", "/shelf-raw?versions=&key-marker=k", True, "damaged listings"),
    ("GET", "/shelf-raw?list-type=2&prefix=raw%2F", False, None),  # other listings whole
    ("GET", "/shelf-raw/raw/p.jpg?uploads", False, None),
    ("GET", "/shelf-raw/raw/p.jpg?tagging", False, None),
    ("GET", "/shelf-raw?location", False, None),  # about a bucket, not its objects
    ("HEAD", "/shelf-raw/raw/p.jpg", False, None),
    ("POST", "/shelf-raw/raw/p.jpg?uploads", False, None),
])
def test_the_proxy_damages_objects_and_version_listings_only(
        command: str, path: str, damaged: bool, counted: str | None) -> None:
    faults = Faults(damage_rate=1.0, listing_damage_rate=1.0)

    out = faults.damage(command, path, BODY)

    assert (out != BODY) is damaged
    if damaged:  # one bit flipped, nothing else
        diff = [a ^ b for a, b in zip(out, BODY, strict=True) if a != b]
        assert len(diff) == 1 and bin(diff[0]).count("1") == 1
    assert dict(faults.served) == ({counted: 1} if counted else {})


@pytest.mark.parametrize(("objects", "listings"), [(0.0, 1.0), (1.0, 0.0)])
def test_objects_and_version_listings_are_damaged_at_rates_of_their_own(
        objects: float, listings: float) -> None:
    faults = Faults(damage_rate=objects, listing_damage_rate=listings)
    assert (faults.damage("GET", "/shelf-raw?versions", BODY) != BODY) is (listings == 1.0)
    assert (faults.damage("GET", "/shelf-raw/raw/p.jpg", BODY) != BODY) is (objects == 1.0)
