"""Redis clients and claims (``SET NX`` with expiry) for at-most-once work."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import redis
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.errors import PermanentError, TransientError


def make_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                health_check_interval=30, decode_responses=True)


# (inside a pipeline, redis-py puts "Command # 1 (...) of pipeline caused error: " first)
_WAIT_FOR_REDIS = re.compile(r"(^|: )(BUSY|MISCONF) ")


def _translate(exc: RedisError, what: str) -> Exception:
    """Transient where Redis may answer later: away, loading, a replica promoted, full
    (``maxmemory`` with ``noeviction`` refuses writes until memory frees), busy in a script,
    refusing writes because its last snapshot to disk failed (MISCONF). Permanent otherwise
    (a wrong command, a missing permission)."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, BusyLoadingError,
                        TryAgainError, ReadOnlyError, OutOfMemoryError, MasterDownError,
                        ClusterDownError)) or (
            isinstance(exc, ResponseError) and _WAIT_FOR_REDIS.search(str(exc))):
        return TransientError(f"redis {what}: {exc}")
    return PermanentError(f"redis {what}: {exc}")


def translate_broker(exc: Exception, what: str) -> Exception:
    """A failure to hand a message to the broker (kombu over Redis) as a ``TransientError``:
    the broker being away is always worth another try."""
    return TransientError(f"broker {what}: {type(exc).__name__}: {exc}")


_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def release(client: redis.Redis, key: str, owner: str) -> bool:
    """Drop ``key`` if ``owner`` still holds it (never someone else's claim)."""
    try:
        return bool(client.eval(_RELEASE_IF_OWNER, 1, key, owner))
    except RedisError as exc:
        raise _translate(exc, "release") from exc


_TAKE_OVER = """
local v = redis.call('get', KEYS[1])
if v == false then return redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2]) and 1 or 0 end
if v == ARGV[1] then redis.call('expire', KEYS[1], ARGV[2]) return 1 end
return 0
"""


def claim(client: redis.Redis, key: str, owner: str, ttl_s: int) -> bool:
    """Hold ``key`` for ``owner`` if no one holds it (``SET NX`` with expiry)."""
    try:
        return bool(client.set(key, owner, nx=True, ex=max(1, ttl_s)))
    except RedisError as exc:
        raise _translate(exc, "claim") from exc


def claim_or_take_over(client: redis.Redis, key: str, owner: str, ttl_s: int) -> bool:
    """Hold ``key`` for ``owner``: free, or already held by the same owner (an earlier
    delivery of the same task whose worker died), in one atomic step."""
    try:
        return bool(client.eval(_TAKE_OVER, 1, key, owner, ttl_s))
    except RedisError as exc:
        raise _translate(exc, "claim") from exc


_RENEW_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end
return 0
"""


class Lease:
    """What :func:`lease` yields: true when held; ``lost`` set once a renewal found it
    taken by another holder (expired while this one was frozen, or Redis away longer than
    its expiry): what the block writes after that may race the new holder's."""

    def __init__(self, held: bool) -> None:
        self.held = held
        self.lost = threading.Event()

    def __bool__(self) -> bool:
        return self.held


@contextmanager
def lease(client: redis.Redis, key: str, owner: str, ttl_s: int) -> Iterator[Lease]:
    """Hold ``key`` for ``owner`` while the block runs; yields whether it is held (``False``:
    someone else holds it, and the block should not do the work).

    The claim expires after ``ttl_s`` and a background thread renews it every third of
    that while the block runs, so a long job keeps it however long it takes, and a holder
    killed hard (``SIGKILL``, a lost host) frees it within ``ttl_s`` instead of after the
    job's longest run. A renewal that fails (Redis away) is tried again at the next tick."""
    ttl_s = max(3, ttl_s)
    if not claim(client, key, owner, ttl_s):
        yield Lease(False)
        return
    held = Lease(True)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                if not client.eval(_RENEW_IF_OWNER, 1, key, owner, ttl_s):
                    held.lost.set()  # expired and taken: nothing of ours left to renew
                    return
            except RedisError:
                continue

    keeper = threading.Thread(target=renew, name=f"lease {key}", daemon=True)
    keeper.start()
    try:
        yield held
    finally:
        stop.set()
        keeper.join()
        release(client, key, owner)


