"""File sinks on unbounded input: one file per window pane and bundle, named by the window.

The batch path of :class:`~beam_etl.io.files_write.WriteToFiles` renames every temp file
once, after the whole input was written — on a stream that moment never comes. Here each
bundle writes what it received per (window, pane) as soon as the bundle ends: the file is
built in memory, written under the hidden temp directory, then renamed into place, so a
reader never sees half a file. Names carry the window bounds (UTC), the pane and a digest
of the content::

    window-20240301T120000Z-20240301T120100Z-pane0-3f2a9c1e0b7d.parquet   # on-time pane
    window-20240301T120000Z-20240301T120100Z-pane1-9be04d27a311.parquet   # a late pane
    global-20240301T120013Z-5d1c0e6f8a2b.ndjson                          # not windowed: by write time

A window that fires again (a late pane with accumulating aggregates) gets another file with
its pane index; a retried bundle that wrote the same rows writes the same name again
(idempotent), one whose rows came out differently leaves a second file (at-least-once).
``mode`` ``error_if_exists`` is checked when the pipeline is built; otherwise files are only
ever added (``overwrite`` deletes nothing on a stream).

Example:
    >>> windowed | WriteWindowedFiles(target, {"compression": None}, "per_minute")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
from typing import Any, Iterator, Mapping

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindow, WindowedValue
from apache_beam.utils.timestamp import Timestamp

from beam_etl.dlq import dlq_batch
from beam_etl.errors import SinkError
from beam_etl.io import files_formats as fmt
from beam_etl.steps import StepCounters, StepOutputs

__all__ = ["WriteWindowedFiles", "window_file_name"]


def _utc(micros: int) -> str:
    return dt.datetime.fromtimestamp(micros / 1e6, tz=dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ").replace("000000Z", "Z")


def window_file_name(window: Any, pane_index: int, digest: str, extension: str, written_at: Timestamp | None = None) -> str:
    """The file name of one pane's rows: window bounds, pane index, content digest.

    Example:
        >>> from apache_beam.transforms.window import IntervalWindow
        >>> window_file_name(IntervalWindow(0, 60), 0, "ab12", ".parquet")
        'window-19700101T000000Z-19700101T000100Z-pane0-ab12.parquet'
    """
    if isinstance(window, GlobalWindow) or not hasattr(window, "start"):
        at = (written_at or Timestamp.now()).micros
        return f"global-{_utc(at)}-{digest}{extension}"
    return f"window-{_utc(window.start.micros)}-{_utc(window.end.micros)}-pane{pane_index}-{digest}{extension}"


class _Pending:
    """The batches of one (window, pane) in the current bundle, in one schema per file."""

    def __init__(self, window: Any, pane: Any):
        self.window = window
        self.pane = pane
        self.batches: list[pa.RecordBatch] = []


class _WriteWindowedFn(beam.DoFn):
    def __init__(self, target: Any, options: Mapping[str, Any], name: str):
        self._target = target
        self._options = options
        self._name = name

    def setup(self) -> None:
        self._counters = StepCounters("sink", self._name)
        self._writer_cls = fmt.make_writer(self._target.format)

    def start_bundle(self) -> None:
        self._counters.announce()
        self._pending: dict[tuple[Any, int], _Pending] = {}

    def process(self, batch: pa.RecordBatch, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam) -> Iterator[Any]:
        counters = self._counters
        counters.rows_in.inc(batch.num_rows)
        if batch.num_rows == 0:
            return
        good, bad, reason = self._writer_cls.prepare(batch, self._options)
        if bad is not None and bad.num_rows:
            counters.rows_dlq.inc(bad.num_rows)
            yield TaggedOutput(
                "dlq", dlq_batch(bad, step=self._name, error_type=f"{self._target.format}.write", error_message=reason, source=self._target.path)
            )
        if good.num_rows:
            key = (window, pane.index if pane is not None else 0)
            self._pending.setdefault(key, _Pending(window, pane)).batches.append(good)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        pending, self._pending = self._pending, {}
        for (window, pane_index), group in pending.items():
            for batches in _by_schema(group.batches):
                path = self._write(window, pane_index, batches)
                self._counters.rows_out.inc(sum(b.num_rows for b in batches))
                yield WindowedValue(path, window.max_timestamp(), [window])

    def _write(self, window: Any, pane_index: int, batches: list[pa.RecordBatch]) -> str:
        target = self._target
        buffer = io.BytesIO()
        writer = self._writer_cls(_Unclosable(buffer), batches[0].schema, self._options)
        for batch in batches:
            writer.write(batch)
        writer.close()
        data = buffer.getvalue()
        name = window_file_name(window, pane_index, hashlib.sha1(data).hexdigest()[:12], target.extension)
        final = FileSystems.join(target.directory, name)
        temp = FileSystems.join(target.temp_dir, name)
        try:
            if "://" not in target.directory:
                os.makedirs(target.temp_dir, exist_ok=True)
            with FileSystems.create(temp, compression_type=target.stream_compression) as handle:
                handle.write(data)
            FileSystems.rename([temp], [final])
        except Exception as exc:  # the store is unreachable or refuses: fail the bundle (the runner retries it)
            raise SinkError(
                f"sink '{self._name}': writing '{final}' failed ({type(exc).__name__}: {exc}); "
                "check that the target is writable and reachable"
            ) from exc
        return final


class _Unclosable(io.RawIOBase):
    """A writable view of a BytesIO that the format writer may close without losing the bytes."""

    def __init__(self, buffer: io.BytesIO):
        super().__init__()
        self._buffer = buffer

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._buffer.write(bytes(data))

    def tell(self) -> int:
        return self._buffer.tell()


def _by_schema(batches: list[pa.RecordBatch]) -> Iterator[list[pa.RecordBatch]]:
    """Runs of batches that share a schema (a drifting schema starts another file)."""
    run: list[pa.RecordBatch] = []
    for batch in batches:
        if run and batch.schema != run[0].schema:
            yield run
            run = []
        run.append(batch)
    if run:
        yield run


class WriteWindowedFiles(beam.PTransform):
    """Write an unbounded (or windowed streaming) input as files per window pane.

    Used by :class:`~beam_etl.io.files_write.WriteToFiles` when its input is unbounded or the
    pipeline runs with ``--streaming``; see the module docstring for names and guarantees.

    Args:
        target: the sink's target (path, format, compression) from ``WriteToFiles``.
        options: the format options.
        name: the sink name (counters, DLQ ``step``).

    Returns a :class:`~beam_etl.steps.StepOutputs`: ``main`` the written file names (in the
    window they hold), ``dlq`` the rows the format cannot hold.

    Example:
        >>> per_minute | WriteToFiles("out/per_minute/", "parquet")  # doctest: +SKIP
    """

    def __init__(self, target: Any, options: Mapping[str, Any], name: str):
        super().__init__()
        if target.single_file:
            raise SinkError(f"sink '{name}': a streaming file sink writes one file per window pane; drop single_file")
        self._target, self._options, self._name = target, dict(options), name

    def expand(self, pcoll) -> StepOutputs:
        results = pcoll | "write panes" >> beam.ParDo(_WriteWindowedFn(self._target, self._options, self._name)).with_outputs("dlq", main="main")
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)
