"""PostgreSQL and MariaDB sources and sinks against the real servers started by
scripts/services/postgres.sh and scripts/services/mysql.sh (URLs from the env vars they print)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import uuid

import pytest

from beam_etl.io.sql import Database, redact_url
from beam_etl.run import run_spec
from beam_etl.spec import load_spec

pytestmark = pytest.mark.integration

URLS = {
    "postgres": os.environ.get("BEAM_ETL_TEST_POSTGRES_URL"),
    "mysql": os.environ.get("BEAM_ETL_TEST_MYSQL_URL"),
}


def url_for(dialect: str) -> str:
    url = URLS[dialect]
    if not url:
        pytest.fail(f"BEAM_ETL_TEST_{dialect.upper()}_URL is not set: run scripts/services/{'postgres' if dialect == 'postgres' else 'mysql'}.sh")
    return url


def execute(dialect: str, *statements: str, params=None, fetch: bool = False):
    db = Database(dialect, url_for(dialect), "test")
    with db.connect() as connection:
        cursor = connection.cursor()
        result = None
        for statement in statements:
            cursor.execute(statement, params)
            if fetch:
                result = cursor.fetchall()
        cursor.close()
        connection.commit()
    return result


def run(tmp_path, spec: dict, state_url: str | None = None):
    report = run_spec(
        load_spec(spec),
        ["--runner=DirectRunner"],
        output_dir=str(tmp_path),
        state_url=state_url or f"sqlite:///{tmp_path / 'state.db'}",
    )
    return report


def read_ndjson(directory):
    return [json.loads(line) for f in sorted(directory.glob("*")) if f.is_file() for line in f.read_text().splitlines() if line]


@pytest.fixture(autouse=True)
def _fresh_pools():
    yield
    Database.close_all()


# --------------------------------------------------------------------------- types


def test_postgres_type_round_trip(tmp_path):
    execute(
        "postgres",
        "DROP TABLE IF EXISTS types_rt",
        "DROP TYPE IF EXISTS mood",
        "CREATE TYPE mood AS ENUM ('sad', 'happy')",
        """CREATE TABLE types_rt (
            id int PRIMARY KEY, small int2, big int8, price numeric(10, 2), ratio float8, label text,
            code varchar(5), flag bool, day date, at timestamp, at_tz timestamptz, doc jsonb, raw json,
            uid uuid, ints int[], tags text[], blob bytea, feeling mood)""",
        """INSERT INTO types_rt VALUES
            (1, 2, 9000000000, 12.34, 0.5, 'héllo', 'ab', true, '2024-02-29', '2024-01-02 03:04:05.123456',
             '2024-01-02 03:04:05+02', '{"a": [1, 2]}', '[1, "x"]', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
             '{1,2,NULL}', '{x,y}', '\\x0102', 'happy'),
            (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
    )
    report = run(
        tmp_path,
        {
            "name": "pg_types",
            "sources": {"t": {"type": "postgres", "url": url_for("postgres"), "table": "types_rt"}},
            "sinks": {"out": {"type": "parquet", "input": "t", "path": "out/"}},
        },
    )
    assert report.ok, report.error
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "out")
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    schema = {f.name: str(f.type) for f in table.schema}
    assert schema["price"] == "decimal128(10, 2)" and schema["at_tz"] == "timestamp[us, tz=UTC]"
    assert str(table.schema.field("ints").type.value_type) == "int32"
    assert schema["blob"] == "binary" and schema["day"] == "date32[day]"
    first = rows[0]
    assert first["small"] == 2 and first["big"] == 9000000000 and first["price"] == decimal.Decimal("12.34")
    assert first["label"] == "héllo" and first["flag"] is True and first["day"] == dt.date(2024, 2, 29)
    assert first["at"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert first["at_tz"] == dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=dt.timezone.utc)
    assert json.loads(first["doc"]) == {"a": [1, 2]} and json.loads(first["raw"]) == [1, "x"]
    assert first["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert first["ints"] == [1, 2, None] and first["tags"] == ["x", "y"] and first["blob"] == b"\x01\x02"
    assert first["feeling"] == "happy"
    assert all(value is None for key, value in rows[1].items() if key != "id")  # NULLs kept


def test_mysql_type_round_trip(tmp_path):
    execute(
        "mysql",
        "DROP TABLE IF EXISTS types_rt",
        """CREATE TABLE types_rt (id INT PRIMARY KEY, small SMALLINT, big BIGINT, price DECIMAL(10, 2), ratio DOUBLE,
           label VARCHAR(20), flag BOOLEAN, day DATE, at DATETIME(6), doc JSON, blob_col BLOB, kind ENUM('a', 'b'))""",
        """INSERT INTO types_rt VALUES (1, 2, 9000000000, 12.34, 0.5, 'héllo', TRUE, '2024-02-29',
           '2024-01-02 03:04:05.123456', '{"a": [1, 2]}', X'0102', 'b'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
    )
    report = run(
        tmp_path,
        {
            "name": "my_types",
            "sources": {"t": {"type": "mysql", "url": url_for("mysql"), "table": "types_rt"}},
            "sinks": {"out": {"type": "parquet", "input": "t", "path": "out/"}},
        },
    )
    assert report.ok, report.error
    import pyarrow.parquet as pq

    rows = sorted(pq.read_table(tmp_path / "out").to_pylist(), key=lambda r: r["id"])
    first = rows[0]
    assert first["big"] == 9000000000 and first["price"] == decimal.Decimal("12.34") and first["label"] == "héllo"
    assert first["day"] == dt.date(2024, 2, 29) and first["at"] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
    assert json.loads(first["doc"]) == {"a": [1, 2]} and first["blob_col"] == b"\x01\x02" and first["kind"] == "b"
    assert all(value is None for key, value in rows[1].items() if key != "id")


# --------------------------------------------------------------------------- volume


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_large_table_read_in_parallel_partitions_and_bounded_batches(tmp_path, dialect):
    n = 1_000_000 if dialect == "postgres" else 200_000
    if dialect == "postgres":
        execute(dialect, "DROP TABLE IF EXISTS big", f"CREATE TABLE big AS SELECT g AS id, g % 97 AS bucket, md5(g::text) AS note FROM generate_series(1, {n}) g")
    else:
        execute(
            dialect,
            "DROP TABLE IF EXISTS big",
            "CREATE TABLE big (id INT PRIMARY KEY, bucket INT, note VARCHAR(32))",
        )
        # MariaDB's Sequence engine: seq_1_to_N is a virtual table of 1..N
        execute(dialect, f"INSERT INTO big SELECT seq, seq % 97, MD5(seq) FROM seq_1_to_{n}")
    report = run(
        tmp_path,
        {
            "name": f"big_{dialect}",
            "settings": {"batch_rows": 50_000},
            "sources": {"t": {"type": dialect, "url": url_for(dialect), "table": "big", "partition": {"column": "id", "partitions": 4}}},
            "steps": [{"name": "some", "type": "filter", "input": "t", "where": "bucket = 0"}],
            "sinks": {"out": {"type": "parquet", "input": "some", "path": "out/"}},
        },
    )
    assert report.ok, report.error
    steps = {row["name"]: row for row in report.summary["steps"]}
    assert steps["t"]["rows_out"] == n  # every row exactly once across the 4 ranges
    import pyarrow.parquet as pq

    ids = pq.read_table(tmp_path / "out").column("id").to_pylist()
    assert sorted(ids) == [i for i in range(1, n + 1) if i % 97 == 0]


# --------------------------------------------------------------------------- sinks


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_upsert_is_idempotent_and_rejected_rows_go_to_the_dlq(tmp_path, dialect):
    execute(dialect, "DROP TABLE IF EXISTS target", "CREATE TABLE target (id INT PRIMARY KEY, name VARCHAR(5) NOT NULL, qty INT CHECK (qty >= 0))")
    rows = [{"id": i, "name": f"n{i}", "qty": i} for i in range(1, 9)]
    rows[2]["name"] = "far-too-long"  # length
    rows[5]["qty"] = -1  # check constraint
    rows[6]["name"] = None  # not null
    spec = {
        "name": f"upsert_{dialect}",
        "sources": {"rows": {"type": "inline", "rows": rows, "schema": {"id": "int64", "name": "string", "qty": "int64"}}},
        "sinks": {"db": {"type": dialect, "input": "rows", "url": url_for(dialect), "table": "target", "mode": "upsert", "key": ["id"], "commit_rows": 4}},
    }
    for attempt in range(2):
        out = tmp_path / str(attempt)
        report = run(out, spec)
        assert report.status == "succeeded", report.error
        dlq = read_ndjson(out / "dlq")
        assert sorted(json.loads(r["record"])["id"] for r in dlq) == [3, 6, 7]
        assert all(r["step"] == "db" and r["error_message"] for r in dlq)
        landed = execute(dialect, "SELECT id, name, qty FROM target ORDER BY id", fetch=True)
        assert [tuple(r) for r in landed] == [(i, f"n{i}", i) for i in (1, 2, 4, 5, 8)]


def test_postgres_insert_with_create_table_and_replace(tmp_path):
    execute("postgres", "DROP TABLE IF EXISTS made")
    rows = [{"id": i, "at": "2024-01-0%d" % (i + 1)} for i in range(3)]
    spec = {
        "name": "replace_pg",
        "sources": {"rows": {"type": "inline", "rows": rows, "schema": {"id": "int64", "at": "date32"}}},
        "sinks": {"db": {"type": "postgres", "input": "rows", "url": url_for("postgres"), "table": "made", "mode": "replace", "create_table": True}},
    }
    assert run(tmp_path / "a", spec).ok
    assert run(tmp_path / "b", spec).ok  # replace, not append
    assert execute("postgres", "SELECT count(*) FROM made", fetch=True)[0][0] == 3
    leftovers = execute("postgres", "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'made__beam_etl_%%'", fetch=True)
    assert leftovers[0][0] == 0


# --------------------------------------------------------------------------- incremental


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_incremental_reads_exactly_the_new_rows_including_ties(tmp_path, dialect):
    ts = "TIMESTAMP" if dialect == "postgres" else "DATETIME"
    execute(dialect, "DROP TABLE IF EXISTS events", f"CREATE TABLE events (id INT PRIMARY KEY, updated_at {ts} NOT NULL, v INT)")
    insert = "INSERT INTO events VALUES (%s, %s, %s)"
    for row in [(1, "2024-01-01 00:00:00", 1), (2, "2024-01-02 00:00:00", 2), (3, "2024-01-02 00:00:00", 3)]:
        execute(dialect, insert, params=row)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    spec = {
        "name": f"inc_{dialect}",
        "sources": {"events": {"type": dialect, "url": url_for(dialect), "table": "events", "incremental": {"column": "updated_at", "key": "id"}}},
        "sinks": {"out": {"type": "ndjson", "input": "events", "path": "out/"}},
    }
    first = run(tmp_path / "1", spec, state)
    assert first.ok, first.error
    assert sorted(r["id"] for r in read_ndjson(tmp_path / "1" / "out")) == [1, 2, 3]
    # a new row tying the watermark's timestamp with a larger key, a newer row, an update
    execute(dialect, insert, params=(4, "2024-01-02 00:00:00", 4))
    execute(dialect, insert, params=(5, "2024-01-03 00:00:00", 5))
    execute(dialect, "UPDATE events SET v = 10, updated_at = '2024-01-04 00:00:00' WHERE id = 1")
    second = run(tmp_path / "2", spec, state)
    assert second.ok, second.error
    assert sorted(r["id"] for r in read_ndjson(tmp_path / "2" / "out")) == [1, 4, 5]
    third = run(tmp_path / "3", spec, state)
    assert read_ndjson(tmp_path / "3" / "out") == []

    # the CLI shows and resets the watermark; after a reset the next run reads everything
    import subprocess
    import sys

    cli = [sys.executable, "-m", "beam_etl", "state"]
    shown = subprocess.run([*cli, "show", f"inc_{dialect}", "--state-url", state], capture_output=True, text=True)
    assert shown.returncode == 0 and f"inc_{dialect}.events:" in shown.stdout and "2024-01-04" in shown.stdout
    reset = subprocess.run([*cli, "reset", f"inc_{dialect}", "--state-url", state], capture_output=True, text=True)
    assert reset.returncode == 0 and "reset 1 watermark" in reset.stdout
    fourth = run(tmp_path / "4", spec, state)
    assert sorted(r["id"] for r in read_ndjson(tmp_path / "4" / "out")) == [1, 2, 3, 4, 5]


def test_failed_sink_leaves_the_watermark(tmp_path):
    execute("postgres", "DROP TABLE IF EXISTS wm_src", "CREATE TABLE wm_src (id INT PRIMARY KEY, v INT)", "INSERT INTO wm_src VALUES (1, 1), (2, 2)")
    state = f"sqlite:///{tmp_path / 'state.db'}"
    spec = {
        "name": "wm_fail",
        "sources": {"s": {"type": "postgres", "url": url_for("postgres"), "table": "wm_src", "incremental": {"column": "id"}}},
        "steps": [{"name": "gate", "type": "validate", "input": "s", "on_error": "fail", "rules": {"v": {"max": 1}}}],
        "sinks": {"out": {"type": "ndjson", "input": "gate", "path": "out/"}},
    }
    failed = run(tmp_path / "1", spec, state)
    assert failed.status == "failed"
    from beam_etl.state import StateStore

    assert StateStore(state).get_watermark("wm_fail", "s") is None
    execute("postgres", "UPDATE wm_src SET v = 0")
    ok = run(tmp_path / "2", spec, state)
    assert ok.ok, ok.error
    assert sorted(r["id"] for r in read_ndjson(tmp_path / "2" / "out")) == [1, 2]  # re-read after the failure
    assert StateStore(state).get_watermark("wm_fail", "s") is not None


# --------------------------------------------------------------------------- faults and safety


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_wrong_password_is_one_line_with_password_redacted(tmp_path, dialect):
    from urllib.parse import urlsplit

    parts = urlsplit(url_for(dialect))
    bad = url_for(dialect).replace(f":{parts.password}@", ":wrong-secret@")
    report = run(tmp_path, {"name": "bad_login", "sources": {"s": {"type": dialect, "url": bad, "table": "x"}}, "sinks": {"o": {"type": "ndjson", "input": "s", "path": "o/"}}})
    assert report.status == "failed"
    assert "source 's'" in report.error and "cannot connect" in report.error
    assert "wrong-secret" not in report.error and "***" in report.error
    assert "\n" not in report.error


def test_table_names_are_identifiers_not_sql(tmp_path):
    evil = 'x"; DROP TABLE wm_guard; --'
    execute("postgres", "DROP TABLE IF EXISTS wm_guard", "CREATE TABLE wm_guard (id int)")
    report = run(tmp_path, {"name": "inj", "sources": {"s": {"type": "postgres", "url": url_for("postgres"), "table": evil}}, "sinks": {"o": {"type": "ndjson", "input": "s", "path": "o/"}}})
    assert report.status == "failed" and "does not exist" in report.error
    assert execute("postgres", "SELECT count(*) FROM wm_guard", fetch=True)[0][0] == 0  # still there


def test_redact_url():
    assert redact_url("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"


def test_database_restart_mid_read_fails_cleanly_and_rerun_lands_each_row_once(tmp_path):
    import subprocess
    import threading
    import time

    n = 600_000
    execute("postgres", "DROP TABLE IF EXISTS restart_src", "DROP TABLE IF EXISTS restart_dst",
            f"CREATE TABLE restart_src AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, {n}) g",
            "CREATE TABLE restart_dst (id INT PRIMARY KEY, note TEXT)")
    spec = {
        "name": "restart",
        "settings": {"batch_rows": 20_000},
        "sources": {"s": {"type": "postgres", "url": url_for("postgres"), "table": "restart_src"}},
        "sinks": {"d": {"type": "postgres", "input": "s", "url": url_for("postgres"), "table": "restart_dst", "mode": "upsert", "key": ["id"], "commit_rows": 20_000}},
    }
    restarted = threading.Event()

    def restart_when_reading():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            active = execute("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'DECLARE%%beam_etl_%%' OR query LIKE 'FETCH%%'", fetch=True)[0][0]
            if active:
                subprocess.run(["pg_ctlcluster", "15", "main", "restart", "-m", "fast"], check=True)
                restarted.set()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=restart_when_reading)
    watcher.start()
    first = run(tmp_path / "1", spec)
    watcher.join()
    Database.close_all()
    assert restarted.is_set(), "the read finished before the restart could hit it"
    assert first.status == "failed" and "\n" not in (first.error or "")
    second = run(tmp_path / "2", spec)
    assert second.ok, second.error
    count, distinct = execute("postgres", "SELECT count(*), count(DISTINCT id) FROM restart_dst", fetch=True)[0]
    assert count == distinct == n  # every row once, none duplicated by the rerun
