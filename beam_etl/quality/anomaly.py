"""Anomalies: outlier rows per column, and anomalous runs in a metrics history.

**Row level** (``outliers`` step, :class:`DetectOutliers`): a row is an outlier when a
column's score passes its threshold —

=================  ==========================================  ===========
method             score                                       default
=================  ==========================================  ===========
``zscore``         ``|x - mean| / stddev``                     3
``robust_zscore``  ``0.6745 * |x - median| / MAD``             3
``iqr``            distance beyond Q1/Q3 in units of Q3 - Q1   1.5
=================  ==========================================  ===========

(the formulas and defaults of Beam's ``apache_beam.ml.anomaly`` detectors). On bounded
input the statistics are computed over the whole dataset in one mergeable pass (a
``CombineGlobally`` side input), then every batch is scored vectorized. On unbounded input
(``mode: stream``, or ``auto`` with an unbounded PCollection) Beam's own online detectors —
``ZScore``, ``RobustZScore``, ``IQR`` in ``AnomalyDetection`` — score each row against the
recent rows. Outliers are flagged (``_outlier``, ``_outlier_reason`` columns), sent to the
DLQ (``error_type: anomaly.<method>``) or dropped.

**Run level** (:func:`run_anomalies`): metrics of this run (row count, completeness,
distinct count, mean per column) are compared with their history in the state store, in the
manner of Deequ's metrics repository, by one or more strategies:

- ``simple_threshold`` — ``lower`` <= value <= ``upper``;
- ``absolute_change`` — the change from the previous run stays within ``max_decrease`` /
  ``max_increase`` (magnitudes);
- ``relative_rate_of_change`` — value / previous stays within ``max_rate_decrease`` ..
  ``max_rate_increase`` (e.g. 0.5 .. 2.0);
- ``zscore`` (alias ``online_normal``) — within ``threshold`` standard deviations of the mean
  of the last ``window`` runs (needs ``min_history`` runs first).

Example:
    >>> strategies = [parse_strategy({"type": "relative_rate_of_change", "max_rate_decrease": 0.5})]
    >>> [a] = evaluate_metric(400, [1000.0, 1010.0], strategies[0])
    >>> a["anomaly"], a["detail"]
    (True, 'value/previous = 0.396 is below 0.5')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Protocol, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.pvalue import AsSingleton, TaggedOutput
from pydantic import Field, model_validator

from beam_etl.dlq import dlq_batch
from beam_etl.errors import SpecIssue
from beam_etl.models import StepModel, StrictModel
from beam_etl.quality.profile import Moments, QuantileSketch, missing_mask
from beam_etl.registry import register_step
from beam_etl.steps import BuildContext, StepCounters, StepOutputs

__all__ = [
    "OUTLIER_METHODS",
    "OutlierStats",
    "OutlierStatsFn",
    "column_stats",
    "outlier_scores",
    "flag_outliers",
    "DetectOutliers",
    "OutliersSpec",
    "StrategySpec",
    "parse_strategy",
    "evaluate_metric",
    "run_anomalies",
    "MetricsRepository",
    "InMemoryMetricsRepository",
    "StateMetricsRepository",
    "RUN_METRICS",
]

#: method -> default threshold (Beam's detectors use the same defaults).
OUTLIER_METHODS: dict[str, float] = {"zscore": 3.0, "robust_zscore": 3.0, "iqr": 1.5}
_EPSILON = 1e-12
_MAD_SCALE = 0.6745


# --------------------------------------------------------------------------- row level: statistics


@dataclass
class OutlierStats:
    """Whole-dataset statistics of one column (what the three methods need)."""

    count: int
    mean: float | None
    std: float | None
    median: float | None
    mad: float | None
    q1: float | None
    q3: float | None
    approximate: bool = False


class _ColumnAccumulator:
    def __init__(self, exact_limit: int):
        self.moments = Moments()
        self.sketch = QuantileSketch(exact_limit)

    def add(self, values: np.ndarray) -> None:
        self.moments.add(values)
        self.sketch.add(values)

    def merge(self, other: "_ColumnAccumulator") -> None:
        self.moments.merge(other.moments)
        self.sketch.merge(other.sketch)

    def result(self) -> OutlierStats:
        sketch, m = self.sketch, self.moments
        if m.count == 0:
            return OutlierStats(0, None, None, None, None, None, None)
        q1, median, q3 = sketch.quantiles([0.25, 0.5, 0.75])
        if not sketch.approximate:
            values = sketch.values()
            median = float(np.median(values))
            mad = float(np.median(np.abs(values - median)))
        else:
            mad = _sketch_mad(sketch, median, m.minimum, m.maximum)
        return OutlierStats(m.count, m.mean, m.std(ddof=0), median, mad, q1, q3, sketch.approximate)


def _sketch_mad(sketch: QuantileSketch, median: float, lo: float, hi: float) -> float:
    """MAD from a KLL sketch: the d with P(|X - median| <= d) = 1/2, by bisection on the CDF."""
    kll = sketch._kll
    low, high = 0.0, max(hi - median, median - lo, 0.0)
    for _ in range(60):
        mid = (low + high) / 2
        share = kll.get_rank(median + mid) - kll.get_rank(median - mid)
        low, high = (mid, high) if share < 0.5 else (low, mid)
    return (low + high) / 2


def _numeric_values(column: pa.Array) -> np.ndarray:
    values = column if pa.types.is_floating(column.type) else pc.cast(column, pa.float64())
    values = values.filter(pc.invert(missing_mask(values)))
    return values.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _plain(column) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


class OutlierStatsFn(beam.CombineFn):
    """Batches -> ``{column: OutlierStats}`` (mergeable: moments plus exact values or KLL).

    Args:
        columns: numeric columns to describe.
        exact_limit: values kept exactly per column before switching to a KLL sketch.
    """

    def __init__(self, columns: Sequence[str], exact_limit: int = 1_000_000):
        self._columns = list(columns)
        self._exact_limit = exact_limit

    def create_accumulator(self) -> dict[str, _ColumnAccumulator]:
        return {name: _ColumnAccumulator(self._exact_limit) for name in self._columns}

    def add_input(self, acc, batch: pa.RecordBatch):
        for name in self._columns:
            index = batch.schema.get_field_index(name)
            if index >= 0:
                acc[name].add(_numeric_values(_plain(batch.column(index))))
        return acc

    def merge_accumulators(self, accs):
        accs = iter(accs)
        first = next(accs)
        for acc in accs:
            for name, part in acc.items():
                first[name].merge(part)
        return first

    def extract_output(self, acc) -> dict[str, OutlierStats]:
        return {name: part.result() for name, part in acc.items()}


def column_stats(table: pa.Table | pa.RecordBatch, columns: Sequence[str]) -> dict[str, OutlierStats]:
    """:class:`OutlierStats` of ``columns`` over an in-memory table (no Beam)."""
    fn = OutlierStatsFn(columns)
    acc = fn.create_accumulator()
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    for batch in batches:
        acc = fn.add_input(acc, batch)
    return fn.extract_output(acc)


# --------------------------------------------------------------------------- row level: scoring


def outlier_scores(values: np.ndarray, method: str, stats: OutlierStats) -> np.ndarray:
    """Scores of ``values`` (NaN stays NaN) by ``method`` against ``stats``."""
    if method == "zscore":
        if stats.std is None or stats.mean is None:
            return np.full(values.shape, np.nan)
        if abs(stats.std) < _EPSILON:
            return np.where(np.isnan(values), np.nan, 0.0)
        return np.abs(values - stats.mean) / stats.std
    if method == "robust_zscore":
        if stats.mad is None or stats.median is None:
            return np.full(values.shape, np.nan)
        if abs(stats.mad) < _EPSILON:
            return np.where(np.isnan(values), np.nan, 0.0)
        return np.abs(_MAD_SCALE * (values - stats.median) / stats.mad)
    if method == "iqr":
        if stats.q1 is None or stats.q3 is None:
            return np.full(values.shape, np.nan)
        spread = stats.q3 - stats.q1
        if abs(spread) < _EPSILON:
            return np.where(np.isnan(values), np.nan, 0.0)
        above = (values - stats.q3) / spread
        below = (stats.q1 - values) / spread
        return np.where(values > stats.q3, above, np.where(values < stats.q1, below, np.where(np.isnan(values), np.nan, 0.0)))
    raise ValueError(f"unknown outlier method '{method}'; use one of {', '.join(OUTLIER_METHODS)}")


def flag_outliers(
    batch: pa.RecordBatch,
    columns: Sequence[str],
    method: str,
    threshold: float,
    stats: dict[str, OutlierStats],
) -> tuple[pa.Array, pa.Array]:
    """(outlier mask, reason per row — null where the row is normal), vectorized.

    Example:
        >>> b = pa.RecordBatch.from_pydict({"x": [1.0, 2.0, 3.0, 100.0]})
        >>> mask, why = flag_outliers(b, ["x"], "iqr", 1.5, column_stats(b, ["x"]))
        >>> mask.to_pylist(), why[3].as_py()
        ([False, False, False, True], 'x: iqr score 2.9 > 1.5 (value 100)')
    """
    rows = batch.num_rows
    mask = np.zeros(rows, dtype=bool)
    reasons = pa.nulls(rows, pa.string())
    for name in columns:
        index = batch.schema.get_field_index(name)
        if index < 0 or name not in stats:
            continue
        column = _plain(batch.column(index))
        floats = column if pa.types.is_floating(column.type) else pc.cast(column, pa.float64())
        values = pc.fill_null(floats, float("nan")).to_numpy(zero_copy_only=False).astype(np.float64)
        scores = outlier_scores(values, method, stats[name])
        with np.errstate(invalid="ignore"):
            hit = np.nan_to_num(scores, nan=-1.0) > threshold
        if not hit.any():
            continue
        mask |= hit
        text = pc.binary_join_element_wise(
            f"{name}: {method} score ",
            pc.cast(pc.round(pa.array(scores), 1), pa.string()),
            f" > {threshold:g} (value ",
            pc.cast(floats, pa.string()),
            ")",
            "",
        )
        message = pc.if_else(pa.array(hit), text, pa.scalar(None, pa.string()))
        joined = pc.binary_join_element_wise(reasons, message, "; ")
        reasons = pc.coalesce(joined, reasons, message)
    return pa.array(mask), reasons


# --------------------------------------------------------------------------- row level: Beam


class _ScoreBatchFn(beam.DoFn):
    def __init__(self, step: str, columns: list[str], method: str, threshold: float, on_outlier: str):
        self._step, self._columns, self._method = step, columns, method
        self._threshold, self._on_outlier = threshold, on_outlier

    def setup(self) -> None:
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, batch: pa.RecordBatch, stats: dict[str, OutlierStats]):
        counters = self._counters
        counters.rows_in.inc(batch.num_rows)
        mask, reasons = flag_outliers(batch, self._columns, self._method, self._threshold, stats)
        yield from _route(batch, mask, reasons, self._on_outlier, self._step, f"anomaly.{self._method}", counters)


def _route(batch: pa.RecordBatch, mask: pa.Array, reasons: pa.Array, on_outlier: str, step: str, error_type: str, counters):
    if on_outlier == "flag":
        out = batch.append_column("_outlier", mask).append_column("_outlier_reason", reasons)
        counters.rows_out.inc(out.num_rows)
        yield out
        return
    keep = pc.invert(mask)
    good = batch.filter(keep)
    bad = batch.filter(mask)
    if good.num_rows:
        counters.rows_out.inc(good.num_rows)
        yield good
    if bad.num_rows:
        if on_outlier == "dlq":
            counters.rows_dlq.inc(bad.num_rows)
            yield TaggedOutput("dlq", dlq_batch(bad, step=step, error_type=error_type, error_message=reasons.filter(mask)))
        else:
            counters.rows_filtered.inc(bad.num_rows)


class _ToRowsFn(beam.DoFn):
    """Batches -> beam.Row per row for Beam's online detectors (row-wise by their API)."""

    def __init__(self, columns: list[str]):
        self._columns = columns

    def process(self, batch: pa.RecordBatch):
        from beam_etl.json_rows import rows_as_json

        records = rows_as_json(batch).to_pylist()
        features = []
        for name in self._columns:
            index = batch.schema.get_field_index(name)
            column = _plain(batch.column(index)) if index >= 0 else pa.nulls(batch.num_rows, pa.float64())
            floats = column if pa.types.is_floating(column.type) else pc.cast(column, pa.float64())
            features.append(pc.fill_null(floats, float("nan")).to_numpy(zero_copy_only=False).tolist())
        for i, record in enumerate(records):
            values = {f"f{j}": feature[i] for j, feature in enumerate(features)}
            yield beam.Row(record=record, **values)


