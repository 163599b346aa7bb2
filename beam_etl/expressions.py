"""SQL expressions and conditions, parsed by sqlglot and run as pyarrow.compute calls.

The whole engine is one table, :data:`_RULES`, from sqlglot node classes to small
translator functions (in the manner of sqlglot's own dialect tables). A node whose class
is not in the table, or that carries an argument its translator does not handle, is an
:class:`~beam_etl.errors.ExpressionError` naming the construct and what is supported.
Nothing is ever ``eval``-ed or ``exec``-ed.

Semantics follow DuckDB (the oracle the tests compare against), with these deliberate
differences, each chosen for an ETL engine where a bad row goes to the DLQ:

- ``/``, ``//`` and ``%`` by zero are row errors ("division by zero in 'a / b'"), and
  NULL / 0 is NULL; DuckDB gives ``inf``/``nan`` for ``/`` and for a float ``%``, and raises
  for ``//`` and integer ``%``. Integer overflow is a row error, as in DuckDB.
- A typed literal that does not parse (``DATE '2024-13-01'``) is a spec error at compile
  time; ``CAST(column AS ...)`` failures are row errors.
- Comparing an integer with a float converts the integer to float (rounding beyond 2**53),
  as DuckDB's implicit cast does.
- ``AND``, ``OR`` and ``COALESCE`` are lazy per row, like ``CASE``: an operand is only
  evaluated (and can only fail) on the rows whose result depends on it, so
  ``qty <> 0 AND amount / qty > 2`` never fails. DuckDB evaluates them eagerly.
- Numeric literals are ``int64``/``float64`` (DuckDB: INTEGER/DECIMAL); ``CAST(x AS INT)``
  and ``FLOAT``/``REAL`` give ``int64``/``float64`` (DuckDB: 32-bit).
- ``CAST(text AS <integer>)`` accepts optional surrounding ASCII whitespace and
  ``-?[0-9]+`` only; DuckDB also accepts ``+5``, ``1_000``, ``1e2``, ``0x10``, ``2.5``.
  Text to DATE/TIMESTAMP accepts ISO 8601 only. Floats and timestamps cast to text
  use Arrow's formatting (``1`` where DuckDB writes ``1.0``).
- ``now()``/``current_timestamp`` and ``current_date`` are taken once per batch, in UTC.

Where DuckDB differs from plain IEEE floats we follow DuckDB: NaN equals NaN and sorts
above every other number (comparisons, ``IN``, ``greatest``/``least``); a double cast to an
integer rounds half to even; ``round(x, n)`` rounds the exact stored value half away from zero.
``//`` on floats is plain division, as in DuckDB.

Example:
    >>> import pyarrow as pa
    >>> batch = pa.RecordBatch.from_pydict({"amount": [10.0, 5.0], "qty": [2, 0]})
    >>> values, errors = compile_expression("amount / qty").evaluate_with_errors(batch)
    >>> values.to_pylist(), errors
    ([5.0, None], {1: "division by zero in 'amount / qty'"})
    >>> compile_condition({"column": "qty", "op": "gte", "value": 1}).sql
    '"qty" >= 1'
"""

from __future__ import annotations

import datetime as _dt
import decimal
import difflib
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from beam_etl.errors import BeamEtlError, ExpressionError

__all__ = [
    "Expression",
    "EvaluationError",
    "compile_expression",
    "compile_condition",
    "SUPPORTED_FUNCTIONS",
    "CONDITION_OPS",
]

_Value = Union[pa.Array, pa.Scalar]
_Eval = Callable[["_Ctx"], _Value]

#: sqlglot reads expressions in this dialect (DuckDB is the tests' oracle).
_DIALECT = "duckdb"

#: Whitespace that CAST(text AS number/date/...) strips, as DuckDB does.
_CAST_WHITESPACE = " \t\n\r\v\f"


class EvaluationError(BeamEtlError, ValueError):
    """An expression failed on some row (division by zero, overflow, bad cast).

    :meth:`Expression.evaluate` raises it; :meth:`Expression.evaluate_with_errors` turns it
    into per-row messages instead.
    """


class _DataError(EvaluationError):
    """Raised inside evaluation; caught by the lazy operators and by the bisection."""


# --------------------------------------------------------------------------- evaluation context


class _Ctx:
    """The batch being evaluated plus per-batch constants (``now()``)."""

    __slots__ = ("batch", "num_rows", "_clock")

    def __init__(self, batch: pa.RecordBatch, clock: dict | None = None):
        self.batch = batch
        self.num_rows = batch.num_rows
        self._clock = clock if clock is not None else {}

    def column(self, name: str) -> pa.Array:
        index = _field_index(self.batch.schema, name)
        if index < 0:
            # DESIGN §3: a column missing from a batch is null (check() catches typos).
            return pa.nulls(self.num_rows)
        column = self.batch.column(index)
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    def now(self) -> _dt.datetime:
        if "now" not in self._clock:
            self._clock["now"] = _dt.datetime.now(_dt.timezone.utc)
        return self._clock["now"]

    def subset(self, mask: pa.Array) -> "_Ctx":
        return _Ctx(self.batch.filter(mask), self._clock)


