"""Log lines are JSON with the photo and task they are about, and leak no secret."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.logs import JsonFormatter, context, scrub

URL = ("http://127.0.0.1:4566/shelf-raw/raw/S1/A1/B1/c/p.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
       "&X-Amz-Credential=test%2F20261124&X-Amz-Signature=deadbeef")


@pytest.mark.parametrize(("text", "leaked"), [
    (f"fetch {URL} failed", "deadbeef"),
    (f"fetch {URL} failed", "X-Amz-Credential=test"),
    ("redis://pipeline:s3cr3t@127.0.0.1:6390/1 down", "s3cr3t"),
    ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI"),
    ('{"password": "hunter2"}', "hunter2"),
], ids=["signature", "credential", "redis-password", "key-id", "secret", "json-password"])
def test_scrub_masks_secrets(text: str, leaked: str) -> None:
    assert leaked not in scrub(text)


def test_a_line_is_json_with_its_context() -> None:
    record = logging.LogRecord("pipeline.tasks", logging.INFO, __file__, 1,
                               "ingest done for %s", (URL,), None)
    record.duration_s = 0.25
    with context(stage="ingest", task_id="t-1", sha256="a" * 64, key="raw/S1/x.jpg",
                 store="S1"):
        line = JsonFormatter().format(record)
    doc = json.loads(line)
    assert doc["stage"] == "ingest" and doc["task_id"] == "t-1" and doc["store"] == "S1"
    assert doc["sha256"] == "a" * 64 and doc["duration_s"] == 0.25
    assert doc["level"] == "info" and "deadbeef" not in line
    assert "X-Amz-Signature" not in line


@pytest.mark.parametrize(("text", "shown"), [
    ("Caf\u00e9 Nord", "Caf\u00e9 Nord"),
    ("S1\x1b[2J\x1b[31mALL CLEAR", "S1\\x1b[2J\\x1b[31mALL CLEAR"),
    ("S1\u009b2J", "S1\\x9b2J"),
    ("A1\u202eB1", "A1\\x202eB1"),
    ("bad \ud800 half", "bad \\ud800 half"),
], ids=["accents", "ansi", "c1-csi", "direction-override", "lone-surrogate"])
def test_printable_spells_out_what_would_drive_a_terminal(text: str, shown: str) -> None:
    from pipeline.logs import printable

    assert printable(text) == shown


def test_a_command_s_error_reaches_the_terminal_escaped(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # An error quoting a value from the results (a planogram id holding escape sequences)
    from pipeline import cli
    from pipeline.errors import PermanentError

    def fails(args: object) -> int:
        raise PermanentError("query failed: could not convert 'P1\x1b]0;owned\x07\x1b[2J'")

    monkeypatch.setattr(cli, "_query", fails)
    assert cli.main(["query", "x"]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b]0;owned\\x07" in err
