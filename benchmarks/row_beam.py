"""The benchmark job as an idiomatic hand-written Apache Beam pipeline: one dict per element.

This is the baseline beam-etl is measured against: what a Beam user writes without a
columnar engine — ``ReadFromText``, ``csv`` parsing per line, a ``DoFn`` that validates and
sends bad rows to a tagged ``dlq`` output (with the reason, not a formatted traceback), the
product dimension as an ``AsDict`` side input, ``CombinePerKey`` with a ``CombineFn`` for the
monthly aggregates, a ``GroupByKey`` for the rank, and ``WriteToParquet``. Semantics are those
listed in :mod:`benchmarks.impls`.

Example:
    >>> run_row_beam("orders.csv", "products.csv", "/tmp/out", ["--direct_num_workers=1"])  # doctest: +SKIP
    {'dlq_rows': 35120}
"""

from __future__ import annotations

import csv
import datetime as _dt
import glob
import json
import os
import re
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.parquetio import WriteToParquet
from apache_beam.io.textio import ReadFromText, WriteToText
from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks.impls import COUNTRY_RE, EMAIL_RE, SOLD_STATUSES, TS_FORMAT

__all__ = ["run_row_beam", "ParseAndValidate", "MonthlyStats"]

ORDER_FIELDS = ("order_id", "customer_id", "product_id", "ts", "country", "email", "amount", "quantity", "status")
_COUNTRY = re.compile(COUNTRY_RE)
_EMAIL = re.compile(EMAIL_RE)

RESULT_SCHEMA = pa.schema(
    [
        ("country", pa.string()),
        ("category", pa.string()),
        ("order_month", pa.timestamp("us")),
        ("orders", pa.int64()),
        ("customers", pa.int64()),
        ("revenue", pa.float64()),
        ("margin", pa.float64()),
        ("median_amount", pa.float64()),
        ("max_amount", pa.float64()),
        ("revenue_rank", pa.int64()),
    ]
)


def _optional(text: str, parse) -> tuple[Any, bool]:
    """(value or None, parsed ok): an empty field is a missing value, not a parse error."""
    if text == "":
        return None, True
    try:
        return parse(text), True
    except ValueError:
        return None, False


class ParseAndValidate(beam.DoFn):
    """CSV line -> a clean, typed order dict; bad lines to the ``dlq`` output with the reason."""

    DLQ = "dlq"

    def process(self, line: str) -> Iterator[Any]:
        fields = next(csv.reader([line]))
        if len(fields) != len(ORDER_FIELDS):
            yield beam.pvalue.TaggedOutput(self.DLQ, {"order_id": None, "error": "parse: field count", "line": line})
            return
        raw = dict(zip(ORDER_FIELDS, fields))
        error = self._error(raw)
        if error is not None:
            order_id, _ = _optional(raw["order_id"], int)
            yield beam.pvalue.TaggedOutput(self.DLQ, {"order_id": order_id, "error": error, "line": line})
            return
        yield raw

    @staticmethod
    def _error(row: dict) -> str | None:
        """Parse and clean ``row`` in place; the first failing rule, or None."""
        customer, ok_customer = _optional(row["customer_id"], int)
        product, ok_product = _optional(row["product_id"], int)
        amount, ok_amount = _optional(row["amount"], float)
        quantity, ok_quantity = _optional(row["quantity"], int)
        if not (ok_customer and ok_product and ok_amount and ok_quantity):
            return "parse"
        ts = row["ts"]
        country = row["country"].strip().upper()
        email = row["email"].strip().lower()
        if customer is None:
            return "customer_id: required"
        if ts.strip() == "":
            return "ts: required"
        try:
            order_ts = _dt.datetime.strptime(ts, TS_FORMAT)
        except ValueError:
            return "ts: not a timestamp"
        if country == "":
            return "country: required"
        if not _COUNTRY.search(country):
            return "country: regex"
        if email == "":
            return "email: required"
        if not _EMAIL.search(email):
            return "email: regex"
        if amount is None or amount != amount:
            return "amount: required"
        if amount < 0:
            return "amount: min"
        if quantity is None:
            return "quantity: required"
        if not 1 <= quantity <= 100:
            return "quantity: range"
        row.update(
            customer_id=customer,
            product_id=product,
            amount=amount,
            quantity=quantity,
            order_ts=order_ts,
            country=country,
            email=email,
            status=row["status"].strip().lower(),
        )
        return None


def derive(order: dict) -> dict:
    """``order_month`` (as ``(year, month)``: keys must encode deterministically) and ``revenue``."""
    order["order_month"] = (order["order_ts"].year, order["order_ts"].month)
    order["revenue"] = order["amount"] * order["quantity"]
    return order


def parse_product(line: str) -> tuple[int, tuple[str, float]]:
    """``product_id,name,category,unit_cost`` -> ``(product_id, (category, unit_cost))``."""
    product_id, _name, category, unit_cost = next(csv.reader([line]))
    return int(product_id), (category, float(unit_cost))


