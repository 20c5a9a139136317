"""Object versions in the real (LocalStack) S3: what reconciliation lists."""

from __future__ import annotations

import uuid

from tests.conftest import Stack


def test_versions_of_a_deleted_object_are_listed_as_deleted(stack: Stack) -> None:
    raw = stack.settings.s3.raw_bucket
    prefix = f"raw/S7/A1/B1/c1/{uuid.uuid4().hex}/"
    for name in ("kept.jpg", "gone.jpg"):
        stack.s3.put_object(Bucket=raw, Key=prefix + name, Body=b"jpg")
    stack.s3.delete_object(Bucket=raw, Key=prefix + "gone.jpg")  # a delete marker on top

    listed = {v["Key"].removeprefix(prefix): v["Deleted"]
              for v in stack.store.list_versions(raw, prefix)}

    assert listed == {"kept.jpg": False, "gone.jpg": True}
