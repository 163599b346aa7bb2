"""Native, vectorized and mergeable evaluation of Great Expectations expectations.

Each expectation here reproduces GX 1.x's pandas semantics — what counts as missing (null,
and NaN in numeric columns; an empty string is a value), how ``mostly`` applies (to the
non-missing rows for column-map expectations, to all rows for ``not_null``/``null``),
strictness, which types compare — and returns GX-shaped results (``success``, ``result``
with ``element_count``, ``unexpected_count``, ``unexpected_percent``, ``missing_count``,
``partial_unexpected_list``, ``partial_unexpected_counts``, ``observed_value`` ...,
``exception_info``), but runs on Arrow batches and merges partial states across batches and
workers (``initial`` / ``add`` / ``merge`` / ``finalize``).

Row order matters for ``partial_unexpected_list`` (GX lists the first unexpected rows):
states carry row positions and merge in position order, so evaluating a table batch by batch
gives GX's list exactly; in a Beam pipeline, where batches have no global order, positions
are per batch and the list is a sample of unexpected values.

The catalogue (:data:`NATIVE`) is the issue's list; any other GX expectation runs through GX
itself (see :mod:`beam_etl.quality.expectations`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.batch import to_json_value
from beam_etl.quality.profile import DistinctCounter, Moments, QuantileSketch, hashable_values, missing_mask

__all__ = [
    "NATIVE",
    "GX_EXPECTATIONS",
    "GX_ROW_LOCAL",
    "GX_ONLY_KWARGS",
    "EvalError",
    "MapState",
    "format_map_output",
    "metric_between",
    "COMMON_KWARGS",
    "NativeExpectation",
    "ResultFormat",
    "parse_result_format",
    "native_expectation",
]

#: Every expectation name GX 1.24 ships (``great_expectations/expectations/core``); kept here so
#: a spec is checked (with "did you mean") without importing GX, which takes seconds.
GX_EXPECTATIONS: frozenset[str] = frozenset(
    """
    expect_column_distinct_values_to_be_in_set expect_column_distinct_values_to_contain_set
    expect_column_distinct_values_to_equal_set expect_column_kl_divergence_to_be_less_than
    expect_column_max_to_be_between expect_column_mean_to_be_between expect_column_median_to_be_between
    expect_column_min_to_be_between expect_column_most_common_value_to_be_in_set
    expect_column_pair_values_a_to_be_greater_than_b expect_column_pair_values_to_be_equal
    expect_column_pair_values_to_be_in_set expect_column_proportion_of_non_null_values_to_be_between
    expect_column_proportion_of_unique_values_to_be_between expect_column_quantile_values_to_be_between
    expect_column_stdev_to_be_between expect_column_sum_to_be_between expect_column_to_exist
    expect_column_type_to_be expect_column_unique_value_count_to_be_between
    expect_column_value_lengths_to_be_between expect_column_value_lengths_to_equal
    expect_column_value_z_scores_to_be_less_than expect_column_values_to_be_between
    expect_column_values_to_be_dateutil_parseable expect_column_values_to_be_decreasing
    expect_column_values_to_be_in_set expect_column_values_to_be_in_type_list
    expect_column_values_to_be_increasing expect_column_values_to_be_json_parseable
    expect_column_values_to_be_null expect_column_values_to_be_of_type expect_column_values_to_be_unique
    expect_column_values_to_match_json_schema expect_column_values_to_match_like_pattern
    expect_column_values_to_match_like_pattern_list expect_column_values_to_match_regex
    expect_column_values_to_match_regex_list expect_column_values_to_match_strftime_format
    expect_column_values_to_not_be_in_set expect_column_values_to_not_be_null
    expect_column_values_to_not_be_outliers expect_column_values_to_not_match_like_pattern
    expect_column_values_to_not_match_like_pattern_list expect_column_values_to_not_match_regex
    expect_column_values_to_not_match_regex_list expect_compound_columns_to_be_unique
    expect_multicolumn_sum_to_equal expect_multicolumn_values_to_be_equal
    expect_query_results_to_match_comparison expect_select_column_values_to_be_unique_within_record
    expect_table_column_count_to_be_between expect_table_column_count_to_equal
    expect_table_columns_to_match_ordered_list expect_table_columns_to_match_set
    expect_table_row_count_to_be_between expect_table_row_count_to_equal
    expect_table_row_count_to_equal_other_table unexpected_rows_expectation
    """.split()
)

#: GX map expectations whose answer for a row depends on that row only: run by GX batch by
#: batch and merged by counts. Every other non-native expectation sees the whole (bounded)
#: column set at once (z-scores, ordering, set and distribution expectations).
GX_ROW_LOCAL: frozenset[str] = frozenset(
    """
    expect_column_pair_values_to_be_equal expect_column_pair_values_to_be_in_set
    expect_column_value_lengths_to_equal expect_column_values_to_be_dateutil_parseable
    expect_column_values_to_be_in_type_list expect_column_values_to_be_json_parseable
    expect_column_values_to_be_of_type expect_column_values_to_match_json_schema
    expect_column_values_to_match_like_pattern expect_column_values_to_match_like_pattern_list
    expect_column_values_to_match_regex_list expect_column_values_to_not_match_like_pattern
    expect_column_values_to_not_match_like_pattern_list expect_column_values_to_not_match_regex_list
    expect_multicolumn_sum_to_equal expect_multicolumn_values_to_be_equal
    expect_select_column_values_to_be_unique_within_record
    """.split()
)

#: Keys every expectation accepts that do not change how it is computed natively.
COMMON_KWARGS = frozenset({"result_format", "catch_exceptions", "meta", "notes", "description", "id", "severity", "include_config"})

_DEFAULT_PARTIAL = 20


# --------------------------------------------------------------------------- result format


@dataclass(frozen=True)
class ResultFormat:
    """GX's ``result_format``: BOOLEAN_ONLY, BASIC or SUMMARY (the GX default)."""

    level: str = "SUMMARY"
    partial_unexpected_count: int = _DEFAULT_PARTIAL
    include_index: bool = True


def parse_result_format(value: Any) -> ResultFormat:
    """A :class:`ResultFormat` from GX's string or dict form; COMPLETE is refused (unbounded)."""
    if value is None:
        return ResultFormat()
    if isinstance(value, ResultFormat):
        return value
    if isinstance(value, str):
        value = {"result_format": value}
    if not isinstance(value, dict):
        raise ValueError(f"result_format must be a string or a mapping, got {value!r}")
    level = str(value.get("result_format", "SUMMARY")).upper()
    if level == "COMPLETE":
        raise ValueError("result_format COMPLETE lists every unexpected value and is not supported natively; use SUMMARY")
    if level not in ("BOOLEAN_ONLY", "BASIC", "SUMMARY"):
        raise ValueError(f"unknown result_format '{level}'; use BOOLEAN_ONLY, BASIC or SUMMARY")
    count = value.get("partial_unexpected_count", _DEFAULT_PARTIAL)
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"partial_unexpected_count must be a non-negative integer, got {count!r}")
    return ResultFormat(level, count)


