"""Streaming end to end (issue 8 item 5) against the real Kafka broker (scripts/services/kafka.sh).

A spec reads Kafka in streaming mode, validates (DLQ to a Kafka topic), windows by event time
(fixed 1-minute windows, 30 s allowed lateness, late rows to the DLQ), counts per window, and
writes Parquet files per window pane and the window rows to a Kafka topic. The test runs it
with ``python -m beam_etl run SPEC --streaming`` (the DirectRunner, on Prism), produces
messages, waits for each window's output, checks the counts per window and where the late
rows went, and stops the pipeline with SIGINT (Ctrl-C).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.support.streaming import TopicReader, bootstrap_servers, kafka_topics, produce, start_pipeline, stop_pipeline, wait_for

pytestmark = pytest.mark.integration

MINUTE = 60_000  # ms


@pytest.fixture()
def topics():
    """Fresh topics: input (2 partitions), output, DLQ; deleted afterwards."""
    bootstrap = bootstrap_servers()
    with kafka_topics(bootstrap, {"in": 2, "out": 1, "dlq": 1}) as names:
        yield bootstrap, names


def minute_start_ms(minutes_ago: int = 10) -> int:
    """A minute boundary in the past (recent: the broker's 7-day retention deletes older records)."""
    now = int(time.time() * 1000)
    return now - now % MINUTE - minutes_ago * MINUTE


def event(at_ms: int, user: str, amount: float) -> dict[str, Any]:
    iso = dt.datetime.fromtimestamp(at_ms / 1000, tz=dt.timezone.utc).isoformat()
    return {"user": user, "amount": amount, "event_time": iso}


def window_rows(values: list[dict[str, Any]]) -> dict[tuple[str, str], list[int]]:
    """Window -> the counts it was reported with, in arrival order (one per pane)."""
    panes: dict[tuple[str, str], list[int]] = {}
    for value in values:
        panes.setdefault((value["window_start"], value["window_end"]), []).append(value["n"])
    return panes


def iso_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


def streaming_spec(bootstrap: str, names: dict[str, str]) -> dict[str, Any]:
    return {
        "name": f"clicks_per_minute_{names['in']}",
        "sources": {
            "clicks": {
                "type": "kafka",
                "bootstrap_servers": bootstrap,
                "topic": names["in"],
                "group_id": f"g_{names['in']}",
                "streaming": True,
                "batch_seconds": 0.5,
                "idle_seconds": None,  # the watermark moves with the data only: the test decides when windows close
                "schema": {"user": "string", "amount": "float64", "event_time": "string"},
            }
        },
        "steps": [
            {"name": "valid", "type": "validate", "input": "clicks", "on_error": "dlq", "rules": {"user": {"required": True}, "amount": {"min": 0}}},
            {
                "name": "per_minute",
                "type": "window_into",
                "input": "valid",
                "timestamp": "event_time",
                "window": {"type": "fixed", "size": "60s"},
                "allowed_lateness": "30s",
                "late": "dlq",
                "aggregates": {"n": "count(*)", "total": "sum(amount)"},
            },
        ],
        "sinks": {
            "files": {"type": "parquet", "input": "per_minute", "path": "per_minute/"},
            "topic": {"type": "kafka", "input": "per_minute", "bootstrap_servers": bootstrap, "topic": names["out"]},
        },
        "dlq": {"type": "kafka", "bootstrap_servers": bootstrap, "topic": names["dlq"]},
    }


def test_streaming_kafka_windows_to_parquet_and_kafka_with_late_rows_and_dlq(tmp_path, topics):
    bootstrap, names = topics
    t0 = minute_start_ms()
    w0, w1 = (iso_ms(t0), iso_ms(t0 + MINUTE)), (iso_ms(t0 + MINUTE), iso_ms(t0 + 2 * MINUTE))
    first = (
        [(i % 2, t0 + 5_000 + i * 1000, event(t0 + 5_000 + i * 1000, f"u{i}", 1.0 + i)) for i in range(6)]  # W0: 6 valid
        + [(0, t0 + 20_000, event(t0 + 20_000, "bad", -5.0)), (1, t0 + 21_000, {"amount": 2.0, "event_time": iso_ms(t0 + 21_000).isoformat()})]  # W0: 2 invalid
        + [(i % 2, t0 + 65_000 + i * 1000, event(t0 + 65_000 + i * 1000, f"v{i}", 10.0)) for i in range(4)]  # W1: 4 valid
        # one row per partition at t0+130s: the watermark passes W0's deadline (t0+90s) and W1's end
        # (t0+120s), not W1's deadline (t0+150s)
        + [(p, t0 + 130_000, event(t0 + 130_000, "tick", 0.0)) for p in (0, 1)]
    )
    produce(bootstrap, names["in"], first)
    proc, log = start_pipeline(tmp_path, streaming_spec(bootstrap, names))
    out, dlq = TopicReader(bootstrap, names["out"]), TopicReader(bootstrap, names["dlq"])
    files_dir = tmp_path / "out" / "per_minute"
    try:
        def on_time_panes():
            panes = window_rows(out.poll())
            return panes if {_key(w0), _key(w1)} <= set(panes) else None

        panes = wait_for("the on-time panes of both windows on the output topic", on_time_panes, proc, log)
        assert panes[_key(w0)][0] == 6 and panes[_key(w1)] == [4]
        assert {v["total"] for v in out.values if (v["window_start"], v["window_end"]) == _key(w0)} == {sum(1.0 + i for i in range(6))}
        # two validation failures, from the validate step, on the DLQ topic
        wait_for("the validation DLQ rows", lambda: len([v for v in dlq.poll() if v["step"] == "valid"]) == 2, proc, log)

        # Late rows: one for W0 (past its deadline: to the DLQ, as the spec says), one for W1
        # (within the allowed lateness: W1's count includes it). Then the watermark passes W1's
        # deadline (t0+150s): W1 closes with its final count, W2 (the ticks) fires on time.
        produce(bootstrap, names["in"], [(0, t0 + 30_000, event(t0 + 30_000, "late0", 1.0)), (1, t0 + 100_000, event(t0 + 100_000, "late1", 1.0))])
        late = wait_for("the late row on the DLQ topic", lambda: [v for v in dlq.poll() if v["error_type"] == "window_into.late"], proc, log)
        assert len(late) == 1 and json.loads(late[0]["record"])["user"] == "late0" and late[0]["step"] == "per_minute"
        produce(bootstrap, names["in"], [(p, t0 + 200_000, event(t0 + 200_000, "tick", 0.0)) for p in (0, 1)])
        w2 = (iso_ms(t0 + 2 * MINUTE), iso_ms(t0 + 3 * MINUTE))
        panes = wait_for("W1's final pane and W2", lambda: (p := window_rows(out.poll())) and p.get(_key(w1), [0])[-1] == 5 and _key(w2) in p and p, proc, log)
        # Accumulating panes: each repeats the whole window (write them with an upsert key). A
        # row within the lateness updates its window — at once on runners with per-element late
        # triggers, with the window's final pane on Prism.
        assert panes[_key(w1)][0] == 4 and panes[_key(w1)][-1] == 5
        assert set(panes[_key(w0)]) == {6}  # the row past W0's lateness did not change it
        assert panes[_key(w2)] == [2]
        assert len([v for v in dlq.poll() if v["error_type"] == "window_into.late"]) == 1
        invalid = sorted(json.loads(v["record"]).get("user") or "" for v in dlq.values if v["step"] == "valid")
        assert invalid == ["", "bad"]

        # Parquet: one file per window pane, named by the window, holding that pane's row.
        def parquet_panes() -> dict[str, dict[int, int]] | None:
            by_window: dict[str, dict[int, int]] = {}
            for path in sorted(files_dir.glob("window-*.parquet")) if files_dir.exists() else []:
                pane = int(path.name.split("-pane")[1].split("-")[0])
                rows = pq.read_table(path).to_pylist()
                assert len(rows) == 1, (path.name, rows)  # one row per window (no group_by)
                assert path.name.startswith(f"window-{_stamp(rows[0]['window_start'])}-{_stamp(rows[0]['window_end'])}-pane")
                by_window.setdefault(_stamp(rows[0]["window_start"]), {})[pane] = rows[0]["n"]
            w1_panes = by_window.get(_stamp(w1[0]), {})
            return by_window if _stamp(w2[0]) in by_window and w1_panes and w1_panes[max(w1_panes)] == 5 else None

        by_window = wait_for("the Parquet files of the panes", parquet_panes, proc, log)
        assert set(by_window) == {_stamp(w0[0]), _stamp(w1[0]), _stamp(w2[0])}
        assert by_window[_stamp(w0[0])][0] == 6 and set(by_window[_stamp(w0[0])].values()) == {6}
        assert by_window[_stamp(w1[0])][0] == 4
        assert by_window[_stamp(w2[0])] == {0: 2}
        written = [f.name for f in files_dir.iterdir() if f.is_file()]
        assert all(name.startswith("window-") and name.endswith(".parquet") for name in written), written
    finally:
        out.close()
        dlq.close()
        code = stop_pipeline(proc, log)
    assert code == 130, log.read_text()[-4000:]  # the CLI's exit code for an interrupted run
    assert "interrupted" in log.read_text()


def _key(window: tuple[dt.datetime, dt.datetime]) -> tuple[str, str]:
    """How a window's bounds look in the JSON messages of the output topic."""
    return tuple(_json_time(w) for w in window)  # type: ignore[return-value]


def _json_time(value: dt.datetime) -> str:
    from beam_etl.batch import to_json_value

    return to_json_value({"t": value})["t"]


def _stamp(value: dt.datetime | str) -> str:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
