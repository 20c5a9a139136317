"""Test doubles of the object store."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.storage.memory import MemoryStore


class CountingStore(MemoryStore):
    """The in-memory store, counting which objects were read."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    def get_bytes(self, bucket: str, key: str) -> bytes:
        self.gets.append(key)
        return super().get_bytes(bucket, key)


class ListingStore(MemoryStore):
    """The in-memory store whose listings can go wrong on their way: ``damage`` maps a key
    to what its next listings name instead (as a bit flipped in it would), once per entry
    of ``damage_times``; ``vanish`` keys are deleted right after they are listed (by
    another process, before they are read). ``listings`` counts the listings."""

    def __init__(self) -> None:
        super().__init__()
        self.damage: dict[str, str] = {}
        self.damage_times = 1
        self.vanish: set[str] = set()
        self.listings = 0

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        self.listings += 1
        damaged = self.listings <= self.damage_times
        for key in list(super().list_keys(bucket, prefix)):
            if key in self.vanish:
                self.delete(bucket, key)
            yield self.damage.get(key, key) if damaged else key
