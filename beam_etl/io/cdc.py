"""Change data capture: ``postgres_cdc`` (logical replication slot + wal2json) and
``mysql_cdc`` (the ROW-format binlog via mysql-replication).

Each change becomes one row: ``op`` (insert/update/delete), ``schema_name``, ``table_name``,
``before`` and ``after`` (the row images as JSON text), ``position`` (the LSN, or
``binlog-file:pos``) and ``commit_ts``. With ``flatten: true`` the columns of the after
image (the before image for deletes) become top-level columns too.

Acknowledgement after the sinks: PostgreSQL changes are *peeked* from the slot
(``pg_logical_slot_peek_changes``) and the slot is advanced (``pg_replication_slot_advance``)
only when the run succeeded, so a failed run sees the same changes again. The MySQL binlog
position is kept in the state store and moves on only after success.

Bounded mode (default): read the changes up to "now" (the current WAL LSN / binlog position
at the start) and stop — for batch pipelines and tests; each run picks up where the last
successful one stopped.

Streaming mode (``streaming: true``; run with ``--streaming``): a
``PeriodicImpulse`` ticks every ``poll_seconds`` and each tick emits the transactions
committed since the last one. The slot (PostgreSQL) or the stored binlog position (MySQL) is
advanced when the runner finalizes the bundle
(Beam's bundle finalization) or, on runners that do not finalize bundles (Prism 2.77), at
the start of the next tick — in both cases after the runner has committed the previous
tick's output. At-least-once: after a crash, the changes since the last advance are read
again. ``max_seconds`` stops a streaming read (tests, demos).

Example spec::

    sources:
      changes:
        type: postgres_cdc
        url: ${env:ORDERS_DB}
        slot: beam_etl_orders
        tables: [public.orders]
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Iterator, Literal

import apache_beam as beam
import pyarrow as pa
from pydantic import Field

from beam_etl.batch import rows_to_batch
from beam_etl.errors import SourceError
from beam_etl.io.sql import Database, _first_line, _mysql_kwargs, redact_url
from beam_etl.models import SourceModel
from beam_etl.registry import register_source
from beam_etl.steps import BuildContext, StepCounters, StepOutputs

__all__ = ["PostgresCdcSource", "MysqlCdcSource", "ReadPostgresChanges", "ReadMysqlChanges", "CHANGE_SCHEMA"]

CHANGE_SCHEMA = pa.schema(
    [
        ("op", pa.string()),
        ("schema_name", pa.string()),
        ("table_name", pa.string()),
        ("before", pa.string()),
        ("after", pa.string()),
        ("position", pa.string()),
        ("commit_ts", pa.timestamp("us", tz="UTC")),
    ]
)

_OPS = {"I": "insert", "U": "update", "D": "delete"}


class _CdcModel(SourceModel):
    url: str
    tables: list[str] | None = Field(default=None, description="schema.table names to keep (default: all)")
    flatten: bool = False
    max_changes: int | None = Field(default=None, gt=0)
    streaming: bool = Field(default=False, description="follow the log (run with --streaming)")
    poll_seconds: float = Field(default=1.0, gt=0)
    max_seconds: float | None = Field(default=None, gt=0, description="streaming: stop after this long")


class PostgresCdcSource(_CdcModel):
    type: Literal["postgres_cdc"]
    slot: str = Field(pattern=r"^[a-z0-9_]+$")
    create_slot: bool = True


class MysqlCdcSource(_CdcModel):
    type: Literal["mysql_cdc"]
    server_id: int = Field(default=4242, ge=1)


def _change_batch(changes: list[dict[str, Any]], flatten: bool) -> pa.RecordBatch:
    batch = rows_to_batch(changes, CHANGE_SCHEMA)
    if not flatten or not changes:
        return batch
    images = [json.loads(c["after"] or c["before"] or "{}") for c in changes]
    flat = rows_to_batch(images)
    for name, column in zip(flat.schema.names, flat.columns):
        if name not in batch.schema.names:
            batch = batch.append_column(name, column)
    return batch


# --------------------------------------------------------------------------- PostgreSQL


class _ticks(beam.PTransform):
    """One element for a bounded read; a PeriodicImpulse every ``poll_seconds`` when streaming."""

    def __init__(self, spec: _CdcModel):
        super().__init__()
        self._spec = spec

    def expand(self, pbegin):
        if not self._spec.streaming:
            return pbegin | beam.Create([None])
        import time

        from apache_beam.transforms.periodicsequence import PeriodicImpulse

        start = time.time()
        stop = start + self._spec.max_seconds if self._spec.max_seconds else None
        kwargs = {"stop_timestamp": stop} if stop else {}
        return pbegin | PeriodicImpulse(start_timestamp=start, fire_interval=self._spec.poll_seconds, apply_windowing=False, **kwargs)


def _wal2json_changes(data: str, lsn: str, commit_ts: dt.datetime | None) -> dict[str, Any] | None:
    """One wal2json (format-version 2) record -> a change row (None for BEGIN/COMMIT)."""
    record = json.loads(data)
    op = _OPS.get(record.get("action"))
    if op is None:
        return None
    after = {c["name"]: c.get("value") for c in record.get("columns", [])} or None
    before = {c["name"]: c.get("value") for c in record.get("identity", [])} or None
    return {
        "op": op,
        "schema_name": record.get("schema"),
        "table_name": record.get("table"),
        "before": json.dumps(before) if before is not None else None,
        "after": json.dumps(after) if after is not None and op != "delete" else None,
        "position": lsn,
        "commit_ts": commit_ts,
    }


def _lsn(text: str) -> int:
    """A PostgreSQL LSN ``"16/B374D848"`` as an integer, for comparisons."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def peek_changes(db: Database, spec: PostgresCdcSource, upto_lsn: str | None, after_lsn: int = -1) -> Iterator[tuple[str, list[dict]]]:
    """(commit LSN, changes) per committed transaction in the slot, up to ``upto_lsn``.

    Peeking consumes nothing: the slot moves only when :func:`advance_slot` is called.
    Transactions whose commit LSN is <= ``after_lsn`` (already emitted) are skipped.
    """
    options = ["format-version", "2", "include-timestamp", "1", "include-transaction", "1"]
    if spec.tables:
        options += ["add-tables", ",".join(spec.tables)]
    placeholders = ", ".join(["%s"] * len(options))
    sql = f"SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, %s::pg_lsn, %s, {placeholders})"
    transaction: list[dict] = []
    with db.connect() as connection:
        cursor = connection.cursor()
        cursor.execute(sql, (spec.slot, upto_lsn, spec.max_changes, *options))
        for lsn, data in cursor:
            record = json.loads(data)
            action = record.get("action")
            if action == "B":
                transaction = []
            elif action == "C":
                commit_ts = _parse_ts(record.get("timestamp"))
                for change in transaction:  # the commit time is known at COMMIT
                    change["commit_ts"] = commit_ts
                if _lsn(lsn) > after_lsn:
                    yield lsn, transaction
                transaction = []
            else:
                change = _wal2json_changes(data, lsn, None)
                if change is not None:
                    transaction.append(change)
        connection.rollback()
    if transaction:  # only without include-transaction records; keep them, never drop
        yield upto_lsn or "0/0", transaction