def _exception_info(message: str | None = None) -> dict[str, Any]:
    if message is None:
        return {"raised_exception": False, "exception_traceback": None, "exception_message": None}
    return {"raised_exception": True, "exception_traceback": None, "exception_message": message}


def _failed(message: str) -> dict[str, Any]:
    """GX's shape for an expectation that raised: success false, empty result."""
    return {"success": False, "result": {}, "exception_info": _exception_info(message)}


class EvalError(Exception):
    """The expectation cannot be computed on this data (GX would raise): reported, not fatal."""


# --------------------------------------------------------------------------- value helpers


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise EvalError(f'Error: The column "{name}" in BatchData does not exist.')
    array = batch.column(index)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _nan_missing(t: pa.DataType) -> bool:
    """pandas holds missing values of numeric and text columns as NaN (else None/NaT)."""
    return _is_number(t) or _is_text(t)


#: pandas' missing marker in text columns: one shared NaN object (so GX's Counter groups them).
_TEXT_NAN = float("nan")


def _missing_as_pandas(value: Any, t: pa.DataType) -> Any:
    if value is None and _nan_missing(t):
        return _TEXT_NAN if _is_text(t) else float("nan")
    if isinstance(value, float) and math.isnan(value) and _is_text(t):
        return _TEXT_NAN
    return value


def _python_values(array: pa.Array, missing: pa.Array | None = None) -> list[Any]:
    """Values as GX sees them in pandas: missing numbers are distinct NaN objects (from
    ``tolist()``, never equal, counted apart), missing text is pandas' one shared NaN."""
    values = array.to_pylist()
    if missing is not None and _nan_missing(array.type):
        flags = missing.to_pylist()
        if _is_text(array.type):
            values = [_TEXT_NAN if flag else v for v, flag in zip(values, flags)]
        else:
            values = [float("nan") if flag else v for v, flag in zip(values, flags)]
    return values


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return to_json_value(value)


def _positions(mask: pa.Array) -> np.ndarray:
    return np.flatnonzero(mask.to_numpy(zero_copy_only=False))


def _as_bool(mask: pa.Array) -> pa.Array:
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return pc.fill_null(mask, False)


# --------------------------------------------------------------------------- base classes


class NativeExpectation:
    """One configured expectation, evaluated by merging per-batch states.

    Subclasses declare ``type`` (the GX name) and ``kwargs_allowed``; ``__init__`` checks the
    kwargs and raises ``ValueError`` with a sentence for a bad configuration.
    """

    type: ClassVar[str]
    #: Relative cost per row (hashing and regexes are dear): the slow ones are started first.
    cost: ClassVar[int] = 1
    kwargs_allowed: ClassVar[frozenset[str]] = frozenset()
    kwargs_required: ClassVar[tuple[str, ...]] = ()

    def __init__(self, kwargs: dict[str, Any]):
        self.kwargs = dict(kwargs)
        unknown = set(self.kwargs) - self.kwargs_allowed - COMMON_KWARGS
        if unknown:
            raise ValueError(f"{self.type} does not take {', '.join(sorted(unknown))} (it takes {', '.join(sorted(self.kwargs_allowed))})")
        for key in self.kwargs_required:
            if self.kwargs.get(key) in (None, ""):
                raise ValueError(f"{self.type} needs '{key}'")
        self.result_format = parse_result_format(self.kwargs.get("result_format"))
        self.check()

    def check(self) -> None:
        """Extra configuration checks (raise ValueError)."""

    def columns(self) -> list[str]:
        """The columns this expectation reads (for column pruning and spec checks)."""
        cols = [self.kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(self.kwargs.get(k), str)]
        cols.extend(self.kwargs.get("column_list") or [])
        return cols

    def initial(self) -> Any:
        raise NotImplementedError

    def add(self, state: Any, batch: pa.RecordBatch, offset: int = 0) -> Any:
        raise NotImplementedError

    def merge(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def finalize(self, state: Any) -> dict[str, Any]:
        raise NotImplementedError


def _coerce_bound(value: Any, kind: str, name: str, key: str) -> Any:
    """A bound as GX's pydantic model stores it (``Comparable`` = float | date | datetime; counts = int).

    GX coerces before evaluating (``2`` -> ``2.0``, ``"3"`` -> ``3.0``, ``"2020-01-01"`` ->
    a date, ``2.5`` -> ``2`` for counts), so the native path does the same.
    """
    if value is None:
        return None
    if isinstance(value, dict):
        raise ValueError(f"{name}: {key} as a suite parameter ({value!r}) is not supported; give a value")
    if kind == "int":
        try:
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError):
            raise ValueError(f"{name}: {key} must be an integer, got {value!r}") from None
    if isinstance(value, (bool, int, float)):
        return float(value)
    if kind == "float":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: {key} must be a number, got {value!r}") from None
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        text = value.strip()
        if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}", text):
            try:
                year, month, day = (int(part) for part in text.split("-"))
                return _dt.date(year, month, day)
            except ValueError:
                pass
        try:
            return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
    raise ValueError(f"{name}: {key} must be a number, a date or a datetime, got {value!r}")


def _check_bounds(kwargs: dict[str, Any], name: str, required: bool, kind: str = "comparable") -> tuple[Any, Any]:
    """The coerced (min_value, max_value); raises ValueError for a bad or inverted range."""
    lo = _coerce_bound(kwargs.get("min_value"), kind, name, "min_value")
    hi = _coerce_bound(kwargs.get("max_value"), kind, name, "max_value")
    if required and lo is None and hi is None:
        raise ValueError(f"{name} needs min_value or max_value (or both)")
    for key in ("strict_min", "strict_max"):
        if kwargs.get(key) is not None and not isinstance(kwargs[key], bool):
            raise ValueError(f"{name}: {key} must be true or false")
    if lo is not None and hi is not None:
        try:
            inverted = lo > hi
        except TypeError:
            raise ValueError(f"{name}: min_value {lo!r} and max_value {hi!r} are not comparable") from None
        if inverted:
            raise ValueError(f"{name}: min_value {kwargs.get('min_value')!r} is greater than max_value {kwargs.get('max_value')!r}")
    return lo, hi


def _check_mostly(kwargs: dict[str, Any], name: str) -> float:
    mostly = kwargs.get("mostly", 1.0)
    if mostly is None:
        mostly = 1.0
    if isinstance(mostly, bool) or not isinstance(mostly, (int, float)) or not 0 <= mostly <= 1:
        raise ValueError(f"{name}: mostly must be a number between 0 and 1, got {mostly!r}")
    return float(mostly)


@dataclass
class MapState:
    """Counts of a map expectation plus the first unexpected rows (position, value)."""

    element_count: int = 0
    nonnull_count: int = 0
    unexpected_count: int = 0
    partial: list[tuple[int, Any]] = field(default_factory=list)
    error: str | None = None


def _merge_map(a: MapState, b: MapState, limit: int) -> MapState:
    partial = sorted(a.partial + b.partial, key=lambda item: item[0])[:limit]
    return MapState(
        a.element_count + b.element_count,
        a.nonnull_count + b.nonnull_count,
        a.unexpected_count + b.unexpected_count,
        partial,
        a.error or b.error,
    )