def _field_index(schema: pa.Schema, name: str) -> int:
    """Exact name first, then case-insensitive (DuckDB identifiers ignore case)."""
    names = schema.names
    if name in names:
        return names.index(name)
    folded = [i for i, candidate in enumerate(names) if candidate.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else -1


# --------------------------------------------------------------------------- value helpers


def _full(value: _Value, n: int) -> pa.Array:
    """An array of ``n`` rows (a scalar repeated)."""
    if isinstance(value, pa.Scalar):
        return pa.repeat(value, n)
    if isinstance(value, pa.ChunkedArray):
        return value.combine_chunks()
    return value


def _is_null_type(t: pa.DataType) -> bool:
    return pa.types.is_null(t)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _is_temporal(t: pa.DataType) -> bool:
    return pa.types.is_date(t) or pa.types.is_timestamp(t)


def _cast_value(value: _Value, to: pa.DataType) -> _Value:
    if value.type == to:
        return value
    if pa.types.is_integer(value.type) and pa.types.is_floating(to):
        # int64 -> float64 rounds beyond 2**53, as DuckDB's implicit cast does; Arrow's safe
        # cast would refuse.
        return pc.cast(value, to, safe=False)
    return value.cast(to)


def _like_other(value: _Value, other: _Value) -> _Value:
    """A null-typed value (a NULL literal, an all-null column) takes the other side's type."""
    if _is_null_type(value.type) and not _is_null_type(other.type):
        return value.cast(other.type)
    return value


def _align(left: _Value, right: _Value) -> tuple[_Value, _Value]:
    """Null-typed sides take the other's type; an integer meeting a float becomes a float.

    The integer is cast by us, rounding beyond 2**53 as DuckDB's implicit cast does; the
    kernels' own implicit cast would refuse such values.
    """
    left, right = _like_other(left, right), _like_other(right, left)
    if pa.types.is_integer(left.type) and pa.types.is_floating(right.type):
        left = _cast_value(left, right.type)
    elif pa.types.is_floating(left.type) and pa.types.is_integer(right.type):
        right = _cast_value(right, left.type)
    return left, right


def _typed(value: _Value, default: pa.DataType) -> _Value:
    """A null-typed value cast to ``default`` (what a function expects)."""
    return value.cast(default) if _is_null_type(value.type) else value


def _common_type(types: Iterable[pa.DataType], sql: str) -> pa.DataType:
    """The type CASE/COALESCE/IN/greatest branches are cast to."""
    known = [t for t in types if not _is_null_type(t)]
    if not known:
        return pa.null()
    first = known[0]
    if all(t == first for t in known):
        return first
    if all(_is_numeric(t) for t in known):
        if all(pa.types.is_integer(t) for t in known):
            return pa.int64()
        return pa.float64()
    if all(_is_string(t) for t in known):
        return pa.string()
    if all(_is_temporal(t) for t in known):
        zones = {t.tz for t in known if pa.types.is_timestamp(t)}
        return pa.timestamp("us", tz=zones.pop() if len(zones) == 1 else None)
    names = ", ".join(sorted({str(t) for t in known}))
    raise ExpressionError(
        f"'{sql}' mixes values of types {names}", hint="CAST the values to one type"
    )


def _unify(values: Sequence[_Value], sql: str) -> list[_Value]:
    target = _common_type([v.type for v in values], sql)
    if _is_null_type(target):
        return list(values)
    return [_cast_value(v, target) for v in values]


def _bool(value: _Value, sql: str) -> _Value:
    if _is_null_type(value.type):
        return value.cast(pa.bool_())
    if not pa.types.is_boolean(value.type):
        raise ExpressionError(
            f"'{sql}' needs a boolean, got {value.type}",
            hint="compare the value, e.g. 'x > 0' or 'x IS NOT NULL'",
        )
    return value


def _strings(value: _Value) -> _Value:
    """A value as text for concat and ``||`` (DuckDB casts the other types)."""
    if _is_string(value.type):
        return value
    return value.cast(pa.string())


def _normalize_zero(value: _Value) -> _Value:
    # -0.0 + 0.0 == +0.0: hashing kernels (is_in) otherwise tell the two zeros apart.
    if pa.types.is_floating(value.type):
        return pc.add(value, pa.scalar(0.0, value.type))
    return value


def _lazy(evaluate: _Eval, ctx: _Ctx, mask: _Value | None) -> _Value:
    """``evaluate`` where ``mask`` is true; other rows are null or unspecified.

    The whole batch is tried first (the common, fast case); only if that fails on some
    row are the rows outside ``mask`` dropped and the rest evaluated again, so a row whose
    result does not depend on this operand never fails because of it.
    """
    try:
        return evaluate(ctx)
    except _DataError:
        if mask is None:
            raise
        mask = pc.fill_null(_full(mask, ctx.num_rows), False)
        if pc.all(mask).as_py() is True and ctx.num_rows:
            raise
    sub = ctx.subset(mask)
    try:
        values = evaluate(sub)
    except _DataError:
        if sub.num_rows == 0:
            return pa.scalar(None)
        raise
    values = _full(values, sub.num_rows)
    return pc.replace_with_mask(pa.nulls(ctx.num_rows, values.type), mask, values)


# --------------------------------------------------------------------------- compiler


@dataclass(frozen=True)
class _Rule:
    """How one sqlglot node class translates.

    ``args`` are the node arguments the translator handles; any other argument that is
    set (a collation, a FORMAT clause, ...) is reported instead of silently ignored.
    ``names`` are the SQL spellings, for error messages and docs.
    """

    translate: Callable[[Any, "_Compiler"], _Eval]
    args: tuple[str, ...]
    names: tuple[str, ...] = ()


def _sql(node: exp.Expression) -> str:
    return node.sql(dialect=_DIALECT)


class _Compiler:
    """Walks a sqlglot tree through :data:`_RULES`, collecting column names."""

    def __init__(self) -> None:
        self.columns: set[str] = set()

    def compile(self, node: exp.Expression) -> _Eval:
        rule = _RULES.get(type(node))
        if rule is None:
            raise _unsupported(node)
        for key, value in node.args.items():
            if key in rule.args or key.startswith("_") or value in (None, False, [], ""):
                continue
            raise ExpressionError(
                f"unsupported {key.upper()} clause in '{_sql(node)}'",
                hint=f"write it without {key.upper()}",
            )
        evaluate = rule.translate(node, self)
        return _guarded(evaluate, _sql(node))


def _guarded(evaluate: _Eval, sql: str) -> _Eval:
    """Attribute Arrow failures to the node that raised them.

    Data failures (ArrowInvalid: divide by zero, overflow, unparsable value) become
    row errors; missing kernels (a function applied to the wrong types) are spec errors.
    """

    def run(ctx: _Ctx) -> _Value:
        try:
            return evaluate(ctx)
        except (_DataError, ExpressionError):
            raise
        except pa.ArrowInvalid as exc:
            raise _DataError(f"{_reason(exc)} in '{sql}'") from None
        except (ArithmeticError, OverflowError) as exc:
            raise _DataError(f"{exc} in '{sql}'") from None
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise ExpressionError(f"'{sql}' cannot be applied to these types: {_first_line(exc)}") from None

    return run


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _reason(exc: BaseException) -> str:
    text = _first_line(exc)
    if "divide by zero" in text:
        return "division by zero"
    if text == "overflow" or "overflow" in text.lower():
        return "integer overflow"
    return text


_STATEMENTS = (exp.Query, exp.Subquery, exp.Exists, exp.DDL, exp.DML, exp.Command, exp.Block)


def _unsupported(node: exp.Expression) -> ExpressionError:
    sql = _sql(node)
    if isinstance(node, exp.Block):
        return ExpressionError(f"only one expression is allowed, not several statements: '{sql}'")
    if isinstance(node, _STATEMENTS) or isinstance(node, (exp.Table, exp.From)):
        return ExpressionError(
            f"'{sql}' is a query or statement; only a single expression is allowed",
            hint="subqueries, SELECT and table functions are not supported in expressions",
        )
    if isinstance(node, exp.Func):
        name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
        name = name.lower()
        close = difflib.get_close_matches(name, SUPPORTED_FUNCTIONS, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "supported functions: " + ", ".join(SUPPORTED_FUNCTIONS)
        return ExpressionError(f"unsupported function '{name}()' in '{sql}'", hint=hint)
    if isinstance(node, exp.Column) and not isinstance(node.this, exp.Identifier):
        return ExpressionError(f"'{sql}' is not a column name", hint="name one column, quoted if needed")
    return ExpressionError(
        f"unsupported SQL construct {type(node).__name__} in '{sql}'",
        hint="supported: " + _SUPPORTED_SYNTAX,
    )


# --------------------------------------------------------------------------- leaves


def _column(node: exp.Column, c: _Compiler) -> _Eval:
    if node.args.get("table") is not None:
        raise ExpressionError(
            f"qualified column '{_sql(node)}' is not supported",
            hint="name the column alone, or quote a name that contains a dot: \"t.id\"",
        )
    if not isinstance(node.this, exp.Identifier):
        raise _unsupported(node)
    name = node.this.this
    c.columns.add(name)
    return lambda ctx: ctx.column(name)


def _literal_value(node: exp.Literal) -> pa.Scalar:
    text = node.this
    if node.is_string:
        return pa.scalar(text, pa.string())
    try:
        number: int | float = int(text)
    except ValueError:
        number = float(text)
    if isinstance(number, int) and not -(2**63) <= number < 2**63:
        raise ExpressionError(
            f"integer literal {text} is outside the int64 range", hint="write it as a float, e.g. 1e19"
        )
    return pa.scalar(number, pa.int64() if isinstance(number, int) else pa.float64())


def _literal(node: exp.Literal, c: _Compiler) -> _Eval:
    value = _literal_value(node)
    return lambda ctx: value


def _boolean(node: exp.Boolean, c: _Compiler) -> _Eval:
    value = pa.scalar(bool(node.this), pa.bool_())
    return lambda ctx: value


def _null(node: exp.Null, c: _Compiler) -> _Eval:
    value = pa.scalar(None)
    return lambda ctx: value


def _paren(node: exp.Paren, c: _Compiler) -> _Eval:
    return c.compile(node.this)


def _string_literal(node: exp.Expression | None) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    return isinstance(node, exp.Literal) and node.is_string


def _constant_string(node: exp.Expression | None, what: str, where: exp.Expression) -> str:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Literal) and node.is_string:
        return node.this
    raise ExpressionError(
        f"{what} in '{_sql(where)}' must be a string literal", hint="write it in single quotes, e.g. 'abc%'"
    )


def _constant_int(node: exp.Expression | None, what: str, where: exp.Expression) -> int:
    sign = 1
    while isinstance(node, (exp.Paren, exp.Neg)):
        if isinstance(node, exp.Neg):
            sign = -sign
        node = node.this
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return sign * int(node.this)
        except ValueError:
            pass
    raise ExpressionError(f"{what} in '{_sql(where)}' must be an integer literal", hint="e.g. substring(name, 1, 3)")


# --------------------------------------------------------------------------- arithmetic


def _temporal_arith(op: str, left: _Value, right: _Value) -> _Value | None:
    """DATE ± integer days and DATE - DATE (days), as DuckDB does; None when not temporal."""
    lt, rt = left.type, right.type
    if pa.types.is_date32(lt) and pa.types.is_integer(rt) and op in ("add", "sub"):
        days = pc.cast(pc.cast(left, pa.int32()), pa.int64())
        shifted = pc.add_checked(days, right) if op == "add" else pc.subtract_checked(days, right)
        return pc.cast(pc.cast(shifted, pa.int32()), pa.date32())
    if pa.types.is_integer(lt) and pa.types.is_date32(rt) and op == "add":
        return _temporal_arith("add", right, left)
    if pa.types.is_date32(lt) and pa.types.is_date32(rt) and op == "sub":
        return pc.subtract_checked(
            pc.cast(pc.cast(left, pa.int32()), pa.int64()), pc.cast(pc.cast(right, pa.int32()), pa.int64())
        )
    return None


def _arith(op: str, kernel: Callable) -> Callable[[exp.Binary, _Compiler], _Eval]:
    def translate(node: exp.Binary, c: _Compiler) -> _Eval:
        left, right = c.compile(node.this), c.compile(node.expression)

        def evaluate(ctx: _Ctx) -> _Value:
            lv, rv = _align(left(ctx), right(ctx))
            shifted = _temporal_arith(op, lv, rv)
            return shifted if shifted is not None else kernel(lv, rv)

        return evaluate

    return translate


def _as_float(value: _Value) -> _Value:
    if pa.types.is_integer(value.type):
        return pc.cast(value, pa.float64(), safe=False)  # rounds beyond 2**53, like DuckDB
    if pa.types.is_decimal(value.type) or _is_null_type(value.type):
        return value.cast(pa.float64())
    return value


def _div(node: exp.Div, c: _Compiler) -> _Eval:
    # DuckDB's `/` is float division: 7 / 2 = 3.5.
    left, right = c.compile(node.this), c.compile(node.expression)
    return lambda ctx: pc.divide_checked(_as_float(left(ctx)), _as_float(right(ctx)))


def _int_div(node: exp.IntDiv, c: _Compiler) -> _Eval:
    # DuckDB: `//` truncates integers toward zero; on floats it is plain division.
    left, right = c.compile(node.this), c.compile(node.expression)

    def evaluate(ctx: _Ctx) -> _Value:
        lv, rv = _align(left(ctx), right(ctx))
        if pa.types.is_integer(lv.type) and pa.types.is_integer(rv.type):
            return pc.divide_checked(lv, rv)
        return pc.divide_checked(_as_float(lv), _as_float(rv))

    return evaluate


def _fmod(left: _Value, right: _Value, n: int) -> _Value:
    """C fmod (DuckDB's float %), through numpy: Arrow has no modulo kernel."""
    if isinstance(left, pa.Scalar) and isinstance(right, pa.Scalar):
        if not left.is_valid or not right.is_valid:
            return pa.scalar(None, pa.float64())
        if right.as_py() == 0:
            raise _DataError("division by zero")
        with np.errstate(invalid="ignore"):  # fmod(inf, x) is NaN, as in C and DuckDB
            return pa.scalar(float(np.fmod(left.as_py(), right.as_py())), pa.float64())
    la, ra = _full(left, n), _full(right, n)
    valid = pc.and_(pc.is_valid(la), pc.is_valid(ra))
    if pc.any(pc.and_(valid, pc.equal(ra, 0.0))).as_py():  # NULL % 0 is NULL, as NULL / 0
        raise _DataError("division by zero")
    with np.errstate(invalid="ignore"):
        values = np.fmod(
            la.to_numpy(zero_copy_only=False).astype(np.float64), ra.to_numpy(zero_copy_only=False).astype(np.float64)
        )
    return pa.array(values, type=pa.float64(), mask=pc.invert(valid).to_numpy(zero_copy_only=False))


def _mod(node: exp.Mod, c: _Compiler) -> _Eval:
    # DuckDB's % takes the dividend's sign (truncated division), like C.
    left, right = c.compile(node.this), c.compile(node.expression)
    sql = _sql(node)

    def evaluate(ctx: _Ctx) -> _Value:
        lv, rv = _align(left(ctx), right(ctx))
        if _is_null_type(lv.type) and _is_null_type(rv.type):
            return pa.scalar(None, pa.int64())  # NULL % NULL is NULL
        if pa.types.is_integer(lv.type) and pa.types.is_integer(rv.type):
            # x % -1 == x % 1 == 0, and avoids the INT64_MIN / -1 overflow.
            divisor = pc.if_else(pc.equal(rv, -1), pa.scalar(1, rv.type), rv)
            quotient = pc.divide_checked(lv, divisor)
            return pc.subtract_checked(lv, pc.multiply_checked(quotient, divisor))
        if not (_is_numeric(lv.type) and _is_numeric(rv.type)):
            raise ExpressionError(f"'{sql}' needs numbers, got {lv.type} and {rv.type}")
        try:
            return _fmod(_as_float(lv), _as_float(rv), ctx.num_rows)
        except _DataError as exc:
            raise _DataError(f"{exc} in '{sql}'") from None

    return evaluate


def _neg(node: exp.Neg, c: _Compiler) -> _Eval:
    inner = c.compile(node.this)
    return lambda ctx: pc.negate_checked(_typed(inner(ctx), pa.int64()))


# --------------------------------------------------------------------------- comparisons


def _coerce_literal(value: _Value, is_literal: bool, other: _Value, sql: str) -> _Value:
    """A string literal compared with a non-text value takes that value's type (DuckDB)."""
    if not is_literal or _is_string(other.type) or _is_null_type(other.type) or not isinstance(value, pa.Scalar):
        return value
    text = value.as_py()
    try:
        return _cast_to(value, other.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, _DataError):
        raise ExpressionError(
            f"cannot compare {other.type} with '{text}' in '{sql}'", hint=f"write a valid {other.type} value"
        ) from None


def _nan(value: _Value) -> _Value | None:
    return pc.is_nan(value) if pa.types.is_floating(value.type) else None


def _compare_values(op: str, left: _Value, right: _Value) -> _Value:
    """SQL comparison with NULL propagation and DuckDB's NaN order (NaN = NaN, NaN > all)."""
    if op == "gt":
        return _compare_values("lt", right, left)
    if op == "gte":
        return _compare_values("lte", right, left)
    left, right = _align(left, right)
    if _is_null_type(left.type) and _is_null_type(right.type):
        return pa.scalar(None, pa.bool_())  # NULL compared with NULL
    if op in ("eq", "neq"):
        result = pc.equal(left, right)
        lnan, rnan = _nan(left), _nan(right)
        if lnan is not None and rnan is not None:
            result = pc.or_(result, pc.and_(lnan, rnan))
        return pc.invert(result) if op == "neq" else result
    lnan, rnan = _nan(left), _nan(right)
    if op == "lt":
        result = pc.less(left, right)
        if rnan is not None:
            result = pc.or_(result, pc.and_(pc.invert(lnan) if lnan is not None else pc.is_valid(left), rnan))
        return result
    if op == "lte":
        result = pc.less_equal(left, right)
        if rnan is not None:
            result = pc.or_(result, pc.and_(pc.is_valid(left), rnan))
        return result
    raise AssertionError(op)


def _comparison(op: str) -> Callable[[exp.Binary, _Compiler], _Eval]:
    def translate(node: exp.Binary, c: _Compiler) -> _Eval:
        left, right = c.compile(node.this), c.compile(node.expression)
        left_lit, right_lit = _string_literal(node.this), _string_literal(node.expression)
        sql = _sql(node)

        def evaluate(ctx: _Ctx) -> _Value:
            lv, rv = left(ctx), right(ctx)
            lv = _coerce_literal(lv, left_lit, rv, sql)
            rv = _coerce_literal(rv, right_lit, lv, sql)
            return _compare_values(op, lv, rv)

        return evaluate

    return translate


def _null_safe(negate: bool) -> Callable[[exp.Binary, _Compiler], _Eval]:
    def translate(node: exp.Binary, c: _Compiler) -> _Eval:
        left, right = c.compile(node.this), c.compile(node.expression)

        def evaluate(ctx: _Ctx) -> _Value:
            lv, rv = _align(left(ctx), right(ctx))
            both_null = pc.and_(pc.is_null(lv), pc.is_null(rv))
            same = pc.if_else(
                pc.or_(pc.is_null(lv), pc.is_null(rv)), both_null, _compare_values("eq", lv, rv)
            )
            return pc.invert(same) if negate else same

        return evaluate

    return translate


def _between(node: exp.Between, c: _Compiler) -> _Eval:
    this, low, high = c.compile(node.this), c.compile(node.args["low"]), c.compile(node.args["high"])
    low_lit, high_lit = _string_literal(node.args["low"]), _string_literal(node.args["high"])
    sql = _sql(node)

    def evaluate(ctx: _Ctx) -> _Value:
        value = this(ctx)
        lo = _coerce_literal(low(ctx), low_lit, value, sql)
        hi = _coerce_literal(high(ctx), high_lit, value, sql)
        return pc.and_kleene(_compare_values("gte", value, lo), _compare_values("lte", value, hi))

    return evaluate


def _in(node: exp.In, c: _Compiler) -> _Eval:
    for key in ("query", "unnest", "field"):
        if node.args.get(key) is not None:
            raise ExpressionError(
                f"'{_sql(node)}': IN takes a list of values, not a subquery", hint="write x IN (1, 2, 3)"
            )
    this = c.compile(node.this)
    items = [(c.compile(item), _string_literal(item)) for item in node.expressions]
    sql = _sql(node)

    def evaluate(ctx: _Ctx) -> _Value:
        value = this(ctx)
        values = [_coerce_literal(item(ctx), literal, value, sql) for item, literal in items]
        if all(isinstance(v, pa.Scalar) for v in values):
            return _in_constants(_full(value, ctx.num_rows), values, sql)
        # A column in the list: SQL's x IN (a, b) is x = a OR x = b (Kleene).
        result: _Value = pa.scalar(False)
        for item in values:
            result = pc.or_kleene(result, _compare_values("eq", value, item))
        return result

    return evaluate


def _in_constants(value: _Value, items: list[pa.Scalar], sql: str) -> _Value:
    typed = _unify([value, *items], sql)
    value, items = typed[0], typed[1:]
    has_null = any(not item.is_valid for item in items)
    present = [item.as_py() for item in items if item.is_valid]
    if _is_null_type(value.type):
        return pa.scalar(None, pa.bool_())
    value_set = _normalize_zero(pa.array(present, type=value.type))
    found = pc.is_in(_normalize_zero(value), value_set=value_set, skip_nulls=True)
    # SQL: NULL IN (...) is NULL; x IN (..., NULL) is NULL unless x is found.
    found = pc.if_else(pc.is_null(value), pa.scalar(None, pa.bool_()), found)
    if has_null:
        found = pc.if_else(found, True, pa.scalar(None, pa.bool_()))
    return found


def _is(node: exp.Is, c: _Compiler) -> _Eval:
    this = c.compile(node.this)
    target = node.expression
    negate = bool(node.args.get("negate"))
    sql = _sql(node)
    if isinstance(target, exp.Null):
        test = lambda value: pc.is_null(value)  # noqa: E731 - NaN is not NULL (nan_is_null=False)
    elif isinstance(target, exp.Boolean):
        wanted = bool(target.this)
        test = lambda value: pc.fill_null(  # noqa: E731
            _bool(value, sql) if wanted else pc.invert(_bool(value, sql)), False
        )
    else:
        raise ExpressionError(
            f"'{sql}': IS takes NULL, TRUE or FALSE", hint="use IS DISTINCT FROM or = to compare values"
        )
    return lambda ctx: pc.invert(test(this(ctx))) if negate else test(this(ctx))


# --------------------------------------------------------------------------- logic


def _not(node: exp.Not, c: _Compiler) -> _Eval:
    inner = c.compile(node.this)
    sql = _sql(node)
    return lambda ctx: pc.invert(_bool(inner(ctx), sql))


def _and(node: exp.And, c: _Compiler) -> _Eval:
    left, right = c.compile(node.this), c.compile(node.expression)
    sql = _sql(node)

    def evaluate(ctx: _Ctx) -> _Value:
        lv = _bool(left(ctx), sql)
        # The right side matters only where the left is not FALSE.
        rv = _bool(_lazy(right, ctx, pc.fill_null(lv, True)), sql)
        return pc.and_kleene(lv, rv)

    return evaluate


def _or(node: exp.Or, c: _Compiler) -> _Eval:
    left, right = c.compile(node.this), c.compile(node.expression)
    sql = _sql(node)

    def evaluate(ctx: _Ctx) -> _Value:
        lv = _bool(left(ctx), sql)
        # The right side matters only where the left is not TRUE.
        rv = _bool(_lazy(right, ctx, pc.invert(pc.fill_null(lv, False))), sql)
        return pc.or_kleene(lv, rv)

    return evaluate


# --------------------------------------------------------------------------- conditionals


def _case_eval(branches: list[tuple[_Eval, _Eval]], default: _Eval | None, sql: str) -> _Eval:
    """CASE WHEN ... : each WHEN and THEN is evaluated only where it can matter (DuckDB)."""

    def evaluate(ctx: _Ctx) -> _Value:
        n = ctx.num_rows
        open_rows: _Value | None = None  # None: every row is still open
        takes: list[pa.Array] = []
        values: list[_Value] = []
        for condition, then in branches:
            hit = pc.fill_null(_bool(_lazy(condition, ctx, open_rows), sql), False)
            take = hit if open_rows is None else pc.and_(open_rows, hit)
            values.append(_lazy(then, ctx, take))
            takes.append(_full(take, n))
            open_rows = pc.invert(take) if open_rows is None else pc.and_(open_rows, pc.invert(take))
        otherwise = _lazy(default, ctx, open_rows) if default is not None else pa.scalar(None)
        values = _unify([*values, otherwise], sql)
        if _is_null_type(values[0].type):
            return pa.nulls(n)
        conditions = pc.make_struct(*takes, field_names=[f"c{i}" for i in range(len(takes))])
        return pc.case_when(conditions, *values)

    return evaluate


def _case(node: exp.Case, c: _Compiler) -> _Eval:
    operand = node.this
    branches = []
    for branch in node.args["ifs"]:
        condition = branch.this
        if operand is not None:
            # CASE x WHEN v THEN ... is CASE WHEN x = v THEN ... (as DuckDB rewrites it).
            condition = exp.EQ(this=operand.copy(), expression=condition.copy())
        branches.append((c.compile(condition), c.compile(branch.args["true"])))
    default = c.compile(node.args["default"]) if node.args.get("default") is not None else None
    return _case_eval(branches, default, _sql(node))


def _if(node: exp.If, c: _Compiler) -> _Eval:
    default = c.compile(node.args["false"]) if node.args.get("false") is not None else None
    return _case_eval([(c.compile(node.this), c.compile(node.args["true"]))], default, _sql(node))


def _coalesce(node: exp.Coalesce, c: _Compiler) -> _Eval:
    parts = [c.compile(node.this)] + [c.compile(e) for e in node.expressions]
    sql = _sql(node)

    def evaluate(ctx: _Ctx) -> _Value:
        result = parts[0](ctx)
        for part in parts[1:]:
            # Later arguments matter only where everything before them is NULL.
            result, more = _unify([result, _lazy(part, ctx, pc.is_null(result))], sql)
            result = pc.coalesce(result, more)
        return result

    return evaluate


def _nullif(node: exp.Nullif, c: _Compiler) -> _Eval:
    this, other = c.compile(node.this), c.compile(node.expression)
    other_lit = _string_literal(node.expression)
    sql = _sql(node)

    def evaluate(ctx: _Ctx) -> _Value:
        value = this(ctx)
        same = pc.fill_null(_compare_values("eq", value, _coerce_literal(other(ctx), other_lit, value, sql)), False)
        return pc.if_else(same, pa.scalar(None, value.type), value)

    return evaluate


def _extreme(op: str) -> Callable[[exp.Func, _Compiler], _Eval]:
    # greatest/least skip NULLs and use DuckDB's NaN order (NaN is the greatest).
    def translate(node: exp.Func, c: _Compiler) -> _Eval:
        parts = [c.compile(node.this)] + [c.compile(e) for e in node.expressions]
        sql = _sql(node)

        def evaluate(ctx: _Ctx) -> _Value:
            values = _unify([part(ctx) for part in parts], sql)
            best = values[0]
            for value in values[1:]:
                better = pc.fill_null(_compare_values(op, value, best), False)
                best = pc.if_else(pc.or_(pc.is_null(best), better), value, best)
            return best

        return evaluate

    return translate


# --------------------------------------------------------------------------- casts

_TYPES: dict[Any, pa.DataType] = {
    exp.DataType.Type.TINYINT: pa.int8(),
    exp.DataType.Type.SMALLINT: pa.int16(),
    # INT is int64 here (DuckDB: int32): ETL columns are int64 and int32 overflow surprises.
    exp.DataType.Type.INT: pa.int64(),
    exp.DataType.Type.BIGINT: pa.int64(),
    exp.DataType.Type.FLOAT: pa.float64(),
    exp.DataType.Type.DOUBLE: pa.float64(),
    exp.DataType.Type.TEXT: pa.string(),
    exp.DataType.Type.VARCHAR: pa.string(),
    exp.DataType.Type.CHAR: pa.string(),
    exp.DataType.Type.BOOLEAN: pa.bool_(),
    exp.DataType.Type.DATE: pa.date32(),
    exp.DataType.Type.TIMESTAMP: pa.timestamp("us"),
    exp.DataType.Type.TIMESTAMPNTZ: pa.timestamp("us"),
    exp.DataType.Type.DATETIME: pa.timestamp("us"),
    exp.DataType.Type.TIMESTAMPTZ: pa.timestamp("us", tz="UTC"),
}
_CAST_TYPE_NAMES = (
    "TINYINT, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p, s), VARCHAR, BOOLEAN, DATE, TIMESTAMP, TIMESTAMPTZ"
)

_TRUE_TEXT = ["true", "t", "yes", "y", "1"]
_FALSE_TEXT = ["false", "f", "no", "n", "0"]


def _arrow_type(data_type: exp.DataType, where: exp.Expression) -> pa.DataType:
    kind = data_type.this
    if kind == exp.DataType.Type.DECIMAL:
        params = [int(p.this.this) for p in data_type.expressions] if data_type.expressions else [18, 3]
        precision, scale = (params + [0])[:2] if len(params) == 1 else params[:2]
        return pa.decimal128(precision, scale)
    if kind in _TYPES and not data_type.expressions:
        return _TYPES[kind]
    if kind in (exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR, exp.DataType.Type.TEXT):
        return pa.string()  # VARCHAR(n): the length is not enforced (as in DuckDB)
    raise ExpressionError(f"unsupported type in '{_sql(where)}'", hint=f"supported types: {_CAST_TYPE_NAMES}")


def _text_to_bool(value: _Value) -> _Value:
    if isinstance(value, pa.Scalar):
        return _text_to_bool(pa.array([value.as_py()], pa.string()))[0]
    folded = pc.utf8_lower(value)
    truthy = pc.is_in(folded, value_set=pa.array(_TRUE_TEXT))
    falsy = pc.is_in(folded, value_set=pa.array(_FALSE_TEXT))
    bad = pc.and_(pc.invert(pc.or_(truthy, falsy)), pc.is_valid(value))
    if pc.any(bad).as_py():
        raise pa.ArrowInvalid("not a boolean")
    return pc.if_else(pc.is_null(value), pa.scalar(None, pa.bool_()), truthy)


def _cast_to(value: _Value, to: pa.DataType) -> _Value:
    source = value.type
    if source == to:
        return value
    if _is_string(source):
        if pa.types.is_boolean(to):
            return _text_to_bool(value)
        if _is_numeric(to) or _is_temporal(to):
            value = pc.utf8_trim(value, characters=_CAST_WHITESPACE)
    elif pa.types.is_floating(source) and pa.types.is_integer(to):
        value = pc.round(value, round_mode="half_to_even")  # DuckDB rounds doubles half to even
    elif pa.types.is_decimal(source) and pa.types.is_integer(to):
        value = pc.round(value, round_mode="half_towards_infinity")
    return _cast_value(value, to)


def _cast(node: exp.Cast, c: _Compiler) -> _Eval:
    to = _arrow_type(node.args["to"], node)
    inner = c.compile(node.this)
    sql = _sql(node)

    def evaluate(ctx: _Ctx) -> _Value:
        value = inner(ctx)
        try:
            return _cast_to(value, to)
        except pa.ArrowInvalid:
            if isinstance(value, pa.Scalar) or len(value) == 1:
                shown = value.as_py() if isinstance(value, pa.Scalar) else value[0].as_py()
                raise _DataError(f"cannot cast {shown!r} to {to} in '{sql}'") from None
            raise _DataError(f"cannot cast to {to} in '{sql}'") from None
        except pa.ArrowNotImplementedError:
            raise ExpressionError(f"cannot cast {value.type} to {to} in '{sql}'") from None

    if isinstance(node.this, (exp.Literal, exp.Null, exp.Boolean)):
        # A typed literal (DATE '2024-01-01'): a bad one is a spec error, found now.
        empty = _Ctx(pa.RecordBatch.from_pydict({}))
        try:
            constant = evaluate(empty)
        except _DataError as exc:
            raise ExpressionError(f"invalid literal: {exc}") from None
        return lambda ctx: constant
    return evaluate


# --------------------------------------------------------------------------- text


def _text_fn(kernel: Callable[[_Value], _Value]) -> Callable[[exp.Func, _Compiler], _Eval]:
    def translate(node: exp.Func, c: _Compiler) -> _Eval:
        inner = c.compile(node.this)
        return lambda ctx: kernel(_typed(inner(ctx), pa.string()))

    return translate


def _trim(node: exp.Trim, c: _Compiler) -> _Eval:
    inner = c.compile(node.this)
    chars = " " if node.expression is None else _constant_string(node.expression, "the characters to trim", node)
    position = (node.args.get("position") or "BOTH").upper()
    kernel = {"BOTH": pc.utf8_trim, "LEADING": pc.utf8_ltrim, "TRAILING": pc.utf8_rtrim}[position]
    return lambda ctx: kernel(_typed(inner(ctx), pa.string()), characters=chars)


def _length(node: exp.Length, c: _Compiler) -> _Eval:
    inner = c.compile(node.this)
    # Characters (code points), as DuckDB's length; int64 like DuckDB's BIGINT.
    return lambda ctx: pc.utf8_length(_typed(inner(ctx), pa.string())).cast(pa.int64())


def _slice_bounds(start: int, length: int | None) -> tuple[int, int | None]:
    """DuckDB's 1-based substring(s, start, length) as a Python-style [begin, end) slice.

    Negative starts count from the end; a negative length takes the characters before
    ``start``; a range reaching outside the string is clipped.
    """
    if start > 0:
        if length is None:
            return start - 1, None
        if length >= 0:
            return start - 1, start - 1 + length
        return max(0, start - 1 + length), start - 1
    if start == 0:
        if length is None:
            return 0, None
        return 0, max(0, length - 1)
    if length is None:
        return start, None
    if length >= 0:
        end = start + length
        return start, end if end < 0 else None
    return start + length, start


def _substring(node: exp.Substring, c: _Compiler) -> _Eval:
    inner = c.compile(node.this)
    start = _constant_int(node.args.get("start"), "the start of substring", node) if node.args.get("start") else 1
    length = _constant_int(node.args["length"], "the length of substring", node) if node.args.get("length") else None
    begin, end = _slice_bounds(start, length)
    return lambda ctx: pc.utf8_slice_codeunits(_typed(inner(ctx), pa.string()), begin, end)


def _concat(node: exp.Concat, c: _Compiler) -> _Eval:
    parts = [c.compile(e) for e in node.expressions]
    # DuckDB's concat() skips NULLs (concat(NULL, NULL) = '').
    return lambda ctx: pc.binary_join_element_wise(
        *[_strings(_typed(part(ctx), pa.string())) for part in parts], "", null_handling="replace", null_replacement=""
    )


def _dpipe(node: exp.DPipe, c: _Compiler) -> _Eval:
    left, right = c.compile(node.this), c.compile(node.expression)
    # `||` propagates NULL (DuckDB: 'a' || NULL is NULL).
    return lambda ctx: pc.binary_join_element_wise(
        _strings(_typed(left(ctx), pa.string())), _strings(_typed(right(ctx), pa.string())), ""
    )


def _like_pattern(pattern: str, escape: str | None, where: exp.Expression) -> str:
    """A SQL LIKE pattern in Arrow's syntax, where backslash always escapes.

    DuckDB has no default escape character, so a backslash in the pattern is literal
    unless it is the declared ESCAPE character.
    """
    if escape is not None and len(escape) != 1:
        raise ExpressionError(f"ESCAPE in '{_sql(where)}' must be one character")
    out, chars = [], iter(pattern)
    for char in chars:
        if escape is not None and char == escape:
            following = next(chars, None)
            if following is None:
                raise ExpressionError(f"the LIKE pattern in '{_sql(where)}' ends with its escape character")
            out.append("\\" + following)
        elif char == "\\":
            out.append("\\\\")
        else:
            out.append(char)
    return "".join(out)


def _like_eval(node: exp.Like | exp.ILike, c: _Compiler, escape: str | None, where: exp.Expression) -> _Eval:
    this = c.compile(node.this)
    pattern = _like_pattern(_constant_string(node.expression, "the LIKE pattern", where), escape, where)
    ignore_case = isinstance(node, exp.ILike)
    negate = bool(node.args.get("negate"))

    def evaluate(ctx: _Ctx) -> _Value:
        matched = pc.match_like(_typed(this(ctx), pa.string()), pattern, ignore_case=ignore_case)
        return pc.invert(matched) if negate else matched

    return evaluate


def _like(node: exp.Like | exp.ILike, c: _Compiler) -> _Eval:
    return _like_eval(node, c, None, node)


def _escape(node: exp.Escape, c: _Compiler) -> _Eval:
    like = node.this
    if not isinstance(like, (exp.Like, exp.ILike)):
        raise _unsupported(node)
    escape = _constant_string(node.expression, "the ESCAPE character", node)
    return _like_eval(like, c, escape, node)


def _pattern_fn(kernel: Callable[..., _Value], what: str) -> Callable[[exp.Func, _Compiler], _Eval]:
    def translate(node: exp.Func, c: _Compiler) -> _Eval:
        this = c.compile(node.this)
        pattern = _constant_string(node.expression, what, node)
        return lambda ctx: kernel(_typed(this(ctx), pa.string()), pattern=pattern)

    return translate


def _regexp(node: exp.RegexpLike, c: _Compiler) -> _Eval:
    this = c.compile(node.this)
    pattern = _constant_string(node.expression, "the regular expression", node)
    flags = _constant_string(node.args["flag"], "the regexp flags", node) if node.args.get("flag") else ""
    if set(flags) - {"i", "c"}:
        raise ExpressionError(f"unsupported regexp flags '{flags}' in '{_sql(node)}'", hint="supported: 'i', 'c'")
    ignore_case = flags.rfind("i") > flags.rfind("c")
    if node.args.get("full_match"):
        pattern = f"^(?:{pattern})$"
    try:  # RE2 syntax (as DuckDB); checked now so a bad pattern is a spec error
        pc.match_substring_regex(pa.array([""]), pattern=pattern, ignore_case=ignore_case)
    except pa.ArrowInvalid as exc:
        raise ExpressionError(f"invalid regular expression in '{_sql(node)}': {_first_line(exc)}") from None
    return lambda ctx: pc.match_substring_regex(
        _typed(this(ctx), pa.string()), pattern=pattern, ignore_case=ignore_case
    )


# --------------------------------------------------------------------------- numbers


def _abs(node: exp.Abs, c: _Compiler) -> _Eval:
    inner = c.compile(node.this)
    return lambda ctx: pc.abs_checked(_typed(inner(ctx), pa.int64()))


def _round_values(value: _Value, digits: int) -> _Value:
    value = _typed(value, pa.float64())
    if not pa.types.is_floating(value.type):
        if pa.types.is_integer(value.type) and digits >= 0:
            return value
        return pc.round(value, digits, round_mode="half_towards_infinity")
    if isinstance(value, pa.Scalar):
        return _round_values(pa.array([value.as_py()], value.type), digits)[0]
    # DuckDB rounds the exact binary value half away from zero (round(2.675, 2) = 2.67,
    # as 2.675 is stored as 2.67499...). Scaling by 10^d is monotone, so it can only be
    # wrong where the scaled value lands exactly on a .5 tie: those rows are redone exactly.
    modifier = pa.scalar(10.0 ** abs(digits))
    scaled = pc.multiply(value, modifier) if digits >= 0 else pc.divide(value, modifier)
    whole = pc.round(scaled, round_mode="half_towards_infinity")
    rounded = pc.divide(whole, modifier) if digits >= 0 else pc.multiply(whole, modifier)
    rounded = pc.if_else(pc.is_finite(rounded), rounded, value)  # overflowed: keep x (DuckDB)
    ties = pc.fill_null(pc.equal(pc.abs(pc.subtract(scaled, pc.trunc(scaled))), 0.5), False)
    if pc.any(ties).as_py():
        # Per row, but only for exact ties (rare): Decimal holds the stored value exactly.
        quantum = decimal.Decimal(1).scaleb(-digits)
        tied = pc.filter(value, ties).to_pylist()
        context = decimal.Context(prec=800, rounding=decimal.ROUND_HALF_UP)
        exact = [float(decimal.Decimal(x).quantize(quantum, context=context)) for x in tied]
        rounded = pc.replace_with_mask(rounded, ties, pa.array(exact, value.type))
    return rounded


def _round(node: exp.Round, c: _Compiler) -> _Eval:
    inner = c.compile(node.this)
    digits = _constant_int(node.args["decimals"], "the decimals of round", node) if node.args.get("decimals") else 0
    return lambda ctx: _round_values(inner(ctx), digits)


def _floor_ceil(kernel: Callable[[_Value], _Value]) -> Callable[[exp.Func, _Compiler], _Eval]:
    def translate(node: exp.Func, c: _Compiler) -> _Eval:
        inner = c.compile(node.this)
        def evaluate(ctx: _Ctx) -> _Value:
            value = inner(ctx)
            # Integers give DOUBLE, as in DuckDB.
            return kernel(value if pa.types.is_decimal(value.type) else _as_float(value))

        return evaluate

    return translate


# --------------------------------------------------------------------------- dates and times

_TRUNC_UNITS = ("year", "quarter", "month", "week", "day", "hour", "minute", "second", "millisecond", "microsecond")


def _unit(node: exp.Expression | None, where: exp.Expression, allowed: Sequence[str], what: str) -> str:
    if isinstance(node, (exp.Var, exp.Literal, exp.Identifier)):
        name = str(node.this).lower()
    elif isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier):
        name = node.this.this.lower()
    else:
        name = ""
    aliases = {"years": "year", "months": "month", "days": "day", "hours": "hour", "minutes": "minute",
               "seconds": "second", "weeks": "week", "quarters": "quarter", "dayofweek": "dow",
               "weekday": "dow", "dayofyear": "doy", "isoweek": "week"}
    name = aliases.get(name, name)
    if name not in allowed:
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"supported: {', '.join(allowed)}"
        raise ExpressionError(f"unsupported {what} '{name}' in '{_sql(where)}'", hint=hint)
    return name


