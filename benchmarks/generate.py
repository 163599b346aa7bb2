"""Deterministic, dirty order-like benchmark data: ``orders`` (N rows) and ``products`` (1,000).

    python -m benchmarks.generate --rows 1000000 [--seed 42] [--formats csv parquet]

Orders are what a web shop's export looks like after a few years of integrations:

=============  =========================================================================
column         values (and the dirt in them)
=============  =========================================================================
order_id       1..N, unique
customer_id    1..1,000,000, power-law skewed (the top customer has ~1% of orders);
               0.4% empty
product_id     1..1,000, skewed; 0.2% orphans (1001..1020, not in ``products``)
ts             ``YYYY-MM-DD HH:MM:SS`` in 2024; 0.3% malformed (``2024-02-30 ...``,
               ``05/03/2024 12:34``, ``unknown``)
country        20 ISO codes, skewed (US first); 15% lower case, 10% padded with spaces;
               0.3% empty, 0.2% invalid (``USA``, ``U.S.``, ``??``)
email          ``user<customer>@<domain>``; 10% upper case, 5% padded; 0.2% empty,
               0.5% invalid (no ``@``, no domain)
amount         log-normal, exactly two decimals; 0.4% negative, 0.3% empty,
               0.1% malformed (``12,50``, ``N/A``, ``abc``, ``12.3.4``)
quantity       1..9; 0.3% ``0``, 0.05% malformed (``two``)
status         completed 55%, shipped 20%, pending 10%, cancelled 10%, returned 5%;
               20% title case, 5% upper case, 5% padded
=============  =========================================================================

About 3.5% of the rows are bad in some way (the job sends them to its DLQ) and ~0.2% have an
unknown product (dropped by the inner join).

Determinism: rows are made in fixed chunks of :data:`CHUNK_ROWS`, each from its own
``numpy.random.default_rng([seed, chunk])``, so the same ``(rows, seed)`` always gives the same
bytes, and the first N rows of a larger data set equal the N-row data set.

Files are cached under ``benchmarks/data/`` (git-ignored) with the row count, seed and
:data:`GENERATOR_VERSION` in their names, written to a temporary name and renamed when
complete (an interrupted run leaves nothing that looks finished). Parquet files hold the
same text as the CSV (all columns ``string`` except the clean ``order_id`` and
``product_id``): a raw landing-zone file whose dirty values still need parsing.

Example:
    >>> from benchmarks.generate import ensure_data
    >>> data = ensure_data(2_000)  # doctest: +SKIP
    >>> data.orders_csv  # doctest: +SKIP
    '.../benchmarks/data/orders_2000_s42_v1.csv'
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "CHUNK_ROWS",
    "DATA_DIR",
    "DEFAULT_SEED",
    "GENERATOR_VERSION",
    "N_PRODUCTS",
    "DataSet",
    "ensure_data",
    "ensure_orders",
    "orders_chunks",
    "products_table",
    "rows_for_bytes",
]

#: Bump when the data changes, so cached files are not reused.
GENERATOR_VERSION = 1
DEFAULT_SEED = 42
CHUNK_ROWS = 500_000
N_CUSTOMERS = 1_000_000
N_PRODUCTS = 1_000
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

COUNTRIES = ["US", "DE", "GB", "FR", "CA", "ES", "IT", "NL", "SE", "PL",
             "BR", "MX", "JP", "AU", "IN", "CH", "AT", "BE", "DK", "IE"]  # fmt: skip
CATEGORIES = ["books", "music", "video", "toys", "garden", "kitchen", "tools", "sports", "beauty", "health",
              "shoes", "bags", "phones", "laptops", "cameras", "audio", "office", "pets", "baby", "food"]  # fmt: skip
STATUSES = ["completed", "shipped", "pending", "cancelled", "returned"]
STATUS_WEIGHTS = [0.55, 0.20, 0.10, 0.10, 0.05]
DOMAINS = ["example.com", "mail.net", "shop.org", "corp.co.uk", "web.de", "post.fr"]

BAD_TS = ["2024-02-30 10:00:00", "2024-13-01 00:00:00", "05/03/2024 12:34", "unknown"]
BAD_COUNTRY = ["USA", "U.S.", "??"]
BAD_AMOUNT = ["12,50", "N/A", "abc", "12.3.4"]
_EPOCH_2024 = 1_704_067_200  # 2024-01-01T00:00:00Z


@dataclass(frozen=True)
class DataSet:
    """Paths of one generated data set (``*_parquet`` are None when not generated)."""

    rows: int
    seed: int
    orders_csv: str | None
    products_csv: str | None
    orders_parquet: str | None = None
    products_parquet: str | None = None


def _cents_text(cents: np.ndarray) -> pa.Array:
    """Integer cents -> exact ``"123.45"`` text (every parser reads the same double)."""
    whole = pc.cast(pa.array(np.abs(cents) // 100), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(np.abs(cents) % 100), pa.string()), width=2, padding="0")
    sign = pa.array(np.where(cents < 0, "-", ""))
    return pc.binary_join_element_wise(sign, whole, ".", frac, "")


def _pick(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return rng.random(n) < rate


def _replace(values: pa.Array, mask: np.ndarray, choices: Sequence[str] | None, rng: np.random.Generator) -> pa.Array:
    """``values`` with the rows of ``mask`` replaced by random ``choices`` (None: null)."""
    if not mask.any():
        return values
    if choices is None:
        replacement = pa.nulls(len(values), pa.string())
    else:
        replacement = pa.array(np.asarray(choices, dtype=object)[rng.integers(0, len(choices), len(values))], pa.string())
    return pc.if_else(pa.array(mask), replacement, values)


def _dirty_case(values: pa.Array, rng: np.random.Generator, lower: float = 0.0, upper: float = 0.0,
                title: float = 0.0, pad: float = 0.0) -> pa.Array:
    n = len(values)
    for rate, fn in ((lower, pc.utf8_lower), (upper, pc.utf8_upper), (title, pc.utf8_title)):
        if rate:
            values = pc.if_else(pa.array(_pick(rng, n, rate)), fn(values), values)
    if pad:
        left = pa.array(np.where(rng.random(n) < 0.5, " ", "  "))
        right = pa.array(np.where(rng.random(n) < 0.5, " ", ""))
        values = pc.if_else(pa.array(_pick(rng, n, pad)), pc.binary_join_element_wise(left, values, right, ""), values)
    return values


def _orders_chunk(seed: int, chunk: int) -> pa.Table:
    """Rows ``chunk * CHUNK_ROWS + 1 ..`` of the order data (always CHUNK_ROWS rows)."""
    rng = np.random.default_rng([seed, chunk])
    n = CHUNK_ROWS
    order_id = np.arange(chunk * n + 1, chunk * n + n + 1, dtype=np.int64)
    customer = (np.floor(N_CUSTOMERS * rng.random(n) ** 3) + 1).astype(np.int64)
    product = (np.floor(N_PRODUCTS * rng.random(n) ** 2) + 1).astype(np.int64)
    orphans = _pick(rng, n, 0.002)
    product[orphans] = N_PRODUCTS + 1 + rng.integers(0, 20, int(orphans.sum()))

    seconds = _EPOCH_2024 + rng.integers(0, 366 * 86_400, n)
    ts = pc.strftime(pa.array(seconds, pa.timestamp("s")), format="%Y-%m-%d %H:%M:%S")
    ts = _replace(ts, _pick(rng, n, 0.003), BAD_TS, rng)

    weights = 1.0 / np.arange(1, len(COUNTRIES) + 1) ** 1.1
    country_index = rng.choice(len(COUNTRIES), size=n, p=weights / weights.sum())
    country = pa.array(np.asarray(COUNTRIES, dtype=object)[country_index], pa.string())
    country = _dirty_case(country, rng, lower=0.15, pad=0.10)
    country = _replace(country, _pick(rng, n, 0.002), BAD_COUNTRY, rng)
    country = _replace(country, _pick(rng, n, 0.003), None, rng)

    domain = pa.array(np.asarray(DOMAINS, dtype=object)[rng.integers(0, len(DOMAINS), n)], pa.string())
    email = pc.binary_join_element_wise("user", pc.cast(pa.array(customer), pa.string()), "@", domain, "")
    bad_email = _pick(rng, n, 0.005)
    broken = pc.if_else(
        pa.array(rng.random(n) < 0.5),
        pc.replace_substring(email, "@", "."),  # no @
        pc.binary_join_element_wise("user", pc.cast(pa.array(customer), pa.string()), "@", ""),  # no domain
    )
    email = pc.if_else(pa.array(bad_email), broken, email)
    email = _dirty_case(email, rng, upper=0.10, pad=0.05)
    email = _replace(email, _pick(rng, n, 0.002), None, rng)

    cents = np.maximum(np.round(np.exp(rng.normal(3.4, 0.9, n)) * 100), 1).astype(np.int64)
    cents[_pick(rng, n, 0.004)] *= -1
    amount = _cents_text(cents)
    amount = _replace(amount, _pick(rng, n, 0.003), None, rng)
    amount = _replace(amount, _pick(rng, n, 0.001), BAD_AMOUNT, rng)

    quantity = rng.integers(1, 10, n)
    quantity[_pick(rng, n, 0.003)] = 0
    quantity_text = _replace(pc.cast(pa.array(quantity), pa.string()), _pick(rng, n, 0.0005), ["two"], rng)

    status = pa.array(np.asarray(STATUSES, dtype=object)[rng.choice(len(STATUSES), size=n, p=STATUS_WEIGHTS)], pa.string())
    status = _dirty_case(status, rng, title=0.20, upper=0.05, pad=0.05)

    customer_text = _replace(pc.cast(pa.array(customer), pa.string()), _pick(rng, n, 0.004), None, rng)
    return pa.table(
        {
            "order_id": pa.array(order_id),
            "customer_id": customer_text,
            "product_id": pa.array(product),
            "ts": ts,
            "country": country,
            "email": email,
            "amount": amount,
            "quantity": quantity_text,
            "status": status,
        }
    )


def orders_chunks(rows: int, seed: int = DEFAULT_SEED) -> Iterator[pa.Table]:
    """The ``rows`` order rows as tables of at most :data:`CHUNK_ROWS` rows.

    Args:
        rows: how many rows in all.
        seed: the data set's seed.
    """
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    for chunk in range((rows + CHUNK_ROWS - 1) // CHUNK_ROWS):
        table = _orders_chunk(seed, chunk)
        left = rows - chunk * CHUNK_ROWS
        yield table if left >= CHUNK_ROWS else table.slice(0, left)


def products_table(seed: int = DEFAULT_SEED) -> pa.Table:
    """The product dimension: ``product_id`` 1..1000, ``name``, ``category``, ``unit_cost``."""
    rng = np.random.default_rng([seed, 10**6])
    ids = np.arange(1, N_PRODUCTS + 1, dtype=np.int64)
    category = np.asarray(CATEGORIES, dtype=object)[rng.integers(0, len(CATEGORIES), N_PRODUCTS)]
    cents = np.maximum(np.round(np.exp(rng.normal(2.8, 0.8, N_PRODUCTS)) * 100), 1).astype(np.int64)
    return pa.table(
        {
            "product_id": pa.array(ids),
            "name": pc.binary_join_element_wise("product ", pc.cast(pa.array(ids), pa.string()), ""),
            "category": pa.array(category, pa.string()),
            "unit_cost": pa.array(cents / 100.0),
        }
    )


def _csv_text(table: pa.Table, header: bool) -> bytes:
    """``table`` as CSV text, quoting only the values that need it (as most exporters do)."""
    columns = []
    for column in table.columns:
        text = pc.cast(column, pa.string())
        needs_quotes = pc.match_substring_regex(text, '[,"\\r\\n]')
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
        columns.append(pc.if_else(needs_quotes, quoted, text))
    lines = pc.binary_join_element_wise(*columns, ",", null_handling="replace", null_replacement="")
    lines = pc.binary_join_element_wise(lines, "\n", "")
    array = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=len(array) + 1, offset=array.offset * 4)
    body = array.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
    return ((",".join(table.column_names) + "\n").encode() if header else b"") + body


def _write_csv(tables: Iterator[pa.Table], path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            for index, table in enumerate(tables):
                handle.write(_csv_text(table, header=index == 0))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def _write_parquet(tables: Iterator[pa.Table], path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    writer = None
    try:
        for table in tables:
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="snappy")
            writer.write_table(table, row_group_size=CHUNK_ROWS // 4)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def _name(kind: str, rows: int | None, seed: int, ext: str) -> str:
    size = f"_{rows}" if rows is not None else ""
    return f"{kind}{size}_s{seed}_v{GENERATOR_VERSION}.{ext}"


def ensure_orders(rows: int, seed: int = DEFAULT_SEED, fmt: str = "csv", data_dir: str = DATA_DIR) -> str:
    """The path of the cached ``rows``-row orders file in ``fmt`` (``csv``/``parquet``), made if missing."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format must be csv or parquet, got {fmt!r}")
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, _name("orders", rows, seed, fmt))
    if not os.path.exists(path):
        (_write_csv if fmt == "csv" else _write_parquet)(orders_chunks(rows, seed), path)
    return path


