"""A stage's soft time limit is a timer of the process that runs the step."""

from __future__ import annotations

import signal
import time

import pytest

from pipeline.errors import StageTimeLimitExceeded
from pipeline.tasks.stages import stage_deadline


def test_a_step_past_its_deadline_is_interrupted() -> None:
    started = time.monotonic()
    with pytest.raises(StageTimeLimitExceeded, match=r"0\.2 s"), stage_deadline(0.2):
        while time.monotonic() - started < 5:
            pass
    assert time.monotonic() - started < 1


def test_the_deadline_is_not_swallowed_by_a_catch_all_inside_the_step() -> None:
    with pytest.raises(StageTimeLimitExceeded), stage_deadline(0.1):
        try:
            time.sleep(1)  # the timer fires in here
        except Exception:  # what an adapter translating vendor errors does
            pytest.fail("the deadline was caught as an ordinary error")


def test_a_step_within_its_deadline_runs_and_leaves_no_timer() -> None:
    before = signal.getsignal(signal.SIGALRM)
    with stage_deadline(0.3):
        time.sleep(0.05)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is before
    time.sleep(0.4)  # nothing fires later


@pytest.mark.parametrize("name", ["shelf.ingest", "shelf.normalize", "shelf.detect",
                                  "shelf.comply", "shelf.aggregate"])
def test_a_stage_killed_at_its_hard_limit_goes_back_to_its_queue(name: str) -> None:
    # A native call (a decoder) that outlives the soft deadline is killed at the hard limit;
    # acknowledged, the photo would vanish with no dead letter. Requeued, each delivery is
    # counted and the last one is dead-lettered with its reason.
    from pipeline.tasks.app import app

    task = app.tasks[name]
    assert task.acks_late and task.reject_on_worker_lost
    assert task.acks_on_timeout is False


@pytest.mark.parametrize("name", ["shelf.aggregate", "shelf.recompute", "shelf.reconcile"])
def test_beat_tasks_that_grow_with_the_data_have_limits_of_their_own(name: str) -> None:
    from pipeline.settings import get_settings
    from pipeline.tasks.app import app

    task = app.tasks[name]
    limit = get_settings().celery.maintenance_time_limit_s
    assert task.time_limit == limit > get_settings().celery.stage_time_limit_s
    assert task.soft_time_limit < task.time_limit
    # periodic ones are taken on receipt: a long run is never redelivered and run twice
    assert task.acks_late is (name == "shelf.aggregate")


def test_celerys_own_soft_limit_lands_after_the_stages_and_before_the_hard_one() -> None:
    # At the same instant, Celery's signal would land inside the stage's dead-lettering and
    # turn a stage out of time into a retry of the whole stage
    from pipeline.settings import get_settings
    from pipeline.tasks.app import app, soft_limit_s

    s = get_settings()
    assert soft_limit_s(s) + 5 <= app.conf.task_soft_time_limit < app.conf.task_time_limit


def test_a_task_running_when_the_broker_connection_drops_is_not_run_twice_at_once() -> None:
    # The connection's loss puts its unacknowledged messages back on their queues: the tasks
    # still running are stopped, and a worker holds only a few retries waiting to run
    from pipeline.tasks.app import app

    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is True
    assert 1 <= app.conf.worker_eta_task_limit <= 8