def advance_slot(db: Database, slot: str, lsn: str) -> None:
    with db.connect() as connection:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn) FROM pg_replication_slots "
            "WHERE slot_name = %s AND confirmed_flush_lsn < %s::pg_lsn",
            (slot, lsn, slot, lsn),
        )  # never backwards: advancing to an older LSN is an error
        cursor.close()
        connection.commit()


_STREAM_POSITIONS: dict[str, dict[str, Any]] = {}


class _ReadPostgresChangesFn(beam.DoFn):
    """Bounded: one call reads the slot up to ``upto_lsn``. Streaming: each tick reads what
    committed since the last tick; the slot is advanced once the runner has committed the
    bundle (bundle finalization) or, on runners without it, at the start of the next tick."""

    def __init__(self, name: str, spec: PostgresCdcSource, batch_rows: int, upto_lsn: str | None):
        self._name, self._spec, self._batch_rows, self._upto = name, spec, batch_rows, upto_lsn

    def setup(self) -> None:
        self._counters = StepCounters("source", self._name)
        self._db = Database("postgres", self._spec.url, f"source '{self._name}'")

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, _tick: Any, finalizer=beam.DoFn.BundleFinalizerParam):
        streaming = self._upto is None
        # Runners may use a new DoFn instance for every tick: the stream's position lives in
        # the worker process, keyed by slot (one reader per slot: PeriodicImpulse ticks in order).
        position = _STREAM_POSITIONS.setdefault(self._spec.slot, {"emitted": -1, "ack": None})
        if streaming and position["ack"] is not None:
            advance_slot(self._db, self._spec.slot, position["ack"])  # the previous tick's bundle is committed
            position["ack"] = None
        pending: list[dict] = []
        last_commit = None
        for commit_lsn, changes in peek_changes(self._db, self._spec, self._upto, position["emitted"] if streaming else -1):
            pending.extend(changes)
            last_commit = commit_lsn
            if len(pending) >= self._batch_rows:
                yield self._emit(pending)
                pending = []
        if pending:
            yield self._emit(pending)
        if streaming and last_commit is not None:
            position["emitted"] = _lsn(last_commit)
            position["ack"] = last_commit
            db, slot = self._db, self._spec.slot
            finalizer.register(lambda: advance_slot(db, slot, last_commit))

    def _emit(self, changes: list[dict]) -> pa.RecordBatch:
        batch = _change_batch(changes, self._spec.flatten)
        self._counters.rows_out.inc(batch.num_rows)
        return batch


