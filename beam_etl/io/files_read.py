"""Reading files as Arrow batches: match, split into small work descriptors, spread, parse.

A read is three steps (DESIGN §3, §9):

1. ``_ExpandFn`` matches the path (a file, a directory or a glob, through Beam's
   ``FileSystems`` so ``s3://`` and ``gs://`` work once configured) and cuts every file into
   descriptors: ~32 MiB byte ranges for CSV/NDJSON (aligned to line starts when read; the CSV
   header is read once and re-applied to every range), row groups for Parquet (small ones
   bundled up to the same size),
   whole files for Avro, Excel, JSON arrays and compressed text.
2. ``Reshuffle`` spreads only these small descriptors over workers — never whole batches.
3. ``_ReadSplitFn`` parses each descriptor vectorized (``pyarrow.csv``, ``pyarrow.json``,
   ``pyarrow.parquet``; fastavro and openpyxl row by row where no columnar reader exists)
   and yields batches of at most ``batch_rows`` rows; rejected lines and rows go to the
   ``dlq`` output with ``source = "path:line"``.

Line numbers in DLQ rows are exact: for a byte range the newlines before the range start are
counted only when the range has a rejected line. Rows of a CSV read with ``split: false``
whose quoted values contain blank lines may be numbered a line early. Parquet, Avro and Excel
rejects carry row numbers (``path:row N``; Excel ``path[Sheet]:N``, the sheet row).

Example:
    >>> import apache_beam as beam
    >>> with beam.Pipeline() as p:  # doctest: +SKIP
    ...     read = p | ReadCsv("data/orders-*.csv", schema={"id": "int64", "amount": "float64"})
    ...     read.main | beam.Map(lambda batch: print(batch.num_rows))
    ...     read.dlq  # DLQ rows: bad quoting, wrong field counts, bad UTF-8, values not int64
"""

from __future__ import annotations

import codecs
import concurrent.futures
import dataclasses
import functools
import io
import itertools
import os
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import PBegin, TaggedOutput

from beam_etl.batch import DEFAULT_BATCH_ROWS, split_batch
from beam_etl.errors import SourceError
from beam_etl.io import cloud
from beam_etl.io import files_formats as fmt
from beam_etl.io.files_formats import CsvOptions, Rejects
from beam_etl.models import schema_from_spec
from beam_etl.steps import StepCounters, StepOutputs

__all__ = [
    "ReadFromFiles",
    "ReadCsv",
    "ReadJson",
    "ReadNdjson",
    "ReadParquet",
    "ReadAvro",
    "ReadExcel",
    "match_files",
]

cloud.register_filesystems()  # azure:// in Beam's FileSystems, here and on every worker

#: Options each format accepts (besides ``schema``, ``batch_rows``, ``name``, ``split_bytes``).
FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    "csv": ("delimiter", "quote", "header", "encoding", "null_values", "skip_rows", "split"),
    "json": ("records_path",),
    "ndjson": (),
    "parquet": ("columns",),
    "avro": (),
    "excel": ("sheet", "header", "skip_rows"),
}

# --------------------------------------------------------------------------- matching


def _is_local(path: str) -> bool:
    return "://" not in path


def match_files(pattern: str) -> list[tuple[str, int]]:
    """``(path, size)`` of the data files ``pattern`` names, sorted by path.

    ``pattern`` is a file, a directory (its files, not recursive; ``dir/**`` recurses) or a
    glob, on any filesystem Beam knows. Hidden files and names starting with ``_`` or ``.``
    (``_SUCCESS``, sink temp directories) are skipped.
    """
    base = ""
    metadata: list = []
    if fmt.has_glob(pattern):
        base = fmt._glob_base(pattern)
        metadata = FileSystems.match([pattern])[0].metadata_list
    else:
        directory = pattern.endswith("/") or (_is_local(pattern) and os.path.isdir(pattern))
        if not directory:
            metadata = [m for m in FileSystems.match([pattern])[0].metadata_list if m.path == pattern]
            if not metadata and not _is_local(pattern):
                directory = True  # an object-store "directory" is a key prefix
        if directory:
            base = pattern.rstrip("/") + "/"
            metadata = FileSystems.match([base + "*"])[0].metadata_list
    found = []
    for meta in metadata:
        if base and not fmt.is_data_file(meta.path, base):
            continue
        if _is_local(meta.path) and os.path.isdir(meta.path):
            continue
        found.append((meta.path, int(meta.size_in_bytes)))
    return sorted(found)