def _as_timestamp(value: _Value) -> _Value:
    if pa.types.is_date(value.type) or _is_null_type(value.type):
        return value.cast(pa.timestamp("us"))
    return value


def _date_trunc(node: exp.Expression, c: _Compiler) -> _Eval:
    unit = _unit(node.args.get("unit"), node, _TRUNC_UNITS, "date_trunc unit")
    inner = c.compile(node.this)
    # DuckDB's date_trunc returns a TIMESTAMP for a DATE too; weeks start on Monday.
    return lambda ctx: pc.floor_temporal(_as_timestamp(inner(ctx)), unit=unit)


_FIELDS: dict[str, Callable[[_Value], _Value]] = {
    "year": pc.year,
    "quarter": pc.quarter,
    "month": pc.month,
    "day": pc.day,
    "hour": lambda v: pc.hour(_as_timestamp(v)),
    "minute": lambda v: pc.minute(_as_timestamp(v)),
    "second": lambda v: pc.second(_as_timestamp(v)),
    "dow": lambda v: pc.day_of_week(v, count_from_zero=True, week_start=7),  # Sunday = 0
    "isodow": lambda v: pc.day_of_week(v, count_from_zero=False, week_start=1),  # Monday = 1
    "doy": pc.day_of_year,
    "week": pc.iso_week,
}


