"""Rollups as Parquet in the results bucket, and DuckDB queries over them, on LocalStack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.analytics.aggregates import aggregate_day, aggregate_key
from pipeline.analytics.query import EXAMPLES, connect, run_query
from pipeline.errors import PermanentError
from pipeline.settings import Settings
from pipeline.storage.keys import result_key
from tests.conftest import Stack

DATE = "2026-11-20"


def _result(store: str, aisle: str, bay: str, sha: str, shelves: list[tuple[int, int, list[str]]],
            date: str = DATE) -> dict[str, Any]:
    planned = sum(p for p, _, _ in shelves)
    found = sum(f for _, f, _ in shelves)
    return {"sha256": sha, "upload_id": sha[:32], "store": store, "aisle": aisle, "bay": bay,
            "camera": "c1", "date": date, "captured_at": f"{date}T10:00:00",
            "store_format": "standard", "display_type": "gondola", "detections": found,
            "source": {"bucket": "shelf-raw", "key": f"raw/{store}/{aisle}/{bay}/c1/{sha}.jpg"},
            "compliance": found / planned, "completed_at": f"{date}T10:00:01", "shelves": [
                {"index": i, "planned_facings": p, "found_facings": f,
                 "compliance": f / p, "detections": f, "out_of_stock": oos}
                for i, (p, f, oos) in enumerate(shelves)]}


@pytest.fixture
def results(stack: Stack) -> Iterator[tuple[Settings, str]]:
    s = stack.settings.model_copy(deep=True)
    s.s3.results_bucket = f"agg-{uuid.uuid4().hex[:8]}"
    stack.s3.create_bucket(Bucket=s.s3.results_bucket)
    docs = [
        _result("S1", "A1", "B1", "a" * 64, [(10, 10, []), (8, 4, ["SKU-003"])]),
        _result("S1", "A2", "B1", "b" * 64, [(10, 5, ["SKU-001", "SKU-002"])]),
        _result("S2", "A1", "B1", "c" * 64, [(6, 6, [])]),
        _result("S2", "A1", "B1", "d" * 64, [(6, 3, ["SKU-009"])], date="2026-11-19"),
    ]
    for d in docs:
        stack.store.put_json(s.s3.results_bucket, result_key(
            store=d["store"], date=d["date"], aisle=d["aisle"], upload_id=d["sha256"][:32]), d)
    yield s, s.s3.results_bucket


def test_rollups_are_byte_identical_when_rebuilt_and_late_photos_update_the_day(
        stack: Stack, results: tuple[Settings, str]) -> None:
    _, bucket = results
    counts = aggregate_day(stack.store, bucket, DATE)
    assert counts == {"shelf": 4, "aisle": 3, "store": 2}
    first = {lvl: stack.store.get_bytes(bucket, aggregate_key(lvl, DATE)) for lvl in counts}
    # Rebuilding from the same results gives the same bytes and writes nothing new
    aggregate_day(stack.store, bucket, DATE)
    again = {lvl: stack.store.get_bytes(bucket, aggregate_key(lvl, DATE)) for lvl in counts}
    assert again == first
    # A late photo of a new bay changes its day
    late = _result("S2", "A3", "B7", "e" * 64, [(4, 0, ["SKU-010"])])
    stack.store.put_json(bucket, result_key(store="S2", date=DATE, aisle="A3",
                                            upload_id=late["sha256"][:32]), late)
    assert aggregate_day(stack.store, bucket, DATE)["aisle"] == 4
    assert stack.store.get_bytes(bucket, aggregate_key("store", DATE)) != first["store"]


def test_documented_queries_answer(stack: Stack, results: tuple[Settings, str]) -> None:
    s, bucket = results
    for day in (DATE, "2026-11-19"):
        aggregate_day(stack.store, bucket, day)
    con = connect(s, stack.store)
    cols, rows = run_query(con, "worst-aisles-today")
    worst = [dict(zip(cols, r, strict=True)) for r in rows]
    assert [(w["store"], w["aisle"]) for w in worst][:2] == [("S1", "A2"), ("S1", "A1")]
    assert worst[0]["compliance_pct"] == 50.0
    cols, rows = run_query(con, "out-of-stock-by-store")
    assert {(r[0], r[1]) for r in rows} == {("S1", "SKU-001"), ("S1", "SKU-002"),
                                           ("S1", "SKU-003")}
    cols, rows = run_query(con, "compliance-trend")
    trend = [dict(zip(cols, r, strict=True)) for r in rows]
    s2 = [(str(t["date"]), t["compliance_pct"]) for t in trend if t["store"] == "S2"]
    assert s2 == [("2026-11-19", 50.0), (DATE, 100.0)]
    cols, rows = run_query(con, "SELECT count(*) AS photos FROM results")
    assert rows[0][0] == 4
    assert set(EXAMPLES) == {"worst-aisles-today", "out-of-stock-by-store", "compliance-trend"}


@pytest.mark.parametrize(("sql", "reason"), [
    ("SELECT * FROM read_text('/etc/passwd')", "disabled by configuration"),
    ("SELECT * FROM read_blob('s3://{raw}/raw/secret.jpg')", "disabled by configuration"),
    ("SELECT * FROM glob('s3://{raw}/*')", "disabled by configuration"),
    ("SELECT * FROM read_csv('http://127.0.0.1:4566/{raw}/raw/secret.jpg')",
     "disabled by configuration"),
    ("COPY (SELECT 1) TO 's3://{results}/compliance/pwn.csv'", "one SELECT"),
    ("COPY (SELECT 1) TO '/tmp/pwn.csv'", "one SELECT"),
    ("ATTACH '/tmp/x.db'", "one SELECT"),
    ("INSTALL spatial", "one SELECT"),
    ("LOAD httpfs", "one SELECT"),
    ("SET enable_external_access = true", "one SELECT"),
    ("SELECT 1; DROP VIEW results", "one SELECT"),
    ("CREATE SECRET s2 (TYPE s3, KEY_ID 'a', SECRET 'b')", "one SELECT"),
    ("EXPLAIN ANALYZE COPY (SELECT 1) TO 's3://{results}/compliance/pwn.json'", "one SELECT"),
    ("SET memory_limit = '64GB'", "one SELECT"),
    ("FROM duckdb_secrets()", "calls duckdb_secrets"),  # names the S3 key id in use
    ('SELECT * FROM "duckdb_secrets"()', "calls duckdb_secrets"),
    ("SELECT current_setting('s3_access_key_id')", "calls current_setting"),
    ("SELECT 1 WHERE 1 IN (SELECT 1 FROM which_secret('s3://{results}/x', 's3'))",
     "calls which_secret"),
], ids=["local-file", "raw-photo", "list-raw-bucket", "raw-over-http", "write-results",
        "write-local", "attach", "install", "load", "unlock", "stacked-statements",
        "new-secret", "explain-analyze-writes", "lift-memory-limit", "secrets",
        "secrets-quoted", "setting", "which-secret"])
def test_queries_are_read_only_over_the_results(stack: Stack, results: tuple[Settings, str],
                                                sql: str, reason: str) -> None:
    s, bucket = results
    stack.s3.put_object(Bucket=s.s3.raw_bucket, Key="raw/secret.jpg", Body=b"GPS 48.85")
    con = connect(s, stack.store)
    with pytest.raises(PermanentError, match=reason):
        run_query(con, sql.format(raw=s.s3.raw_bucket, results=bucket))
    assert run_query(con, "SELECT count(*) FROM results")[1][0][0] == 4  # still answers


def test_a_query_is_bounded_in_memory_cores_and_time(stack: Stack,
                                                    results: tuple[Settings, str]) -> None:
    s, _ = results
    con = connect(s, stack.store)
    # (read on the connection: a query may not read DuckDB's settings)
    rows = con.execute("SELECT current_setting('threads'), "
                       "current_setting('max_temp_directory_size')").fetchall()
    assert rows == [(s.query.threads, "0 bytes")]
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] != ""
    with pytest.raises(PermanentError, match=r"stopped after 0\.5 s"):
        run_query(con, "SELECT count(*) FROM range(100000000000) a", timeout_s=0.5)
    # An answer too large to copy into this process is refused, not copied
    with pytest.raises(PermanentError, match="more than 1,000 rows"):
        run_query(con, "SELECT * FROM range(2000000)", max_rows=1000)
    assert len(run_query(con, "SELECT * FROM range(1000)", max_rows=1000)[1]) == 1000
    assert run_query(con, "SELECT count(*) FROM results")[1][0][0] == 4  # still answers


def test_brands_or_skus_differing_only_in_case_do_not_break_queries(
        stack: Stack, results: tuple[Settings, str]) -> None:
    s, bucket = results
    # Given results whose shares of shelf name brands that differ only in case, in one
    # photo and across two stores, and whose OSA names SKUs that do
    for store, sha, share, osa in (
            ("S1", "f" * 64, {"Coca-Cola": 0.5, "Coca-cola": 0.5}, {"abc": 1.0, "ABC": 0.0}),
            ("S2", "e" * 64, {"COCA-COLA": 1.0, "unknown": 0.0}, {"Abc": 0.5})):
        doc = {**_result(store, "A9", "B1", sha, [(4, 4, [])]), "share_of_shelf": share,
               "osa": osa, "stage_seconds": {"ingest": 0.1}}
        stack.store.put_json(bucket, result_key(store=store, date=DATE, aisle="A9",
                                                upload_id=sha[:32]), doc)
    con = connect(s, stack.store)
    # Then every query still answers, each brand kept apart
    _, rows = run_query(con, "SELECT store, share_of_shelf['Coca-cola'], osa['ABC'] "
                             "FROM results WHERE aisle = 'A9' ORDER BY store")
    assert rows == [("S1", 0.5, 0.0), ("S2", None, None)]
    _, rows = run_query(con, "SELECT count(*), min(date) FROM results")
    assert rows[0][0] == 6 and str(rows[0][1]) == "2026-11-19"
