"""``window_into``: event-time windows — the vectorized split, TestStream runs in streaming mode
(watermark advances, late rows within and beyond the allowed lateness), hand-computed sessions,
and fixed/sliding aggregates on a bounded input checked against DuckDB."""

from __future__ import annotations

import datetime as dt
import glob
import os
import time

import apache_beam as beam
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from beam_etl.batch import ArrowBatchCoder
from beam_etl.errors import SpecError
from beam_etl.run import run_spec
from beam_etl.spec import load_spec
from beam_etl.transforms.window_into import EventTimeWindows, WindowShape, event_times, parse_duration, split_by_window

S = 1_000_000  # microseconds per second
UTC = dt.timezone.utc


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


# --------------------------------------------------------------------------- durations, shapes


@pytest.mark.parametrize(
    "text, micros",
    [("60s", 60 * S), ("5m", 300 * S), ("1h30m", 5400 * S), ("250ms", 250_000), ("1d", 86400 * S), (2, 2 * S), ("1.5", 1_500_000)],
)
def test_durations(text, micros):
    assert parse_duration(text) == micros


@pytest.mark.parametrize(
    "shape, message",
    [
        ({"type": "fixed"}, "a fixed window needs size"),
        ({"type": "sliding", "size": "60s"}, "a sliding window needs period"),
        ({"type": "session", "gap": "5m", "size": "1m"}, "a session window has no size; it takes gap"),
        ({"type": "fixed", "size": "soon"}, "'soon' is not a duration"),
        ({"type": "fixed", "size": "10us"}, "finer than a millisecond"),
    ],
)
def test_window_shapes_reject_missing_and_stray_fields(shape, message):
    with pytest.raises(ValueError, match=message):
        WindowShape.model_validate(shape)


# --------------------------------------------------------------------------- the vectorized split


def pieces(shape: dict, seconds: list[float], groups: list[str] | None = None):
    columns = {"i": list(range(len(seconds)))}
    if groups is not None:
        columns["g"] = groups
    batch = pa.RecordBatch.from_pydict(columns)
    micros = np.array([int(s * S) for s in seconds], dtype=np.int64)
    result = split_by_window(batch, micros, WindowShape.model_validate(shape), ["g"] if groups is not None else [])
    return sorted((p.start / S, p.end / S, p.group, sorted(p.rows.column("i").to_pylist())) for p in result)


def test_fixed_windows_floor_negative_times_and_honour_offset():
    assert pieces({"type": "fixed", "size": "10s"}, [0, 9.999, 10, -0.5, 25]) == [
        (-10, 0, "", [3]), (0, 10, "", [0, 1]), (10, 20, "", [2]), (20, 30, "", [4])]
    assert pieces({"type": "fixed", "size": "10s", "offset": "3s"}, [2, 3, 12.9]) == [(-7, 3, "", [0]), (3, 13, "", [1, 2])]


def test_sliding_windows_repeat_each_row_in_every_window_that_holds_it():
    assert pieces({"type": "sliding", "size": "10s", "period": "5s"}, [0, 7]) == [
        (-5, 5, "", [0]), (0, 10, "", [0, 1]), (5, 15, "", [1])]
    # size not a multiple of period: only windows that really contain the row
    assert pieces({"type": "sliding", "size": "7s", "period": "5s"}, [6, 8]) == [(0, 7, "", [0]), (5, 12, "", [0, 1])]


def test_session_runs_split_on_the_gap_per_group():
    got = pieces({"type": "session", "gap": "5s"}, [0, 4, 9.5, 3, 20, 7.999], ["a", "a", "a", "b", "a", "b"])
    assert got == [
        (0, 9, '["a"]', [0, 1]),  # 4 -> 9.5 is a 5.5 s silence: a new run
        (3, 12.999, '["b"]', [3, 5]),  # runs end at last + gap, rounded up to the millisecond
        (9.5, 14.5, '["a"]', [2]),
        (20, 25, '["a"]', [4]),
    ]


