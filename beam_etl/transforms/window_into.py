"""``window_into``: event-time windows for streams — fixed, sliding, session — with lateness.

Spec::

    {name: per_minute, type: window_into, input: events, timestamp: event_time,
     window: {type: fixed, size: 60s},            # or {type: sliding, size: 60s, period: 10s}
                                                  # or {type: session, gap: 5m}
     allowed_lateness: 30s, late: dlq,            # late rows: dlq | drop | side_output (<step>.late)
     group_by: [user], aggregates: {clicks: "count(*)", spent: "sum(amount)"}}

With ``aggregates`` the output has one row per (window, group) and the columns
``group_by..., aggregates..., window_start, window_end`` (UTC timestamps); every aggregate
function of the ``aggregate`` step is available (fixed and sliding windows run
:class:`beam_etl.transforms.aggregate.Aggregate` itself). Without ``aggregates`` (fixed and
sliding only) the rows leave windowed, with ``window_start``/``window_end``; a later
``aggregate`` step then aggregates per window. Sessions always aggregate: a session is a
run of one ``group_by`` key's rows with no silence of ``gap`` or more.

How it runs (DESIGN §3) — batches are split by window *before* ``beam.WindowInto``:

1. ``split`` (vectorized, per batch): read the timestamp column (timestamp, date, ISO string or
   epoch seconds; a NULL or unreadable timestamp sends the row to the DLQ), compute every row's
   window with numpy and cut the batch into one sub-batch per window — per (group, run of rows
   closer than ``gap``) for sessions. Sliding windows repeat a row in each window it falls in.
2. ``lateness`` (streaming only; a stateful DoFn with an event-time timer): a clock that
   observes the watermark passing window closing times (``window end + allowed_lateness``).
   A sub-batch whose window has closed is late -> DLQ / side output / dropped, counted.
   Others leave as a ``TimestampedValue`` at their last instant. The clock's pending timer
   holds the watermark behind it, so Beam's GroupByKey never expires a window the clock let
   rows into (no silent drop; see ``_LateGateFn``). On a bounded input nothing is late.
3. ``beam.WindowInto`` with a WindowFn that takes each sub-batch's window from the split,
   ``allowed_lateness``, an on-time pane at the watermark and, with a lateness, a late pane
   for every late arrival within it; panes accumulate, so a late pane repeats the window's
   complete, updated aggregates (write it with an upsert key of ``group_by + window_start``;
   it repeats every group of the window that shares the late row's aggregation shard).
4. the aggregation: ``Aggregate`` for fixed/sliding windows; for sessions the same partial
   aggregates (``AggregatePlan``) keyed by the exact group, so that Beam merges each group's
   session windows by themselves (``Aggregate`` keys by hash shard, where sessions of
   different groups would merge).

Semantics and limits:

- Lateness is decided against the watermark as the step observes it through its timer,
  which steps over every closing time fixed/sliding windows can have, and every second
  (or ``gap``, if shorter) for sessions — a session row is late once the watermark has
  passed its closing time by up to that step; Beam keeps session windows that much longer.
- The Python SDK does not show a DoFn the watermark itself, so the clock keeps stepping
  only up to a window length + allowed lateness past the newest window closing it has seen
  (it would otherwise step forever once the input ends). One case therefore stays Beam's:
  when the watermark has run further ahead of every row seen (an idle source, a
  processing-time watermark) and a row then arrives for a window that closed meanwhile,
  Beam's GroupByKey drops it (counted as merged, not in the DLQ). Likewise rows for windows
  that closed before the step's first row arrived.
- The clock lives under one key: one worker sees every sub-batch (one small state update
  per sub-batch, not per row), and the timer fires once per window closing (per second for
  sessions) while windows are open.
- Counting unit: a row in one window. Sliding windows count a row once per window it
  belongs to; rows with a bad timestamp count once.
- Window bounds have millisecond precision (what runners keep); durations finer than a
  millisecond are rejected. Event times keep microseconds.

Example:
    >>> out = events | EventTimeWindows("per_minute", "event_time", {"type": "fixed", "size": "60s"},
    ...                                 aggregates={"n": "count(*)"}, group_by=["user"])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, ClassVar, Iterator, Literal, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import coders, typehints
from apache_beam.coders.coders import IntervalWindowCoder
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import (
    GlobalWindows,
    IntervalWindow,
    NonMergingWindowFn,
    TimestampedValue,
    WindowFn,
)
from apache_beam.utils.timestamp import Duration, Timestamp
from pydantic import Field, field_validator, model_validator

from beam_etl.batch import DEFAULT_BATCH_ROWS
from beam_etl.dlq import dlq_batch
from beam_etl.errors import SpecIssue
from beam_etl.models import StepModel, StrictModel
from beam_etl.registry import register_step
from beam_etl.spec import did_you_mean
from beam_etl.steps import BuildContext, StepCounters, StepOutputs, isolate_row_errors
from beam_etl.transforms.shard import DEFAULT_SHARDS

__all__ = [
    "EventTimeWindows",
    "WindowIntoSpec",
    "WindowShape",
    "WindowPiece",
    "parse_duration",
    "event_times",
    "split_by_window",
    "WINDOW_COLUMNS",
]

#: Columns added to the output: the window's [start, end) as UTC timestamps.
WINDOW_COLUMNS = ("window_start", "window_end")
_WINDOW_TYPE = pa.timestamp("us", tz="UTC")
_META = b"beam_etl.window"

_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d)", re.IGNORECASE)


def parse_duration(value: str | int | float) -> int:
    """A duration in microseconds from ``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"`` or seconds as a number.

    Example:
        >>> parse_duration("1m30s"), parse_duration(2)
        (90000000, 2000000)
    """
    if isinstance(value, bool):
        raise ValueError(f"'{value}' is not a duration; write e.g. 30s, 5m, 1h")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"duration {value} must be a finite number of seconds >= 0")
        return int(round(value * 1_000_000))
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return int(round(float(text) * 1_000_000))
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text).strip():
        raise ValueError(f"'{value}' is not a duration; write e.g. 30s, 5m, 1h, 1h30m, 250ms, or seconds as a number")
    return int(round(sum(float(number) * _UNITS_US[unit.lower()] for number, unit in parts)))


# --------------------------------------------------------------------------- spec


class WindowShape(StrictModel):
    """``{type: fixed, size}``, ``{type: sliding, size, period}`` or ``{type: session, gap}``; ``offset`` shifts fixed/sliding windows."""

    type: Literal["fixed", "sliding", "session"]
    size: str | int | float | None = None
    period: str | int | float | None = None
    gap: str | int | float | None = None
    offset: str | int | float = 0

    @model_validator(mode="after")
    def _fields_for_type(self) -> "WindowShape":
        need = {"fixed": ("size",), "sliding": ("size", "period"), "session": ("gap",)}[self.type]
        for name in ("size", "period", "gap"):
            value = getattr(self, name)
            if name in need and value is None:
                raise ValueError(f"a {self.type} window needs {name}, e.g. {name}: 60s")
            if name not in need and value is not None:
                raise ValueError(f"a {self.type} window has no {name}; it takes {', '.join(need)}")
            if value is not None and parse_duration(value) <= 0:
                raise ValueError(f"window {name} must be positive, got {value}")
        for name in ("size", "period", "gap", "offset"):
            value = getattr(self, name)
            if value is not None and parse_duration(value) % 1000:
                raise ValueError(f"window {name} {value} is finer than a millisecond (runners keep window bounds in ms)")
        if self.type == "session" and parse_duration(self.offset):
            raise ValueError("a session window has no offset")
        parse_duration(self.offset)
        return self

    def micros(self, name: str) -> int:
        value = getattr(self, name)
        return parse_duration(value) if value is not None else 0


class WindowIntoSpec(StepModel):
    """``{name, type: window_into, input, timestamp, window, allowed_lateness, late, group_by, aggregates}``."""

    reshapes: ClassVar[bool] = True

    type: Literal["window_into"]
    timestamp: str
    window: WindowShape
    allowed_lateness: str | int | float = 0
    late: Literal["dlq", "drop", "side_output"] = "dlq"
    group_by: list[str] = Field(default_factory=list)
    aggregates: dict[str, str] | None = None
    shards: int = Field(default=DEFAULT_SHARDS, gt=0)

    @field_validator("group_by", mode="before")
    @classmethod
    def _listify(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("allowed_lateness")
    @classmethod
    def _duration(cls, value):
        if parse_duration(value) % 1000:
            raise ValueError(f"allowed_lateness {value} is finer than a millisecond (runners keep milliseconds)")
        return value

    @model_validator(mode="after")
    def _groups_need_aggregates(self) -> "WindowIntoSpec":
        if self.aggregates == {}:
            raise ValueError("aggregates: give at least one, e.g. {n: 'count(*)'}, or leave it out")
        if self.window.type == "session" and not self.aggregates:
            raise ValueError("session windows need aggregates (a session is formed per group_by key while aggregating)")
        if self.group_by and not self.aggregates:
            raise ValueError("group_by needs aggregates (without aggregates rows pass through windowed)")
        return self

    def side_outputs(self) -> list[str]:
        return ["late"] if self.late == "side_output" else []

    def check(self, schemas: list[pa.Schema | None], path: str) -> list[SpecIssue]:
        schema = schemas[0] if schemas else None
        issues: list[SpecIssue] = []
        if self.aggregates:
            from beam_etl.transforms.aggregate import aggregate_issues

            issues += aggregate_issues(self.group_by, self.aggregates, None, False, schema, path)
            for name in WINDOW_COLUMNS:
                if name in self.aggregates or name in self.group_by:
                    issues.append(SpecIssue(f"{path}.aggregates", f"'{name}' is the name of a window column", "rename it"))
        if schema is None:
            return issues
        if self.timestamp not in schema.names:
            issues.append(SpecIssue(f"{path}.timestamp", f"unknown column '{self.timestamp}'", did_you_mean(self.timestamp, schema.names)))
        else:
            data_type = schema.field(self.timestamp).type
            if not _timestamp_like(data_type):
                issues.append(SpecIssue(f"{path}.timestamp", f"'{self.timestamp}' is {data_type}, not a time", "use a timestamp, date, ISO string or epoch-seconds column"))
        return issues

    def output_schema(self, schemas: list[pa.Schema | None]) -> pa.Schema | None:
        schema = schemas[0] if schemas else None
        if self.aggregates:
            from beam_etl.transforms.aggregate_functions import AggregatePlan

            out = AggregatePlan(self.group_by, self.aggregates, input_schema=schema).output_schema(schema)
        else:
            out = schema
        if out is None:
            return None
        for name in WINDOW_COLUMNS:
            out = out.append(pa.field(name, _WINDOW_TYPE))
        return out


def _timestamp_like(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_timestamp(data_type) or pa.types.is_date(data_type) or pa.types.is_integer(data_type)
        or pa.types.is_floating(data_type) or pa.types.is_string(data_type) or pa.types.is_large_string(data_type)
    )


# --------------------------------------------------------------------------- vectorized core


def _to_micros(column: pa.Array) -> pa.Array:
    """Epoch microseconds (int64) of a time column; raises on values that are not times."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = column.type
    if pa.types.is_timestamp(t):
        return column.cast(pa.timestamp("us", tz=t.tz), safe=False).cast(pa.int64())
    if pa.types.is_date(t):
        return column.cast(pa.timestamp("us")).cast(pa.int64())
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        seconds = column.cast(pa.float64())
        if not pc.all(pc.fill_null(pc.is_finite(seconds), True)).as_py():
            raise ValueError("timestamp is not a finite number of seconds")
        return pc.round(pc.multiply(seconds, 1_000_000.0)).cast(pa.int64())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            return column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        except pa.ArrowInvalid:
            return column.cast(pa.timestamp("us")).cast(pa.int64())  # no zone: read as UTC
    raise ValueError(f"a {t} column cannot be read as an event time")


