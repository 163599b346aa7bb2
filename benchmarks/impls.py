"""The benchmark job (``benchmarks/job.yaml``) in beam-etl, DuckDB SQL, Polars and pandas.

The row-by-row Beam pipeline is in :mod:`benchmarks.row_beam`. Each implementation is run
in its own process by :mod:`benchmarks.run` (so its wall time and peak RSS are its own):

    python -m benchmarks.impls duckdb --orders O.csv --products P.csv --out DIR

and leaves in ``DIR``: the output table (``result.parquet``; beam-etl: ``monthly/``), the
rejected rows (``dlq.parquet``; beam-etl: ``dlq/``; row Beam: ``dlq-*.jsonl``) and
``stats.json``. Heavy libraries are imported inside the function that uses them, so each
process pays only for its own.

The job, as every implementation does it:

1. read the orders CSV (every field as text) and the products dimension;
2. clean: ``country`` trimmed and upper-cased, ``email`` and ``status`` trimmed and lower-cased;
3. validate — a row is rejected (to the DLQ, with the first failing rule) when a number does
   not parse (``customer_id``, ``amount``, ``quantity``), or ``customer_id`` is missing, ``ts``
   is missing or not ``YYYY-MM-DD HH:MM:SS``, ``country`` is not two letters, ``email`` does not
   match :data:`EMAIL_RE`, ``amount`` is missing or negative, ``quantity`` is missing or
   outside 1..100;
4. derive ``order_month`` (the month of ``ts``) and ``revenue = amount * quantity``;
5. keep ``status IN ('completed', 'shipped')``;
6. inner join ``products`` on ``product_id``; ``margin = revenue - unit_cost * quantity``;
7. per (country, category, order_month): ``count(*)``, ``count(DISTINCT customer_id)``,
   ``sum(revenue)``, ``sum(margin)``, ``median(amount)`` (interpolated), ``max(amount)``;
8. ``rank()`` of revenue (descending) within (country, order_month);
9. write Parquet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

__all__ = [
    "COUNTRY_RE",
    "EMAIL_RE",
    "IMPLEMENTATIONS",
    "KEY_COLUMNS",
    "RESULT_COLUMNS",
    "SOLD_STATUSES",
    "TS_FORMAT",
    "run_beam_etl",
    "run_duckdb",
    "run_pandas",
    "run_polars",
]

#: Every implementation, in the order of the table.
IMPLEMENTATIONS = ("beam_etl", "duckdb", "polars", "pandas", "row_beam")

COUNTRY_RE = r"^[A-Z]{2}$"
EMAIL_RE = r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$"
TS_FORMAT = "%Y-%m-%d %H:%M:%S"
SOLD_STATUSES = ("completed", "shipped")
KEY_COLUMNS = ("country", "category", "order_month")
RESULT_COLUMNS = KEY_COLUMNS + (
    "orders", "customers", "revenue", "margin", "median_amount", "max_amount", "revenue_rank"
)  # fmt: skip

SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "job.yaml")


# --------------------------------------------------------------------------- beam-etl


def run_beam_etl(orders: str, products: str, out: str, beam_args: Sequence[str] = (), spec: str = SPEC) -> dict:
    """``python -m beam_etl run benchmarks/job.yaml`` in this process; stats from its run summary.

    Args:
        orders: the orders CSV.
        products: the products CSV.
        out: the output directory (``monthly/``, ``dlq/``, ``run_summary.json``).
        beam_args: Beam pipeline options, e.g. ``--direct_num_workers=2``.
        spec: the spec to run (default ``benchmarks/job.yaml``).
    """
    from beam_etl.cli import main as beam_etl_main

    os.environ["BENCH_ORDERS"] = os.path.abspath(orders)
    os.environ["BENCH_PRODUCTS"] = os.path.abspath(products)
    state = f"sqlite:///{os.path.abspath(os.path.join(out, 'state.db'))}"  # keep ~/.beam_etl out of it
    code = beam_etl_main(["run", spec, "--output", out, "--quiet", "--state-url", state, *beam_args])
    if code:
        raise RuntimeError(f"beam-etl exited with {code}")
    with open(os.path.join(out, "run_summary.json"), encoding="utf-8") as handle:
        summary = json.load(handle)
    if not summary.get("balanced", False):
        raise RuntimeError("beam-etl's run summary does not balance")
    return {"dlq_rows": int(summary["dlq_rows"])}


# --------------------------------------------------------------------------- DuckDB


def run_duckdb(orders: str, products: str, out: str, beam_args: Sequence[str] = ()) -> dict:
    """The job as DuckDB SQL: load the CSV as text, TRY_CAST, one table, two COPYs.

    Args:
        orders: the orders CSV.
        products: the products CSV.
        out: the output directory (``result.parquet``, ``dlq.parquet``).
        beam_args: ignored.
    """
    import duckdb

    con = duckdb.connect()
    con.execute(
        """
        CREATE TEMP TABLE orders AS
        WITH typed AS (
            SELECT
                order_id,
                TRY_CAST(customer_id AS BIGINT) AS customer_id, customer_id AS customer_id_text,
                TRY_CAST(product_id AS BIGINT) AS product_id, product_id AS product_id_text,
                ts, TRY_STRPTIME(ts, $ts_format) AS order_ts,
                upper(trim(country)) AS country,
                lower(trim(email)) AS email,
                TRY_CAST(amount AS DOUBLE) AS amount, amount AS amount_text,
                TRY_CAST(quantity AS BIGINT) AS quantity, quantity AS quantity_text,
                lower(trim(status)) AS status
            FROM read_csv($orders, all_varchar = true, header = true)
        )
        SELECT *,
            CASE
                WHEN (customer_id IS NULL AND customer_id_text IS NOT NULL)
                  OR (product_id IS NULL AND product_id_text IS NOT NULL)
                  OR (amount IS NULL AND amount_text IS NOT NULL)
                  OR (quantity IS NULL AND quantity_text IS NOT NULL) THEN 'parse'
                WHEN customer_id IS NULL THEN 'customer_id: required'
                WHEN ts IS NULL OR trim(ts) = '' THEN 'ts: required'
                WHEN order_ts IS NULL THEN 'ts: not a timestamp'
                WHEN country IS NULL OR country = '' THEN 'country: required'
                WHEN NOT regexp_matches(country, $country_re) THEN 'country: regex'
                WHEN email IS NULL OR email = '' THEN 'email: required'
                WHEN NOT regexp_matches(email, $email_re) THEN 'email: regex'
                WHEN amount IS NULL OR isnan(amount) THEN 'amount: required'
                WHEN amount < 0 THEN 'amount: min'
                WHEN quantity IS NULL THEN 'quantity: required'
                WHEN quantity < 1 OR quantity > 100 THEN 'quantity: range'
            END AS error
        FROM typed
        """,
        {"orders": orders, "ts_format": TS_FORMAT, "country_re": COUNTRY_RE, "email_re": EMAIL_RE},
    )
    dlq = os.path.join(out, "dlq.parquet").replace("'", "''")
    result = os.path.join(out, "result.parquet").replace("'", "''")
    con.execute(
        f"COPY (SELECT order_id, error, customer_id_text, product_id_text, ts, country, email, amount_text,"
        f" quantity_text, status FROM orders WHERE error IS NOT NULL) TO '{dlq}' (FORMAT parquet)"
    )
    con.execute(
        f"""
        COPY (
            WITH sold AS (
                SELECT *, date_trunc('month', order_ts) AS order_month, amount * quantity AS revenue
                FROM orders
                WHERE error IS NULL AND status IN ('completed', 'shipped')
            ),
            joined AS (
                SELECT s.country, p.category, s.order_month, s.customer_id, s.amount, s.revenue,
                       s.revenue - p.unit_cost * s.quantity AS margin
                FROM sold s JOIN read_csv($products, header = true) p ON s.product_id = p.product_id
            ),
            monthly AS (
                SELECT country, category, order_month,
                       count(*) AS orders, count(DISTINCT customer_id) AS customers,
                       sum(revenue) AS revenue, sum(margin) AS margin,
                       median(amount) AS median_amount, max(amount) AS max_amount
                FROM joined
                GROUP BY country, category, order_month
            )
            SELECT *, rank() OVER (PARTITION BY country, order_month ORDER BY revenue DESC) AS revenue_rank
            FROM monthly
        ) TO '{result}' (FORMAT parquet)
        """,
        {"products": products},
    )
    (dlq_rows,) = con.execute("SELECT count(*) FROM orders WHERE error IS NOT NULL").fetchone()
    return {"dlq_rows": int(dlq_rows)}


# --------------------------------------------------------------------------- Polars


def run_polars(orders: str, products: str, out: str, beam_args: Sequence[str] = ()) -> dict:
    """The job as a Polars lazy query; the DLQ and the result collected together (one scan).

    Args:
        orders: the orders CSV.
        products: the products CSV.
        out: the output directory (``result.parquet``, ``dlq.parquet``).
        beam_args: ignored.
    """
    import polars as pl

    text = pl.scan_csv(orders, infer_schema=False)
    typed = text.with_columns(
        customer_id_n=pl.col("customer_id").cast(pl.Int64, strict=False),
        product_id_n=pl.col("product_id").cast(pl.Int64, strict=False),
        amount_n=pl.col("amount").cast(pl.Float64, strict=False),
        quantity_n=pl.col("quantity").cast(pl.Int64, strict=False),
        order_ts=pl.col("ts").str.to_datetime(TS_FORMAT, strict=False),
        country=pl.col("country").str.strip_chars().str.to_uppercase(),
        email=pl.col("email").str.strip_chars().str.to_lowercase(),
        status=pl.col("status").str.strip_chars().str.to_lowercase(),
    )

    def unparsed(name: str) -> pl.Expr:
        return pl.col(f"{name}_n").is_null() & pl.col(name).is_not_null()

    error = (
        pl.when(unparsed("customer_id") | unparsed("product_id") | unparsed("amount") | unparsed("quantity"))
        .then(pl.lit("parse"))
        .when(pl.col("customer_id_n").is_null()).then(pl.lit("customer_id: required"))
        .when(pl.col("ts").is_null() | (pl.col("ts").str.strip_chars() == "")).then(pl.lit("ts: required"))
        .when(pl.col("order_ts").is_null()).then(pl.lit("ts: not a timestamp"))
        .when(pl.col("country").is_null() | (pl.col("country") == "")).then(pl.lit("country: required"))
        .when(~pl.col("country").str.contains(COUNTRY_RE)).then(pl.lit("country: regex"))
        .when(pl.col("email").is_null() | (pl.col("email") == "")).then(pl.lit("email: required"))
        .when(~pl.col("email").str.contains(EMAIL_RE)).then(pl.lit("email: regex"))
        .when(pl.col("amount_n").is_null() | pl.col("amount_n").is_nan()).then(pl.lit("amount: required"))
        .when(pl.col("amount_n") < 0).then(pl.lit("amount: min"))
        .when(pl.col("quantity_n").is_null()).then(pl.lit("quantity: required"))
        .when((pl.col("quantity_n") < 1) | (pl.col("quantity_n") > 100)).then(pl.lit("quantity: range"))
        .otherwise(None)
    )
    checked = typed.with_columns(error=error)
    dlq = checked.filter(pl.col("error").is_not_null()).select(
        pl.col("order_id").cast(pl.Int64), "error", "customer_id", "product_id", "ts", "country", "email", "amount",
        "quantity", "status",
    )  # fmt: skip
    dimension = pl.scan_csv(products)
    result = (
        checked.filter(pl.col("error").is_null() & pl.col("status").is_in(list(SOLD_STATUSES)))
        .select(
            "country",
            pl.col("customer_id_n").alias("customer_id"),
            pl.col("product_id_n").alias("product_id"),
            pl.col("amount_n").alias("amount"),
            pl.col("quantity_n").alias("quantity"),
            pl.col("order_ts").dt.truncate("1mo").alias("order_month"),
            (pl.col("amount_n") * pl.col("quantity_n")).alias("revenue"),
        )
        .join(dimension, on="product_id", how="inner")
        .with_columns(margin=pl.col("revenue") - pl.col("unit_cost") * pl.col("quantity"))
        .group_by(list(KEY_COLUMNS))
        .agg(
            orders=pl.len().cast(pl.Int64),
            customers=pl.col("customer_id").n_unique().cast(pl.Int64),
            revenue=pl.col("revenue").sum(),
            margin=pl.col("margin").sum(),
            median_amount=pl.col("amount").median(),
            max_amount=pl.col("amount").max(),
        )
        .with_columns(
            revenue_rank=pl.col("revenue").rank(method="min", descending=True).over(["country", "order_month"]).cast(pl.Int64)
        )
    )
    dlq_frame, result_frame = pl.collect_all([dlq, result])
    dlq_frame.write_parquet(os.path.join(out, "dlq.parquet"))
    result_frame.write_parquet(os.path.join(out, "result.parquet"))
    return {"dlq_rows": dlq_frame.height}


# --------------------------------------------------------------------------- pandas


def run_pandas(orders: str, products: str, out: str, beam_args: Sequence[str] = ()) -> dict:
    """The job in pandas: ``read_csv`` as text, ``to_numeric``/``to_datetime`` with coerce, ``np.select``.

    Args:
        orders: the orders CSV.
        products: the products CSV.
        out: the output directory (``result.parquet``, ``dlq.parquet``).
        beam_args: ignored.
    """
    import numpy as np
    import pandas as pd

    df = pd.read_csv(orders, dtype=str, keep_default_na=False, na_values=[""])
    customer = pd.to_numeric(df["customer_id"], errors="coerce")
    product = pd.to_numeric(df["product_id"], errors="coerce")
    amount = pd.to_numeric(df["amount"], errors="coerce")
    quantity = pd.to_numeric(df["quantity"], errors="coerce")
    order_ts = pd.to_datetime(df["ts"], format=TS_FORMAT, errors="coerce")
    country = df["country"].str.strip().str.upper()
    email = df["email"].str.strip().str.lower()
    status = df["status"].str.strip().str.lower()

    def unparsed(values: pd.Series, name: str) -> pd.Series:
        return values.isna() & df[name].notna()

    conditions = [
        unparsed(customer, "customer_id") | unparsed(product, "product_id") | unparsed(amount, "amount")
        | unparsed(quantity, "quantity"),
        customer.isna(),
        df["ts"].isna() | (df["ts"].str.strip() == ""),
        order_ts.isna(),
        country.isna() | (country == ""),
        ~country.str.contains(COUNTRY_RE, regex=True).fillna(False).astype(bool),
        email.isna() | (email == ""),
        ~email.str.contains(EMAIL_RE, regex=True).fillna(False).astype(bool),
        amount.isna(),
        amount < 0,
        quantity.isna(),
        (quantity < 1) | (quantity > 100),
    ]  # fmt: skip
    reasons = [
        "parse", "customer_id: required", "ts: required", "ts: not a timestamp", "country: required",
        "country: regex", "email: required", "email: regex", "amount: required", "amount: min",
        "quantity: required", "quantity: range",
    ]  # fmt: skip
    error = pd.Series(np.select([c.to_numpy(dtype=bool) for c in conditions], reasons, default=""), index=df.index)
    bad = error != ""
    dlq = df[bad].assign(error=error[bad], order_id=pd.to_numeric(df["order_id"][bad]))
    dlq.to_parquet(os.path.join(out, "dlq.parquet"), index=False)

    keep = ~bad & status.isin(SOLD_STATUSES)
    sold = pd.DataFrame(
        {
            "country": country[keep],
            "customer_id": customer[keep].astype("int64"),
            "product_id": product[keep].astype("int64"),
            "amount": amount[keep],
            "quantity": quantity[keep].astype("int64"),
            "order_month": order_ts[keep].dt.to_period("M").dt.to_timestamp(),
        }
    )
    sold["revenue"] = sold["amount"] * sold["quantity"]
    dimension = pd.read_csv(products)
    joined = sold.merge(dimension[["product_id", "category", "unit_cost"]], on="product_id", how="inner")
    joined["margin"] = joined["revenue"] - joined["unit_cost"] * joined["quantity"]
    monthly = (
        joined.groupby(list(KEY_COLUMNS), sort=False)
        .agg(
            orders=("amount", "size"),
            customers=("customer_id", "nunique"),
            revenue=("revenue", "sum"),
            margin=("margin", "sum"),
            median_amount=("amount", "median"),
            max_amount=("amount", "max"),
        )
        .reset_index()
    )
    monthly["revenue_rank"] = (
        monthly.groupby(["country", "order_month"])["revenue"].rank(method="min", ascending=False).astype("int64")
    )
    monthly.to_parquet(os.path.join(out, "result.parquet"), index=False)
    return {"dlq_rows": int(bad.sum())}


# --------------------------------------------------------------------------- entry point


def _row_beam(orders: str, products: str, out: str, beam_args: Sequence[str] = ()) -> dict:
    from benchmarks.row_beam import run_row_beam

    return run_row_beam(orders, products, out, beam_args)


RUNNERS: dict[str, Callable[..., dict]] = {
    "beam_etl": run_beam_etl,
    "duckdb": run_duckdb,
    "polars": run_polars,
    "pandas": run_pandas,
    "row_beam": _row_beam,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one implementation of the benchmark job.")
    parser.add_argument("implementation", choices=sorted(RUNNERS))
    parser.add_argument("--orders", required=True)
    parser.add_argument("--products", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--spec", default=SPEC, help="beam_etl only: the spec to run")
    args, beam_args = parser.parse_known_args(argv)
    os.makedirs(args.out, exist_ok=True)
    kwargs = {"spec": args.spec} if args.implementation == "beam_etl" else {}
    stats = RUNNERS[args.implementation](args.orders, args.products, args.out, beam_args, **kwargs)
    with open(os.path.join(args.out, "stats.json"), "w", encoding="utf-8") as handle:
        json.dump(stats, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
