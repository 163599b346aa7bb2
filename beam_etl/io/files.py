"""File sources and sinks: CSV, JSON, NDJSON, Parquet, Avro, Excel in; CSV, NDJSON, JSON,
Parquet, Avro out — on any filesystem Beam knows: local, ``s3://``, ``gs://``, ``azure://``
(endpoint and credentials from a ``storage:`` block, Beam options or the environment; see
:mod:`beam_etl.io.cloud`).

Spec entries::

    sources:
      orders:    {type: csv, path: data/orders/, delimiter: ";", schema: {id: int64, amount: float64}}
      events:    {type: ndjson, path: "logs/*.jsonl.gz"}
      customers: {type: json, path: customers.json}            # an array, JSON lines or one document
      sales:     {type: parquet, path: warehouse/sales/, columns: [id, amount]}
      budget:    {type: excel, path: budget.xlsx, sheet: "2024"}
    sinks:
      out:  {type: parquet, input: kept, path: out/kept/, mode: overwrite, compression: zstd}
      rep:  {type: csv, input: by_country, path: out/report.csv, single_file: true}

Reading: large CSV/NDJSON files are split into ~32 MiB byte ranges aligned to line starts
(the CSV header re-applied to each; a CSV whose quoted values contain newlines must set
``split: false``), Parquet into row groups; only these small descriptors are shuffled to
workers, each parsed vectorized into batches of at most ``batch_rows`` rows. Malformed input
(bad quoting, wrong field counts, invalid JSON lines, invalid UTF-8) and values that do not
fit the declared ``schema`` become DLQ rows with ``source = "path:line"``; a truncated or
corrupt Parquet/Avro file is a :class:`~beam_etl.errors.SourceError` naming the file.

Writing: temp files renamed to ``part-00000-of-00002.<ext>`` when every write succeeded;
``mode: overwrite | append | error_if_exists``. A sink builder returns
``StepOutputs(main=<final file names>, dlq=<rows the format could not hold>)``; the graph
builder flattens that ``dlq`` into the pipeline's DLQ.

The PTransforms (:class:`ReadFromFiles`, :class:`ReadCsv`, ..., :class:`WriteToFiles`) live in
:mod:`beam_etl.io.files_read` / :mod:`beam_etl.io.files_write` and are importable from here;
they are loaded on first use so that validating a spec does not import Beam.

Example:
    >>> from beam_etl.io.files import ReadCsv, WriteToFiles  # doctest: +SKIP
    >>> with beam.Pipeline() as p:  # doctest: +SKIP
    ...     read = p | ReadCsv("in/*.csv", schema={"id": "int64"})
    ...     read.main | WriteToFiles("out/", "parquet")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from beam_etl.io.cloud import StorageOptions, check_storage
from beam_etl.models import SinkModel, SourceModel, schema_from_spec
from beam_etl.registry import register_sink, register_source

if TYPE_CHECKING:
    from beam_etl.steps import BuildContext, StepOutputs

__all__ = [
    "CsvSource",
    "JsonSource",
    "NdjsonSource",
    "ParquetSource",
    "AvroSource",
    "ExcelSource",
    "CsvSink",
    "NdjsonSink",
    "JsonSink",
    "ParquetSink",
    "AvroSink",
    "ReadFromFiles",
    "ReadCsv",
    "ReadJson",
    "ReadNdjson",
    "ReadParquet",
    "ReadAvro",
    "ReadExcel",
    "WriteToFiles",
    "match_files",
]

_LAZY = {
    "ReadFromFiles": "beam_etl.io.files_read",
    "ReadCsv": "beam_etl.io.files_read",
    "ReadJson": "beam_etl.io.files_read",
    "ReadNdjson": "beam_etl.io.files_read",
    "ReadParquet": "beam_etl.io.files_read",
    "ReadAvro": "beam_etl.io.files_read",
    "ReadExcel": "beam_etl.io.files_read",
    "match_files": "beam_etl.io.files_read",
    "WriteToFiles": "beam_etl.io.files_write",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'beam_etl.io.files' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------- source models


class _FileSource(SourceModel):
    """A file, a directory, a glob, or a list of them; on an object store, ``storage`` says how
    to reach it (see :mod:`beam_etl.io.cloud`)."""

    path: str | list[str]
    storage: StorageOptions | None = None

    @model_validator(mode="after")
    def _check_storage(self) -> "_FileSource":
        check_storage(self._paths(), self.storage)  # raises ValueError with the fix
        return self

    def _paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    def _options(self) -> dict[str, Any]:
        """Format options for :class:`ReadFromFiles` (the fields beyond the common ones)."""
        common = {"type", "schema_", "batch_rows", "description", "path", "storage"}
        return {name: getattr(self, name) for name in type(self).model_fields if name not in common}

    def known_schema(self) -> pa.Schema | None:
        """The declared schema plus what the first local file's header/footer/first rows say.

        Reads at most the first MiB of one file; None for remote paths (their other columns are
        not known before the run) or on any error.
        """
        try:
            declared = schema_from_spec(self.schema_)
        except ValueError:
            return None
        if any("://" in path for path in self._paths()):
            return None
        try:
            from beam_etl.io import files_formats as fmt

            first = next((files[0] for files in map(fmt.local_data_files, self._paths()) if files), None)
            if first is None:
                return declared
            inferred = fmt.sample_schema(self.type, _local_open, first, **self._sample_options(fmt))
            options = self._options()
            if inferred is not None and options.get("columns"):
                inferred = pa.schema([f for f in inferred if f.name in set(options["columns"])])
            return fmt.merge_schemas(declared, inferred)
        except Exception:  # a validator hint only: unreadable files are reported when the job runs
            return declared

    def _sample_options(self, fmt) -> dict[str, Any]:
        return {}


def _local_open(path: str, compressed: bool = True):
    """Open a local file, decompressing by extension (.gz, .bz2, .zst) for text formats."""
    if compressed:
        if path.endswith(".gz"):
            import gzip

            return gzip.open(path, "rb")
        if path.endswith(".bz2"):
            import bz2

            return bz2.open(path, "rb")
        if path.endswith((".zst", ".zstd")):
            import zstandard

            return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


class CsvSource(_FileSource):
    """``type: csv`` — see :class:`beam_etl.io.files_formats.CsvOptions` for the options."""

    type: Literal["csv"]
    delimiter: str = ","
    quote: str | None = '"'
    header: bool = True
    encoding: str = "utf-8"
    null_values: list[str] = Field(default_factory=lambda: [""])
    skip_rows: int = Field(default=0, ge=0)
    split: bool = Field(default=True, description="false for files whose quoted values contain newlines")

    @model_validator(mode="after")
    def _check_options(self) -> "CsvSource":
        from beam_etl.io.files_formats import CsvOptions

        CsvOptions(**self._csv_kwargs())  # raises ValueError with the fix
        return self

    def _csv_kwargs(self) -> dict[str, Any]:
        return {
            "delimiter": self.delimiter,
            "quote": self.quote,
            "header": self.header,
            "encoding": self.encoding,
            "null_values": tuple(self.null_values),
            "skip_rows": self.skip_rows,
            "split": self.split,
        }

    def _sample_options(self, fmt) -> dict[str, Any]:
        return {"csv_options": fmt.CsvOptions(**self._csv_kwargs())}


class JsonSource(_FileSource):
    """``type: json`` — a JSON array of objects, one object per line, or one document
    (``records_path: data.items`` picks the record array inside it; read whole)."""

    type: Literal["json"]
    records_path: str | None = None

    def _sample_options(self, fmt) -> dict[str, Any]:
        return {"records_path": self.records_path}


class NdjsonSource(_FileSource):
    """``type: ndjson`` — one JSON object per line (``.jsonl``), split into byte ranges."""

    type: Literal["ndjson"]


class ParquetSource(_FileSource):
    """``type: parquet`` — split by row groups; ``columns`` reads only those columns."""

    type: Literal["parquet"]
    columns: list[str] | None = None


class AvroSource(_FileSource):
    """``type: avro`` — Avro container files (fastavro), one file per worker task."""

    type: Literal["avro"]


class ExcelSource(_FileSource):
    """``type: excel`` — one sheet of ``.xlsx`` workbooks (openpyxl, streamed)."""

    type: Literal["excel"]
    sheet: str | int | None = None
    header: bool = True
    skip_rows: int = Field(default=0, ge=0)

    def _sample_options(self, fmt) -> dict[str, Any]:
        return {"sheet": self.sheet, "header": self.header, "skip_rows": self.skip_rows}


def _build_source(spec: _FileSource, root: Any, ctx: "BuildContext") -> "StepOutputs":
    from beam_etl.io.files_read import ReadFromFiles

    paths = [ctx.resolve_input(p) for p in spec._paths()]
    read = ReadFromFiles(
        paths if len(paths) > 1 else paths[0],
        spec.type,
        schema=schema_from_spec(spec.schema_),
        batch_rows=spec.batch_rows or ctx.batch_rows,
        name=ctx.name,
        storage=spec.storage,
        **spec._options(),
    )
    return root | ctx.label() >> read


@register_source("csv", CsvSource)
def build_csv_source(spec: CsvSource, root: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: csv`` -> :class:`ReadFromFiles` (format ``csv``)."""
    return _build_source(spec, root, ctx)


