"""Writing Arrow batches to files atomically: temp files, then deterministic names.

How a write runs (the scheme of Beam's own file sinks, for batches):

1. Each bundle (or, with ``num_shards``, each shard after a ``GroupByKey``) writes its batches
   to files in a hidden temp directory inside the target (``.beam_etl-temp-<token>/``), so a
   half-finished run is never visible and directory readers skip it.
2. One finalize step, run once after every write succeeded (a ``Create([None])`` with the
   temp file list as side input, so it also runs for an empty input), renames the temp files
   to ``part-00000-of-00003.<ext>`` (``part-<run_id>-00000-of-00003.<ext>`` for ``append``),
   then — for ``overwrite`` — deletes the files of earlier runs that were not replaced, and
   removes the temp directory. Old outputs are removed only after the new ones are in place.
3. ``error_if_exists`` raises :class:`~beam_etl.errors.SinkError` when the pipeline is built,
   before anything runs, if the target already has data files.

A batch (or the rows of one) that the format cannot hold — a type Avro has no equivalent
for, a uint64 above Avro's long range — is not written: it leaves on the ``dlq`` output of
the returned :class:`~beam_etl.steps.StepOutputs` (``error_type`` ``<format>.write``), which
the graph builder flattens into the DLQ. Counters: ``rows_in`` rows received, ``rows_out``
rows written, ``rows_dlq`` rows rejected.

Example:
    >>> import apache_beam as beam
    >>> with beam.Pipeline() as p:  # doctest: +SKIP
    ...     batches = (p | ReadFromFiles("in.csv", "csv")).main
    ...     written = batches | WriteToFiles("out/", "parquet", mode="overwrite")
    ...     written.main  # the final file names
"""

from __future__ import annotations

import io
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import AsList, PCollection, TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from beam_etl.batch import align_to_schema
from beam_etl.dlq import dlq_batch
from beam_etl.errors import SinkError
from beam_etl.io import cloud
from beam_etl.io import files_formats as fmt
from beam_etl.steps import StepCounters, StepOutputs

__all__ = ["WriteToFiles", "MODES", "TEMP_PREFIX"]

MODES = ("overwrite", "append", "error_if_exists")
TEMP_PREFIX = ".beam_etl-temp-"

cloud.register_filesystems()  # azure:// in Beam's FileSystems, here and on every worker

#: Options each format accepts (besides mode, num_shards, single_file, compression, name).
FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    "csv": ("delimiter", "header"),
    "ndjson": (),
    "json": (),
    "parquet": ("row_group_rows",),
    "avro": (),
}

_TEXT_COMPRESSION = {
    None: CompressionTypes.UNCOMPRESSED,
    "none": CompressionTypes.UNCOMPRESSED,
    "gzip": CompressionTypes.GZIP,
    "gz": CompressionTypes.GZIP,
    "bzip2": CompressionTypes.BZIP2,
    "bz2": CompressionTypes.BZIP2,
    "zstd": CompressionTypes.ZSTD,
    "deflate": CompressionTypes.DEFLATE,
}


@dataclass(frozen=True)
class _Target:
    """Where a sink writes and how its files are named."""

    path: str
    format: str
    mode: str
    single_file: bool
    compression: str | None
    run_id: str
    token: str

    @property
    def directory(self) -> str:
        if self.single_file:
            return FileSystems.split(self.path)[0] or "."
        return self.path.rstrip("/") or "/"

    @property
    def temp_dir(self) -> str:
        return FileSystems.join(self.directory, TEMP_PREFIX + self.token)

    @property
    def extension(self) -> str:
        return fmt.file_extension(self.format, self.compression)

    @property
    def stream_compression(self) -> str:
        if self.format in ("csv", "ndjson", "json"):
            return _TEXT_COMPRESSION[self.compression.lower() if self.compression else None]
        return CompressionTypes.UNCOMPRESSED  # Parquet/Avro compress inside the file

    def final_name(self, index: int, total: int) -> str:
        if self.single_file:
            return self.path
        prefix = f"part-{self.run_id}-" if self.mode == "append" else "part-"
        return FileSystems.join(self.directory, f"{prefix}{index:05d}-of-{total:05d}{self.extension}")

    def existing_files(self) -> list[str]:
        """Data files already at the target (hidden files and temp directories excluded)."""
        if self.single_file:
            return [self.path] if FileSystems.exists(self.path) else []
        if "://" not in self.directory and not os.path.isdir(self.directory):
            return []
        metadata = FileSystems.match([self.directory + "/*"])[0].metadata_list
        found = []
        for meta in metadata:
            name = meta.path.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(".") or ("://" not in meta.path and os.path.isdir(meta.path)):
                continue
            found.append(meta.path)
        return sorted(found)


