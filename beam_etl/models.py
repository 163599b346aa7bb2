"""Base pydantic models for spec entries; each registered type subclasses one of these.

Kept free of Beam imports so ``python -m beam_etl validate`` stays quick.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from beam_etl.errors import SpecIssue

__all__ = [
    "StrictModel",
    "StepModel",
    "SourceModel",
    "SinkModel",
    "DlqModel",
    "OnError",
    "TSchema",
    "parse_type",
    "schema_from_spec",
]

OnError = Literal["dlq", "fail", "drop", "null", "flag"]

#: A declared schema: column name -> Arrow type name (``int64``, ``timestamp[us, tz=UTC]`` ...).
TSchema = dict[str, str]

_TYPE_ALIASES = {
    "int": "int64",
    "integer": "int64",
    "bigint": "int64",
    "long": "int64",
    "float": "float64",
    "double": "float64",
    "str": "string",
    "text": "string",
    "varchar": "string",
    "boolean": "bool_",
    "bool": "bool_",
    "date": "date32",
    "datetime": "timestamp[us]",
    "timestamp": "timestamp[us]",
}


# Zero-argument Arrow type factories accepted by name (a whitelist: no getattr on user text).
_PRIMITIVES = frozenset(
    "null bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 "
    "string large_string utf8 binary large_binary date32 date64".split()
)


def parse_type(name: str) -> pa.DataType:
    """An Arrow type from its name (``int64``, ``decimal128(10, 2)``, ``timestamp[us, tz=UTC]``).

    Raises ValueError with the accepted forms when the name is unknown.
    """
    text = name.strip()
    text = _TYPE_ALIASES.get(text.lower(), text)
    if text.startswith("decimal"):
        inner = text[text.index("(") + 1 : text.rindex(")")] if "(" in text else "38, 9"
        precision, scale = (int(part) for part in inner.split(","))
        return pa.decimal128(precision, scale)
    if text.startswith("timestamp"):
        unit, tz = "us", None
        if "[" in text:
            parts = [p.strip() for p in text[text.index("[") + 1 : text.rindex("]")].split(",")]
            unit = parts[0]
            for part in parts[1:]:
                if part.startswith("tz="):
                    tz = part[3:]
        return pa.timestamp(unit, tz=tz)
    if text.startswith("list<") and text.endswith(">"):
        return pa.list_(parse_type(text[5:-1]))
    if text in _PRIMITIVES:
        return getattr(pa, text)()
    raise ValueError(
        f"unknown type '{name}'; use an Arrow type name such as int64, float64, string, bool, "
        "date32, timestamp[us], timestamp[us, tz=UTC], decimal128(10, 2)"
    )


def schema_from_spec(schema: TSchema | None) -> pa.Schema | None:
    if not schema:
        return None
    return pa.schema([pa.field(name, parse_type(type_name)) for name, type_name in schema.items()])


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a spec must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)


class StepModel(StrictModel):
    #: True for steps whose output rows are not input rows (aggregate, join, pivot, dedupe):
    #: they count input rows absorbed into outputs as ``rows_merged``, and the run summary
    #: balances ``rows_in = rows_merged + rows_dlq + rows_filtered`` for them.
    reshapes: ClassVar[bool] = False

    name: str
    type: str
    input: str | list[str] | None = None
    description: str | None = None

    def inputs(self) -> list[str]:
        """Names of the sources/steps this step reads (in order)."""
        if self.input is None:
            return []
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def input_fields(self) -> list[str]:
        """Spec field names that hold references to other steps (for error paths)."""
        return ["input"]

    def check(self, schemas: list[pa.Schema | None], path: str) -> list[SpecIssue]:
        """Column checks against the input schemas where known (None = unknown)."""
        return []

    def output_schema(self, schemas: list[pa.Schema | None]) -> pa.Schema | None:
        """The schema of the main output when it can be known before running."""
        return None


class SourceModel(StrictModel):
    type: str
    schema_: TSchema | None = Field(default=None, alias="schema")
    batch_rows: int | None = Field(default=None, gt=0)
    description: str | None = None

    def known_schema(self) -> pa.Schema | None:
        """The declared schema, or one cheaply discovered (file header) before running."""
        return schema_from_spec(self.schema_)


class SinkModel(StrictModel):
    type: str
    input: str
    description: str | None = None

    #: The sink's builder accepts a tuple of PCollections and writes each where it is made
    #: (no Flatten): the DLQ, fed by every step, then needs no stage that holds all its rows.
    accepts_many_inputs: ClassVar[bool] = False


class DlqModel(StrictModel):
    """Spec block ``dlq:`` — files (``ndjson``/``parquet`` under ``path``) or a Kafka topic.

    ``{type: kafka, bootstrap_servers, topic}`` produces each DLQ row as a JSON message
    (through the registered ``kafka`` sink).
    """

    type: Literal["ndjson", "parquet", "kafka"] = "ndjson"
    path: str = "dlq/"
    bootstrap_servers: str | None = None
    topic: str | None = None
    max_error_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="fail the run when more than this fraction of source rows end in the DLQ",
    )

    @model_validator(mode="after")
    def _kafka_needs_a_topic(self) -> "DlqModel":
        if self.type == "kafka" and not (self.bootstrap_servers and self.topic):
            raise ValueError("a kafka DLQ needs bootstrap_servers and topic, e.g. {type: kafka, bootstrap_servers: 'localhost:9092', topic: dlq}")
        if self.type != "kafka" and (self.bootstrap_servers or self.topic):
            raise ValueError(f"bootstrap_servers/topic belong to a kafka DLQ; a {self.type} DLQ takes path")
        return self


def model_dump_public(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True)
