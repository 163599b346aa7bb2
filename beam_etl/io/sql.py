"""PostgreSQL and MySQL sources and sinks — pure Python (psycopg 3, PyMySQL), every runner.

Beam's own JDBC IO needs a Java expansion service; these need nothing but the drivers.

Sources (``postgres``, ``mysql``): a ``table`` (quoted as an identifier, never pasted into
SQL) or a ``query`` with bound ``params``; rows stream through a server-side cursor
(PostgreSQL) or an unbuffered cursor (MySQL) in batches of ``batch_rows``, so memory stays
bounded on any table. ``partition: {column: id, partitions: 8}`` splits the read into
ranges of a numeric or timestamp column (bounds from MIN/MAX) that several workers read at
once. ``incremental:`` reads only rows past the stored watermark (see
:mod:`beam_etl.io.incremental`).

Sinks: ``mode: insert | upsert | replace``; upsert by ``key`` columns (``ON CONFLICT`` /
``ON DUPLICATE KEY UPDATE``); inserts into PostgreSQL use ``COPY``; writes are committed
in transactions of ``commit_rows``; ``replace`` loads a staging table and swaps it in only
after the whole run succeeded. Rows the database rejects (constraint, type, length) go to
the DLQ with the database's message while the rest of the batch lands.

Example spec::

    sources:
      orders:
        type: postgres
        url: ${env:ORDERS_DB}
        table: public.orders
        partition: {column: id, partitions: 4}
        incremental: {column: updated_at, key: id}
    sinks:
      warehouse:
        type: mysql
        input: orders
        url: ${env:WAREHOUSE_DB}
        table: orders
        mode: upsert
        key: [id]
        create_table: true
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import Any, Iterator, Literal, Sequence
from urllib.parse import unquote, urlsplit

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from beam_etl.batch import DEFAULT_BATCH_ROWS
from beam_etl.dlq import dlq_batch
from beam_etl.errors import SinkError, SourceError
from beam_etl.io.sql_types import arrow_to_ddl, column_values, mysql_arrow_type, postgres_arrow_type, python_value
from beam_etl.models import SinkModel, SourceModel, StrictModel
from beam_etl.registry import register_sink, register_source
from beam_etl.steps import BuildContext, StepCounters, StepOutputs

__all__ = [
    "SqlSource",
    "SqlSink",
    "ReadFromSql",
    "WriteToSql",
    "Database",
    "redact_url",
]


# --------------------------------------------------------------------------- connections


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for every message and log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class Database:
    """One pooled connection source per (dialect, URL) per worker process.

    PostgreSQL pools with psycopg-pool; MySQL with DBUtils' PooledDB over PyMySQL.
    """

    _pools: dict[tuple[str, str], Any] = {}
    _lock = threading.Lock()

    def __init__(self, dialect: str, url: str, name: str):
        if dialect not in ("postgres", "mysql"):
            raise ValueError(f"unknown dialect {dialect!r}")
        self.dialect = dialect
        self.url = url
        self.name = name

    def _pool(self):
        key = (self.dialect, self.url)
        with Database._lock:
            pool = Database._pools.get(key)
            if pool is None:
                pool = self._open_pool()
                Database._pools[key] = pool
            return pool

    def _open_pool(self):
        try:
            if self.dialect == "postgres":
                import psycopg
                from psycopg_pool import ConnectionPool

                # One direct attempt first: a wrong password or an unreachable host fails now,
                # with the server's own message, instead of after the pool's retry timeout.
                psycopg.connect(_pg_conninfo(self.url), connect_timeout=10).close()
                pool = ConnectionPool(_pg_conninfo(self.url), min_size=1, max_size=4, open=False, timeout=30)
                pool.open(wait=True, timeout=15)
                return pool
            import pymysql
            from dbutils.pooled_db import PooledDB

            pymysql.connect(connect_timeout=10, **_mysql_kwargs(self.url)).close()  # fail fast, clearly
            # failures=: DBUtils by default treats every OperationalError as a dropped
            # connection and re-runs the statement on a new one; MariaDB reports CHECK
            # violations as OperationalError, so the re-run would block on the first
            # attempt's row locks. Only interface errors mean a dead connection.
            return PooledDB(pymysql, mincached=1, maxconnections=4, blocking=True, failures=(pymysql.err.InterfaceError,), **_mysql_kwargs(self.url))
        except Exception as exc:
            raise SourceError(f"{self.name}: cannot connect to {redact_url(self.url)}: {_first_line(exc)}") from None

    def connect(self):
        """A context manager yielding a pooled connection."""
        if self.dialect == "postgres":
            return self._pool().connection()
        return _MySqlConnection(self._pool())

    def quote(self, name: str) -> str:
        """An identifier (``schema.table`` allowed), quoted for this dialect."""
        parts = name.split(".")
        if self.dialect == "postgres":
            return ".".join('"' + part.replace('"', '""') + '"' for part in parts)
        return ".".join("`" + part.replace("`", "``") + "`" for part in parts)

    @classmethod
    def close_all(cls) -> None:
        with cls._lock:
            for pool in cls._pools.values():
                try:
                    pool.close()
                except Exception:
                    pass
            cls._pools.clear()


class _MySqlConnection:
    def __init__(self, pool):
        self._pool = pool

    def __enter__(self):
        self._connection = self._pool.connection()
        return self._connection

    def __exit__(self, exc_type, exc, tb):
        try:
            # Always end the transaction before the connection goes back to the pool: a
            # connection returned mid-transaction keeps its row locks and stalls the next
            # writer until innodb_lock_wait_timeout (after a commit this is a no-op).
            self._connection.rollback()
        finally:
            self._connection.close()  # back to the pool
        return False


def _pg_conninfo(url: str) -> str:
    return url.replace("postgres+psycopg://", "postgresql://", 1).replace("postgres://", "postgresql://", 1)


def _mysql_kwargs(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb", "mysql+pymysql"):
        raise SourceError(f"a MySQL URL starts with mysql://, got {redact_url(url)}")
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": parts.path.lstrip("/") or None,
        "charset": "utf8mb4",
        "autocommit": False,
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- source spec


class PartitionSpec(StrictModel):
    column: str
    partitions: int = Field(default=4, ge=1, le=1024)


class IncrementalSpec(StrictModel):
    """Read only rows past the stored watermark; it advances after every sink committed.

    ``column``: a timestamp or increasing id. ``key``: a unique column that breaks ties, so
    the watermark is the pair (column, key) and rows equal to the watermark's column value
    are neither skipped nor re-read. Without ``key`` the boundary value is re-read (``>=``):
    harmless with an upsert sink, duplicated with a plain insert.
    """

    column: str
    key: str | None = None
    initial: Any = None


class SqlSource(SourceModel):
    type: Literal["postgres", "mysql"]
    url: str
    table: str | None = None
    query: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    columns: list[str] | None = None
    partition: PartitionSpec | None = None
    incremental: IncrementalSpec | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> "SqlSource":
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of table: (a table name) or query: (a SELECT with %(name)s parameters)")
        return self


def _base_select(db: Database, spec: SqlSource) -> str:
    columns = ", ".join(db.quote(c) for c in spec.columns) if spec.columns else "*"
    if spec.table is not None:
        return f"SELECT {columns} FROM {db.quote(spec.table)}"
    return f"SELECT {columns} FROM ({spec.query}) AS beam_etl_q"


# --------------------------------------------------------------------------- reading


def _schema_from_description(dialect: str, description, mysql_fields=None) -> pa.Schema:
    fields = []
    for index, column in enumerate(description):
        if dialect == "postgres":
            data_type = postgres_arrow_type(column.type_code, _pg_typmod(column))
        else:
            name, type_code, _, _, precision, scale, _ = column[:7]
            # The DB-API description hides charset and signedness; PyMySQL's field packets
            # have them: charset 63 means binary (BLOB vs TEXT), flag 32 means UNSIGNED.
            field = mysql_fields[index] if mysql_fields else None
            binary = field is not None and getattr(field, "charsetnr", None) == 63
            unsigned = field is not None and bool(getattr(field, "flags", 0) & 32)
            data_type = mysql_arrow_type(type_code, precision, scale, binary=binary, unsigned=unsigned)
        fields.append(pa.field(column.name if dialect == "postgres" else column[0], data_type))
    return pa.schema(fields)


def _pg_typmod(column) -> int | None:
    precision, scale = getattr(column, "precision", None), getattr(column, "scale", None)
    if precision is None:
        return None
    return ((precision << 16) | (scale or 0)) + 4


def rows_to_arrow(rows: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.RecordBatch:
    """A batch from driver row tuples, column by column with the cursor's types."""
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [column_values(list(values), field.type) for values, field in zip(columns, schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class _ReadRangeFn(beam.DoFn):
    """Stream one range (or the whole query) through a server-side cursor into batches."""

    def __init__(self, name: str, spec: SqlSource, batch_rows: int, watermark: Any, scratch_dir: str | None):
        self._name = name
        self._spec = spec
        self._batch_rows = batch_rows
        self._watermark = watermark
        self._scratch = scratch_dir

    def setup(self) -> None:
        self._db = Database(self._spec.type, self._spec.url, f"source '{self._name}'")
        self._counters = StepCounters("source", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()
        self._candidate = None

    def process(self, part: dict[str, Any]):
        from beam_etl.io.incremental import incremental_clause, watermark_candidate, merge_candidates

        db, spec = self._db, self._spec
        sql = _base_select(db, spec)
        params = dict(spec.params)
        clauses = []
        if spec.incremental is not None and self._watermark is not None:
            clause, extra = incremental_clause(db, spec.incremental, self._watermark)
            clauses.append(clause)
            params.update(extra)
        if part.get("column"):
            column = db.quote(part["column"])
            clauses.append(f"{column} >= %(beam_etl_lo)s")
            clauses.append(f"{column} {'<=' if part['last'] else '<'} %(beam_etl_hi)s")
            params.update(beam_etl_lo=part["lo"], beam_etl_hi=part["hi"])
        if clauses:
            sql = f"SELECT * FROM ({sql}) AS beam_etl_r WHERE " + " AND ".join(clauses)
        try:
            for batch in self._stream(sql, params):
                self._counters.rows_out.inc(batch.num_rows)
                if spec.incremental is not None:
                    self._candidate = merge_candidates(self._candidate, watermark_candidate(batch, spec.incremental))
                yield batch
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"source '{self._name}' ({redact_url(spec.url)}): read failed: {_first_line(exc)}") from exc

    def finish_bundle(self) -> None:
        if self._candidate is not None and self._scratch:
            from beam_etl.io.incremental import save_candidate

            save_candidate(self._scratch, self._name, self._candidate)

    def _stream(self, sql: str, params: dict[str, Any]) -> Iterator[pa.RecordBatch]:
        if self._spec.type == "postgres":
            with self._db.connect() as connection:
                # A named cursor is a server-side cursor: rows arrive itersize at a time.
                with connection.transaction():
                    with connection.cursor(name=f"beam_etl_{uuid.uuid4().hex[:12]}") as cursor:
                        cursor.itersize = self._batch_rows
                        cursor.execute(sql, params)
                        schema = None
                        while True:
                            rows = cursor.fetchmany(self._batch_rows)
                            if schema is None:
                                schema = _schema_from_description("postgres", cursor.description)
                            if not rows:
                                break
                            yield rows_to_arrow(rows, schema)
            return
        import pymysql.cursors

        with self._db.connect() as connection:
            cursor = connection.cursor(pymysql.cursors.SSCursor)  # unbuffered: streams rows
            try:
                cursor.execute(sql, params)
                schema = _schema_from_description("mysql", cursor.description, getattr(getattr(cursor, "_result", None), "fields", None))
                while True:
                    rows = cursor.fetchmany(self._batch_rows)
                    if not rows:
                        break
                    yield rows_to_arrow(rows, schema)
            finally:
                cursor.close()


class _PlanRangesFn(beam.DoFn):
    """Split the read into ranges of the partition column (bounds from MIN/MAX)."""

    def __init__(self, name: str, spec: SqlSource):
        self._name = name
        self._spec = spec

    def process(self, _seed: Any):
        spec = self._spec
        if spec.partition is None or spec.partition.partitions == 1:
            yield {"column": None}
            return
        db = Database(spec.type, spec.url, f"source '{self._name}'")
        column = db.quote(spec.partition.column)
        sql = f"SELECT MIN({column}), MAX({column}) FROM ({_base_select(db, spec)}) AS beam_etl_b"
        with db.connect() as connection:
            cursor = connection.cursor()
            cursor.execute(sql, spec.params or None)
            low, high = cursor.fetchone()
            cursor.close()
            if spec.type == "postgres":
                connection.rollback()
        if low is None:
            yield {"column": None}
            return
        yield from _ranges(spec.partition.column, low, high, spec.partition.partitions)


def _ranges(column: str, low: Any, high: Any, partitions: int) -> Iterator[dict[str, Any]]:
    if isinstance(low, (dt.datetime, dt.date)):
        span = (high - low) / partitions
        bounds = [low + span * i for i in range(partitions)] + [high]
    else:
        step = (high - low) / partitions
        bounds = [low + step * i for i in range(partitions)] + [high]
        if isinstance(low, int):
            bounds = sorted(set(int(b) for b in bounds[:-1]) | {high})
    for index in range(len(bounds) - 1):
        yield {"column": column, "lo": bounds[index], "hi": bounds[index + 1], "last": index == len(bounds) - 2}


class ReadFromSql(beam.PTransform):
    """Read a PostgreSQL/MySQL table or query as RecordBatches.

    Args:
        name: the source name (counters, errors).
        spec: a :class:`SqlSource` or its dict.
        batch_rows: rows per batch.
        watermark: the incremental watermark to read past (None: read all).
        scratch_dir: where watermark candidates are left for the driver.

    Example:
        >>> p | ReadFromSql("orders", {"type": "postgres", "url": URL, "table": "orders",
        ...                            "partition": {"column": "id", "partitions": 4}})  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: SqlSource | dict, batch_rows: int = DEFAULT_BATCH_ROWS, watermark: Any = None, scratch_dir: str | None = None):
        super().__init__()
        self._name = name
        self._spec = spec if isinstance(spec, SqlSource) else SqlSource.model_validate(spec)
        self._batch_rows = self._spec.batch_rows or batch_rows
        self._watermark = watermark
        self._scratch = scratch_dir

    def expand(self, pbegin) -> StepOutputs:
        batches = (
            pbegin
            | "seed" >> beam.Create([None])
            | "plan" >> beam.ParDo(_PlanRangesFn(self._name, self._spec))
            | "spread" >> beam.Reshuffle()
            | "read" >> beam.ParDo(_ReadRangeFn(self._name, self._spec, self._batch_rows, self._watermark, self._scratch)).with_output_types(pa.RecordBatch)
        )
        return StepOutputs(main=batches)


@register_source("postgres", SqlSource)
@register_source("mysql", SqlSource)
def build_sql_source(spec: SqlSource, root, ctx: BuildContext) -> StepOutputs:
    watermark = None
    if spec.incremental is not None:
        from beam_etl.io.incremental import prepare_incremental

        watermark = prepare_incremental(spec, ctx)
    scratch = ctx.lifecycle.scratch_dir if ctx.lifecycle is not None else None
    return root | ctx.label() >> ReadFromSql(ctx.name, spec, ctx.batch_rows, watermark, scratch)


# --------------------------------------------------------------------------- sink


class SqlSink(SinkModel):
    type: Literal["postgres", "mysql"]
    url: str
    table: str
    mode: Literal["insert", "upsert", "replace", "cdc_apply"] = "insert"
    key: list[str] = Field(default_factory=list)
    create_table: bool = False
    commit_rows: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _upsert_needs_key(self) -> "SqlSink":
        if self.mode in ("upsert", "cdc_apply") and not self.key:
            raise ValueError(f"mode: {self.mode} needs key: [columns] (the conflict target)")
        return self


class _WriteSqlFn(beam.DoFn):
    def __init__(self, name: str, spec: SqlSink, table: str):
        self._name = name
        self._spec = spec
        self._table = table  # the target, or the staging table for mode replace

    def setup(self) -> None:
        self._db = Database(self._spec.type, self._spec.url, f"sink '{self._name}'")
        self._counters = StepCounters("sink", self._name)
        self._created = False

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, batch: pa.RecordBatch):
        self._counters.rows_in.inc(batch.num_rows)
        if batch.num_rows == 0:
            return
        if self._spec.create_table and not self._created:
            create_table(self._db, self._table, batch.schema, self._spec.key)
            self._created = True
        failed: list[tuple[int, str]] = []
        for start in range(0, batch.num_rows, self._spec.commit_rows):
            chunk = batch.slice(start, self._spec.commit_rows)
            failed.extend((start + row, message) for row, message in self._write(chunk, 0))
        written = batch.num_rows - len(failed)
        self._counters.rows_out.inc(written)
        if failed:
            self._counters.rows_dlq.inc(len(failed))
            rows = batch.take(pa.array([row for row, _ in failed]))
            yield beam.pvalue.TaggedOutput(
                "dlq",
                dlq_batch(rows, step=self._name, error_type=f"{self._spec.type}.write", error_message=[m for _, m in failed], source=f"{self._spec.table}"),
            )

    def _write(self, chunk: pa.RecordBatch, offset: int) -> list[tuple[int, str]]:
        """Write ``chunk`` in one transaction; on an error, bisect to find the rejected rows."""
        try:
            with self._db.connect() as connection:
                write_rows(self._db, connection, self._table, chunk, self._spec)
                connection.commit()
            return []
        except SourceError:
            raise
        except Exception as exc:
            if not _is_data_error(exc):
                raise SinkError(f"sink '{self._name}' ({redact_url(self._spec.url)}): {_first_line(exc)}") from exc
            if chunk.num_rows == 1:
                return [(offset, _first_line(exc))]
        middle = chunk.num_rows // 2
        return self._write(chunk.slice(0, middle), offset) + self._write(chunk.slice(middle), offset + middle)


def _is_data_error(exc: BaseException) -> bool:
    """A row the database refuses (constraint, type, length) rather than a broken connection."""
    import psycopg
    import pymysql

    if isinstance(exc, (psycopg.errors.IntegrityError, psycopg.errors.DataError)):
        return True
    if isinstance(exc, (pymysql.err.IntegrityError, pymysql.err.DataError)):
        return True
    if isinstance(exc, pymysql.err.OperationalError) and exc.args and exc.args[0] in (1048, 1264, 1265, 1292, 1366, 1406, 3819, 4025):
        return True  # not null, out of range, truncated, incorrect value, too long, check (MySQL 3819, MariaDB 4025)
    return False


def create_table(db: Database, table: str, schema: pa.Schema, key: Sequence[str]) -> None:
    columns = [f"{db.quote(f.name)} {arrow_to_ddl(f.type, db.dialect, key=f.name in key)}" for f in schema]
    if key:
        columns.append(f"PRIMARY KEY ({', '.join(db.quote(k) for k in key)})")
    ddl = f"CREATE TABLE IF NOT EXISTS {db.quote(table)} ({', '.join(columns)})"
    with db.connect() as connection:
        cursor = connection.cursor()
        cursor.execute(ddl)
        cursor.close()
        connection.commit()


#: Columns of a change stream (beam_etl.io.cdc) that are not columns of the target table.
_CDC_COLUMNS = ("op", "schema_name", "table_name", "before", "after", "position", "commit_ts")


def apply_changes(db: Database, connection, table: str, chunk: pa.RecordBatch, spec: SqlSink) -> None:
    """mode cdc_apply: the last change per key wins; inserts/updates upsert, deletes delete.

    The input is a flattened change stream (``flatten: true`` on the CDC source). Order is
    the order of rows within the batch (the source emits changes in log order).
    """
    ops = chunk.column("op").to_pylist()
    data = chunk.select([n for n in chunk.schema.names if n not in _CDC_COLUMNS])
    rows = data.to_pylist()
    last: dict[tuple, tuple[str, dict]] = {}
    for op, row in zip(ops, rows):  # per-row by nature: changes apply in order
        last[tuple(row[k] for k in spec.key)] = (op, row)
    upserts = [row for op, row in last.values() if op != "delete"]
    deletes = [key for key, (op, _) in last.items() if op == "delete"]
    if upserts:
        write_rows(db, connection, table, pa.RecordBatch.from_pylist(upserts, schema=data.schema), spec.model_copy(update={"mode": "upsert"}))
    if deletes:
        cursor = connection.cursor()
        condition = " AND ".join(f"{db.quote(k)} = %s" for k in spec.key)
        cursor.executemany(f"DELETE FROM {db.quote(table)} WHERE {condition}", deletes)
        cursor.close()


def write_rows(db: Database, connection, table: str, chunk: pa.RecordBatch, spec: SqlSink) -> None:
    if spec.mode == "cdc_apply":
        apply_changes(db, connection, table, chunk, spec)
        return
    names = chunk.schema.names
    quoted = [db.quote(n) for n in names]
    # Drivers take Python tuples: rows leave Arrow here, at the edge (DESIGN §3).
    rows = [tuple(python_value(row[n]) for n in names) for row in chunk.to_pylist()]
    cursor = connection.cursor()
    try:
        if db.dialect == "postgres" and spec.mode in ("insert", "replace"):
            with cursor.copy(f"COPY {db.quote(table)} ({', '.join(quoted)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        placeholders = ", ".join(["%s"] * len(names))
        sql = f"INSERT INTO {db.quote(table)} ({', '.join(quoted)}) VALUES ({placeholders})"
        updates = [n for n in names if n not in spec.key]
        if spec.mode == "upsert":
            if db.dialect == "postgres":
                target = ", ".join(db.quote(k) for k in spec.key)
                action = "DO UPDATE SET " + ", ".join(f"{db.quote(n)} = EXCLUDED.{db.quote(n)}" for n in updates) if updates else "DO NOTHING"
                sql += f" ON CONFLICT ({target}) {action}"
            else:
                sets = updates or spec.key[:1]
                sql += " ON DUPLICATE KEY UPDATE " + ", ".join(f"{db.quote(n)} = VALUES({db.quote(n)})" for n in sets)
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def _staging_name(table: str, job_id: str) -> str:
    return f"{table}__beam_etl_{job_id[:12]}"


def _swap_in_staging(db: Database, table: str, staging: str) -> None:
    """mode replace: the target's rows become the staging table's, in one transaction."""
    with db.connect() as connection:
        cursor = connection.cursor()
        like = f"(LIKE {db.quote(staging)} INCLUDING ALL)" if db.dialect == "postgres" else f"LIKE {db.quote(staging)}"
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {db.quote(table)} {like}")
        cursor.execute(f"DELETE FROM {db.quote(table)}")
        cursor.execute(f"INSERT INTO {db.quote(table)} SELECT * FROM {db.quote(staging)}")
        cursor.execute(f"DROP TABLE {db.quote(staging)}")
        cursor.close()
        connection.commit()


def _table_exists(cursor, db: Database, table: str) -> bool:
    if db.dialect == "postgres":
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (db.quote(table),))
    else:
        cursor.execute("SELECT COUNT(*) > 0 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s", (table,))
    return bool(cursor.fetchone()[0])


def _drop_staging(db: Database, staging: str) -> None:
    with db.connect() as connection:
        cursor = connection.cursor()
        cursor.execute(f"DROP TABLE IF EXISTS {db.quote(staging)}")
        cursor.close()
        connection.commit()


def _create_staging(db: Database, table: str, staging: str, may_be_missing: bool) -> None:
    """A staging table shaped like the target (created by the first batch if the target is new)."""
    with db.connect() as connection:
        cursor = connection.cursor()
        if may_be_missing and not _table_exists(cursor, db, table):
            cursor.close()
            return
        if db.dialect == "postgres":
            cursor.execute(f"CREATE TABLE {db.quote(staging)} (LIKE {db.quote(table)} INCLUDING ALL)")
        else:
            cursor.execute(f"CREATE TABLE {db.quote(staging)} LIKE {db.quote(table)}")
        cursor.close()
        connection.commit()


class WriteToSql(beam.PTransform):
    """Write batches to a PostgreSQL/MySQL table; rejected rows on the ``dlq`` output.

    Example:
        >>> batches | WriteToSql("warehouse", {"type": "postgres", "input": "x", "url": URL,
        ...                                    "table": "orders", "mode": "upsert", "key": ["id"]})  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: SqlSink | dict, table: str | None = None):
        super().__init__()
        self._name = name
        self._spec = spec if isinstance(spec, SqlSink) else SqlSink.model_validate(spec)
        self._table = table or self._spec.table

    def expand(self, pcoll) -> StepOutputs:
        results = pcoll | "write" >> beam.ParDo(_WriteSqlFn(self._name, self._spec, self._table)).with_outputs("dlq", main="main")
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


@register_sink("postgres", SqlSink)
@register_sink("mysql", SqlSink)
def build_sql_sink(spec: SqlSink, pcoll, ctx: BuildContext) -> StepOutputs:
    table = spec.table
    if spec.mode == "replace":
        db = Database(spec.type, spec.url, f"sink '{ctx.name}'")
        staging = _staging_name(spec.table, ctx.job_id)
        _create_staging(db, spec.table, staging, spec.create_table)
        table = staging
        if ctx.lifecycle is not None:
            ctx.lifecycle.on_success(lambda: _swap_in_staging(db, spec.table, staging))
            ctx.lifecycle.on_failure(lambda: _drop_staging(db, staging))
    return pcoll | ctx.label() >> WriteToSql(ctx.name, spec, table)
