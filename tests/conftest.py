"""Shared fixtures: the real local stack (LocalStack S3/SQS, Redis), isolated per test run.

Buckets and queues get a per-session suffix and Celery uses its own Redis database, so a
running ``make up`` stack and the tests never share work. A missing service fails the test
with the command that starts it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import REPO_ROOT, Settings
from pipeline.storage.redis import make_redis
from pipeline.storage.s3 import ObjectStore, make_client
from pipeline.supervise import die_with_parent

START_HINT = "start the local stack with `make up` (or `bash scripts/stack.sh services`)"
TEST_REDIS_DB = 2


def _localstack_up(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/_localstack/health", timeout=2) as r:
            body = r.read().decode()
        return '"s3": "' in body and '"sqs": "' in body
    except OSError:
        return False


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    store: ObjectStore
    s3: Any
    sqs: Any
    redis: Any
    queue_url: str
    dlq_url: str


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = Settings()
    if not _localstack_up(str(base.aws.endpoint_url)):
        pytest.fail(f"LocalStack does not answer at {base.aws.endpoint_url}: {START_HINT}")
    redis_url = base.redis.url.rsplit("/", 1)[0] + f"/{TEST_REDIS_DB}"
    try:
        make_redis(redis_url).ping()
    except Exception as exc:
        pytest.fail(f"Redis does not answer at {redis_url} ({exc}): {START_HINT}")
    suffix = uuid.uuid4().hex[:8]
    env = {
        "SHELF_S3__RAW_BUCKET": f"raw-{suffix}",
        "SHELF_S3__ARTIFACTS_BUCKET": f"artifacts-{suffix}",
        "SHELF_S3__RESULTS_BUCKET": f"results-{suffix}",
        "SHELF_S3__CONFIG_BUCKET": f"config-{suffix}",
        "SHELF_SQS__QUEUE": f"events-{suffix}",
        "SHELF_SQS__DEAD_LETTER_QUEUE": f"events-dlq-{suffix}",
        "SHELF_SQS__WAIT_TIME_S": "1",
        "SHELF_SQS__VISIBILITY_TIMEOUT_S": "20",
        "SHELF_REDIS__URL": redis_url,
        "SHELF_CELERY__KEY_PREFIX": f"test-{suffix}:",  # a stray worker never takes our tasks
        "SHELF_CELERY__BACKOFF_BASE_S": "0.2",
        "SHELF_CELERY__BACKOFF_MAX_S": "2",
        "SHELF_CELERY__AGGREGATE_DEBOUNCE_S": "2",
        "SHELF_CELERY__VISIBILITY_TIMEOUT_S": "60",
        "SHELF_CELERY__STAGE_TIME_LIMIT_S": "45",
        "SHELF_INGEST__DOWNLOAD_DEADLINE_S": "20",  # under the stages' soft limit (30 s)
        "SHELF_METRICS__PORT": "9818",
        "SHELF_RECOGNITION__CATALOG_REFRESH_S": "0",  # catalog changes show at once
    }
    run_dir = tmp_path_factory.mktemp("run")
    env["SHELF_RUN_DIR"] = str(run_dir)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(run_dir / "metrics")
    (run_dir / "metrics").mkdir()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from pipeline.settings import get_settings
    from pipeline.storage.provision import apply_spec, load_spec, spec_names

    get_settings.cache_clear()
    s = get_settings()
    s3, sqs = make_client(s.aws, "s3"), make_client(s.aws, "sqs")
    urls = apply_spec(load_spec(), s3=s3, sqs=sqs, region=s.aws.region,
                      rename=spec_names(s).__getitem__)
    r = make_redis(s.redis.url)
    for stale in r.scan_iter(count=1000):  # the test database only (FLUSHDB is not allowed)
        r.delete(stale)
    from pipeline.demo import enrol_synthetic_catalog

    enrol_synthetic_catalog(s, ObjectStore(s3))  # the synthetic photos' SKUs, by packshot
    from pipeline.tasks.app import using_broker

    with using_broker(s):  # in case the app was imported before the env was set
        yield Stack(s, env, ObjectStore(s3), s3, sqs, r, urls[s.sqs.queue],
                    urls[s.sqs.dead_letter_queue])
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


class Proc:
    """A pipeline process (worker or listener) started for a test, stopped by its pid."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._fh = log.open("wb")
        self.p = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args],
                                  env={**os.environ, **env}, stdout=self._fh,
                                  stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                  start_new_session=True, preexec_fn=die_with_parent)

    def wait_for_log(self, text: str, timeout_s: float = 60) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            if self.p.poll() is not None:
                raise AssertionError(f"process exited: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"'{text}' not logged in {timeout_s} s: "
                             f"{self.log.read_text()[-3000:]}")

    def children(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.p.pid)],
                             capture_output=True, text=True, check=False).stdout
        return [int(x) for x in out.split()]

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, 9)
                self.p.wait()
        self._fh.close()


def start_worker(stack: Stack, tmp: Path, pool: str, name: str,
                 extra_env: dict[str, str] | None = None, node: str | None = None,
                 queues: tuple[str, ...] | None = None) -> Proc:
    env = {**stack.env, **(extra_env or {})}
    args = ["worker", "--pool", pool, "--concurrency", "1", *(["--name", node] if node else [])]
    if pool == "cpu":  # inference stays with the inference workers, which tests swap
        from pipeline.tasks.app import CPU_QUEUES

        args += ["--queues", ",".join(queues or CPU_QUEUES)]
    proc = Proc(args, env, tmp / f"{name}.log")
    proc.wait_for_log("ready.")
    return proc


@contextmanager
def swapped_worker(stack: Stack, procs: dict[str, Proc], tmp: Path, pool: str, name: str,
                   extra_env: dict[str, str] | None = None) -> Iterator[Proc]:
    """The session's ``pool`` worker replaced by one configured for a test, then restored."""
    procs[pool].stop()
    worker = start_worker(stack, tmp, pool, name, extra_env)
    try:
        yield worker
    finally:
        worker.stop()
        procs[pool] = start_worker(stack, tmp, pool, f"{name}-restored")


@pytest.fixture(scope="session")
def pipeline_procs(stack: Stack, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[dict[str, Proc]]:
    """A CPU worker, an inference worker and the listener for the whole session."""
    tmp = tmp_path_factory.mktemp("procs")
    procs = {"cpu": start_worker(stack, tmp, "cpu", "worker-cpu"),
             "inference": start_worker(stack, tmp, "inference", "worker-inference")}
    listener = Proc(["listen"], stack.env, tmp / "listener.log")
    listener.wait_for_log("listening on")
    procs["listener"] = listener
    yield procs
    for p in procs.values():
        p.stop()