def _partial_counts(values: list[Any], limit: int) -> list[dict[str, Any]] | None:
    """GX's ``partial_unexpected_counts`` (same algorithm, so the same ties and NaN quirks)."""
    try:
        hashable = [tuple(v.values()) if isinstance(v, dict) else v for v in values]
        return [
            {"value": key, "count": value}
            for key, value in sorted(Counter(hashable).most_common(limit), key=lambda x: (-x[1], x[0]))
        ]
    except TypeError:
        return None


def format_map_output(
    fmt: ResultFormat,
    success: bool,
    element_count: int,
    nonnull_count: int | None,
    unexpected_count: int,
    partial: list[tuple[int, Any]],
) -> dict[str, Any]:
    """The ``result`` block of a map expectation, as GX's ``_format_map_output`` builds it."""
    if fmt.level == "BOOLEAN_ONLY":
        return {}
    skip_missing = nonnull_count is None
    missing_count = None if skip_missing else element_count - nonnull_count
    missing_percent = unexpected_percent_total = unexpected_percent_nonmissing = None
    if element_count > 0:
        unexpected_percent_total = unexpected_count / element_count * 100
        if not skip_missing:
            missing_percent = missing_count / element_count * 100
            unexpected_percent_nonmissing = unexpected_count / nonnull_count * 100 if nonnull_count else None
        else:
            unexpected_percent_nonmissing = unexpected_percent_total
    values = [value for _, value in partial][: fmt.partial_unexpected_count]
    result: dict[str, Any] = {
        "element_count": element_count,
        "unexpected_count": unexpected_count,
        "unexpected_percent": unexpected_percent_nonmissing,
        "partial_unexpected_list": values,
    }
    if not skip_missing:
        result.update(
            {
                "missing_count": missing_count,
                "missing_percent": missing_percent,
                "unexpected_percent_total": unexpected_percent_total,
                "unexpected_percent_nonmissing": unexpected_percent_nonmissing,
            }
        )
    if fmt.level == "SUMMARY":
        if fmt.partial_unexpected_count > 0:
            counts = _partial_counts(values, fmt.partial_unexpected_count)
            if counts is not None:
                result["partial_unexpected_counts"] = counts
        if fmt.include_index:
            result["partial_unexpected_index_list"] = [pos for pos, _ in partial][: fmt.partial_unexpected_count]
    return _json(result)


def _mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


class _MapExpectation(NativeExpectation):
    """Row-wise yes/no questions; ``mostly`` applies to the rows considered."""

    #: False for not_null/null: every row is considered and missing values are the question.
    filter_missing: ClassVar[bool] = True

    def check(self) -> None:
        self.mostly = _check_mostly(self.kwargs, self.type)

    def initial(self) -> MapState:
        return MapState()

    def merge(self, a: MapState, b: MapState) -> MapState:
        return _merge_map(a, b, self.result_format.partial_unexpected_count)

    def add(self, state: MapState, batch: pa.RecordBatch, offset: int = 0) -> MapState:
        if state.error:
            state.element_count += batch.num_rows
            return state
        try:
            considered, unexpected, values = self.evaluate(batch)
        except EvalError as exc:
            return _merge_map(state, MapState(batch.num_rows, 0, 0, [], str(exc)), 0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError, ValueError) as exc:
            return _merge_map(state, MapState(batch.num_rows, 0, 0, [], f"{type(exc).__name__}: {exc}"), 0)
        positions = _positions(unexpected)
        limit = self.result_format.partial_unexpected_count
        first = positions[:limit]
        partial = list(zip((int(p) + offset for p in first), values(first) if len(first) else []))
        part = MapState(batch.num_rows, considered, int(positions.size), partial)
        return _merge_map(state, part, limit)

    def evaluate(self, batch: pa.RecordBatch):
        """(rows considered, unexpected mask over all rows, fn(positions) -> python values)."""
        raise NotImplementedError

    def finalize(self, state: MapState) -> dict[str, Any]:
        if state.error:
            return _failed(state.error)
        total, nonnull, unexpected = state.element_count, state.nonnull_count, state.unexpected_count
        if self.filter_missing:
            success = True if (total == 0 or nonnull == 0) else _mostly_success(nonnull, unexpected, self.mostly)
            nonnull_for_output: int | None = nonnull
        else:
            success = True if total == 0 else (total - unexpected) / total >= self.mostly
            nonnull_for_output = None
        return {
            "success": bool(success),
            "result": format_map_output(self.result_format, success, total, nonnull_for_output, unexpected, state.partial),
            "exception_info": _exception_info(),
        }


class _ColumnMap(_MapExpectation):
    """A column-map expectation: ``unexpected_values(present values)`` -> bool mask."""

    kwargs_allowed = frozenset({"column", "mostly"})
    kwargs_required = ("column",)

    def evaluate(self, batch: pa.RecordBatch):
        column = _column(batch, self.kwargs["column"])
        missing = missing_mask(column)
        if not self.filter_missing:
            unexpected = _as_bool(self.unexpected_all(column, missing))
            return batch.num_rows, unexpected, lambda pos: _python_values(column.take(pa.array(pos)), missing.take(pa.array(pos)))
        present_mask = pc.invert(missing)
        present = column.filter(present_mask)
        bad = _as_bool(self.unexpected(present)) if len(present) else pa.array([], pa.bool_())
        # scatter the mask over present rows back to all rows
        unexpected = np.zeros(batch.num_rows, dtype=bool)
        unexpected[_positions(present_mask)] = bad.to_numpy(zero_copy_only=False)
        return len(present), pa.array(unexpected), lambda pos: column.take(pa.array(pos)).to_pylist()

    def unexpected(self, values: pa.Array) -> pa.Array:
        raise NotImplementedError

    def unexpected_all(self, column: pa.Array, missing: pa.Array) -> pa.Array:
        raise NotImplementedError


# --------------------------------------------------------------------------- comparisons


def _parse_datetime(value: Any) -> Any:
    if isinstance(value, str):
        from dateutil.parser import parse

        return parse(value)
    return value


def _bound_scalar(column_type: pa.DataType, bound: Any, what: str) -> pa.Scalar:
    """``bound`` as a scalar comparable with a column of ``column_type`` (pandas' rules)."""
    if _is_number(column_type):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise EvalError(f"Invalid comparison between dtype={column_type} and {type(bound).__name__}")
        return pa.scalar(float(bound)) if (isinstance(bound, float) or pa.types.is_floating(column_type)) else pa.scalar(int(bound))
    if pa.types.is_boolean(column_type):
        if isinstance(bound, str):
            raise EvalError("Column values, min_value, and max_value must either be None or of the same type.")
        return pa.scalar(float(bound))
    if _is_text(column_type):
        if not isinstance(bound, str):
            raise EvalError("Column values, min_value, and max_value must either be None or of the same type.")
        return pa.scalar(bound, pa.string())
    if pa.types.is_timestamp(column_type):
        value = _parse_datetime(bound)
        if not isinstance(value, _dt.datetime):
            raise EvalError(f"Invalid comparison between dtype={column_type} and {type(bound).__name__}")
        if (value.tzinfo is None) != (column_type.tz is None):
            raise EvalError(f"Invalid comparison between dtype={column_type} and datetime")
        return pa.scalar(value, type=column_type)
    if pa.types.is_date(column_type):
        if isinstance(bound, str) or not isinstance(bound, _dt.date) or isinstance(bound, _dt.datetime):
            raise EvalError("Column values, min_value, and max_value must either be None or of the same type.")
        return pa.scalar(bound, type=pa.date32())
    raise EvalError(f"ColumnValuesBetween metrics cannot be computed on column of type {column_type}.")


