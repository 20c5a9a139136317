"""Test doubles of the object store."""

from __future__ import annotations

from pipeline.storage.memory import MemoryStore


class CountingStore(MemoryStore):
    """The in-memory store, counting which objects were read."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    def get_bytes(self, bucket: str, key: str) -> bytes:
        self.gets.append(key)
        return super().get_bytes(bucket, key)