def test_event_times_read_every_time_type_and_report_bad_rows():
    batch = pa.RecordBatch.from_pydict(
        {
            "ts": pa.array([dt.datetime(2024, 1, 1, tzinfo=UTC), None], pa.timestamp("ms", tz="UTC")),
            "naive": pa.array([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 0, 1)], pa.timestamp("ns")),
            "day": pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2)]),
            "epoch": pa.array([1704067200.5, float("nan")]),
            "iso": pa.array(["2024-01-01T00:00:00+01:00", "not a time"]),
        }
    )
    base = 1704067200 * S
    assert event_times(batch, "ts") == (pytest.approx(np.array([base, 0])), {1: "ts is NULL"})
    assert list(event_times(batch, "naive")[0]) == [base, base + S]  # no zone: read as UTC
    assert list(event_times(batch, "day")[0]) == [base, base + 86400 * S]
    micros, bad = event_times(batch, "epoch")
    assert micros[0] == base + S // 2 and list(bad) == [1]
    micros, bad = event_times(batch, "iso")
    assert micros[0] == base - 3600 * S and "not a time" in bad[1]


# --------------------------------------------------------------------------- streaming runs (TestStream)


class _Collect(beam.DoFn):
    """Write each batch as an Arrow file named by arrival (the streaming DirectRunner is one process)."""

    def __init__(self, directory: str):
        self._directory = directory

    def process(self, batch: pa.RecordBatch, pane=beam.DoFn.PaneInfoParam):
        os.makedirs(self._directory, exist_ok=True)
        name = f"{time.monotonic_ns():020d}-{pane.timing}"
        with pa.OSFile(os.path.join(self._directory, name), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch)


def collected(directory: str) -> list[tuple[str, list[dict]]]:
    """[(pane timing, rows)] in arrival order."""
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "*"))):
        timing = int(os.path.basename(path).split("-")[1])
        out.append(({0: "early", 1: "on_time", 2: "late", 3: "unknown"}[timing], pa.ipc.open_file(path).read_all().to_pylist()))
    return out


def rows(*events):
    return pa.RecordBatch.from_pylist([{"user": u, "t": float(t), "amount": a} for u, t, a in events])


def run_stream(tmp_path, stream: test_stream.TestStream, **options) -> dict[str, list]:
    pipeline_options = PipelineOptions()
    pipeline_options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=pipeline_options) as pipeline:
        result = pipeline | stream.with_output_types(pa.RecordBatch) | EventTimeWindows("w", "t", **options)
        outputs = {"main": result.main, "dlq": result.dlq, **result.side}
        for name, pcoll in outputs.items():
            pcoll | f"collect {name}" >> beam.ParDo(_Collect(str(tmp_path / name)))
    return {name: collected(str(tmp_path / name)) for name in outputs}


def simple(panes, *columns):
    return [(timing, sorted(tuple(row[c] for c in columns) for row in batch)) for timing, batch in panes]


def lateness_stream() -> test_stream.TestStream:
    return (
        test_stream.TestStream(coder=ArrowBatchCoder())
        .add_elements([rows(("a", 1, 1), ("a", 10, 2), ("b", 20, 3))])
        .add_elements([rows(("a", 65, 4))])
        .advance_watermark_to(70)  # [0, 60) fires on time
        .add_elements([rows(("a", 30, 5))])  # late, but within the 30 s lateness: a late pane
        .advance_watermark_to(100)  # [0, 60) closes at 90
        .add_elements([rows(("b", 40, 6))])  # too late
        .advance_watermark_to_infinity()
    )


