"""Redis failures translated into ours: transient where Redis may answer later."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from pipeline.errors import PermanentError, TransientError
from pipeline.storage.redis import _translate


@pytest.mark.parametrize(("exc", "kind"), [
    (ConnectionError("Connection refused"), TransientError),
    (TimeoutError("Timeout reading from socket"), TransientError),
    (BusyLoadingError("Redis is loading the dataset in memory"), TransientError),
    (ReadOnlyError("You can't write against a read only replica."), TransientError),
    # maxmemory with noeviction: writes wait for memory, they are not wrong
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), TransientError),
    (ResponseError("BUSY Redis is busy running a script."), TransientError),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
     PermanentError),
    (NoPermissionError("this user has no permissions to run the 'set' command"),
     PermanentError),
    # a failed snapshot to disk stops writes until the next one succeeds
    (ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently "
                   "unable to persist to disk."), TransientError),
    (ResponseError("Command # 1 (SET k v NX EX 60) of pipeline caused error: BUSY Redis is "
                   "busy running a script."), TransientError),
    (ResponseError("Command # 1 (SET k v) of pipeline caused error: WRONGTYPE Operation "
                   "against a key holding the wrong kind of value"), PermanentError),
], ids=["refused", "timeout", "loading", "read-only", "out-of-memory", "busy-script",
        "wrong-type", "no-permission", "misconf", "busy-in-a-pipeline",
        "wrong-type-in-a-pipeline"])
def test_redis_errors_are_transient_only_where_redis_may_answer_later(
        exc: RedisError, kind: type[Exception]) -> None:
    out = _translate(exc, "claim")

    assert isinstance(out, kind)
    assert "redis claim" in str(out)
