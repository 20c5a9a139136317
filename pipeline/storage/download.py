"""Download through a pre-signed URL with a size cap and a timeout."""

from __future__ import annotations

import urllib.error
import urllib.request

from pipeline.errors import PermanentError, TransientError

CHUNK = 1 << 20


class UrlRejectedError(TransientError):
    """The URL was refused (403): expired or signed by expired credentials. Mint a new one."""


class TooLargeError(PermanentError):
    """The object is larger than the configured cap."""


def fetch(url: str, *, max_bytes: int, timeout_s: float) -> bytes:
    """GET ``url``; at most ``max_bytes`` are read, whatever Content-Length claims."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            declared = resp.headers.get("Content-Length")
            if declared is not None and int(declared) > max_bytes:
                raise TooLargeError(f"object is {declared} bytes, cap is {max_bytes}")
            chunks, total = [], 0
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise TooLargeError(f"object exceeds the {max_bytes}-byte cap")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise UrlRejectedError(f"pre-signed URL refused: HTTP {exc.code}") from exc
        if exc.code == 404:
            raise PermanentError("photo no longer exists (HTTP 404)") from exc
        if exc.code == 429 or exc.code >= 500:
            raise TransientError(f"download failed: HTTP {exc.code}") from exc
        raise PermanentError(f"download failed: HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise TransientError(f"download failed: {exc}") from exc
