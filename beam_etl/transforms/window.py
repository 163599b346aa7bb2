"""``window``: SQL window functions over partitions — ranks, lag/lead, running and moving sums.

Spec::

    {name: ranked, type: window, input: kept, partition_by: [country], order_by: ["total DESC"],
     functions: {rnk: "rank()", prev: "lag(total, 1)", running: "cumsum(total)", ma3: "moving_avg(total, 3)"}}

Functions (a whitelist; each is a SQL-ish call parsed with sqlglot, never evaluated):

==========================  ========================================================  =========
call                        value (per row, within its partition, in window order)    type
==========================  ========================================================  =========
``row_number()``            1, 2, 3, ... (ties broken by the tiebreak below)           int64
``rank()``                  1 + rows ordered strictly before (ties share, then gap)    int64
``dense_rank()``            1 + distinct order values before (no gaps)                 int64
``percent_rank()``          (rank - 1) / (rows - 1); 0 for a one-row partition         float64
``cume_dist()``             rows up to the last tie of this row / rows                 float64
``ntile(n)``                bucket 1..n, earlier buckets one row larger (SQL)          int64
``lag(col[, k[, d]])``      ``col`` k rows before (default k=1), else ``d`` or NULL    col type
``lead(col[, k[, d]])``     ``col`` k rows after, else ``d`` or NULL                   col type
``cumsum(col)``             sum of non-null ``col`` from the first row to this one     int64 / float64
``cumcount([col])``         rows (or non-null ``col`` values) so far                   int64
``moving_sum(col, n)``      sum of non-null ``col`` over this row and n-1 before       int64 / float64
``moving_avg(col, n)``      average of non-null ``col`` over this row and n-1 before   float64
``first_value(col)``        ``col`` of the partition's first row                       col type
``last_value(col)``         ``col`` of the partition's last row                        col type
``nth_value(col, n)``       ``col`` of the partition's n-th row, else NULL             col type
==========================  ========================================================  =========

Semantics are SQL's (checked against DuckDB): sums and averages skip NULLs and are NULL when
every value is NULL; a NaN makes them NaN; an integer sum that leaves int64 sends the row to
the DLQ (DuckDB would widen to HUGEINT). ``cumsum``, ``cumcount`` and ``moving_*`` use a
``ROWS`` frame (``ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW``, ``... n-1 PRECEDING ...``);
``first_value``, ``last_value`` and ``nth_value`` look at the whole partition (``ROWS BETWEEN
UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING``), not SQL's default frame that ends at the
current row's last tie.

Ordering: ``order_by`` items are ``column [ASC|DESC] [NULLS FIRST|NULLS LAST]``; NULLs sort
last unless stated (as in DuckDB), NaN sorts above every number, ``-0.0`` equals ``0.0``.
**Tiebreak**: rows equal on ``order_by`` are ordered by all the other columns in schema order,
ascending, NULLs last (nested columns are skipped), so ``row_number``, ``lag``, ``cumsum`` etc.
give the same answer on every run; only rows equal in every column remain tied, and those
are interchangeable. ``rank``-like functions treat rows equal on ``order_by`` as ties.

How it runs (DESIGN §3): each batch is split into ``shards`` by a stable hash of the
``partition_by`` columns, a ``GroupByKey`` brings each partition's rows to one worker, and
there the rows are sorted by (partition keys, order keys, tiebreak) with pyarrow and every
function is computed with numpy over partition boundaries — no per-row Python. Memory: a
shard holds all rows of its partitions, and one partition is never split. Without
``partition_by`` the whole input is one partition and runs on **one worker**.

Example:
    >>> out = batches | WindowFunctions("ranked", {"rnk": "rank()"}, partition_by=["country"],
    ...                                 order_by=["total DESC"])  # doctest: +SKIP
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam import typehints
from apache_beam.pvalue import TaggedOutput
from pydantic import Field, field_validator

from beam_etl.batch import DEFAULT_BATCH_ROWS, concat_batches, split_batch
from beam_etl.dlq import dlq_batch
from beam_etl.errors import SpecIssue
from beam_etl.models import StepModel
from beam_etl.registry import register_step
from beam_etl.spec import did_you_mean
from beam_etl.steps import BuildContext, StepCounters, StepOutputs
from beam_etl.transforms.join import shard_by_keys
from beam_etl.transforms.shard import DEFAULT_SHARDS

__all__ = [
    "WindowFunctions",
    "WindowSpec",
    "WindowCall",
    "OrderKey",
    "WindowOutcome",
    "parse_window_call",
    "parse_order_key",
    "window_table",
    "WINDOW_FUNCTIONS",
]


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Signature:
    column: Literal["none", "required", "optional"]
    number: Literal["none", "required", "optional"] = "none"  # a positive (or >= 0) integer literal
    default: bool = False  # a trailing literal (lag/lead)
    numeric: bool = False  # the column must be numeric
    zero_ok: bool = False  # the integer may be 0 (lag/lead offsets)


#: The whitelist: function name -> its argument shape.
WINDOW_FUNCTIONS: dict[str, _Signature] = {
    "row_number": _Signature("none"),
    "rank": _Signature("none"),
    "dense_rank": _Signature("none"),
    "percent_rank": _Signature("none"),
    "cume_dist": _Signature("none"),
    "ntile": _Signature("none", "required"),
    "lag": _Signature("required", "optional", default=True, zero_ok=True),
    "lead": _Signature("required", "optional", default=True, zero_ok=True),
    "cumsum": _Signature("required", numeric=True),
    "cumcount": _Signature("optional"),
    "moving_sum": _Signature("required", "required", numeric=True),
    "moving_avg": _Signature("required", "required", numeric=True),
    "first_value": _Signature("required"),
    "last_value": _Signature("required"),
    "nth_value": _Signature("required", "required"),
}


@dataclass(frozen=True)
class WindowCall:
    """One parsed window function call: ``lag(total, 2, 0)`` -> ``WindowCall("lag", "total", 2, 0)``."""

    function: str
    column: str | None = None
    number: int | None = None
    default: Any = None

    def describe(self) -> str:
        args = [a for a in (self.column, self.number) if a is not None]
        return f"{self.function}({', '.join(str(a) for a in args)})"


def _literal(node) -> Any:
    from sqlglot import exp

    if isinstance(node, exp.Neg):
        value = _literal(node.this)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
        raise ValueError(f"cannot negate {node.sql()}")
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        text = node.this
        return int(text) if re.fullmatch(r"\d+", text) else float(text)
    raise ValueError(f"'{node.sql()}' is not a literal")


def parse_window_call(text: str) -> WindowCall:
    """Parse one function call against the whitelist; ValueError says what is wrong and how to fix.

    Example:
        >>> parse_window_call("lag(total, 2, 0)")
        WindowCall(function='lag', column='total', number=2, default=0)
        >>> parse_window_call("rnak()")
        Traceback (most recent call last):
        ...
        ValueError: unknown window function 'rnak' (did you mean 'rank'?)
    """
    import sqlglot
    from sqlglot import exp

    try:
        node = sqlglot.parse_one(str(text))
    except sqlglot.errors.SqlglotError as exc:
        raise ValueError(f"cannot parse window function '{text}': {str(exc).splitlines()[0]}") from None
    if isinstance(node, exp.Window):
        raise ValueError(f"'{text}': write the function without OVER (...); partition_by and order_by are step fields")
    if isinstance(node, exp.Anonymous):
        name, args = str(node.this).lower(), list(node.expressions)
    elif isinstance(node, exp.Func):
        name = node.sql_name().lower()
        args = []
        for key in node.arg_types:
            value = node.args.get(key)
            if isinstance(value, list):
                args.extend(value)
            elif isinstance(value, exp.Expression):
                args.append(value)
    else:
        raise ValueError(f"'{text}' is not a function call; use e.g. rank() or lag(total, 1)")
    signature = WINDOW_FUNCTIONS.get(name)
    if signature is None:
        hint = did_you_mean(name, WINDOW_FUNCTIONS)
        raise ValueError(
            f"unknown window function '{name}'" + (f" ({hint})" if hint else f"; use one of: {', '.join(WINDOW_FUNCTIONS)}")
        )
    usage = _usage(name, signature)
    column = number = default = None
    rest = list(args)
    if signature.column != "none":
        if rest and isinstance(rest[0], (exp.Column, exp.Star)):
            first = rest.pop(0)
            column = None if isinstance(first, exp.Star) else first.name
            if isinstance(first, exp.Column) and first.table:
                raise ValueError(f"{name}: use a plain column name, not '{first.sql()}'")
            if isinstance(first, exp.Star) and name != "cumcount":
                raise ValueError(f"{name} needs a column, not *; usage: {usage}")
        elif signature.column == "required":
            raise ValueError(f"{name} needs a column as its first argument; usage: {usage}")
    if signature.number != "none":
        if rest:
            try:
                number = _literal(rest.pop(0))
            except ValueError:
                number = None
            low = 0 if signature.zero_ok else 1
            if not isinstance(number, int) or isinstance(number, bool) or number < low:
                raise ValueError(f"{name}: the count must be an integer literal >= {low}; usage: {usage}")
        elif signature.number == "required":
            raise ValueError(f"{name} needs a count; usage: {usage}")
    if signature.default and rest:
        try:
            default = _literal(rest.pop(0))
        except ValueError:
            raise ValueError(f"{name}: the default must be a literal (number, string, TRUE/FALSE or NULL); usage: {usage}") from None
    if rest:
        raise ValueError(f"{name} takes fewer arguments; usage: {usage}")
    if name in ("lag", "lead") and number is None:
        number = 1
    return WindowCall(name, column, number, default)


def _usage(name: str, signature: _Signature) -> str:
    parts = []
    if signature.column == "required":
        parts.append("column")
    elif signature.column == "optional":
        parts.append("[column]")
    if signature.number == "required":
        parts.append("n")
    elif signature.number == "optional":
        parts.append("[offset" + (", default]" if signature.default else "]"))
    return f"{name}({', '.join(parts)})"


@dataclass(frozen=True)
class OrderKey:
    """One ``order_by`` item: column, direction, where NULLs go."""

    column: str
    descending: bool = False
    nulls_first: bool = False

    def sql(self) -> str:
        name = '"' + self.column.replace('"', '""') + '"'
        return f"{name} {'DESC' if self.descending else 'ASC'} NULLS {'FIRST' if self.nulls_first else 'LAST'}"


_ORDER_ITEM = re.compile(
    r'^\s*(?:"((?:[^"]|"")+)"|([^\s"]+))(?:\s+(asc|desc))?(?:\s+nulls\s+(first|last))?\s*$', re.IGNORECASE
)


def parse_order_key(text: str) -> OrderKey:
    """``"total DESC NULLS FIRST"`` -> OrderKey; NULLS LAST unless stated.

    Example:
        >>> parse_order_key('"unit price" desc')
        OrderKey(column='unit price', descending=True, nulls_first=False)
    """
    match = _ORDER_ITEM.match(str(text))
    if match is None:
        raise ValueError(
            f"order_by item '{text}' is not 'column [ASC|DESC] [NULLS FIRST|NULLS LAST]'; "
            "derive an expression into a column first"
        )
    quoted, plain, direction, nulls = match.groups()
    column = quoted.replace('""', '"') if quoted is not None else plain
    return OrderKey(column, (direction or "asc").lower() == "desc", (nulls or "last").lower() == "first")


# --------------------------------------------------------------------------- vectorized core


@dataclass
class WindowOutcome:
    """What :func:`window_table` made: output rows, and input rows that could not be computed."""

    out: pa.Table
    failed: pa.Table | None = None
    messages: list[str] | None = None


def _arr(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return column


def _sortable(data_type: pa.DataType) -> bool:
    """Whether pyarrow can sort (and we can compare) values of this type."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return not (pa.types.is_nested(data_type) or pa.types.is_union(data_type))


