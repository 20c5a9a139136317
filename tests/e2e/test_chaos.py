"""A short fault campaign (``make chaos`` runs the long one): kills, a Redis crash, S3
faults, duplicates, expired URLs and bad inputs; no photo lost, none counted twice."""

from __future__ import annotations

import pytest

from pipeline.chaos import Campaign
from tests.conftest import Stack


@pytest.mark.slow
def test_short_fault_campaign_loses_nothing_and_counts_nothing_twice(stack: Stack) -> None:
    # Given a campaign on buckets and queues of its own, faults at a fast pace
    campaign = Campaign(40, seed=11, pace=0.3, timeout_s=420)

    # When it runs to the end
    report = campaign.run()

    # Then every upload ended once: good photos as results, bad inputs as dead letters
    assert report.lost == 0, report.format()
    assert report.duplicated == 0, report.format()
    assert report.bad_with_result == 0, report.format()
    assert report.misread == 0, report.format()
    assert report.good_dead_lettered == 0, report.format()
    assert report.results == report.good
    assert sum(report.dead_letters.values()) == report.bad
    # And the faults really happened
    injected = report.injected
    assert injected["SIGKILL pool child"] >= 1 and injected["SIGKILL whole worker"] >= 1
    assert injected["SIGKILL listener"] >= 1
    assert injected["Redis crash and restart"] == 1
    assert injected["multipart upload"] >= 5
    assert report.proxy["error"] + report.proxy["throttle"] >= 5