def _comparable(values: pa.Array) -> pa.Array:
    if pa.types.is_boolean(values.type) or pa.types.is_decimal(values.type):
        return pc.cast(values, pa.float64())
    if pa.types.is_large_string(values.type):
        return pc.cast(values, pa.string())
    return values


def _between_mask(values: pa.Array, lo: Any, hi: Any, strict_min: bool, strict_max: bool) -> pa.Array:
    """True where ``values`` lie inside the bounds (GX's strictness)."""
    data = _comparable(values)
    inside = None
    if lo is not None:
        scalar = _bound_scalar(values.type, lo, "min_value")
        inside = (pc.greater if strict_min else pc.greater_equal)(data, scalar)
    if hi is not None:
        scalar = _bound_scalar(values.type, hi, "max_value")
        upper = (pc.less if strict_max else pc.less_equal)(data, scalar)
        inside = upper if inside is None else pc.and_(inside, upper)
    return inside


def _isin(values: pa.Array, value_set: Sequence[Any], parse_dates: bool = False) -> pa.Array:
    """pandas' ``Series.isin`` on Arrow values: members of another kind never match."""
    t = values.type
    members: list[Any]
    if _is_number(t):
        members = [float(v) for v in value_set if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))]
        data = pc.cast(values, pa.float64())
        return pc.is_in(data, value_set=pa.array(members, pa.float64()))
    if pa.types.is_boolean(t):
        members = [bool(v) for v in value_set if isinstance(v, bool) or (isinstance(v, (int, float)) and v in (0, 1))]
        return pc.is_in(values, value_set=pa.array(members, pa.bool_()))
    if _is_text(t):
        members = [v for v in value_set if isinstance(v, str)]
        return pc.is_in(pc.cast(values, pa.string()), value_set=pa.array(members, pa.string()))
    if pa.types.is_timestamp(t):
        members = []
        for v in value_set:
            if parse_dates and isinstance(v, str):
                v = _parse_datetime(v)
            if isinstance(v, _dt.datetime) and (v.tzinfo is None) == (t.tz is None):
                members.append(v)
        return pc.is_in(values, value_set=pa.array(members, t))
    if pa.types.is_date(t):
        members = [v for v in value_set if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime)]
        return pc.is_in(values, value_set=pa.array(members, t))
    return pc.is_in(values, value_set=pa.array(list(value_set)).cast(t))


def _as_pandas_text(values: pa.Array):
    """The values as pandas would see ``column.astype(str)`` in GX's pandas engine."""
    series = values.to_pandas()
    return series if _is_text(values.type) else series.astype(str)


_ESCAPED_UNICODE = re.compile(r"(?<!\\)(?:\\\\)*\\(?:[uU]|N{)")


@functools.lru_cache(maxsize=256)
def _regex_traits(regex: str) -> tuple[bool, bool, bool]:
    """(RE2 never matches like ``re``, RE2 differs on non-ASCII text, RE2 differs on newlines).

    The same rules pandas' Arrow string engine applies before choosing RE2 over ``re``
    (lookarounds, back-references, ``\\u``/``\\N{}`` escapes and ``\\s`` always need ``re``;
    ``\\w``/``\\d``/``\\b`` only on non-ASCII text; ``$`` only when a value holds a newline);
    ``\\Z`` is treated as always needing ``re``.
    """
    from re import _parser  # the parser pandas uses for the same decision

    if _ESCAPED_UNICODE.search(regex) or "\\Z" in regex:
        return True, False, False
    try:
        tokens = _parser.parse(regex)
    except re.error:
        return True, False, False
    repeats = {_parser.MAX_REPEAT, _parser.MIN_REPEAT, _parser.POSSESSIVE_REPEAT}

    def walk(items):
        for op, arg in items:
            yield op, arg
            if op == _parser.SUBPATTERN:
                yield from walk(arg[3])
            elif op == _parser.BRANCH:
                for branch in arg[1]:
                    yield from walk(branch)
            elif op in repeats:
                yield from walk(arg[2])
            elif op in (_parser.ATOMIC_GROUP, _parser.IN):
                yield from walk(arg)

    nodes = list(walk(tokens))
    always = any(op in (_parser.ASSERT, _parser.ASSERT_NOT, _parser.GROUPREF) for op, _ in nodes) or any(
        op == _parser.CATEGORY and arg in (_parser.CATEGORY_SPACE, _parser.CATEGORY_NOT_SPACE) for op, arg in nodes
    )
    unicode = any(
        (op == _parser.CATEGORY and arg in (_parser.CATEGORY_WORD, _parser.CATEGORY_NOT_WORD, _parser.CATEGORY_DIGIT, _parser.CATEGORY_NOT_DIGIT))
        or (op == _parser.AT and arg in (_parser.AT_BOUNDARY, _parser.AT_NON_BOUNDARY))
        for op, arg in nodes
    )
    newline = any(op == _parser.AT and arg == _parser.AT_END for op, arg in nodes)
    return always, unicode, newline


def _text_bytes(values: pa.Array) -> np.ndarray:
    """The UTF-8 bytes behind a string array (a superset for sliced arrays: checks stay safe)."""
    data = values.buffers()[2]
    return np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)


def _regex_contains(values: pa.Array, regex: str) -> pa.Array:
    """GX's ``column.astype(str).str.contains(regex)``: pandas' semantics, RE2 where safe.

    Where pandas' Arrow string engine would run RE2 (see :func:`_regex_traits`), RE2 runs
    directly; otherwise pandas itself evaluates the values, falling back to Python's ``re``
    exactly as it does under GX.
    """
    if len(values) == 0:
        return pa.array([], pa.bool_())
    if _is_text(values.type):
        always, unicode, newline = _regex_traits(regex)
        safe = not always
        if safe and (unicode or newline):
            data = _text_bytes(values)
            if unicode and (data >= 0x80).any():
                safe = False
            if newline and (data == 0x0A).any():
                safe = False
        if safe:
            try:
                return pc.match_substring_regex(values, regex)
            except pa.ArrowInvalid:  # RE2 refuses the syntax: let pandas decide
                pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "pattern has match groups"
        matched = _as_pandas_text(values).str.contains(regex)
    return pa.array(np.asarray(matched, dtype=bool))


def _text_lengths(values: pa.Array) -> pa.Array:
    if _is_text(values.type):
        return pc.utf8_length(values)
    return pa.array(np.asarray(_as_pandas_text(values).str.len(), dtype=np.int64))


# --------------------------------------------------------------------------- column map expectations


class ExpectColumnValuesToNotBeNull(_ColumnMap):
    type = "expect_column_values_to_not_be_null"
    filter_missing = False

    def unexpected_all(self, column, missing):
        return missing


