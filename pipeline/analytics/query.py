"""``shelf query``: DuckDB over the results prefixes (S3 or LocalStack through httpfs).

The httpfs extension comes from the ``duckdb-ext-httpfs`` wheel, so nothing is downloaded at
run time. Views: ``results`` (per-photo JSON), ``shelves``, ``aisles``, ``stores`` (rollups).

Analysts' SQL runs read-only over the results prefixes and nothing else: only SELECT (and
EXPLAIN) statements; no local files, no other bucket (external access is off but for the
``compliance/`` and ``aggregates/`` prefixes); no extension beyond httpfs; an S3 secret scoped
to the results bucket; and the configuration locked before the first query.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb

from pipeline.errors import PermanentError
from pipeline.logs import printable
from pipeline.settings import Settings
from pipeline.storage.s3 import ObjectStore

EXAMPLES = {
    "worst-aisles-today": """
        SELECT store, aisle, round(100 * compliance, 1) AS compliance_pct, out_of_stock, bays
        FROM aisles WHERE date = (SELECT max(date) FROM aisles)
        ORDER BY compliance ASC NULLS LAST LIMIT 10""",
    "out-of-stock-by-store": """
        SELECT store, sku, count(*) AS shelves_out_of_stock
        FROM (SELECT store, unnest(out_of_stock_skus) AS sku FROM shelves
              WHERE date = (SELECT max(date) FROM shelves))
        GROUP BY ALL ORDER BY store, shelves_out_of_stock DESC, sku""",
    "compliance-trend": """
        SELECT date, store, round(100 * compliance, 1) AS compliance_pct, bays
        FROM stores ORDER BY store, date""",
}


def result_columns() -> dict[str, str]:
    """The ``results`` view's columns, typed from the result's JSON Schema rather than
    guessed from the files: what is keyed by free text (share of shelf by brand, OSA by
    SKU, stage times) is a ``MAP``, so two brands that differ only in case (DuckDB's struct
    fields do not) cannot break every query, and a column's type does not change with the
    day's data. ``date`` is a ``DATE``; other strings stay ``VARCHAR`` (times are ISO 8601:
    cast them)."""
    from pipeline.core.result import PhotoResult

    schema = PhotoResult.model_json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})

    def sql(node: dict[str, Any]) -> str:
        if "$ref" in node:
            return sql(defs[node["$ref"].rsplit("/", 1)[-1]])
        if "anyOf" in node:
            kinds = [k for k in node["anyOf"] if k.get("type") != "null"]
            return sql(kinds[0]) if len(kinds) == 1 else "JSON"
        kind = node.get("type")
        if kind == "object" and isinstance(node.get("additionalProperties"), dict):
            return f"MAP(VARCHAR, {sql(node['additionalProperties'])})"
        if kind == "object" and "properties" in node:
            fields = ", ".join(f'"{k}" {sql(v)}' for k, v in node["properties"].items())
            return f"STRUCT({fields})"
        if kind == "array":
            return f"{sql(node.get('items', {}))}[]"
        return {"string": "VARCHAR", "integer": "BIGINT", "number": "DOUBLE",
                "boolean": "BOOLEAN"}.get(str(kind), "JSON")

    columns = {k: sql(v) for k, v in schema["properties"].items()}
    columns["date"] = "DATE"  # always YYYY-MM-DD, as the rollups' date partitions
    return columns


def _httpfs_path() -> Path:
    import duckdb_ext

    base = Path(next(iter(duckdb_ext.__path__)))
    found = sorted(base.rglob(f"v{duckdb.__version__}/*/httpfs.duckdb_extension"))
    if not found:
        raise PermanentError(f"no httpfs extension for DuckDB {duckdb.__version__} under {base}")
    return found[0]


# Only a SELECT: EXPLAIN ANALYZE runs the statement it explains (a COPY TO writes), and the
# allowed directories, meant for reading, let a COPY write there too.
READ_ONLY = {"SELECT"}


# DuckDB's own tables and settings (its secrets, which name the S3 key id in use; its
# configuration): nothing of the results, and not for analysts' queries.
_SYSTEM = ("duckdb_", "pragma_", "which_secret", "current_setting", "getenv")


def _system_functions(con: Any, sql: str) -> list[str]:
    """The system functions ``sql`` calls (its syntax tree walked, so quoting a name does
    not hide it); a statement that cannot be walked counts as calling one."""
    doc = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if doc.get("error"):
        return [str(doc.get("error_message", "a statement that cannot be read"))]
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            name = node.get("function_name")
            if isinstance(name, str) and name.lower().startswith(_SYSTEM):
                found.append(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect(settings: Settings, store: ObjectStore) -> Any:
    """A locked-down DuckDB connection with the result views that have data."""
    # The wheel's httpfs is loaded from a file, so unsigned extensions must be allowed at
    # start; nothing else can be loaded once local files are off and the config is locked.
    con = duckdb.connect(config={"allow_unsigned_extensions": "true",
                                 "autoinstall_known_extensions": "false",
                                 "autoload_known_extensions": "false"})
    con.execute(f"LOAD {_lit(str(_httpfs_path()))}")
    aws = settings.aws
    bucket = settings.s3.results_bucket
    opts = [f"REGION {_lit(aws.region)}", f"SCOPE {_lit(f's3://{bucket}/')}"]
    if aws.access_key_id:
        opts += [f"KEY_ID {_lit(aws.access_key_id)}",
                 f"SECRET {_lit(aws.secret_access_key or '')}"]
    if aws.endpoint_url:
        u = urlparse(aws.endpoint_url)
        opts += [f"ENDPOINT {_lit(u.netloc)}", "URL_STYLE 'path'",
                 f"USE_SSL {'true' if u.scheme == 'https' else 'false'}"]
    else:
        opts += ["PROVIDER credential_chain"]
    con.execute(f"CREATE SECRET shelf (TYPE s3, {', '.join(opts)})")
    if next(iter(store.list_keys(bucket, "compliance/")), None):
        columns = ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in result_columns().items())
        con.execute(f"""CREATE VIEW results AS SELECT * FROM read_json(
            's3://{bucket}/compliance/*/*/*/*.json', format = 'auto',
            hive_partitioning = false, columns = {{{columns}}})""")
    for level, view in (("shelf", "shelves"), ("aisle", "aisles"), ("store", "stores")):
        if next(iter(store.list_keys(bucket, f"aggregates/level={level}/")), None):
            con.execute(f"""CREATE VIEW {view} AS SELECT * EXCLUDE (level) FROM read_parquet(
                's3://{bucket}/aggregates/level={level}/*/*.parquet',
                hive_partitioning = true)""")
    allowed = ", ".join(_lit(f"s3://{bucket}/{p}/") for p in ("compliance", "aggregates"))
    con.execute(f"SET allowed_directories = [{allowed}]")
    q = settings.query  # one query cannot take the host: memory, cores, no spilling to disk
    con.execute(f"SET memory_limit = '{int(q.memory_mb)}MB'")
    con.execute(f"SET threads = {int(q.threads)}")
    con.execute("SET max_temp_directory_size = '0B'")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run_query(con: Any, sql: str, timeout_s: float | None = None,
              max_rows: int | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only query (or a documented example by name), interrupted after
    ``timeout_s``; refused when it returns more than ``max_rows`` rows (they would be
    copied into this process, outside DuckDB's memory limit)."""
    sql = EXAMPLES.get(sql, sql)
    timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1 or statements[0].type.name not in READ_ONLY:
            kinds = ", ".join(st.type.name for st in statements) or "none"
            raise PermanentError(f"one SELECT query at a time, got: {kinds}")
        system = _system_functions(con, sql)
        if system:
            raise PermanentError(f"the query calls {', '.join(sorted(set(system)))}: DuckDB's "
                                 "own tables and settings are not the results")
        if timer:
            timer.start()
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description]
        if max_rows is None:
            return columns, cur.fetchall()
        rows = cur.fetchmany(max_rows + 1)
        if len(rows) > max_rows:
            raise PermanentError(f"the query returns more than {max_rows:,} rows: aggregate "
                                 "or LIMIT it (SHELF_QUERY__MAX_ROWS)")
        return columns, rows
    except duckdb.InterruptException as exc:
        raise PermanentError(f"query stopped after {timeout_s:g} s "
                             "(SHELF_QUERY__TIMEOUT_S)") from exc
    except duckdb.Error as exc:
        raise PermanentError(f"query failed: {exc}") from exc
    finally:
        if timer:
            timer.cancel()


def _shown(value: object) -> str:
    """A cell as a terminal may print it: control and escape characters spelled out."""
    return "" if value is None else printable(str(value))


def format_table(columns: list[str], rows: list[tuple[Any, ...]]) -> str:
    cells = [[_shown(c) for c in columns]] + [[_shown(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
