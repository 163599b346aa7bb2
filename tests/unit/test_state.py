"""The state store: runs and per-step counts, watermarks in transactions, metric history,
migrations from an empty and from a version-1 database, two writers on one SQLite file, and
URLs whose passwords never show."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import sqlalchemy as sa

from beam_etl.errors import BeamEtlError
from beam_etl.state import (
    LATEST_VERSION,
    METADATA,
    MIGRATIONS,
    Migration,
    StateStore,
    StateStoreError,
    add_column,
    default_state_url,
    migrate,
    redact_state_url,
    state_engine,
)

SUMMARY = {
    "steps": [
        {"kind": "source", "name": "orders", "rows_in": 10, "rows_out": 10, "rows_dlq": 0, "rows_filtered": 0, "balanced": True},
        {"kind": "step", "name": "valid", "rows_in": 10, "rows_out": 7, "rows_dlq": 2, "rows_filtered": 1, "balanced": True},
        {"kind": "sink", "name": "out", "rows_in": 7, "rows_out": 7, "rows_dlq": 0, "rows_filtered": 0, "balanced": True},
    ],
    "dlq_rows": 2,
    "balanced": True,
    "dlq_reasons": [{"step": "valid", "rule": "required", "rows": 2}],
}


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def store(url):
    with StateStore(url) as opened:
        yield opened


def schema_of(url: str) -> dict:
    """Tables -> columns (name, type, nullable), primary key, indexes, foreign keys."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            table: {
                "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                "pk": inspector.get_pk_constraint(table)["constrained_columns"],
                "indexes": sorted((i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)),
                "fks": [(f["constrained_columns"], f["referred_table"]) for f in inspector.get_foreign_keys(table)],
            }
            for table in sorted(inspector.get_table_names())
        }
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- runs


def test_a_finished_run_keeps_its_counts_per_step_and_its_summary(store, tmp_path):
    run_id = store.start_run(spec_name="orders", spec_hash="abc123", runner="DirectRunner")
    assert len(run_id) == 32 and int(run_id, 16) >= 0  # a uuid4 hex
    running = store.get_run(run_id)
    assert running["status"] == "running" and running["finished_at"] is None and running["steps"] == []

    store.finish_run(run_id, status="succeeded", summary=SUMMARY)

    run = store.get_run(run_id)
    assert run["spec_name"] == "orders" and run["spec_hash"] == "abc123" and run["runner"] == "DirectRunner"
    assert run["status"] == "succeeded" and run["error"] is None
    assert run["dlq_rows"] == 2 and run["balanced"] is True
    assert run["started_at"].tzinfo is not None and run["finished_at"] >= run["started_at"]
    assert run["seconds"] >= 0
    assert run["steps"] == SUMMARY["steps"]
    assert run["summary"] == SUMMARY
    # The counts are rows of their own table, not only inside the JSON: query them directly.
    with sqlite3.connect(tmp_path / "state.db") as raw:
        rows = raw.execute(
            "SELECT kind, name, rows_in, rows_out, rows_dlq, rows_filtered FROM run_steps WHERE run_id = ? ORDER BY position",
            (run_id,),
        ).fetchall()
    assert rows == [("source", "orders", 10, 10, 0, 0), ("step", "valid", 10, 7, 2, 1), ("sink", "out", 7, 7, 0, 0)]


def test_finishing_a_run_again_replaces_its_steps_and_status(store):
    run_id = store.start_run(spec_name="orders", spec_hash="h", runner="DirectRunner", run_id="fixed-id")
    assert run_id == "fixed-id"
    store.finish_run(run_id, status="failed", summary={"steps": [], "dlq_rows": 0}, error="step 'x' failed: boom")
    store.finish_run(run_id, status="succeeded", summary=SUMMARY)
    run = store.get_run(run_id)
    assert run["status"] == "succeeded" and run["error"] is None and len(run["steps"]) == 3


def test_a_failed_run_keeps_its_error(store):
    run_id = store.start_run(spec_name="orders", spec_hash="h", runner="FlinkRunner")
    store.finish_run(run_id, status="failed", summary={"steps": [], "balanced": False, "dlq_rows": 0}, error="sink 'out': disk full")
    run = store.get_run(run_id)
    assert (run["status"], run["error"], run["balanced"], run["runner"]) == ("failed", "sink 'out': disk full", False, "FlinkRunner")