def ensure_data(
    rows: int, seed: int = DEFAULT_SEED, formats: Sequence[str] = ("csv", "parquet"), data_dir: str = DATA_DIR
) -> DataSet:
    """Generate (or reuse) the orders and products files for ``rows`` rows.

    Args:
        rows: order rows.
        seed: data set seed; the same (rows, seed) always gives the same files.
        formats: ``csv`` and/or ``parquet``.
        data_dir: the cache directory (default ``benchmarks/data``).
    """
    unknown = set(formats) - {"csv", "parquet"}
    if unknown or not formats:
        raise ValueError(f"formats must be csv and/or parquet, got {list(formats)}")
    os.makedirs(data_dir, exist_ok=True)
    paths: dict[str, str | None] = {}
    for fmt in ("csv", "parquet"):
        if fmt not in formats:
            paths[fmt], paths[f"p_{fmt}"] = None, None
            continue
        paths[fmt] = ensure_orders(rows, seed, fmt, data_dir)
        product_path = os.path.join(data_dir, _name("products", None, seed, fmt))
        if not os.path.exists(product_path):
            (_write_csv if fmt == "csv" else _write_parquet)(iter([products_table(seed)]), product_path)
        paths[f"p_{fmt}"] = product_path
    return DataSet(rows, seed, paths["csv"], paths["p_csv"], paths["parquet"], paths["p_parquet"])


def rows_for_bytes(target_bytes: int, seed: int = DEFAULT_SEED) -> int:
    """About how many order rows make a CSV of ``target_bytes`` (measured on one chunk)."""
    per_row = len(_csv_text(_orders_chunk(seed, 0).slice(0, 100_000), header=False)) / 100_000
    return int(target_bytes / per_row) + 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--formats", nargs="+", default=["csv", "parquet"], choices=["csv", "parquet"])
    parser.add_argument("--data-dir", default=DATA_DIR)
    args = parser.parse_args(argv)
    for rows in args.rows:
        data = ensure_data(rows, args.seed, args.formats, args.data_dir)
        for path in (data.orders_csv, data.orders_parquet, data.products_csv, data.products_parquet):
            if path:
                print(f"{path}  {os.path.getsize(path) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
