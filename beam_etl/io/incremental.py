"""Incremental (watermark) loads: read only rows past the stored watermark, advance it only
after every sink committed.

How a run goes:

1. the driver reads the watermark of (pipeline, source) from the state store;
2. the source's query gets ``WHERE (column, key) > (:wm, :wm_key)`` (or ``column >= :wm``
   without a key: the boundary value is re-read, harmless with an upsert sink);
3. each worker computes, vectorized per batch, the largest (column, key) it read, and leaves
   it as a small JSON file in the run's scratch directory;
4. only if the run succeeded and balanced, the driver merges those candidates and stores the
   new watermark (``RunLifecycle.on_success``). A failed run leaves it where it was, so a
   rerun reads the same rows again.

``python -m beam_etl state show|reset PIPELINE`` inspects and resets watermarks.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "prepare_incremental",
    "incremental_clause",
    "watermark_candidate",
    "merge_candidates",
    "save_candidate",
    "load_candidates",
    "encode_value",
    "decode_value",
]


def encode_value(value: Any) -> Any:
    """A JSON-able, type-tagged form of a watermark value."""
    if isinstance(value, dt.datetime):
        return {"t": "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {"t": "date", "v": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"t": "decimal", "v": str(value)}
    return {"t": "plain", "v": value}


def decode_value(encoded: Any) -> Any:
    if not isinstance(encoded, dict) or "t" not in encoded:
        return encoded
    kind, value = encoded["t"], encoded["v"]
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "decimal":
        return decimal.Decimal(value)
    return value


def _comparable(value: Any) -> Any:
    # Aware and naive datetimes do not compare; watermarks of one column are all one kind,
    # but normalise defensively so a merge never raises.
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


def watermark_candidate(batch: pa.RecordBatch, spec) -> dict[str, Any] | None:
    """The largest (column, key) in ``batch`` — vectorized: a max, then a max among ties."""
    if batch.num_rows == 0 or spec.column not in batch.schema.names:
        return None
    column = batch.column(spec.column)
    top = pc.max(column)
    if not top.is_valid:
        return None
    candidate: dict[str, Any] = {"value": top.as_py()}
    if spec.key:
        at_top = batch.filter(pc.equal(column, top))
        candidate["key"] = pc.max(at_top.column(spec.key)).as_py()
    return candidate


def merge_candidates(a: dict | None, b: dict | None) -> dict | None:
    if a is None:
        return b
    if b is None:
        return a
    key_a = (_comparable(a["value"]), a.get("key"))
    key_b = (_comparable(b["value"]), b.get("key"))
    try:
        return a if key_a >= key_b else b
    except TypeError:  # a None key on one side
        return a if key_a[0] >= key_b[0] else b


def save_candidate(scratch_dir: str, source: str, candidate: dict) -> None:
    """Leave a worker's candidate where the driver will find it (any Beam filesystem)."""
    from apache_beam.io.filesystems import FileSystems

    directory = FileSystems.join(scratch_dir, "watermarks", source)
    if "://" not in directory:
        os.makedirs(directory, exist_ok=True)
    path = FileSystems.join(directory, f"{uuid.uuid4().hex}.json")
    payload = json.dumps({"value": encode_value(candidate["value"]), "key": encode_value(candidate.get("key"))})
    with FileSystems.create(path) as handle:
        handle.write(payload.encode())


def load_candidates(scratch_dir: str, source: str) -> dict | None:
    from apache_beam.io.filesystems import FileSystems

    pattern = FileSystems.join(scratch_dir, "watermarks", source, "*.json")
    merged = None
    for match in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            data = json.loads(handle.read())
        candidate = {"value": decode_value(data["value"]), "key": decode_value(data.get("key"))}
        merged = merge_candidates(merged, candidate)
    return merged


def incremental_clause(db, spec, watermark: dict) -> tuple[str, dict[str, Any]]:
    """SQL (on the quoted column names) and bound parameters reading past ``watermark``."""
    column = db.quote(spec.column)
    params = {"beam_etl_wm": watermark["value"]}
    if spec.key and watermark.get("key") is not None:
        params["beam_etl_wm_key"] = watermark["key"]
        key = db.quote(spec.key)
        # Row-value comparison: rows tying the watermark's column value are read only if
        # their key is greater, so nothing at the boundary is skipped or read twice.
        return f"({column}, {key}) > (%(beam_etl_wm)s, %(beam_etl_wm_key)s)", params
    return f"{column} >= %(beam_etl_wm)s", params


def prepare_incremental(spec, ctx) -> dict | None:
    """Driver side: the current watermark, and the hook that advances it after success."""
    from beam_etl.state import StateStore

    store = StateStore(ctx.state_url)
    try:
        stored = store.get_watermark(ctx.pipeline_name, ctx.name)
    finally:
        store.close()
    if stored is not None:
        watermark = {"value": decode_value(stored.get("value")), "key": decode_value(stored.get("key"))}
    elif spec.incremental.initial is not None:
        watermark = {"value": spec.incremental.initial, "key": None}
    else:
        watermark = None

    def advance() -> None:
        if ctx.lifecycle is None or ctx.lifecycle.scratch_dir is None:
            return
        candidate = load_candidates(ctx.lifecycle.scratch_dir, ctx.name)
        if candidate is None:
            return  # nothing new was read: the watermark stays
        merged = merge_candidates(watermark, candidate) if watermark else candidate
        store = StateStore(ctx.state_url)
        try:
            store.set_watermark(
                ctx.pipeline_name,
                ctx.name,
                {"value": encode_value(merged["value"]), "key": encode_value(merged.get("key")), "column": spec.incremental.column},
            )
        finally:
            store.close()

    if ctx.lifecycle is not None:
        ctx.lifecycle.on_success(advance)
    return watermark