def join_product(order: dict, products: dict) -> Iterator[tuple[tuple, tuple]]:
    """Inner join with the product dimension; keyed for the monthly aggregate."""
    product = products.get(order["product_id"])
    if product is None:
        return
    category, unit_cost = product
    margin = order["revenue"] - unit_cost * order["quantity"]
    key = (order["country"], category, order["order_month"])
    yield key, (order["customer_id"], order["amount"], order["revenue"], margin)


class MonthlyStats(beam.CombineFn):
    """count, count distinct customers, sums, median and max of one (country, category, month).

    The accumulator keeps the distinct customers and every amount (an exact median needs them).
    """

    def create_accumulator(self) -> list:
        return [0, set(), 0.0, 0.0, [], None]

    def add_input(self, acc: list, value: tuple) -> list:
        customer, amount, revenue, margin = value
        acc[0] += 1
        acc[1].add(customer)
        acc[2] += revenue
        acc[3] += margin
        acc[4].append(amount)
        acc[5] = amount if acc[5] is None or amount > acc[5] else acc[5]
        return acc

    def merge_accumulators(self, accumulators: Iterable[list]) -> list:
        merged = self.create_accumulator()
        for acc in accumulators:
            merged[0] += acc[0]
            merged[1] |= acc[1]
            merged[2] += acc[2]
            merged[3] += acc[3]
            merged[4].extend(acc[4])
            if acc[5] is not None and (merged[5] is None or acc[5] > merged[5]):
                merged[5] = acc[5]
        return merged

    def extract_output(self, acc: list) -> dict:
        amounts = sorted(acc[4])
        middle = len(amounts) // 2
        median = amounts[middle] if len(amounts) % 2 else (amounts[middle - 1] + amounts[middle]) / 2
        return {
            "orders": acc[0],
            "customers": len(acc[1]),
            "revenue": acc[2],
            "margin": acc[3],
            "median_amount": median,
            "max_amount": acc[5],
        }


def to_row(element: tuple[tuple, dict]) -> tuple[tuple, dict]:
    """``((country, category, month), stats)`` -> ``((country, month), output row)``."""
    (country, category, (year, month)), stats = element
    row = {"country": country, "category": category, "order_month": _dt.datetime(year, month, 1), **stats}
    return (country, (year, month)), row


def rank_within(element: tuple[tuple, Iterable[dict]]) -> Iterator[dict]:
    """SQL ``rank()`` by revenue descending within one (country, month)."""
    _, rows = element
    ordered = sorted(rows, key=lambda row: -row["revenue"])
    rank, previous = 0, None
    for position, row in enumerate(ordered, start=1):
        if row["revenue"] != previous:
            rank, previous = position, row["revenue"]
        yield {**row, "revenue_rank": rank}


def run_row_beam(orders: str, products: str, out: str, beam_args: Sequence[str] = ()) -> dict:
    """Run the row-by-row pipeline; writes ``result.parquet`` and ``dlq-*.jsonl`` under ``out``.

    Args:
        orders: the orders CSV (with a header line).
        products: the products CSV (with a header line).
        out: the output directory.
        beam_args: Beam pipeline options (``--direct_num_workers=2`` ...).
    """
    options = PipelineOptions(list(beam_args) or ["--runner=DirectRunner"])
    with beam.Pipeline(options=options) as p:
        dimension = (
            p
            | "read products" >> ReadFromText(products, skip_header_lines=1)
            | "parse products" >> beam.Map(parse_product)
        )
        checked = (
            p
            | "read orders" >> ReadFromText(orders, skip_header_lines=1)
            | "validate" >> beam.ParDo(ParseAndValidate()).with_outputs(ParseAndValidate.DLQ, main="valid")
        )
        (
            checked[ParseAndValidate.DLQ]
            | "dlq json" >> beam.Map(json.dumps)
            | "write dlq" >> WriteToText(os.path.join(out, "dlq"), file_name_suffix=".jsonl")
        )
        (
            checked.valid
            | "derive" >> beam.Map(derive)
            | "sold" >> beam.Filter(lambda order: order["status"] in SOLD_STATUSES)
            | "join products" >> beam.FlatMap(join_product, products=beam.pvalue.AsDict(dimension))
            | "monthly" >> beam.CombinePerKey(MonthlyStats())
            | "by country month" >> beam.Map(to_row)
            | "group" >> beam.GroupByKey()
            | "rank" >> beam.FlatMap(rank_within)
            | "write"
            >> WriteToParquet(
                os.path.join(out, "result"), RESULT_SCHEMA, file_name_suffix=".parquet", num_shards=1, shard_name_template=""
            )
        )
    dlq_rows = 0
    for path in glob.glob(os.path.join(out, "dlq*.jsonl")):
        with open(path, "rb") as handle:
            dlq_rows += sum(1 for _ in handle)
    return {"dlq_rows": dlq_rows}