def _field_eval(field: str, inner: _Eval) -> _Eval:
    kernel = _FIELDS[field]
    return lambda ctx: kernel(_typed(inner(ctx), pa.date32())).cast(pa.int64())


def _extract(node: exp.Extract, c: _Compiler) -> _Eval:
    field = _unit(node.this, node, tuple(_FIELDS), "EXTRACT field")
    return _field_eval(field, c.compile(node.expression))


def _part_fn(field: str) -> Callable[[exp.Func, _Compiler], _Eval]:
    return lambda node, c: _field_eval(field, c.compile(node.this))


def _date_part(node: exp.Anonymous, c: _Compiler) -> _Eval:
    if len(node.expressions) != 2:
        raise ExpressionError(f"'{_sql(node)}': date_part takes a field and a value", hint="date_part('year', d)")
    field = _unit(node.expressions[0], node, tuple(_FIELDS), "date_part field")
    return _field_eval(field, c.compile(node.expressions[1]))


def _current_date(node: exp.Expression, c: _Compiler) -> _Eval:
    return lambda ctx: pa.scalar(ctx.now().date(), pa.date32())


def _now(node: exp.Expression, c: _Compiler) -> _Eval:
    if isinstance(node, exp.Anonymous) and node.expressions:
        raise ExpressionError(f"'{_sql(node)}' takes no arguments")
    return lambda ctx: pa.scalar(ctx.now(), pa.timestamp("us", tz="UTC"))