def test_list_runs_newest_first_filtered_and_limited(store):
    ids = []
    for index in range(5):
        name = "a" if index % 2 == 0 else "b"
        ids.append((name, store.start_run(spec_name=name, spec_hash=str(index), runner="DirectRunner")))
        time.sleep(0.002)  # distinct start times
    all_runs = store.list_runs()
    assert [run["run_id"] for run in all_runs] == [run_id for _, run_id in reversed(ids)]
    assert "summary" not in all_runs[0] and "steps" not in all_runs[0]
    a_runs = store.list_runs("a")
    assert [run["run_id"] for run in a_runs] == [run_id for name, run_id in reversed(ids) if name == "a"]
    assert [run["run_id"] for run in store.list_runs(limit=2)] == [ids[4][1], ids[3][1]]
    assert store.list_runs("nobody") == []
    with pytest.raises(ValueError, match="limit"):
        store.list_runs(limit=0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda s: s.finish_run("no-such-run", status="succeeded", summary={}), StateStoreError, "no run 'no-such-run'"),
        (lambda s: s.finish_run(s.start_run(spec_name="x", spec_hash="h", runner="r"), status="done", summary={}), ValueError, "succeeded"),
        (lambda s: [s.start_run(spec_name="x", spec_hash="h", runner="r", run_id="dup") for _ in range(2)], StateStoreError, "already recorded"),
    ],
    ids=["unknown run", "unknown status", "duplicate id"],
)
def test_run_misuse_is_a_clear_error(store, call, error, match):
    with pytest.raises(error, match=match):
        call(store)


def test_get_run_of_an_unknown_id_is_none(store):
    assert store.get_run("nope") is None


# --------------------------------------------------------------------------- watermarks


@pytest.mark.parametrize(
    "value",
    [
        42,
        "2024-05-01T10:00:00.123456+00:00",
        1.5,
        {"value": "2024-05-01T10:00:00", "key": 17, "column": "updated_at"},
        {"file": "mysql-bin.000003", "pos": 1234},
        {"partitions": {"0": 10, "1": 7}},
        [1, "two", None],
        True,
    ],
)
def test_a_watermark_reads_back_as_it_was_set(store, value):
    store.set_watermark("orders", "db", value, run_id="r1")
    assert store.get_watermark("orders", "db") == value
    [row] = store.list_watermarks("orders")
    assert (row["pipeline"], row["source"], row["value"], row["run_id"]) == ("orders", "db", value, "r1")


def test_watermarks_are_per_pipeline_and_source_and_reset_selectively(store):
    assert store.get_watermark("p", "a") is None
    store.set_watermark("p", "a", 1)
    store.set_watermark("p", "a", 2)  # an update, not a second row
    store.set_watermark("p", "b", 3)
    store.set_watermark("q", "a", 4)
    assert [store.get_watermark(*key) for key in [("p", "a"), ("p", "b"), ("q", "a")]] == [2, 3, 4]
    assert store.reset_watermarks("p", "a") == 1
    assert store.get_watermark("p", "a") is None and store.get_watermark("p", "b") == 3
    assert store.reset_watermarks("p") == 1
    assert store.list_watermarks() == [dict(store.list_watermarks("q")[0])]
    assert store.reset_watermarks("nobody") == 0


def test_a_watermark_set_in_a_failed_transaction_does_not_stick(store):
    store.set_watermark("orders", "db", {"value": 10})
    with pytest.raises(RuntimeError, match="sink failed"):
        with store.transaction():
            store.set_watermark("orders", "db", {"value": 20})
            store.set_watermark("orders", "other", {"value": 1})
            assert store.get_watermark("orders", "db") == {"value": 20}  # visible inside
            raise RuntimeError("sink failed")
    assert store.get_watermark("orders", "db") == {"value": 10}
    assert store.get_watermark("orders", "other") is None


def test_a_transaction_commits_everything_at_once_and_nests(store, url):
    other = StateStore(url)
    try:
        with store.transaction():
            store.set_watermark("orders", "a", 1)
            with store.transaction():  # joins the outer one
                store.set_watermark("orders", "b", 2)
            # Not committed yet: another store (another process, say) still sees nothing,
            # and reading does not wait for the writer.
            assert other.get_watermark("orders", "a") is None
            assert other.get_watermark("orders", "b") is None
        assert (other.get_watermark("orders", "a"), other.get_watermark("orders", "b")) == (1, 2)
    finally:
        other.close()


def test_a_failed_nested_transaction_rolls_back_the_outer_one(store):
    with pytest.raises(ValueError):
        with store.transaction():
            store.set_watermark("p", "a", 1)
            with store.transaction():
                store.set_watermark("p", "b", 2)
                raise ValueError("inner")
    assert store.list_watermarks("p") == []