class _FromResultsFn(beam.DoFn):
    """(key, AnomalyResult) -> one-row batches with flags (rebatched downstream)."""

    def __init__(self, step: str, columns: list[str], method: str, on_outlier: str):
        self._step, self._columns, self._method, self._on_outlier = step, columns, method, on_outlier

    def setup(self) -> None:
        self._counters = StepCounters("step", self._step)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, element):
        result = element[1] if isinstance(element, tuple) else element
        row = json.loads(result.example.record)
        prediction = list(result.predictions)[0]
        sources = list(prediction.source_predictions or [prediction])
        reasons = []
        for name, source in zip(self._columns, sources):
            if source.label == 1:
                reasons.append(f"{name}: {self._method} score {source.score:.1f} > {source.threshold:g} (online)")
        outlier = prediction.label == 1
        batch = pa.RecordBatch.from_pylist([row])
        self._counters.rows_in.inc(1)
        yield from _route(batch, pa.array([outlier]), pa.array(["; ".join(reasons) if outlier else None], pa.string()), self._on_outlier, self._step, f"anomaly.{self._method}", self._counters)


def _beam_detector(method: str, feature: str, threshold: float):
    from apache_beam.ml.anomaly.detectors.iqr import IQR
    from apache_beam.ml.anomaly.detectors.robust_zscore import RobustZScore
    from apache_beam.ml.anomaly.detectors.zscore import ZScore
    from apache_beam.ml.anomaly.thresholds import FixedThreshold

    cls = {"zscore": ZScore, "robust_zscore": RobustZScore, "iqr": IQR}[method]
    return cls(features=[feature], threshold_criterion=FixedThreshold(threshold), model_id=f"{method}:{feature}")


