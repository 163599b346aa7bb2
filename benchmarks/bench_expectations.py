"""Native expectations vs Great Expectations on the same 1M-row table (run by hand).

    python benchmarks/bench_expectations.py [--rows 1000000] [--repeat 3] [--json out.json]

Five expectations — not_null, between, in_set, match_regex, unique — evaluated
(a) natively by ``beam_etl.quality.evaluate_expectations`` on the Arrow table (one pass,
all five together), (b) by GX 1.x on ``table.to_pandas()`` in one validation run of a
five-expectation suite (GX's best case: metrics shared), and (c) by GX one validation per
expectation (how a suite of unrelated checks usually runs). The results are compared
(success, counts) so the speed-up is for the same answers. Times are the best of
``--repeat`` runs (the machine is shared: the median is printed too). GX's import and
context creation are timed apart and not counted.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import numpy as np
import pyarrow as pa

EXPECTATIONS = [
    {"expectation": "expect_column_values_to_not_be_null", "column": "email"},
    {"expectation": "expect_column_values_to_be_between", "column": "age", "min_value": 0, "max_value": 120},
    {"expectation": "expect_column_values_to_be_in_set", "column": "country", "value_set": ["US", "CA", "GB", "DE", "FR"]},
    {"expectation": "expect_column_values_to_match_regex", "column": "email", "regex": r"^[a-z0-9._]+@[a-z0-9-]+\.[a-z]{2,}$"},
    {"expectation": "expect_column_values_to_be_unique", "column": "id"},
]


def make_table(rows: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(rows).astype(np.int64)
    ids[rng.integers(0, rows, rows // 1000)] = 0  # some duplicates
    age = rng.integers(-5, 125, rows).astype(np.float64)
    age[rng.random(rows) < 0.02] = np.nan
    countries = np.array(["US", "CA", "GB", "DE", "FR", "XX", "ES"])
    country = countries[rng.integers(0, len(countries), rows)]
    users = rng.integers(0, rows, rows)
    email = np.char.add(np.char.add("user", users.astype(str)), "@example.com").astype(object)
    bad = rng.random(rows) < 0.01
    email[bad] = "not an email"
    email[rng.random(rows) < 0.01] = None
    return pa.table({"id": ids, "age": age, "country": country, "email": pa.array(email, pa.string())})


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(best, median, last result) of ``repeat`` runs."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    from beam_etl.quality import evaluate_expectations
    from beam_etl.quality.expectations import gx_runner, parse_expectations

    table = make_table(args.rows)
    evaluate_expectations(table, EXPECTATIONS)  # warm-up (lazy imports)
    native_s, native_median, native = timed(lambda: evaluate_expectations(table, EXPECTATIONS), args.repeat)

    start = time.perf_counter()
    runner = gx_runner()
    gx_setup_s = time.perf_counter() - start
    configs = parse_expectations(EXPECTATIONS)
    frame = table.to_pandas()
    runner.validate(frame, configs[:1])  # warm-up
    gx_s, gx_median, gx = timed(lambda: runner.validate(frame, configs), args.repeat)
    separate = [timed(lambda c=c: runner.validate(frame, [c]), args.repeat) for c in configs]
    gx_separate_s = sum(best for best, _, _ in separate)

    for mine, theirs in zip(native, gx):
        a, b = mine["result"], theirs["result"]
        if mine["success"] != theirs["success"] or a.get("unexpected_count") != b.get("unexpected_count"):
            print(f"MISMATCH {mine['expectation_config']['type']}: native {a} vs GX {b}", file=sys.stderr)
            return 1

    figures = {
        "rows": args.rows,
        "expectations": [e["expectation"] for e in EXPECTATIONS],
        "native_seconds": round(native_s, 3),
        "native_median_seconds": round(native_median, 3),
        "gx_suite_seconds": round(gx_s, 3),
        "gx_suite_median_seconds": round(gx_median, 3),
        "gx_one_validation_per_expectation_seconds": round(gx_separate_s, 3),
        "gx_per_expectation_seconds": {c.type: round(best, 3) for c, (best, _, _) in zip(configs, separate)},
        "speedup_vs_gx_suite": round(gx_s / native_s, 1),
        "speedup_vs_gx_per_expectation": round(gx_separate_s / native_s, 1),
        "gx_import_and_context_seconds": round(gx_setup_s, 2),
        "unexpected_counts": [r["result"].get("unexpected_count") for r in native],
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeat": args.repeat,
        "note": "best of --repeat runs; GX on table.to_pandas() (conversion not counted)",
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
