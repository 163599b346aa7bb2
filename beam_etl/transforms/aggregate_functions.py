"""Aggregate functions as mergeable partial states, vectorized with pyarrow (no Beam here).

An ``aggregates`` entry such as ``revenue: "sum(total)"`` is parsed with sqlglot into an
:class:`AggregateCall`: a whitelisted function, its argument (any SQL expression, evaluated by
``beam_etl.expressions``), an optional ``ORDER BY`` inside the call and an optional
``FILTER (WHERE ...)``. An :class:`AggregatePlan` then works on three shapes:

- :meth:`AggregatePlan.partial` turns one RecordBatch into a *partial table*: one row per
  group with the group keys and the partial state of every aggregate — counts, sums,
  ``(n, mean, M2)`` for variance (merged with Chan's parallel formula), min/max, value lists
  for exact distinct counts and percentiles, HLL/KLL sketches when approximate;
- :meth:`AggregatePlan.merge` merges any number of partial tables into one (associative and
  commutative, so Beam may combine them in any tree);
- :meth:`AggregatePlan.finalize` turns a partial table into output rows.

Rows are mapped to dense group numbers once per call (:func:`group_ids`), and every state
is then a handful of vectorized operations over those numbers; only the sketch states loop
over groups in Python (datasketches has no vectorized HLL update).

Semantics follow SQL and are checked against DuckDB:

- NULL group keys form one group; NaN keys form one group; ``-0.0`` and ``0.0`` are one key.
- ``count(*)`` counts rows, ``count(x)`` non-null values; ``sum``/``avg``/``min``/``max`` skip
  NULLs and are NULL when a group has no non-null value; a global aggregate over no rows still
  yields one row (``count`` 0, the rest NULL).
- ``sum`` of integers is exact (128-bit decimal inside) and returned as int64; a group whose
  sum overflows int64 raises :class:`AggregateOverflow`. ``avg`` returns float64.
- NaN is a value greater than every number (as in DuckDB): ``max`` is NaN when a group has one,
  ``min`` only when every value is NaN; ``sum``/``avg``/variance propagate NaN; percentiles
  sort NaN last; ``count_distinct`` counts NaN once.
- ``stddev``/``variance`` are the sample versions (NULL for fewer than two values);
  ``stddev_pop``/``var_pop`` the population ones.
- ``median(x)`` = ``percentile(x, 0.5)``; ``percentile``/``percentile_cont`` interpolate
  linearly between the two nearest ranks (float64); ``percentile_disc`` returns the first
  value whose cumulative share reaches p (DuckDB's ``quantile_disc``).
- ``first``/``last`` need an order — ``first(x ORDER BY ts)`` or the step's ``order_by`` —
  because rows reach a worker in no fixed order after a shuffle. They return ``x`` of the first
  / last row when the group's rows are sorted by the order keys (ASC/DESC, NULLS FIRST/LAST;
  default NULLS LAST like DuckDB), ties broken by ``x`` itself (ascending, NULLS LAST): the
  answer never depends on arrival order. A row whose ``x`` is NULL can be first (as in SQL).
- ``collect_list(x [ORDER BY ...])`` skips NULLs and returns ``[]`` for a group without
  values (Spark's semantics); without ORDER BY the list is sorted by value, so it is
  deterministic. ``collect_set(x)`` is the sorted distinct values.
- ``approximate: true`` (or ``approx_count_distinct``/``approx_quantile``) keeps HLL (count
  distinct, ~1.6% error at lg_k 12) and KLL (percentiles, ~1.7% rank error at k 200)
  sketches from ``datasketches`` instead of exact value sets; KLL skips NaN.

Example:
    >>> import pyarrow as pa
    >>> plan = AggregatePlan(["k"], {"n": "count(*)", "total": "sum(v)", "p50": "median(v)"})
    >>> batch = pa.RecordBatch.from_pydict({"k": ["a", "b", "a"], "v": [1, 2, 4]})
    >>> left, right = plan.partial(batch.slice(0, 2)), plan.partial(batch.slice(2))
    >>> sorted(plan.finalize(plan.merge([left, right])).to_pylist(), key=lambda r: r["k"])
    [{'k': 'a', 'n': 2, 'total': 5, 'p50': 2.5}, {'k': 'b', 'n': 1, 'total': 2, 'p50': 2.0}]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from beam_etl.errors import ExpressionError

__all__ = [
    "AggregateCall",
    "AggregateOverflow",
    "AggregatePlan",
    "FUNCTION_NAMES",
    "OrderKey",
    "group_ids",
    "normalize_values",
    "parse_aggregate",
    "parse_order_by",
    "sort_indices",
]

#: HLL precision (2^12 registers: ~1.6% standard error) and KLL accuracy parameter (k=200:
#: ~1.65% normalized rank error), datasketches' defaults.
HLL_LG_K = 12
KLL_K = 200


class AggregateOverflow(ValueError):
    """An exact integer sum does not fit the int64 output column."""


# --------------------------------------------------------------------------- parsing


#: The dialect aggregates are read in: the expression engine's (DuckDB), whose NULLs sort last
#: in both directions, so ``ORDER BY ts`` inside a call means ``ts ASC NULLS LAST``.
_DIALECT = "duckdb"


@dataclass(frozen=True)
class OrderKey:
    """One ``ORDER BY`` item: an expression (SQL text), its direction and NULL placement."""

    sql: str
    descending: bool = False
    nulls_first: bool = False

    def reversed(self) -> "OrderKey":
        return OrderKey(self.sql, not self.descending, not self.nulls_first)


@dataclass(frozen=True)
class AggregateCall:
    """One parsed aggregate: ``function(argument ORDER BY ...) FILTER (WHERE where)``."""

    function: str  # canonical name, see _NAMES
    argument: str | None  # SQL of the argument; None for count(*)
    text: str = ""
    fraction: Fraction | None = None  # percentile p
    order_by: tuple[OrderKey, ...] = ()
    where: str | None = None
    approximate: bool = False


# Names users may write -> (canonical function, approximate forced, fixed fraction).
_NAMES: dict[str, tuple[str, bool, Fraction | None]] = {
    "count": ("count", False, None),
    "count_distinct": ("count_distinct", False, None),
    "approx_count_distinct": ("count_distinct", True, None),
    "sum": ("sum", False, None),
    "avg": ("avg", False, None),
    "mean": ("avg", False, None),
    "min": ("min", False, None),
    "max": ("max", False, None),
    "stddev": ("stddev_samp", False, None),
    "stddev_samp": ("stddev_samp", False, None),
    "stddev_pop": ("stddev_pop", False, None),
    "variance": ("var_samp", False, None),
    "var_samp": ("var_samp", False, None),
    "var_pop": ("var_pop", False, None),
    "median": ("percentile_cont", False, Fraction(1, 2)),
    "percentile": ("percentile_cont", False, None),
    "percentile_cont": ("percentile_cont", False, None),
    "quantile": ("percentile_cont", False, None),
    "quantile_cont": ("percentile_cont", False, None),
    "approx_quantile": ("percentile_cont", True, None),
    "percentile_disc": ("percentile_disc", False, None),
    "quantile_disc": ("percentile_disc", False, None),
    "first": ("first", False, None),
    "last": ("last", False, None),
    "collect_list": ("collect_list", False, None),
    "collect_set": ("collect_set", False, None),
}

#: Every aggregate function name accepted in ``aggregates`` (the whitelist).
FUNCTION_NAMES: tuple[str, ...] = tuple(sorted(_NAMES))

# sqlglot parses well-known aggregates into their own node classes; map them back to names.
_CLASS_NAMES: dict[type, str] = {
    cls: name
    for class_name, name in [
        ("Count", "count"),
        ("Sum", "sum"),
        ("Avg", "avg"),
        ("Min", "min"),
        ("Max", "max"),
        ("Stddev", "stddev"),
        ("StddevSamp", "stddev_samp"),
        ("StddevPop", "stddev_pop"),
        ("Variance", "variance"),
        ("VariancePop", "var_pop"),
        ("Median", "median"),
        ("Quantile", "quantile"),
        ("PercentileCont", "percentile_cont"),
        ("PercentileDisc", "percentile_disc"),
        ("ApproxQuantile", "approx_quantile"),
        ("ApproxDistinct", "approx_count_distinct"),
        ("First", "first"),
        ("Last", "last"),
    ]
    if (cls := getattr(exp, class_name, None)) is not None
}

_TAKES_FRACTION = {"percentile_cont", "percentile_disc"}
_USES_ORDER = {"first", "last", "collect_list"}


def _hint_for(name: str) -> str | None:
    from beam_etl.spec import did_you_mean

    return did_you_mean(name, FUNCTION_NAMES)


def _parse_sql(text: str, what: str) -> exp.Expression:
    try:
        tree = sqlglot.parse_one(text, read=_DIALECT)
    except sqlglot.errors.SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "check the number of arguments" if "arguments" in first else "check the parentheses and quoting"
        raise ExpressionError(f"cannot parse {what} '{text}': {first}", hint) from None
    if tree is None:
        raise ExpressionError(f"{what} is empty", "write a call such as sum(amount)")
    return tree


def parse_order_by(items: str | Sequence[str] | None) -> tuple[OrderKey, ...]:
    """``["ts DESC", "id"]`` (or ``"ts DESC, id"``) -> order keys (default ASC NULLS LAST).

    Example:
        >>> parse_order_by("ts DESC NULLS FIRST, id")
        (OrderKey(sql='ts', descending=True, nulls_first=True), OrderKey(sql='id', descending=False, nulls_first=False))
    """
    if not items:
        return ()
    text = items if isinstance(items, str) else ", ".join(items)
    # Parsed inside a query only to reach sqlglot's ORDER BY grammar; nothing is executed.
    tree = _parse_sql(f"SELECT 1 ORDER BY {text}", "order_by")
    order = tree.args.get("order") if isinstance(tree, exp.Select) else None
    used = {key for key, value in tree.args.items() if value}
    if order is None or used - {"expressions", "order"}:
        raise ExpressionError(f"order_by '{text}' is not a list of sort keys", "write e.g. ['ts DESC', 'id']")
    return tuple(_order_key(item) for item in order.expressions)


def _order_key(item: exp.Expression) -> OrderKey:
    if isinstance(item, exp.Ordered):
        return OrderKey(_text(item.this), bool(item.args.get("desc")), bool(item.args.get("nulls_first")))
    return OrderKey(_text(item))


def _text(node: exp.Expression) -> str:
    return node.sql(dialect=_DIALECT)


def _fraction(node: exp.Expression, text: str) -> Fraction:
    negative = isinstance(node, exp.Neg)
    literal = node.this if negative else node
    if not isinstance(literal, exp.Literal) or literal.is_string:
        raise ExpressionError(f"the percentile in '{text}' must be a number literal", "write e.g. percentile(total, 0.9)")
    value = Fraction(literal.this) * (-1 if negative else 1)
    if not 0 <= value <= 1:
        hint = f"did you mean {float(value) / 100:g}?" if 1 < value <= 100 else "write a fraction such as 0.9"
        raise ExpressionError(f"the percentile in '{text}' must be between 0 and 1, got {float(value):g}", hint)
    return value


def _call_parts(node: exp.Expression, text: str) -> tuple[str, list[exp.Expression]]:
    if isinstance(node, exp.Anonymous):
        return node.name.lower(), list(node.expressions)
    name = _CLASS_NAMES.get(type(node))
    if name is None:
        if isinstance(node, exp.Func):
            other = node.sql_name().lower()
            raise ExpressionError(
                f"'{other}' is not an aggregate function (in '{text}')",
                _hint_for(other) or f"use one of {', '.join(FUNCTION_NAMES)}",
            )
        raise ExpressionError(
            f"'{text}' is not a single aggregate call",
            "write one call such as sum(amount); compute derived values in a later derive step",
        )
    args: list[exp.Expression] = []
    for key in node.arg_types:
        value = node.args.get(key)
        if isinstance(value, list):
            args.extend(item for item in value if isinstance(item, exp.Expression))
        elif isinstance(value, exp.Expression):
            args.append(value)
    return name, args


def parse_aggregate(
    text: str, *, default_order: Sequence[OrderKey] = (), approximate: bool = False
) -> AggregateCall:
    """Parse one aggregate such as ``"sum(amount * qty)"`` or ``"first(x ORDER BY ts DESC)"``.

    Args:
        text: the aggregate as written in the spec.
        default_order: the step's ``order_by``, used by first/last/collect_list without their own.
        approximate: the step's ``approximate`` flag (sketches for distinct counts and percentiles).

    Raises:
        ExpressionError: unknown function (with a did-you-mean hint), wrong arguments, first/last
            without an order, a percentile outside [0, 1], or anything that is not one call.

    Example:
        >>> parse_aggregate("percentile(total, 0.9)").function
        'percentile_cont'
    """
    tree = _parse_sql(text, "aggregate")
    where = None
    if isinstance(tree, exp.Alias):
        raise ExpressionError(f"'{text}' has an alias", "the output name is the key of the aggregates entry")
    if isinstance(tree, exp.Window):
        raise ExpressionError(f"'{text}' is a window function", "use a window step for OVER (...)")
    if isinstance(tree, exp.Filter):
        condition = tree.expression
        where = _text(condition.this if isinstance(condition, exp.Where) else condition)
        tree = tree.this
    within: exp.Order | None = None
    if isinstance(tree, exp.WithinGroup):
        within = tree.expression if isinstance(tree.expression, exp.Order) else None
        tree = tree.this
    name, args = _call_parts(tree, text)
    if name not in _NAMES:
        raise ExpressionError(
            f"unknown aggregate function '{name}'", _hint_for(name) or f"use one of {', '.join(FUNCTION_NAMES)}"
        )
    function, forced_approx, fixed_fraction = _NAMES[name]
    distinct = False
    order: tuple[OrderKey, ...] = ()
    if args and isinstance(args[0], exp.Distinct):
        distinct = True
        args = list(args[0].expressions) + args[1:]
    if args and isinstance(args[0], exp.Order):
        order = tuple(_order_key(item) for item in args[0].expressions)
        args = [args[0].this] + args[1:]
    if within is not None:  # percentile_cont(0.9) WITHIN GROUP (ORDER BY x)
        if len(within.expressions) != 1 or within.expressions[0].args.get("desc"):
            raise ExpressionError(f"'{text}' needs exactly one ascending WITHIN GROUP (ORDER BY ...) key")
        args = [within.expressions[0].this] + args
    if any(isinstance(arg, (exp.Order, exp.Distinct)) for arg in args):
        raise ExpressionError(f"'{text}': ORDER BY and DISTINCT go right after the first argument")
    if distinct:
        if function != "count":
            raise ExpressionError(f"DISTINCT is only supported as count(DISTINCT x) (in '{text}')", "use count_distinct(x) or collect_set(x)")
        function = "count_distinct"
    if order and function not in _USES_ORDER:
        raise ExpressionError(f"ORDER BY inside {name}() has no effect (in '{text}')", "only first, last and collect_list take ORDER BY")

    if function == "count" and (not args or isinstance(args[0], exp.Star)):
        if len(args) > 1:
            raise ExpressionError(f"count takes one argument (in '{text}')")
        function, argument = "count_star", None
    else:
        expected = 2 if function in _TAKES_FRACTION and fixed_fraction is None else 1
        if len(args) != expected:
            usage = f"{name}(x, 0.9)" if expected == 2 else f"{name}(x)"
            raise ExpressionError(f"{name} takes {expected} argument{'s' if expected > 1 else ''} (in '{text}')", f"write {usage}")
        if isinstance(args[0], exp.Star):
            raise ExpressionError(f"{name}(*) is not defined", "only count(*) takes *")
        argument = _text(args[0])
    fraction = fixed_fraction
    if function in _TAKES_FRACTION and fraction is None:
        fraction = _fraction(args[1], text)
    if function in _USES_ORDER and not order:
        order = tuple(default_order)
    if function in ("first", "last") and not order:
        raise ExpressionError(
            f"{name}() needs an order: rows reach a worker in no fixed order (in '{text}')",
            f"write {name}({argument} ORDER BY <column>) or set the step's order_by",
        )
    return AggregateCall(
        function=function,
        argument=argument,
        text=text,
        fraction=fraction,
        order_by=order,
        where=where,
        approximate=(approximate or forced_approx) and function in ("count_distinct", "percentile_cont", "percentile_disc"),
    )


# --------------------------------------------------------------------------- type rules


def _is_numeric(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type)


def _is_sortable(data_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    return not pa.types.is_nested(data_type)


#: What each function needs of its argument: "numeric", "sortable" or "any".
_NEEDS = {
    "count_star": "any",
    "count": "any",
    "count_distinct": "sortable",
    "sum": "numeric",
    "avg": "numeric",
    "min": "sortable",
    "max": "sortable",
    "stddev_samp": "numeric",
    "stddev_pop": "numeric",
    "var_samp": "numeric",
    "var_pop": "numeric",
    "percentile_cont": "numeric",
    "percentile_disc": "sortable",
    "first": "any",
    "last": "any",
    "collect_list": "any",
    "collect_set": "sortable",
}


def argument_problem(call: AggregateCall, data_type: pa.DataType) -> str | None:
    """Why ``call`` cannot take an argument of ``data_type``, or None."""
    need = _NEEDS[call.function]
    if call.approximate and call.function == "percentile_disc":
        need = "numeric"
    if pa.types.is_null(data_type):
        return None
    if need == "numeric" and not _is_numeric(data_type):
        return f"{call.text} needs a numeric argument, got {data_type}"
    if need == "sortable" and not _is_sortable(data_type):
        return f"{call.text} needs a comparable argument, got {data_type}"
    return None


def output_type(call: AggregateCall, argument_type: pa.DataType | None) -> pa.DataType | None:
    """The Arrow type of ``call``'s output column (None when the argument type is unknown)."""
    function = call.function
    if function in ("count_star", "count", "count_distinct"):
        return pa.int64()
    if function in ("avg", "stddev_samp", "stddev_pop", "var_samp", "var_pop", "percentile_cont"):
        return pa.float64()
    if argument_type is None:
        return None
    if pa.types.is_dictionary(argument_type):
        argument_type = argument_type.value_type
    if function == "sum":
        if pa.types.is_decimal(argument_type):
            return pa.decimal128(38, argument_type.scale)
        return pa.float64() if pa.types.is_floating(argument_type) else pa.int64()
    if function == "percentile_disc" and call.approximate:
        return pa.float64()
    if function in ("collect_list", "collect_set"):
        return pa.list_(argument_type)
    return argument_type


