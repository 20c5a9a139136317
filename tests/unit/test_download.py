"""Fetching through a URL from a server that misbehaves: short bodies, lying headers."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from pipeline.errors import PermanentError, TooLargeError, TransientError
from pipeline.storage import download
from pipeline.storage.download import Download, fetch

BODY = bytes(range(256)) * 64  # 16 KiB


Serve = Callable[[bytes], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(raw)``: the URL of a local server that answers one request with ``raw``
    (status line, headers and body as given) and closes the connection."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    answers: list[bytes] = []

    def loop() -> None:
        while True:
            conn, _ = sock.accept()
            if not answers:  # the teardown's wake-up call
                conn.close()
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answers.pop(0))

    t = threading.Thread(target=loop, daemon=True)
    t.start()

    def url(raw: bytes) -> str:
        answers.append(raw)
        return f"http://127.0.0.1:{sock.getsockname()[1]}/photo.jpg"

    yield url
    answers.clear()
    socket.create_connection(sock.getsockname(), timeout=2).close()
    t.join(timeout=2)
    sock.close()


def _response(body: bytes, length: str | None) -> bytes:
    head = "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
    if length is not None:
        head += f"Content-Length: {length}\r\n"
    return head.encode() + (b'ETag: "abc123"\r\nx-amz-meta-store: s1\r\n'
                            b"Last-Modified: Mon, 02 Jun 2025 23:59:59 GMT\r\n\r\n") + body


def test_a_whole_body_comes_back_with_its_metadata(serve: Serve) -> None:
    got = fetch(serve(_response(BODY, str(len(BODY)))), max_bytes=1 << 20, timeout_s=5)
    assert got.data == BODY and got.metadata == {"store": "s1"} and got.etag == "abc123"
    assert got.last_modified == datetime(2025, 6, 2, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize("header", ["", "Last-Modified: yesterday\r\n"],
                         ids=["absent", "not-a-date"])
def test_a_missing_or_unreadable_last_modified_is_none(serve: Serve, header: str) -> None:
    raw = (f"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n{header}\r\n"
           ).encode() + b"jpg"
    assert fetch(serve(raw), max_bytes=1 << 20, timeout_s=5).last_modified is None


def test_a_body_without_a_length_is_read_to_its_end(serve: Serve) -> None:
    got = fetch(serve(_response(BODY, None)), max_bytes=1 << 20, timeout_s=5)
    assert got.data == BODY


@pytest.mark.parametrize("sent", [0, 1000, len(BODY) - 1])
def test_a_connection_closed_before_the_declared_length_is_a_transient_fault(
        serve: Serve, sent: int) -> None:
    # A proxy or a reset ends the body early: retried, never hashed or refused as truncated.
    raw = _response(BODY[:sent], str(len(BODY)))
    with pytest.raises(TransientError, match=f"cut short: {sent} of {len(BODY)}"):
        fetch(serve(raw), max_bytes=1 << 20, timeout_s=5)


@pytest.mark.parametrize("length", ["many", "-5"])
def test_a_malformed_length_is_a_transient_fault(serve: Serve, length: str) -> None:
    with pytest.raises(TransientError):
        fetch(serve(_response(BODY, length)), max_bytes=1 << 20, timeout_s=5)


def test_a_body_longer_than_the_cap_is_refused_when_no_length_is_declared(
        serve: Serve) -> None:
    with pytest.raises(TooLargeError):
        fetch(serve(_response(BODY, None)), max_bytes=1000, timeout_s=5)


@pytest.mark.parametrize(("version_id", "announced", "fetched", "ok"), [
    (None, "abc123", "abc123", True),
    (None, '"abc123"', "abc123", True),
    (None, "abc123", "def456", False),  # overwritten in place since its event
    ("v1", "abc123", "def456", True),  # a versioned URL fetched the announced version
    (None, None, "def456", True),  # nothing announced: nothing to compare
    (None, "abc123", None, True),  # nothing sent back: nothing to compare
])
def test_bytes_of_another_version_than_announced_are_refused(
        version_id: str | None, announced: str | None, fetched: str | None, ok: bool) -> None:
    got = Download(BODY, {}, fetched)
    if ok:
        got.check_version(version_id=version_id, etag=announced)
    else:
        with pytest.raises(PermanentError, match="replaced since its event"):
            got.check_version(version_id=version_id, etag=announced)


def _damaged(body: bytes, at: int) -> bytes:
    out = bytearray(body)
    out[at] ^= 0x10
    return bytes(out)


def _s3_response(body: bytes, etag: str, extra: str = "") -> bytes:
    """A single-part S3 object as a pre-signed GET returns it, ``etag`` its ETag."""
    return (f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
            f'Content-Length: {len(body)}\r\nETag: "{etag}"\r\n{extra}\r\n').encode() + body


@pytest.fixture(autouse=True)
def _no_remembered_stores() -> Iterator[None]:
    yield
    download._UNCHECKABLE.clear()


MD5 = hashlib.md5(BODY).hexdigest()
PARTS = download.parts_etag(BODY, len(BODY) // 2)  # a multipart upload's: two even parts
UPLOADS = pytest.mark.parametrize("etag", [MD5, PARTS], ids=["single-part", "multipart"])


@UPLOADS
def test_bytes_damaged_on_the_way_are_read_again(serve: Serve, etag: str) -> None:
    # Given a link that flips a bit of the first read, not of the second
    url = serve(_s3_response(_damaged(BODY, 12000), etag))
    serve(_s3_response(BODY, etag))
    # Then the photo's own bytes come back
    got = fetch(url, max_bytes=1 << 20, timeout_s=5)
    assert got.data == BODY and got.damaged() is None


@UPLOADS
def test_bytes_damaged_twice_are_a_transient_fault(serve: Serve, etag: str) -> None:
    url = serve(_s3_response(_damaged(BODY, 5000), etag))
    serve(_s3_response(_damaged(BODY, 9000), etag))
    with pytest.raises(TransientError, match="damaged on the way"):
        fetch(url, max_bytes=1 << 20, timeout_s=5)


def test_a_store_whose_etags_are_not_md5s_is_read_twice_once(serve: Serve) -> None:
    # Given a store whose ETags look like MD5s but are not (an S3-compatible store that
    # encrypts): the same bytes twice
    opaque = "0123456789abcdef0123456789abcdef"
    url = serve(_s3_response(BODY, opaque))
    serve(_s3_response(BODY, opaque))
    assert fetch(url, max_bytes=1 << 20, timeout_s=5).data == BODY
    # Then its next objects are read once, unchecked
    other = serve(_s3_response(BODY[::-1], opaque))
    assert fetch(other, max_bytes=1 << 20, timeout_s=5).data == BODY[::-1]


@pytest.mark.parametrize("etag, extra", [
    ("0123456789abcdef0123456789abcdef", "x-amz-server-side-encryption: aws:kms\r\n"),
    ("0123456789abcdef0123456789abcdef-2", "x-amz-server-side-encryption: aws:kms\r\n"),
    ("0123456789abcdef0123456789abcdef",
     "x-amz-server-side-encryption-customer-algorithm: AES256\r\n"),
])
def test_etags_that_are_no_md5_of_the_bytes_are_not_checked(serve: Serve, etag: str,
                                                            extra: str) -> None:
    # One answer only: a second read would find the test's server gone
    got = fetch(serve(_s3_response(BODY, etag, extra)), max_bytes=1 << 20, timeout_s=5)
    assert got.data == BODY
    assert got.damaged() is None


def test_an_etag_in_capitals_checks_as_well(serve: Serve) -> None:
    got = fetch(serve(_s3_response(BODY, MD5.upper())), max_bytes=1 << 20, timeout_s=5)
    assert got.damaged() is None
    assert Download(_damaged(BODY, 1), {}, MD5.upper(), etag_kind="md5").damaged() is not None


MIB = 1 << 20


@pytest.mark.parametrize(("length", "parts", "sizes"), [
    (3 * MIB, 1, [3 * MIB]),  # one part: the whole
    (0, 1, [1]),
    (12 * MIB, 2, [8 * MIB, 10 * MIB, 6 * MIB, 7_000_000]),
    (12 * MIB, 3, [5 * MIB, 4 * MIB, 5_000_000]),
    (20 * MIB, 2, [16 * MIB, 15 * MIB, 10 * MIB, 11_000_000]),  # even: 10 MiB, tried once
    (16 * MIB + 1, 3, [8 * MIB, 5_592_406, 6 * MIB, 6_000_000]),
    (4, 2, [2]),
    (9 * MIB, 10_000, []),  # no size gives that many parts
])
def test_the_part_sizes_tried_are_the_usual_ones_first(length: int, parts: int,
                                                      sizes: list[int]) -> None:
    assert download.part_sizes(length, parts) == sizes


@pytest.mark.parametrize(("data", "size", "etag"), [
    # md5(md5(b"")) and md5(md5(b"ab") + md5(b"c")), worked out by hand with hashlib
    (b"", 1, hashlib.md5(hashlib.md5(b"").digest()).hexdigest() + "-1"),
    (b"abc", 2, hashlib.md5(hashlib.md5(b"ab").digest() + hashlib.md5(b"c").digest())
     .hexdigest() + "-2"),
    (b"abcd", 2, hashlib.md5(hashlib.md5(b"ab").digest() + hashlib.md5(b"cd").digest())
     .hexdigest() + "-2"),
])
def test_a_multipart_etag_is_the_md5_of_the_parts_md5s(data: bytes, size: int,
                                                      etag: str) -> None:
    assert download.parts_etag(data, size) == etag


def test_multipart_uploads_of_unusual_part_sizes_are_read_twice_once(serve: Serve) -> None:
    # Given an uploader that cut the photo into parts of 5,000 bytes, which nothing guesses
    odd = download.parts_etag(BODY, 5000)
    assert download.part_sizes(len(BODY), 4) == [4096]
    url = serve(_s3_response(BODY, odd))
    serve(_s3_response(BODY, odd))
    assert fetch(url, max_bytes=1 << 20, timeout_s=5).data == BODY
    # Then the store's next multipart objects are read once, unchecked
    assert fetch(serve(_s3_response(BODY[::-1], odd)), max_bytes=1 << 20,
                 timeout_s=5).data == BODY[::-1]
    # And its single-part objects are still checked: a damaged one is read again
    url = serve(_s3_response(_damaged(BODY, 3), MD5))
    serve(_s3_response(BODY, MD5))
    assert fetch(url, max_bytes=1 << 20, timeout_s=5).data == BODY


@pytest.mark.parametrize("damaged_reads", [0, 1])
def test_a_multipart_upload_of_an_unusual_part_size_is_checked_at_the_size_s3_gives(
        serve: Serve, damaged_reads: int) -> None:
    # Given an uploader that cut the photo into parts of 5,000 bytes, which nothing
    # guesses, and S3 that says so when asked (a HEAD of part 1)
    odd = download.parts_etag(BODY, 5000)
    asked: list[int] = []

    def first_part_size() -> int:
        asked.append(5000)
        return 5000

    url = serve(_s3_response(_damaged(BODY, 7) if damaged_reads else BODY, odd))
    if damaged_reads:
        serve(_s3_response(BODY, odd))
    # Then the bytes are checked at that size: whole, read once; damaged, read again
    got = fetch(url, max_bytes=1 << 20, timeout_s=5, first_part_size=first_part_size)
    assert got.data == BODY and got.damaged(5000) is None and asked == [5000]
    # And the store's multipart photos are still checked
    assert not download._UNCHECKABLE


def test_a_multipart_upload_damaged_twice_at_the_size_s3_gives_is_a_transient_fault(
        serve: Serve) -> None:
    odd = download.parts_etag(BODY, 5000)
    url = serve(_s3_response(_damaged(BODY, 7), odd))
    serve(_s3_response(_damaged(BODY, 8000), odd))
    with pytest.raises(TransientError, match="5000"):
        fetch(url, max_bytes=1 << 20, timeout_s=5, first_part_size=lambda: 5000)


def test_a_first_part_size_s3_does_not_give_leaves_the_check_as_it_was(serve: Serve) -> None:
    def refused() -> int:
        raise TransientError("head part 1: 503 Service Unavailable")

    odd = download.parts_etag(BODY, 5000)
    url = serve(_s3_response(BODY, odd))
    serve(_s3_response(BODY, odd))
    assert fetch(url, max_bytes=1 << 20, timeout_s=5, first_part_size=refused).data == BODY


def test_a_server_that_trickles_its_bytes_is_a_transient_fault_at_the_deadline() -> None:
    # Given a server that sends its headers, then a byte every 0.1 s
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def trickle() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n")
            with contextlib.suppress(OSError):
                for _ in range(100):
                    conn.sendall(b"x")
                    time.sleep(0.1)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/photo.jpg"

    # When it is fetched with a per-read timeout it never trips and a 0.5 s deadline
    started = time.monotonic()
    with pytest.raises(TransientError, match="too slow"):
        fetch(url, max_bytes=1 << 20, timeout_s=5, deadline_s=0.5)

    # Then the fetch gives up at the deadline, not after the whole trickle (10 s)
    assert time.monotonic() - started < 3
    sock.close()


class _MintingStore:
    """The one store call the download makes: a URL minted here, to the test's server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.minted: list[str] = []

    def presign_get(self, bucket: str, key: str, expiry_s: int, version_id: str | None) -> str:
        self.minted.append(key)
        return self.url


