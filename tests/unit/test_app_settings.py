"""Settings that contradict each other are refused when the Celery app is made, before any
worker takes a task."""

from __future__ import annotations

import pytest

from pipeline.settings import Settings
from pipeline.tasks.app import create_app


@pytest.mark.parametrize(("change", "says"), [
    ({"celery": {"backoff_max_s": 400}}, "backoff_max_s"),
    ({"celery": {"stage_time_limit_s": 295}}, "stage_time_limit_s"),
    ({"celery": {"stage_time_limit_s": 40}, "ingest": {"download_deadline_s": 60}},
     "download_deadline_s"),  # the soft limit 25 s
], ids=["backoff-over-visibility", "stage-limit-near-visibility", "download-past-soft-limit"])
def test_contradicting_settings_are_refused_at_start(change: dict[str, dict[str, int]],
                                                     says: str) -> None:
    with pytest.raises(ValueError, match=says):
        create_app(Settings(**change))  # type: ignore[arg-type]


def test_the_defaults_agree() -> None:
    assert create_app(Settings()).conf.task_time_limit == Settings().celery.stage_time_limit_s