# --------------------------------------------------------------------------- grouping


def normalize_values(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Values as SQL compares them: dictionaries decoded, ``-0.0`` -> ``0.0``, one NaN."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_floating(array.type):
        if pa.types.is_float16(array.type):
            array = array.cast(pa.float32())
        array = pc.add(array, pa.scalar(0.0, array.type))  # IEEE: -0.0 + 0.0 == +0.0
        array = pc.if_else(pc.is_nan(array), pa.scalar(math.nan, array.type), array)
    return array


def group_ids(keys: Sequence[pa.Array]) -> tuple[np.ndarray, int, np.ndarray]:
    """Dense group numbers for rows of (already normalized) key columns.

    Returns ``(ids, num_groups, representative)``: ``ids[i]`` in ``0..num_groups-1`` for each
    row, and one row index per group (to take the group's key values from). NULL is a key
    value like any other. With no key columns every row is group 0.
    """
    rows = len(keys[0]) if keys else None
    if not keys:
        raise ValueError("group_ids needs the key columns (or use global grouping)")
    code: np.ndarray | None = None
    groups = 0
    for column in keys:
        if pa.types.is_nested(column.type):
            raise ValueError(f"cannot group by a column of type {column.type}; group keys must be scalar values")
        encoded = column.dictionary_encode(null_encoding="encode")
        indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        if code is None:
            code, groups = indices, len(encoded.dictionary)
        else:
            # Combine with the codes so far, then re-densify so the product never overflows.
            combined = pa.array(code * len(encoded.dictionary) + indices).dictionary_encode()
            code, groups = combined.indices.to_numpy().astype(np.int64), len(combined.dictionary)
    representative = np.zeros(groups, dtype=np.int64)
    representative[code] = np.arange(rows, dtype=np.int64)
    return code, groups, representative


def _global_ids(rows: int) -> tuple[np.ndarray, int, np.ndarray]:
    groups = 1 if rows else 0
    return np.zeros(rows, dtype=np.int64), groups, np.zeros(groups, dtype=np.int64)


def _positions(present: np.ndarray, num_groups: int) -> pa.Array:
    """Index array mapping group -> row of a per-group result (null where a group is absent)."""
    position = np.full(num_groups, -1, dtype=np.int64)
    position[present] = np.arange(len(present), dtype=np.int64)
    missing = position < 0
    return pa.array(position, mask=missing) if missing.any() else pa.array(position)


def _grouped(ids: np.ndarray, num_groups: int, requests: Sequence[tuple[pa.Array, str, Any]]) -> list[pa.Array]:
    """Run hash aggregations of ``requests`` ((values, function, options)) by group number.

    Each result has ``num_groups`` entries in group order (null for a group without rows).
    """
    columns: dict[str, pa.Array] = {"__g": pa.array(ids, type=pa.int64())}
    aggregations = []
    for index, (values, function, options) in enumerate(requests):
        columns[f"c{index}"] = values
        aggregations.append((f"c{index}", function, options) if options is not None else (f"c{index}", function))
    result = pa.table(columns).group_by("__g", use_threads=False).aggregate(aggregations)
    take = _positions(result.column("__g").to_numpy(), num_groups)
    return [
        result.column(f"c{index}_{function}").combine_chunks().take(take)
        for index, (_, function, _) in enumerate(requests)
    ]


def _as_array(values: Any, rows: int) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Scalar):
        return pa.array([values.as_py()] * rows, type=values.type)
    return values


