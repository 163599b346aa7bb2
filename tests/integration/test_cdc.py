"""Change data capture against the real servers: PostgreSQL (wal2json slot) and MariaDB
(ROW binlog). Changes arrive in order; positions move only after the sinks commit."""

from __future__ import annotations

import json
import uuid

import pytest

from beam_etl.io.sql import Database
from beam_etl.run import run_spec
from beam_etl.spec import load_spec
from tests.integration.test_sql import execute, read_ndjson, url_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fresh_pools():
    yield
    Database.close_all()


def run(path, spec, state):
    return run_spec(load_spec(spec), ["--runner=DirectRunner"], output_dir=str(path), state_url=state)


def changes(path):
    return [(r["op"], json.loads(r["after"] or r["before"])["id"]) for r in read_ndjson(path / "changes")]


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_cdc_changes_in_order_acknowledged_after_the_sink_and_applied(tmp_path, dialect):
    table = f"cdc_{uuid.uuid4().hex[:6]}"
    target = f"{table}_copy"
    execute(dialect, f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(10))", f"CREATE TABLE {target} (id INT PRIMARY KEY, v VARCHAR(10))")
    if dialect == "postgres":
        execute(dialect, f"ALTER TABLE {table} REPLICA IDENTITY FULL")
        source = {"type": "postgres_cdc", "url": url_for(dialect), "slot": table, "tables": [f"public.{table}"], "flatten": True}
    else:
        source = {"type": "mysql_cdc", "url": url_for(dialect), "tables": [f"beam_etl.{table}"], "flatten": True}
    state = f"sqlite:///{tmp_path / 'state.db'}"
    spec = {
        "name": f"cdc_{dialect}",
        "sources": {"src": source},
        "sinks": {
            "changes": {"type": "ndjson", "input": "src", "path": "changes/"},
            "copy": {"type": dialect, "input": "src", "url": url_for(dialect), "table": target, "mode": "cdc_apply", "key": ["id"]},
        },
    }
    try:
        assert run(tmp_path / "0", spec, state).ok  # creates the slot / records the position
        execute(dialect, f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        execute(dialect, f"UPDATE {table} SET v = 'bb' WHERE id = 2")
        execute(dialect, f"DELETE FROM {table} WHERE id = 1")
        first = run(tmp_path / "1", spec, state)
        assert first.ok, first.error
        assert changes(tmp_path / "1") == [("insert", 1), ("insert", 2), ("insert", 3), ("update", 2), ("delete", 1)]
        rows = read_ndjson(tmp_path / "1" / "changes")
        assert all(r["position"] and r["commit_ts"] for r in rows)
        assert json.loads(rows[3]["before"])["v"] == "b" and json.loads(rows[3]["after"])["v"] == "bb"
        copied = execute(dialect, f"SELECT id, v FROM {target} ORDER BY id", fetch=True)
        assert [tuple(r) for r in copied] == [(2, "bb"), (3, "c")]  # the target follows the source

        # a run whose sink fails must not acknowledge: the same changes come back
        execute(dialect, f"INSERT INTO {table} VALUES (4, 'd')")
        failing = {**spec, "steps": [{"name": "boom", "type": "validate", "input": "src", "on_error": "fail", "rules": {"id": {"max": 3}}}]}
        failing["sinks"] = {"changes": {"type": "ndjson", "input": "boom", "path": "changes/"}}
        assert run(tmp_path / "2", failing, state).status == "failed"
        again = run(tmp_path / "3", spec, state)
        assert again.ok, again.error
        assert changes(tmp_path / "3") == [("insert", 4)]
        assert run(tmp_path / "4", spec, state).ok
        assert changes(tmp_path / "4") == []
    finally:
        if dialect == "postgres":
            execute(dialect, f"SELECT pg_drop_replication_slot('{table}') WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{table}')")
        execute(dialect, f"DROP TABLE IF EXISTS {table}", f"DROP TABLE IF EXISTS {target}")


def test_postgres_cdc_streaming_mode_follows_the_log_and_advances_the_slot(tmp_path):
    import threading
    import time

    table = f"cdcs_{uuid.uuid4().hex[:6]}"
    execute("postgres", f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")
    spec = {
        "name": "cdc_stream",
        "sources": {"src": {"type": "postgres_cdc", "url": url_for("postgres"), "slot": table, "tables": [f"public.{table}"],
                            "flatten": True, "streaming": True, "poll_seconds": 0.5, "max_seconds": 8}},
        "sinks": {"changes": {"type": "ndjson", "input": "src", "path": "changes/"}},
    }

    def writer():
        for i in range(12):  # commits spread over several ticks
            execute("postgres", f"INSERT INTO {table} VALUES ({i}, 'v{i}')")
            time.sleep(0.4)

    thread = threading.Thread(target=writer)
    try:
        # the slot exists before the writer starts, so no insert predates it
        Database("postgres", url_for("postgres"), "t")
        execute("postgres", f"SELECT pg_create_logical_replication_slot('{table}', 'wal2json')")
        thread.start()
        report = run_spec(load_spec(spec), ["--runner=DirectRunner", "--streaming"], output_dir=str(tmp_path), record_state=False)
        thread.join()
        assert report.ok, report.error
        ids = [id_ for op, id_ in changes(tmp_path)]
        assert sorted(ids) == list(range(12)) and len(ids) == 12  # every insert once, across ticks
        left = execute("postgres", f"SELECT count(*) FROM pg_logical_slot_peek_changes('{table}', NULL, NULL)", fetch=True)[0][0]
        assert left < 12 * 3  # the slot was advanced while streaming (at most the last tick remains)
    finally:
        thread.join()
        execute("postgres", f"SELECT pg_drop_replication_slot('{table}') WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{table}')")
        execute("postgres", f"DROP TABLE IF EXISTS {table}")


def test_mysql_cdc_streaming_mode_follows_the_binlog(tmp_path):
    import threading
    import time

    table = f"cdcs_{uuid.uuid4().hex[:6]}"
    execute("mysql", f"CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(10))")
    state = f"sqlite:///{tmp_path / 'state.db'}"
    base = {"type": "mysql_cdc", "url": url_for("mysql"), "tables": [f"beam_etl.{table}"], "flatten": True}
    bounded = {"name": "my_stream", "sources": {"src": base}, "sinks": {"changes": {"type": "ndjson", "input": "src", "path": "changes/"}}}
    streaming = {**bounded, "sources": {"src": {**base, "streaming": True, "poll_seconds": 0.5, "max_seconds": 8}}}

    def writer():
        for i in range(10):
            execute("mysql", f"INSERT INTO {table} VALUES ({i}, 'v{i}')")
            time.sleep(0.4)

    try:
        assert run(tmp_path / "0", bounded, state).ok  # records the current binlog position
        thread = threading.Thread(target=writer)
        thread.start()
        report = run_spec(load_spec(streaming), ["--runner=DirectRunner", "--streaming"], output_dir=str(tmp_path / "1"), state_url=state)
        thread.join()
        assert report.ok, report.error
        ids = [id_ for op, id_ in changes(tmp_path / "1")]
        assert sorted(ids) == list(range(10)) and len(ids) == 10
        # the stored position moved while streaming: a bounded rerun sees at most the last tick again
        rerun = run(tmp_path / "2", bounded, state)
        assert rerun.ok and len(changes(tmp_path / "2")) < 10
    finally:
        execute("mysql", f"DROP TABLE IF EXISTS {table}")
