"""Beat's maintenance on the in-memory store: photos sent round after transient faults, and
uploads waiting for their planogram."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.errors import TransientError
from pipeline.messages import DeadLetter, PhotoRef, StageMessage
from pipeline.operations import recompute_pending, replay_transient
from pipeline.settings import Settings
from pipeline.storage.keys import dead_letter_key, pending_key
from pipeline.storage.memory import MemoryStore
from pipeline.tasks.stages import TRANSIENT_LETTERS
from tests.unit.stores import CountingStore

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PLAN = {"planogram_id": "PG-1", "version": 1,
        "shelves": [{"index": 0, "positions": [{"sku": "A", "facings": 2}]}]}


class FakeRedis:
    """The few Redis calls beat's maintenance makes, in memory."""

    def __init__(self) -> None:
        self.zsets: dict[str, dict[str, float]] = {}
        self.keys: set[str] = set()

    def zadd(self, key: str, mapping: dict[str, float]) -> None:
        self.zsets.setdefault(key, {}).update(mapping)

    def zrangebyscore(self, key: str, low: float, high: float) -> list[bytes]:
        return [m.encode() for m, v in self.zsets.get(key, {}).items() if low <= v <= high]

    def zrem(self, key: str, member: str) -> None:
        self.zsets.get(key, {}).pop(member, None)

    def exists(self, key: str) -> int:
        return int(key in self.keys)

    def delete(self, key: str) -> int:
        had = key in self.keys
        self.keys.discard(key)
        return int(had)

    def set(self, key: str, value: str, nx: bool = False, ex: int | None = None) -> bool:
        if nx and key in self.keys:
            return False
        self.keys.add(key)
        return True


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, StageMessage]]:
    out: list[tuple[str, StageMessage]] = []
    monkeypatch.setattr("pipeline.tasks.stages.send_stage",
                        lambda stage, msg: out.append((stage, msg)))
    return out


def _msg(bay: str, n: int) -> StageMessage:
    key = f"raw/S1/A1/{bay}/c1/p{n}.jpg"
    return StageMessage(photo=PhotoRef(bucket=Settings().s3.raw_bucket, key=key,
                                       version_id=f"v{n}",
                                       store="S1", aisle="A1", bay=bay, camera="c1"),
                        sha256=f"{n:064x}", captured_date="2026-12-05", recompute=True)


def _two_bays_waiting_with_planograms(s: Settings, store: MemoryStore) -> None:
    """An upload waiting in each of bays B1 and B2, whose planograms have both arrived."""
    for bay, n in (("B1", 1), ("B2", 2)):
        m = _msg(bay, n)
        store.put_json(s.s3.artifacts_bucket,
                       pending_key(f"planograms/S1/A1/{bay}.json", m.photo.upload_id),
                       m.model_dump(mode="json"))
        store.put_bytes(s.s3.config_bucket, f"planograms/S1/A1/{bay}.json",
                        json.dumps(PLAN).encode(), "application/json")


def _letter(n: int, error_type: str, failed_ago_s: float, auto_replays: int = 0) -> DeadLetter:
    return DeadLetter(id=f"comply-{n:016x}", stage="comply", error_type=error_type,
                      error="retries exhausted after 11 attempts: SlowDown", attempts=11,
                      message=_msg("B1", n), failed_at=NOW - timedelta(seconds=failed_ago_s),
                      auto_replays=auto_replays)


def test_photos_dead_lettered_by_a_transient_fault_are_sent_round_a_few_times(
        sent: list[tuple[str, StageMessage]]) -> None:
    # Given letters indexed when they failed: an outage's, one too recent, one already sent
    # round three times, and a corrupt photo's
    s, store, redis = Settings(), MemoryStore(), FakeRedis()
    letters = [_letter(1, "TransientError", 1200), _letter(2, "TransientError", 60),
               _letter(3, "TransientError", 1200, auto_replays=3),
               _letter(4, "CorruptImageError", 1200)]
    for letter in letters:
        store.put_json(s.s3.artifacts_bucket, dead_letter_key(letter.id),
                       letter.model_dump(mode="json"))
        redis.zadd(TRANSIENT_LETTERS, {letter.id: letter.failed_at.timestamp()})

    # When beat's reconciliation runs
    n = replay_transient(s, store, redis, now=NOW)  # type: ignore[arg-type]

    # Then only the outage's photo goes back to its stage, counted, and the recent one waits
    assert n == 1 and [(st, m.photo.key) for st, m in sent] == [
        ("comply", "raw/S1/A1/B1/c1/p1.jpg")]
    done = DeadLetter.model_validate(store.get_json(s.s3.artifacts_bucket,
                                                    dead_letter_key(letters[0].id)))
    assert done.auto_replays == 1 and done.replayed_at is not None
    assert set(redis.zsets[TRANSIENT_LETTERS]) == {letters[1].id}
    again = replay_transient(s, store, redis, now=NOW)  # type: ignore[arg-type]
    assert again == 0  # nothing is sent twice


