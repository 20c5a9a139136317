"""Dead letters: a record in the artifacts bucket plus a message on the ``dead_letter`` queue."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from pydantic import ValidationError

from pipeline.errors import ObjectNotFoundError, TransientError
from pipeline.messages import DeadLetter, StageMessage
from pipeline.storage.keys import dead_letter_key
from pipeline.storage.s3 import ObjectStore

log = logging.getLogger(__name__)
PREFIX = "dead-letter/"


def letter_id(stage: str, msg: StageMessage) -> str:
    """Stable per photo version and stage: a photo failing again overwrites its own record."""
    p = msg.photo
    basis = f"{p.bucket}/{p.key}@{p.version_id or p.etag or ''}:{stage}"
    return f"{stage}-{hashlib.sha256(basis.encode()).hexdigest()[:16]}"


def make_letter(stage: str, exc: BaseException, attempts: int, msg: StageMessage) -> DeadLetter:
    """The letter keeps references only: the pre-signed URL is dropped (a replay mints one)."""
    kept = msg.model_copy(update={"photo": msg.photo.model_copy(update={"url": ""})})
    return DeadLetter(id=letter_id(stage, msg), stage=stage, error_type=type(exc).__name__,
                      error=(str(exc) or repr(exc))[:2000], attempts=attempts, message=kept,
                      failed_at=datetime.now(UTC))


def write_letter(store: ObjectStore, bucket: str, letter: DeadLetter) -> str:
    key = dead_letter_key(letter.id)
    store.put_json(bucket, key, letter.model_dump(mode="json"))
    log.warning("dead letter %s: %s %s: %s", key, letter.stage, letter.error_type, letter.error)
    return key


def _letter(store: ObjectStore, bucket: str, key: str) -> DeadLetter | None:
    """The letter at ``key``; None (logged) when it does not validate."""
    try:
        return DeadLetter.model_validate(store.get_json(bucket, key))
    except (ValidationError, ValueError) as exc:
        log.error("dead letter %s is not a valid letter, skipped: %s", key, exc)
        return None


def read_letter(store: ObjectStore, bucket: str, letter_id: str) -> DeadLetter | None:
    """The letter ``letter_id``; None when there is none (or it does not validate)."""
    try:
        return _letter(store, bucket, dead_letter_key(letter_id))
    except ObjectNotFoundError:
        return None


def read_letters(store: ObjectStore, bucket: str, *, seen: set[str] | None = None,
                 unread: list[str] | None = None) -> Iterator[DeadLetter]:
    """Replayable letters (unreadable messages live apart, under ``unreadable/``). With
    ``seen``, letters whose key is in it are skipped and every key read is added to it, so a
    watcher reads each letter once. With ``unread``, a letter S3 does not hand over (a
    transient fault) is added to it and the others go on, instead of the fault ending the
    reading. A listed letter S3 does not hold (removed since, or its key damaged in the
    listing) sends the listing round again (:meth:`ObjectStore.read_listed`)."""

    def skip(key: str) -> bool:
        return key.startswith(f"{PREFIX}unreadable/") or (seen is not None and key in seen)

    def read(key: str) -> tuple[bool, DeadLetter | None]:
        """Whether S3 handed the letter over, and the letter if it is one."""
        try:
            return True, _letter(store, bucket, key)
        except TransientError:
            if unread is None:
                raise
            unread.append(key)
            return False, None

    for key, (handed, letter) in store.read_listed(bucket, PREFIX, read, skip=skip):
        if handed and seen is not None:
            seen.add(key)
        if letter is not None:
            yield letter
