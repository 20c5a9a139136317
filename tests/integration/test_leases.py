"""Leases on the real Redis: held while the block runs, freed soon after a holder dies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from pipeline.storage.redis import lease
from tests.conftest import Stack


def test_a_lease_outlives_its_expiry_while_the_block_runs(stack: Stack) -> None:
    key = f"shelf:test-lease:{uuid.uuid4().hex}"
    # Given a block holding a three-second lease
    with lease(stack.redis, key, "me", 3) as held:
        assert held
        # When it runs longer than the lease's expiry
        time.sleep(4.5)
        # Then the lease is still its own, and no one else gets it
        assert stack.redis.get(key) == "me"
        with lease(stack.redis, key, "other", 3) as other:
            assert not other
    # And the block's end frees it
    assert stack.redis.get(key) is None


def test_a_lease_never_drops_another_holders_claim(stack: Stack) -> None:
    key = f"shelf:test-lease:{uuid.uuid4().hex}"
    with lease(stack.redis, key, "me", 3) as held:
        assert held
        # Given the lease lost (expired, say, while Redis was away) and taken by another
        stack.redis.set(key, "other", ex=30)
        time.sleep(1.5)
    # Then leaving the block leaves the other's claim alone, its expiry not renewed by us
    assert stack.redis.get(key) == "other"
    assert stack.redis.ttl(key) > 25
    stack.redis.delete(key)


def test_a_holder_killed_hard_frees_its_lease_within_the_expiry(stack: Stack) -> None:
    key = f"shelf:test-lease:{uuid.uuid4().hex}"
    holder = (
        "import os, signal, sys\n"
        "from pipeline.storage.redis import lease, make_redis\n"
        "with lease(make_redis(sys.argv[1]), sys.argv[2], 'dead', 3) as held:\n"
        "    assert held\n"
        "    print('held', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    # Given a process that takes a three-second lease and is killed inside the block
    proc = subprocess.run([sys.executable, "-c", holder, stack.settings.redis.url, key],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert proc.stdout.strip() == "held" and proc.returncode == -9, proc.stderr
    assert stack.redis.get(key) == "dead"
    # Then the lease is free again within its expiry, not after the job's longest run
    deadline = time.monotonic() + 5
    while stack.redis.exists(key) and time.monotonic() < deadline:
        time.sleep(0.2)
    with lease(stack.redis, key, "next", 3) as held:
        assert held


def test_a_lease_taken_by_another_while_the_block_runs_says_it_was_lost(stack: Stack) -> None:
    key = f"shelf:test-lease:{uuid.uuid4().hex}"
    with lease(stack.redis, key, "me", 3) as held:
        assert held and not held.lost.is_set()
        # Given the lease expired while its holder was frozen, and another took it
        stack.redis.set(key, "other", ex=30)
        # Then the holder learns it at the next renewal, and can tell its work may be stale
        assert held.lost.wait(3)
    stack.redis.delete(key)
