"""File formats without Beam: parse text chunks into Arrow batches, coerce to a schema, infer
schemas from samples, convert Avro and Excel rows, and write files.

Everything here works on bytes, streams and ``pyarrow`` batches, so it is tested without a
pipeline; :mod:`beam_etl.io.files_read` and :mod:`beam_etl.io.files_write` run it in DoFns.

Text chunks (CSV, NDJSON) are parsed vectorized: line boundaries, quote balance and bad
lines are found with numpy over the chunk's bytes, the chunk is parsed by ``pyarrow.csv`` /
``pyarrow.json``, and values are cast column by column. Python runs per line or per row
only on the error path (locating the bad lines of a chunk that failed) and where a format
has no vectorized reader (JSON arrays, Avro, Excel).

Example:
    >>> batch, rejects = parse_csv_chunk(b"1,a\\n2,b,extra\\n", ["id", "name"], CsvOptions())
    >>> batch.to_pylist(), rejects.messages
    ([{'id': '1', 'name': 'a'}], ['expected 2 fields, found 3'])
"""

from __future__ import annotations

import codecs
import csv as _pycsv
import datetime as _dt
import decimal as _decimal
import glob
import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

# beam_etl.batch / dlq / steps import Beam: they are imported where used, so spec
# validation (CsvOptions, known_schema) stays free of the ~3 s Beam import.

__all__ = [
    "READ_FORMATS",
    "WRITE_FORMATS",
    "DEFAULT_SPLIT_BYTES",
    "CsvOptions",
    "Recoded",
    "Rejects",
    "parse_csv_chunk",
    "parse_ndjson_chunk",
    "parse_json_lines_python",
    "python_rows_to_batch",
    "coerce_rows",
    "coerce_batch",
    "merge_schemas",
    "JsonArrayReader",
    "detect_json_layout",
    "read_json_document",
    "avro_to_arrow_schema",
    "arrow_to_avro_schema",
    "avro_records_to_batch",
    "ExcelRows",
    "read_csv_header",
    "infer_csv_schema",
    "infer_ndjson_schema",
    "sample_schema",
    "local_data_files",
    "is_data_file",
    "has_glob",
    "make_writer",
    "FileWriter",
    "file_extension",
]

#: Formats the file source reads and the file sink writes.
READ_FORMATS = ("csv", "json", "ndjson", "parquet", "avro", "excel")
WRITE_FORMATS = ("csv", "ndjson", "json", "parquet", "avro")

#: Byte-range size a large text file is split into. DESIGN §9 measured 8 MiB best when a range
#: was parsed whole; a line-split CSV range is now parsed in 4 MiB pieces, one ahead on a
#: helper thread (files_read.parse_pieces), and 32 MiB ranges leave only the first piece of
#: each unoverlapped: the 10M-row benchmark job ran ~26-29 s with 8 MiB, ~24.5-25 s with 32 MiB.
DEFAULT_SPLIT_BYTES = 32 << 20

#: How much of the first file is read to infer column types when no schema is declared.
SAMPLE_BYTES = 1 << 20
SAMPLE_ROWS = 1000

_DATA_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError, ValueError)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class CsvOptions:
    """How a CSV file is read.

    Args:
        delimiter: one field separator character.
        quote: the quote character, or None for no quoting.
        header: the first line (after ``skip_rows``) names the columns; else ``f0, f1, ...``.
        encoding: any Python codec name; ASCII-compatible ones (utf-8, latin-1, cp1252, ...)
            are split into byte ranges, others (utf-16, ...) are read sequentially.
        null_values: unquoted values read as null (a quoted ``""`` stays an empty string).
        skip_rows: lines skipped before the header.
        split: read large files as parallel byte ranges aligned to line starts. A file whose
            quoted values contain newlines must set ``split: false`` (read sequentially).
    """

    delimiter: str = ","
    quote: str | None = '"'
    header: bool = True
    encoding: str = "utf-8"
    null_values: tuple[str, ...] = ("",)
    skip_rows: int = 0
    split: bool = True

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1 or self.delimiter in "\r\n":
            raise ValueError(f"delimiter must be one character other than a newline, got {self.delimiter!r}")
        if self.quote is not None and (len(self.quote) != 1 or self.quote == self.delimiter):
            raise ValueError(f"quote must be one character different from the delimiter (or null), got {self.quote!r}")
        if self.skip_rows < 0:
            raise ValueError(f"skip_rows must be 0 or more, got {self.skip_rows}")
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}; use a Python codec name such as utf-8 or latin-1") from None
        object.__setattr__(self, "null_values", tuple(self.null_values))

    @property
    def utf8(self) -> bool:
        return codecs.lookup(self.encoding).name == "utf-8"

    @property
    def ascii_compatible(self) -> bool:
        """Whether newline, delimiter and quote bytes mean the same in this encoding (splittable)."""
        probe = "\n\r,;|\t\"'azAZ09"
        try:
            return probe.encode(self.encoding) == probe.encode("ascii")
        except UnicodeEncodeError:
            return False


# --------------------------------------------------------------------------- rejects


@dataclass
class Rejects:
    """Rows a parser rejected: where (0-based line or row within the chunk), why, and the text.

    ``to_dlq`` turns them into DLQ rows whose ``source`` is ``path:<first + position>``.
    """

    positions: list[int] = field(default_factory=list)
    error_types: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)

    def add(self, position: int, error_type: str, message: str, record: str) -> None:
        self.positions.append(int(position))
        self.error_types.append(error_type)
        self.messages.append(message)
        self.records.append(record)

    def extend(self, other: "Rejects", offset: int = 0) -> None:
        self.positions.extend(p + offset for p in other.positions)
        self.error_types.extend(other.error_types)
        self.messages.extend(other.messages)
        self.records.extend(other.records)

    def __len__(self) -> int:
        return len(self.positions)

    def to_dlq(self, *, step: str, path: str, first: int = 1, unit: str = "") -> list[pa.RecordBatch]:
        """DLQ batches (one per error type), ``source`` = ``path:[unit ]<first + position>``."""
        from beam_etl.dlq import dlq_batch

        out = []
        prefix = f"{unit} " if unit else ""
        for error_type in dict.fromkeys(self.error_types):
            idx = [i for i, kind in enumerate(self.error_types) if kind == error_type]
            out.append(
                dlq_batch(
                    None,
                    step=step,
                    error_type=error_type,
                    error_message=[self.messages[i] for i in idx],
                    source=[f"{path}:{prefix}{first + self.positions[i]}" for i in idx],
                    records=[self.records[i] for i in idx],
                )
            )
        return out


# --------------------------------------------------------------------------- lines of a chunk