@pytest.mark.parametrize(
    "value, match",
    [(None, "reset_watermarks"), (dt.date(2024, 1, 1), "encode_value"), (float("nan"), "not JSON")],
)
def test_a_watermark_that_would_not_read_back_is_refused(store, value, match):
    with pytest.raises(ValueError, match=match):
        store.set_watermark("p", "s", value)
    assert store.get_watermark("p", "s") is None


# --------------------------------------------------------------------------- quality metrics


def test_metric_history_is_oldest_first_limited_to_the_latest_and_filtered(store):
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    for day in range(5):
        run_id = f"run{day}"
        stored = store.add_metrics(
            run_id,
            "orders",
            [
                {"metric": "completeness", "column": "email", "step": "gate", "value": 0.9 + day / 100, "recorded_at": base + dt.timedelta(days=day)},
                {"metric": "completeness", "column": "phone", "step": "gate", "value": 0.5, "recorded_at": base + dt.timedelta(days=day)},
                {"metric": "size", "step": "gate", "value": 100 * (day + 1), "recorded_at": base + dt.timedelta(days=day)},
            ],
        )
        assert stored == 3
    store.add_metrics("other", "customers", [{"metric": "size", "value": 1}])

    email = store.metrics_history("orders", "completeness", column="email")
    assert [m["value"] for m in email] == pytest.approx([0.90, 0.91, 0.92, 0.93, 0.94])
    assert [m["run_id"] for m in email] == ["run0", "run1", "run2", "run3", "run4"]
    assert email[0] == {
        "run_id": "run0", "pipeline": "orders", "step": "gate", "metric": "completeness",
        "column": "email", "value": pytest.approx(0.90), "recorded_at": base,
    }
    latest = store.metrics_history("orders", "size", limit=2)
    assert [m["value"] for m in latest] == [400.0, 500.0]  # the two most recent, oldest first
    assert len(store.metrics_history("orders", "completeness")) == 10  # any column
    assert store.metrics_history("orders", "completeness", step="elsewhere") == []
    assert [m["value"] for m in store.metrics_history("customers", "size")] == [1.0]


def test_metrics_default_to_now_and_store_nan_as_missing(store):
    before = dt.datetime.now(dt.timezone.utc)
    store.add_metrics(None, "p", [{"metric": "mean", "column": "x", "value": float("nan")}, {"metric": "mean", "column": "y", "value": 3}])
    history = store.metrics_history("p", "mean")
    assert [(m["column"], m["value"], m["run_id"]) for m in history] == [("x", None, None), ("y", 3.0, None)]
    assert all(before <= m["recorded_at"] <= dt.datetime.now(dt.timezone.utc) for m in history)


@pytest.mark.parametrize(
    "metric, match",
    [({"value": 1}, "'metric' name"), ({"metric": "size", "value": "many"}, "number or None")],
)
def test_a_malformed_metric_is_refused_and_nothing_is_stored(store, metric, match):
    with pytest.raises(ValueError, match=match):
        store.add_metrics("r", "p", [{"metric": "size", "value": 1}, metric])
    assert store.metrics_history("p", "size") == []


# --------------------------------------------------------------------------- migrations

# The database exactly as beam-etl wrote it at schema version 1 (frozen: never edit).
V1_SQLITE = """
CREATE TABLE schema_version (version INTEGER NOT NULL, description VARCHAR(255) NOT NULL,
    applied_at DATETIME NOT NULL, PRIMARY KEY (version));
CREATE TABLE runs (run_id VARCHAR(64) NOT NULL, spec_name VARCHAR(255) NOT NULL, spec_hash VARCHAR(128) NOT NULL,
    runner VARCHAR(64) NOT NULL, status VARCHAR(32) NOT NULL, started_at DATETIME NOT NULL, finished_at DATETIME,
    error TEXT, dlq_rows BIGINT, balanced BOOLEAN, summary TEXT, PRIMARY KEY (run_id));
CREATE INDEX ix_runs_started ON runs (started_at);
CREATE INDEX ix_runs_spec_started ON runs (spec_name, started_at);
CREATE TABLE run_steps (run_id VARCHAR(64) NOT NULL, position INTEGER NOT NULL, kind VARCHAR(16) NOT NULL,
    name VARCHAR(255) NOT NULL, rows_in BIGINT, rows_out BIGINT, rows_dlq BIGINT, rows_filtered BIGINT, balanced BOOLEAN,
    PRIMARY KEY (run_id, position), FOREIGN KEY(run_id) REFERENCES runs (run_id) ON DELETE CASCADE);
INSERT INTO schema_version VALUES (1, 'runs and per-step counts', '2024-01-01 00:00:00.000000');
INSERT INTO runs VALUES ('old-run', 'orders', 'h1', 'DirectRunner', 'succeeded', '2024-01-01 10:00:00.000000',
    '2024-01-01 10:00:05.500000', NULL, 2, 1, '{"steps": [], "dlq_rows": 2}');
INSERT INTO run_steps VALUES ('old-run', 0, 'source', 'orders', 10, 10, 0, 0, 1);
"""