#: Functions that sqlglot leaves as ``exp.Anonymous``, by lower-case name.
_ANONYMOUS: dict[str, Callable[[exp.Anonymous, _Compiler], _Eval]] = {
    "now": _now,
    "get_current_timestamp": _now,
    "date_part": _date_part,
    "datepart": _date_part,
}


def _anonymous(node: exp.Anonymous, c: _Compiler) -> _Eval:
    translate = _ANONYMOUS.get(node.name.lower())
    if translate is None:
        raise _unsupported(node)
    return translate(node, c)


# --------------------------------------------------------------------------- the table

_BINARY = ("this", "expression")

#: sqlglot node class -> translator. This table *is* the whitelist.
_RULES: dict[type[exp.Expression], _Rule] = {
    # leaves
    exp.Column: _Rule(_column, ("this", "table", "db", "catalog")),
    exp.Literal: _Rule(_literal, ("this", "is_string")),
    exp.Boolean: _Rule(_boolean, ("this",)),
    exp.Null: _Rule(_null, ()),
    exp.Paren: _Rule(_paren, ("this",)),
    # arithmetic
    exp.Add: _Rule(_arith("add", pc.add_checked), _BINARY, ("+",)),
    exp.Sub: _Rule(_arith("sub", pc.subtract_checked), _BINARY, ("-",)),
    exp.Mul: _Rule(_arith("mul", pc.multiply_checked), _BINARY, ("*",)),
    exp.Div: _Rule(_div, (*_BINARY, "typed", "safe"), ("/",)),
    exp.IntDiv: _Rule(_int_div, _BINARY, ("//",)),
    exp.Mod: _Rule(_mod, _BINARY, ("%",)),
    exp.Neg: _Rule(_neg, ("this",), ("-",)),
    # comparisons
    exp.EQ: _Rule(_comparison("eq"), _BINARY, ("=",)),
    exp.NEQ: _Rule(_comparison("neq"), _BINARY, ("<>", "!=")),
    exp.GT: _Rule(_comparison("gt"), _BINARY, (">",)),
    exp.GTE: _Rule(_comparison("gte"), _BINARY, (">=",)),
    exp.LT: _Rule(_comparison("lt"), _BINARY, ("<",)),
    exp.LTE: _Rule(_comparison("lte"), _BINARY, ("<=",)),
    exp.NullSafeEQ: _Rule(_null_safe(False), _BINARY, ("IS NOT DISTINCT FROM",)),
    exp.NullSafeNEQ: _Rule(_null_safe(True), _BINARY, ("IS DISTINCT FROM",)),
    exp.Between: _Rule(_between, ("this", "low", "high"), ("BETWEEN",)),
    exp.In: _Rule(_in, ("this", "expressions", "query", "unnest", "field"), ("IN",)),
    exp.Is: _Rule(_is, (*_BINARY, "negate"), ("IS",)),
    exp.Like: _Rule(_like, (*_BINARY, "negate"), ("LIKE",)),
    exp.ILike: _Rule(_like, (*_BINARY, "negate"), ("ILIKE",)),
    exp.Escape: _Rule(_escape, _BINARY, ("ESCAPE",)),
    # logic
    exp.And: _Rule(_and, _BINARY, ("AND",)),
    exp.Or: _Rule(_or, _BINARY, ("OR",)),
    exp.Not: _Rule(_not, ("this",), ("NOT",)),
    # conditionals
    exp.Case: _Rule(_case, ("this", "ifs", "default"), ("CASE",)),
    exp.If: _Rule(_if, ("this", "true", "false"), ("if",)),
    exp.Coalesce: _Rule(_coalesce, ("this", "expressions"), ("coalesce",)),
    exp.Nullif: _Rule(_nullif, _BINARY, ("nullif",)),
    exp.Greatest: _Rule(_extreme("gt"), ("this", "expressions", "ignore_nulls"), ("greatest",)),
    exp.Least: _Rule(_extreme("lt"), ("this", "expressions", "ignore_nulls"), ("least",)),
    exp.Cast: _Rule(_cast, ("this", "to"), ("CAST", "::")),
    # text
    exp.Lower: _Rule(_text_fn(pc.utf8_lower), ("this",), ("lower",)),
    exp.Upper: _Rule(_text_fn(pc.utf8_upper), ("this",), ("upper",)),
    exp.Trim: _Rule(_trim, ("this", "expression", "position"), ("trim", "ltrim", "rtrim")),
    exp.Length: _Rule(_length, ("this",), ("length",)),
    exp.Substring: _Rule(_substring, ("this", "start", "length"), ("substring", "substr")),
    exp.Concat: _Rule(_concat, ("expressions", "safe", "coalesce"), ("concat",)),
    exp.DPipe: _Rule(_dpipe, (*_BINARY, "safe"), ("||",)),
    exp.StartsWith: _Rule(_pattern_fn(pc.starts_with, "the prefix"), _BINARY, ("starts_with",)),
    exp.EndsWith: _Rule(_pattern_fn(pc.ends_with, "the suffix"), _BINARY, ("ends_with",)),
    exp.Contains: _Rule(_pattern_fn(pc.match_substring, "the substring"), _BINARY, ("contains",)),
    exp.RegexpLike: _Rule(_regexp, (*_BINARY, "flag", "full_match"), ("regexp_matches",)),
    # numbers
    exp.Abs: _Rule(_abs, ("this",), ("abs",)),
    exp.Round: _Rule(_round, ("this", "decimals"), ("round",)),
    exp.Floor: _Rule(_floor_ceil(pc.floor), ("this",), ("floor",)),
    exp.Ceil: _Rule(_floor_ceil(pc.ceil), ("this",), ("ceil",)),
    # dates and times
    exp.TimestampTrunc: _Rule(_date_trunc, ("this", "unit"), ("date_trunc",)),
    exp.DateTrunc: _Rule(_date_trunc, ("this", "unit"), ()),
    exp.Extract: _Rule(_extract, _BINARY, ("extract",)),
    exp.Year: _Rule(_part_fn("year"), ("this",), ("year",)),
    exp.Quarter: _Rule(_part_fn("quarter"), ("this",), ("quarter",)),
    exp.Month: _Rule(_part_fn("month"), ("this",), ("month",)),
    exp.Day: _Rule(_part_fn("day"), ("this",), ("day",)),
    exp.Hour: _Rule(_part_fn("hour"), ("this",), ("hour",)),
    exp.Minute: _Rule(_part_fn("minute"), ("this",), ("minute",)),
    exp.Second: _Rule(_part_fn("second"), ("this",), ("second",)),
    exp.DayOfWeek: _Rule(_part_fn("dow"), ("this",), ("dayofweek",)),
    exp.CurrentDate: _Rule(_current_date, (), ("current_date",)),
    exp.CurrentTimestamp: _Rule(_now, (), ("current_timestamp",)),
    exp.Anonymous: _Rule(_anonymous, ("this", "expressions"), tuple(_ANONYMOUS)),
}