def _sort_keys(table: pa.Table, partition_by: Sequence[str], order_by: Sequence[OrderKey]) -> tuple[pa.Table, list]:
    """Key columns and pyarrow sort keys implementing SQL order (NULL/NaN placement explicit)."""
    columns: dict[str, pa.Array] = {}
    keys: list = []

    def add(name: str, array: pa.Array, descending: bool, nulls_first: bool) -> None:
        array = _arr(array)
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if pa.types.is_null(array.type):
            return  # all NULL: every row is equal on this key
        order = "descending" if descending else "ascending"
        index = len(columns)
        if array.null_count:
            # the null flag sorts first: 0 = goes first
            flag = pc.is_null(array)
            flag = pc.invert(flag) if nulls_first else flag
            columns[f"n{index}"] = flag
            keys.append((f"n{index}", "ascending", "at_end"))
        if pa.types.is_floating(array.type):
            # SQL (DuckDB): NaN is larger than every number, so it goes last ascending, first descending
            nan = pc.fill_null(pc.is_nan(array), False)
            columns[f"f{index}"] = nan
            keys.append((f"f{index}", order, "at_end"))
            array = pc.if_else(nan, pa.scalar(0.0, array.type), array)
        columns[f"v{index}"] = array
        keys.append((f"v{index}", order, "at_end"))

    for name in partition_by:
        add(name, table.column(name), False, False)
    for key in order_by:
        add(key.column, table.column(key.column), key.descending, key.nulls_first)
    used = set(partition_by) | {key.column for key in order_by}
    for field in table.schema:  # the tiebreak: every other sortable column, ascending, NULLs last
        if field.name not in used and _sortable(field.type):
            add(field.name, table.column(field.name), False, False)
    return pa.table(columns) if columns else pa.table({"_": pa.nulls(table.num_rows, pa.int8())}), keys


