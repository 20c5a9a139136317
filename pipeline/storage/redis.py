"""Redis clients and claims (``SET NX`` with expiry) for at-most-once work."""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pipeline.errors import PermanentError, TransientError


def make_redis(url: str) -> Any:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                health_check_interval=30, decode_responses=True)


def _translate(exc: RedisError, what: str) -> Exception:
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return TransientError(f"redis {what}: {exc}")
    return PermanentError(f"redis {what}: {exc}")


def claim(client: Any, key: str, owner: str, ttl_s: int) -> bool:
    """True when this caller now holds ``key``; False when someone already does."""
    try:
        return bool(client.set(key, owner, nx=True, ex=ttl_s))
    except RedisError as exc:
        raise _translate(exc, "claim") from exc


def release(client: Any, key: str) -> None:
    try:
        client.delete(key)
    except RedisError as exc:
        raise _translate(exc, "release") from exc