def _open(path: str, compressed: bool = True) -> IO[bytes]:
    """Open through Beam's filesystems; ``compressed`` decompresses by file extension."""
    kind = CompressionTypes.AUTO if compressed else CompressionTypes.UNCOMPRESSED
    return FileSystems.open(path, compression_type=kind)


def _is_compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


# --------------------------------------------------------------------------- descriptors


@dataclass(frozen=True)
class _Split:
    """One unit of read work: a byte range, a group of row groups, or a whole file."""

    path: str
    layout: str  # csv | lines | array | document | parquet | avro | excel
    start: int = 0
    end: int | None = None  # None: read sequentially from ``start`` to the end
    names: tuple[str, ...] = ()
    lines_before: int | None = None  # lines before ``start`` when known without counting
    row_groups: tuple[int, ...] = ()
    first_row: int = 0


@dataclass(frozen=True)
class _ReadConfig:
    format: str
    csv: CsvOptions
    records_path: str | None
    columns: tuple[str, ...] | None
    sheet: str | int | None
    header: bool
    skip_rows: int
    split_bytes: int


def _source_error(path: str, what: str, exc: BaseException) -> SourceError:
    return SourceError(
        f"cannot read {what} file '{path}': {exc}. The file is truncated, corrupt or not {what}; "
        "re-create it or remove it from the source path"
    )


class _ExpandFn(beam.DoFn):
    """pattern -> descriptors (reads only headers, footers and first bytes)."""

    def __init__(self, config: _ReadConfig, source: str):
        self._config = config
        self._source = source

    def process(self, pattern: str) -> Iterator[_Split]:
        files = match_files(pattern)
        if not files:
            raise SourceError(f"source '{self._source}': no files match '{pattern}'; check the path (a file, a directory or a glob)")
        for path, size in files:
            yield from self._splits(path, size)

    def _ranges(self, path: str, layout: str, start: int, size: int, names=(), lines_before=None) -> Iterator[_Split]:
        step = self._config.split_bytes
        for offset in range(start, size, step):
            yield _Split(path, layout, offset, min(offset + step, size), tuple(names), lines_before if offset == start else None)

    def _splits(self, path: str, size: int) -> Iterator[_Split]:
        config = self._config
        name = config.format
        compressed = _is_compressed(path)
        if name == "csv":
            options = config.csv
            with _open_text(path, options) as handle:
                names, offset, lines_before = fmt.read_csv_header(handle, _text_options(options))
            if not names:
                return  # empty file (or only skipped lines / a header)
            if options.split and not compressed and options.ascii_compatible:
                yield from self._ranges(path, "csv", offset, size, names, lines_before)
            else:
                yield _Split(path, "csv", offset, None, tuple(names), lines_before)
        elif name in ("ndjson", "json"):
            layout = "lines"
            if name == "json":
                with _open(path) as handle:
                    layout = fmt.detect_json_layout(handle)
                if config.records_path:
                    layout = "document"
            if layout == "lines" and not compressed:
                yield from self._ranges(path, "lines", 0, size, lines_before=0)
            else:
                yield _Split(path, layout, 0, None, lines_before=0)
        elif name == "parquet":
            import pyarrow.parquet as pq

            try:
                with _open(path, compressed=False) as handle:
                    meta = pq.ParquetFile(handle).metadata
            except Exception as exc:  # pyarrow raises several types for a bad footer
                raise _source_error(path, "Parquet", exc) from exc
            group: list[int] = []
            group_bytes, first_row, rows_so_far = 0, 0, 0
            for index in range(meta.num_row_groups):
                row_group = meta.row_group(index)
                if group and group_bytes + row_group.total_byte_size > config.split_bytes:
                    yield _Split(path, "parquet", row_groups=tuple(group), first_row=first_row)
                    group, group_bytes, first_row = [], 0, rows_so_far
                group.append(index)
                group_bytes += row_group.total_byte_size
                rows_so_far += row_group.num_rows
            if group:
                yield _Split(path, "parquet", row_groups=tuple(group), first_row=first_row)
        else:  # avro, excel: one file, read as a stream
            yield _Split(path, name)


