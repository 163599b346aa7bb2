"""The data-processor operations: ``python -m beam_etl process OP --input FILE``.

JSON (an array of objects) or NDJSON in; JSON or NDJSON out (by the output file's
extension; stdout when no ``--output``). Each operation reuses the engine's own vectorized
code on one in-memory Arrow table — no second implementation:

| op | what | built on |
|---|---|---|
| ``clean`` | cleaning functions per column (``--ops '{"name": ["trim", "title"]}'``) | ``quality.clean.clean_batch`` |
| ``statistics`` | mean, median, stdev, variance (sample), min, max per numeric column | ``transforms.aggregate_functions.AggregatePlan`` |
| ``outliers`` | rows whose z-score (or ``--method robust_zscore|iqr``) exceeds ``--threshold`` | ``quality.anomaly`` |
| ``aggregate`` | ``--group-by a,b --agg "total=sum(x)" --agg "n=count(*)"`` | ``AggregatePlan`` |
| ``normalize`` | min-max scaling to 0..1 of numeric columns (a constant column becomes 0) | ``AggregatePlan`` min/max |
| ``correlation`` | Pearson correlation matrix of numeric columns (pairwise complete rows) | pandas ``DataFrame.corr`` |
| ``deduplicate`` | exact duplicates, or by ``--key`` keeping ``--keep first|last`` by ``--order-by`` | ``transforms.dedupe.dedupe_mask`` |
| ``fill_missing`` | nulls -> ``--strategy mean|median|mode`` of their column | ``AggregatePlan``, ``pc.mode`` |

Example:
    >>> table = pa.table({"x": [1.0, 2.0, None], "g": ["a", "a", "b"]})
    >>> fill_missing(table, "mean").column("x").to_pylist()
    [1.0, 2.0, 1.5]
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "OPERATIONS",
    "read_records",
    "write_result",
    "statistics",
    "outliers",
    "aggregate",
    "normalize",
    "correlation",
    "deduplicate",
    "fill_missing",
    "clean",
]


def read_records(path: str) -> pa.Table:
    """A table from a JSON array of objects or NDJSON (chosen by content, not extension)."""
    from beam_etl.batch import rows_to_batch

    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{path}: every record must be a JSON object")
    return pa.Table.from_batches([rows_to_batch(rows)]) if rows else pa.table({})


def _numeric(table: pa.Table, columns: Sequence[str] | None) -> list[str]:
    names = list(columns) if columns else [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)]
    unknown = [name for name in names if name not in table.schema.names]
    if unknown:
        raise ValueError(f"unknown column(s): {', '.join(unknown)}; the input has {', '.join(table.schema.names)}")
    return names


def _plan_result(table: pa.Table, group_by: Sequence[str], aggregates: dict[str, str]) -> pa.Table:
    from beam_etl.transforms.aggregate_functions import AggregatePlan

    plan = AggregatePlan(list(group_by), aggregates, input_schema=table.schema)
    return plan.aggregate(table.to_batches())


def statistics(table: pa.Table, columns: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    names = _numeric(table, columns)
    functions = {"mean": "avg", "median": "median", "stdev": "stddev_samp", "variance": "var_samp", "min": "min", "max": "max"}
    aggregates = {f"{name}\x00{stat}": f'{fn}("{name}")' for name in names for stat, fn in functions.items()}
    if not aggregates:
        return {}
    row = _plan_result(table, [], aggregates).to_pylist()[0]
    result: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in row.items():
        name, stat = key.split("\x00")
        result[name][stat] = value
    return result


def outliers(table: pa.Table, columns: Sequence[str] | None = None, threshold: float = 3.0, method: str = "zscore") -> pa.Table:
    from beam_etl.quality.anomaly import column_stats, flag_outliers

    names = _numeric(table, columns)
    if table.num_rows == 0:
        return table
    batch = table.combine_chunks().to_batches()[0]
    mask, reasons = flag_outliers(batch, names, method, threshold, column_stats(batch, names))
    return pa.Table.from_batches([batch.append_column("outlier_reason", reasons).filter(mask)])


def aggregate(table: pa.Table, group_by: Sequence[str], aggs: Sequence[str]) -> pa.Table:
    aggregates = {}
    for item in aggs:
        name, sep, sql = item.partition("=")
        if not sep or not name.strip() or not sql.strip():
            raise ValueError(f"--agg {item!r}: write NAME=FUNCTION(column), e.g. total=sum(amount)")
        aggregates[name.strip()] = sql.strip()
    if not aggregates:
        raise ValueError("aggregate needs at least one --agg NAME=FUNCTION(column)")
    return _plan_result(table, group_by, aggregates)


def normalize(table: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
    names = _numeric(table, columns)
    bounds = _plan_result(table, [], {f"{n}\x00lo": f'min("{n}")' for n in names} | {f"{n}\x00hi": f'max("{n}")' for n in names}).to_pylist()[0] if names else {}
    for name in names:
        low, high = bounds[f"{name}\x00lo"], bounds[f"{name}\x00hi"]
        values = pc.cast(table.column(name), pa.float64())
        if low is None:
            scaled = values
        elif high == low:
            scaled = pc.if_else(pc.is_null(values), pa.scalar(None, pa.float64()), pa.scalar(0.0))
        else:
            scaled = pc.divide(pc.subtract(values, float(low)), float(high - low))
        table = table.set_column(table.schema.get_field_index(name), pa.field(name, pa.float64()), scaled)
    return table


def correlation(table: pa.Table, columns: Sequence[str] | None = None) -> dict[str, dict[str, float | None]]:
    names = _numeric(table, columns)
    frame = table.select(names).to_pandas().astype("float64")
    matrix = frame.corr(method="pearson")
    return {a: {b: (None if math.isnan(v) else float(v)) for b, v in row.items()} for a, row in matrix.to_dict().items()}


def deduplicate(table: pa.Table, key: Sequence[str] | None = None, keep: str = "first", order_by: Sequence[str] | None = None) -> pa.Table:
    from beam_etl.transforms.aggregate_functions import parse_order_by
    from beam_etl.transforms.dedupe import dedupe_mask

    if table.num_rows == 0:
        return table
    mask = dedupe_mask(table.combine_chunks(), list(key) if key else None, parse_order_by(list(order_by) if order_by else None), keep)
    return table.filter(mask)


def fill_missing(table: pa.Table, strategy: str = "mean", columns: Sequence[str] | None = None) -> pa.Table:
    if strategy not in ("mean", "median", "mode"):
        raise ValueError(f"unknown strategy {strategy!r}: use mean, median or mode")
    if strategy == "mode":
        names = list(columns) if columns else list(table.schema.names)
        unknown = [name for name in names if name not in table.schema.names]
        if unknown:
            raise ValueError(f"unknown column(s): {', '.join(unknown)}")
    else:
        names = _numeric(table, columns)
    if strategy == "mode":
        fills = {}
        for name in names:
            modes = pc.mode(table.column(name), n=1)  # ties: the smallest value, deterministic
            fills[name] = modes[0]["mode"].as_py() if len(modes) else None
    else:
        fn = "avg" if strategy == "mean" else "median"
        fills = _plan_result(table, [], {name: f'{fn}("{name}")' for name in names}).to_pylist()[0] if names else {}
    for name in names:
        fill = fills.get(name)
        if fill is None:
            continue
        column = table.column(name)
        if strategy != "mode" and pa.types.is_integer(column.type) and float(fill) != int(fill):
            column = pc.cast(column, pa.float64())  # a fractional mean cannot live in an int column
        filled = pc.fill_null(column, pa.scalar(fill).cast(column.type))
        table = table.set_column(table.schema.get_field_index(name), pa.field(name, filled.type), filled)
    return table


def clean(table: pa.Table, ops: dict[str, list]) -> pa.Table:
    from beam_etl.quality.clean import CleanSpec, clean_batch

    from pydantic import ValidationError

    try:
        CleanSpec.model_validate({"name": "process", "type": "clean", "input": "-", "ops": ops})
    except ValidationError as exc:  # the first problem, in the words the spec validator uses
        raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    if table.num_rows == 0:
        return table
    kept, _dropped = clean_batch(table.combine_chunks().to_batches()[0], ops)
    return pa.Table.from_batches([kept])


def _split(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


#: op name -> function(table, parsed CLI args) -> a table (records) or a JSON-able object.
OPERATIONS: dict[str, Callable[[pa.Table, Any], Any]] = {
    "clean": lambda t, a: clean(t, json.loads(a.ops or "{}")),
    "statistics": lambda t, a: statistics(t, _split(a.columns)),
    "outliers": lambda t, a: outliers(t, _split(a.columns), a.threshold, a.method),
    "aggregate": lambda t, a: aggregate(t, _split(a.group_by) or [], a.agg or []),
    "normalize": lambda t, a: normalize(t, _split(a.columns)),
    "correlation": lambda t, a: correlation(t, _split(a.columns)),
    "deduplicate": lambda t, a: deduplicate(t, _split(a.key), a.keep, _split(a.order_by)),
    "fill_missing": lambda t, a: fill_missing(t, a.strategy, _split(a.columns)),
}


def write_result(result: Any, output: str | None) -> str:
    """Records as JSON (or NDJSON for .ndjson/.jsonl), objects as JSON; returns the text written."""
    from beam_etl.batch import to_json_value

    if isinstance(result, pa.Table):
        records = [to_json_value(row) for row in result.to_pylist()]
        if output and output.endswith((".ndjson", ".jsonl")):
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        else:
            text = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    else:
        text = json.dumps(to_json_value(result), ensure_ascii=False, indent=2) + "\n"
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
    return text