@register_source("json", JsonSource)
def build_json_source(spec: JsonSource, root: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: json`` -> :class:`ReadFromFiles` (format ``json``)."""
    return _build_source(spec, root, ctx)


@register_source("ndjson", NdjsonSource)
def build_ndjson_source(spec: NdjsonSource, root: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: ndjson`` -> :class:`ReadFromFiles` (format ``ndjson``)."""
    return _build_source(spec, root, ctx)


@register_source("parquet", ParquetSource)
def build_parquet_source(spec: ParquetSource, root: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: parquet`` -> :class:`ReadFromFiles` (format ``parquet``)."""
    return _build_source(spec, root, ctx)


@register_source("avro", AvroSource)
def build_avro_source(spec: AvroSource, root: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: avro`` -> :class:`ReadFromFiles` (format ``avro``)."""
    return _build_source(spec, root, ctx)


@register_source("excel", ExcelSource)
def build_excel_source(spec: ExcelSource, root: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: excel`` -> :class:`ReadFromFiles` (format ``excel``)."""
    return _build_source(spec, root, ctx)


# --------------------------------------------------------------------------- sink models


class _FileSink(SinkModel):
    """A directory of ``part-*`` shards, or one file with ``single_file: true``/``num_shards: 1``."""

    accepts_many_inputs: ClassVar[bool] = True  # WriteToFiles writes each input in place

    path: str
    mode: Literal["overwrite", "append", "error_if_exists"] = "overwrite"
    num_shards: int | None = Field(default=None, gt=0)
    single_file: bool = False
    compression: str | None = None
    storage: StorageOptions | None = None

    @model_validator(mode="after")
    def _check_sink(self) -> "_FileSink":
        from beam_etl.io.files_formats import check_compression

        check_compression(self.type, self.compression)
        check_storage([self.path], self.storage)
        if self.writes_single_file() and self.mode == "append":
            raise ValueError("mode append adds files next to the old ones: give a directory path (ending in '/'), not a single file")
        if self.single_file and self.num_shards not in (None, 1):
            raise ValueError("single_file writes one file: drop num_shards or set it to 1")
        return self

    def writes_single_file(self) -> bool:
        """``single_file: true``, or ``num_shards: 1`` with a path that names a file (has an extension)."""
        if self.single_file:
            return True
        if self.num_shards == 1 and not self.path.endswith("/"):
            last = self.path.rstrip("/").rsplit("/", 1)[-1]
            return "." in last.lstrip(".")
        return False

    def _options(self) -> dict[str, Any]:
        common = {"type", "input", "description", "path", "mode", "num_shards", "single_file", "compression", "storage"}
        return {name: getattr(self, name) for name in type(self).model_fields if name not in common}


class CsvSink(_FileSink):
    type: Literal["csv"]
    delimiter: str = ","
    header: bool = True

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1 or value in "\r\n":
            raise ValueError(f"delimiter must be one character other than a newline, got {value!r}")
        return value


class NdjsonSink(_FileSink):
    type: Literal["ndjson"]


class JsonSink(_FileSink):
    type: Literal["json"]


class ParquetSink(_FileSink):
    type: Literal["parquet"]
    row_group_rows: int = Field(default=131_072, gt=0)


class AvroSink(_FileSink):
    type: Literal["avro"]


def _build_sink(spec: _FileSink, pcoll: Any, ctx: "BuildContext") -> "StepOutputs":
    from beam_etl.io.files_write import WriteToFiles

    single = spec.writes_single_file()
    write = WriteToFiles(
        ctx.resolve_output(spec.path),
        spec.type,
        mode=spec.mode,
        num_shards=None if single else spec.num_shards,
        single_file=single,
        compression=spec.compression,
        name=ctx.name,
        run_id=ctx.job_id if ctx.job_id not in (None, "", "local") else None,
        storage=spec.storage,
        **spec._options(),
    )
    return pcoll | ctx.label() >> write


@register_sink("csv", CsvSink)
def build_csv_sink(spec: CsvSink, pcoll: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: csv`` sink -> :class:`WriteToFiles`; returns ``StepOutputs(main=files, dlq=unwritable rows)``."""
    return _build_sink(spec, pcoll, ctx)


@register_sink("ndjson", NdjsonSink)
def build_ndjson_sink(spec: NdjsonSink, pcoll: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: ndjson`` sink (also the default DLQ sink) -> :class:`WriteToFiles`."""
    return _build_sink(spec, pcoll, ctx)


@register_sink("json", JsonSink)
def build_json_sink(spec: JsonSink, pcoll: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: json`` sink (one JSON array per file) -> :class:`WriteToFiles`."""
    return _build_sink(spec, pcoll, ctx)


@register_sink("parquet", ParquetSink)
def build_parquet_sink(spec: ParquetSink, pcoll: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: parquet`` sink -> :class:`WriteToFiles`."""
    return _build_sink(spec, pcoll, ctx)


@register_sink("avro", AvroSink)
def build_avro_sink(spec: AvroSink, pcoll: Any, ctx: "BuildContext") -> "StepOutputs":
    """``type: avro`` sink -> :class:`WriteToFiles`; rows Avro cannot hold go to the DLQ."""
    return _build_sink(spec, pcoll, ctx)