#: Every function name an expression may call (for messages and docs).
SUPPORTED_FUNCTIONS: tuple[str, ...] = tuple(
    sorted({name for rule in _RULES.values() for name in rule.names if name[0].isalpha() and name.islower()})
)

_SUPPORTED_SYNTAX = (
    "columns, literals (numbers, 'text', TRUE/FALSE/NULL, DATE '...', TIMESTAMP '...'), "
    "+ - * / // %, = <> < <= > >=, AND/OR/NOT, IN (...), BETWEEN, IS [NOT] NULL, "
    "[I]LIKE [ESCAPE], CASE WHEN, CAST/::, || and the functions " + ", ".join(SUPPORTED_FUNCTIONS)
)


# --------------------------------------------------------------------------- public API


class Expression:
    """A compiled SQL expression: evaluates on ``pyarrow.RecordBatch`` es, vectorized.

    Attributes:
        sql: the source text (for a structured condition, its SQL rendering).
        columns: the column names the expression reads.

    Example:
        >>> import pyarrow as pa
        >>> expr = compile_expression("upper(name) || '!'")
        >>> expr.evaluate(pa.RecordBatch.from_pydict({"name": ["ada", None]})).to_pylist()
        ['ADA!', None]
    """

    __slots__ = ("sql", "columns", "_evaluate", "_condition")

    def __init__(self, sql: str, columns: frozenset[str], evaluate: _Eval, condition: bool = False):
        self.sql = sql
        self.columns = columns
        self._evaluate = evaluate
        self._condition = condition

    def __repr__(self) -> str:
        kind = "Condition" if self._condition else "Expression"
        return f"<{kind} {self.sql!r}>"

    def __reduce__(self):
        # Pickles as its text: workers recompile (and cache) it.
        return (_compile, (self.sql, self._condition))

    def check(self, schema: pa.Schema) -> None:
        """Raise :class:`ExpressionError` if the expression cannot run on ``schema``.

        Unknown columns (with a did-you-mean hint), functions applied to the wrong types,
        and a condition that is not boolean are all reported here, before any data flows.

        Args:
            schema: the schema of the batches the expression will see.
        """
        unknown = [name for name in sorted(self.columns) if _field_index(schema, name) < 0]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, schema.names, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "columns: " + ", ".join(schema.names)
            raise ExpressionError(f"unknown column '{name}'", hint=hint)
        try:
            result_type = self._dry_run(schema)
        except ExpressionError:
            if any(_is_null_type(schema.field(_field_index(schema, n)).type) for n in self.columns):
                return  # a column of unknown (null) type: the real data decides
            raise
        if self._condition and not (pa.types.is_boolean(result_type) or _is_null_type(result_type)):
            raise ExpressionError(
                f"condition '{self.sql}' gives {result_type}, not a boolean",
                hint="compare it, e.g. 'x > 0' or 'x IS NOT NULL'",
            )

    def output_type(self, schema: pa.Schema) -> pa.DataType | None:
        """The Arrow type the expression gives on ``schema`` (None if it cannot tell)."""
        try:
            return self._dry_run(schema)
        except Exception:  # best effort by contract: any failure means "unknown"
            return None

    def _dry_run(self, schema: pa.Schema) -> pa.DataType:
        empty = pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)
        try:
            return self._run(empty).type
        except _DataError:
            return pa.null()  # a constant that fails on every row; the rows will say so

    def _run(self, batch: pa.RecordBatch, clock: dict | None = None) -> pa.Array:
        ctx = _Ctx(batch, clock)
        return _full(self._evaluate(ctx), batch.num_rows)

    def evaluate(self, batch: pa.RecordBatch) -> pa.Array:
        """The expression's value for every row of ``batch``.

        Raises:
            EvaluationError: some row failed (division by zero, overflow, bad cast).
            ExpressionError: the expression does not fit the batch's types.
        """
        return self._run(batch)

    def evaluate_with_errors(self, batch: pa.RecordBatch) -> tuple[pa.Array, dict[int, str]]:
        """Values for every row, with NULL at the rows that failed, and why each failed.

        The whole batch is evaluated at once; only if some row fails is the batch bisected
        to find the failing rows (O(k log n) evaluations for k bad rows), and the others are
        evaluated normally.

        Args:
            batch: the rows.

        Returns:
            ``(values, {row_index: message})``, e.g. ``{3: "division by zero in 'a / b'"}``.
        """
        clock: dict = {}
        try:
            return self._run(batch, clock), {}
        except _DataError:
            if batch.num_rows == 0:
                return pa.array([], type=self.output_type(batch.schema) or pa.null()), {}
        errors: dict[int, str] = {}
        # Iterative bisection: each pending slice either evaluates or splits in two.
        pending = [(0, batch.num_rows)]
        done: dict[int, pa.Array | None] = {}
        while pending:
            offset, length = pending.pop()
            try:
                done[offset] = self._run(batch.slice(offset, length), clock)
            except _DataError as exc:
                if length == 1:
                    errors[offset] = str(exc)
                    done[offset] = None
                else:
                    half = length // 2
                    pending.append((offset + half, length - half))
                    pending.append((offset, half))
        out_type = next((p.type for p in done.values() if p is not None and not _is_null_type(p.type)), None)
        out_type = out_type or self.output_type(batch.schema) or pa.null()
        pieces = [
            pa.nulls(1, out_type) if done[offset] is None else _cast_value(done[offset], out_type)
            for offset in sorted(done)
        ]
        return pa.concat_arrays(pieces), errors