def test_an_empty_database_is_created_at_the_latest_version_matching_the_code(url):
    with StateStore(url) as store:
        assert store.schema_version == LATEST_VERSION == len(MIGRATIONS)
    schema = schema_of(url)
    # The module's table objects (what the queries use) describe the migrated database.
    assert set(schema) == set(METADATA.tables)
    for name, table in METADATA.tables.items():
        assert [(c[0], c[2]) for c in schema[name]["columns"]] == [(c.name, c.nullable) for c in table.columns], name
        assert sorted(schema[name]["pk"]) == sorted(c.name for c in table.primary_key.columns), name
        assert sorted(i[0] for i in schema[name]["indexes"]) == sorted(i.name for i in table.indexes), name
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        assert raw.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [(v,) for v in range(1, LATEST_VERSION + 1)]


def test_a_version_1_database_is_upgraded_keeping_its_runs(tmp_path, url):
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as raw:
        raw.executescript(V1_SQLITE)
    old_url = f"sqlite:///{old}"

    with StateStore(old_url) as store:
        assert store.schema_version == LATEST_VERSION
        run = store.get_run("old-run")
        assert run["status"] == "succeeded" and run["dlq_rows"] == 2 and run["balanced"] is True
        assert run["seconds"] == pytest.approx(5.5)
        assert run["started_at"] == dt.datetime(2024, 1, 1, 10, tzinfo=dt.timezone.utc)
        assert run["steps"] == [{"kind": "source", "name": "orders", "rows_in": 10, "rows_out": 10, "rows_dlq": 0, "rows_filtered": 0, "balanced": True}]
        # What versions 2 and 3 added works on the upgraded database.
        store.set_watermark("orders", "db", 5)
        store.add_metrics("old-run", "orders", [{"metric": "size", "value": 10}])
        assert store.get_watermark("orders", "db") == 5
        assert len(store.metrics_history("orders", "size")) == 1

    StateStore(url).close()
    assert schema_of(old_url) == schema_of(url)  # upgraded == created fresh


def test_each_intermediate_version_upgrades_to_the_same_schema(tmp_path, url):
    StateStore(url).close()
    fresh = schema_of(url)
    for version in range(1, LATEST_VERSION):
        partial = f"sqlite:///{tmp_path / f'v{version}.db'}"
        engine = state_engine(partial)
        assert migrate(engine, MIGRATIONS[:version]) == version
        engine.dispose()
        StateStore(partial).close()
        assert schema_of(partial) == fresh, version


def test_a_later_migration_adds_tables_and_columns_and_keeps_the_data(store, url):
    """The shape the schedules issue will follow (see the module docstring)."""
    run_id = store.start_run(spec_name="orders", spec_hash="h", runner="DirectRunner")
    store.set_watermark("orders", "db", 7)
    store.close()

    def v4_schedules(conn: sa.Connection) -> None:
        meta = sa.MetaData()
        sa.Table(
            "schedules", meta,
            sa.Column("schedule_id", sa.String(64), primary_key=True),
            sa.Column("pipeline", sa.String(255), nullable=False),
            sa.Column("cron", sa.String(120), nullable=False),
        )
        meta.create_all(conn)
        add_column(conn, "runs", sa.Column("schedule_id", sa.String(64), nullable=True))

    engine = state_engine(url)
    try:
        assert migrate(engine, [*MIGRATIONS, Migration(4, "schedules", v4_schedules)]) == 4
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT schedule_id FROM runs WHERE run_id = :r"), {"r": run_id}).scalar() is None
            assert conn.execute(sa.text("SELECT COUNT(*) FROM schedules")).scalar() == 0
            assert conn.execute(sa.text("SELECT MAX(version) FROM schema_version")).scalar() == 4
    finally:
        engine.dispose()
    # This code knows only up to LATEST_VERSION: it must not write into a newer schema.
    with pytest.raises(StateStoreError, match=r"schema version 4, newer than this beam-etl knows \(3\); upgrade beam-etl"):
        StateStore(url)