@pytest.mark.parametrize("url", [
    "http://localhost:4566/shelf-raw/raw/S1/A1/B1/c1/p.jpg?X-Amz-Signature=abc",
    "https://s3.eu-west-1.amazonaws.com/shelf-raw/raw/S1/A1/B1/c1/p.jpg?X-Amz-Signature=abc",
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/?X-Amz-Signature=abc",
], ids=["endpoint-spelt-apart", "another-endpoint", "file", "metadata-service"])
def test_a_url_this_worker_may_not_follow_is_left_for_one_minted_here(
        serve: Serve, url: str) -> None:
    from types import SimpleNamespace

    from pipeline.messages import PhotoRef, StageMessage
    from pipeline.settings import Settings
    from pipeline.tasks.steps import download_photo

    # Given a message whose URL is not a pre-signed GET of the photo on this worker's
    # endpoint (a listener configured with another spelling of it, or a forged message)
    s = Settings()
    store = _MintingStore(serve(_response(BODY, str(len(BODY)))))
    msg = StageMessage(photo=PhotoRef(bucket=s.s3.raw_bucket, key="raw/S1/A1/B1/c1/p.jpg",
                                      url=url, store="S1", aisle="A1", bay="B1", camera="c1"))
    # When ingest downloads the photo
    got = download_photo(msg, SimpleNamespace(settings=s, store=store))  # type: ignore[arg-type]
    # Then it is read through a URL minted here, not the message's, and not dead-lettered
    assert got.data == BODY and store.minted == ["raw/S1/A1/B1/c1/p.jpg"]