class ExpectColumnValuesToBeNull(_ColumnMap):
    type = "expect_column_values_to_be_null"
    filter_missing = False

    def unexpected_all(self, column, missing):
        return pc.invert(missing)


class ExpectColumnValuesToBeBetween(_ColumnMap):
    type = "expect_column_values_to_be_between"
    kwargs_allowed = _ColumnMap.kwargs_allowed | {"min_value", "max_value", "strict_min", "strict_max"}

    def check(self):
        super().check()
        self.lo, self.hi = _check_bounds(self.kwargs, self.type, required=True)

    def unexpected(self, values):
        k = self.kwargs
        inside = _between_mask(values, self.lo, self.hi, bool(k.get("strict_min")), bool(k.get("strict_max")))
        return pc.invert(inside)


class ExpectColumnValuesToBeInSet(_ColumnMap):
    type = "expect_column_values_to_be_in_set"
    kwargs_allowed = _ColumnMap.kwargs_allowed | {"value_set"}
    kwargs_required = ("column",)

    def check(self):
        super().check()
        value_set = self.kwargs.get("value_set")
        if not isinstance(value_set, (list, tuple, set)):
            raise ValueError(f"{self.type} needs value_set: a list of values, got {value_set!r}")

    def unexpected(self, values):
        value_set = self.kwargs.get("value_set")
        if value_set is None:  # GX: vacuously true
            return pa.array(np.zeros(len(values), dtype=bool))
        return pc.invert(_isin(values, list(value_set)))


class ExpectColumnValuesToNotBeInSet(ExpectColumnValuesToBeInSet):
    type = "expect_column_values_to_not_be_in_set"

    def unexpected(self, values):
        value_set = self.kwargs.get("value_set")
        if value_set is None:
            return pa.array(np.zeros(len(values), dtype=bool))
        # GX parses string members as datetimes for datetime columns here (and only here)
        return _isin(values, list(value_set), parse_dates=True)


class ExpectColumnValuesToMatchRegex(_ColumnMap):
    type = "expect_column_values_to_match_regex"
    cost = 3
    kwargs_allowed = _ColumnMap.kwargs_allowed | {"regex"}
    kwargs_required = ("column", "regex")
    negate: ClassVar[bool] = False

    def check(self):
        super().check()
        regex = self.kwargs["regex"]
        if not isinstance(regex, str):
            raise ValueError(f"{self.type}: regex must be a string")
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"{self.type}: regex {regex!r} does not compile: {exc}") from None

    def unexpected(self, values):
        matched = _regex_contains(values, self.kwargs["regex"])
        return matched if self.negate else pc.invert(matched)


class ExpectColumnValuesToNotMatchRegex(ExpectColumnValuesToMatchRegex):
    type = "expect_column_values_to_not_match_regex"
    negate = True


class ExpectColumnValueLengthsToBeBetween(_ColumnMap):
    type = "expect_column_value_lengths_to_be_between"
    kwargs_allowed = _ColumnMap.kwargs_allowed | {"min_value", "max_value", "strict_min", "strict_max"}

    def check(self):
        super().check()
        self.lo, self.hi = _check_bounds(self.kwargs, self.type, required=True, kind="int")

    def unexpected(self, values):
        k = self.kwargs
        lengths = _text_lengths(values)
        return pc.invert(_between_mask(lengths, self.lo, self.hi, bool(k.get("strict_min")), bool(k.get("strict_max"))))


class ExpectColumnValuesToMatchStrftimeFormat(_ColumnMap):
    type = "expect_column_values_to_match_strftime_format"
    cost = 3
    kwargs_allowed = _ColumnMap.kwargs_allowed | {"strftime_format"}
    kwargs_required = ("column", "strftime_format")

    def check(self):
        super().check()
        fmt = self.kwargs["strftime_format"]
        if not isinstance(fmt, str):
            raise ValueError(f"{self.type}: strftime_format must be a string")
        try:
            _dt.datetime.strptime(_dt.datetime(2001, 2, 3, 4, 5, 6).strftime(fmt), fmt)
        except ValueError as exc:
            raise ValueError(f"{self.type}: unable to use strftime_format {fmt!r}: {exc}") from None

    def unexpected(self, values):
        if not _is_text(values.type):
            raise EvalError(
                "Values passed to expect_column_values_to_match_strftime_format must be of type string.\n"
                "If you want to validate a column of dates or timestamps, please call the expectation before converting from string format."
            )
        fmt = self.kwargs["strftime_format"]
        encoded = pc.dictionary_encode(values)
        ok = []
        # strptime has no vectorised equivalent with Python's exact rules: one call per
        # *distinct* value of the batch, not per row.
        for text in encoded.dictionary.to_pylist():
            try:
                _dt.datetime.strptime(text, fmt)
                ok.append(True)
            except ValueError:
                ok.append(False)
        return pc.invert(pa.array(ok, pa.bool_()).take(encoded.indices))


# --------------------------------------------------------------------------- uniqueness (needs global counts)


@dataclass
class KeyCounts:
    """Distinct keys of some rows with their counts and first positions (capped per key)."""

    keys: pa.Array  # distinct normalised keys
    representatives: pa.Array  # one original value per key (for partial lists)
    counts: np.ndarray
    occ_key: np.ndarray  # index into ``keys`` of each kept occurrence
    occ_pos: np.ndarray  # its row position


@dataclass
class UniqueState:
    """Uniqueness over many batches: parts are kept as they come and combined in one pass.

    Merging is an append (cheap, order-preserving); :func:`compact` re-keys all parts with a
    single hash pass, when many are pending and at the end — so the cost stays linear in
    the rows instead of re-hashing the growing key set at every merge.
    """

    element_count: int = 0
    considered: int = 0
    parts: list[KeyCounts] = field(default_factory=list)
    pending: int = 0  # keys in parts added since the last compaction
    error: str | None = None


#: Compact once the keys added since the last compaction outnumber the compacted ones by this.
_COMPACT_FACTOR = 2
_COMPACT_MIN_KEYS = 1_000_000