def test_a_failing_migration_leaves_the_database_at_its_old_version(store, url):
    store.set_watermark("orders", "db", 7)
    store.close()

    def v4_broken(conn: sa.Connection) -> None:
        sa.Table("half_done", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True)).create(conn)
        conn.execute(sa.text("ALTER TABLE no_such_table ADD COLUMN x INTEGER"))

    engine = state_engine(url)
    try:
        with pytest.raises(StateStoreError, match="cannot upgrade the state store at .* to version 4 \\(broken\\): .*no_such_table"):
            migrate(engine, [*MIGRATIONS, Migration(4, "broken", v4_broken)])
    finally:
        engine.dispose()
    assert "half_done" not in schema_of(url)  # the DDL rolled back with the rest
    with StateStore(url) as reopened:
        assert reopened.schema_version == LATEST_VERSION and reopened.get_watermark("orders", "db") == 7


def test_migrations_must_be_numbered_in_order(url):
    with pytest.raises(ValueError, match="1..n in order"):
        migrate(state_engine(url), [MIGRATIONS[0], MIGRATIONS[2]])


def test_a_plain_sqlite_engine_is_refused_because_its_ddl_would_not_roll_back(url):
    # pysqlite on its own commits before each DDL statement: a failed upgrade would be half-done.
    with pytest.raises(ValueError, match="state_engine"):
        migrate(sa.create_engine(url))


# --------------------------------------------------------------------------- concurrency

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from beam_etl.state import StateStore

    url, tag, go, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    while not os.path.exists(go):  # start together, on a database nobody created yet
        time.sleep(0.005)
    store = StateStore(url)
    for index in range(count):
        run_id = store.start_run(spec_name="concurrent", spec_hash=tag, runner="DirectRunner")
        with store.transaction():  # read-modify-write: a lost update would show in the total
            counter = store.get_watermark("concurrent", "counter") or 0
            store.set_watermark("concurrent", "counter", counter + 1)
        summary = {"steps": [{"kind": "source", "name": tag, "rows_in": index, "rows_out": index,
                              "rows_dlq": 0, "rows_filtered": 0, "balanced": True}], "dlq_rows": 0}
        store.finish_run(run_id, status="succeeded", summary=summary)
    store.close()
    """
)


def assert_consistent(url: str, tags: list[str], per_writer: int) -> None:
    with StateStore(url) as store:
        runs = store.list_runs("concurrent", limit=10 * per_writer * len(tags))
        assert sorted(run["spec_hash"] for run in runs) == sorted(tags * per_writer)
        assert all(run["status"] == "succeeded" for run in runs)
        assert all(len(store.get_run(run["run_id"])["steps"]) == 1 for run in runs)
        assert store.get_watermark("concurrent", "counter") == per_writer * len(tags)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (LATEST_VERSION,)  # upgraded once


@pytest.mark.timeout(120)
def test_two_processes_create_and_write_one_sqlite_file_at_once(tmp_path, url):
    go = tmp_path / "go"
    per_writer = 25
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, tag, str(go), str(per_writer)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for tag in ("first", "second")
    ]
    time.sleep(1.0)  # both past their imports, polling for the go file
    go.touch()
    for writer in writers:
        out, err = writer.communicate(timeout=100)
        assert writer.returncode == 0, err
    assert_consistent(url, ["first", "second"], per_writer)


@pytest.mark.timeout(120)
def test_two_stores_in_two_threads_write_one_sqlite_file(url):
    per_writer = 40
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(tag: str) -> None:
        try:
            start.wait()
            store = StateStore(url)
            try:
                for index in range(per_writer):
                    run_id = store.start_run(spec_name="concurrent", spec_hash=tag, runner="DirectRunner")
                    with store.transaction():
                        counter = store.get_watermark("concurrent", "counter") or 0
                        store.set_watermark("concurrent", "counter", counter + 1)
                    store.finish_run(run_id, status="succeeded", summary={"steps": [{"kind": "step", "name": tag, "rows_in": index}]})
            finally:
                store.close()
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(tag,)) for tag in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_consistent(url, ["left", "right"], per_writer)


def test_one_store_shared_by_threads_keeps_their_transactions_apart(store):
    """A transaction belongs to its thread: another thread's writes are not swept into it."""
    entered, release = threading.Event(), threading.Event()

    def other_thread() -> None:
        entered.wait(10)
        store.set_watermark("p", "other", 1)  # waits for the write lock, commits on its own
        release.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.set_watermark("p", "mine", 1)
            entered.set()
            assert not release.wait(0.3)  # the other writer is queued behind this transaction
            raise RuntimeError("roll back")
    thread.join(30)
    assert store.get_watermark("p", "mine") is None
    assert store.get_watermark("p", "other") == 1


