"""Structured logs: one JSON object per line, with the photo and task a line is about.

Every line carries ``time``, ``level``, ``logger`` and ``message``, plus what the current
stage is working on (``stage``, ``task_id``, ``upload_id``, ``sha256``, ``key``, ``store``)
and any ``duration_s``. Nothing secret gets through: pre-signed URLs lose their query
string, AWS keys and Redis passwords are masked. EXIF values are never logged at all.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "shelf_log_context", default=None)
FIELDS = ("stage", "task_id", "upload_id", "sha256", "key", "store", "duration_s")
_SECRETS = (
    (re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*X-Amz-[^\s'\"]*"), r"\1?<signed>"),
    (re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s'\"]+"), r"\1<masked>"),
    (re.compile(r"(redis(?:s)?://[^:/@\s]*:)[^@\s]+@"), r"\1<masked>@"),
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), "<aws-key-id>"),
    (re.compile(r"(?i)(aws_secret_access_key|secret_access_key|password)(['\"]?\s*[:=]\s*"
                r"['\"]?)[^\s'\",}]+"), r"\1\2<masked>"),
)


def scrub(text: str) -> str:
    """``text`` with pre-signed URLs, keys and passwords masked."""
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


def printable(text: str) -> str:
    """``text`` as a terminal, a log line or an SQS attribute may carry it: control, escape
    and direction characters and lone surrogates spelled out (``\\x1b``), so a name from
    an S3 key or a catalog cannot move the cursor, recolour or reverse what follows."""
    out = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in out)


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Attach ``fields`` to every log line inside the block."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items()
                                                         if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": scrub(record.getMessage()), "pid": record.process}
        doc.update(_context.get() or {})
        for name in FIELDS:
            if hasattr(record, name):
                doc[name] = getattr(record, name)
        if record.exc_info:
            doc["error"] = scrub(self.formatException(record.exc_info))
        return json.dumps(doc, default=str, ensure_ascii=False)


class ScrubbingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def configure(*, json_lines: bool, verbose: bool = False) -> None:
    """Root logging for a process: JSON lines for the long-running ones, text for commands."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else ScrubbingFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