@pytest.mark.parametrize(("status", "code"), [
    (400, "ExpiredToken"), (400, "InvalidToken"), (403, "AccessDenied"),
    (403, "SignatureDoesNotMatch")])
def test_a_refused_url_says_why_and_asks_for_a_fresh_one(serve: Serve, status: int,
                                                        code: str) -> None:
    from pipeline.errors import UrlRejectedError

    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>no</Message></Error>"
    raw = (f"HTTP/1.1 {status} No\r\nContent-Type: application/xml\r\n"
           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}").encode()
    with pytest.raises(UrlRejectedError, match=rf"HTTP {status} \({code}\)"):
        fetch(serve(raw), max_bytes=1 << 20, timeout_s=5)


def test_a_message_url_whose_session_token_expired_is_left_for_one_minted_here(
        serve: Serve) -> None:
    from types import SimpleNamespace

    from pipeline.messages import PhotoRef, StageMessage
    from pipeline.settings import Settings
    from pipeline.tasks.steps import download_photo

    # Given a message whose URL was signed by credentials whose session has ended since
    s = Settings()
    body = "<Error><Code>ExpiredToken</Code></Error>"
    expired = serve((f"HTTP/1.1 400 Bad Request\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n{body}").encode())
    url = expired.replace("/photo.jpg", f"/{s.s3.raw_bucket}/raw/S1/A1/B1/c1/p.jpg") + \
        "?X-Amz-Signature=abc"
    store = _MintingStore(serve(_response(BODY, str(len(BODY)))))
    endpoint = s.aws.model_copy(update={"endpoint_url": url.split(f"/{s.s3.raw_bucket}")[0]})
    s = s.model_copy(update={"aws": endpoint})
    msg = StageMessage(photo=PhotoRef(bucket=s.s3.raw_bucket, key="raw/S1/A1/B1/c1/p.jpg",
                                      url=url, store="S1", aisle="A1", bay="B1", camera="c1"))
    # Then the photo is read through a URL minted now, not dead-lettered
    got = download_photo(msg, SimpleNamespace(settings=s, store=store))  # type: ignore[arg-type]
    assert got.data == BODY and store.minted == ["raw/S1/A1/B1/c1/p.jpg"]