# --------------------------------------------------------------------------- URLs and secrets


def test_repr_and_url_hide_the_password():
    secret = "s3cr@t-pw"
    url = "postgresql://etl:s3cr%40t-pw@127.0.0.1:1/state"
    assert redact_state_url(url) == "postgresql://etl:***@127.0.0.1:1/state"
    assert redact_state_url("not a url://etl:s3cr@t-pw@host") .count(secret) == 0
    with pytest.raises(StateStoreError) as caught:
        StateStore(url)
    assert secret not in str(caught.value) and "s3cr%40t" not in str(caught.value)


def test_an_unreachable_database_is_a_one_line_error_with_the_redacted_url(caplog):
    pytest.importorskip("psycopg")
    caplog.set_level(logging.DEBUG)
    url = "postgresql://etl:hunter2@127.0.0.1:1/state"  # port 1: refused at once, no server needed
    with pytest.raises(StateStoreError) as caught:
        StateStore(url)
    message = str(caught.value)
    assert isinstance(caught.value, BeamEtlError)
    assert "\n" not in message
    assert message.startswith("cannot open the state store at postgresql+psycopg://etl:***@127.0.0.1:1/state: ")
    assert "BEAM_ETL_STATE_URL" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert all("hunter2" not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "url, match",
    [
        ("postgresql+nosuchdriver://etl:hunter2@db/state", r"no database driver for 'postgresql\+nosuchdriver'"),
        ("nosuchdb://etl:hunter2@db/state", "no database driver for 'nosuchdb'"),
        ("etl:hunter2@db/state", "is not a SQLAlchemy URL"),
    ],
)
def test_a_bad_url_is_a_clear_error_without_the_password(url, match):
    with pytest.raises(StateStoreError, match=match) as caught:
        StateStore(url)
    assert "hunter2" not in str(caught.value)


def test_an_unopenable_sqlite_file_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StateStoreError, match="point --state-url / BEAM_ETL_STATE_URL at a writable path"):
        StateStore(f"sqlite:///{blocker}/state.db")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateStoreError, match="cannot open the state store at sqlite:///.*garbage.db: file is not a database"):
        StateStore(f"sqlite:///{garbage}")


def test_default_url_comes_from_the_environment_or_a_file_in_home(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAM_ETL_STATE_URL", f"sqlite:///{tmp_path / 'from_env.db'}")
    assert default_state_url() == f"sqlite:///{tmp_path / 'from_env.db'}"
    with StateStore() as store:  # no URL: the environment's
        store.start_run(spec_name="x", spec_hash="h", runner="r")
    assert (tmp_path / "from_env.db").exists()

    monkeypatch.delenv("BEAM_ETL_STATE_URL")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_url() == f"sqlite:///{tmp_path / 'home' / '.beam_etl' / 'state.db'}"
    assert (tmp_path / "home" / ".beam_etl").is_dir()


def test_a_closed_store_refuses_work(url):
    store = StateStore(url)
    store.close()
    store.close()  # idempotent
    assert "closed" in repr(store)
    with pytest.raises(StateStoreError, match="closed; open a new StateStore"):
        store.list_runs()


def test_a_missing_parent_folder_is_created(tmp_path):
    with StateStore(f"sqlite:///{tmp_path / 'a' / 'b' / 'state.db'}") as store:
        assert store.url == f"sqlite:///{tmp_path / 'a' / 'b' / 'state.db'}"
    assert (tmp_path / "a" / "b" / "state.db").exists()


def test_opening_waits_while_another_process_holds_a_new_file(tmp_path):
    """Switching a fresh file to WAL needs an exclusive lock and SQLite skips the busy handler."""
    import threading

    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")  # a rollback-journal database, as a first opener leaves it
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")  # a writer's reserved lock, as the other creator holds
    threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()

    with StateStore(f"sqlite:///{path}") as store:  # raised "database is locked" at once before
        assert store.list_runs("nothing") == []
    holder.close()