def _starts(sorted_table: pa.Table, names: Sequence[str]) -> np.ndarray:
    """True where a row differs from the previous one in any of ``names`` (SQL peer equality)."""
    n = sorted_table.num_rows
    flags = np.zeros(n, dtype=bool)
    if n:
        flags[0] = True
    if n <= 1:
        return flags
    for name in names:
        column = _arr(sorted_table.column(name))
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        current, previous = column.slice(1), column.slice(0, n - 1)
        same = pc.fill_null(pc.equal(current, previous), False)
        same = pc.or_(same, pc.and_(pc.is_null(current), pc.is_null(previous)))
        if pa.types.is_floating(column.type):
            same = pc.or_(same, pc.fill_null(pc.and_(pc.is_nan(current), pc.is_nan(previous)), False))
        flags[1:] |= ~same.to_numpy(zero_copy_only=False)
    return flags


@dataclass
class _Frame:
    """Row positions of each sorted row: its partition and its peer group (ties)."""

    idx: np.ndarray
    part_start: np.ndarray
    part_end: np.ndarray
    part_id: np.ndarray
    peer_start: np.ndarray
    peer_end: np.ndarray
    peer_flags: np.ndarray


def _spans(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(flags)
    group = np.cumsum(flags) - 1
    starts = np.flatnonzero(flags)
    ends = np.append(starts[1:], n)
    return starts[group], ends[group], group


def _frame(sorted_table: pa.Table, partition_by: Sequence[str], order_by: Sequence[OrderKey]) -> _Frame:
    part_flags = _starts(sorted_table, partition_by)
    peer_flags = part_flags | _starts(sorted_table, [key.column for key in order_by])
    part_start, part_end, part_id = _spans(part_flags)
    peer_start, peer_end, _ = _spans(peer_flags)
    return _Frame(np.arange(sorted_table.num_rows), part_start, part_end, part_id, peer_start, peer_end, peer_flags)


def _take_masked(column: pa.Array, source: np.ndarray, valid: np.ndarray, default: Any) -> pa.Array:
    """``column[source]`` where ``valid``, else ``default`` (SQL lag/lead semantics)."""
    column = _arr(column)
    if len(column) == 0:
        return column
    safe = np.where(valid, source, 0)
    values = column.take(pa.array(safe))
    if valid.all():
        return values
    try:
        fallback = pa.scalar(default, type=column.type) if default is not None else pa.scalar(None, type=column.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        fallback = pa.scalar(default).cast(column.type)
    return pc.if_else(pa.array(valid), values, fallback)


_MASK32 = np.int64(0xFFFFFFFF)


def _int_window_sum(values: np.ndarray, lo: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact int64 sums over rows ``lo[i]..i``: (sums, int64 overflow mask, float64 sums).

    Prefix sums of the high and low 32-bit halves cannot overflow for < 2**31 rows, and
    their window differences rebuild the exact sum; it fits int64 iff its high part does.
    """
    high = values >> 32  # arithmetic shift: signed high half
    low = values & _MASK32  # 0 .. 2**32-1
    prefix_high = np.concatenate([[0], np.cumsum(high)])
    prefix_low = np.concatenate([[0], np.cumsum(low)])
    sum_high = prefix_high[idx + 1] - prefix_high[lo]
    sum_low = prefix_low[idx + 1] - prefix_low[lo]
    top = sum_high + (sum_low >> 32)
    rest = sum_low & _MASK32
    overflow = (top < -(2**31)) | (top > 2**31 - 1)
    exact = np.where(overflow, 0, top) * np.int64(2**32) + rest
    approx = top.astype(np.float64) * 4294967296.0 + rest.astype(np.float64)
    return exact, overflow, approx


def _numeric(column: pa.Array) -> tuple[np.ndarray, np.ndarray, bool]:
    """(values with NULL as 0, non-null mask, is-integer) for sums."""
    column = _arr(column)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(column.type) or pa.types.is_boolean(column.type):
        values = pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
        return values.astype(np.int64), valid, True
    if pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
        values = pc.fill_null(column.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False)
        return values.astype(np.float64), valid, False
    raise ValueError(f"a sum needs a numeric column, got {column.type}; cast it first")


def _float_running_sum(values: np.ndarray, frame: _Frame) -> np.ndarray:
    import pandas as pd

    # pandas' grouped cumsum restarts at each partition (no cancellation across partitions,
    # unlike differences of one global prefix sum) and is Kahan-compensated — but its
    # compensation turns inf into NaN. So finite values are summed there, and NaN/±inf are
    # applied from exact running counts with IEEE rules (NaN, or +inf with -inf, give NaN).
    finite = np.isfinite(values)
    sums = pd.Series(np.where(finite, values, 0.0)).groupby(frame.part_id).cumsum().to_numpy(dtype=np.float64)
    if finite.all():
        return sums
    idx, start = frame.idx, frame.part_start

    def so_far(mask: np.ndarray) -> np.ndarray:
        prefix = np.concatenate([[0], np.cumsum(mask)])
        return (prefix[idx + 1] - prefix[start]) > 0

    nan, pos, neg = so_far(np.isnan(values)), so_far(values == np.inf), so_far(values == -np.inf)
    sums = np.where(pos, np.inf, np.where(neg, -np.inf, sums))
    return np.where(nan | (pos & neg), np.nan, sums)


def _float_moving_sum(values: np.ndarray, lo: np.ndarray, idx: np.ndarray, width: int) -> np.ndarray:
    # ``width`` vectorized passes, oldest row first: exact left-to-right summation order and
    # no cancellation between partitions (a prefix-sum difference would lose small values
    # next to huge ones).
    total = np.zeros(len(values), dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf = NaN, as in SQL
        for back in range(min(width, len(values)) - 1, -1, -1):
            source = idx - back
            inside = source >= lo
            total += np.where(inside, values[np.maximum(source, 0)], 0.0)
    return total


def _compute(call: WindowCall, table: pa.Table, frame: _Frame) -> tuple[pa.Array, np.ndarray | None]:
    """One function over the sorted table: (values, rows that overflowed or None)."""
    idx, start, end = frame.idx, frame.part_start, frame.part_end
    size = end - start
    name = call.function
    if name == "row_number":
        return pa.array(idx - start + 1, pa.int64()), None
    if name == "rank":
        return pa.array(frame.peer_start - start + 1, pa.int64()), None
    if name == "dense_rank":
        cumulative = np.cumsum(frame.peer_flags)
        return pa.array(cumulative - cumulative[start] + 1, pa.int64()), None
    if name == "percent_rank":
        rank = frame.peer_start - start
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(size > 1, rank / np.maximum(size - 1, 1), 0.0)
        return pa.array(value, pa.float64()), None
    if name == "cume_dist":
        return pa.array((frame.peer_end - start) / size, pa.float64()), None
    if name == "ntile":
        buckets = call.number
        position = idx - start
        base, extra = size // buckets, size % buckets
        big = extra * (base + 1)  # rows in the larger, earlier buckets
        with np.errstate(divide="ignore", invalid="ignore"):
            in_big = position // (base + 1)
            in_small = extra + (position - big) // np.maximum(base, 1)
        bucket = np.where(position < big, in_big, in_small) + 1
        return pa.array(bucket, pa.int64()), None
    column = table.column(call.column) if call.column is not None else None
    if name in ("lag", "lead"):
        source = idx - call.number if name == "lag" else idx + call.number
        valid = (source >= start) & (source < end)
        return _take_masked(column, source, valid, call.default), None
    if name == "first_value":
        return _take_masked(column, start, np.ones(len(idx), dtype=bool), None), None
    if name == "last_value":
        return _take_masked(column, end - 1, np.ones(len(idx), dtype=bool), None), None
    if name == "nth_value":
        source = start + call.number - 1
        return _take_masked(column, source, source < end, None), None
    if name == "cumcount":
        if column is None:
            return pa.array(idx - start + 1, pa.int64()), None
        valid = pc.is_valid(column).to_numpy(zero_copy_only=False).astype(np.int64)
        prefix = np.concatenate([[0], np.cumsum(valid)])
        return pa.array(prefix[idx + 1] - prefix[start], pa.int64()), None
    if name in ("cumsum", "moving_sum", "moving_avg"):
        values, valid, is_int = _numeric(column)
        lo = start if name == "cumsum" else np.maximum(start, idx - call.number + 1)
        prefix = np.concatenate([[0], np.cumsum(valid.astype(np.int64))])
        counts = prefix[idx + 1] - prefix[lo]
        empty = counts == 0
        if is_int:
            exact, overflow, approx = _int_window_sum(values, lo, idx)
            if name == "moving_avg":
                with np.errstate(divide="ignore", invalid="ignore"):
                    return pa.array(approx / counts, pa.float64(), mask=empty), None
            overflow &= ~empty
            return pa.array(exact, pa.int64(), mask=empty), (overflow if overflow.any() else None)
        if name == "cumsum":
            sums = _float_running_sum(values, frame)
        else:
            sums = _float_moving_sum(values, lo, idx, call.number)
        if name == "moving_avg":
            with np.errstate(divide="ignore", invalid="ignore"):
                return pa.array(sums / np.maximum(counts, 1), pa.float64(), mask=empty), None
        return pa.array(sums, pa.float64(), mask=empty), None
    raise ValueError(f"unknown window function '{name}'")  # unreachable: parse_window_call checks


def window_table(
    table: pa.Table | pa.RecordBatch,
    functions: dict[str, WindowCall | str],
    partition_by: Sequence[str] = (),
    order_by: Sequence[OrderKey | str] = (),
) -> WindowOutcome:
    """Compute window functions over ``table``; rows come back in window order.

    Args:
        table: the rows (all rows of every partition they belong to).
        functions: ``{output column: call}`` (a :class:`WindowCall` or its text).
        partition_by: partition columns (none = one partition).
        order_by: order keys (:class:`OrderKey` or ``"col DESC NULLS FIRST"`` text).

    Rows whose integer sum leaves int64 are returned in ``failed`` (original columns) with
    a message each, and left out of ``out``.

    Example:
        >>> t = pa.table({"g": ["a", "a", "b"], "x": [3, 1, 2]})
        >>> window_table(t, {"rn": "row_number()"}, ["g"], ["x"]).out.to_pylist()
        [{'g': 'a', 'x': 1, 'rn': 1}, {'g': 'a', 'x': 3, 'rn': 2}, {'g': 'b', 'x': 2, 'rn': 1}]
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    calls = {name: parse_window_call(call) if isinstance(call, str) else call for name, call in functions.items()}
    keys = [parse_order_key(key) if isinstance(key, str) else key for key in order_by]
    for column in list(partition_by) + [key.column for key in keys] + [c.column for c in calls.values() if c.column]:
        if column not in table.column_names:
            hint = did_you_mean(column, table.column_names)
            raise ValueError(f"unknown column '{column}'" + (f" ({hint})" if hint else ""))
    key_table, sort_keys = _sort_keys(table, list(partition_by), keys)
    order = pc.sort_indices(key_table, sort_keys=sort_keys) if table.num_rows > 1 else pa.array(np.arange(table.num_rows))
    ordered = table.take(order)
    frame = _frame(ordered, list(partition_by), keys)
    overflow = np.zeros(ordered.num_rows, dtype=bool)
    messages = np.full(ordered.num_rows, None, dtype=object)
    out = ordered
    for name, call in calls.items():
        values, bad = _compute(call, ordered, frame)
        if bad is not None:
            new = bad & ~overflow
            messages[new] = (
                f"{name}: {call.describe()} exceeds the int64 range; cast {call.column} to float64 or decimal first"
            )
            overflow |= bad
        index = out.schema.get_field_index(name)
        out = out.set_column(index, name, values) if index >= 0 else out.append_column(name, values)
    if not overflow.any():
        return WindowOutcome(out)
    keep = pa.array(~overflow)
    return WindowOutcome(
        out.filter(keep),
        ordered.filter(pa.array(overflow)),
        [str(m) for m in messages[overflow]],
    )


# --------------------------------------------------------------------------- spec


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


class WindowSpec(StepModel):
    """``{name, type: window, input, partition_by, order_by, functions, shards}``."""

    type: Literal["window"]
    partition_by: list[str] = Field(default_factory=list)
    order_by: list[str] = Field(default_factory=list)
    functions: dict[str, str]
    shards: int = Field(default=DEFAULT_SHARDS, gt=0)

    @field_validator("partition_by", "order_by", mode="before")
    @classmethod
    def _listify(cls, value):
        return _as_list(value)

    @field_validator("functions")
    @classmethod
    def _some(cls, value):
        if not value:
            raise ValueError("functions: give at least one, e.g. {rnk: 'rank()'}")
        return value

    def check(self, schemas: list[pa.Schema | None], path: str) -> list[SpecIssue]:
        schema = schemas[0] if schemas else None
        issues: list[SpecIssue] = []
        names = schema.names if schema is not None else None

        def unknown(column: str, where: str) -> None:
            if names is not None and column not in names:
                issues.append(SpecIssue(where, f"unknown column '{column}'", did_you_mean(column, names)))

        for index, column in enumerate(self.partition_by):
            unknown(column, f"{path}.partition_by[{index}]")
            if names is not None and column in names and not _sortable(schema.field(column).type):
                issues.append(SpecIssue(f"{path}.partition_by[{index}]", f"cannot partition by '{column}' of type {schema.field(column).type}", "use a scalar column"))
        for index, text in enumerate(self.order_by):
            where = f"{path}.order_by[{index}]"
            try:
                key = parse_order_key(text)
            except ValueError as exc:
                issues.append(SpecIssue(where, str(exc)))
                continue
            unknown(key.column, where)
            if names is not None and key.column in names and not _sortable(schema.field(key.column).type):
                issues.append(SpecIssue(where, f"cannot order by '{key.column}' of type {schema.field(key.column).type}", "use a scalar column"))
        for out_name, text in self.functions.items():
            where = f"{path}.functions.{out_name}"
            try:
                call = parse_window_call(text)
            except ValueError as exc:
                message, _, hint = str(exc).partition(" (did you mean")
                issues.append(SpecIssue(where, message, f"did you mean{hint[:-1]}" if hint else None))
                continue
            if call.column is not None:
                unknown(call.column, where)
                if names is not None and call.column in names and WINDOW_FUNCTIONS[call.function].numeric:
                    data_type = schema.field(call.column).type
                    if not (pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type)):
                        issues.append(SpecIssue(where, f"{call.function} needs a numeric column; '{call.column}' is {data_type}", f"cast {call.column} to a number first"))
        return issues

    def output_schema(self, schemas: list[pa.Schema | None]) -> pa.Schema | None:
        schema = schemas[0] if schemas else None
        if schema is None:
            return None
        empty = window_table(schema.empty_table(), self.functions, self.partition_by, self.order_by).out
        return empty.schema


# --------------------------------------------------------------------------- Beam plumbing


class _WindowShardFn(beam.DoFn):
    """All rows of one shard (whole partitions) -> window functions -> batches (+ DLQ)."""

    def __init__(self, step: str, functions: dict[str, str], partition_by: list[str], order_by: list[str], batch_rows: int):
        self._step = step
        self._functions = dict(functions)
        self._partition_by = list(partition_by)
        self._order_by = list(order_by)
        self._batch_rows = batch_rows

    def setup(self):
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, element):
        _shard, batches = element
        batches = [batch for batch in batches if batch.num_rows]
        if not batches:
            return
        rows = sum(batch.num_rows for batch in batches)
        counters = self._counters
        counters.rows_in.inc(rows)
        try:
            outcome = window_table(concat_batches(batches), self._functions, self._partition_by, self._order_by)
        except Exception as exc:  # unexpected data (a type the functions cannot handle): the shard's rows go to the DLQ
            counters.rows_dlq.inc(rows)
            message = f"{exc} [{traceback.format_exc(limit=1).splitlines()[-1]}]"
            for batch in batches:
                yield TaggedOutput("dlq", dlq_batch(batch, step=self._step, error_type=f"window.{type(exc).__name__}", error_message=message))
            return
        if outcome.failed is not None and outcome.failed.num_rows:
            counters.rows_dlq.inc(outcome.failed.num_rows)
            failed = outcome.failed.combine_chunks().to_batches()[0]
            yield TaggedOutput("dlq", dlq_batch(failed, step=self._step, error_type="window.overflow", error_message=outcome.messages))
        counters.rows_out.inc(outcome.out.num_rows)
        for batch in outcome.out.combine_chunks().to_batches():
            yield from split_batch(batch, self._batch_rows)


class _ShardPartitionsFn(beam.DoFn):
    def __init__(self, keys: list[str], shards: int):
        self._keys = keys
        self._shards = shards

    def process(self, batch: pa.RecordBatch):
        yield from shard_by_keys(batch, self._keys, self._shards)


class WindowFunctions(beam.PTransform):
    """Add window function columns (see the module docstring for functions and semantics).

    Args:
        step: the step name (counters and DLQ rows carry it).
        functions: ``{output column: "rank()" | "lag(total, 1)" | ...}``.
        partition_by: partition columns; none = one partition on one worker.
        order_by: ``"column [ASC|DESC] [NULLS FIRST|LAST]"`` items.
        shards: hash shards for the partition shuffle.
        batch_rows: maximum rows per output batch.

    Returns a :class:`StepOutputs` (``main``, ``dlq``).

    Example:
        >>> out = batches | WindowFunctions("ranked", {"rnk": "rank()", "ma3": "moving_avg(total, 3)"},
        ...                                 partition_by=["country"], order_by=["total DESC"])  # doctest: +SKIP
    """

    def __init__(
        self,
        step: str,
        functions: dict[str, str],
        partition_by: Sequence[str] | str = (),
        order_by: Sequence[str] | str = (),
        shards: int = DEFAULT_SHARDS,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ):
        super().__init__()
        spec = WindowSpec.model_validate(
            {"name": step, "type": "window", "input": "input", "functions": dict(functions),
             "partition_by": _as_list(partition_by), "order_by": _as_list(order_by), "shards": shards}
        )
        problems = spec.check([None], step)
        if problems:
            raise ValueError("; ".join(str(problem) for problem in problems))
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        self._spec = spec
        self._batch_rows = batch_rows

    def expand(self, pcoll) -> StepOutputs:
        spec = self._spec
        shards = spec.shards if spec.partition_by else 1
        results = (
            pcoll
            | "shard" >> beam.ParDo(_ShardPartitionsFn(spec.partition_by, shards)).with_output_types(typehints.KV[int, pa.RecordBatch])
            | "group" >> beam.GroupByKey()
            | "compute" >> beam.ParDo(
                _WindowShardFn(spec.name, spec.functions, spec.partition_by, spec.order_by, self._batch_rows)
            ).with_outputs("dlq", main="main")
        )
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


@register_step("window", WindowSpec)
def build_window(spec: WindowSpec, inputs: list, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> WindowFunctions(
        spec.name, spec.functions, spec.partition_by, spec.order_by, spec.shards, ctx.batch_rows
    )