def group_order(ids: np.ndarray, num_groups: int) -> np.ndarray:
    """Stable argsort of group numbers in ``[0, num_groups)``.

    Narrowed to the smallest unsigned type first: numpy's stable sort is a radix sort for
    16-bit and smaller integers (~10x faster than the merge sort it uses for int64).
    """
    if num_groups <= 1 << 16 and len(ids):
        return np.argsort(ids.astype(np.uint16, copy=False), kind="stable")
    return np.argsort(ids, kind="stable")


def _list_by_group(values: pa.Array, ids: np.ndarray, num_groups: int) -> pa.Array:
    """A large_list per group holding ``values`` of that group, keeping their relative order."""
    order = group_order(ids, num_groups)
    counts = np.bincount(ids, minlength=num_groups) if len(ids) else np.zeros(num_groups, dtype=np.int64)
    offsets = np.zeros(num_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return pa.LargeListArray.from_arrays(pa.array(offsets), values.take(pa.array(order)))


def _explode(lists: pa.Array, ids: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Flatten a list column; each value keeps the group number of its row."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    values = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    return values, ids[parents]


def _sort_keys(columns: Sequence[tuple[pa.Array, bool, bool]]) -> tuple[dict[str, pa.Array], list[tuple[str, str]]]:
    """Sort columns + keys for (values, descending, nulls_first) triples, SQL style.

    Arrow puts NaN and NULL at the end whatever the direction; SQL (DuckDB) treats NaN as the
    largest number and places NULLs per key. Helper columns make both explicit.
    """
    data: dict[str, pa.Array] = {}
    keys: list[tuple[str, str]] = []
    for index, (values, descending, nulls_first) in enumerate(columns):
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        data[f"n{index}"] = pc.is_null(values)
        keys.append((f"n{index}", "descending" if nulls_first else "ascending"))
        if pa.types.is_null(values.type) or not _is_sortable(values.type):
            continue
        direction = "descending" if descending else "ascending"
        if pa.types.is_floating(values.type):
            data[f"nan{index}"] = pc.fill_null(pc.is_nan(values), False)
            keys.append((f"nan{index}", direction))
        data[f"v{index}"] = values
        keys.append((f"v{index}", direction))
    return data, keys


def sort_indices(columns: Sequence[tuple[pa.Array, bool, bool]], ids: np.ndarray | None = None) -> np.ndarray:
    """Row order for ``(values, descending, nulls_first)`` keys, optionally within group ids first.

    NaN sorts as the largest number, NULLs where each key says; ties keep input order.
    """
    data, keys = _sort_keys(columns)
    if ids is not None:
        data = {"__g": pa.array(ids, type=pa.int64()), **data}
        keys = [("__g", "ascending")] + keys
    if not data:
        return np.arange(0, dtype=np.int64)
    order = pc.sort_indices(pa.table(data), sort_keys=keys)
    return order.to_numpy().astype(np.int64)


def _first_per_group(sorted_ids: np.ndarray) -> np.ndarray:
    """Positions in a group-sorted id array where a new group starts."""
    if len(sorted_ids) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], sorted_ids[1:] != sorted_ids[:-1]]))