class DetectOutliers(beam.PTransform):
    """Flag, DLQ or drop rows whose numeric columns are outliers.

    Args:
        step: the step name (counters and DLQ rows carry it).
        columns: numeric columns to score; a row is an outlier if any column is.
        method: ``zscore``, ``robust_zscore`` or ``iqr``.
        threshold: score above which a value is an outlier (default per method: 3, 3, 1.5).
        on_outlier: ``flag`` (add ``_outlier`` and ``_outlier_reason``), ``dlq`` or ``drop``.
        mode: ``batch`` (whole-dataset statistics), ``stream`` (Beam's online detectors) or
            ``auto`` (stream when the input is unbounded).

    Example:
        >>> out = batches | DetectOutliers("odd_amounts", ["amount"], "robust_zscore", on_outlier="dlq")  # doctest: +SKIP
    """

    def __init__(
        self,
        step: str,
        columns: Sequence[str],
        method: str = "zscore",
        threshold: float | None = None,
        on_outlier: str = "flag",
        mode: str = "auto",
    ):
        super().__init__()
        if method not in OUTLIER_METHODS:
            raise ValueError(f"unknown outlier method '{method}'; use one of {', '.join(OUTLIER_METHODS)}")
        if not columns:
            raise ValueError("DetectOutliers needs at least one column")
        if on_outlier not in ("flag", "dlq", "drop"):
            raise ValueError(f"on_outlier must be flag, dlq or drop, got '{on_outlier}'")
        if mode not in ("auto", "batch", "stream"):
            raise ValueError(f"mode must be auto, batch or stream, got '{mode}'")
        self._step, self._columns, self._method = step, list(columns), method
        self._threshold = OUTLIER_METHODS[method] if threshold is None else float(threshold)
        self._on_outlier, self._mode = on_outlier, mode

    def expand(self, pcoll) -> StepOutputs:
        streaming = self._mode == "stream" or (self._mode == "auto" and not getattr(pcoll, "is_bounded", True))
        if streaming:
            return self._expand_stream(pcoll)
        stats = pcoll | "stats" >> beam.CombineGlobally(OutlierStatsFn(self._columns))
        results = pcoll | "score" >> beam.ParDo(
            _ScoreBatchFn(self._step, self._columns, self._method, self._threshold, self._on_outlier), AsSingleton(stats)
        ).with_outputs("dlq", main="main")
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)

    def _expand_stream(self, pcoll) -> StepOutputs:
        from apache_beam.ml.anomaly.aggregations import AnyVote
        from apache_beam.ml.anomaly.base import EnsembleAnomalyDetector
        from apache_beam.ml.anomaly.transforms import AnomalyDetection

        detectors = [_beam_detector(self._method, f"f{i}", self._threshold) for i in range(len(self._columns))]
        detector = detectors[0] if len(detectors) == 1 else EnsembleAnomalyDetector(
            detectors, aggregation_strategy=AnyVote(include_source_predictions=True)
        )
        results = (
            pcoll
            | "rows" >> beam.ParDo(_ToRowsFn(self._columns))
            | "detect" >> AnomalyDetection(detector)
            | "route" >> beam.ParDo(_FromResultsFn(self._step, self._columns, self._method, self._on_outlier)).with_outputs("dlq", main="main")
        )
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