class _Lines:
    """Start/end byte offsets of every line of a chunk (``\\r\\n`` aware), found with numpy."""

    def __init__(self, data: bytes):
        self.data = data
        arr = np.frombuffer(data, dtype=np.uint8)
        self.arr = arr
        newlines = np.flatnonzero(arr == 10)
        starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
        nexts = np.concatenate((newlines + 1, [len(data)])).astype(np.int64)
        if len(data) == 0 or starts[-1] == len(data):  # trailing newline: no empty last line
            starts, nexts = starts[:-1], nexts[:-1]
        ends = nexts.copy()
        ends[: len(newlines)] -= 1  # drop the '\n'
        has_cr = ends > starts
        has_cr[has_cr] = arr[ends[has_cr] - 1] == 13
        ends -= has_cr
        self.starts, self.ends, self.nexts, self.newlines = starts, ends, nexts, newlines

    def __len__(self) -> int:
        return len(self.starts)

    def text(self, index: int) -> bytes:
        return self.data[self.starts[index] : self.ends[index]]

    def nonempty(self) -> np.ndarray:
        return np.flatnonzero(self.ends > self.starts)

    def odd_quote_lines(self, quote: str) -> np.ndarray:
        """Lines with an odd number of quote characters (an unterminated quoted field)."""
        byte = quote.encode("ascii")
        if self.data.find(byte) < 0:
            return np.array([], dtype=np.int64)
        positions = np.flatnonzero(self.arr == byte[0])
        line_of = np.searchsorted(self.newlines, positions, side="left")
        counts = np.bincount(line_of, minlength=len(self) + 1)[: len(self)]
        return np.flatnonzero(counts % 2 == 1)

    def without(self, lines: Iterable[int]) -> bytes:
        """The chunk with ``lines`` (and their newlines) removed."""
        keep = np.ones(len(self.data), dtype=bool)
        for index in lines:  # only the few rejected lines
            keep[self.starts[index] : self.nexts[index]] = False
        return self.arr[keep].tobytes()


def _decode_text(raw: bytes, encoding: str = "utf-8") -> str:
    return raw.decode(encoding, errors="backslashreplace")


def _bad_encoding_lines(lines: _Lines, encoding: str) -> list[int]:
    """Lines that do not decode with ``encoding`` (checked line by line only when the chunk fails)."""
    try:
        lines.data.decode(encoding)
        return []
    except UnicodeDecodeError:
        pass
    bad = []
    for index in range(len(lines)):  # error path only: this chunk has undecodable bytes
        try:
            lines.data[lines.starts[index] : lines.nexts[index]].decode(encoding)
        except UnicodeDecodeError:
            bad.append(index)
    return bad


def _encoding_message(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    return f"invalid {name} bytes in this line; if the file is in another encoding set `encoding:` (e.g. latin-1)"


def _clean_chunk(
    data: bytes, encoding: str, quote: str | None, rejects: Rejects
) -> tuple[bytes, np.ndarray | None]:
    """Remove undecodable lines and (when ``quote``) lines with unbalanced quotes, recording them.

    Returns the UTF-8 data left and, when lines were removed or renumbered, the original
    line index of each remaining line (None: unchanged).
    """
    lines = _Lines(data)
    bad_encoding = _bad_encoding_lines(lines, encoding)
    for index in bad_encoding:
        rejects.add(index, "encoding", _encoding_message(encoding), _decode_text(lines.text(index), encoding))
    bad_quotes: list[int] = []
    if quote is not None:
        skip = set(bad_encoding)
        for index in lines.odd_quote_lines(quote).tolist():
            if index in skip:
                continue
            bad_quotes.append(index)
            rejects.add(
                index,
                "csv.parse",
                "unbalanced quotes (an unterminated quoted field); if quoted values in this file "
                "contain newlines set `split: false`",
                _decode_text(lines.text(index), encoding),
            )
    removed = sorted(set(bad_encoding) | set(bad_quotes))
    kept = None
    if removed:
        kept = np.setdiff1d(np.arange(len(lines)), np.array(removed, dtype=np.int64))
        data = lines.without(removed)
    if codecs.lookup(encoding).name != "utf-8":
        data = data.decode(encoding).encode("utf-8")
    return data, kept


# --------------------------------------------------------------------------- CSV


class Recoded(io.RawIOBase):
    """A read-only stream of UTF-8 bytes from a stream in a non-ASCII-compatible encoding (utf-16...)."""

    def __init__(self, stream: IO[bytes], encoding: str):
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self._pending = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._pending) < size):
            raw = self._stream.read(1 << 20 if size < 0 else max(size, 1 << 16))
            self._eof = not raw
            self._pending += self._decoder.decode(raw, final=self._eof).encode("utf-8")
        if size < 0:
            out, self._pending = self._pending, b""
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def close(self) -> None:
        self._stream.close()
        super().close()




def _dedupe_names(names: Sequence[str]) -> list[str]:
    """Column names made unique and non-empty (``a, a`` -> ``a, a_1``; ``''`` -> ``column2``)."""
    out: list[str] = []
    seen: set[str] = set()
    for index, name in enumerate(names):
        name = name if name else f"column{index}"
        candidate, n = name, 0
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


def _csv_parse_options(options: CsvOptions, handler: Callable | None) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote if options.quote is not None else False,
        newlines_in_values=not options.split,
        ignore_empty_lines=True,
        invalid_row_handler=handler,
    )


def _csv_convert_options(names: Sequence[str] | None, options: CsvOptions, as_strings: bool) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types={name: pa.string() for name in names} if (as_strings and names) else None,
        check_utf8=False,  # chunks are validated (and bad lines removed) before parsing
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        null_values=list(options.null_values),
    )