def test_fixed_windows_fire_on_time_then_late_panes_and_send_too_late_rows_to_the_dlq(tmp_path):
    out = run_stream(tmp_path, lateness_stream(), window={"type": "fixed", "size": "60s"}, allowed_lateness="30s",
                     group_by=["user"], aggregates={"n": "count(*)", "total": "sum(amount)"}, shards=1)
    assert simple(out["main"], "user", "n", "total", "window_start") == [
        ("on_time", [("a", 2, 3, at(0)), ("b", 1, 3, at(0))]),
        ("late", [("a", 3, 8, at(0)), ("b", 1, 3, at(0))]),  # accumulating: the complete window again
        ("on_time", [("a", 1, 4, at(60))]),
    ]
    (_, dlq), = out["dlq"]
    assert [(r["error_type"], r["record"]) for r in dlq] == [("window_into.late", '{"user": "b", "t": 40.0, "amount": 6}')]
    assert dlq[0]["error_message"] == (
        "late: window [1970-01-01T00:00:00+00:00, 1970-01-01T00:01:00+00:00) closed at "
        "1970-01-01T00:01:30+00:00 (allowed_lateness 30s) before the row arrived"
    )


@pytest.mark.parametrize("late", ["side_output", "drop"])
def test_too_late_rows_can_go_to_a_side_output_or_be_dropped(tmp_path, late):
    out = run_stream(tmp_path, lateness_stream(), window={"type": "fixed", "size": "60s"}, allowed_lateness="30s",
                     late=late, group_by=["user"], aggregates={"n": "count(*)"})
    assert out["dlq"] == []
    if late == "side_output":
        assert [r["t"] for _, batch in out["late"] for r in batch] == [40.0]
    else:
        assert "late" not in out


def test_no_lateness_drops_nothing_silently_after_the_watermark(tmp_path):
    """A row behind the watermark for a window that never had rows is caught, not lost."""
    stream = (
        test_stream.TestStream(coder=ArrowBatchCoder())
        .add_elements([rows(("a", 5, 1))])
        .add_elements([rows(("a", 130, 2))])
        .advance_watermark_to(125)
        .add_elements([rows(("a", 70, 3))])  # window [60, 120): never seen, closed at 120
        .advance_watermark_to_infinity()
    )
    out = run_stream(tmp_path, stream, window={"type": "fixed", "size": "60s"}, aggregates={"n": "count(*)"})
    assert simple(out["main"], "n", "window_start") == [("on_time", [(1, at(0))]), ("on_time", [(1, at(120))])]
    assert [r["record"] for _, batch in out["dlq"] for r in batch] == ['{"user": "a", "t": 70.0, "amount": 3}']


def test_sliding_windows_hand_computed(tmp_path):
    stream = (
        test_stream.TestStream(coder=ArrowBatchCoder())
        .add_elements([rows(("a", 10, 1), ("a", 40, 2))])
        .add_elements([rows(("a", 70, 4))])
        .advance_watermark_to_infinity()
    )
    out = run_stream(tmp_path, stream, window={"type": "sliding", "size": "60s", "period": "30s"}, aggregates={"n": "count(*)", "total": "sum(amount)"})
    got = sorted(row for _, batch in simple(out["main"], "window_start", "window_end", "n", "total") for row in batch)
    assert got == [(at(-30), at(30), 1, 1), (at(0), at(60), 2, 3), (at(30), at(90), 2, 6), (at(60), at(120), 1, 4)]