# --------------------------------------------------------------------------- states


@dataclass(frozen=True)
class _StateKey:
    kind: str
    argument: str | None
    where: str | None
    extra: Any = None


class _State:
    """A mergeable partial aggregate; its columns in a partial table are ``prefix + suffix``."""

    suffixes: tuple[str, ...] = ()

    def __init__(self, key: _StateKey):
        self.key = key

    def init(self, inputs: Mapping[str, pa.Array], ids: np.ndarray, groups: int) -> list[pa.Array]:
        raise NotImplementedError

    def merge(self, columns: list[pa.Array], ids: np.ndarray, groups: int) -> list[pa.Array]:
        raise NotImplementedError

    def _argument(self, inputs: Mapping[str, pa.Array]) -> pa.Array:
        return inputs[self.key.argument]


class _Rows(_State):
    suffixes = ("n",)

    def init(self, inputs, ids, groups):
        return [pa.array(np.bincount(ids, minlength=groups).astype(np.int64))]

    def merge(self, columns, ids, groups):
        # float64 weights are exact for counts below 2**53.
        counts = pc.fill_null(columns[0], 0).to_numpy(zero_copy_only=False)
        return [pa.array(np.bincount(ids, weights=counts, minlength=groups).astype(np.int64))]


class _Count(_Rows):
    def init(self, inputs, ids, groups):
        valid = pc.is_valid(self._argument(inputs)).to_numpy(zero_copy_only=False)
        return [pa.array(np.bincount(ids[valid], minlength=groups).astype(np.int64))]



def _sum_input(values: pa.Array) -> pa.Array:
    """Values prepared for an exact or float sum: ints -> decimal128(38, 0) when needed."""
    data_type = values.type
    if pa.types.is_null(data_type):
        return values.cast(pa.decimal128(38, 0))
    if pa.types.is_decimal(data_type):
        return values.cast(pa.decimal128(38, data_type.scale))
    if pa.types.is_floating(data_type):
        return values.cast(pa.float64())
    if pa.types.is_integer(data_type):
        return values
    raise TypeError(f"cannot sum values of type {data_type}")


class _Sum(_State):
    """The sum (NULL without values) and whether the input was integral (int64 output)."""

    suffixes = ("s", "integral")

    def init(self, inputs, ids, groups):
        argument = self._argument(inputs)
        integral = pa.types.is_integer(argument.type) or pa.types.is_null(argument.type)
        values = _sum_input(argument)
        if pa.types.is_integer(values.type):
            sums = _exact_int_sum(values, ids, groups)
        else:
            (sums,) = _grouped(ids, groups, [(values, "sum", pc.ScalarAggregateOptions(min_count=1))])
        return [sums, pa.array(np.full(groups, integral))]

    def merge(self, columns, ids, groups):
        sums, integral = _grouped(
            ids, groups, [(columns[0], "sum", pc.ScalarAggregateOptions(min_count=1)), (columns[1], "all", None)]
        )
        return [sums, integral]


def _exact_int_sum(values: pa.Array, ids: np.ndarray, groups: int) -> pa.Array:
    """Per-group integer sums without int64 wrap-around, as decimal128(38, 0)."""
    options = pc.ScalarAggregateOptions(min_count=1)
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    largest = max(abs(low or 0), abs(high or 0))
    if largest * len(values) < 2**63 and not pa.types.is_uint64(values.type):
        # Fast path: no partial sum can leave int64, so int64 arithmetic is exact.
        (sums,) = _grouped(ids, groups, [(values.cast(pa.int64()), "sum", options)])
        return sums.cast(pa.decimal128(38, 0))
    (sums,) = _grouped(ids, groups, [(values.cast(pa.decimal128(38, 0)), "sum", options)])
    return sums.cast(pa.decimal128(38, 0))


class _MinMax(_State):
    suffixes = ("min", "max", "nan")

    def init(self, inputs, ids, groups):
        values = self._argument(inputs)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        return self._minmax(values, ids, groups)

    def merge(self, columns, ids, groups):
        low, high, nan = columns
        mins, maxs, nans = _grouped(ids, groups, [(low, "min", None), (high, "max", None), (nan, "any", None)])
        return [mins, maxs, pc.fill_null(nans, False)]

    @staticmethod
    def _minmax(values, ids, groups):
        if pa.types.is_null(values.type):
            nulls = pa.nulls(groups)
            return [nulls, nulls, pa.array(np.zeros(groups, dtype=bool))]
        requests = [(values, "min_max", None)]
        floating = pa.types.is_floating(values.type)
        if floating:  # Arrow's min/max skip NaN; remember whether a group had one
            requests.append((pc.fill_null(pc.is_nan(values), False), "any", None))
        results = _grouped(ids, groups, requests)
        extremes = results[0]
        nan = pc.fill_null(results[1], False) if floating else pa.array(np.zeros(groups, dtype=bool))
        return [pc.struct_field(extremes, [0]), pc.struct_field(extremes, [1]), nan]


