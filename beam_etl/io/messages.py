"""Message payloads -> rows, for every broker connector: json, avro, csv and raw values.

One decoder per format, all feeding :class:`~beam_etl.io.microbatch.MicroBatcher`, so a
payload that cannot be decoded becomes a DLQ row the same way whether it came from Kafka,
RabbitMQ or SQS.

Example:
    >>> decode = value_decoder(MessageFormat(format="json"))
    >>> decode(b'{"a": 1}')
    [{'a': 1}]
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Callable, Literal

from pydantic import Field

from beam_etl.models import StrictModel

__all__ = ["MessageFormat", "value_decoder", "value_encoder", "DecodeError"]


class DecodeError(ValueError):
    """A payload that is not valid in its declared format."""


class MessageFormat(StrictModel):
    """How message values are encoded (spec keys ``format``, ``avro_schema``, ``csv_columns``)."""

    format: Literal["json", "avro", "csv", "raw"] = "json"
    avro_schema: dict[str, Any] | str | None = Field(default=None, description="inline Avro schema, or a path to an .avsc file")
    csv_columns: list[str] | None = None
    records_path: str | None = None


def _avro_schema(spec: MessageFormat):
    import fastavro

    schema = spec.avro_schema
    if schema is None:
        raise ValueError("format: avro needs avro_schema (inline, or a path to an .avsc file)")
    if isinstance(schema, str):
        with open(schema, encoding="utf-8") as handle:
            schema = json.load(handle)
    return fastavro.parse_schema(schema)


def value_decoder(spec: MessageFormat) -> Callable[[bytes | str | None], list[dict[str, Any]]]:
    """A function from one payload to its records; raises :class:`DecodeError` when invalid."""
    if spec.format == "json":
        from beam_etl.io.rest import json_path

        def decode_json(value):
            try:
                document = json.loads(value)
            except (TypeError, ValueError, UnicodeDecodeError) as exc:
                raise DecodeError(f"not valid JSON: {exc}") from None
            records = json_path(document, spec.records_path)
            records = records if isinstance(records, list) else [records]
            if not all(isinstance(r, dict) for r in records):
                raise DecodeError("a record is not a JSON object")
            return records

        return decode_json
    if spec.format == "avro":
        import fastavro

        schema = _avro_schema(spec)

        def decode_avro(value):
            try:
                return [fastavro.schemaless_reader(io.BytesIO(value), schema)]
            except Exception as exc:  # fastavro raises several types on corrupt bytes
                raise DecodeError(f"not valid Avro for the schema: {exc}") from None

        return decode_avro
    if spec.format == "csv":
        if not spec.csv_columns:
            raise ValueError("format: csv needs csv_columns: [names]")
        columns = spec.csv_columns

        def decode_csv(value):
            text = value.decode("utf-8") if isinstance(value, bytes) else value
            rows = list(csv.reader(io.StringIO(text)))
            if any(len(row) != len(columns) for row in rows):
                raise DecodeError(f"expected {len(columns)} fields per line")
            return [dict(zip(columns, row)) for row in rows]

        return decode_csv

    def decode_raw(value):
        if isinstance(value, bytes):
            try:
                return [{"value": value.decode("utf-8")}]
            except UnicodeDecodeError:
                return [{"value": value.hex()}]
        return [{"value": value}]

    return decode_raw


def value_encoder(spec: MessageFormat) -> Callable[[dict[str, Any]], bytes]:
    """A function from one row to a payload (json or avro)."""
    if spec.format == "avro":
        import fastavro

        schema = _avro_schema(spec)

        def encode_avro(row):
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, schema, row)
            return buffer.getvalue()

        return encode_avro
    if spec.format != "json":
        raise ValueError(f"writing format {spec.format!r} is not supported; use json or avro")
    from beam_etl.batch import to_json_value

    return lambda row: json.dumps(to_json_value(row)).encode()