def event_times(batch: pa.RecordBatch, column: str) -> tuple[np.ndarray, dict[int, str]]:
    """Epoch microseconds per row, and ``{row: reason}`` for rows without a usable time.

    Example:
        >>> b = pa.RecordBatch.from_pydict({"t": ["2024-01-01T00:00:01Z", None, "soon"]})
        >>> micros, bad = event_times(b, "t")
        >>> int(micros[0]), sorted(bad)
        (1704067201000000, [1, 2])
    """
    if column not in batch.schema.names:
        raise ValueError(f"no timestamp column '{column}'" + (f" ({did_you_mean(column, batch.schema.names)})" if did_you_mean(column, batch.schema.names) else ""))
    values, errors = isolate_row_errors(lambda b: _to_micros(b.column(column)), batch, pa.int64())
    nulls = np.flatnonzero(pc.is_null(values).to_numpy(zero_copy_only=False))
    reasons = {int(row): f"{column} is NULL" for row in nulls}
    reasons.update({row: f"{column}: {message}" for row, message in errors.items()})
    micros = pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return micros, reasons


class WindowPiece:
    """One sub-batch of rows of a single window (and, for sessions, a single group)."""

    __slots__ = ("start", "end", "timestamp", "group", "rows")

    def __init__(self, start: int, end: int, timestamp: int, group: str, rows: pa.RecordBatch):
        self.start, self.end, self.timestamp, self.group, self.rows = start, end, timestamp, group, rows

    def __repr__(self) -> str:
        return f"WindowPiece([{self.start}, {self.end}), {self.rows.num_rows} rows, group={self.group!r})"