class _Moments(_State):
    """(n, mean, M2) per group; merged exactly with Chan et al.'s parallel formula."""

    suffixes = ("n", "mean", "m2")

    def init(self, inputs, ids, groups):
        values = self._argument(inputs).cast(pa.float64())
        valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
        x = values.filter(pa.array(valid)).to_numpy(zero_copy_only=False)
        g = ids[valid]
        n = np.bincount(g, minlength=groups).astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mean = np.bincount(g, weights=x, minlength=groups) / n
            deviation = x - mean[g]  # two passes: M2 from deviations, not from sum of squares
            m2 = np.bincount(g, weights=deviation * deviation, minlength=groups)
        return self._columns(n, mean, m2)

    def merge(self, columns, ids, groups):
        n_i = columns[0].to_numpy(zero_copy_only=False).astype(np.int64)
        keep = n_i > 0
        n_i, g = n_i[keep], ids[keep]
        mean_i = pc.fill_null(columns[1], 0.0).to_numpy(zero_copy_only=False)[keep]
        m2_i = pc.fill_null(columns[2], 0.0).to_numpy(zero_copy_only=False)[keep]
        n = np.bincount(g, weights=n_i, minlength=groups).astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            mean = np.bincount(g, weights=n_i * mean_i, minlength=groups) / n
            shift = mean_i - mean[g]
            m2 = np.bincount(g, weights=m2_i, minlength=groups) + np.bincount(g, weights=n_i * shift * shift, minlength=groups)
        return self._columns(n, mean, m2)

    @staticmethod
    def _columns(n, mean, m2):
        empty = n == 0
        return [pa.array(n), pa.array(mean, mask=empty), pa.array(m2, mask=empty)]


class _Values(_State):
    """Every non-null value of a group (exact percentiles, unordered collect_list)."""

    suffixes = ("values",)

    def init(self, inputs, ids, groups):
        values = self._argument(inputs)
        valid = pc.is_valid(values)
        return [_list_by_group(values.filter(valid), ids[valid.to_numpy(zero_copy_only=False)], groups)]

    def merge(self, columns, ids, groups):
        values, value_ids = _explode(columns[0], ids)
        return [_list_by_group(values, value_ids, groups)]


def _unique_pairs(values: pa.Array, ids: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Distinct (group, value) pairs of non-null values."""
    values = normalize_values(values)
    valid = pc.is_valid(values)
    values, ids = values.filter(valid), ids[valid.to_numpy(zero_copy_only=False)]
    unique = pa.table({"g": pa.array(ids, type=pa.int64()), "v": values}).group_by(["g", "v"], use_threads=False).aggregate([])
    return unique.column("v").combine_chunks(), unique.column("g").to_numpy()


class _Distinct(_State):
    suffixes = ("distinct",)

    def init(self, inputs, ids, groups):
        values, value_ids = _unique_pairs(self._argument(inputs), ids)
        return [_list_by_group(values, value_ids, groups)]

    def merge(self, columns, ids, groups):
        values, value_ids = _explode(columns[0], ids)
        values, value_ids = _unique_pairs(values, value_ids)
        return [_list_by_group(values, value_ids, groups)]


class _Pick(_State):
    """The value at the first row of a group in a fixed order (first/last)."""

    def __init__(self, key: _StateKey):
        super().__init__(key)
        self.order: tuple[OrderKey, ...] = key.extra[0]
        self.reverse: bool = key.extra[1]
        self.suffixes = ("present", "value") + tuple(f"k{i}" for i in range(len(self.order)))

    def _keys(self) -> list[tuple[bool, bool]]:
        tiebreak = OrderKey("", False, False)
        keys = [*self.order, tiebreak]
        if self.reverse:
            keys = [key.reversed() for key in keys]
        return [(key.descending, key.nulls_first) for key in keys]

    def init(self, inputs, ids, groups):
        value = self._argument(inputs)
        order_values = [inputs[key.sql] for key in self.order]
        return self._pick(value, order_values, ids, groups)

    def merge(self, columns, ids, groups):
        present = pc.fill_null(columns[0], False)
        mask = present.to_numpy(zero_copy_only=False)
        kept = [column.filter(present) for column in columns[1:]]
        return self._pick(kept[0], kept[1:], ids[mask], groups)

    def _pick(self, value, order_values, ids, groups):
        directions = self._keys()
        sortable = [*order_values, value]
        order = sort_indices([(array, d, nf) for array, (d, nf) in zip(sortable, directions)], ids)
        starts = _first_per_group(ids[order])
        chosen = order[starts]
        take = _positions(ids[chosen], groups)
        present = np.zeros(groups, dtype=bool)
        present[ids[chosen]] = True
        picked = [array.take(pa.array(chosen)).take(take) for array in [value, *order_values]]
        return [pa.array(present), *picked]


class _OrderedValues(_State):
    """Every non-null value of a group with its order keys (collect_list ORDER BY)."""

    suffixes = ("rows",)

    def init(self, inputs, ids, groups):
        value = self._argument(inputs)
        keys = [inputs[key.sql] for key in self.key.extra]
        valid = pc.is_valid(value)
        rows = pa.StructArray.from_arrays(
            [array.filter(valid) for array in [value, *keys]], names=["v"] + [f"k{i}" for i in range(len(keys))]
        )
        return [_list_by_group(rows, ids[valid.to_numpy(zero_copy_only=False)], groups)]

    def merge(self, columns, ids, groups):
        rows, row_ids = _explode(columns[0], ids)
        return [_list_by_group(rows, row_ids, groups)]


def _hll_items(values: pa.Array) -> pa.Array:
    """Values as types datasketches' HLL accepts (int, float, str)."""
    if pa.types.is_boolean(values.type):
        return values.cast(pa.int8())
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_string(values.type):
        return values
    return values.cast(pa.string())


def _sketch_value_lists(values: pa.Array, ids: np.ndarray, groups: int) -> Iterable[tuple[int, pa.Array]]:
    """(group, values of that group): the per-group loop sketches need."""
    order = group_order(ids, groups)
    sorted_ids = ids[order]
    values = values.take(pa.array(order))
    starts = _first_per_group(sorted_ids)
    ends = np.append(starts[1:], len(sorted_ids))
    for start, end in zip(starts, ends):
        yield int(sorted_ids[start]), values.slice(int(start), int(end - start))


def _require_datasketches():
    try:
        import datasketches
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "approximate aggregates need the datasketches package: pip install datasketches"
        ) from None
    return datasketches


def _sketch_column(sketches: dict[int, bytes], groups: int) -> pa.Array:
    return pa.array([sketches.get(group) for group in range(groups)], type=pa.binary())


class _Hll(_State):
    suffixes = ("hll",)

    def init(self, inputs, ids, groups):
        ds = _require_datasketches()
        values, value_ids = _unique_pairs(self._argument(inputs), ids)
        sketches = {}
        for group, chunk in _sketch_value_lists(_hll_items(values), value_ids, groups):
            sketch = ds.hll_sketch(HLL_LG_K)
            for item in chunk.to_pylist():  # datasketches' HLL has no vectorized update
                sketch.update(item)
            sketches[group] = sketch.serialize_compact()
        return [_sketch_column(sketches, groups)]

    def merge(self, columns, ids, groups):
        ds = _require_datasketches()
        sketches = {}
        for group, chunk in _sketch_value_lists(columns[0], ids, groups):
            union = ds.hll_union(HLL_LG_K)
            for blob in chunk.to_pylist():
                if blob is not None:
                    union.update(ds.hll_sketch.deserialize(blob))
            sketches[group] = union.get_result().serialize_compact()
        return [_sketch_column(sketches, groups)]


