"""``profile``: a one-pass, mergeable column profile of a dataset, as JSON and an HTML page.

Every statistic is a small accumulator that merges across batches and workers (a Beam
``CombineFn``), so the profile costs one pass whatever the size:

- count, nulls (null or NaN), distinct (exact up to ``exact_distinct_limit`` values, then a
  HyperLogLog sketch from ``datasketches``), min, max, mean and standard deviation (Chan's
  parallel moments), quantiles (exact up to ``exact_quantile_limit`` values, then a KLL sketch),
- the top-k values with counts (exact while the distinct values fit, then a bounded
  heavy-hitters table whose counts are lower bounds),
- the inferred type of text columns (integer, float, boolean, date, timestamp, uuid, email,
  url or string), string length statistics and the most common character patterns
  (``Aa 9999-99-99``), and a histogram per numeric column.

The ``profile`` step passes its rows through unchanged and writes the report as a side effect;
``python -m beam_etl profile FILE`` profiles a file without a pipeline.

Example:
    >>> import pyarrow as pa
    >>> report = profile_table(pa.table({"age": [31, 45, None, 45]}))
    >>> report["columns"]["age"]["nulls"], report["columns"]["age"]["distinct"]
    (1, 2)
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from beam_etl.batch import to_json_value
from beam_etl.errors import SpecIssue
from beam_etl.models import StepModel
from beam_etl.registry import register_step
from beam_etl.steps import ApplyBatchFn, BatchOutcome, BuildContext, StepOutputs

__all__ = [
    "ProfileOptions",
    "ProfileSpec",
    "Profile",
    "ProfileCombineFn",
    "ProfileState",
    "ColumnState",
    "Moments",
    "DistinctCounter",
    "QuantileSketch",
    "TopK",
    "missing_mask",
    "hashable_values",
    "profile_table",
    "profile_batches",
    "profile_command",
    "report_paths",
    "combine_report",
    "windowed_path",
]

#: Quantiles reported for numeric columns.
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 20

try:  # optional: HLL and KLL sketches beyond the exact bounds
    import datasketches as _ds
except ImportError:  # pragma: no cover - exercised only without the optional extra
    _ds = None


# --------------------------------------------------------------------------- helpers


def _plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous, non-dictionary array."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


def missing_mask(array: pa.Array) -> pa.Array:
    """True where a value is missing: null, or NaN in a floating column (pandas' ``isnull``)."""
    if pa.types.is_floating(array.type):
        return pc.is_null(array, nan_is_null=True)
    return pc.is_null(array)


def hashable_values(array: pa.Array) -> pa.Array:
    """Values normalised for distinct counting: ``-0.0`` equals ``0.0`` (as in pandas)."""
    if pa.types.is_floating(array.type):
        return pc.add(array, pa.scalar(0.0, array.type))
    return array


def _is_numeric(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type)


def _kind(data_type: pa.DataType) -> str:
    if pa.types.is_boolean(data_type):
        return "boolean"
    if pa.types.is_integer(data_type):
        return "integer"
    if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "float"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "string"
    if pa.types.is_timestamp(data_type):
        return "timestamp"
    if pa.types.is_date(data_type):
        return "date"
    if pa.types.is_time(data_type) or pa.types.is_duration(data_type):
        return "time"
    return "other"


def _float64(array: pa.Array) -> np.ndarray:
    """Non-missing values of a numeric array as float64 (NaN and nulls dropped)."""
    values = array if pa.types.is_floating(array.type) else pc.cast(array, pa.float64())
    values = values.filter(pc.invert(missing_mask(values)))
    return values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


# --------------------------------------------------------------------------- mergeable pieces


@dataclass
class Moments:
    """Count, mean and M2 (Chan et al.'s parallel algorithm), min and max of float values.

    Example:
        >>> a, b = Moments(), Moments()
        >>> a.add(np.array([1.0, 2.0])); b.add(np.array([3.0]))
        >>> a.merge(b); a.mean, a.std()
        (2.0, 1.0)
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, values: np.ndarray) -> None:
        n = int(values.size)
        if n == 0:
            return
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        self._combine(n, mean, m2, float(values.sum()), float(values.min()), float(values.max()))

    def add_weighted(self, values: np.ndarray, weights: np.ndarray) -> None:
        """Add ``values[i]`` ``weights[i]`` times (distinct values with their counts)."""
        n = int(weights.sum())
        if n == 0:
            return
        mean = float((values * weights).sum() / n)
        m2 = float((weights * (values - mean) ** 2).sum())
        self._combine(n, mean, m2, float((values * weights).sum()), float(values.min()), float(values.max()))

    def merge(self, other: "Moments") -> None:
        if other.count:
            self._combine(other.count, other.mean, other.m2, other.total, other.minimum, other.maximum)

    def _combine(self, n: int, mean: float, m2: float, total: float, lo: float, hi: float) -> None:
        if self.count == 0:
            self.count, self.mean, self.m2, self.total, self.minimum, self.maximum = n, mean, m2, total, lo, hi
            return
        count = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / count
        self.m2 = self.m2 + m2 + delta * delta * self.count * n / count
        self.count = count
        self.total += total
        self.minimum = min(self.minimum, lo)
        self.maximum = max(self.maximum, hi)

    def variance(self, ddof: int = 1) -> float | None:
        if self.count - ddof <= 0:
            return None
        return max(self.m2, 0.0) / (self.count - ddof)

    def std(self, ddof: int = 1) -> float | None:
        variance = self.variance(ddof)
        return None if variance is None else math.sqrt(variance)


class DistinctCounter:
    """Distinct values: exact up to ``limit``, then a HyperLogLog estimate (``approximate``).

    Without ``datasketches`` installed the count stays exact (and memory grows with it).
    """

    def __init__(self, limit: int = 100_000, lg_k: int = 14):
        self.limit = limit
        self.lg_k = lg_k
        self.exact: pa.Array | None = None
        self._hll = None

    @property
    def approximate(self) -> bool:
        return self._hll is not None

    def add(self, values: pa.Array) -> None:
        """Add non-missing values (normalise floats with :func:`hashable_values` first)."""
        if len(values) == 0:
            return
        unique = pc.unique(values)
        if self._hll is not None:
            self._update_hll(unique)
            return
        self.exact = unique if self.exact is None else pc.unique(pa.concat_arrays([self.exact, unique.cast(self.exact.type)]))
        if len(self.exact) > self.limit and _ds is not None:
            self._hll = _ds.hll_sketch(self.lg_k)
            self._update_hll(self.exact)
            self.exact = None

    def _update_hll(self, unique: pa.Array) -> None:
        # datasketches has no vectorised HLL update: one call per *distinct* value of the
        # batch (not per row) is the cost of going past the exact bound.
        update = self._hll.update
        if pa.types.is_floating(unique.type):
            for value in unique.to_numpy(zero_copy_only=False).tolist():
                update(float(value))
        elif pa.types.is_integer(unique.type) or pa.types.is_temporal(unique.type):
            for value in pc.cast(unique, pa.int64()).to_numpy(zero_copy_only=False).tolist():
                update(int(value))
        else:
            for value in pc.cast(unique, pa.string()).to_pylist():
                update(value)

    def merge(self, other: "DistinctCounter") -> None:
        if other._hll is None and other.exact is None:
            return
        if self._hll is None and other._hll is None:
            self.add(other.exact)
            return
        if self._hll is None:
            self._hll = _ds.hll_sketch(self.lg_k)
            if self.exact is not None:
                self._update_hll(self.exact)
            self.exact = None
        if other._hll is not None:
            union = _ds.hll_union(self.lg_k)
            union.update(self._hll)
            union.update(other._hll)
            self._hll = union.get_result()
        else:
            self._update_hll(other.exact)

    def count(self) -> int:
        if self._hll is not None:
            return int(round(self._hll.get_estimate()))
        return 0 if self.exact is None else len(self.exact)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._hll is not None:
            state["_hll"] = self._hll.serialize_compact()
        return state

    def __setstate__(self, state: dict) -> None:
        hll = state.get("_hll")
        if isinstance(hll, (bytes, bytearray)):
            state["_hll"] = _ds.hll_sketch.deserialize(hll)
        self.__dict__.update(state)


class QuantileSketch:
    """Float values for quantiles and histograms: exact up to ``limit``, then KLL."""

    def __init__(self, limit: int = 100_000, k: int = 200):
        self.limit = limit
        self.k = k
        self.parts: list[np.ndarray] = []
        self.n = 0
        self._kll = None

    @property
    def approximate(self) -> bool:
        return self._kll is not None

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        self.n += int(values.size)
        if self._kll is not None:
            self._kll.update(np.array(values, dtype=np.float64))
            return
        self.parts.append(values)
        if self.n > self.limit and _ds is not None:
            self._kll = _ds.kll_doubles_sketch(self.k)
            self._kll.update(np.array(np.concatenate(self.parts), dtype=np.float64))
            self.parts = []

    def merge(self, other: "QuantileSketch") -> None:
        if other.n == 0:
            return
        if other._kll is None:
            for part in other.parts:
                self.add(part)
            return
        if self._kll is None:
            kll = _ds.kll_doubles_sketch(self.k)
            if self.parts:
                kll.update(np.array(np.concatenate(self.parts), dtype=np.float64))
            self._kll, self.parts = kll, []
        self._kll.merge(other._kll)
        self.n += other.n

    def values(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.empty(0)

    def quantiles(self, qs: Sequence[float]) -> list[float] | None:
        if self.n == 0:
            return None
        if self._kll is not None:
            return [float(self._kll.get_quantile(q)) for q in qs]
        return [float(v) for v in np.quantile(self.values(), qs)]

    def median(self) -> float | None:
        """The exact median (mean of the two middle values) while exact, else KLL's."""
        if self.n == 0:
            return None
        if self._kll is not None:
            return float(self._kll.get_quantile(0.5))
        return float(np.median(self.values()))

    def histogram(self, bins: int, lo: float, hi: float) -> dict[str, list]:
        if self.n == 0 or not math.isfinite(lo) or not math.isfinite(hi):
            return {"edges": [], "counts": []}
        if hi <= lo:
            return {"edges": [lo, hi], "counts": [self.n]}
        edges = np.linspace(lo, hi, bins + 1)
        if self._kll is None:
            counts, _ = np.histogram(self.values(), bins=edges)
            return {"edges": edges.tolist(), "counts": [int(c) for c in counts]}
        pmf = self._kll.get_pmf(edges[1:-1].tolist())
        return {"edges": edges.tolist(), "counts": [int(round(p * self.n)) for p in pmf]}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self._kll is not None:
            state["_kll"] = self._kll.serialize()
        return state

    def __setstate__(self, state: dict) -> None:
        kll = state.get("_kll")
        if isinstance(kll, (bytes, bytearray)):
            state["_kll"] = _ds.kll_doubles_sketch.deserialize(kll)
        self.__dict__.update(state)


class TopK:
    """Value counts, exact while at most ``capacity`` distinct values were seen.

    Beyond that the table keeps the ``capacity`` most frequent values (Misra-Gries style):
    counts are then lower bounds and ``approximate`` is true.
    """

    def __init__(self, capacity: int = 1_000):
        self.capacity = capacity
        self.values: pa.Array | None = None
        self.counts: np.ndarray = np.empty(0, dtype=np.int64)
        self.approximate = False

    def add(self, values: pa.Array) -> None:
        if len(values) == 0:
            return
        counted = pc.value_counts(values)
        self._fold(counted.field("values"), counted.field("counts").to_numpy().astype(np.int64))

    def add_counts(self, values: pa.Array, counts: np.ndarray) -> None:
        """Add already counted distinct ``values``."""
        if len(values):
            self._fold(values, counts)

    def merge(self, other: "TopK") -> None:
        self.approximate = self.approximate or other.approximate
        if other.values is not None:
            self._fold(other.values, other.counts)

    def _fold(self, values: pa.Array, counts: np.ndarray) -> None:
        if self.values is not None:
            values = pa.concat_arrays([self.values, values.cast(self.values.type)])
            counts = np.concatenate([self.counts, counts])
            encoded = pc.dictionary_encode(values)
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            counts = np.bincount(codes, weights=counts, minlength=len(encoded.dictionary)).astype(np.int64)
            values = encoded.dictionary
        if len(values) > self.capacity:
            keep = np.argsort(-counts, kind="stable")[: self.capacity]
            values, counts = values.take(pa.array(keep)), counts[keep]
            self.approximate = True
        self.values, self.counts = values, counts

    def top(self, k: int) -> list[tuple[Any, int]]:
        if self.values is None:
            return []
        order = np.argsort(-self.counts, kind="stable")[:k]
        picked = self.values.take(pa.array(order)).to_pylist()
        return [(value, int(self.counts[i])) for value, i in zip(picked, order)]


# --------------------------------------------------------------------------- type inference

#: Semantic types recognised in text columns, most specific first; each is a full-match RE2
#: pattern run vectorized over the batch (empty strings are counted apart).
_TEXT_TYPES: tuple[tuple[str, str], ...] = (
    ("boolean", r"^(?i)(true|false|yes|no|t|f|y|n)$"),
    ("integer", r"^[+-]?\d+$"),
    ("float", r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^(?i)[+-]?(nan|inf|infinity)$"),
    ("date", r"^\d{4}-\d{2}-\d{2}$|^\d{1,2}/\d{1,2}/\d{4}$"),
    ("timestamp", r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$"),
    ("uuid", r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
    ("email", r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    ("url", r"^(?i)(https?|ftp)://[^\s]+$"),
)
_TEXT_TYPE_PATTERNS = dict(_TEXT_TYPES)
#: Distinct values per batch whose character pattern is computed (the most frequent ones).
_PATTERN_SAMPLE = 5_000


def _pattern_of(values: pa.Array, max_length: int = 40) -> pa.Array:
    """Character shapes: upper-case runs -> ``A``, lower-case runs -> ``a``, each digit -> ``9``."""
    text = pc.utf8_slice_codeunits(values, 0, max_length)
    text = pc.replace_substring_regex(text, r"\p{Lu}+", "A")
    text = pc.replace_substring_regex(text, r"[\p{Ll}\p{Lo}\p{Lt}\p{Lm}]+", "a")
    text = pc.replace_substring_regex(text, r"\p{Nd}", "9")
    return pc.replace_substring_regex(text, r"\s+", " ")


# --------------------------------------------------------------------------- column and table state


@dataclass
class ProfileOptions:
    """What to compute. Defaults suit a full profile; checks and anomalies use a light one."""

    exact_distinct_limit: int = 100_000
    exact_quantile_limit: int = 100_000
    top_k: int = 10
    topk_capacity: int = 1_000
    patterns: bool = True
    quantiles: bool = True
    top_values: bool = True
    histogram_bins: int = HISTOGRAM_BINS


class ColumnState:
    """The mergeable profile of one column."""

    def __init__(self, name: str, data_type: pa.DataType, options: ProfileOptions):
        self.name = name
        self.type = str(data_type)
        self.kind = _kind(data_type)
        self.options = options
        self.count = 0
        self.nulls = 0
        self.distinct = DistinctCounter(options.exact_distinct_limit)
        self.moments = Moments() if self.kind in ("integer", "float") else None
        self.quantiles = QuantileSketch(options.exact_quantile_limit) if self.kind in ("integer", "float") and options.quantiles else None
        self.minimum: Any = None
        self.maximum: Any = None
        self.top = TopK(options.topk_capacity) if options.top_values else None
        self.lengths = Moments() if self.kind == "string" else None
        self.patterns = TopK(options.topk_capacity) if self.kind == "string" and options.patterns else None
        self.empty = 0
        self.possible_types = set(_TEXT_TYPE_PATTERNS)
        self.true_count = 0

    def add(self, array: pa.Array) -> None:
        array = _plain(array)
        self.count += len(array)
        missing = missing_mask(array)
        nulls = pc.sum(missing).as_py() or 0
        self.nulls += nulls
        present = array if nulls == 0 else array.filter(pc.invert(missing))
        if len(present) == 0 or self.kind == "other":
            return
        # One hash pass per batch: the distinct values and their counts feed the distinct
        # count, the top-k table and the text analysis (which then runs per distinct value).
        counted = pc.value_counts(present)
        uniques = counted.field("values")
        counts = counted.field("counts").to_numpy().astype(np.int64)
        self.distinct.add(hashable_values(uniques))
        if self.top is not None:
            self.top.add_counts(uniques, counts)
        if self.moments is not None:
            floats = _float64(present)
            self.moments.add(floats)
            if self.quantiles is not None:
                self.quantiles.add(floats)
        elif self.kind in ("string", "timestamp", "date", "time"):
            bounds = pc.min_max(uniques)
            self._bounds(bounds["min"].as_py(), bounds["max"].as_py())
        if self.kind == "boolean":
            self.true_count += pc.sum(pc.cast(present, pa.int64())).as_py() or 0
        if self.kind == "string":
            self._text(uniques, counts)

    def _bounds(self, lo: Any, hi: Any) -> None:
        if lo is not None and (self.minimum is None or lo < self.minimum):
            self.minimum = lo
        if hi is not None and (self.maximum is None or hi > self.maximum):
            self.maximum = hi

    def _text(self, uniques: pa.Array, counts: np.ndarray) -> None:
        lengths = pc.utf8_length(uniques).to_numpy(zero_copy_only=False).astype(np.float64)
        self.lengths.add_weighted(lengths, counts)
        trimmed = pc.utf8_trim_whitespace(uniques)
        blank = pc.equal(trimmed, "").to_numpy(zero_copy_only=False)
        self.empty += int(counts[blank].sum())
        filled = trimmed.filter(pa.array(~blank))
        if len(filled):
            # Only types every value so far matched can still be the inferred type.
            for type_name in list(self.possible_types):
                pattern = _TEXT_TYPE_PATTERNS[type_name]
                if not pc.all(pc.match_substring_regex(filled, pattern)).as_py():
                    self.possible_types.discard(type_name)
        if self.patterns is not None:
            if len(uniques) > _PATTERN_SAMPLE:
                # High-cardinality text: shape the most frequent distinct values only.
                keep = np.argsort(-counts, kind="stable")[:_PATTERN_SAMPLE]
                uniques, counts = uniques.take(pa.array(keep)), counts[keep]
                self.patterns.approximate = True
            shapes = pc.dictionary_encode(_pattern_of(uniques))
            summed = np.bincount(shapes.indices.to_numpy(zero_copy_only=False), weights=counts, minlength=len(shapes.dictionary))
            self.patterns.add_counts(shapes.dictionary, summed.astype(np.int64))

    def merge(self, other: "ColumnState") -> None:
        self.count += other.count
        self.nulls += other.nulls
        self.distinct.merge(other.distinct)
        if self.top is not None and other.top is not None:
            self.top.merge(other.top)
        if self.moments is not None and other.moments is not None:
            self.moments.merge(other.moments)
        if self.quantiles is not None and other.quantiles is not None:
            self.quantiles.merge(other.quantiles)
        self._bounds(other.minimum, other.maximum)
        if self.lengths is not None and other.lengths is not None:
            self.lengths.merge(other.lengths)
        if self.patterns is not None and other.patterns is not None:
            self.patterns.merge(other.patterns)
        self.empty += other.empty
        self.possible_types &= other.possible_types
        self.true_count += other.true_count

    # ------------------------------------------------------------------ output

    def inferred_type(self) -> str:
        if self.kind != "string":
            return self.kind
        filled = self.count - self.nulls - self.empty
        if filled <= 0:
            return "empty"
        for type_name, _ in _TEXT_TYPES:
            if type_name in self.possible_types:
                return type_name
        return "string"

    def to_dict(self, rows: int | None = None) -> dict[str, Any]:
        options = self.options
        # A column absent from some batches is null for their rows.
        count = max(self.count, rows or 0)
        nulls = self.nulls + (count - self.count)
        present = count - nulls
        out: dict[str, Any] = {
            "type": self.type,
            "inferred_type": self.inferred_type(),
            "count": count,
            "nulls": nulls,
            "null_fraction": (nulls / count) if count else None,
            "non_null": present,
            "distinct": self.distinct.count() if self.kind != "other" else None,
            "distinct_approximate": self.distinct.approximate,
        }
        if self.moments is not None:
            m = self.moments
            out.update(
                {
                    "min": m.minimum if m.count else None,
                    "max": m.maximum if m.count else None,
                    "mean": m.mean if m.count else None,
                    "stddev": m.std(),
                    "sum": m.total if m.count else None,
                }
            )
            if self.kind == "integer" and m.count:
                out["min"], out["max"] = int(m.minimum), int(m.maximum)
            if self.quantiles is not None:
                values = self.quantiles.quantiles(QUANTILES)
                out["quantiles"] = None if values is None else {f"p{round(q * 100):02d}": v for q, v in zip(QUANTILES, values)}
                out["quantiles_approximate"] = self.quantiles.approximate
                out["histogram"] = self.quantiles.histogram(options.histogram_bins, m.minimum, m.maximum) if m.count else {"edges": [], "counts": []}
        elif self.minimum is not None or self.maximum is not None:
            out["min"], out["max"] = to_json_value(self.minimum), to_json_value(self.maximum)
        if self.kind == "boolean":
            out["true_fraction"] = (self.true_count / present) if present else None
        if self.top is not None:
            out["top_values"] = [{"value": to_json_value(v), "count": c} for v, c in self.top.top(options.top_k)]
            out["top_values_approximate"] = self.top.approximate
        if self.lengths is not None:
            lengths = self.lengths
            out["length"] = {
                "min": int(lengths.minimum) if lengths.count else None,
                "max": int(lengths.maximum) if lengths.count else None,
                "mean": lengths.mean if lengths.count else None,
            }
            out["empty"] = self.empty
        if self.patterns is not None:
            out["patterns"] = [{"pattern": p, "count": c} for p, c in self.patterns.top(options.top_k)]
            out["patterns_approximate"] = self.patterns.approximate
        return out


class ProfileState:
    """The mergeable profile of a whole dataset (the ``CombineFn`` accumulator)."""

    def __init__(self, options: ProfileOptions | None = None, columns: Sequence[str] | None = None, schema: pa.Schema | None = None):
        self.options = options or ProfileOptions()
        self.only = list(columns) if columns else None
        self.rows = 0
        self.batches = 0
        self.columns: dict[str, ColumnState] = {}
        for field_ in schema or []:  # known columns appear even when there are no rows
            if self.only is None or field_.name in self.only:
                self.columns[field_.name] = ColumnState(field_.name, field_.type, self.options)

    def add(self, batch: pa.RecordBatch | pa.Table) -> "ProfileState":
        self.rows += batch.num_rows
        self.batches += 1
        for index, field_ in enumerate(batch.schema):
            if self.only is not None and field_.name not in self.only:
                continue
            state = self.columns.get(field_.name)
            if state is None:
                state = self.columns[field_.name] = ColumnState(field_.name, field_.type, self.options)
            state.add(batch.column(index))
        return self

    def merge(self, other: "ProfileState") -> "ProfileState":
        self.rows += other.rows
        self.batches += other.batches
        for name, state in other.columns.items():
            mine = self.columns.get(name)
            if mine is None:
                self.columns[name] = state
            else:
                mine.merge(state)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "profile",
            "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "row_count": self.rows,
            "column_count": len(self.columns),
            "columns": {name: state.to_dict(self.rows) for name, state in self.columns.items()},
        }


def profile_batches(
    batches: Iterable[pa.RecordBatch],
    options: ProfileOptions | None = None,
    columns: Sequence[str] | None = None,
    schema: pa.Schema | None = None,
) -> dict[str, Any]:
    """Profile a stream of batches in one pass (bounded memory except exact sets/values).

    Args:
        batches: record batches (or tables) of one dataset.
        options: what to compute (:class:`ProfileOptions`).
        columns: profile only these columns (default: all).
        schema: the dataset's schema, so columns show even without rows.
    """
    state = ProfileState(options, columns, schema)
    for batch in batches:
        state.add(batch)
    return state.to_dict()


def profile_table(table: pa.Table | pa.RecordBatch, options: ProfileOptions | None = None, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Profile an in-memory table; see :func:`profile_batches`.

    Example:
        >>> profile_table(pa.table({"s": ["a", "b", "b"]}))["columns"]["s"]["top_values"][0]
        {'value': 'b', 'count': 2}
    """
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    return profile_batches(batches, options, columns, table.schema)


# --------------------------------------------------------------------------- Beam


class ProfileCombineFn(beam.CombineFn):
    """Batches -> the profile dict, merged across bundles and workers.

    Args:
        options: what to compute (:class:`ProfileOptions`).
        columns: profile only these columns.
    """

    def __init__(self, options: ProfileOptions | None = None, columns: Sequence[str] | None = None):
        self._options = options
        self._columns = columns

    def create_accumulator(self) -> ProfileState:
        return ProfileState(self._options, self._columns)

    def add_input(self, state: ProfileState, batch: pa.RecordBatch) -> ProfileState:
        return state.add(batch)

    def merge_accumulators(self, states: Iterable[ProfileState]) -> ProfileState:
        states = iter(states)
        first = next(states)
        for state in states:
            first.merge(state)
        return first

    def extract_output(self, state: ProfileState) -> dict[str, Any]:
        return state.to_dict()


def report_paths(report: str, name: str) -> tuple[str, str]:
    """(JSON path, HTML path) for a ``report:`` setting.

    ``out/p.json`` -> ``out/p.json`` + ``out/p.html``; a directory (``out/reports/``) ->
    ``<dir>/<name>.json`` + ``<dir>/<name>.html``.
    """
    lower = report.lower()
    if lower.endswith(".json"):
        return report, report[:-5] + ".html"
    if lower.endswith(".html"):
        return report[:-5] + ".json", report
    base = report.rstrip("/\\")
    return f"{base}/{name}.json", f"{base}/{name}.html"


class ProfileSpec(StepModel):
    """``{type: profile, input: x, report: reports/x.json, columns: [...], top_k: 10}``."""

    type: Literal["profile"]
    report: str | None = Field(default=None, description="JSON path (an .html page is written next to it) or a directory")
    columns: list[str] | None = None
    top_k: int = Field(default=10, ge=1, le=1000)
    exact_distinct_limit: int = Field(default=100_000, ge=1)
    exact_quantile_limit: int = Field(default=100_000, ge=1)
    html: bool = True

    def check(self, schemas, path):
        schema = schemas[0] if schemas else None
        if schema is None or not self.columns:
            return []
        from beam_etl.spec import did_you_mean

        return [
            SpecIssue(f"{path}.columns[{i}]", f"unknown column '{name}'", did_you_mean(name, schema.names))
            for i, name in enumerate(self.columns)
            if name not in schema.names
        ]

    def output_schema(self, schemas):
        return schemas[0] if schemas else None

    def options(self) -> ProfileOptions:
        return ProfileOptions(
            exact_distinct_limit=self.exact_distinct_limit,
            exact_quantile_limit=self.exact_quantile_limit,
            top_k=self.top_k,
        )


def _passthrough(batch: pa.RecordBatch) -> BatchOutcome:
    return BatchOutcome(out=batch)


def combine_report(pcoll, combine_fn, label: str):
    """``CombineGlobally`` that also works on windowed streams: one result per window.

    In the global window the result exists even for empty input (an empty report); in
    other windows Beam allows no default, so a window without rows has no report.
    """
    from apache_beam.transforms.window import GlobalWindows

    combine = beam.CombineGlobally(combine_fn)
    if not isinstance(pcoll.windowing.windowfn, GlobalWindows):
        combine = combine.without_defaults()
    return pcoll | label >> combine


def windowed_path(path: str | None, window: Any) -> str | None:
    """``path`` for the global window; ``name-<window end, UTC>.ext`` for any other."""
    from apache_beam.transforms.window import GlobalWindow

    if path is None or window is None or isinstance(window, GlobalWindow):
        return path
    end = window.end.to_utc_datetime().strftime("%Y%m%dT%H%M%S")
    root, ext = os.path.splitext(path)
    return f"{root}-{end}{ext}"


class _WriteProfile(beam.DoFn):
    """Writes the profile JSON (+HTML), one pair per window."""

    def __init__(self, json_path: str, html_path: str | None, title: str):
        self.json_path, self.html_path, self.title = json_path, html_path, title

    def process(self, report: dict[str, Any], window=beam.DoFn.WindowParam):
        from beam_etl.quality.report import write_report

        report = dict(report, title=self.title)
        write_report(report, windowed_path(self.json_path, window), windowed_path(self.html_path, window))
        yield report


class Profile(beam.PTransform):
    """Pass rows through unchanged and write a column profile (JSON + HTML) of them.

    Args:
        step: the step name (counters carry it; the report's title).
        report: the JSON path; an HTML page is written next to it (``.html``).
        options: what to compute (:class:`ProfileOptions`).
        columns: profile only these columns.
        html: also write the HTML page.

    Example:
        >>> out = batches | Profile("prof", "reports/customers.json")  # doctest: +SKIP
        >>> out.main  # the same batches; the report is written when the run ends  # doctest: +SKIP
    """

    def __init__(self, step: str, report: str, options: ProfileOptions | None = None, columns: Sequence[str] | None = None, html: bool = True):
        super().__init__()
        if not report:
            raise ValueError("Profile needs a report path, e.g. 'reports/profile.json'")
        self._step = step
        self._json, html_path = report_paths(report, step)
        self._html = html_path if html else None
        self._options = options or ProfileOptions()
        self._columns = columns

    def expand(self, pcoll) -> StepOutputs:
        outputs = pcoll | "rows" >> ApplyBatchFn(self._step, _passthrough)
        profile = combine_report(pcoll, ProfileCombineFn(self._options, self._columns), "profile")
        profile | "write" >> beam.ParDo(_WriteProfile(self._json, self._html, f"Profile: {self._step}"))
        return outputs


@register_step("profile", ProfileSpec)
def build_profile(spec: ProfileSpec, inputs, ctx: BuildContext) -> StepOutputs:
    report = ctx.resolve_output(spec.report or f"reports/{spec.name}.json")
    return inputs[0] | ctx.label() >> Profile(spec.name, report, spec.options(), spec.columns, spec.html)


# --------------------------------------------------------------------------- CLI


def _file_batches(path: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Stream a local data file as batches (CSV, NDJSON, JSON array, Parquet, Feather/Arrow)."""
    lower = path.lower()
    for suffix in (".gz", ".bz2", ".zst", ".zstd"):
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
    if lower.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
    elif lower.endswith((".csv", ".tsv", ".txt")):
        import pyarrow.csv as pacsv

        parse = pacsv.ParseOptions(delimiter="\t" if lower.endswith(".tsv") else ",", newlines_in_values=True)
        with pacsv.open_csv(path, parse_options=parse, read_options=pacsv.ReadOptions(block_size=8 << 20)) as reader:
            yield from reader
    elif lower.endswith((".ndjson", ".jsonl")):
        import pyarrow.json as pajson

        yield from pajson.read_json(path).to_batches(batch_rows)
    elif lower.endswith(".json"):
        from beam_etl.io.files_formats import detect_json_layout, read_json_document

        with open(path, "rb") as handle:
            layout = detect_json_layout(handle)
        if layout == "array":
            with open(path, "rb") as handle:
                rows = read_json_document(handle, None)
            yield from pa.Table.from_pylist(rows).to_batches(batch_rows)
        else:
            import pyarrow.json as pajson

            yield from pajson.read_json(path).to_batches(batch_rows)
    elif lower.endswith((".feather", ".arrow", ".ipc")):
        import pyarrow.feather as feather

        yield from feather.read_table(path).to_batches(batch_rows)
    else:
        yield from _beam_batches(path)


def _beam_batches(path: str) -> Iterator[pa.RecordBatch]:
    """Other formats (Avro, Excel): read through the pipeline's own file source."""
    import tempfile

    import apache_beam as beam
    import pyarrow.parquet as pq

    from beam_etl.io.files_read import ReadFromFiles

    ext = path.lower().rsplit(".", 1)[-1]
    fmt = {"avro": "avro", "xlsx": "excel", "xls": "excel"}.get(ext)
    if fmt is None:
        raise ValueError(f"cannot profile '{path}': use a .csv, .tsv, .json, .ndjson, .jsonl, .parquet, .avro or .xlsx file")
    with tempfile.TemporaryDirectory() as scratch:
        with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"])) as p:
            read = p | ReadFromFiles(path, format=fmt)
            (
                read.main
                | beam.Map(lambda b: pa.Table.from_batches([b]))
                | beam.Map(lambda t, d=scratch: pq.write_table(t, os.path.join(d, f"{id(t)}-{os.getpid()}.parquet")))
            )
        for name in sorted(os.listdir(scratch)):
            yield from pq.ParquetFile(os.path.join(scratch, name)).iter_batches()


def profile_command(path: str, output: str | None, fmt: str) -> int:
    """``python -m beam_etl profile FILE [--output OUT] [--format json|html|both|text]``.

    Writes the profile to ``output`` (JSON, HTML or both next to each other) or prints it
    (``json``: the JSON document; ``text``: a short table). Returns the exit code: 0, or 2 for
    a file that cannot be read.

    Example:
        >>> profile_command("data/customers.csv", "reports/customers.json", "both")  # doctest: +SKIP
        0
    """
    import json

    from beam_etl.quality.report import render_text, write_report

    if not os.path.exists(path):
        print(f"error: file '{path}' not found (check the path)", file=sys.stderr)
        return 2
    try:
        report = profile_batches(_file_batches(path))
    except (ValueError, OSError, pa.ArrowInvalid) as exc:
        print(f"error: cannot profile '{path}': {exc}", file=sys.stderr)
        return 2
    report["title"] = f"Profile: {os.path.basename(path)}"
    report["source"] = path
    fmt = (fmt or "json").lower()
    if output:
        json_path, html_path = report_paths(output, os.path.splitext(os.path.basename(path))[0])
        if output.lower().endswith(".html") and fmt == "json":
            fmt = "html"
        write_report(
            report,
            json_path if fmt in ("json", "both") else None,
            html_path if fmt in ("html", "both") else None,
        )
        written = [p for p, keep in ((json_path, fmt in ("json", "both")), (html_path, fmt in ("html", "both"))) if keep]
        print("wrote " + ", ".join(written))
        return 0
    if fmt == "text":
        print(render_text(report))
    elif fmt == "html":
        from beam_etl.quality.report import render_html

        print(render_html(report))
    else:
        print(json.dumps(report, indent=2, default=str, ensure_ascii=False))
    return 0