class OutliersSpec(StepModel):
    """``{type: outliers, input: x, columns: [amount], method: robust_zscore, on_outlier: dlq}``."""

    type: Literal["outliers"]
    columns: list[str] = Field(min_length=1)
    method: Literal["zscore", "robust_zscore", "iqr"] = "zscore"
    threshold: float | None = Field(default=None, gt=0)
    on_outlier: Literal["flag", "dlq", "drop"] = "flag"
    mode: Literal["auto", "batch", "stream"] = "auto"

    def check(self, schemas, path):
        schema = schemas[0] if schemas else None
        if schema is None:
            return []
        from beam_etl.spec import did_you_mean

        issues = []
        for i, name in enumerate(self.columns):
            if name not in schema.names:
                issues.append(SpecIssue(f"{path}.columns[{i}]", f"unknown column '{name}'", did_you_mean(name, schema.names)))
            else:
                t = schema.field(name).type
                if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                    issues.append(SpecIssue(f"{path}.columns[{i}]", f"column '{name}' is {t}, not numeric", "coerce it to a number first"))
        return issues

    def output_schema(self, schemas):
        schema = schemas[0] if schemas else None
        if schema is None or self.on_outlier != "flag":
            return schema
        return schema.append(pa.field("_outlier", pa.bool_())).append(pa.field("_outlier_reason", pa.string()))