class _Kll(_State):
    suffixes = ("kll",)

    def init(self, inputs, ids, groups):
        ds = _require_datasketches()
        values = self._argument(inputs).cast(pa.float64())
        keep = pc.and_(pc.is_valid(values), pc.invert(pc.fill_null(pc.is_nan(values), True)))
        values, value_ids = values.filter(keep), ids[keep.to_numpy(zero_copy_only=False)]
        sketches = {}
        for group, chunk in _sketch_value_lists(values, value_ids, groups):
            sketch = ds.kll_doubles_sketch(KLL_K)
            sketch.update(np.array(chunk.to_numpy(zero_copy_only=False), dtype=np.float64))  # a writable copy
            sketches[group] = sketch.serialize()
        return [_sketch_column(sketches, groups)]

    def merge(self, columns, ids, groups):
        ds = _require_datasketches()
        sketches = {}
        for group, chunk in _sketch_value_lists(columns[0], ids, groups):
            merged = ds.kll_doubles_sketch(KLL_K)
            for blob in chunk.to_pylist():
                if blob is not None:
                    merged.merge(ds.kll_doubles_sketch.deserialize(blob))
            sketches[group] = merged.serialize()
        return [_sketch_column(sketches, groups)]


_STATE_CLASSES: dict[str, type[_State]] = {
    "rows": _Rows,
    "count": _Count,
    "sum": _Sum,
    "minmax": _MinMax,
    "moments": _Moments,
    "values": _Values,
    "distinct": _Distinct,
    "pick": _Pick,
    "ordered": _OrderedValues,
    "hll": _Hll,
    "kll": _Kll,
}


def _state_keys(call: AggregateCall) -> list[_StateKey]:
    """The partial states ``call`` is finalised from (shared between calls when equal)."""
    function, argument, where = call.function, call.argument, call.where

    def key(kind: str, extra: Any = None) -> _StateKey:
        return _StateKey(kind, argument, where, extra)

    if function == "count_star":
        return [_StateKey("rows", None, where)]
    if function == "count":
        return [key("count")]
    if function == "count_distinct":
        return [key("hll" if call.approximate else "distinct")]
    if function == "sum":
        return [key("sum")]
    if function == "avg":
        return [key("sum"), key("count")]
    if function in ("min", "max"):
        return [key("minmax")]
    if function in ("stddev_samp", "stddev_pop", "var_samp", "var_pop"):
        return [key("moments")]
    if function in ("percentile_cont", "percentile_disc"):
        return [key("kll" if call.approximate else "values")]
    if function in ("first", "last"):
        return [key("pick", (call.order_by, function == "last"))]
    if function == "collect_list":
        return [key("ordered", call.order_by) if call.order_by else key("values")]
    if function == "collect_set":
        return [key("distinct")]
    raise AssertionError(function)


# --------------------------------------------------------------------------- finals