_CLAIM_UNLESS_DONE = """
if redis.call('exists', KEYS[1]) == 1 then return -1 end
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""


def claim_unless_done(client: redis.Redis, claims: Sequence[tuple[str, str]], owner: str,
                      ttl_s: int) -> list[Literal["done", "claimed", "busy"]]:
    """One round trip for many ``(done, key)`` pairs: ``done`` when ``done`` exists; else
    ``claimed`` when ``owner`` now holds ``key``, ``busy`` when someone else does."""
    if not claims:
        return []
    try:
        pipe = client.pipeline(transaction=False)
        for done, key in claims:
            pipe.eval(_CLAIM_UNLESS_DONE, 2, done, key, owner, ttl_s)
        got = pipe.execute()
    except RedisError as exc:
        raise _translate(exc, "claim") from exc
    return ["done" if int(g) < 0 else "claimed" if int(g) else "busy" for g in got]


_MARK_DONE = """
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('get', KEYS[2]) == ARGV[3] then redis.call('del', KEYS[2]) end
return 1
"""


def mark_done(client: redis.Redis, marks: Sequence[tuple[str, str, str]], ttl_s: int,
              owner: str) -> None:
    """One round trip for many ``(done, value, key)``: set ``done`` to ``value`` and drop
    ``owner``'s claim on ``key``."""
    if not marks:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for done, value, key in marks:
            pipe.eval(_MARK_DONE, 2, done, key, value, ttl_s, owner)
        pipe.execute()
    except RedisError as exc:
        raise _translate(exc, "mark") from exc


def release_all(client: redis.Redis, keys: Sequence[str], owner: str) -> None:
    """:func:`release` for many keys in one round trip."""
    if not keys:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.eval(_RELEASE_IF_OWNER, 1, key, owner)
        pipe.execute()
    except RedisError as exc:
        raise _translate(exc, "release") from exc


def ttl_s(client: redis.Redis, key: str) -> float:
    """Seconds until ``key`` expires (0 when it does not exist or never expires)."""
    try:
        return max(0.0, int(client.pttl(key)) / 1000)
    except RedisError as exc:
        raise _translate(exc, "ttl") from exc


def count(client: redis.Redis, key: str, ttl_s: int) -> int:
    """Increment ``key`` (expiring after ``ttl_s``) and return the new value."""
    try:
        pipe = client.pipeline()
        pipe.incr(key)
        pipe.expire(key, ttl_s)
        return int(pipe.execute()[0])
    except RedisError as exc:
        raise _translate(exc, "count") from exc


def number(client: redis.Redis, key: str) -> int:
    """The integer at ``key``; 0 when it is not set."""
    try:
        raw = client.get(key)
    except RedisError as exc:
        raise _translate(exc, "get") from exc
    return int(raw) if raw else 0


def flag(client: redis.Redis, key: str, ttl_s: int) -> None:
    """Set ``key`` for ``ttl_s`` seconds."""
    try:
        client.set(key, "1", ex=ttl_s)
    except RedisError as exc:
        raise _translate(exc, "flag") from exc


def flagged(client: redis.Redis, keys: list[str], chunk: int = 500) -> set[str]:
    """Those of ``keys`` that are set, ``chunk`` keys a round trip."""
    out: set[str] = set()
    try:
        for start in range(0, len(keys), chunk):
            part = keys[start:start + chunk]
            out.update(k for k, v in zip(part, client.mget(part), strict=True) if v is not None)
    except RedisError as exc:
        raise _translate(exc, "flagged") from exc
    return out


def unflag(client: redis.Redis, key: str) -> bool:
    """Drop ``key``; whether it was set."""
    try:
        return bool(client.delete(key))
    except RedisError as exc:
        raise _translate(exc, "unflag") from exc


def flags_under(client: redis.Redis, prefix: str) -> list[str]:
    """The keys set under ``prefix`` (a scan: for a handful of keys, not for hot paths)."""
    try:
        return [str(k) for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    except RedisError as exc:
        raise _translate(exc, "scan") from exc