def _cap_per_key(keys: np.ndarray, positions: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most ``cap`` occurrences (the first ones) per key; order is not kept."""
    if keys.size == 0:
        return keys, positions
    per_key = np.bincount(keys)
    heavy = per_key > cap
    if not heavy.any():
        return keys, positions
    in_heavy = heavy[keys]
    hk, hp = keys[in_heavy], positions[in_heavy]
    order = np.lexsort((hp, hk))
    hk, hp = hk[order], hp[order]
    starts = np.r_[0, np.flatnonzero(np.diff(hk)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, hk.size]))
    keep = (np.arange(hk.size) - group_start) < cap
    light = ~in_heavy
    return np.concatenate([keys[light], hk[keep]]), np.concatenate([positions[light], hp[keep]])


def factorize(keys: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(code per value, distinct values in first-seen order) — one hash pass.

    pandas' hash table is about twice as fast as Arrow's ``dictionary_encode`` on numbers;
    text stays in Arrow (no Python strings).
    """
    if keys.null_count == 0 and (pa.types.is_integer(keys.type) or pa.types.is_floating(keys.type)):
        import pandas as pd

        codes, uniques = pd.factorize(keys.to_numpy(zero_copy_only=False))
        return codes.astype(np.int64, copy=False), pa.array(uniques, type=keys.type)
    encoded = pc.dictionary_encode(keys)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def key_counts(keys: pa.Array, representatives: pa.Array, positions: np.ndarray, cap: int) -> KeyCounts:
    """The counts of one batch: ``keys`` are hashable (normalised), ``positions`` their rows."""
    codes, distinct = factorize(keys)
    size = len(distinct)
    counts = np.bincount(codes, minlength=size).astype(np.int64)
    if size == len(keys):  # no repeats in this batch: keys are their own distinct values
        reps = representatives
    else:
        first = np.full(size, -1, np.int64)
        first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
        reps = representatives.take(pa.array(first))
    occ_key, occ_pos = _cap_per_key(codes, positions.astype(np.int64), cap)
    return KeyCounts(distinct, reps, counts, occ_key, occ_pos)


def compact(parts: list[KeyCounts], cap: int) -> KeyCounts:
    """One :class:`KeyCounts` for many parts (a single hash pass over their keys)."""
    if len(parts) == 1:
        return parts[0]
    key_type, rep_type = parts[0].keys.type, parts[0].representatives.type
    keys = pa.concat_arrays([p.keys.cast(key_type) for p in parts])
    reps = pa.concat_arrays([p.representatives.cast(rep_type) for p in parts])
    codes, distinct = factorize(keys)
    size = len(distinct)
    counts = np.bincount(codes, weights=np.concatenate([p.counts for p in parts]), minlength=size).astype(np.int64)
    first = np.full(size, -1, np.int64)
    first[codes[::-1]] = np.arange(codes.size - 1, -1, -1)
    offsets = np.cumsum([0] + [len(p.keys) for p in parts])
    occ_key = np.concatenate([codes[offsets[i]: offsets[i + 1]][p.occ_key] for i, p in enumerate(parts)])
    occ_pos = np.concatenate([p.occ_pos for p in parts])
    occ_key, occ_pos = _cap_per_key(occ_key, occ_pos, cap)
    return KeyCounts(distinct, reps.take(pa.array(first)), counts, occ_key, occ_pos)


def merge_unique(a: UniqueState, b: UniqueState, cap: int) -> UniqueState:
    out = UniqueState(a.element_count + b.element_count, a.considered + b.considered, a.parts + b.parts, a.pending + b.pending, a.error or b.error)
    compacted = sum(len(p.keys) for p in out.parts) - out.pending
    if len(out.parts) > 1 and out.pending > max(_COMPACT_MIN_KEYS, _COMPACT_FACTOR * compacted):
        out.parts, out.pending = [compact(out.parts, cap)], 0
    return out


def unique_outcome(state: UniqueState, limit: int) -> tuple[int, list[tuple[int, Any]]]:
    """(rows whose key occurs more than once, the first ``limit`` of them as (position, value)).

    One hash pass over the keys of all parts; values are fetched only for the rows listed.
    """
    parts = state.parts
    if not parts:
        return 0, []
    key_type, rep_type = parts[0].keys.type, parts[0].representatives.type
    if len(parts) == 1:  # keys of one part are already distinct
        codes = np.arange(len(parts[0].keys), dtype=np.int64)
    else:
        codes, _ = factorize(pa.concat_arrays([p.keys.cast(key_type) for p in parts]))
    weights = np.concatenate([p.counts for p in parts]) if len(parts) > 1 else parts[0].counts
    totals = np.bincount(codes, weights=weights).astype(np.int64)
    duplicated = totals >= 2
    unexpected = int(totals[duplicated].sum())
    offsets = np.cumsum([0] + [len(p.keys) for p in parts])
    occ = np.concatenate([p.occ_key + offsets[i] for i, p in enumerate(parts)])
    positions = np.concatenate([p.occ_pos for p in parts])
    chosen = duplicated[codes[occ]]
    occ, positions = occ[chosen], positions[chosen]
    order = np.argsort(positions, kind="stable")[:limit]
    if not order.size:
        return unexpected, []
    reps = pa.concat_arrays([p.representatives.cast(rep_type) for p in parts]) if len(parts) > 1 else parts[0].representatives
    values = reps.take(pa.array(occ[order])).to_pylist()
    return unexpected, list(zip(positions[order].tolist(), values))


class _UniqueBase(_MapExpectation):
    cost = 3

    def initial(self) -> UniqueState:
        return UniqueState()

    def merge(self, a: UniqueState, b: UniqueState) -> UniqueState:
        return merge_unique(a, b, self.cap)

    @property
    def cap(self) -> int:
        return max(self.result_format.partial_unexpected_count, 1)

    def add(self, state: UniqueState, batch: pa.RecordBatch, offset: int = 0) -> UniqueState:
        if state.error:
            state.element_count += batch.num_rows
            return state
        try:
            keys, reps, positions = self.keys(batch)
        except EvalError as exc:
            return self.merge(state, UniqueState(batch.num_rows, error=str(exc)))
        part = UniqueState(batch.num_rows, len(keys))
        if len(keys):
            counts = key_counts(keys, reps, positions + offset, self.cap)
            part.parts, part.pending = [counts], len(counts.keys)
        return self.merge(state, part)

    def finalize(self, state: UniqueState) -> dict[str, Any]:
        if state.error:
            return _failed(state.error)
        limit = self.result_format.partial_unexpected_count
        unexpected, partial = unique_outcome(state, limit)
        partial = self.present(partial)
        total, considered = state.element_count, state.considered
        success = True if (total == 0 or considered == 0) else _mostly_success(considered, unexpected, self.mostly)
        return {
            "success": bool(success),
            "result": format_map_output(self.result_format, success, total, considered, unexpected, partial),
            "exception_info": _exception_info(),
        }

    def present(self, partial):
        return partial


class ExpectColumnValuesToBeUnique(_UniqueBase):
    type = "expect_column_values_to_be_unique"
    kwargs_allowed = frozenset({"column", "mostly"})
    kwargs_required = ("column",)

    def keys(self, batch):
        column = _column(batch, self.kwargs["column"])
        present_mask = pc.invert(missing_mask(column))
        present = column.filter(present_mask)
        return hashable_values(present), present, _positions(present_mask)


def compound_key(columns: Sequence[pa.Array]) -> pa.Array:
    """One string key per row that is equal exactly when all values are equal.

    Missing values (null, NaN) are all equal, as in pandas' ``duplicated``; each part is
    length-prefixed so no value can imitate a separator.
    """
    parts = []
    for column in columns:
        values = hashable_values(column)
        missing = missing_mask(values)
        text = pc.cast(values, pa.string()) if not _is_text(values.type) else pc.cast(values, pa.string())
        length = pc.cast(pc.utf8_length(text), pa.string())
        part = pc.binary_join_element_wise(length, text, ":")
        parts.append(pc.if_else(missing, pa.scalar("~", pa.string()), part))
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, "|")