def _parse(sql: str) -> exp.Expression:
    if not isinstance(sql, str):
        raise ExpressionError(f"an expression must be SQL text, got {type(sql).__name__}")
    if not sql.strip():
        raise ExpressionError("empty expression", hint="write a SQL expression, e.g. 'amount * 2'")
    try:
        return sqlglot.parse_one(sql, read=_DIALECT)
    except SqlglotError as exc:
        message = _first_line(exc)
        raise ExpressionError(f"cannot parse '{sql}': {message}", hint="check the quotes and parentheses") from None


@functools.lru_cache(maxsize=2048)
def _compile(sql: str, condition: bool) -> Expression:
    tree = _parse(sql)
    compiler = _Compiler()
    evaluate = compiler.compile(tree)
    return Expression(sql, frozenset(compiler.columns), evaluate, condition)


def compile_expression(sql: str) -> Expression:
    """Compile a SQL expression (cached), checking every node against the whitelist.

    Args:
        sql: one SQL expression in DuckDB syntax, e.g. ``"amount * (1 + tax_rate)"``.

    Raises:
        ExpressionError: unparsable, or a construct outside the whitelist (subqueries,
            ``SELECT``, unknown functions such as ``system()`` or ``read_csv()``).

    Example:
        >>> compile_expression("lower(trim(email))").columns
        frozenset({'email'})
    """
    if not isinstance(sql, str):
        raise ExpressionError(f"an expression must be SQL text, got {type(sql).__name__}")
    return _compile(sql, False)