@register_step("outliers", OutliersSpec)
def build_outliers(spec: OutliersSpec, inputs, ctx: BuildContext) -> StepOutputs:
    return inputs[0] | ctx.label() >> DetectOutliers(spec.name, spec.columns, spec.method, spec.threshold, spec.on_outlier, spec.mode)


# --------------------------------------------------------------------------- run level

#: Metrics tracked per run by the quality step's ``anomalies:`` block.
RUN_METRICS = ("row_count", "completeness", "distinct_count", "mean")


class StrategySpec(StrictModel):
    """One anomaly strategy (see the module docstring)."""

    type: Literal["simple_threshold", "absolute_change", "relative_rate_of_change", "zscore", "online_normal"]
    lower: float | None = None
    upper: float | None = None
    max_decrease: float | None = Field(default=None, ge=0)
    max_increase: float | None = Field(default=None, ge=0)
    max_rate_decrease: float | None = Field(default=None, ge=0)
    max_rate_increase: float | None = Field(default=None, ge=0)
    threshold: float = Field(default=3.0, gt=0)
    window: int = Field(default=20, ge=2)
    min_history: int = Field(default=3, ge=2)

    @model_validator(mode="after")
    def _has_bounds(self) -> "StrategySpec":
        needs = {
            "simple_threshold": ("lower", "upper"),
            "absolute_change": ("max_decrease", "max_increase"),
            "relative_rate_of_change": ("max_rate_decrease", "max_rate_increase"),
        }.get(self.type)
        if needs and all(getattr(self, key) is None for key in needs):
            raise ValueError(f"{self.type} needs {needs[0]} or {needs[1]}")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower {self.lower} is greater than upper {self.upper}")
        if self.type == "relative_rate_of_change" and None not in (self.max_rate_decrease, self.max_rate_increase):
            if self.max_rate_decrease > self.max_rate_increase:
                raise ValueError("max_rate_decrease is greater than max_rate_increase")
        return self