def test_sessions_merge_across_batches_per_user_and_late_sessions_go_to_the_dlq(tmp_path):
    """Hand-computed (DuckDB has no sessions). Users a and b are active at overlapping times:
    their sessions must stay apart even when they share an aggregation shard."""
    stream = (
        test_stream.TestStream(coder=ArrowBatchCoder())
        .add_elements([rows(("a", 0, 1), ("a", 2, 1), ("b", 3, 10))])
        .add_elements([rows(("a", 4, 1), ("b", 7, 10), ("a", 20, 5))])  # a@4 joins a's [0, 7) run -> [0, 9)
        .add_elements([rows(("b", 11.5, 10))])  # joins b's [3, 12) -> [3, 16.5)
        .advance_watermark_to(60)
        .add_elements([rows(("a", 30, 7))])  # closed at 35 + 10 s lateness < 60: late
        .advance_watermark_to_infinity()
    )
    out = run_stream(tmp_path, stream, window={"type": "session", "gap": "5s"}, allowed_lateness="10s",
                     group_by=["user"], aggregates={"events": "count(*)", "total": "sum(amount)"}, shards=1)
    got = sorted(row for _, batch in simple(out["main"], "user", "window_start", "window_end", "events", "total") for row in batch)
    assert got == [
        ("a", at(0), at(9), 3, 3),
        ("a", at(20), at(25), 1, 5),
        ("b", at(3), at(16.5), 3, 30),
    ]
    assert [r["record"] for _, batch in out["dlq"] for r in batch] == ['{"user": "a", "t": 30.0, "amount": 7}']


# --------------------------------------------------------------------------- bounded input vs DuckDB


EVENT = st.tuples(st.sampled_from(["a", "b", "é", ""]), st.integers(-50_000, 200_000), st.one_of(st.none(), st.integers(-1000, 1000)))


# One pipeline per example (seconds each): one example, no shrinking.
@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(events=st.lists(EVENT, min_size=30, max_size=60))
def test_bounded_fixed_and_sliding_aggregates_match_duckdb(tmp_path_factory, events):
    out_dir = tmp_path_factory.mktemp("bounded")
    table = pa.table({"user": [e[0] for e in events], "t": pa.array([e[1] * 1000 for e in events], pa.timestamp("ms", tz="UTC")),
                      "amount": pa.array([e[2] for e in events], pa.int64())})
    shapes = {"fixed": {"type": "fixed", "size": "7s", "offset": "2s"}, "sliding": {"type": "sliding", "size": "10s", "period": "4s"}}
    with beam.Pipeline(runner="DirectRunner") as pipeline:
        batches = pipeline | beam.Create(table.to_batches(max_chunksize=7)).with_output_types(pa.RecordBatch)
        for name, shape in shapes.items():
            result = batches | name >> EventTimeWindows(name, "t", shape, group_by=["user"], shards=3,
                                                        aggregates={"n": "count(*)", "total": "sum(amount)", "top": "max(amount)"})
            result.main | f"collect {name}" >> beam.ParDo(_Collect(str(out_dir / name)))
    con = duckdb.connect()
    con.register("events", table)
    # window starts in ms: fixed = floor((t - offset) / size) * size + offset; sliding = every start
    # k * period with start <= t < start + size
    epoch = "epoch_ms(t)"
    queries = {
        "fixed": f"SELECT user, floor(({epoch} - 2000) / 7000) * 7000 + 2000 AS start, 7000 AS size, * EXCLUDE (user, t) FROM events",
        "sliding": f"""SELECT user, s.start, 10000 AS size, amount FROM events,
                       (SELECT unnest(range(-60000, 200000001, 4000)) AS start) s
                       WHERE s.start <= {epoch} AND {epoch} < s.start + 10000""",
    }
    for name, query in queries.items():
        expected = con.sql(
            f"SELECT user, start::BIGINT AS start, (start + size)::BIGINT AS stop, count(*) AS n, sum(amount) AS total, "
            f"max(amount) AS top FROM ({query}) GROUP BY ALL"
        ).fetchall()
        actual = [
            (r["user"], int(r["window_start"].timestamp() * 1000), int(r["window_end"].timestamp() * 1000), r["n"], r["total"], r["top"])
            for _, batch in collected(str(out_dir / name)) for r in batch
        ]
        key = lambda r: (r[0], r[1])  # noqa: E731
        assert sorted(actual, key=key) == sorted(((u, s, e, n, None if t is None else int(t), m) for u, s, e, n, t, m in expected), key=key), name