# --------------------------------------------------------------------------- structured conditions

#: Structured condition ops -> how many values they take ("one", "list", "pair", "none").
CONDITION_OPS: dict[str, str] = {
    "eq": "one",
    "ne": "one",
    "gt": "one",
    "gte": "one",
    "lt": "one",
    "lte": "one",
    "in": "list",
    "not_in": "list",
    "between": "pair",
    "contains": "text",
    "starts_with": "text",
    "ends_with": "text",
    "regex": "text",
    "is_null": "none",
    "not_null": "none",
}

_COMPARISON_NODES = {"eq": exp.EQ, "ne": exp.NEQ, "gt": exp.GT, "gte": exp.GTE, "lt": exp.LT, "lte": exp.LTE}
_TEXT_NODES = {
    "contains": exp.Contains,
    "starts_with": exp.StartsWith,
    "ends_with": exp.EndsWith,
    "regex": exp.RegexpLike,
}
_LEAF_KEYS = ("column", "op", "value")
_GROUP_KEYS = ("and", "or", "not")


def _suggest(word: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.5)
    return f"did you mean '{close[0]}'?" if close else None


def _value_node(value: Any, where: str) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        return exp.Literal.number(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return exp.Literal.number(repr(value))
        return exp.Cast(this=exp.Literal.string(repr(value)), to=exp.DataType.build("DOUBLE"))
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, _dt.datetime):
        return exp.Cast(this=exp.Literal.string(value.isoformat(sep=" ")), to=exp.DataType.build("TIMESTAMP"))
    if isinstance(value, _dt.date):
        return exp.Cast(this=exp.Literal.string(value.isoformat()), to=exp.DataType.build("DATE"))
    raise ExpressionError(
        f"{where}: unsupported value {value!r} ({type(value).__name__})",
        hint="use a number, text, true/false, a date or a list of those",
    )


def _wrap(node: exp.Expression) -> exp.Expression:
    return exp.Paren(this=node) if isinstance(node, (exp.Connector, exp.Not)) else node


def _leaf_node(node: Mapping[str, Any], where: str) -> exp.Expression:
    extra = [k for k in node if k not in _LEAF_KEYS]
    if extra:
        raise ExpressionError(
            f"{where}: unknown key '{extra[0]}' in a condition",
            hint=_suggest(extra[0], _LEAF_KEYS + _GROUP_KEYS) or "a leaf has column, op and value",
        )
    column, op = node.get("column"), node.get("op")
    if not isinstance(column, str) or not column:
        raise ExpressionError(
            f"{where}: a condition needs 'column' (a column name)", hint="e.g. {column: age, op: gte, value: 18}"
        )
    if not isinstance(op, str) or op not in CONDITION_OPS:
        raise ExpressionError(
            f"{where}: unknown op {op!r}",
            hint=_suggest(op, CONDITION_OPS) or "ops: " + ", ".join(CONDITION_OPS),
        )
    kind = CONDITION_OPS[op]
    target = exp.Column(this=exp.to_identifier(column, quoted=True))
    has_value = "value" in node
    value = node.get("value")
    if kind == "none":
        if has_value:
            raise ExpressionError(f"{where}: op '{op}' takes no value", hint="remove 'value'")
        test = exp.Is(this=target, expression=exp.Null())
        return exp.Not(this=test) if op == "not_null" else test
    if not has_value:
        raise ExpressionError(f"{where}: op '{op}' needs a 'value'")
    if kind == "list":
        if not isinstance(value, (list, tuple)) or not value:
            raise ExpressionError(f"{where}: op '{op}' needs a non-empty list as value", hint="e.g. value: [US, CA]")
        test = exp.In(this=target, expressions=[_value_node(v, f"{where}.value[{i}]") for i, v in enumerate(value)])
        return exp.Not(this=test) if op == "not_in" else test
    if kind == "pair":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ExpressionError(f"{where}: op 'between' needs value: [low, high]", hint="e.g. value: [18, 65]")
        return exp.Between(
            this=target, low=_value_node(value[0], f"{where}.value[0]"), high=_value_node(value[1], f"{where}.value[1]")
        )
    if value is None:
        raise ExpressionError(
            f"{where}: op '{op}' with a null value never matches (NULL compares as unknown)",
            hint="use op: is_null or op: not_null",
        )
    if kind == "text":
        if not isinstance(value, str):
            raise ExpressionError(f"{where}: op '{op}' needs a text value, got {value!r}")
        return _TEXT_NODES[op](this=target, expression=exp.Literal.string(value))
    if isinstance(value, (list, tuple, dict)):
        raise ExpressionError(
            f"{where}: op '{op}' needs one value, got {type(value).__name__}", hint="use op: in for a list"
        )
    return _COMPARISON_NODES[op](this=target, expression=_value_node(value, f"{where}.value"))


def _condition_node(node: Any, where: str) -> exp.Expression:
    if not isinstance(node, Mapping):
        raise ExpressionError(
            f"{where or 'condition'}: expected a mapping, got {type(node).__name__}",
            hint="use {and: [...]}, {or: [...]}, {not: {...}} or {column: ..., op: ..., value: ...}",
        )
    groups = [key for key in _GROUP_KEYS if key in node]
    if not groups:
        return _leaf_node(node, where or "condition")
    if len(node) != 1:
        other = next(k for k in node if k != groups[0])
        raise ExpressionError(
            f"{where or 'condition'}: '{groups[0]}' cannot be combined with '{other}' in one mapping",
            hint="nest them: {and: [{...}, {...}]}",
        )
    key = groups[0]
    inner = node[key]
    prefix = f"{where}.{key}" if where else key
    if key == "not":
        return exp.Not(this=_wrap(_condition_node(inner, prefix)))
    if not isinstance(inner, (list, tuple)) or not inner:
        raise ExpressionError(f"{prefix}: expected a non-empty list of conditions")
    parts = [_wrap(_condition_node(child, f"{prefix}[{i}]")) for i, child in enumerate(inner)]
    combine = exp.And if key == "and" else exp.Or
    tree = parts[0]
    for part in parts[1:]:
        tree = combine(this=tree, expression=part)
    return tree


def compile_condition(condition: str | Mapping[str, Any]) -> Expression:
    """Compile a boolean condition: SQL text or a structured tree (any depth).

    Args:
        condition: SQL (``"country IN ('US','CA') AND NOT is_test"``) or a tree of
            ``{and: [...]}``, ``{or: [...]}``, ``{not: {...}}`` with leaves
            ``{column, op, value}``; ops are :data:`CONDITION_OPS` (``between`` takes
            ``[low, high]``, ``in``/``not_in`` a list, ``is_null``/``not_null`` no value).

    Raises:
        ExpressionError: a bad shape, an unknown op (with a did-you-mean), or SQL outside
            the whitelist.

    Example:
        >>> compile_condition({"and": [{"column": "age", "op": "between", "value": [18, 65]},
        ...                            {"not": {"column": "email", "op": "is_null"}}]}).sql
        '"age" BETWEEN 18 AND 65 AND (NOT "email" IS NULL)'
    """
    if isinstance(condition, str):
        return _compile(condition, True)
    tree = _condition_node(condition, "")
    return _compile(tree.sql(dialect=_DIALECT), True)