def parse_strategy(item: dict[str, Any] | StrategySpec) -> StrategySpec:
    return item if isinstance(item, StrategySpec) else StrategySpec.model_validate(item)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def evaluate_metric(value: float | None, history: Sequence[float], strategy: StrategySpec) -> list[dict[str, Any]]:
    """``[{strategy, anomaly: True/False/None, detail}]`` for one metric value and its history.

    ``history`` holds earlier runs' values, oldest first; ``anomaly`` is None when the history
    is too short to decide.
    """
    name = strategy.type
    history = [float(h) for h in history if h is not None and not (isinstance(h, float) and math.isnan(h))]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return [{"strategy": name, "anomaly": None, "detail": "no value this run"}]
    value = float(value)
    if name == "simple_threshold":
        if strategy.lower is not None and value < strategy.lower:
            return [{"strategy": name, "anomaly": True, "detail": f"{_fmt(value)} is below {_fmt(strategy.lower)}"}]
        if strategy.upper is not None and value > strategy.upper:
            return [{"strategy": name, "anomaly": True, "detail": f"{_fmt(value)} is above {_fmt(strategy.upper)}"}]
        return [{"strategy": name, "anomaly": False, "detail": "within bounds"}]
    if not history:
        return [{"strategy": name, "anomaly": None, "detail": "no earlier run to compare with"}]
    previous = history[-1]
    if name == "absolute_change":
        change = value - previous
        if strategy.max_decrease is not None and -change > strategy.max_decrease:
            return [{"strategy": name, "anomaly": True, "detail": f"fell by {_fmt(-change)} (more than {_fmt(strategy.max_decrease)}) from {_fmt(previous)}"}]
        if strategy.max_increase is not None and change > strategy.max_increase:
            return [{"strategy": name, "anomaly": True, "detail": f"rose by {_fmt(change)} (more than {_fmt(strategy.max_increase)}) from {_fmt(previous)}"}]
        return [{"strategy": name, "anomaly": False, "detail": f"change {_fmt(change)} from {_fmt(previous)}"}]
    if name == "relative_rate_of_change":
        if previous == 0:
            return [{"strategy": name, "anomaly": None, "detail": "previous value is 0: no rate of change"}]
        rate = value / previous
        if strategy.max_rate_decrease is not None and rate < strategy.max_rate_decrease:
            return [{"strategy": name, "anomaly": True, "detail": f"value/previous = {rate:.3g} is below {_fmt(strategy.max_rate_decrease)}"}]
        if strategy.max_rate_increase is not None and rate > strategy.max_rate_increase:
            return [{"strategy": name, "anomaly": True, "detail": f"value/previous = {rate:.3g} is above {_fmt(strategy.max_rate_increase)}"}]
        return [{"strategy": name, "anomaly": False, "detail": f"value/previous = {rate:.3g}"}]
    # zscore / online_normal over the last ``window`` runs
    recent = history[-strategy.window :]
    if len(recent) < strategy.min_history:
        return [{"strategy": name, "anomaly": None, "detail": f"needs {strategy.min_history} earlier runs, has {len(recent)}"}]
    mean = float(np.mean(recent))
    std = float(np.std(recent, ddof=1))
    if std < _EPSILON:
        anomaly = abs(value - mean) > _EPSILON * max(1.0, abs(mean))
        return [{"strategy": name, "anomaly": anomaly, "detail": f"history constant at {_fmt(mean)}"}]
    z = (value - mean) / std
    anomaly = abs(z) > strategy.threshold
    return [{"strategy": name, "anomaly": anomaly, "detail": f"z = {z:.2f} against mean {_fmt(mean)} ± {_fmt(std)} of {len(recent)} runs"}]