def test_letters_are_indexed_again_from_s3_after_redis_lost_its_data(
        sent: list[tuple[str, StageMessage]]) -> None:
    # Given letters in S3 that Redis no longer knows (it restarted without its data): an
    # outage's, one already sent round by a person, and a corrupt photo's
    s, store, redis = Settings(), CountingStore(), FakeRedis()
    replayed = _letter(2, "TransientError", 1200).model_copy(update={"replayed_at": NOW})
    for letter in (_letter(1, "TransientError", 1200), replayed,
                   _letter(3, "CorruptImageError", 1200)):
        store.put_json(s.s3.artifacts_bucket, dead_letter_key(letter.id),
                       letter.model_dump(mode="json"))

    # When beat's reconciliation runs
    n = replay_transient(s, store, redis, now=NOW)  # type: ignore[arg-type]

    # Then the outage's photo is sent round, as it would have been with its index
    assert n == 1 and [m.photo.key for _, m in sent] == ["raw/S1/A1/B1/c1/p1.jpg"]
    # And later runs read the index, not every letter in S3 again
    store.gets.clear()
    assert replay_transient(s, store, redis, now=NOW) == 0  # type: ignore[arg-type]
    assert not store.gets


class _BrownoutStore(CountingStore):
    """Fails the reads of the keys in ``failing`` with S3's transient fault."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()

    def get_bytes(self, bucket: str, key: str) -> bytes:
        if key in self.failing:
            raise TransientError(f"get s3://{bucket}/{key}: SlowDown")
        return super().get_bytes(bucket, key)


def test_a_letter_s3_does_not_hand_over_leaves_the_index_to_the_next_run(
        sent: list[tuple[str, StageMessage]]) -> None:
    # Given two outage letters in S3 that Redis no longer knows, and S3 in a brownout that
    # fails the read of the second one
    s, store, redis = Settings(), _BrownoutStore(), FakeRedis()
    letters = [_letter(1, "TransientError", 1200), _letter(2, "TransientError", 1200)]
    for letter in letters:
        store.put_json(s.s3.artifacts_bucket, dead_letter_key(letter.id),
                       letter.model_dump(mode="json"))
    store.failing = {dead_letter_key(letters[1].id)}

    # When beat's reconciliation runs, the first one is sent round all the same
    assert replay_transient(s, store, redis, now=NOW) == 1  # type: ignore[arg-type]
    assert [m.photo.key for _, m in sent] == ["raw/S1/A1/B1/c1/p1.jpg"]

    # Then, S3 back, the next run reads the letters again and sends the second round, once
    store.failing.clear()
    assert replay_transient(s, store, redis, now=NOW) == 1  # type: ignore[arg-type]
    assert [m.photo.key for _, m in sent] == ["raw/S1/A1/B1/c1/p1.jpg",
                                             "raw/S1/A1/B1/c1/p2.jpg"]
    store.gets.clear()
    assert replay_transient(s, store, redis, now=NOW) == 0  # type: ignore[arg-type]
    assert not store.gets  # built now: the index is read, not S3


def test_only_the_uploads_of_bays_whose_planogram_arrived_are_read_and_sent_once(
        sent: list[tuple[str, StageMessage]]) -> None:
    # Given uploads waiting in two bays, one of which now has its planogram
    s, store, redis = Settings(), CountingStore(), FakeRedis()
    for bay, n in (("B1", 1), ("B1", 2), ("B2", 3), ("B2", 4), ("B2", 5)):
        m = _msg(bay, n)
        store.put_json(s.s3.artifacts_bucket,
                       pending_key(f"planograms/S1/A1/{bay}.json", m.photo.upload_id),
                       m.model_dump(mode="json"))
    store.put_bytes(s.s3.config_bucket, "planograms/S1/A1/B1.json", json.dumps(PLAN).encode(),
                    "application/json")
    store.gets.clear()

    # When beat recomputes twice before any comply has run
    first = recompute_pending(s, store, redis=redis)  # type: ignore[arg-type]
    second = recompute_pending(s, store, redis=redis)  # type: ignore[arg-type]

    # Then the two uploads of B1 are sent once, and nothing of B2 was read
    assert (first, second) == (2, 0)
    assert sorted(m.photo.key for _, m in sent) == ["raw/S1/A1/B1/c1/p1.jpg",
                                                    "raw/S1/A1/B1/c1/p2.jpg"]
    assert not [k for k in store.gets if "/B2/" in k]


def test_a_bay_s3_cannot_answer_for_waits_for_the_next_recompute_not_the_others(
        sent: list[tuple[str, StageMessage]]) -> None:
    from pipeline.errors import TransientError

    class Brownout(MemoryStore):  # S3 fails every call about bay B2's planogram
        def head(self, bucket: str, key: str) -> dict[str, object] | None:
            if "/B2" in key and bucket == s.s3.config_bucket:
                raise TransientError(f"head s3://{bucket}/{key}: 503 Service Unavailable")
            return super().head(bucket, key)

    # Given uploads waiting in two bays whose planograms both arrived
    s, store = Settings(), Brownout()
    _two_bays_waiting_with_planograms(s, store)
    # When beat recomputes while S3 fails for B2
    n = recompute_pending(s, store)
    # Then B1's upload goes on, and B2's keeps waiting for a run S3 answers
    assert n == 1 and [m.photo.key for _, m in sent] == ["raw/S1/A1/B1/c1/p1.jpg"]
    assert list(store.list_keys(s.s3.artifacts_bucket, "pending/planograms/S1/A1/B2/"))


def test_a_replay_cut_short_by_the_outage_is_tried_again_on_the_next_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import TransientError

    s, store, redis = Settings(), MemoryStore(), FakeRedis()
    letter = _letter(1, "TransientError", 1200)
    store.put_json(s.s3.artifacts_bucket, dead_letter_key(letter.id),
                   letter.model_dump(mode="json"))
    redis.zadd(TRANSIENT_LETTERS, {letter.id: letter.failed_at.timestamp()})

    def broker_down(stage: str, msg: StageMessage) -> None:
        raise TransientError("broker unreachable")

    monkeypatch.setattr("pipeline.tasks.stages.send_stage", broker_down)
    assert replay_transient(s, store, redis, now=NOW) == 0  # type: ignore[arg-type]
    assert set(redis.zsets[TRANSIENT_LETTERS]) == {letter.id}  # still waiting its turn
    sent: list[str] = []
    monkeypatch.setattr("pipeline.tasks.stages.send_stage", lambda st, m: sent.append(st))
    assert replay_transient(s, store, redis, now=NOW) == 1  # type: ignore[arg-type]
    assert sent == ["comply"] and not redis.zsets[TRANSIENT_LETTERS]


def test_a_replay_that_fails_again_at_once_keeps_its_new_letter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.operations import replay

    s, store = Settings(), MemoryStore()
    letter = _letter(1, "TransientError", 1200)
    key = dead_letter_key(letter.id)
    store.put_json(s.s3.artifacts_bucket, key, letter.model_dump(mode="json"))
    again = letter.model_copy(update={"error": "the photo is gone", "error_type": "ObjectGone",
                                      "failed_at": NOW})

    # Given a replayed stage that fails again before the replay is done with the letter
    def fails_at_once(stage: str, msg: StageMessage) -> None:
        store.put_json(s.s3.artifacts_bucket, key, again.model_dump(mode="json"))

    monkeypatch.setattr("pipeline.tasks.stages.send_stage", fails_at_once)
    assert replay(s, store, [letter]) == 1
    # Then the new failure is what the letter says, open, not hidden as replayed
    kept = DeadLetter.model_validate(store.get_json(s.s3.artifacts_bucket, key))
    assert kept.error == "the photo is gone" and kept.replayed_at is None


def test_an_automatic_replay_the_broker_refused_is_not_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import TransientError

    s, store, redis = Settings(), MemoryStore(), FakeRedis()
    letter = _letter(1, "TransientError", 1200, auto_replays=2)
    store.put_json(s.s3.artifacts_bucket, dead_letter_key(letter.id),
                   letter.model_dump(mode="json"))

    def broker_down(stage: str, msg: StageMessage) -> None:
        raise TransientError("broker unreachable")

    monkeypatch.setattr("pipeline.tasks.stages.send_stage", broker_down)
    assert replay_transient(s, store, redis, now=NOW) == 0  # type: ignore[arg-type]
    kept = DeadLetter.model_validate(store.get_json(s.s3.artifacts_bucket,
                                                    dead_letter_key(letter.id)))
    assert kept.auto_replays == 2 and kept.replayed_at is None


def test_a_stage_that_ran_out_of_time_is_sent_round_like_an_outage(
        sent: list[tuple[str, StageMessage]]) -> None:
    # Given a photo whose comply ran past its time limit (S3 slowed every call) long enough
    # ago, indexed as the dead-letter queue's consumer indexes it
    from pipeline.tasks.stages import AUTO_REPLAYED

    s, store, redis = Settings(), MemoryStore(), FakeRedis()
    letter = _letter(1, "StageTimeoutError", 1200)
    assert letter.error_type in AUTO_REPLAYED
    store.put_json(s.s3.artifacts_bucket, dead_letter_key(letter.id),
                   letter.model_dump(mode="json"))
    # When beat's reconciliation runs (its index built from S3 here)
    assert replay_transient(s, store, redis, now=NOW) == 1  # type: ignore[arg-type]
    assert [st for st, _ in sent] == ["comply"]


@pytest.mark.parametrize("bad", [
    b"{truncated",  # not JSON
    json.dumps({"photo": {"key": "x"}}).encode(),  # not a stage message
    None,  # a photo of a bucket that is no longer the raw one
], ids=["not-json", "not-a-message", "foreign-bucket"])
def test_an_unreadable_waiting_upload_is_skipped_and_the_others_are_sent(
        sent: list[tuple[str, StageMessage]], bad: bytes | None) -> None:
    # Given two bays whose planograms arrived, an upload waiting in each, and in the bay
    # listed first a waiting entry that cannot be sent
    s, store = Settings(), MemoryStore()
    _two_bays_waiting_with_planograms(s, store)
    foreign = _msg("B1", 3)
    foreign = foreign.model_copy(update={"photo": foreign.photo.model_copy(
        update={"bucket": "old-raw"})})
    store.put_bytes(s.s3.artifacts_bucket,
                    pending_key("planograms/S1/A1/B1.json", "0" * 32),
                    bad or json.dumps(foreign.model_dump(mode="json")).encode(),
                    "application/json")
    # When beat recomputes
    n = recompute_pending(s, store)
    # Then both good uploads are sent back to comply, the bad entry alone is left
    assert n == 2 and sorted(m.photo.key for _, m in sent) == ["raw/S1/A1/B1/c1/p1.jpg",
                                                               "raw/S1/A1/B2/c1/p2.jpg"]


def test_two_runs_reading_a_letter_at_once_send_it_round_once(
        sent: list[tuple[str, StageMessage]]) -> None:
    # Given an outage's letter, and two beat runs (two beats, or one still going when the
    # next starts) that each read it before either has marked it replayed
    class StaleReads(MemoryStore):
        def get_bytes(self, bucket: str, key: str) -> bytes:
            if key == dead_letter_key(letter.id):
                return json.dumps(letter.model_dump(mode="json")).encode()
            return super().get_bytes(bucket, key)

    s, store, redis = Settings(), StaleReads(), FakeRedis()
    letter = _letter(1, "TransientError", 1200)
    store.put_json(s.s3.artifacts_bucket, dead_letter_key(letter.id),
                   letter.model_dump(mode="json"))
    redis.zadd(TRANSIENT_LETTERS, {letter.id: letter.failed_at.timestamp()})
    first = replay_transient(s, store, redis, now=NOW)  # type: ignore[arg-type]
    redis.zadd(TRANSIENT_LETTERS, {letter.id: letter.failed_at.timestamp()})  # read at once
    second = replay_transient(s, store, redis, now=NOW)  # type: ignore[arg-type]
    # Then it is sent round once
    assert (first, second) == (1, 0) and len(sent) == 1