class ExpectCompoundColumnsToBeUnique(_UniqueBase):
    type = "expect_compound_columns_to_be_unique"
    kwargs_allowed = frozenset({"column_list", "mostly", "ignore_row_if"})
    kwargs_required = ("column_list",)

    def check(self):
        super().check()
        cols = self.kwargs["column_list"]
        if not isinstance(cols, (list, tuple)) or not cols or not all(isinstance(c, str) for c in cols):
            raise ValueError(f"{self.type}: column_list must be a non-empty list of column names")
        ignore = self.kwargs.get("ignore_row_if", "all_values_are_missing")
        if ignore not in ("all_values_are_missing", "any_value_is_missing", "never"):
            raise ValueError(f"{self.type}: ignore_row_if must be all_values_are_missing, any_value_is_missing or never")

    def keys(self, batch):
        names = list(self.kwargs["column_list"])
        columns = [_column(batch, name) for name in names]
        missing = [missing_mask(c) for c in columns]
        ignore = self.kwargs.get("ignore_row_if", "all_values_are_missing")
        if ignore == "never":
            keep = pa.array(np.ones(batch.num_rows, bool))
        else:
            combine = pc.and_ if ignore == "all_values_are_missing" else pc.or_
            dropped = missing[0]
            for m in missing[1:]:
                dropped = combine(dropped, m)
            keep = pc.invert(dropped)
        columns = [c.filter(keep) for c in columns]
        missing = [m.filter(keep) for m in missing]
        reps = pa.StructArray.from_arrays(columns, names=names)
        self._missing_types = [c.type for c in columns]
        return compound_key(columns), reps, _positions(keep)

    def present(self, partial):
        out = []
        for pos, row in partial:
            # pandas shows missing values as NaN in numeric and text columns
            out.append((pos, {k: _missing_as_pandas(v, t) for (k, v), t in zip(row.items(), self._missing_types)}))
        return out


class ExpectColumnPairValuesAToBeGreaterThanB(_MapExpectation):
    type = "expect_column_pair_values_a_to_be_greater_than_b"
    kwargs_allowed = frozenset({"column_A", "column_B", "or_equal", "ignore_row_if", "mostly"})
    kwargs_required = ("column_A", "column_B")

    def check(self):
        super().check()
        ignore = self.kwargs.get("ignore_row_if", "both_values_are_missing")
        if ignore not in ("both_values_are_missing", "either_value_is_missing", "neither"):
            raise ValueError(f"{self.type}: ignore_row_if must be both_values_are_missing, either_value_is_missing or neither")

    def evaluate(self, batch):
        a = _column(batch, self.kwargs["column_A"])
        b = _column(batch, self.kwargs["column_B"])
        missing_a, missing_b = missing_mask(a), missing_mask(b)
        ignore = self.kwargs.get("ignore_row_if", "both_values_are_missing")
        if ignore == "both_values_are_missing":
            keep = pc.invert(pc.and_(missing_a, missing_b))
        elif ignore == "either_value_is_missing":
            keep = pc.invert(pc.or_(missing_a, missing_b))
        else:
            keep = pa.array(np.ones(batch.num_rows, bool))
        compare = pc.greater_equal if self.kwargs.get("or_equal") else pc.greater
        try:
            ok = _as_bool(compare(_comparable(a), _comparable(b)))
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowInvalid) as exc:
            raise EvalError(f"TypeError: cannot compare {a.type} with {b.type}: {exc}") from None
        unexpected = pc.and_(keep, pc.invert(ok))

        def values(pos):
            idx = pa.array(pos)
            left = _python_values(a.take(idx), missing_a.take(idx))
            right = _python_values(b.take(idx), missing_b.take(idx))
            return list(zip(left, right))

        return pc.sum(keep).as_py() or 0, unexpected, values


# --------------------------------------------------------------------------- aggregate expectations


class _NaT:
    """pandas' NaT as a metric value: a datetime that compares False, and raises with numbers."""

    def __repr__(self) -> str:
        return "NaT"


NAT = _NaT()


def metric_between(kwargs: dict[str, Any], value: Any, lo: Any, hi: Any) -> dict[str, Any]:
    """GX's ``_validate_metric_value_between``: success and ``observed_value``."""
    if value is NAT:
        for bound in (lo, hi):
            if bound is not None and not isinstance(bound, _dt.date):
                op = ">=" if bound is lo else "<="
                return _failed(f"'{op}' not supported between instances of 'NaTType' and '{type(bound).__name__}'")
        return {"success": lo is None and hi is None, "result": {"observed_value": None}, "exception_info": _exception_info()}
    if value is None or (not isinstance(value, _dt.datetime) and isinstance(value, float) and math.isnan(value)):
        return {"success": False, "result": {"observed_value": None}, "exception_info": _exception_info()}
    try:
        above = True if lo is None else (value > lo if kwargs.get("strict_min") else value >= lo)
        below = True if hi is None else (value < hi if kwargs.get("strict_max") else value <= hi)
    except TypeError as exc:
        return _failed(f"TypeError: {exc}")
    success = bool(above and below)
    return {"success": success, "result": {"observed_value": _json(value)}, "exception_info": _exception_info()}


class _Aggregate(NativeExpectation):
    """A column metric compared with ``min_value``/``max_value``."""

    kwargs_allowed = frozenset({"column", "min_value", "max_value", "strict_min", "strict_max"})
    kwargs_required = ("column",)
    bound_kind: ClassVar[str] = "comparable"

    def check(self):
        self.lo, self.hi = _check_bounds(self.kwargs, self.type, required=False, kind=self.bound_kind)

    def initial(self):
        return {"error": None}

    def add(self, state, batch, offset=0):
        if state.get("error"):
            return state
        try:
            column = _column(batch, self.kwargs["column"])
            present = column.filter(pc.invert(missing_mask(column)))
            self.accumulate(state, present)
        except EvalError as exc:
            state["error"] = str(exc)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError) as exc:
            state["error"] = f"{type(exc).__name__}: {exc}"
        return state

    def merge(self, a, b):
        if a.get("error") or b.get("error"):
            return {"error": a.get("error") or b.get("error")}
        return self.combine(a, b)

    def finalize(self, state):
        if state.get("error"):
            return _failed(state["error"])
        return metric_between(self.kwargs, self.value(state), self.lo, self.hi)


def _numeric(values: pa.Array, what: str) -> pa.Array:
    if _is_number(values.type) or pa.types.is_boolean(values.type):
        return values
    raise EvalError(f"TypeError: cannot compute the {what} of a {values.type} column")


class _MomentsAggregate(_Aggregate):
    def initial(self):
        return {"error": None, "moments": Moments(), "int_sum": 0, "is_int": None}

    def accumulate(self, state, present):
        values = _numeric(present, self.what)
        integral = pa.types.is_integer(values.type) or pa.types.is_boolean(values.type)
        state["is_int"] = integral if state["is_int"] is None else (state["is_int"] and integral)
        if integral:
            state["int_sum"] += int(pc.sum(pc.cast(values, pa.int64())).as_py() or 0)
        floats = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        state["moments"].add(floats.astype(np.float64, copy=False))

    def combine(self, a, b):
        a["moments"].merge(b["moments"])
        a["int_sum"] += b["int_sum"]
        a["is_int"] = b["is_int"] if a["is_int"] is None else (a["is_int"] if b["is_int"] is None else a["is_int"] and b["is_int"])
        return a