@pytest.mark.parametrize(("status", "kind", "says"), [
    (307, "UrlRejectedError", "redirected"),  # a new bucket's name still spreading in DNS
    (302, "UrlRejectedError", "redirected"),
    (301, "PermanentError", "endpoint or region"),  # another region's bucket
], ids=["307", "302", "301"])
def test_a_redirect_is_not_followed_and_says_whether_it_may_pass(serve: Serve, status: int,
                                                                 kind: str, says: str) -> None:
    from pipeline import errors

    raw = (f"HTTP/1.1 {status} Moved\r\nLocation: http://elsewhere.example/photo.jpg\r\n"
           "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()
    with pytest.raises(getattr(errors, kind), match=says) as refused:
        fetch(serve(raw), max_bytes=1 << 20, timeout_s=5)
    assert not isinstance(refused.value, errors.ForgedUrlError)


def test_a_weak_etag_names_the_same_bytes_as_its_strong_form(serve: Serve) -> None:
    # A proxy that may transform responses marks the ETag weak: W/"<md5>"
    md5 = hashlib.md5(BODY).hexdigest()
    raw = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\nETag: W/\"{md5}\"\r\n"
           "Connection: close\r\n\r\n").encode() + BODY
    got = fetch(serve(raw), max_bytes=1 << 20, timeout_s=5)
    assert got.etag == md5 and got.etag_kind == "md5"
    got.check_version(version_id=None, etag=f'"{md5}"')  # the event's: the same object


def test_the_deadline_is_the_whole_download_s_both_reads_included(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import errors
    from pipeline.storage import download

    # Given a first read that takes the whole deadline and whose bytes are damaged
    reads: list[float | None] = []

    def slow_damaged(url: str, *, max_bytes: int, timeout_s: float,
                     deadline_s: float | None) -> Download:
        reads.append(deadline_s)
        time.sleep(0.3)
        return Download(_damaged(BODY, 100), {}, hashlib.md5(BODY).hexdigest(),
                        etag_kind="md5")

    monkeypatch.setattr(download, "_fetch_once", slow_damaged)
    # Then no second read starts past it: a transient fault, well inside the stage's limit
    with pytest.raises(errors.TransientError, match="no time left"):
        fetch("http://127.0.0.1:1/photo.jpg", max_bytes=1 << 20, timeout_s=5, deadline_s=0.2)
    assert reads == [0.2]