def _parse_ts(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    text = value.replace(" ", "T")
    if text[-3] in "+-" and text[-3:].lstrip("+-").isdigit():
        text += ":00"  # "+00" -> "+00:00"
    return dt.datetime.fromisoformat(text)


def _postgres_prepare(spec: PostgresCdcSource, ctx: BuildContext, name: str) -> str:
    """Driver side: ensure the slot, fix the LSN to read up to, advance after success."""
    db = Database("postgres", spec.url, f"source '{name}'")
    try:
        with db.connect() as connection:
            cursor = connection.cursor()
            cursor.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (spec.slot,))
            if cursor.fetchone() is None:
                if not spec.create_slot:
                    raise SourceError(f"source '{name}': replication slot '{spec.slot}' does not exist (set create_slot: true)")
                cursor.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (spec.slot,))
            cursor.execute("SELECT pg_current_wal_lsn()::text")
            upto = cursor.fetchone()[0]
            cursor.close()
            connection.commit()
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"source '{name}' ({redact_url(spec.url)}): {_first_line(exc)}") from None

    if ctx.lifecycle is not None and not spec.streaming:
        # Advance only to what this run read: changes after `upto` stay for the next run.
        ctx.lifecycle.on_success(lambda: advance_slot(db, spec.slot, upto))
    return upto


