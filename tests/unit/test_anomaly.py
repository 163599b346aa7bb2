"""Anomalies: outlier statistics and scores (DuckDB/NumPy oracles), routing in Beam (batch and
stream), run-level strategies on a metrics history (in memory and in the state store)."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.quality.anomaly import (
    DetectOutliers,
    InMemoryMetricsRepository,
    StateMetricsRepository,
    StrategySpec,
    column_stats,
    evaluate_metric,
    flag_outliers,
    outlier_scores,
    parse_strategy,
    run_anomalies,
)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.floats(-1e4, 1e4, allow_nan=False)), min_size=1, max_size=80), chunk=st.integers(1, 9))
def test_statistics_match_duckdb_and_numpy(values, chunk):
    table = pa.table({"x": pa.array(values, pa.float64())})
    batched = pa.Table.from_batches(table.to_batches(max_chunksize=chunk), schema=table.schema)
    stats = column_stats(batched, ["x"])["x"]
    present = np.array([v for v in values if v is not None], dtype=float)
    con = duckdb.connect()
    con.register("t", table)
    mean, std, q1, median, q3 = con.execute(
        "SELECT avg(x), stddev_pop(x), quantile_cont(x, 0.25), quantile_cont(x, 0.5), quantile_cont(x, 0.75) FROM t"
    ).fetchone()
    assert stats.count == present.size
    if present.size == 0:
        assert stats.mean is None
        return
    assert stats.mean == pytest.approx(mean, rel=1e-9, abs=1e-9)
    assert stats.std == pytest.approx(std, rel=1e-6, abs=1e-6)
    assert (stats.q1, stats.median, stats.q3) == pytest.approx((q1, median, q3), rel=1e-9, abs=1e-9)
    assert stats.mad == pytest.approx(float(np.median(np.abs(present - np.median(present)))), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "method, values, expected",
    [
        ("zscore", [1.0, 2.0, 3.0], [1.224744871391589, 0.0, 1.224744871391589]),
        ("robust_zscore", [1.0, 2.0, 3.0, 10.0], [1.011750, 0.337250, 0.337250, 5.058750]),
        ("iqr", [1.0, 2.0, 3.0, 10.0], [(1.75 - 1.0) / 3.0, 0.0, 0.0, (10 - 4.75) / (4.75 - 1.75)]),
    ],
)
def test_scores_use_beams_formulas(method, values, expected):
    table = pa.table({"x": values})
    stats = column_stats(table, ["x"])["x"]
    scores = outlier_scores(np.array(values), method, stats)
    assert scores.tolist() == pytest.approx(expected, rel=1e-5)


def test_flag_outliers_names_column_method_and_value():
    batch = pa.RecordBatch.from_pydict({"a": [10.0, 11.0, 9.0, 10.5, 95.0, None], "b": [1, 1, 1, 1, 1, 40]})
    stats = column_stats(batch, ["a", "b"])
    mask, reasons = flag_outliers(batch, ["a", "b"], "iqr", 1.5, stats)
    assert mask.to_pylist() == [False, False, False, False, True, False]  # b's IQR is 0: no score
    assert reasons[4].as_py().startswith("a: iqr score ") and "(value 95)" in reasons[4].as_py()


def test_detect_outliers_in_batch_mode_routes_to_the_dlq_with_the_reason():
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    batches = [pa.RecordBatch.from_pydict({"id": [1, 2, 3], "x": [10.0, 11.0, 9.0]}), pa.RecordBatch.from_pydict({"id": [4, 5], "x": [10.0, 500.0]})]
    with TestPipeline() as p:
        result = p | beam.Create(batches) | DetectOutliers("odd", ["x"], "robust_zscore", on_outlier="dlq", mode="batch")
        kept = result.main | "ids" >> beam.FlatMap(lambda b: b.column("id").to_pylist())
        reasons = result.dlq | "why" >> beam.FlatMap(lambda b: list(zip(b.column("error_type").to_pylist(), b.column("record").to_pylist())))
        assert_that(kept, equal_to([1, 2, 3, 4]), label="kept")
        assert_that(reasons, equal_to([("anomaly.robust_zscore", '{"id": 5, "x": 500.0}')]), label="dlq")


def test_detect_outliers_in_stream_mode_uses_beams_online_detectors():
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    rng = np.random.default_rng(1)
    normal = list(np.round(rng.normal(50, 1, 60), 3))
    batch = pa.RecordBatch.from_pydict({"id": list(range(61)), "x": normal + [500.0]})
    with TestPipeline() as p:
        result = p | beam.Create([batch]) | DetectOutliers("odd", ["x"], "zscore", on_outlier="flag", mode="stream")
        flagged = result.main | beam.FlatMap(lambda b: [r["id"] for r in b.to_pylist() if r["_outlier"]])
        total = result.main | "count" >> beam.combiners.Count.Globally()

        def the_spike_and_little_else(ids):
            # online detectors learn as they go: a few early rows may score high while the
            # mean/stdev settle; the spike must be caught
            assert 60 in ids and len(ids) <= 5, ids

        assert_that(flagged, the_spike_and_little_else, label="flagged")
        assert_that(total, equal_to([61]), label="every row kept")


@pytest.mark.parametrize(
    "strategy, value, history, anomaly",
    [
        ({"type": "simple_threshold", "lower": 10}, 5, [], True),
        ({"type": "simple_threshold", "lower": 0, "upper": 10}, 5, [], False),
        ({"type": "absolute_change", "max_decrease": 10}, 85, [100], True),
        ({"type": "absolute_change", "max_increase": 10}, 105, [100], False),
        ({"type": "absolute_change", "max_increase": 10}, 105, [], None),
        ({"type": "relative_rate_of_change", "max_rate_increase": 2.0}, 250, [100, 120], True),
        ({"type": "relative_rate_of_change", "max_rate_decrease": 0.5}, 70, [100], False),
        ({"type": "zscore", "threshold": 3}, 130, [100, 101, 99, 100, 102, 98], True),
        ({"type": "zscore", "threshold": 3}, 101, [100, 101, 99, 100, 102, 98], False),
        ({"type": "zscore", "min_history": 3}, 500, [100, 101], None),
        ({"type": "online_normal", "window": 3, "threshold": 2}, 100, [1, 2, 3, 100, 101, 99], False),
    ],
)
def test_run_level_strategies(strategy, value, history, anomaly):
    [verdict] = evaluate_metric(value, history, parse_strategy(strategy))
    assert verdict["anomaly"] is anomaly, verdict


@pytest.mark.parametrize(
    "strategy",
    [{"type": "simple_threshold"}, {"type": "relative_rate_of_change"}, {"type": "simple_threshold", "lower": 5, "upper": 1}, {"type": "zscor"}],
)
def test_bad_strategies_are_refused(strategy):
    with pytest.raises(ValueError):
        StrategySpec.model_validate(strategy)


def _run_history(repository):
    strategies = [parse_strategy({"type": "relative_rate_of_change", "max_rate_decrease": 0.5, "max_rate_increase": 2.0})]
    verdicts = []
    for rows in (1000, 1020, 400):
        verdicts = run_anomalies(
            [{"metric": "row_count", "column": None, "value": rows}, {"metric": "mean", "column": "amount", "value": 12.5}],
            repository,
            pipeline="orders",
            step="gate",
            run_id=f"r{rows}",
            strategies=strategies,
        )
    return verdicts


def test_run_anomalies_in_memory():
    verdicts = _run_history(InMemoryMetricsRepository())
    by_metric = {v["metric"]: v for v in verdicts}
    assert by_metric["row_count"]["anomaly"] is True and "below 0.5" in by_metric["row_count"]["detail"]
    assert by_metric["mean"]["anomaly"] is False


def test_run_anomalies_in_the_sqlite_state_store(tmp_path):
    repository = StateMetricsRepository(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        verdicts = _run_history(repository)
        assert {v["metric"]: v["anomaly"] for v in verdicts} == {"row_count": True, "mean": False}
        assert repository.history("orders", "row_count", None, "gate", 10) == [1000, 1020, 400]
        assert repository.history("orders", "mean", "amount", "gate", 10) == [12.5, 12.5, 12.5]
    finally:
        repository.close()