def _spec(step: dict, rows_: list[dict]) -> dict:
    return {
        "name": "window_into_spec",
        "sources": {"events": {"type": "inline", "rows": rows_, "schema": {"user": "string", "t": "timestamp[us, tz=UTC]", "amount": "int64"}}},
        "steps": [step],
        "sinks": {"out": {"type": "parquet", "input": step["name"], "path": "out/"}},
        "settings": {"batch_rows": 3},
    }


EVENTS = [{"user": ["a", "b"][i % 2], "t": at(i * 7).isoformat(), "amount": i} for i in range(20)] + [{"user": "a", "t": None, "amount": 99}]


def test_spec_sliding_and_session_steps_run_balanced_with_bad_timestamps_in_the_dlq(tmp_path):
    """Bounded run through the spec: sliding windows count a row once per window it is in;
    sessions (hand-computed): a and b alternate every 7 s, so with a 20 s gap each user has
    one session."""
    sliding = {"name": "per_10s", "type": "window_into", "input": "events", "timestamp": "t",
               "window": {"type": "sliding", "size": "20s", "period": "10s"}, "group_by": ["user"],
               "aggregates": {"n": "count(*)", "total": "sum(amount)"}}
    sessions = {"name": "visits", "type": "window_into", "input": "events", "timestamp": "t",
                "window": {"type": "session", "gap": "20s"}, "group_by": ["user"],
                "aggregates": {"n": "count(*)", "total": "sum(amount)"}}
    spec_dict = _spec(sliding, EVENTS)
    spec_dict["steps"].append(sessions)
    spec_dict["sinks"]["visits"] = {"type": "parquet", "input": "visits", "path": "visits/"}
    spec = load_spec(spec_dict)
    assert spec.schemas["per_10s"].names == ["user", "n", "total", "window_start", "window_end"]
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert report.status == "succeeded", report.error
    steps = {r["name"]: r for r in report.summary["steps"] if r["kind"] == "step"}
    assert steps["per_10s"]["rows_dlq"] == 1 and steps["per_10s"]["rows_in"] == 2 * 20 + 1 and steps["per_10s"]["balanced"]
    assert steps["visits"]["rows_dlq"] == 1 and steps["visits"]["rows_in"] == 21 and steps["visits"]["balanced"], steps["visits"]
    out = pq.read_table(str(tmp_path / "out")).to_pylist()
    assert sum(r["n"] for r in out) == 40 and {r["window_end"] - r["window_start"] for r in out} == {dt.timedelta(seconds=20)}
    visits = sorted((r["user"], r["window_start"], r["window_end"], r["n"], r["total"]) for r in pq.read_table(str(tmp_path / "visits")).to_pylist())
    assert visits == [("a", at(0), at(126 + 20), 10, 90), ("b", at(7), at(133 + 20), 10, 100)]


def test_spec_errors_name_the_path_and_the_fix():
    def problem(**fields):
        step = {"name": "w", "type": "window_into", "input": "events", "timestamp": "t", "window": {"type": "fixed", "size": "1m"},
                "group_by": ["user"], "aggregates": {"n": "count(*)"}, **fields}
        with pytest.raises(SpecError) as caught:
            load_spec(_spec(step, EVENTS))
        return str(caught.value)

    assert "steps[0].timestamp: unknown column 'tt' (did you mean 't'?)" in problem(timestamp="tt")
    assert "steps[0].timestamp: 'user' is string" not in problem(timestamp="tt")
    assert "a session window has no size" in problem(window={"type": "session", "gap": "5m", "size": "1m"})
    assert "session windows need aggregates" in problem(window={"type": "session", "gap": "5m"}, aggregates=None, group_by=[])
    assert "group_by needs aggregates" in problem(aggregates=None)
    assert "'window_start' is the name of a window column" in problem(aggregates={"window_start": "min(t)"})
    assert "steps[0].aggregates.n: unknown column 'amout' (did you mean 'amount'?)" in problem(aggregates={"n": "sum(amout)"})