class ReadPostgresChanges(beam.PTransform):
    """Changes from a PostgreSQL logical replication slot (wal2json), bounded at ``upto_lsn``.

    Example:
        >>> p | ReadPostgresChanges("changes", PostgresCdcSource(type="postgres_cdc", url=URL, slot="s"), upto_lsn="0/16B3748")  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: PostgresCdcSource, upto_lsn: str, batch_rows: int = 10_000):
        super().__init__()
        self._name, self._spec, self._upto, self._batch_rows = name, spec, upto_lsn, spec.batch_rows or batch_rows

    def expand(self, pbegin) -> StepOutputs:
        upto = None if self._spec.streaming else self._upto
        batches = (
            pbegin
            | "ticks" >> _ticks(self._spec)
            | "changes" >> beam.ParDo(_ReadPostgresChangesFn(self._name, self._spec, self._batch_rows, upto)).with_output_types(pa.RecordBatch)
        )
        return StepOutputs(main=batches)


@register_source("postgres_cdc", PostgresCdcSource)
def build_postgres_cdc(spec: PostgresCdcSource, root, ctx: BuildContext) -> StepOutputs:
    upto = _postgres_prepare(spec, ctx, ctx.name)
    return root | ctx.label() >> ReadPostgresChanges(ctx.name, spec, upto, ctx.batch_rows)


# --------------------------------------------------------------------------- MySQL


def _master_position(db: Database, name: str, url: str) -> dict:
    try:
        with db.connect() as connection:
            cursor = connection.cursor()
            cursor.execute("SHOW MASTER STATUS")
            row = cursor.fetchone()
            cursor.close()
    except Exception as exc:
        raise SourceError(f"source '{name}' ({redact_url(url)}): {_first_line(exc)}") from None
    if row is None:
        raise SourceError(f"source '{name}': the server has no binlog; enable log_bin and binlog_format=ROW")
    return {"file": row[0], "pos": int(row[1])}


def _store_position(state_url: str | None, pipeline: str, source: str, position: dict) -> None:
    from beam_etl.state import StateStore

    store = StateStore(state_url)
    try:
        store.set_watermark(pipeline, source, position)
    finally:
        store.close()


class _ReadMysqlChangesFn(beam.DoFn):
    """Bounded: read from ``start`` to ``end``. Streaming (``end`` None): each tick reads from
    where the last tick stopped to the current binlog end; the position is stored in the state
    store on bundle finalization or at the next tick (after the runner committed the output)."""

    def __init__(self, name: str, spec: MysqlCdcSource, batch_rows: int, start: dict | None, end: dict | None, state: tuple[str | None, str] | None = None):
        self._name, self._spec, self._batch_rows = name, spec, batch_rows
        self._start, self._end, self._state = start, end, state

    def setup(self) -> None:
        self._counters = StepCounters("source", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, _tick: Any, finalizer=beam.DoFn.BundleFinalizerParam):
        if self._end is not None:
            yield from self._read(self._start, self._end)
            return
        state_url, pipeline = self._state
        key = f"mysql:{pipeline}:{self._name}"
        position = _STREAM_POSITIONS.setdefault(key, {"next": self._start, "ack": None})
        if position["ack"] is not None:
            _store_position(state_url, pipeline, self._name, position["ack"])
            position["ack"] = None
        end = _master_position(Database("mysql", self._spec.url, f"source '{self._name}'"), self._name, self._spec.url)
        if position["next"] is not None and (position["next"]["file"], position["next"]["pos"]) >= (end["file"], end["pos"]):
            return
        yield from self._read(position["next"], end)
        position["next"] = position["ack"] = end
        finalizer.register(lambda: _store_position(state_url, pipeline, self._name, end))

    def _read(self, start: dict | None, end: dict):
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

        spec = self._spec
        kwargs = _mysql_kwargs(spec.url)
        settings = {k: kwargs[k] for k in ("host", "port", "user", "password")}
        start = start or {}
        stream = BinLogStreamReader(
            connection_settings=settings,
            server_id=spec.server_id,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
            blocking=False,
            resume_stream=bool(start),
            log_file=start.get("file"),
            log_pos=start.get("pos"),
            only_schemas=sorted({t.split(".")[0] for t in spec.tables}) if spec.tables else None,
            only_tables=sorted({t.split(".")[-1] for t in spec.tables}) if spec.tables else None,
        )
        end_key = (end["file"], end["pos"])
        pending: list[dict] = []
        try:
            for event in stream:
                file, pos = stream.log_file, stream.log_pos
                if (file, pos) > end_key:
                    break
                ts = dt.datetime.fromtimestamp(event.timestamp, tz=dt.timezone.utc)
                for row in event.rows:
                    if isinstance(event, WriteRowsEvent):
                        op, before, after = "insert", None, row["values"]
                    elif isinstance(event, UpdateRowsEvent):
                        op, before, after = "update", row["before_values"], row["after_values"]
                    else:
                        op, before, after = "delete", row["values"], None
                    pending.append(
                        {
                            "op": op,
                            "schema_name": event.schema,
                            "table_name": event.table,
                            "before": json.dumps(before, default=str) if before is not None else None,
                            "after": json.dumps(after, default=str) if after is not None else None,
                            "position": f"{file}:{pos}",
                            "commit_ts": ts,
                        }
                    )
                if len(pending) >= self._batch_rows:
                    yield self._emit(pending)
                    pending = []
        except Exception as exc:
            raise SourceError(f"source '{self._name}' ({redact_url(spec.url)}): binlog read failed: {_first_line(exc)}") from exc
        finally:
            stream.close()
        if pending:
            yield self._emit(pending)

    def _emit(self, changes: list[dict]) -> pa.RecordBatch:
        batch = _change_batch(changes, self._spec.flatten)
        self._counters.rows_out.inc(batch.num_rows)
        return batch


def _mysql_prepare(spec: MysqlCdcSource, ctx: BuildContext, name: str) -> tuple[dict | None, dict]:
    """Driver side: the stored start position, the current end, and the hook to advance."""
    from beam_etl.state import StateStore

    end = _master_position(Database("mysql", spec.url, f"source '{name}'"), name, spec.url)
    store = StateStore(ctx.state_url)
    try:
        start = store.get_watermark(ctx.pipeline_name, name)
    finally:
        store.close()
    if ctx.lifecycle is not None and not spec.streaming:
        ctx.lifecycle.on_success(lambda: _store_position(ctx.state_url, ctx.pipeline_name, name, end))
    return start, end


class ReadMysqlChanges(beam.PTransform):
    """Row changes from the MySQL/MariaDB binlog between two positions.

    Example:
        >>> p | ReadMysqlChanges("changes", MysqlCdcSource(type="mysql_cdc", url=URL), start=None,
        ...                      end={"file": "mysql-bin.000003", "pos": 1234})  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: MysqlCdcSource, start: dict | None, end: dict, batch_rows: int = 10_000, state: tuple[str | None, str] | None = None):
        super().__init__()
        self._name, self._spec, self._start, self._end = name, spec, start, end
        self._batch_rows = spec.batch_rows or batch_rows
        self._state = state or (None, name)

    def expand(self, pbegin) -> StepOutputs:
        end = None if self._spec.streaming else self._end
        batches = (
            pbegin
            | "ticks" >> _ticks(self._spec)
            | "changes" >> beam.ParDo(_ReadMysqlChangesFn(self._name, self._spec, self._batch_rows, self._start, end, self._state)).with_output_types(pa.RecordBatch)
        )
        return StepOutputs(main=batches)


@register_source("mysql_cdc", MysqlCdcSource)
def build_mysql_cdc(spec: MysqlCdcSource, root, ctx: BuildContext) -> StepOutputs:
    start, end = _mysql_prepare(spec, ctx, ctx.name)
    return root | ctx.label() >> ReadMysqlChanges(ctx.name, spec, start, end, ctx.batch_rows, (ctx.state_url, ctx.pipeline_name))