class ExpectColumnMeanToBeBetween(_MomentsAggregate):
    type = "expect_column_mean_to_be_between"
    what = "mean"

    def value(self, state):
        # sum / count like pandas (exact for integers), not the running Welford mean
        m = state["moments"]
        if not m.count:
            return None
        return (state["int_sum"] if state["is_int"] else m.total) / m.count


class ExpectColumnStdevToBeBetween(_MomentsAggregate):
    type = "expect_column_stdev_to_be_between"
    what = "standard deviation"

    def value(self, state):
        return state["moments"].std(ddof=1)


class ExpectColumnSumToBeBetween(_MomentsAggregate):
    type = "expect_column_sum_to_be_between"
    what = "sum"

    def value(self, state):
        if state["is_int"]:
            return state["int_sum"]
        return state["moments"].total if state["moments"].count else 0


class _MinMax(_Aggregate):
    def initial(self):
        return {"error": None, "value": None}

    def accumulate(self, state, present):
        if pa.types.is_timestamp(present.type):
            state["temporal"] = True
        if len(present) == 0:
            return
        values = _comparable(present) if pa.types.is_decimal(present.type) else present
        bound = pc.min_max(values)[self.which].as_py()
        state["value"] = self._pick(state["value"], bound)

    def _pick(self, current, new):
        if current is None:
            return new
        if new is None:
            return current
        return min(current, new) if self.which == "min" else max(current, new)

    def combine(self, a, b):
        return {"error": None, "value": self._pick(a["value"], b["value"]), "temporal": a.get("temporal") or b.get("temporal")}

    def value(self, state):
        if state["value"] is None and state.get("temporal"):
            return NAT  # pandas' min/max of an all-missing datetime column
        return state["value"]


class ExpectColumnMinToBeBetween(_MinMax):
    type = "expect_column_min_to_be_between"
    which = "min"


class ExpectColumnMaxToBeBetween(_MinMax):
    type = "expect_column_max_to_be_between"
    which = "max"


#: Values kept exactly for a median before switching to a KLL sketch.
MEDIAN_EXACT_LIMIT = 10_000_000
#: Distinct values kept exactly before switching to HyperLogLog.
DISTINCT_EXACT_LIMIT = 10_000_000


class ExpectColumnMedianToBeBetween(_Aggregate):
    type = "expect_column_median_to_be_between"

    def initial(self):
        return {"error": None, "sketch": QuantileSketch(MEDIAN_EXACT_LIMIT)}

    def accumulate(self, state, present):
        values = _numeric(present, "median")
        state["sketch"].add(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64))

    def combine(self, a, b):
        a["sketch"].merge(b["sketch"])
        return a

    def value(self, state):
        return state["sketch"].median()


class _DistinctAggregate(_Aggregate):
    def initial(self):
        return {"error": None, "distinct": DistinctCounter(DISTINCT_EXACT_LIMIT), "nonnull": 0}

    def accumulate(self, state, present):
        state["nonnull"] += len(present)
        state["distinct"].add(hashable_values(present))

    def combine(self, a, b):
        a["distinct"].merge(b["distinct"])
        a["nonnull"] += b["nonnull"]
        return a


class ExpectColumnUniqueValueCountToBeBetween(_DistinctAggregate):
    type = "expect_column_unique_value_count_to_be_between"
    bound_kind = "int"

    def value(self, state):
        return state["distinct"].count()


class ExpectColumnProportionOfUniqueValuesToBeBetween(_DistinctAggregate):
    type = "expect_column_proportion_of_unique_values_to_be_between"
    bound_kind = "float"

    def value(self, state):
        nonnull = state["nonnull"]
        return state["distinct"].count() / nonnull if nonnull else 0


class ExpectTableRowCountToBeBetween(NativeExpectation):
    type = "expect_table_row_count_to_be_between"
    kwargs_allowed = frozenset({"min_value", "max_value", "strict_min", "strict_max"})

    def check(self):
        self.lo, self.hi = _check_bounds(self.kwargs, self.type, required=False, kind="int")

    def initial(self):
        return 0

    def add(self, state, batch, offset=0):
        return state + batch.num_rows

    def merge(self, a, b):
        return a + b

    def finalize(self, state):
        return metric_between(self.kwargs, state, self.lo, self.hi)


class ExpectColumnToExist(NativeExpectation):
    type = "expect_column_to_exist"
    kwargs_allowed = frozenset({"column", "column_index"})
    kwargs_required = ("column",)

    def check(self):
        index = self.kwargs.get("column_index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise ValueError(f"{self.type}: column_index must be an integer")

    def initial(self):
        return None

    def add(self, state, batch, offset=0):
        return state if state is not None else list(batch.schema.names)

    def merge(self, a, b):
        return a if a is not None else b

    def finalize(self, state):
        columns = state or []
        name, index = self.kwargs["column"], self.kwargs.get("column_index")
        if index:  # GX: a falsy index (None or 0) means "anywhere"
            success = index < len(columns) and columns[index] == name
        else:
            success = name in columns
        return {"success": bool(success), "result": {}, "exception_info": _exception_info()}


# --------------------------------------------------------------------------- catalogue

NATIVE: dict[str, type[NativeExpectation]] = {
    cls.type: cls
    for cls in (
        ExpectColumnValuesToNotBeNull,
        ExpectColumnValuesToBeNull,
        ExpectColumnValuesToBeUnique,
        ExpectColumnValuesToBeBetween,
        ExpectColumnValuesToBeInSet,
        ExpectColumnValuesToNotBeInSet,
        ExpectColumnValuesToMatchRegex,
        ExpectColumnValuesToNotMatchRegex,
        ExpectColumnValueLengthsToBeBetween,
        ExpectColumnValuesToMatchStrftimeFormat,
        ExpectColumnMeanToBeBetween,
        ExpectColumnMinToBeBetween,
        ExpectColumnMaxToBeBetween,
        ExpectColumnSumToBeBetween,
        ExpectColumnMedianToBeBetween,
        ExpectColumnStdevToBeBetween,
        ExpectColumnProportionOfUniqueValuesToBeBetween,
        ExpectColumnUniqueValueCountToBeBetween,
        ExpectCompoundColumnsToBeUnique,
        ExpectTableRowCountToBeBetween,
        ExpectColumnToExist,
        ExpectColumnPairValuesAToBeGreaterThanB,
    )
}

#: kwargs that mean "GX must evaluate this" (row filters): the native path does not take them.
GX_ONLY_KWARGS = frozenset({"row_condition", "condition_parser"})


def native_expectation(name: str, kwargs: dict[str, Any]) -> NativeExpectation | None:
    """The native evaluator for ``name`` with ``kwargs``, or None when GX must evaluate it.

    Raises ValueError for a configuration GX would also refuse (min > max, a regex that does
    not compile, a missing column argument).
    """
    cls = NATIVE.get(name)
    if cls is None or GX_ONLY_KWARGS & set(kwargs):
        return None
    return cls(kwargs)