def _open_text(path: str, options: CsvOptions) -> IO[bytes]:
    handle = _open(path)
    return handle if options.ascii_compatible else fmt.Recoded(handle, options.encoding)


def _text_options(options: CsvOptions) -> CsvOptions:
    """Options for bytes as the parser sees them (recoded streams are already UTF-8)."""
    return options if options.ascii_compatible else dataclasses.replace(options, encoding="utf-8", split=options.split)


# --------------------------------------------------------------------------- text chunks


def _read_exactly(handle: IO[bytes], size: int) -> bytes:
    """``size`` bytes or up to EOF (remote file objects may return short reads)."""
    parts, remaining = [], size
    while remaining > 0:
        block = handle.read(remaining)
        if not block:
            break
        parts.append(block)
        remaining -= len(block)
    return b"".join(parts)


#: Line-split CSV chunks are parsed in pieces of about this size, each piece parsed on a
#: helper thread while the previous one's rows go through the pipeline's fused steps on
#: this thread (Arrow's CSV parser and casts release the GIL: both cores work even on the
#: single-threaded in-process runner).
PARSE_PIECE_BYTES = 4 << 20
_PARSE_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def parse_pieces(
    parse: Callable[[bytes], Any], chunk: bytes, lines_before: int | None, offset: int, options: CsvOptions
) -> Iterator[tuple[Any, int | None, int]]:
    """``(parse(piece), lines before the piece or None, its byte offset or -1)``, in order.

    The next piece is parsed ahead on a helper thread while the caller handles the current
    one. Only line-split text in an ASCII-compatible encoding is cut (a newline byte then
    always ends a row); anything else, or a chunk under two pieces, is parsed whole, here.
    """
    global _PARSE_POOL
    pieces = _cut_at_newlines(chunk, PARSE_PIECE_BYTES) if options.split and options.ascii_compatible else [(0, len(chunk))]
    if len(pieces) == 1:
        yield parse(chunk), lines_before, offset
        return
    if _PARSE_POOL is None:
        _PARSE_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="beam-etl-csv")
    pending = _PARSE_POOL.submit(parse, chunk[pieces[0][0] : pieces[0][1]])
    lines = lines_before
    for index, (start, end) in enumerate(pieces):
        current = pending
        if index + 1 < len(pieces):
            next_start, next_end = pieces[index + 1]
            pending = _PARSE_POOL.submit(parse, chunk[next_start:next_end])
        yield current.result(), lines, offset + start if offset >= 0 else -1
        if lines is not None:
            lines += chunk.count(b"\n", start, end)