def _runs(ids: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(id, row indices) per distinct id, indices in input order."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    bounds = np.flatnonzero(np.diff(sorted_ids)) + 1
    for chunk in np.split(order, bounds):
        if len(chunk):
            yield int(ids[chunk[0]]), chunk


def _group_key(batch: pa.RecordBatch, group_by: Sequence[str], row: int) -> str:
    """A canonical text of one row's group values (SQL equality: -0.0 = 0.0, NaN = NaN)."""
    values = []
    for name in group_by:
        value = batch.column(name)[row].as_py()
        if isinstance(value, float):
            value = "NaN" if value != value else (0.0 if value == 0 else value)
        values.append(value)
    return json.dumps(values, default=str, ensure_ascii=False)


def split_by_window(
    batch: pa.RecordBatch,
    micros: np.ndarray,
    shape: WindowShape,
    group_by: Sequence[str] = (),
) -> list[WindowPiece]:
    """Cut ``batch`` into one sub-batch per window (vectorized), given each row's event time.

    Fixed: ``[start, start + size)`` with ``start = t - (t - offset) mod size``. Sliding: every
    window of ``size`` starting at a multiple of ``period`` (+ offset) that contains ``t``.
    Session: rows of one group closer than ``gap`` to the previous one form a run; the run's
    window is ``[first, last + gap)`` (Beam merges overlapping runs of a group later).

    Example:
        >>> b = pa.RecordBatch.from_pydict({"x": [1, 2, 3]})
        >>> t = np.array([0, 59_000_000, 61_000_000])
        >>> [(p.start, p.rows.num_rows) for p in split_by_window(b, t, WindowShape(type="fixed", size="60s"))]
        [(0, 2), (60000000, 1)]
    """
    n = batch.num_rows
    if n == 0:
        return []
    offset = shape.micros("offset")
    pieces: list[WindowPiece] = []
    if shape.type == "fixed":
        size = shape.micros("size")
        starts = micros - np.mod(micros - offset, size)
        for start, rows in _runs(starts):
            pieces.append(WindowPiece(start, start + size, start + size - 1, "", batch.take(pa.array(rows))))
        return pieces
    if shape.type == "sliding":
        size, period = shape.micros("size"), shape.micros("period")
        copies = -(-size // period)  # ceil: windows a row can be in
        last = micros - np.mod(micros - offset, period)
        row = np.repeat(np.arange(n), copies)
        starts = last[row] - np.tile(np.arange(copies), n) * period
        inside = starts + size > micros[row]
        row, starts = row[inside], starts[inside]
        for start, positions in _runs(starts):
            pieces.append(WindowPiece(start, start + size, start + size - 1, "", batch.take(pa.array(row[positions]))))
        return pieces
    # sessions: sort by (group, time), a new run where the group changes or the gap is reached
    from beam_etl.transforms.window import _starts  # SQL equality of adjacent rows

    gap = shape.micros("gap")
    order_table = {f"g{i}": batch.column(name) for i, name in enumerate(group_by)}
    order_table["__t"] = pa.array(micros)
    keys = pa.table(order_table)
    order = pc.sort_indices(keys, sort_keys=[(name, "ascending", "at_end") for name in keys.column_names]).to_numpy()
    sorted_keys = keys.take(pa.array(order))
    times = micros[order]
    new_group = _starts(sorted_keys, [f"g{i}" for i in range(len(group_by))])
    new_run = new_group.copy()
    new_run[1:] |= np.diff(times) >= gap
    bounds = np.flatnonzero(new_run)
    ends = np.append(bounds[1:], n)
    taken = batch.take(pa.array(order))
    for first, stop in zip(bounds, ends):
        rows = taken.slice(int(first), int(stop - first))
        group = _group_key(taken, group_by, int(first)) if group_by else ""
        # window bounds on whole milliseconds (what runners keep), covering the rows' times
        start = int(times[first]) // 1000 * 1000
        end = -(-(int(times[stop - 1]) + gap) // 1000) * 1000
        pieces.append(WindowPiece(start, end, int(times[stop - 1]), group, rows))
    return pieces


def _annotate(piece: WindowPiece) -> pa.RecordBatch:
    """The piece's rows with its window in the schema metadata (read by the WindowFns)."""
    text = f"{piece.start}|{piece.end}|{piece.timestamp}|{piece.group}".encode()
    metadata = dict(piece.rows.schema.metadata or {})
    metadata[_META] = text
    return piece.rows.replace_schema_metadata(metadata)


def _window_of(batch: pa.RecordBatch) -> tuple[int, int, int, str]:
    start, end, timestamp, group = batch.schema.metadata[_META].decode().split("|", 3)
    return int(start), int(end), int(timestamp), group


def _strip(batch: pa.RecordBatch) -> pa.RecordBatch:
    metadata = {k: v for k, v in (batch.schema.metadata or {}).items() if k != _META}
    return batch.replace_schema_metadata(metadata or None)


def _ts(micros: int) -> Timestamp:
    return Timestamp(micros=micros)


# --------------------------------------------------------------------------- window functions for Beam


class _SplitWindows(NonMergingWindowFn):
    """Fixed/sliding: each sub-batch already knows its one window (from the split)."""

    def assign(self, context):
        start, end, _, _ = _window_of(context.element)
        return [IntervalWindow(_ts(start), _ts(end))]

    def get_window_coder(self):
        return IntervalWindowCoder()

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


class _RunSessions(WindowFn):
    """Sessions from the split's runs: each sub-batch's window is its run ``[first, last + gap)``;
    overlapping windows of one key merge (as ``beam.window.Sessions``). The key is the exact
    group, so sessions of different groups never merge."""

    def assign(self, context):
        start, end, _, _ = _window_of(context.element)
        return [IntervalWindow(_ts(start), _ts(end))]

    def merge(self, merge_context):
        run: list = []
        end = None
        for window in sorted(merge_context.windows, key=lambda w: w.start):
            if run and end > window.start:
                run.append(window)
                end = max(end, window.end)
                continue
            if len(run) > 1:
                merge_context.merge(run, IntervalWindow(run[0].start, end))
            run, end = [window], window.end
        if len(run) > 1:
            merge_context.merge(run, IntervalWindow(run[0].start, end))

    def get_window_coder(self):
        return IntervalWindowCoder()

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


def _keyed_by_group(element, group_by: list[str]) -> tuple[str, pa.RecordBatch]:
    """(exact group key, partial table) — a session partial holds one group."""
    partial = element[1] if isinstance(element, tuple) else element
    return (_group_key(partial, group_by, 0) if group_by else ""), partial


# --------------------------------------------------------------------------- DoFns


class _SplitFn(beam.DoFn):
    """Per batch: event times (bad -> DLQ), then one annotated sub-batch per window, keyed for the gate."""

    def __init__(self, step: str, timestamp: str, shape: WindowShape, group_by: list[str]):
        self._step = step
        self._timestamp = timestamp
        self._shape = shape
        self._group_by = group_by

    def setup(self):
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, batch: pa.RecordBatch):
        if batch.num_rows == 0:
            return
        micros, bad = event_times(batch, self._timestamp)
        if bad:
            rows = sorted(bad)
            failed = np.zeros(batch.num_rows, dtype=bool)
            failed[rows] = True
            self._counters.rows_in.inc(len(rows))
            self._counters.rows_dlq.inc(len(rows))
            yield TaggedOutput("dlq", dlq_batch(batch.filter(pa.array(failed)), step=self._step, error_type="window_into.timestamp",
                                                error_message=[bad[i] for i in rows]))
            batch = batch.filter(pa.array(~failed))
            micros = micros[~failed]
        for piece in split_by_window(batch, micros, self._shape, self._group_by):
            yield 0, _annotate(piece)


class _Grid:
    """The closing times (window end + allowed lateness, whole ms) the lateness clock steps on.

    Fixed and sliding windows close only on a grid (every ``size`` / ``period``), so stepping
    the clock over that grid observes every possible closing time exactly. Session windows
    close at any millisecond; their clock steps every ``step`` and Beam keeps their windows
    ``step`` longer (``extra``), so that a row the clock lets through is never expired in the
    GroupByKey.
    """

    def __init__(self, shape: WindowShape, lateness: int):
        if shape.type == "session":
            self.step = max(1_000, min(shape.micros("gap"), 1_000_000) // 1_000 * 1_000)
            self.phase = 0
            self.extra = self.step
            length = shape.micros("gap")
        else:
            self.step = shape.micros("size" if shape.type == "fixed" else "period")
            self.phase = (shape.micros("offset") + shape.micros("size") + lateness) % self.step
            self.extra = 0
            length = shape.micros("size")
        #: how far past the latest closing time seen the clock keeps stepping: a row whose
        #: window closes within a window length + lateness of the newest one is still judged
        self.horizon = length + lateness

    def floor(self, micros: int) -> int:
        """The grid point at or before ``micros``."""
        return micros - (micros - self.phase) % self.step


class _LateGateFn(beam.DoFn):
    """Late rows out; on-time sub-batches timestamped for WindowInto (see the module docstring).

    The clock (state, one key): ``closed`` — the latest grid closing time the watermark has
    passed (an event-time timer fired for it) — ``next`` — the grid point the timer waits
    for — and ``last`` — the latest closing time of a row let through. A sub-batch whose
    window closes at or before ``closed`` is late. While a let-through row's window is open,
    a timer is pending at ``next - 1 ms``; a pending timer holds this DoFn's output
    watermark, so the GroupByKey downstream never sees the watermark pass ``next`` before
    the clock does: it cannot expire a window whose rows the clock let through.
    """

    CLOCK = userstate.ReadModifyWriteStateSpec("clock", coders.PickleCoder())
    TICK = userstate.TimerSpec("tick", TimeDomain.WATERMARK)

    def __init__(self, step: str, lateness: int, late: str, aggregates: bool, grid: _Grid):
        self._step = step
        self._lateness = lateness
        self._late = late
        self._aggregates = aggregates
        self._grid = grid

    def setup(self):
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, element, clock=beam.DoFn.StateParam(CLOCK), timer=beam.DoFn.TimerParam(TICK)):
        _, batch = element
        start, end, timestamp, _ = _window_of(batch)
        closing = end + self._lateness
        closed, waiting, last = clock.read() or (None, None, None)
        if closed is not None and closing <= closed:
            yield from _late_rows(batch, self._step, self._late, self._counters, start, end, self._lateness)
            return
        last = closing if last is None else max(last, closing)
        grid = self._grid
        if waiting is None:  # (re)start the clock: the grid point after the last one passed
            waiting = grid.floor(closing) if closed is None else closed + grid.step
            timer.set(_ts(waiting - 1_000))
        elif closed is None and grid.floor(closing) < waiting:  # before the first tick: wait for the earliest
            waiting = grid.floor(closing)
            timer.set(_ts(waiting - 1_000))
        clock.write((closed, waiting, last))
        yield _on_time(batch, timestamp, self._aggregates, self._counters)

    @userstate.on_timer(TICK)
    def tick(self, clock=beam.DoFn.StateParam(CLOCK), timer=beam.DoFn.TimerParam(TICK)):
        # The timer waits for ``waiting - 1 ms``: its firing means the watermark reached
        # ``waiting``. (The fire time itself is not read: portable runners keep milliseconds.)
        closed, waiting, last = clock.read() or (None, None, None)
        if waiting is None:
            return
        closed = waiting
        waiting = closed + self._grid.step if last is not None and closed < last + self._grid.horizon else None
        if waiting is not None:
            timer.set(_ts(waiting - 1_000))
        clock.write((closed, waiting, last))


class _StampFn(beam.DoFn):
    """Bounded input: no row is late (the watermark moves only at the end); timestamp and go."""

    def __init__(self, step: str, aggregates: bool):
        self._step = step
        self._aggregates = aggregates

    def setup(self):
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, element):
        _, batch = element
        yield _on_time(batch, _window_of(batch)[2], self._aggregates, self._counters)


def _on_time(batch: pa.RecordBatch, timestamp: int, aggregates: bool, counters: StepCounters) -> TimestampedValue:
    if not aggregates:  # rows leave as they are: count them here (the aggregation counts otherwise)
        counters.rows_in.inc(batch.num_rows)
        counters.rows_merged.inc(batch.num_rows)
        counters.rows_out.inc(batch.num_rows)
    return TimestampedValue(batch, _ts(timestamp))


def _late_rows(batch: pa.RecordBatch, step: str, late: str, counters: StepCounters, start: int, end: int, lateness: int):
    counters.rows_in.inc(batch.num_rows)
    rows = _strip(batch)
    if late == "dlq":
        counters.rows_dlq.inc(batch.num_rows)
        message = (
            f"late: window [{_iso(start)}, {_iso(end)}) closed at {_iso(end + lateness)} "
            f"(allowed_lateness {lateness / 1e6:g}s) before the row arrived"
        )
        yield TaggedOutput("dlq", dlq_batch(rows, step=step, error_type="window_into.late", error_message=message))
        return
    counters.rows_filtered.inc(batch.num_rows)
    if late == "side_output":
        yield TaggedOutput("late", rows)


def _iso(micros: int) -> str:
    return pa.scalar(micros, pa.timestamp("us", tz="UTC")).as_py().isoformat()


class _WindowColumnsFn(beam.DoFn):
    """Append window_start / window_end from the element's window; drop the split's metadata."""

    def process(self, batch: pa.RecordBatch, window=beam.DoFn.WindowParam):
        batch = _strip(batch)
        if batch.num_rows:
            n = batch.num_rows
            for name, value in zip(WINDOW_COLUMNS, (window.start.micros, window.end.micros)):
                column = pa.array(np.full(n, value, dtype=np.int64)).cast(_WINDOW_TYPE)
                index = batch.schema.get_field_index(name)
                field = pa.field(name, _WINDOW_TYPE)
                batch = batch.set_column(index, field, column) if index >= 0 else batch.append_column(field, column)
        yield batch


class EventTimeWindows(beam.PTransform):
    """Event-time windows with lateness handling, optionally aggregated per window and group.

    Args:
        step: the step name (counters and DLQ rows carry it).
        timestamp: the event-time column (timestamp, date, ISO string or epoch seconds).
        window: ``{type: fixed, size}``, ``{type: sliding, size, period}``, ``{type: session, gap}``
            (durations like ``60s``, ``5m``, ``1h``), or a :class:`WindowShape`.
        allowed_lateness: how long after a window's end its late rows are still accepted.
        late: rows later than that: ``dlq`` (default), ``drop``, or ``side_output`` (``side['late']``).
        group_by: group columns of the aggregates (and the session key for sessions).
        aggregates: ``{name: "count(*)" | "sum(x)" | ...}`` as in the ``aggregate`` step; None =
            pass the rows through windowed.
        shards: hash shards of the aggregation.
        batch_rows: maximum rows per output batch.
        input_schema: the input schema when known.

    Returns a :class:`StepOutputs` (``main``, ``dlq``, ``side['late']`` for ``late: side_output``).

    Example:
        >>> out = events | EventTimeWindows("sessions", "ts", {"type": "session", "gap": "5m"},
        ...                                 group_by=["user"], aggregates={"clicks": "count(*)"})  # doctest: +SKIP
    """

    def __init__(
        self,
        step: str,
        timestamp: str,
        window: dict[str, Any] | WindowShape,
        *,
        allowed_lateness: str | int | float = 0,
        late: str = "dlq",
        group_by: Sequence[str] = (),
        aggregates: dict[str, str] | None = None,
        shards: int = DEFAULT_SHARDS,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        input_schema: pa.Schema | None = None,
    ):
        super().__init__()
        shape = window if isinstance(window, WindowShape) else window
        self._spec = WindowIntoSpec.model_validate(
            {"name": step, "type": "window_into", "input": "input", "timestamp": timestamp,
             "window": shape.model_dump() if isinstance(shape, WindowShape) else dict(shape),
             "allowed_lateness": allowed_lateness, "late": late, "group_by": list(group_by),
             "aggregates": aggregates, "shards": shards}
        )
        problems = self._spec.check([input_schema], step)
        if problems:
            raise ValueError("; ".join(str(problem) for problem in problems))
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        self._batch_rows = batch_rows
        self._input_schema = input_schema

    def expand(self, pcoll) -> StepOutputs:
        from beam_etl.transforms.aggregate import Aggregate

        spec = self._spec
        lateness = parse_duration(spec.allowed_lateness)
        split = pcoll | "split" >> beam.ParDo(
            _SplitFn(spec.name, spec.timestamp, spec.window, spec.group_by if spec.window.type == "session" else [])
        ).with_outputs("dlq", main="main")
        split.main.element_type = typehints.KV[int, pa.RecordBatch]
        grid = _Grid(spec.window, lateness)
        streaming = bool(pcoll.pipeline.options.view_as(StandardOptions).streaming)
        if streaming:
            gate = _LateGateFn(spec.name, lateness, spec.late, bool(spec.aggregates), grid)
            # Beam keeps windows grid.extra longer than the clock (sessions): see _Grid
            beam_lateness = lateness + grid.extra
        else:
            gate, beam_lateness = _StampFn(spec.name, bool(spec.aggregates)), lateness
        gated = split.main | "lateness" >> beam.ParDo(gate).with_outputs("dlq", "late", main="main")
        windowfn = _RunSessions() if spec.window.type == "session" else _SplitWindows()
        if beam_lateness:
            # an on-time pane, then one per late arrival, each with the window's complete result
            into = beam.WindowInto(
                windowfn,
                trigger=triggers.AfterWatermark(late=triggers.AfterCount(1)),
                accumulation_mode=triggers.AccumulationMode.ACCUMULATING,
                allowed_lateness=Duration(micros=beam_lateness),
            )
        else:
            into = beam.WindowInto(windowfn)  # the default: one pane when the watermark passes
        windowed = gated.main | "window" >> into.with_output_types(pa.RecordBatch)
        dlqs = [split.dlq, gated.dlq]
        if spec.window.type == "session":
            main, dlq = self._sessions(windowed)
            dlqs.append(dlq)
        elif spec.aggregates:
            result = windowed | "aggregate" >> Aggregate(
                spec.name, spec.aggregates, spec.group_by, shards=spec.shards, batch_rows=self._batch_rows,
                input_schema=self._input_schema,
            )
            main = result.main | "window columns" >> beam.ParDo(_WindowColumnsFn()).with_output_types(pa.RecordBatch)
            dlqs.append(result.dlq)
        else:
            main = windowed | "window columns" >> beam.ParDo(_WindowColumnsFn()).with_output_types(pa.RecordBatch)
        if spec.aggregates and not streaming:
            # A bounded run's aggregates are final and carry their window as columns: hand
            # them on in the global window, as every other batch step's output. (Streams keep
            # their windows, so that later steps go on per window; rows without aggregates keep
            # them too — that is what a later aggregate step needs.)
            main = main | "global" >> beam.WindowInto(GlobalWindows()).with_output_types(pa.RecordBatch)
        # DLQ rows of every step meet in one Flatten: all in the global window
        dlqs = [
            pcoll_ if index < 2 else pcoll_ | f"dlq global {index}" >> beam.WindowInto(GlobalWindows()).with_output_types(pa.RecordBatch)
            for index, pcoll_ in enumerate(dlqs)
        ]
        for pcoll_ in dlqs:
            pcoll_.element_type = pa.RecordBatch
        dlq = dlqs | "dlq" >> beam.Flatten().with_output_types(pa.RecordBatch)
        gated.late.element_type = pa.RecordBatch
        side = {"late": gated.late} if spec.late == "side_output" else {}
        return StepOutputs(main=main, dlq=dlq, side=side)


    def _sessions(self, windowed):
        """Aggregate per (group, session): partials keyed by the exact group, so that Beam merges
        each group's session windows on its own (``Aggregate`` keys by hash shard, where
        sessions of different groups would merge)."""
        from beam_etl.transforms.aggregate import _FinishFn, _MergePartials, _PartialFn
        from beam_etl.transforms.aggregate_functions import AggregatePlan

        spec = self._spec
        plan = AggregatePlan(spec.group_by, spec.aggregates, input_schema=self._input_schema)
        parts = windowed | "partial" >> beam.ParDo(_PartialFn(spec.name, plan, "dlq", 1, [])).with_outputs("dlq", main="main")
        merged = (
            parts.main
            | "key by group" >> beam.Map(_keyed_by_group, spec.group_by).with_output_types(typehints.KV[str, pa.RecordBatch])
            | "merge" >> beam.CombinePerKey(_MergePartials(plan)).with_output_types(typehints.KV[str, pa.RecordBatch])
            | "partials" >> beam.Values().with_output_types(pa.RecordBatch)
        )
        out = merged | "finish" >> beam.ParDo(_FinishFn(spec.name, plan, self._batch_rows)).with_output_types(pa.RecordBatch)
        main = out | "window columns" >> beam.ParDo(_WindowColumnsFn()).with_output_types(pa.RecordBatch)
        parts.dlq.element_type = pa.RecordBatch
        return main, parts.dlq


@register_step("window_into", WindowIntoSpec)
def build_window_into(spec: WindowIntoSpec, inputs: list, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> EventTimeWindows(
        spec.name,
        spec.timestamp,
        spec.window,
        allowed_lateness=spec.allowed_lateness,
        late=spec.late,
        group_by=spec.group_by,
        aggregates=spec.aggregates,
        shards=spec.shards,
        batch_rows=ctx.batch_rows,
        input_schema=ctx.input_schemas[0] if ctx.input_schemas else None,
    )