def _row_lines(
    nonempty: np.ndarray, invalid_ordinals: Sequence[int], parsed: pa.RecordBatch | None, invalid_texts: Sequence[str], exact: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Line index of each parsed row and of each invalid row.

    ``exact``: every non-empty line is one row, so row k starts on the k-th non-empty line.
    Otherwise a row spans ``1 + newlines in its values`` lines (quoted newlines).
    """
    n_parsed = parsed.num_rows if parsed is not None else 0
    total = n_parsed + len(invalid_ordinals)
    is_invalid = np.zeros(total, dtype=bool)
    ordinals = np.asarray(invalid_ordinals, dtype=np.int64)
    is_invalid[ordinals[ordinals < total]] = True
    if exact:
        starts = np.arange(total)
    else:
        spans = np.ones(total, dtype=np.int64)
        if n_parsed:
            extra = np.zeros(n_parsed, dtype=np.int64)
            for column in parsed.columns:
                if pa.types.is_string(column.type):
                    counts = pc.fill_null(pc.count_substring(column, "\n"), 0)
                    extra += counts.to_numpy(zero_copy_only=False).astype(np.int64)
            spans[~is_invalid] += extra
        for ordinal, text in zip(invalid_ordinals, invalid_texts):
            if ordinal < total:
                spans[ordinal] += text.count("\n")
        starts = np.cumsum(spans) - spans
    if len(nonempty) == 0:
        lines = np.zeros(total, dtype=np.int64)
    else:
        lines = nonempty[np.clip(starts, 0, len(nonempty) - 1)]
    return lines[~is_invalid], lines[is_invalid]


def parse_csv_chunk(
    data: bytes,
    names: Sequence[str],
    options: CsvOptions,
    target: pa.Schema | None = None,
    declared: frozenset[str] = frozenset(),
) -> tuple[pa.RecordBatch | None, Rejects]:
    """Parse a headerless CSV chunk of whole rows into one batch, rejecting bad lines.

    Args:
        data: whole lines (the chunk starts at a row start and ends after a row end).
        names: the column names (from the file's header, re-applied to every chunk).
        options: delimiter, quoting, encoding, nulls; ``options.split`` means one line = one row.
        target: the schema to coerce to (declared or inferred); None keeps every value a string.
        declared: names of ``target`` columns the user declared (for error messages).

    Returns the good rows (None when there are none) and the rejected lines: invalid bytes
    (``encoding``), unbalanced quotes or wrong field counts (``csv.parse``), values that do
    not fit ``target`` (``schema.coerce``). Positions are 0-based lines of ``data``.

    Example:
        >>> batch, rejects = parse_csv_chunk(b"1,x\\n", ["a", "b"], CsvOptions())
        >>> batch.to_pylist()
        [{'a': '1', 'b': 'x'}]
    """
    rejects = Rejects()
    clean, kept = _clean_chunk(data, options.encoding, options.quote if options.split else None, rejects)
    invalid: list[tuple[int, str, str]] = []

    def handler(row) -> str:
        message = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        invalid.append((row.number, message, row.text))
        return "skip"

    parsed: pa.RecordBatch | None = None
    lines = _Lines(clean)
    nonempty = lines.nonempty()
    original = kept[nonempty] if kept is not None else nonempty
    if len(nonempty):
        try:
            table = pacsv.read_csv(
                io.BytesIO(clean),
                read_options=pacsv.ReadOptions(
                    column_names=list(names), use_threads=False, block_size=max(len(clean) + 1, 1 << 16)
                ),
                parse_options=_csv_parse_options(options, handler),
                convert_options=_csv_convert_options(names, options, as_strings=True),
            )
        except pa.ArrowInvalid as exc:  # not a field-count problem: reject the chunk's rows, keep going
            for index in nonempty.tolist():
                line_no = int(kept[index]) if kept is not None else index
                rejects.add(line_no, "csv.parse", str(exc), _decode_text(lines.text(index)))
            return None, rejects
        parsed = table.combine_chunks().to_batches()[0] if table.num_rows else None
    n_parsed = parsed.num_rows if parsed is not None else 0
    exact = options.split and n_parsed + len(invalid) == len(nonempty)
    invalid_ordinals = [number - 1 if number is not None else 0 for number, _, _ in invalid]
    parsed_lines = invalid_lines = None
    if invalid:  # line numbers are worked out only for chunks with rejects
        parsed_lines, invalid_lines = _row_lines(original, invalid_ordinals, parsed, [t for _, _, t in invalid], exact)
        for (_, message, text), line in zip(invalid, invalid_lines.tolist()):
            rejects.add(line, "csv.parse", message, text)
    if parsed is None:
        return None, rejects
    bad_rows: dict[int, str] = {}
    if options.split and not exact:
        # A balanced-quote line still opened a quoted field that swallowed later lines.
        mask = None
        for column in parsed.columns:
            has = pc.fill_null(pc.match_substring(column, "\n"), False)
            mask = has if mask is None else pc.or_(mask, has)
        for index in np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist():
            bad_rows[index] = "a quoted field spans lines; if quoted values in this file contain newlines set `split: false`"
    out, errors = coerce_batch(parsed, target, declared) if target is not None else (parsed, {})
    for index, message in errors.items():
        bad_rows.setdefault(index, message)
    if bad_rows:
        if parsed_lines is None:
            parsed_lines, _ = _row_lines(original, invalid_ordinals, parsed, [t for _, _, t in invalid], exact)
        _reject_rows(parsed, bad_rows, parsed_lines, rejects, "schema.coerce", parse_error_type="csv.parse")
        out = _drop_rows(out, bad_rows)
    return (out if out.num_rows else None), rejects


def _reject_rows(
    batch: pa.RecordBatch,
    bad_rows: Mapping[int, str],
    positions: np.ndarray | Sequence[int] | None,
    rejects: Rejects,
    error_type: str,
    parse_error_type: str | None = None,
) -> None:
    """Record rows of ``batch`` as rejects, their original values as JSON in ``record``."""
    from beam_etl.json_rows import rows_as_json

    indices = sorted(bad_rows)
    records = rows_as_json(batch.take(pa.array(indices, type=pa.int64()))).to_pylist()
    for index, record in zip(indices, records):
        message = bad_rows[index]
        kind = parse_error_type if (parse_error_type and message.startswith("a quoted field")) else error_type
        position = int(positions[index]) if positions is not None else index
        rejects.add(position, kind, message, record)


def _drop_rows(batch: pa.RecordBatch, bad_rows: Mapping[int, Any]) -> pa.RecordBatch:
    if not bad_rows:
        return batch
    keep = np.ones(batch.num_rows, dtype=bool)
    keep[list(bad_rows)] = False
    return batch.filter(pa.array(keep))


def read_csv_header(stream: IO[bytes], options: CsvOptions) -> tuple[list[str], int, int]:
    """Column names of a CSV stream and where its data starts.

    Returns ``(names, data_offset, lines_before_data)``: the byte offset just after
    ``skip_rows`` lines and the header line (or after the skipped lines when
    ``header`` is false, naming columns ``f0, f1, ...`` from the first data line). An empty
    file gives ``([], offset, lines)``.
    """
    offset = 0
    head = stream.read(3)
    if options.utf8 and head == codecs.BOM_UTF8:
        offset = 3
        head = b""
    buffer = head
    lines_needed = options.skip_rows + 1
    eof = False
    while buffer.count(b"\n") < lines_needed and not eof and len(buffer) < (64 << 20):
        more = stream.read(1 << 16)
        eof = not more
        buffer += more
    position = 0
    for _ in range(options.skip_rows):
        nl = buffer.find(b"\n", position)
        if nl < 0:
            return [], offset + len(buffer), options.skip_rows
        position = nl + 1
    nl = buffer.find(b"\n", position)
    line = buffer[position:] if nl < 0 else buffer[position:nl]
    line_end = len(buffer) if nl < 0 else nl + 1
    if not line.strip(b"\r"):
        return [], offset + line_end, options.skip_rows + 1
    text = line.rstrip(b"\r").decode(options.encoding, errors="replace")
    reader = _pycsv.reader(
        [text],
        delimiter=options.delimiter,
        quotechar=options.quote or '"',
        quoting=_pycsv.QUOTE_MINIMAL if options.quote else _pycsv.QUOTE_NONE,
    )
    fields = next(reader, [])
    if options.header:
        return _dedupe_names([f.strip() for f in fields]), offset + line_end, options.skip_rows + 1
    return [f"f{i}" for i in range(len(fields))], offset + position, options.skip_rows


def infer_csv_schema(sample: bytes, names: Sequence[str], options: CsvOptions) -> pa.Schema:
    """Column types Arrow infers from the first rows (a sample of whole lines, no header).

    All-null columns are typed ``string``.
    """
    end = sample.rfind(b"\n")
    sample = sample[: end + 1] if end >= 0 else sample
    clean, _ = _clean_chunk(sample, options.encoding, options.quote if options.split else None, Rejects())
    if not clean.strip():
        return pa.schema([pa.field(name, pa.string()) for name in names])
    table = pacsv.read_csv(
        io.BytesIO(clean),
        read_options=pacsv.ReadOptions(column_names=list(names), use_threads=False, block_size=max(len(clean) + 1, 1 << 16)),
        parse_options=_csv_parse_options(options, lambda row: "skip"),
        convert_options=_csv_convert_options(None, options, as_strings=False),
    )
    return _strings_for_nulls(table.schema)


def _strings_for_nulls(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema])


# --------------------------------------------------------------------------- coercion


def _cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    if array.type == target:
        return array
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), type=target)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if _is_text(target) and (pa.types.is_nested(array.type) or pa.types.is_map(array.type)):
        return pa.array(_json_texts(array), type=target)  # nested -> JSON text: per row, no Arrow cast exists
    if pa.types.is_boolean(target) and _is_text(array.type):
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(array))
        true = pc.is_in(lowered, value_set=pa.array(["true", "1", "t", "yes", "y"]))
        false = pc.is_in(lowered, value_set=pa.array(["false", "0", "f", "no", "n"]))
        bad = pc.and_(pc.is_valid(array), pc.invert(pc.or_(true, false)))
        if pc.any(bad).as_py():
            first = array.filter(bad)[0].as_py()
            raise pa.ArrowInvalid(f"cannot read {first!r} as a boolean")
        return pc.if_else(pc.is_null(array), pa.scalar(None, pa.bool_()), true)
    return array.cast(target, safe=True)


def _is_text(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def _json_texts(array: pa.Array) -> list[str | None]:
    from beam_etl.batch import to_json_value

    return [None if v is None else json.dumps(to_json_value(v), ensure_ascii=False) for v in array.to_pylist()]


def coerce_batch(
    batch: pa.RecordBatch, target: pa.Schema | None, declared: frozenset[str] | Iterable[str] = frozenset()
) -> tuple[pa.RecordBatch, dict[int, str]]:
    """Cast ``batch`` to ``target``'s types; the rows that cannot be cast are named, not fatal.

    The result has ``target``'s columns in order (a missing column is null) followed by
    any other columns of ``batch`` unchanged. Each column is cast vectorized; only a column
    whose cast fails is bisected to find its bad rows (those get null in the result and a
    message in the returned ``{row: message}``; drop them before use).

    Args:
        batch: the rows as read.
        target: the declared (or inferred) schema; None returns ``batch`` unchanged.
        declared: target columns the user declared, for the hint in messages.

    Example:
        >>> b = pa.RecordBatch.from_pydict({"n": ["1", "x"]})
        >>> out, bad = coerce_batch(b, pa.schema([("n", pa.int64())]), {"n"})
        >>> out.column(0).to_pylist(), list(bad)
        ([1, None], [1])
    """
    if target is None:
        return batch, {}
    from beam_etl.casting import cast_isolating_errors

    declared = frozenset(declared)
    arrays, fields, errors = [], [], {}
    for target_field in target:
        index = batch.schema.get_field_index(target_field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, type=target_field.type))
        else:
            column = batch.column(index)
            try:
                arrays.append(_cast(column, target_field.type))
            except _DATA_ERRORS:
                try:
                    values, failed = cast_isolating_errors(column, target_field.type, lambda a: _cast(a, target_field.type))
                except _DATA_ERRORS:  # not implemented for this pair of types: every row fails
                    values, failed = pa.nulls(batch.num_rows, type=target_field.type), {i: "" for i in range(batch.num_rows)}
                arrays.append(values)
                origin = (
                    "the declared schema"
                    if target_field.name in declared
                    else f"the type inferred from the first rows; declare `schema: {{{target_field.name}: string}}` to keep such values"
                )
                for row in failed:
                    if row not in errors:
                        value = column[row].as_py()
                        shown = value if not isinstance(value, (bytes, str)) or len(value) < 200 else value[:200]
                        errors[row] = (
                            f"column '{target_field.name}': {shown!r} is not a valid {target_field.type} ({origin})"
                        )
        fields.append(pa.field(target_field.name, target_field.type))
    wanted = set(target.names)
    for index, existing in enumerate(batch.schema):
        if existing.name not in wanted:
            arrays.append(batch.column(index))
            fields.append(existing)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)), errors


def merge_schemas(declared: pa.Schema | None, inferred: pa.Schema | None) -> pa.Schema | None:
    """Declared columns (with their types) first, then inferred columns not declared."""
    if declared is None:
        return inferred
    if inferred is None:
        return declared
    names = set(declared.names)
    return pa.schema(list(declared) + [f for f in inferred if f.name not in names])


# --------------------------------------------------------------------------- python rows


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, _decimal.Decimal)):
        return str(value)
    if isinstance(value, (_dt.date, _dt.datetime, _dt.time)):
        return value.isoformat()
    return json.dumps(value, ensure_ascii=False, default=str)


def _python_array(values: list, data_type: pa.DataType | None) -> pa.Array:
    if data_type is not None:
        try:
            return pa.array(values, type=data_type)
        except _DATA_ERRORS:
            pass
    try:
        array = pa.array(values)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        return array
    except _DATA_ERRORS:
        return pa.array([_as_text(v) for v in values], type=pa.string())  # mixed types: keep the text


def python_rows_to_batch(
    rows: Sequence[Mapping[str, Any]], target: pa.Schema | None = None
) -> pa.RecordBatch:
    """A batch from row dicts, converting each column in one call (types: ``target``'s, else inferred).

    A column whose values do not fit one Arrow type keeps them as text, so
    :func:`coerce_batch` can then reject exactly the rows that do not fit ``target``.
    """
    names: dict[str, None] = dict.fromkeys(target.names) if target is not None else {}
    for row in rows:  # per row: dict keys are only reachable row by row
        names.update(dict.fromkeys(row))
    types = {f.name: f.type for f in target} if target is not None else {}
    arrays = [_python_array([row.get(name) for row in rows], types.get(name)) for name in names]
    return pa.RecordBatch.from_arrays(arrays, names=list(names)) if names else pa.RecordBatch.from_pydict({})


def coerce_rows(
    rows: list[dict], positions: Sequence[int], target: pa.Schema | None, declared: frozenset[str], rejects: Rejects
) -> pa.RecordBatch | None:
    """Row dicts -> one batch coerced to ``target``; rows that do not fit are added to ``rejects``
    at their ``positions`` (``schema.coerce``). None when no row is left.
    """
    if not rows:
        return None
    batch = python_rows_to_batch(rows, target)
    out, errors = coerce_batch(batch, target, declared)
    if errors:
        _reject_rows(batch, errors, positions, rejects, "schema.coerce")
        out = _drop_rows(out, errors)
    return out if out.num_rows else None


# --------------------------------------------------------------------------- NDJSON


def parse_ndjson_chunk(
    data: bytes, target: pa.Schema | None = None, declared: frozenset[str] = frozenset()
) -> tuple[pa.RecordBatch | None, Rejects]:
    """Parse a chunk of whole JSON lines into one batch, rejecting bad lines.

    ``pyarrow.json`` parses the chunk in one call; only when that fails (an invalid line, a
    value whose JSON type changes between rows) is the chunk parsed line by line with
    ``json`` to find and reject exactly the bad lines. Positions are 0-based lines of ``data``.

    Example:
        >>> batch, rejects = parse_ndjson_chunk(b'{"a": 1}\\n{"a": \\n')
        >>> batch.to_pylist(), rejects.error_types
        ([{'a': 1}], ['json.parse'])
    """
    rejects = Rejects()
    clean, kept = _clean_chunk(data, "utf-8", None, rejects)
    lines = _Lines(clean)
    nonempty = lines.nonempty()
    if not len(nonempty):
        return None, rejects
    original = kept[nonempty] if kept is not None else nonempty
    explicit = None
    if target is not None:
        strings = [f for f in target if _is_text(f.type)]
        explicit = pa.schema(strings) if strings else None
    try:
        table = pajson.read_json(
            io.BytesIO(clean),
            read_options=pajson.ReadOptions(use_threads=False, block_size=max(len(clean) + 1, 1 << 16)),
            parse_options=pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer"),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        table = None
    if table is None or table.num_rows != len(nonempty):
        return parse_json_lines_python(lines, original, target, declared, rejects)
    if not table.num_rows:
        return None, rejects
    batch = table.combine_chunks().to_batches()[0]
    out, errors = coerce_batch(batch, target, declared) if target is not None else (batch, {})
    if errors:
        _reject_rows(batch, errors, original, rejects, "schema.coerce")
        out = _drop_rows(out, errors)
    return (out if out.num_rows else None), rejects


def parse_json_lines_python(
    lines: _Lines, original: np.ndarray, target: pa.Schema | None, declared: frozenset[str], rejects: Rejects
) -> tuple[pa.RecordBatch | None, Rejects]:
    """The error path of :func:`parse_ndjson_chunk`: ``json.loads`` per line (bad lines rejected)."""
    rows: list[dict] = []
    positions: list[int] = []
    for index, line_no in zip(lines.nonempty().tolist(), original.tolist()):
        raw = lines.text(index)
        text = raw.decode("utf-8")
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            rejects.add(line_no, "json.parse", f"invalid JSON: {exc}", text)
            continue
        if not isinstance(value, dict):
            rejects.add(line_no, "json.parse", f"expected a JSON object, found {type(value).__name__}", text)
            continue
        rows.append(value)
        positions.append(line_no)
    return coerce_rows(rows, positions, target, declared, rejects), rejects


def infer_ndjson_schema(sample: bytes) -> pa.Schema | None:
    """Types of the first lines of an NDJSON file (all-null columns typed ``string``)."""
    end = sample.rfind(b"\n")
    sample = sample[: end + 1] if end >= 0 else sample
    if sample.startswith(codecs.BOM_UTF8):
        sample = sample[3:]
    batch, _ = parse_ndjson_chunk(sample)
    return _strings_for_nulls(batch.schema) if batch is not None else None


# --------------------------------------------------------------------------- JSON documents


def detect_json_layout(stream: IO[bytes]) -> str:
    """``array`` (``[{...}, ...]``), ``lines`` (one object per line) or ``document`` (one object).

    Reads only the start of the stream.
    """
    head = stream.read(1 << 16)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("["):
        return "array"
    first_line = text.split("\n", 1)[0].strip()
    try:
        if isinstance(json.loads(first_line), dict) and len(head) > 0:
            return "lines"
    except ValueError:
        pass
    return "document" if text.startswith("{") else "lines"


_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass
class _JsonItem:
    line: int
    value: Any = None
    error_type: str | None = None
    message: str = ""
    text: str = ""


class JsonArrayReader:
    """Stream the elements of a top-level JSON array, never holding the whole file.

    Yields :class:`_JsonItem` per element with the line it starts on. An element with
    invalid UTF-8 becomes an ``encoding`` item; text that is not valid JSON ends the stream
    with one ``json.parse`` item (the rest of the array cannot be located reliably).
    Per element Python: ``json`` decodes arrays element by element, pyarrow reads only lines.

    Example:
        >>> [item.value for item in JsonArrayReader(io.BytesIO(b'[{"a": 1},\\n {"a": 2}]'))]
        [{'a': 1}, {'a': 2}]
    """

    def __init__(self, stream: IO[bytes], block_bytes: int = 1 << 20, max_element_bytes: int = 256 << 20):
        self._stream = stream
        self._block = block_bytes
        self._max = max_element_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._json = json.JSONDecoder()
        self._buf = ""
        self._eof = False
        self._dirty = False  # the buffer holds undecodable bytes (as surrogates)

    def _more(self) -> bool:
        if self._eof:
            return False
        raw = self._stream.read(self._block)
        if not raw:
            self._eof = True
            self._buf += self._decoder.decode(b"", final=True)
            return False
        text = self._decoder.decode(raw)
        if not self._dirty and _SURROGATE.search(text):
            self._dirty = True
        self._buf += text
        return True

    def __iter__(self) -> Iterator[_JsonItem]:
        pos, line = 0, 1
        state = "start"
        while True:
            while True:  # skip whitespace, loading more text as needed
                n = len(self._buf)
                while pos < n and self._buf[pos] in " \t\r\n\ufeff":
                    if self._buf[pos] == "\n":
                        line += 1
                    pos += 1
                if pos < n or not self._more():
                    break
            if pos >= len(self._buf):
                if state != "done":
                    yield _JsonItem(line, error_type="json.parse", message="the JSON array is not closed (truncated file?)")
                return
            char = self._buf[pos]
            if state == "start":
                if char != "[":
                    yield _JsonItem(line, error_type="json.parse", message=f"expected '[' to start a JSON array, found {char!r}", text=self._buf[pos : pos + 200])
                    return
                pos, state = pos + 1, "first"
                continue
            if state == "done":
                yield _JsonItem(line, error_type="json.parse", message="unexpected text after the JSON array", text=self._buf[pos : pos + 200])
                return
            if char == "]" and state in ("first", "sep"):
                pos, state = pos + 1, "done"
                continue
            if state == "sep":
                if char != ",":
                    yield _JsonItem(line, error_type="json.parse", message=f"expected ',' or ']' between array elements, found {char!r}", text=self._buf[pos : pos + 200])
                    return
                pos, state = pos + 1, "elem"
                continue
            # an element: decode, reading more text while it may be incomplete
            while True:
                try:
                    value, end = self._json.raw_decode(self._buf, pos)
                    if end == len(self._buf) and self._more():
                        continue  # a number cut at the block end: decode again with more text
                    break
                except json.JSONDecodeError as exc:
                    if len(self._buf) - pos > self._max or not self._more():
                        rest = self._buf[pos : pos + 1000]
                        err_line = line + self._buf.count("\n", pos, exc.pos)
                        yield _JsonItem(
                            err_line,
                            error_type="json.parse",
                            message=f"invalid JSON in the array ({exc.msg} at line {err_line} column {exc.colno}); the rest of the file was not read",
                            text=rest,
                        )
                        return
            text = self._buf[pos:end]
            if self._dirty and _SURROGATE.search(text):
                yield _JsonItem(line, error_type="encoding", message=_encoding_message("utf-8"), text=text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
            elif not isinstance(value, dict):
                yield _JsonItem(line, error_type="json.parse", message=f"expected a JSON object in the array, found {type(value).__name__}", text=text[:1000])
            else:
                yield _JsonItem(line, value=value)
            line += self._buf.count("\n", pos, end)
            pos, state = end, "sep"
            if pos > (4 << 20):  # keep the buffer bounded
                self._buf = self._buf[pos:]
                pos = 0


def read_json_document(stream: IO[bytes], records_path: str | None) -> list[Any]:
    """The records of a single JSON document: the array at ``records_path`` (dotted keys), or
    the document itself as one record. Reads the whole document (it is one JSON value).
    """
    value = json.load(io.TextIOWrapper(stream, encoding="utf-8-sig"))
    if records_path:
        for key in records_path.split("."):
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                raise KeyError(f"records_path '{records_path}': key '{key}' not found")
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------- Avro


_AVRO_PRIMITIVES = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}


def _avro_type(schema: Any, named: dict[str, pa.DataType]) -> pa.DataType:
    if isinstance(schema, str):
        if schema in _AVRO_PRIMITIVES:
            return _AVRO_PRIMITIVES[schema]
        return named.get(schema, pa.string())
    if isinstance(schema, list):  # a union
        branches = [s for s in schema if s != "null"]
        if len(branches) == 1:
            return _avro_type(branches[0], named)
        return pa.string()  # a multi-type union: kept as JSON text
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical == "date":
        return pa.date32()
    if logical in ("timestamp-millis", "timestamp-micros"):
        return pa.timestamp("ms" if logical.endswith("millis") else "us", tz="UTC")
    if logical in ("local-timestamp-millis", "local-timestamp-micros"):
        return pa.timestamp("ms" if logical.endswith("millis") else "us")
    if logical == "time-millis":
        return pa.time32("ms")
    if logical == "time-micros":
        return pa.time64("us")
    if logical == "decimal":
        return pa.decimal128(int(schema.get("precision", 38)), int(schema.get("scale", 0)))
    if logical == "uuid":
        return pa.string()
    if kind == "record":
        result = pa.struct([pa.field(f["name"], _avro_type(f["type"], named)) for f in schema["fields"]])
        named[schema.get("name", "")] = result
        return result
    if kind == "array":
        return pa.list_(_avro_type(schema["items"], named))
    if kind == "map":
        return pa.map_(pa.string(), _avro_type(schema["values"], named))
    if kind == "enum":
        return pa.string()
    if kind == "fixed":
        return pa.binary()
    return _avro_type(kind, named)


def avro_to_arrow_schema(avro_schema: Mapping[str, Any]) -> pa.Schema:
    """The Arrow schema of Avro records (``["null", T]`` unions become nullable ``T``).

    Multi-type unions are read as JSON text.
    """
    if avro_schema.get("type") != "record":
        return pa.schema([pa.field("value", _avro_type(avro_schema, {}))])
    named: dict[str, pa.DataType] = {}
    return pa.schema([pa.field(f["name"], _avro_type(f["type"], named)) for f in avro_schema["fields"]])


_AVRO_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _arrow_to_avro_type(data_type: pa.DataType, name: str, path: str, names: dict[str, int]) -> Any:
    t = pa.types
    if t.is_null(data_type):
        return "null"
    if t.is_boolean(data_type):
        return "boolean"
    if t.is_int8(data_type) or t.is_int16(data_type) or t.is_int32(data_type) or t.is_uint8(data_type) or t.is_uint16(data_type):
        return "int"
    if t.is_int64(data_type) or t.is_uint32(data_type) or t.is_uint64(data_type):
        return "long"  # uint64 values above 2**63-1 are rejected when the rows are checked
    if t.is_float16(data_type) or t.is_float32(data_type):
        return "float"
    if t.is_float64(data_type):
        return "double"
    if t.is_string(data_type) or t.is_large_string(data_type):
        return "string"
    if t.is_binary(data_type) or t.is_large_binary(data_type) or t.is_fixed_size_binary(data_type):
        return "bytes"
    if t.is_date(data_type):
        return {"type": "int", "logicalType": "date"}
    if t.is_timestamp(data_type):
        unit = "millis" if data_type.unit in ("s", "ms") else "micros"
        logical = f"timestamp-{unit}" if data_type.tz else f"local-timestamp-{unit}"
        return {"type": "long", "logicalType": logical}
    if t.is_time32(data_type):
        return {"type": "int", "logicalType": "time-millis"}
    if t.is_time64(data_type):
        return {"type": "long", "logicalType": "time-micros"}
    if t.is_decimal(data_type):
        return {"type": "bytes", "logicalType": "decimal", "precision": data_type.precision, "scale": data_type.scale}
    if t.is_dictionary(data_type):
        return _arrow_to_avro_type(data_type.value_type, name, path, names)
    if t.is_list(data_type) or t.is_large_list(data_type) or t.is_fixed_size_list(data_type):
        item = _arrow_to_avro_type(data_type.value_type, name + "_item", path + "[]", names)
        return {"type": "array", "items": ["null", item] if item != "null" else "null"}
    if t.is_map(data_type):
        if not _is_text(data_type.key_type):
            raise ValueError(f"column '{path}' is a map with {data_type.key_type} keys; Avro maps need string keys (cast the keys to string)")
        value = _arrow_to_avro_type(data_type.item_type, name + "_value", path + "{}", names)
        return {"type": "map", "values": ["null", value] if value != "null" else "null"}
    if t.is_struct(data_type):
        record_name = _unique_record_name(name, names)
        fields = []
        for child in data_type:
            fields.append(_avro_field(child, f"{path}.{child.name}", names))
        return {"type": "record", "name": record_name, "fields": fields}
    raise ValueError(f"column '{path}' has type {data_type}, which Avro cannot hold; cast it (e.g. to string or int64) before this sink")


def _unique_record_name(name: str, names: dict[str, int]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name) or "record"
    if base[0].isdigit():
        base = "_" + base
    count = names.get(base, 0)
    names[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def _avro_field(f: pa.Field, path: str, names: dict[str, int]) -> dict[str, Any]:
    if not _AVRO_NAME.match(f.name):
        raise ValueError(f"column '{path}' is not a valid Avro field name (letters, digits, _; not starting with a digit); rename it before this sink")
    inner = _arrow_to_avro_type(f.type, f.name, path, names)
    return {"name": f.name, "type": ["null", inner] if inner != "null" else "null", "default": None}


def arrow_to_avro_schema(schema: pa.Schema, name: str = "Row") -> dict[str, Any]:
    """An Avro record schema for ``schema`` (every field a ``["null", T]`` union).

    Raises ValueError naming the column when a type or a name cannot be held by Avro.
    """
    names: dict[str, int] = {name: 1}
    return {"type": "record", "name": name, "fields": [_avro_field(f, f.name, names) for f in schema]}


def _json_text_columns(schema: pa.Schema, avro_schema: Mapping[str, Any]) -> set[str]:
    """Columns read from multi-type unions (kept as JSON text)."""
    out = set()
    if avro_schema.get("type") != "record":
        return out
    for f in avro_schema["fields"]:
        branches = [s for s in f["type"] if s != "null"] if isinstance(f["type"], list) else []
        if len(branches) > 1:
            out.add(f["name"])
    return out


def avro_records_to_batch(records: Sequence[Mapping[str, Any]], schema: pa.Schema, text_columns: set[str] = frozenset()) -> pa.RecordBatch:
    """A batch from decoded Avro records, each column converted in one call to its mapped type."""
    arrays = []
    for f in schema:
        values = [r.get(f.name) for r in records]
        if f.name in text_columns:
            values = [_as_text(v) for v in values]
        elif pa.types.is_map(f.type):
            values = [list(v.items()) if isinstance(v, dict) else v for v in values]
        try:
            arrays.append(pa.array(values, type=f.type))
        except _DATA_ERRORS:
            arrays.append(_python_array(values, None))
    return pa.RecordBatch.from_arrays(arrays, names=schema.names)


# --------------------------------------------------------------------------- Excel


class ExcelRows:
    """Rows of one worksheet (openpyxl, read-only streaming), with names from the header row.

    Args:
        stream: a seekable binary stream of an ``.xlsx`` workbook.
        sheet: a sheet name or 0-based index (default: the first sheet).
        header: the first row (after ``skip_rows``) names the columns.
        skip_rows: rows skipped before the header.

    Iterating yields ``(row_number, values)`` with 1-based sheet row numbers; fully empty
    rows are skipped.
    """

    def __init__(self, stream: IO[bytes], sheet: str | int | None = None, header: bool = True, skip_rows: int = 0):
        import openpyxl

        self._workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
        if sheet is None:
            self.sheet = self._workbook.worksheets[0]
        elif isinstance(sheet, int):
            if sheet >= len(self._workbook.worksheets):
                raise KeyError(f"sheet index {sheet} out of range (the workbook has {len(self._workbook.worksheets)} sheets)")
            self.sheet = self._workbook.worksheets[sheet]
        else:
            if sheet not in self._workbook.sheetnames:
                raise KeyError(f"no sheet named {sheet!r}; sheets: {', '.join(self._workbook.sheetnames)}")
            self.sheet = self._workbook[sheet]
        self.sheet_name = self.sheet.title
        self._rows = enumerate(self.sheet.iter_rows(values_only=True), start=1)
        for _ in range(skip_rows):
            next(self._rows, None)
        self.names: list[str] = []
        self._first: tuple[int, tuple] | None = None
        first = next(self._rows, None)
        if first is not None:
            if header:
                self.names = _dedupe_names(["" if v is None else str(v).strip() for v in first[1]])
            else:
                self._first = first
                self.names = [f"f{i}" for i in range(len(first[1]))]

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        rows = self._rows if self._first is None else _chain_first(self._first, self._rows)
        width = len(self.names)
        for number, values in rows:
            if all(v is None for v in values):
                continue
            if len(values) > width:  # cells beyond the header get generated names
                for i in range(width, len(values)):
                    self.names.append(f"column{i}")
                width = len(values)
            yield number, dict(zip(self.names, values))

    def close(self) -> None:
        self._workbook.close()


def _chain_first(first, rest):
    yield first
    yield from rest


# --------------------------------------------------------------------------- matching (local)


def has_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def is_data_file(path: str, base: str = "") -> bool:
    """False for hidden and bookkeeping files (``.x``, ``_SUCCESS``) below ``base``."""
    rest = path[len(base) :] if base and path.startswith(base) else os.path.basename(path)
    parts = [p for p in re.split(r"[/\\]", rest) if p]
    return not any(p.startswith((".", "_")) for p in parts)


def _glob_base(pattern: str) -> str:
    """The directory part of ``pattern`` before its first wildcard."""
    index = min((pattern.find(ch) for ch in "*?[" if ch in pattern), default=len(pattern))
    head = pattern[:index]
    cut = max(head.rfind("/"), head.rfind(os.sep))
    return head[: cut + 1]


def local_data_files(pattern: str) -> list[str]:
    """Files a local path names: the file, a directory's files (not recursive), or a glob.

    Hidden files and names starting with ``_`` or ``.`` are skipped; sorted.
    """
    if has_glob(pattern):
        base = _glob_base(pattern)
        found = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
        return sorted(p for p in found if is_data_file(p, base))
    if os.path.isdir(pattern):
        base = pattern if pattern.endswith(("/", os.sep)) else pattern + os.sep
        return sorted(
            os.path.join(base, name)
            for name in os.listdir(pattern)
            if os.path.isfile(os.path.join(base, name)) and is_data_file(name)
        )
    return [pattern] if os.path.isfile(pattern) else []


# --------------------------------------------------------------------------- schema samples


def sample_schema(
    fmt: str,
    open_fn: Callable[..., IO[bytes]],
    path: str,
    *,
    csv_options: CsvOptions | None = None,
    records_path: str | None = None,
    sheet: str | int | None = None,
    header: bool = True,
    skip_rows: int = 0,
) -> pa.Schema | None:
    """The schema of one file from its header, footer or first rows (never the whole file).

    ``open_fn(path, compressed=bool)`` opens the file (decompressing text formats when
    ``compressed``). Raises the format's own errors for unreadable files.
    """
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with open_fn(path, compressed=False) as handle:
            return pq.ParquetFile(handle).schema_arrow
    if fmt == "avro":
        import fastavro

        with open_fn(path, compressed=False) as handle:
            return avro_to_arrow_schema(fastavro.reader(handle).writer_schema)
    if fmt == "excel":
        with open_fn(path, compressed=False) as handle:
            rows = ExcelRows(io.BytesIO(handle.read()), sheet=sheet, header=header, skip_rows=skip_rows)
            sample = [row for _, row in _take(iter(rows), SAMPLE_ROWS)]
            rows.close()
            batch = python_rows_to_batch(sample) if sample else None
            names = rows.names
            if batch is None:
                return pa.schema([pa.field(n, pa.string()) for n in names]) if names else None
            return _strings_for_nulls(batch.schema)
    if fmt == "csv":
        options = csv_options or CsvOptions()
        text_options = options
        if not options.ascii_compatible:  # utf-16 & co: parse the UTF-8 recoding
            text_options = CsvOptions(**{**options.__dict__, "encoding": "utf-8"})

        def open_text():
            handle = open_fn(path, compressed=True)
            return handle if options.ascii_compatible else Recoded(handle, options.encoding)

        with open_text() as handle:
            names, offset, _ = read_csv_header(handle, text_options)
        if not names:
            return None
        with open_text() as handle:
            _skip(handle, offset)
            sample = handle.read(SAMPLE_BYTES)
        return infer_csv_schema(sample, names, text_options)
    if fmt in ("json", "ndjson"):
        with open_fn(path, compressed=True) as handle:
            layout = "lines" if fmt == "ndjson" else detect_json_layout(handle)
        with open_fn(path, compressed=True) as handle:
            if layout == "lines":
                return infer_ndjson_schema(handle.read(SAMPLE_BYTES))
            if layout == "array" and not records_path:
                values = [item.value for item in _take(iter(JsonArrayReader(handle)), SAMPLE_ROWS) if item.error_type is None]
            else:
                values = [v for v in read_json_document(handle, records_path)[:SAMPLE_ROWS] if isinstance(v, dict)]
        if not values:
            return None
        return _strings_for_nulls(python_rows_to_batch(values).schema)
    raise ValueError(f"unknown file format '{fmt}'; use one of {', '.join(READ_FORMATS)}")


def _take(iterator: Iterator, n: int) -> Iterator:
    for i, item in enumerate(iterator):
        if i >= n:
            return
        yield item


def _skip(handle: IO[bytes], offset: int) -> None:
    if offset <= 0:
        return
    try:
        handle.seek(offset)
    except (OSError, io.UnsupportedOperation, AttributeError):
        while offset > 0:
            got = handle.read(min(offset, 1 << 20))
            if not got:
                return
            offset -= len(got)


# --------------------------------------------------------------------------- writers


_TEXT_COMPRESSION = {None: "", "none": "", "gzip": ".gz", "gz": ".gz", "bzip2": ".bz2", "bz2": ".bz2", "zstd": ".zst", "deflate": ".deflate"}
_PARQUET_COMPRESSION = ("snappy", "zstd", "gzip", "brotli", "lz4", "none")
_AVRO_CODECS = ("null", "deflate", "snappy", "zstandard", "bzip2", "xz")


def file_extension(fmt: str, compression: str | None = None) -> str:
    """The file name suffix of a written shard (``.csv.gz``, ``.parquet``, ...)."""
    base = {"csv": ".csv", "ndjson": ".ndjson", "json": ".json", "parquet": ".parquet", "avro": ".avro"}[fmt]
    if fmt in ("csv", "ndjson", "json"):
        return base + _TEXT_COMPRESSION[compression.lower() if compression else None]
    return base


def check_compression(fmt: str, compression: str | None) -> None:
    """Raise ValueError when ``compression`` does not apply to ``fmt``."""
    if compression is None:
        return
    value = compression.lower()
    allowed: Sequence[str | None]
    if fmt in ("csv", "ndjson", "json"):
        allowed = [k for k in _TEXT_COMPRESSION if k]
    elif fmt == "parquet":
        allowed = _PARQUET_COMPRESSION
    else:
        allowed = _AVRO_CODECS
    if value not in allowed:
        raise ValueError(f"compression '{compression}' does not apply to {fmt}; use one of {', '.join(allowed)}")


class FileWriter:
    """Writes batches of one schema to one open stream; subclasses per format.

    ``prepare(batch)`` returns the batch to write plus the rows that cannot be written with
    a reason (they go to the DLQ); it is separate from ``write`` so a rejected batch never
    leaves a half-written record in the file.
    """

    def __init__(self, stream: IO[bytes], schema: pa.Schema, options: Mapping[str, Any]):
        self.stream = stream
        self.schema = schema
        self.options = options
        self.rows = 0

    @staticmethod
    def prepare(batch: pa.RecordBatch, options: Mapping[str, Any]) -> tuple[pa.RecordBatch, pa.RecordBatch | None, str]:
        return batch, None, ""

    def write(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.close()


class _CsvWriter(FileWriter):
    def __init__(self, stream, schema, options):
        super().__init__(stream, schema, options)
        self._writer = pacsv.CSVWriter(
            stream,
            schema,
            write_options=pacsv.WriteOptions(
                include_header=bool(options.get("header", True)), delimiter=options.get("delimiter", ","), quoting_style="needed"
            ),
        )

    @staticmethod
    def prepare(batch, options):
        arrays, changed = [], False
        for column in batch.columns:
            data_type = column.type
            if pa.types.is_dictionary(data_type):
                column, changed = column.dictionary_decode(), True
                data_type = column.type
            if pa.types.is_nested(data_type) or pa.types.is_map(data_type):
                column, changed = pa.array(_json_texts(column), type=pa.string()), True
            elif pa.types.is_null(data_type):
                column, changed = column.cast(pa.string()), True
            arrays.append(column)
        if changed:
            batch = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
        return batch, None, ""

    def write(self, batch):
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self):
        self._writer.close()
        self.stream.close()


def _json_lines(batch: pa.RecordBatch) -> list[str]:
    """Each row as compact JSON text (dates ISO, decimals as strings, bytes hex, NaN null)."""
    arrays = []
    for column in batch.columns:
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        arrays.append(column)
    rows = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names).to_pylist()
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode
    return [dumps(row) for row in rows]  # per row: no Arrow JSON writer exists


def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, _decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class _NdjsonWriter(FileWriter):
    def write(self, batch):
        lines = _json_lines(batch)
        if lines:
            self.stream.write(("\n".join(lines) + "\n").encode("utf-8"))
        self.rows += batch.num_rows


class _JsonArrayWriter(FileWriter):
    def __init__(self, stream, schema, options):
        super().__init__(stream, schema, options)
        self.stream.write(b"[")

    def write(self, batch):
        lines = _json_lines(batch)
        if lines:
            prefix = ",\n" if self.rows else "\n"
            self.stream.write((prefix + ",\n".join(lines)).encode("utf-8"))
        self.rows += batch.num_rows

    def close(self):
        self.stream.write(b"\n]\n")
        self.stream.close()


class _ParquetWriter(FileWriter):
    """Buffers batches into row groups of ``row_group_rows`` (memory bounded by one group)."""

    def __init__(self, stream, schema, options):
        import pyarrow.parquet as pq

        super().__init__(stream, schema, options)
        compression = (options.get("compression") or "snappy").lower()
        self._group_rows = int(options.get("row_group_rows") or 131_072)
        self._writer = pq.ParquetWriter(stream, schema, compression=compression)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    @staticmethod
    def prepare(batch, options):
        import pyarrow.parquet as pq

        try:  # a schema Parquet cannot store fails here, before any byte is written
            pq.ParquetWriter(io.BytesIO(), batch.schema).close()
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
            return batch.slice(0, 0), batch, f"cannot write this batch as Parquet: {exc}"
        return batch, None, ""

    def write(self, batch):
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self._group_rows:
            self._flush()

    def _flush(self):
        if self._pending:
            table = pa.Table.from_batches(self._pending, schema=self.schema)
            self._writer.write_table(table, row_group_size=max(self._group_rows, 1))
            self._pending, self._pending_rows = [], 0

    def close(self):
        self._flush()
        self._writer.close()
        self.stream.close()


class _AvroWriter(FileWriter):
    def __init__(self, stream, schema, options):
        import fastavro

        super().__init__(stream, schema, options)
        avro_schema = arrow_to_avro_schema(schema)
        self._parsed = fastavro.parse_schema(avro_schema)
        codec = (options.get("compression") or "null").lower()
        self._writer = fastavro.write.Writer(stream, self._parsed, codec=codec)

    @staticmethod
    def _records(batch: pa.RecordBatch) -> list[dict]:
        rows = batch.to_pylist()
        maps = [f.name for f in batch.schema if pa.types.is_map(f.type)]
        for row in rows if maps else ():  # Arrow maps come back as pair lists; Avro wants dicts
            for name in maps:
                if row[name] is not None:
                    row[name] = dict(row[name])
        return rows

    @staticmethod
    def prepare(batch, options):
        import fastavro
        from fastavro.validation import validate, validate_many

        try:
            parsed = fastavro.parse_schema(arrow_to_avro_schema(batch.schema))
        except (ValueError, fastavro.schema.SchemaParseException) as exc:
            return batch.slice(0, 0), batch, str(exc)
        records = _AvroWriter._records(batch)
        if validate_many(records, parsed, raise_errors=False):
            return batch, None, ""
        # Error path: find the rows Avro cannot hold (e.g. a uint64 above the long range).
        ok = np.array([validate(r, parsed, raise_errors=False) for r in records], dtype=bool)
        bad = batch.filter(pa.array(~ok))
        return batch.filter(pa.array(ok)), bad, "value out of range for its Avro type (e.g. an unsigned 64-bit integer above 2**63-1)"

    def write(self, batch):
        for record in self._records(batch):  # per row: fastavro encodes records one by one
            self._writer.write(record)
        self.rows += batch.num_rows

    def close(self):
        self._writer.flush()
        self.stream.close()


_WRITERS: dict[str, type[FileWriter]] = {
    "csv": _CsvWriter,
    "ndjson": _NdjsonWriter,
    "json": _JsonArrayWriter,
    "parquet": _ParquetWriter,
    "avro": _AvroWriter,
}


def make_writer(fmt: str) -> type[FileWriter]:
    """The writer class of a format (``csv``, ``ndjson``, ``json``, ``parquet``, ``avro``)."""
    try:
        return _WRITERS[fmt]
    except KeyError:
        raise ValueError(f"cannot write format '{fmt}'; use one of {', '.join(WRITE_FORMATS)}") from None