class MetricsRepository(Protocol):
    """Where run metrics live: a (run time, tags) -> value table, as in Deequ."""

    def history(self, pipeline: str, metric: str, column: str | None, step: str | None, limit: int) -> list[float]: ...

    def add(self, run_id: str | None, pipeline: str, metrics: list[dict[str, Any]]) -> None: ...


class InMemoryMetricsRepository:
    """A repository in a dict (tests, notebooks)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def history(self, pipeline, metric, column, step, limit):
        values = [
            r["value"]
            for r in self.rows
            if r["pipeline"] == pipeline and r["metric"] == metric and r.get("column") == column and r.get("step") == step
        ]
        return values[-limit:]

    def add(self, run_id, pipeline, metrics):
        self.rows.extend({**m, "run_id": run_id, "pipeline": pipeline} for m in metrics)


class StateMetricsRepository:
    """The state store's ``quality_metrics`` table (SQLite file by default, any SQLAlchemy URL)."""

    def __init__(self, url: str | None = None):
        from beam_etl.state import StateStore

        self._store = StateStore(url)

    def history(self, pipeline, metric, column, step, limit):
        rows = self._store.metrics_history(pipeline, metric, column=column, step=step, limit=limit)
        if column is None:  # table-level metrics have no column: skip per-column rows
            rows = [r for r in rows if r.get("column") is None]
        return [r["value"] for r in rows]

    def add(self, run_id, pipeline, metrics):
        self._store.add_metrics(run_id, pipeline, metrics)

    def close(self) -> None:
        self._store.close()


def run_anomalies(
    metrics: Iterable[dict[str, Any]],
    repository: MetricsRepository,
    *,
    pipeline: str,
    step: str | None,
    run_id: str | None,
    strategies: Sequence[StrategySpec],
    window: int = 20,
    record: bool = True,
) -> list[dict[str, Any]]:
    """Compare this run's metrics with their history, then record them.

    Args:
        metrics: ``[{"metric": "row_count", "column": None, "value": 1200}, ...]``.
        repository: the history (:class:`StateMetricsRepository` in a pipeline).
        pipeline, step, run_id: the tags the values are stored under.
        strategies: how to judge a value (:class:`StrategySpec`).
        window: earlier runs read per metric.
        record: store this run's values after comparing.

    Returns:
        One entry per (metric, strategy): metric, column, value, strategy, anomaly, detail.
    """
    metrics = list(metrics)
    limit = max([window] + [s.window for s in strategies])
    out = []
    for metric in metrics:
        history = repository.history(pipeline, metric["metric"], metric.get("column"), step, limit)
        for strategy in strategies:
            for verdict in evaluate_metric(metric.get("value"), history, strategy):
                out.append({"metric": metric["metric"], "column": metric.get("column"), "value": metric.get("value"), **verdict})
    if record:
        repository.add(run_id, pipeline, [{**m, "step": step} for m in metrics])
    return out