def _sorted_lists(lists: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Values of each list sorted ascending (NaN last); returns (values, starts, counts)."""
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    groups = len(lists)
    values, ids = _explode(lists, np.arange(groups, dtype=np.int64))
    order = sort_indices([(values, False, False)], ids)
    counts = np.bincount(ids, minlength=groups) if len(ids) else np.zeros(groups, dtype=np.int64)
    starts = np.zeros(groups, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return values.take(pa.array(order)), starts, counts


def _percentile_cont(lists: pa.Array, fraction: Fraction) -> pa.Array:
    values, starts, counts = _sorted_lists(lists)
    present = counts > 0
    p = float(fraction)
    # DuckDB's quantile_cont: RN = (n - 1) * p, interpolate between floor(RN) and ceil(RN) as
    # lo * (1 - d) + hi * d (equal infinities stay infinite; lo + (hi - lo) * d would be NaN).
    position = (np.maximum(counts, 1) - 1) * p
    low, high = np.floor(position).astype(np.int64), np.ceil(position).astype(np.int64)
    numbers = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if not len(numbers):
        return pa.nulls(len(counts), type=pa.float64())
    low_values = numbers[np.where(present, starts + low, 0)]
    high_values = numbers[np.where(present, starts + high, 0)]
    with np.errstate(invalid="ignore", over="ignore"):
        fraction = position - low
        result = np.where(low == high, low_values, low_values * (1.0 - fraction) + high_values * fraction)
    return pa.array(result, mask=~present)


def _disc_index(counts: np.ndarray, fraction: Fraction) -> np.ndarray:
    """0-based index of the first value whose cumulative share reaches p: ceil(n p) - 1, exactly."""
    numerator, denominator = fraction.numerator, fraction.denominator
    if numerator * int(counts.max(initial=0)) < 2**62:
        index = -((-counts * numerator) // denominator) - 1
    else:  # pragma: no cover - absurdly long fractions
        index = np.array([math.ceil(Fraction(int(n)) * fraction) - 1 for n in counts], dtype=np.int64)
    return np.maximum(index, 0)


def _percentile_disc(lists: pa.Array, fraction: Fraction) -> pa.Array:
    values, starts, counts = _sorted_lists(lists)
    present = counts > 0
    index = np.where(present, starts + _disc_index(counts, fraction), 0)
    if not len(values):
        return pa.nulls(len(counts), type=values.type)
    return values.take(pa.array(index, mask=~present))


def _sketch_estimates(blobs: pa.Array, read: Callable[[bytes], Any], empty: Any) -> list:
    return [empty if blob is None else read(blob) for blob in blobs.to_pylist()]


def _final(call: AggregateCall, states: list[list[pa.Array]]) -> pa.Array:
    function = call.function
    if function in ("count_star", "count"):
        return pc.fill_null(states[0][0], 0)
    if function == "count_distinct":
        if call.approximate:
            ds = _require_datasketches()
            return pa.array(
                _sketch_estimates(states[0][0], lambda b: int(round(ds.hll_sketch.deserialize(b).get_estimate())), 0),
                type=pa.int64(),
            )
        return pc.list_value_length(states[0][0]).cast(pa.int64())
    if function == "sum":
        sums, integral = states[0]
        if len(integral) and pc.all(integral).as_py():
            return _decimal_to_int64(sums, call)
        return sums
    if function == "avg":
        sums, counts = states[0][0], states[1][0]
        counts = counts.cast(pa.float64())
        return pc.if_else(pc.equal(counts, 0.0), pa.scalar(None, pa.float64()), pc.divide(sums.cast(pa.float64()), counts))
    if function in ("min", "max"):
        low, high, nan = states[0]
        value = low if function == "min" else high
        if not pa.types.is_floating(value.type):
            return value
        nan_value = pa.scalar(math.nan, value.type)
        if function == "max":
            return pc.if_else(nan, nan_value, value)
        # min is NaN only when every non-null value was NaN (Arrow skipped them all)
        real = pc.and_(pc.is_valid(value), pc.invert(pc.fill_null(pc.is_nan(value), True)))
        return pc.if_else(real, value, pc.if_else(nan, nan_value, pa.scalar(None, value.type)))
    if function in ("stddev_samp", "stddev_pop", "var_samp", "var_pop"):
        n = states[0][0].to_numpy(zero_copy_only=False).astype(np.float64)
        m2 = pc.fill_null(states[0][2], 0.0).to_numpy(zero_copy_only=False)
        sample = function.endswith("samp")
        divisor = n - 1 if sample else n
        with np.errstate(invalid="ignore", divide="ignore"):
            result = m2 / divisor
            if not sample:  # one value has no spread, even a NaN one (DuckDB agrees)
                result = np.where(n == 1, 0.0, result)
            if function.startswith("stddev"):
                result = np.sqrt(result)
        return pa.array(result, mask=divisor <= 0)
    if function in ("percentile_cont", "percentile_disc"):
        if call.approximate:
            ds = _require_datasketches()
            p = float(call.fraction)
            return pa.array(
                _sketch_estimates(states[0][0], lambda b: _kll_quantile(ds.kll_doubles_sketch.deserialize(b), p), None),
                type=pa.float64(),
            )
        if function == "percentile_cont":
            return _percentile_cont(states[0][0], call.fraction)
        return _percentile_disc(states[0][0], call.fraction)
    if function in ("first", "last"):
        present, value = states[0][0], states[0][1]
        return pc.if_else(present, value, pa.scalar(None, value.type))
    if function == "collect_list":
        if call.order_by:
            return _ordered_list(states[0][0], call)
        values, starts, counts = _sorted_lists(states[0][0])
        return _lists_from(values, counts)
    if function == "collect_set":
        values, starts, counts = _sorted_lists(states[0][0])
        return _lists_from(values, counts)
    raise AssertionError(function)


def _kll_quantile(sketch, p: float) -> float | None:
    return None if sketch.is_empty() else float(sketch.get_quantile(p))


def _lists_from(values: pa.Array, counts: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if offsets[-1] < 2**31:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)  # pragma: no cover


def _ordered_list(rows_lists: pa.Array, call: AggregateCall) -> pa.Array:
    if isinstance(rows_lists, pa.ChunkedArray):
        rows_lists = rows_lists.combine_chunks()
    groups = len(rows_lists)
    rows, ids = _explode(rows_lists, np.arange(groups, dtype=np.int64))
    keys = [(rows.field(f"k{i}"), key.descending, key.nulls_first) for i, key in enumerate(call.order_by)]
    order = sort_indices([*keys, (rows.field("v"), False, False)], ids)
    counts = np.bincount(ids, minlength=groups) if len(ids) else np.zeros(groups, dtype=np.int64)
    return _lists_from(rows.field("v").take(pa.array(order)), counts)


def _decimal_to_int64(sums: pa.Array, call: AggregateCall) -> pa.Array:
    try:
        return sums.cast(pa.int64())
    except (pa.ArrowInvalid, OverflowError):
        raise AggregateOverflow(
            f"{call.text} does not fit int64 in at least one group; "
            f"write sum(CAST({call.argument} AS DOUBLE)) for an approximate float sum"
        ) from None


# --------------------------------------------------------------------------- the plan


class AggregatePlan:
    """Parsed aggregates plus the vectorized partial/merge/finalize functions for them.

    Args:
        group_by: group key columns (empty for one global group).
        aggregates: ``{output_name: "sum(x)"}`` (or already parsed :class:`AggregateCall`).
        order_by: the default order for first/last/collect_list (``["ts DESC"]``).
        approximate: HLL/KLL sketches for count_distinct and percentiles.
        input_schema: the input schema when known before running (types an empty global result).

    The plan pickles as its spec (compiled expressions are rebuilt on the worker).

    Example:
        >>> plan = AggregatePlan([], {"n": "count(*)", "s": "sum(x)"})
        >>> plan.finalize(None).to_pylist()   # a global aggregate over no rows: one row
        [{'n': 0, 's': None}]
    """

    def __init__(
        self,
        group_by: Sequence[str],
        aggregates: Mapping[str, str | AggregateCall],
        *,
        order_by: str | Sequence[str] | None = None,
        approximate: bool = False,
        input_schema: pa.Schema | None = None,
    ):
        self.group_by = list(group_by)
        self.order_by = order_by
        self.approximate = approximate
        self.input_schema = input_schema
        default_order = parse_order_by(order_by)
        self.calls: dict[str, AggregateCall] = {}
        for name, text in aggregates.items():
            if isinstance(text, AggregateCall):
                self.calls[name] = text
            else:
                self.calls[name] = parse_aggregate(text, default_order=default_order, approximate=approximate)
        if not self.calls:
            raise ValueError("aggregate needs at least one entry in aggregates, e.g. {n: 'count(*)'}")
        overlap = set(self.group_by) & set(self.calls)
        if overlap:
            raise ValueError(f"aggregate output '{sorted(overlap)[0]}' has the name of a group_by column; rename it")
        self._states: dict[_StateKey, tuple[int, _State]] = {}
        for call in self.calls.values():
            for key in _state_keys(call):
                if key not in self._states:
                    self._states[key] = (len(self._states), _STATE_CLASSES[key.kind](key))
        self._compiled: dict[str, Any] | None = None

    # -- pickling: ship the spec, not compiled expressions
    def __getstate__(self) -> dict:
        return {**self.__dict__, "_compiled": None}

    @property
    def input_sqls(self) -> list[str]:
        """Every SQL expression evaluated per batch: arguments, order keys, FILTER conditions."""
        seen: dict[str, None] = {}
        for call in self.calls.values():
            if call.argument is not None:
                seen.setdefault(call.argument)
            for key in call.order_by:
                seen.setdefault(key.sql)
            if call.where is not None:
                seen.setdefault(call.where)
        return list(seen)

    # -- evaluation
    def _expressions(self) -> dict[str, Any]:
        if self._compiled is None:
            self._compiled = {sql: _compile(sql) for sql in self.input_sqls}
        return self._compiled

    def evaluate(self, batch: pa.RecordBatch) -> tuple[dict[str, pa.Array], dict[int, str]]:
        """Evaluate every input expression; returns values and ``{row: message}`` for rows that fail."""
        inputs: dict[str, pa.Array] = {}
        errors: dict[int, str] = {}
        for sql, compiled in self._expressions().items():
            if isinstance(compiled, str):  # a bare column
                index = batch.schema.get_field_index(compiled)
                inputs[sql] = batch.column(index) if index >= 0 else pa.nulls(batch.num_rows)
                continue
            values, failed = compiled.evaluate_with_errors(batch)
            inputs[sql] = _as_array(values, batch.num_rows)
            for row, message in failed.items():
                errors.setdefault(row, f"{sql}: {message}")
        return inputs, errors

    def _keys(self, batch: pa.RecordBatch | pa.Table) -> list[pa.Array]:
        keys = []
        for name in self.group_by:
            index = batch.schema.get_field_index(name)
            column = batch.column(index) if index >= 0 else pa.nulls(batch.num_rows)
            keys.append(normalize_values(column))
        return keys

    def _grouping(self, keys: list[pa.Array], rows: int) -> tuple[np.ndarray, int, np.ndarray]:
        return group_ids(keys) if keys else _global_ids(rows)

    def partial(self, batch: pa.RecordBatch, inputs: Mapping[str, pa.Array] | None = None) -> pa.Table:
        """One batch -> a partial table (group keys + state columns, one row per group).

        ``inputs`` are the evaluated expressions when the caller already has them (rows that
        failed evaluation must already be removed from both).
        """
        if inputs is None:
            inputs, errors = self.evaluate(batch)
            if errors:
                raise ValueError(f"{len(errors)} row(s) cannot be evaluated: {errors[min(errors)]}")
        keys = self._keys(batch)
        ids, groups, representative = self._grouping(keys, batch.num_rows)
        return self._partial_from(keys, representative, inputs, ids, groups)

    def _partial_from(self, keys, representative, inputs, ids, groups) -> pa.Table:
        columns: dict[str, pa.Array] = {
            name: key.take(pa.array(representative)) for name, key in zip(self.group_by, keys)
        }
        masks: dict[str, tuple[pa.Array, np.ndarray]] = {}
        for key, (index, state) in self._states.items():
            state_inputs, state_ids = inputs, ids
            if key.where is not None:
                if key.where not in masks:
                    keep = pc.fill_null(_as_array(inputs[key.where], len(ids)).cast(pa.bool_()), False)
                    masks[key.where] = (keep, keep.to_numpy(zero_copy_only=False))
                keep, keep_np = masks[key.where]
                state_inputs = {sql: values.filter(keep) for sql, values in inputs.items()}
                state_ids = ids[keep_np]
            for suffix, values in zip(state.suffixes, state.init(state_inputs, state_ids, groups)):
                columns[f"__s{index}_{suffix}"] = values
        return pa.table(columns)

    def merge(self, partials: Sequence[pa.Table | pa.RecordBatch]) -> pa.Table:
        """Merge partial tables (from :meth:`partial` or earlier merges) into one."""
        tables = [p if isinstance(p, pa.Table) else pa.Table.from_batches([p]) for p in partials]
        if len(tables) == 1:
            return tables[0]
        table = pa.concat_tables(tables, promote_options="permissive")
        keys = [table.column(name).combine_chunks() for name in self.group_by]
        ids, groups, representative = self._grouping(keys, table.num_rows)
        columns: dict[str, pa.Array] = {
            name: key.take(pa.array(representative)) for name, key in zip(self.group_by, keys)
        }
        for index, state in self._states.values():
            names = [f"__s{index}_{suffix}" for suffix in state.suffixes]
            merged = state.merge([table.column(name).combine_chunks() for name in names], ids, groups)
            columns.update(zip(names, merged))
        return pa.table(columns)

    def empty_partial(self) -> pa.Table:
        """The partial state of a global aggregate over no rows (one group)."""
        schema = self.input_schema
        batch = pa.RecordBatch.from_pylist([], schema=schema) if schema is not None else pa.RecordBatch.from_pydict({})
        inputs = {}
        for sql, compiled in self._expressions().items():
            if isinstance(compiled, str):
                index = batch.schema.get_field_index(compiled)
                inputs[sql] = batch.column(index) if index >= 0 else pa.nulls(0)
            else:
                try:
                    inputs[sql] = _as_array(compiled.evaluate(batch), 0)
                except Exception:  # an expression over unknown columns: its type is unknown
                    inputs[sql] = pa.nulls(0)
        return self._partial_from([], np.zeros(1, dtype=np.int64), inputs, np.zeros(0, dtype=np.int64), 1)

    def finalize(self, partial: pa.Table | pa.RecordBatch | None) -> pa.Table:
        """A partial table -> output rows: group columns, then one column per aggregate.

        A global aggregate (no group_by) always yields one row, even from no input.
        """
        if isinstance(partial, pa.RecordBatch):
            partial = pa.Table.from_batches([partial])
        if partial is None or (not self.group_by and partial.num_rows == 0):
            if self.group_by:
                return self._empty_output()
            partial = self.empty_partial()
        columns: dict[str, pa.Array] = {name: partial.column(name).combine_chunks() for name in self.group_by}
        for name, call in self.calls.items():
            states = []
            for key in _state_keys(call):
                index, state = self._states[key]
                states.append([partial.column(f"__s{index}_{suffix}").combine_chunks() for suffix in state.suffixes])
            columns[name] = _final(call, states)
        return pa.table(columns)

    def _empty_output(self) -> pa.Table:
        schema = self.output_schema(self.input_schema)
        if schema is not None:
            return schema.empty_table()
        return pa.table({name: pa.nulls(0) for name in [*self.group_by, *self.calls]})

    def aggregate(self, batches: Iterable[pa.RecordBatch]) -> pa.Table:
        """Aggregate batches locally (partial per batch, merge, finalize) — handy in tests."""
        partials = [self.partial(batch) for batch in batches]
        return self.finalize(self.merge(partials) if partials else None)

    # -- spec-time checks
    def argument_type(self, call: AggregateCall, schema: pa.Schema) -> pa.DataType | None:
        if call.argument is None:
            return None
        compiled = self._expressions()[call.argument]
        if isinstance(compiled, str):
            index = schema.get_field_index(compiled)
            return schema.field(index).type if index >= 0 else None
        return compiled.output_type(schema)

    def check(self, schema: pa.Schema | None) -> list[tuple[str | None, ExpressionError]]:
        """Problems against an input schema: ``(output name or None for group_by, error)``."""
        if schema is None:
            return []
        from beam_etl.spec import did_you_mean

        problems: list[tuple[str | None, ExpressionError]] = []
        for name in self.group_by:
            if name not in schema.names:
                problems.append((None, ExpressionError(f"unknown column '{name}'", did_you_mean(name, schema.names))))
            elif pa.types.is_nested(schema.field(name).type):
                problems.append((None, ExpressionError(f"cannot group by '{name}' of type {schema.field(name).type}", "group keys must be scalar values")))
        for output, call in self.calls.items():
            try:
                for sql in [call.argument, *(key.sql for key in call.order_by), call.where]:
                    if sql is None:
                        continue
                    compiled = self._expressions()[sql]
                    if isinstance(compiled, str):
                        if compiled not in schema.names:
                            raise ExpressionError(f"unknown column '{compiled}'", did_you_mean(compiled, schema.names))
                    else:
                        compiled.check(schema)
                argument_type = self.argument_type(call, schema)
                problem = argument_problem(call, argument_type) if argument_type is not None else None
                if problem:
                    raise ExpressionError(problem, "cast it first, e.g. CAST(x AS DOUBLE)" if "numeric" in problem else None)
            except ExpressionError as exc:
                problems.append((output, exc))
        return problems

    def output_schema(self, schema: pa.Schema | None) -> pa.Schema | None:
        """Group columns (input types) then each aggregate's type; None when not knowable."""
        if schema is None:
            return None
        fields = []
        for name in self.group_by:
            if name not in schema.names:
                return None
            data_type = schema.field(name).type
            fields.append(pa.field(name, data_type.value_type if pa.types.is_dictionary(data_type) else data_type))
        for name, call in self.calls.items():
            try:
                data_type = output_type(call, self.argument_type(call, schema))
            except ExpressionError:
                return None
            if data_type is None:
                return None
            fields.append(pa.field(name, data_type))
        return pa.schema(fields)

    def with_calls(self, calls: Mapping[str, AggregateCall]) -> "AggregatePlan":
        """A plan with the same grouping and these calls (used by pivot)."""
        return AggregatePlan(self.group_by, calls, approximate=self.approximate, input_schema=self.input_schema)


def _compile(sql: str) -> Any:
    """A bare column name (fast path, no expression engine), or a compiled expression."""
    tree = sqlglot.parse_one(sql, read=_DIALECT)
    if isinstance(tree, exp.Column) and not tree.table:
        return tree.name
    from beam_etl.expressions import compile_expression

    return compile_expression(sql)
