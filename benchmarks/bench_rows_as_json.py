"""Micro-benchmark: ``rows_as_json`` columnar vs the per-row ``json.dumps`` path (run by hand).

    python -m benchmarks.bench_rows_as_json [--rows 65536] [--repeat 5]   # from the repo root

Both encoders run in the same process on one batch shaped like the benchmark's typed
order rows (int64, string and float64 columns, a few nulls, some strings needing escapes)
and must give the same text. Times are the best of ``--repeat`` runs (the machine is
shared); the ratio old/new is the speed-up.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import pyarrow as pa

from beam_etl.json_rows import _rows_as_json_per_row, rows_as_json


def order_batch(rows: int, seed: int = 7) -> pa.RecordBatch:
    """``rows`` order rows with the benchmark's typed schema."""
    rng = np.random.default_rng(seed)

    def with_nulls(values: np.ndarray, rate: float) -> pa.Array:
        return pa.array(values, mask=rng.random(rows) < rate)

    countries = np.array(["US", "DE", "GB", "FR", "CA", "JP", "BR", "Österreich"], dtype=object)
    statuses = np.array(["pending", "paid", "shipped", "delivered", "cancelled", 'say "hi"'], dtype=object)
    customer = rng.integers(1, 200_000, rows)
    seconds = 1_704_067_200 + rng.integers(0, 366 * 86_400, rows)
    ts = np.datetime_as_string(seconds.astype("datetime64[s]")).astype(object)
    return pa.RecordBatch.from_pydict(
        {
            "order_id": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
            "customer_id": with_nulls(customer, 0.004),
            "product_id": pa.array(rng.integers(1, 5_000, rows)),
            "ts": pa.array(ts, pa.string()),
            "country": with_nulls(countries[rng.integers(0, len(countries), rows)], 0.003),
            "email": with_nulls(np.char.add(np.char.add("user", customer.astype(str)), "@example.com").astype(object), 0.002),
            "amount": with_nulls(np.round(np.exp(rng.normal(3.4, 0.9, rows)), 2), 0.003),
            "quantity": pa.array(rng.integers(1, 10, rows)),
            "status": pa.array(statuses[rng.integers(0, len(statuses), rows)], pa.string()),
        }
    )


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """The fastest of ``repeat`` timed calls, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=65_536)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    batch = order_batch(args.rows)
    old, new = _rows_as_json_per_row(batch), rows_as_json(batch)
    if not old.equals(new):
        raise SystemExit("columnar and per-row JSON differ")
    old_s = best_of(args.repeat, lambda: _rows_as_json_per_row(batch))
    new_s = best_of(args.repeat, lambda: rows_as_json(batch))
    print(f"rows={args.rows} columns={batch.num_columns} repeat={args.repeat} (best of)")
    print(f"per-row json.dumps: {old_s * 1e3:8.1f} ms  ({old_s / args.rows * 1e9:6.0f} ns/row)")
    print(f"columnar:           {new_s * 1e3:8.1f} ms  ({new_s / args.rows * 1e9:6.0f} ns/row)")
    print(f"speed-up (old/new): {old_s / new_s:.1f}x")


if __name__ == "__main__":
    main()