@dataclass(frozen=True)
class _TempFile:
    shard: int
    path: str
    rows: int


class _WriteStream(io.RawIOBase):
    """A plain writable stream over Beam's file objects (its compressed files lack what
    pyarrow's writers check: ``closed``, ``tell``)."""

    def __init__(self, raw: Any):
        super().__init__()
        self._raw = raw
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        self._raw.write(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _FileSet:
    """The temp files one worker writes: one open file at a time, a new one when the schema changes."""

    def __init__(self, target: _Target, options: Mapping[str, Any], allow_rollover: bool):
        self._target = target
        self._options = options
        self._writer_cls = fmt.make_writer(target.format)
        self._allow_rollover = allow_rollover
        self._writer: fmt.FileWriter | None = None
        self._path: str | None = None
        self.done: list[tuple[str, int]] = []

    def prepare(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pa.RecordBatch | None, str]:
        return self._writer_cls.prepare(batch, self._options)

    def fits(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """``batch`` in the open file's schema, or None when it cannot be made to fit."""
        if self._writer is None or batch.schema == self._writer.schema:
            return batch
        if set(batch.schema.names) <= set(self._writer.schema.names):
            try:
                return align_to_schema(batch, self._writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                return None
        return None

    def write(self, batch: pa.RecordBatch) -> str | None:
        """Write ``batch``; returns a reason when it cannot go into this (single) file."""
        fitted = self.fits(batch)
        if fitted is None:
            if not self._allow_rollover:
                return (
                    f"this batch's columns {batch.schema.names} do not match the file's {self._writer.schema.names}; "
                    "a single-file sink needs one schema (select/cast the columns first)"
                )
            self.close()
            fitted = batch
        if self._writer is None:
            self._path = FileSystems.join(self._target.temp_dir, uuid.uuid4().hex + self._target.extension)
            stream = _WriteStream(FileSystems.create(self._path, compression_type=self._target.stream_compression))
            self._writer = self._writer_cls(stream, fitted.schema, self._options)
        self._writer.write(fitted)
        return None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.done.append((self._path, self._writer.rows))
            self._writer, self._path = None, None


class _WriteMixin:
    """Shared by the bundle writer and the shard writer: prepare, DLQ, count."""

    def _setup(self, target: _Target, options: Mapping[str, Any], name: str) -> None:
        self._target, self._options, self._name = target, options, name

    def setup(self) -> None:
        self._counters = StepCounters("sink", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def _write_batch(self, files: _FileSet, batch: pa.RecordBatch) -> Iterator[TaggedOutput]:
        counters = self._counters
        counters.rows_in.inc(batch.num_rows)
        if batch.num_rows == 0:
            return
        good, bad, reason = files.prepare(batch)
        if bad is not None and bad.num_rows:
            yield self._reject(bad, reason)
        if good.num_rows:
            problem = self._store(files.write, good)
            if problem is not None:
                yield self._reject(good, problem)
            else:
                counters.rows_out.inc(good.num_rows)

    def _store(self, action: Any, *args: Any) -> Any:
        """Run a temp-file write or close; a storage failure (a connection still dropped after
        the client's retries, a denied upload) becomes one :class:`SinkError` naming the cause."""
        try:
            return action(*args)
        except SinkError:
            raise
        except Exception as exc:
            raise _write_failed(self._target, self._name, exc) from exc

    def _reject(self, rows: pa.RecordBatch, reason: str) -> TaggedOutput:
        self._counters.rows_dlq.inc(rows.num_rows)
        return TaggedOutput(
            "dlq", dlq_batch(rows, step=self._name, error_type=f"{self._target.format}.write", error_message=reason, source=self._target.path)
        )


def _write_failed(target: _Target, name: str, exc: BaseException) -> SinkError:
    # The first exception of the chain says what happened: Beam's object-store clients re-raise
    # (and sometimes fail while wrapping) the SDK's error, e.g. a reset connection.
    root, seen = exc, {id(exc)}
    while (root.__cause__ or root.__context__) is not None and id(root.__cause__ or root.__context__) not in seen:
        root = root.__cause__ or root.__context__
        seen.add(id(root))
    text = (str(root).strip().splitlines() or [""])[0]
    return SinkError(
        f"sink '{name}': writing a temp file under '{target.temp_dir}' failed ({type(root).__name__}: {text}); "
        f"nothing was renamed into '{target.path}'. Fix the cause (is the store reachable?) and rerun; "
        "the hidden temp directory can be deleted"
    )


class _WriteBundleFn(_WriteMixin, beam.DoFn):
    """Each bundle writes its own temp file(s); the file names leave in ``finish_bundle``."""

    def __init__(self, target: _Target, options: Mapping[str, Any], name: str):
        self._setup(target, options, name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce
        self._files = _FileSet(self._target, self._options, allow_rollover=True)

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        yield from self._write_batch(self._files, batch)

    def finish_bundle(self) -> Iterator[Any]:
        self._store(self._files.close)
        for path, rows in self._files.done:
            yield GlobalWindows.windowed_value(_TempFile(0, path, rows))


class _AssignShardFn(beam.DoFn):
    """Round robin over ``num_shards`` keys from a random start (spreads batches evenly)."""

    def __init__(self, num_shards: int):
        self._num_shards = num_shards

    def start_bundle(self) -> None:
        self._next = random.randrange(self._num_shards)

    def process(self, batch: pa.RecordBatch) -> Iterator[tuple[int, pa.RecordBatch]]:
        key = self._next % self._num_shards
        self._next += 1
        yield key, batch


class _WriteShardFn(_WriteMixin, beam.DoFn):
    """All batches of one shard key into one temp file (more only when the schema changes)."""

    def __init__(self, target: _Target, options: Mapping[str, Any], name: str):
        self._setup(target, options, name)

    def process(self, element: tuple[int, Iterable[pa.RecordBatch]]) -> Iterator[Any]:
        shard, batches = element
        files = _FileSet(self._target, self._options, allow_rollover=not self._target.single_file)
        for batch in batches:
            yield from self._write_batch(files, batch)
        self._store(files.close)
        for path, rows in files.done:
            yield _TempFile(shard, path, rows)


class _FinalizeFn(beam.DoFn):
    """Once, after all writes: rename temp files to final names, drop stale outputs, clean up."""

    def __init__(self, target: _Target):
        self._target = target

    def process(self, _: Any, temp_files: list[_TempFile]) -> Iterator[str]:
        target = self._target
        ordered = sorted(temp_files, key=lambda t: (t.shard, t.path))
        finals = [target.final_name(i, len(ordered)) for i in range(len(ordered))]
        stale: list[str] = []
        if target.mode == "overwrite":
            keep = {os.path.normpath(f) if "://" not in f else f for f in finals}
            for existing in target.existing_files():
                key = os.path.normpath(existing) if "://" not in existing else existing
                if key not in keep:
                    stale.append(existing)
        sources, destinations = [], []
        for temp, final in zip(ordered, finals):
            if FileSystems.exists(temp.path):
                sources.append(temp.path)
                destinations.append(final)
            elif not FileSystems.exists(final):  # a retried finalize already moved it
                raise SinkError(f"sink temp file '{temp.path}' vanished before it was renamed to '{final}'")
        if sources:
            FileSystems.rename(sources, destinations)
        if stale:
            FileSystems.delete(stale)
        if FileSystems.exists(target.temp_dir) or "://" in target.temp_dir:
            try:
                FileSystems.delete([target.temp_dir])
            except Exception:  # nothing was ever written there (no temp directory to delete)
                pass
        if not finals and "://" not in target.directory:
            os.makedirs(target.directory, exist_ok=True)
        yield from finals


def _streaming(pcoll: PCollection) -> bool:
    """True for an unbounded input or a ``--streaming`` pipeline (the batch finalize never runs there)."""
    from apache_beam.options.pipeline_options import StandardOptions

    return not pcoll.is_bounded or bool(pcoll.pipeline.options.view_as(StandardOptions).streaming)


def check_target(target: _Target, name: str) -> None:
    """Raise :class:`SinkError` before the run when the target cannot be written as asked:
    ``error_if_exists`` and the target has files, or a directory target that is a file."""
    if not target.single_file and "://" not in target.path and os.path.isfile(target.path):
        raise SinkError(
            f"sink '{name}': '{target.path}' is a file, but this sink writes a directory of shards; "
            "give a directory path, or set single_file: true to write one file"
        )
    if target.mode != "error_if_exists":
        return
    existing = target.existing_files()
    if existing:
        shown = ", ".join(existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise SinkError(
            f"sink '{name}': '{target.path}' already has files ({shown}) and mode is error_if_exists; "
            "remove them, or set mode: overwrite or mode: append"
        )


class WriteToFiles(beam.PTransform):
    """Write batches as CSV, NDJSON, JSON (an array), Parquet or Avro files, atomically.

    Args:
        path: the output directory (sharded output), or the file name when
            ``single_file`` is true; any filesystem Beam knows.
        format: ``csv``, ``ndjson``, ``json``, ``parquet`` or ``avro``.
        mode: ``overwrite`` (default: the directory ends up holding exactly this run's
            files; old files are deleted only after the new ones are in place), ``append``
            (new files named with ``run_id`` next to the old), or ``error_if_exists``
            (raise :class:`~beam_etl.errors.SinkError` at build time if the target has files).
        num_shards: at most this many files (batches are shuffled round robin to shards; a
            shard that receives no batch writes no file); default one file per bundle,
            without a shuffle. A batch whose columns differ from its file's starts a new
            file, so drifting schemas can add files.
        single_file: write one file named ``path`` (implies ``num_shards=1``).
        compression: csv/ndjson/json: ``gzip``, ``bzip2``, ``zstd``, ``deflate``;
            parquet: ``snappy`` (default), ``zstd``, ``gzip``, ``brotli``, ``lz4``, ``none``;
            avro: ``null`` (default), ``deflate``, ``snappy``, ``zstandard``, ``bzip2``, ``xz``.
        name: the sink name (counters, DLQ ``step``).
        run_id: names ``append`` files ``part-<run_id>-00000-of-00002``; default random.
        storage: how to reach an object store (``s3://``, ``gs://``, ``azure://``): endpoint
            and credentials, see :class:`beam_etl.io.cloud.StorageOptions`; default: Beam's
            pipeline options and the environment.
        **options: csv: ``delimiter``, ``header``; parquet: ``row_group_rows`` (default 131072).

    Applied to a tuple of PCollections, each is written where it is produced (no
    ``Flatten``, which Beam's in-process runner would hold in memory whole) and one
    finalize step names all their files.

    Returns a :class:`~beam_etl.steps.StepOutputs`: ``main`` the final file names (after
    the finalize step), ``dlq`` the rows that could not be written, as DLQ rows.

    Example:
        >>> batches | WriteToFiles("out/orders/", "parquet", num_shards=4)  # doctest: +SKIP
        >>> batches | WriteToFiles("out/report.csv", "csv", single_file=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str,
        format: str,
        *,
        mode: str = "overwrite",
        num_shards: int | None = None,
        single_file: bool = False,
        compression: str | None = None,
        name: str | None = None,
        run_id: str | None = None,
        storage: cloud.StorageOptions | Mapping[str, Any] | None = None,
        **options: Any,
    ):
        super().__init__()
        if format not in fmt.WRITE_FORMATS:
            raise ValueError(f"cannot write format '{format}'; use one of {', '.join(fmt.WRITE_FORMATS)}")
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")
        if not isinstance(path, str) or not path:
            raise ValueError(f"path must be a non-empty string, got {path!r}")
        path = cloud.beam_path(path)
        self._storage = cloud.storage_options(storage, [path])
        if num_shards is not None and num_shards <= 0:
            raise ValueError(f"num_shards must be positive, got {num_shards}")
        if single_file and num_shards not in (None, 1):
            raise ValueError("single_file writes one file; drop num_shards or set it to 1")
        if single_file and path.endswith("/"):
            raise ValueError(f"single_file needs a file name, got the directory '{path}'")
        if single_file and mode == "append":
            raise ValueError("append adds new files next to old ones; it needs a directory path, not single_file")
        fmt.check_compression(format, compression)
        unknown = sorted(set(options) - set(FORMAT_OPTIONS[format]))
        if unknown:
            allowed = FORMAT_OPTIONS[format]
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for {format} sinks; "
                f"{format} accepts {', '.join(allowed) if allowed else 'no options'} besides mode, num_shards, single_file, compression"
            )
        if format == "csv" and len(options.get("delimiter", ",")) != 1:
            raise ValueError(f"delimiter must be one character, got {options.get('delimiter')!r}")
        token = uuid.uuid4().hex[:12]
        self._target = _Target(
            path=path,
            format=format,
            mode=mode,
            single_file=single_file,
            compression=compression,
            run_id=run_id or token,
            token=token,
        )
        self._num_shards = 1 if single_file else num_shards
        self._options = {**options, "compression": compression}
        self._name = name or os.path.basename(path.rstrip("/")) or "files"

    def expand(self, pcolls: PCollection | tuple[PCollection, ...]) -> StepOutputs:
        inputs = list(pcolls) if isinstance(pcolls, (tuple, list)) else [pcolls]
        pipeline = inputs[0].pipeline
        cloud.configure_pipeline(pipeline, [self._target.path], self._storage, name=self._name, kind="sink", error=SinkError)
        check_target(self._target, self._name)
        if _streaming(inputs[0]) or self._num_shards:
            pcoll = inputs[0] if len(inputs) == 1 else tuple(inputs) | "inputs" >> beam.Flatten().with_output_types(pa.RecordBatch)
            if _streaming(pcoll):  # no end to wait for: write each window pane as it comes (files_windowed)
                from beam_etl.io.files_windowed import WriteWindowedFiles

                return pcoll | "panes" >> WriteWindowedFiles(self._target, self._options, self._name)
            results = [
                pcoll
                | "shard" >> beam.ParDo(_AssignShardFn(self._num_shards)).with_output_types(beam.typehints.KV[int, pa.RecordBatch])
                | "group" >> beam.GroupByKey()
                | "write" >> beam.ParDo(_WriteShardFn(self._target, self._options, self._name)).with_outputs("dlq", main="main")
            ]
        else:  # each input's bundles write their own files, fused with the step that made the rows
            results = [
                pcoll
                | ("write" if len(inputs) == 1 else f"write:{index}")
                >> beam.ParDo(_WriteBundleFn(self._target, self._options, self._name)).with_outputs("dlq", main="main")
                for index, pcoll in enumerate(inputs)
            ]
        for result in results:
            result.dlq.element_type = pa.RecordBatch
        temp_files = _flattened([result.main for result in results], "temp files")
        written = (
            pipeline
            | "once" >> beam.Create([None])
            | "finalize" >> beam.ParDo(_FinalizeFn(self._target), AsList(temp_files))
        )
        return StepOutputs(main=written, dlq=_flattened([result.dlq for result in results], "rejected"))


def _flattened(pcolls: list[PCollection], label: str) -> PCollection:
    """One PCollection (a Flatten only when there are several: these are small)."""
    return pcolls[0] if len(pcolls) == 1 else tuple(pcolls) | label >> beam.Flatten()