def _cut_at_newlines(chunk: bytes, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` pieces of about ``size`` bytes, each ending just after a newline."""
    pieces, start = [], 0
    while len(chunk) - start >= 2 * size:
        cut = chunk.find(b"\n", start + size) + 1
        if cut <= 0:
            break
        pieces.append((start, cut))
        start = cut
    pieces.append((start, len(chunk)))
    return pieces


def _read_range(path: str, start: int, end: int) -> tuple[bytes, int]:
    """The whole lines that start in ``[start, end)`` and the offset of the first one."""
    with _open(path, compressed=False) as handle:
        seek_to = max(start - 1, 0)
        handle.seek(seek_to)
        buffer = _read_exactly(handle, end - seek_to)
        if start > 0:
            newline = buffer.find(b"\n")
            while newline < 0:
                more = handle.read(1 << 16)
                if not more:
                    return b"", end
                buffer += more
                newline = buffer.find(b"\n")
            skip = newline + 1  # buffer[0] is the byte before ``start``
        else:
            skip = 0
        aligned = seek_to + skip
        if aligned >= end:
            return b"", aligned
        # finish the line that contains byte end-1
        if not buffer.endswith(b"\n") and len(buffer) == end - seek_to:
            tail = []
            while True:
                more = handle.read(1 << 16)
                if not more:
                    break
                newline = more.find(b"\n")
                if newline >= 0:
                    tail.append(more[: newline + 1])
                    break
                tail.append(more)
            buffer += b"".join(tail)
        return buffer[skip:], aligned


def _count_newlines(path: str, offset: int, known: dict[int, int] | None = None) -> int:
    """Newlines in the first ``offset`` bytes (error path: exact line numbers for a range).

    ``known`` maps offsets of this file to their counts from earlier calls; counting starts at
    the nearest one below ``offset`` and records ``offset``'s, so the ranges of one file cost
    about one pass over it instead of one pass each (quadratic: 37% of a 10M-row benchmark).
    """
    start = max((at for at in known if at <= offset), default=0) if known else 0
    count = known[start] if known and start in known else 0
    with _open(path, compressed=False) as handle:
        handle.seek(start)
        remaining = offset - start
        while remaining > 0:
            block = handle.read(min(remaining, 8 << 20))
            if not block:
                break
            count += block.count(b"\n")
            remaining -= len(block)
    if known is not None:
        known[offset] = count
    return count


def _row_boundary(buffer: bytes, quote: str | None) -> int:
    """Offset just after the last newline that ends a row (outside quotes when ``quote``)."""
    if quote is None:
        return buffer.rfind(b"\n") + 1
    arr = np.frombuffer(buffer, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    if not len(newlines):
        return 0
    quotes = np.flatnonzero(arr == ord(quote))
    inside = np.searchsorted(quotes, newlines, side="left") % 2 == 1
    outside = newlines[~inside]
    return int(outside[-1]) + 1 if len(outside) else 0


def _iter_chunks(stream: IO[bytes], chunk_bytes: int, quote: str | None) -> Iterator[bytes]:
    """Sequential chunks of ~``chunk_bytes`` that end at row boundaries (bounded memory)."""
    pending = b""
    while True:
        block = stream.read(chunk_bytes)
        if not block:
            if pending:
                yield pending
            return
        pending += block
        cut = _row_boundary(pending, quote)
        if cut == 0 and len(pending) < 16 * chunk_bytes:
            continue  # one row longer than the chunk: keep reading
        cut = cut or len(pending)
        yield pending[:cut]
        pending = pending[cut:]


# --------------------------------------------------------------------------- the read DoFn


class _ReadSplitFn(beam.DoFn):
    """descriptor -> batches of <= ``batch_rows`` rows (main) and DLQ batches (``dlq``)."""

    def __init__(self, config: _ReadConfig, source: str, target: pa.Schema | None, declared: frozenset[str], batch_rows: int):
        self._config = config
        self._source = source
        self._target = target
        self._declared = declared
        self._batch_rows = batch_rows

    def setup(self) -> None:
        self._counters = StepCounters("source", self._source)
        self._newlines: dict[str, dict[int, int]] = {}  # path -> {offset: newlines before it}

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def process(self, split: _Split) -> Iterator[Any]:
        layout = split.layout
        if layout == "csv":
            results = self._csv(split)
        elif layout == "lines":
            results = self._lines(split)
        elif layout in ("array", "document"):
            results = self._json(split)
        elif layout == "parquet":
            results = self._parquet(split)
        elif layout == "avro":
            results = self._avro(split)
        else:
            results = self._excel(split)
        counters = self._counters
        for batch, dlq in results:
            if batch is not None and batch.num_rows:
                for piece in split_batch(batch, self._batch_rows):
                    counters.rows_in.inc(piece.num_rows)
                    counters.rows_out.inc(piece.num_rows)
                    yield piece
            for rejected in dlq:
                counters.rows_in.inc(rejected.num_rows)
                counters.rows_dlq.inc(rejected.num_rows)
                yield TaggedOutput("dlq", rejected)

    # -- text

    def _text_chunks(
        self, split: _Split, quote: str | None, options: CsvOptions | None
    ) -> Iterator[tuple[bytes, int | None, int]]:
        """(chunk, lines before it or None when not yet counted, its byte offset)."""
        if split.end is not None:
            data, aligned = _read_range(split.path, split.start, split.end)
            if not data:
                return
            if split.layout == "lines" and aligned == 0 and data.startswith(codecs.BOM_UTF8):
                data = data[3:]
            # Lines before a range are counted only if the range rejects something.
            yield data, split.lines_before if aligned == split.start else None, aligned
            return
        handle = _open_text(split.path, options) if options is not None else _open(split.path)
        with handle:
            fmt._skip(handle, split.start)
            lines = split.lines_before or 0
            first = True
            for chunk in _iter_chunks(handle, self._config.split_bytes, quote):
                if first and split.layout == "lines" and chunk.startswith(codecs.BOM_UTF8):
                    chunk = chunk[3:]
                first = False
                yield chunk, lines, -1
                lines += chunk.count(b"\n")

    def _csv(self, split: _Split):
        options = _text_options(self._config.csv)
        quote = options.quote if not options.split else None
        for chunk, lines_before, offset in self._text_chunks(split, quote, self._config.csv):
            parse = functools.partial(fmt.parse_csv_chunk, names=split.names, options=options, target=self._target, declared=self._declared)
            for (batch, rejects), part_lines, part_offset in parse_pieces(parse, chunk, lines_before, offset, options):
                yield batch, self._dlq(split, rejects, part_lines, part_offset)

    def _lines(self, split: _Split):
        for chunk, lines_before, offset in self._text_chunks(split, None, None):
            batch, rejects = fmt.parse_ndjson_chunk(chunk, self._target, self._declared)
            yield batch, self._dlq(split, rejects, lines_before, offset)

    def _dlq(self, split: _Split, rejects: Rejects, lines_before: int | None, offset: int) -> list[pa.RecordBatch]:
        if not len(rejects):
            return []
        if lines_before is None:
            lines_before = _count_newlines(split.path, offset, self._newlines.setdefault(split.path, {}))
        return rejects.to_dlq(step=self._source, path=split.path, first=lines_before + 1)

    # -- row formats

    def _rows(self, rows: list[dict], positions: list[int], rejects: Rejects) -> pa.RecordBatch | None:
        return fmt.coerce_rows(rows, positions, self._target, self._declared, rejects)

    def _json(self, split: _Split):
        with _open(split.path) as handle:
            if split.layout == "document":
                try:
                    values = fmt.read_json_document(handle, self._config.records_path)
                except (ValueError, KeyError) as exc:
                    raise SourceError(f"cannot read JSON file '{split.path}': {exc}") from exc
                for start in range(0, len(values), self._batch_rows):
                    rejects = Rejects()
                    rows, positions = [], []
                    for index, value in enumerate(values[start : start + self._batch_rows], start=start):
                        if isinstance(value, dict):
                            rows.append(value)
                            positions.append(index)
                        else:
                            rejects.add(index, "json.parse", f"expected a JSON object, found {type(value).__name__}", fmt._as_text(value) or "null")
                    batch = self._rows(rows, positions, rejects)
                    yield batch, rejects.to_dlq(step=self._source, path=split.path, first=1, unit="record") if len(rejects) else []
                return
            items = iter(fmt.JsonArrayReader(handle))
            while True:
                chunk = list(itertools.islice(items, self._batch_rows))
                if not chunk:
                    return
                rejects = Rejects()
                rows, positions = [], []
                for item in chunk:
                    if item.error_type is None:
                        rows.append(item.value)
                        positions.append(item.line)
                    else:
                        rejects.add(item.line, item.error_type, item.message, item.text)
                batch = self._rows(rows, positions, rejects)
                yield batch, rejects.to_dlq(step=self._source, path=split.path, first=0) if len(rejects) else []

    def _parquet(self, split: _Split):
        import pyarrow.parquet as pq

        columns = list(self._config.columns) if self._config.columns else None
        row = split.first_row
        try:
            with _open(split.path, compressed=False) as handle:
                parquet = pq.ParquetFile(handle)
                batches = parquet.iter_batches(
                    batch_size=self._batch_rows, row_groups=list(split.row_groups), columns=columns, use_threads=False
                )
                for batch in batches:
                    yield self._coerced(batch, split.path, row, "row")
                    row += batch.num_rows
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise _source_error(split.path, "Parquet", exc) from exc

    def _coerced(self, batch: pa.RecordBatch, path: str, first_row: int, unit: str):
        out, errors = fmt.coerce_batch(batch, self._target, self._declared)
        if not errors:
            return out, []
        rejects = Rejects()
        fmt._reject_rows(batch, errors, None, rejects, "schema.coerce")
        return fmt._drop_rows(out, errors), rejects.to_dlq(step=self._source, path=path, first=first_row + 1, unit=unit)

    def _avro(self, split: _Split):
        import fastavro

        row = 0
        try:
            with _open(split.path, compressed=False) as handle:
                reader = fastavro.reader(handle)
                schema = fmt.avro_to_arrow_schema(reader.writer_schema)
                text_columns = fmt._json_text_columns(schema, reader.writer_schema)
                while True:
                    records = list(itertools.islice(reader, self._batch_rows))  # per row: fastavro decodes records
                    if not records:
                        return
                    batch = fmt.avro_records_to_batch(records, schema, text_columns)
                    yield self._coerced(batch, split.path, row, "row")
                    row += len(records)
        except SourceError:
            raise
        except Exception as exc:  # fastavro raises ValueError, EOFError, StopIteration subclasses...
            raise _source_error(split.path, "Avro", RuntimeError(f"{type(exc).__name__}: {exc} (after {row} rows)")) from exc

    def _excel(self, split: _Split):
        config = self._config
        try:
            handle = _open(split.path, compressed=False)
            if not (hasattr(handle, "seekable") and handle.seekable()):
                handle = io.BytesIO(handle.read())  # openpyxl needs a seekable zip archive
            rows_iter = fmt.ExcelRows(handle, sheet=config.sheet, header=config.header, skip_rows=config.skip_rows)
        except KeyError as exc:
            raise SourceError(f"cannot read Excel file '{split.path}': {exc.args[0]}") from exc
        except Exception as exc:
            raise _source_error(split.path, "Excel (.xlsx)", exc) from exc
        where = f"{split.path}[{rows_iter.sheet_name}]"
        iterator = iter(rows_iter)
        while True:
            chunk = list(itertools.islice(iterator, self._batch_rows))  # per row: openpyxl yields cells
            if not chunk:
                rows_iter.close()
                handle.close()
                return
            rejects = Rejects()
            batch = self._rows([values for _, values in chunk], [number for number, _ in chunk], rejects)
            yield batch, rejects.to_dlq(step=self._source, path=where, first=0) if len(rejects) else []


# --------------------------------------------------------------------------- public transforms


def _config(format: str, options: Mapping[str, Any], split_bytes: int) -> _ReadConfig:
    allowed = FORMAT_OPTIONS[format]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for {format} files; "
            f"{format} accepts {', '.join(allowed) if allowed else 'no options'} besides schema and batch_rows"
        )
    if split_bytes <= 0:
        raise ValueError(f"split_bytes must be positive, got {split_bytes}")
    csv_options = CsvOptions()
    if format == "csv":
        values = {k: v for k, v in options.items() if v is not None or k == "quote"}
        if "null_values" in values:
            values["null_values"] = tuple(values["null_values"])
        csv_options = CsvOptions(**values)
    skip_rows = int(options.get("skip_rows") or 0)
    if skip_rows < 0:
        raise ValueError(f"skip_rows must be 0 or more, got {skip_rows}")
    columns = options.get("columns")
    return _ReadConfig(
        format=format,
        csv=csv_options,
        records_path=options.get("records_path"),
        columns=tuple(columns) if columns else None,
        sheet=options.get("sheet"),
        header=bool(options.get("header", True)),
        skip_rows=skip_rows,
        split_bytes=split_bytes,
    )


def _sample_open(path: str, compressed: bool = True) -> IO[bytes]:
    return _open(path, compressed)


def _target_schema(paths: Sequence[str], config: _ReadConfig, declared: pa.Schema | None, source: str) -> pa.Schema | None:
    """Declared columns plus the types of the first file's header/footer/first rows."""
    first = None
    for pattern in paths:
        try:
            files = match_files(pattern)
        except Exception as exc:  # e.g. a filesystem whose credentials are not configured here
            raise SourceError(f"source '{source}': cannot list '{pattern}': {exc}") from exc
        if files:
            first = files[0][0]
            break
    if first is None:
        raise SourceError(
            f"source '{source}': no files match {', '.join(repr(p) for p in paths)}; check the path (a file, a directory or a glob)"
        )
    what = {"parquet": "Parquet", "avro": "Avro", "excel": "Excel (.xlsx)"}.get(config.format)
    try:
        inferred = fmt.sample_schema(
            config.format,
            _sample_open,
            first,
            csv_options=config.csv,
            records_path=config.records_path,
            sheet=config.sheet,
            header=config.header,
            skip_rows=config.skip_rows,
        )
    except KeyError as exc:
        raise SourceError(f"source '{source}': cannot read '{first}': {exc.args[0]}") from exc
    except Exception as exc:
        if what is not None:
            raise _source_error(first, what, exc) from exc
        inferred = None  # text formats: per-chunk types; bad rows are found while reading
    if inferred is not None and config.columns:
        inferred = pa.schema([f for f in inferred if f.name in set(config.columns)])
    return fmt.merge_schemas(declared, inferred)


class ReadFromFiles(beam.PTransform):
    """Read CSV, JSON, NDJSON, Parquet, Avro or Excel files as Arrow batches plus DLQ rows.

    Args:
        path: a file, a directory, a glob (``data/*.csv``, ``logs/**``), or a list of them;
            any filesystem Beam knows (``s3://``, ``gs://`` once configured).
        format: ``csv``, ``json`` (an array, one object per line, or one document),
            ``ndjson``, ``parquet``, ``avro`` or ``excel`` (.xlsx).
        schema: declared column types (``{"id": "int64"}`` or a ``pa.Schema``): values are
            coerced and a row whose value does not fit goes to the DLQ (``schema.coerce``).
            Undeclared columns take the types inferred from the first file's first rows
            (or its footer/header), and are coerced the same way.
        batch_rows: at most this many rows per output batch.
        name: the source name (counters, DLQ ``step``); defaults to the path's base name.
        storage: how to reach an object store (``s3://``, ``gs://``, ``azure://``): endpoint
            and credentials, see :class:`beam_etl.io.cloud.StorageOptions`; default: Beam's
            pipeline options and the environment.
        split_bytes: byte-range size large text files are split into; Parquet row groups
            are bundled into one work item up to this many (uncompressed) bytes.
        **options: per format — csv: ``delimiter``, ``quote``, ``header``, ``encoding``,
            ``null_values``, ``skip_rows``, ``split`` (see :class:`CsvOptions`; files whose
            quoted values contain newlines need ``split=False``); json: ``records_path``
            (dotted path of the record array in one document; such a document is read whole);
            parquet: ``columns``; excel: ``sheet``, ``header``, ``skip_rows``.

    Returns a :class:`~beam_etl.steps.StepOutputs`: ``main`` batches, ``dlq`` rows with
    ``source = "path:line"`` and ``error_type`` ``csv.parse``, ``json.parse``, ``encoding``
    or ``schema.coerce``. A truncated or corrupt Parquet/Avro/Excel file raises
    :class:`~beam_etl.errors.SourceError` naming the file.

    Example:
        >>> with beam.Pipeline() as p:  # doctest: +SKIP
        ...     out = p | ReadFromFiles("in/", "csv", schema={"id": "int64"}, delimiter=";")
        ...     out.main | WriteToFiles("out/", "parquet")
    """

    def __init__(
        self,
        path: str | Sequence[str],
        format: str,
        *,
        schema: pa.Schema | Mapping[str, str] | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        name: str | None = None,
        split_bytes: int = fmt.DEFAULT_SPLIT_BYTES,
        storage: cloud.StorageOptions | Mapping[str, Any] | None = None,
        **options: Any,
    ):
        super().__init__()
        if format not in fmt.READ_FORMATS:
            raise ValueError(f"unknown file format '{format}'; use one of {', '.join(fmt.READ_FORMATS)}")
        paths = [path] if isinstance(path, str) else list(path)
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise ValueError(f"path must be a non-empty string or list of strings, got {path!r}")
        if batch_rows <= 0:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        paths = [cloud.beam_path(p) for p in paths]
        self._storage = cloud.storage_options(storage, paths)
        self._paths = paths
        self._format = format
        self._declared = schema if isinstance(schema, pa.Schema) or schema is None else schema_from_spec(dict(schema))
        self._batch_rows = batch_rows
        self._name = name or os.path.basename(paths[0].rstrip("/")) or "files"
        self._config = _config(format, options, split_bytes)

    def expand(self, pbegin: PBegin) -> StepOutputs:
        cloud.configure_pipeline(pbegin.pipeline, self._paths, self._storage, name=self._name, kind="source", error=SourceError)
        target = _target_schema(self._paths, self._config, self._declared, self._name)
        declared = frozenset(self._declared.names) if self._declared is not None else frozenset()
        results = (
            pbegin
            | "paths" >> beam.Create(self._paths)
            | "split" >> beam.ParDo(_ExpandFn(self._config, self._name))
            | "spread" >> beam.Reshuffle()
            | "parse"
            >> beam.ParDo(_ReadSplitFn(self._config, self._name, target, declared, self._batch_rows)).with_outputs(
                "dlq", main="main"
            )
        )
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


def _reader(format: str, doc: str):
    class _Read(ReadFromFiles):
        def __init__(self, path: str | Sequence[str], **kwargs: Any):
            super().__init__(path, format, **kwargs)

    _Read.__doc__ = doc
    return _Read


ReadCsv = _reader("csv", """``ReadFromFiles(path, "csv", ...)``: CSV files (see :class:`ReadFromFiles`).

    Example:
        >>> p | ReadCsv("orders/*.csv", schema={"id": "int64"}, delimiter=";")  # doctest: +SKIP
    """)
ReadCsv.__name__ = ReadCsv.__qualname__ = "ReadCsv"
ReadJson = _reader("json", """``ReadFromFiles(path, "json", ...)``: JSON arrays, JSON lines or one document.

    Example:
        >>> p | ReadJson("export.json", records_path="data.items")  # doctest: +SKIP
    """)
ReadJson.__name__ = ReadJson.__qualname__ = "ReadJson"
ReadNdjson = _reader("ndjson", """``ReadFromFiles(path, "ndjson", ...)``: one JSON object per line.

    Example:
        >>> p | ReadNdjson("events/")  # doctest: +SKIP
    """)
ReadNdjson.__name__ = ReadNdjson.__qualname__ = "ReadNdjson"
ReadParquet = _reader("parquet", """``ReadFromFiles(path, "parquet", ...)``: split by row groups.

    Example:
        >>> p | ReadParquet("warehouse/sales/", columns=["id", "amount"])  # doctest: +SKIP
    """)
ReadParquet.__name__ = ReadParquet.__qualname__ = "ReadParquet"
ReadAvro = _reader("avro", """``ReadFromFiles(path, "avro", ...)``: Avro container files (fastavro).

    Example:
        >>> p | ReadAvro("gs://bucket/avro/*.avro")  # doctest: +SKIP
    """)
ReadAvro.__name__ = ReadAvro.__qualname__ = "ReadAvro"
ReadExcel = _reader("excel", """``ReadFromFiles(path, "excel", ...)``: one sheet of .xlsx workbooks (openpyxl).

    Example:
        >>> p | ReadExcel("budget.xlsx", sheet="2024")  # doctest: +SKIP
    """)
ReadExcel.__name__ = ReadExcel.__qualname__ = "ReadExcel"
