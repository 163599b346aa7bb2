"""DLQ ``record`` text: each row of a batch as the JSON object ``json.dumps`` would write.

:func:`rows_as_json` builds the text column by column with Arrow compute for the common flat
types and falls back to one ``json.dumps(to_json_value(row))`` per row for anything else;
both give the same bytes (tests/unit/test_batch_json.py checks it).

Example:
    >>> rows_as_json(pa.RecordBatch.from_pydict({"id": [1], "name": ["a\\"b"]})).to_pylist()
    ['{"id": 1, "name": "a\\\\"b"}']
"""

from __future__ import annotations

import datetime as _dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_etl.batch import to_json_value

__all__ = ["rows_as_json"]


def rows_as_json(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """Each row of ``batch`` as a JSON object string (for DLQ ``record`` columns).

    The text is exactly ``json.dumps(to_json_value(row), ensure_ascii=False)`` per row.
    Batches whose columns are all of the common flat types (null, bool, integers, floats,
    strings, dates, tz-naive/UTC timestamps of unit s/ms/us, dictionaries of those) are
    encoded column-wise with Arrow compute; any other batch goes through the per-row path.
    """
    fast = _rows_as_json_columnar(batch)
    return fast if fast is not None else _rows_as_json_per_row(batch)


def _rows_as_json_per_row(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """The reference encoding: one ``json.dumps`` per row over ``to_pylist()``.

    Used for batches with a column type the columnar path does not handle, and by the
    tests as the oracle the columnar path must match byte for byte.
    """
    return pa.array(
        [json.dumps(to_json_value(row), ensure_ascii=False, sort_keys=False) for row in batch.to_pylist()],
        type=pa.string(),
    )


# Why a hand-written columnar encoder: building a dict per row with ``to_pylist()`` and
# calling ``json.dumps`` on it costs ~10 µs a row, ~7% of a benchmark run with 3% rejected
# rows. orjson is not a drop-in (no ", "/": " separators, different float text), so the
# JSON text is assembled here per column with Arrow kernels and joined per row; the few
# values whose text Arrow cannot produce identically (strings needing escapes, floats
# Python writes in exponent form) are encoded with ``json.dumps``/``repr`` one by one.

#: Bytes that ``json.dumps`` escapes inside a string: control characters, ``"`` and ``\``.
_JSON_ESCAPE_PATTERN = r'[\x00-\x1f"\\]'
#: ``datetime`` can hold 0001-01-01T00:00:00 .. 9999-12-31T23:59:59.999999 (µs since epoch);
#: outside that ``as_py()`` raises, and the per-row path is left to raise the same error.
_MIN_DATETIME_US = -62_135_596_800_000_000
_MAX_DATETIME_US = 253_402_300_799_999_999
_MIN_DATE_DAYS = (_dt.date.min - _dt.date(1970, 1, 1)).days
_MAX_DATE_DAYS = (_dt.date.max - _dt.date(1970, 1, 1)).days
#: Timestamp zones whose ``as_py()`` datetimes print ``+00:00`` whatever the instant.
_UTC_ZONES = frozenset({"UTC", "Etc/UTC", "+00:00"})


def _rows_as_json_columnar(batch: pa.RecordBatch | pa.Table) -> pa.Array | None:
    """``rows_as_json`` built column-wise, or None when some column needs the per-row path.

    Each row is ``{"k1": v1, "k2": v2}`` with ``json.dumps``'s default separators. Every
    column's text already carries its constant parts (``{"k1": `` ... ``}``), so the rows
    are one ``binary_join_element_wise`` of those texts with ``", "`` between them:
    constant scalars among the join's arguments cost about as much as extra columns.
    """
    names = batch.schema.names
    # to_pylist() keeps only the last of duplicate names (at the first one's position);
    # a zero-column batch has no rows to speak of. Both are left to the reference path.
    if not names or len(set(names)) != len(names):
        return None
    if batch.num_rows == 0:
        return pa.array([], type=pa.string())
    texts: list[pa.Array | str] = []
    try:
        for i, (name, column) in enumerate(zip(names, batch.columns)):
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            prefix = ("{" if i == 0 else "") + json.dumps(name, ensure_ascii=False) + ": "
            text = _json_value_texts(column, prefix, "}" if i == len(names) - 1 else "")
            if text is None:
                return None
            texts.append(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # A cast Arrow refuses (e.g. overflow) is an input the per-row path decides about.
        return None
    if not any(isinstance(text, pa.Array) for text in texts):  # only null-type columns
        return pa.array([", ".join(texts)] * batch.num_rows, type=pa.string())
    if len(texts) == 1:
        return texts[0]
    return pc.binary_join_element_wise(*texts, ", ")


def _json_value_texts(column: pa.Array, prefix: str, suffix: str) -> pa.Array | str | None:
    """``prefix + <JSON text of the value> + suffix`` per value of ``column`` (nulls: ``null``).

    A ``str`` means the same text for every row; None means the type is not handled.
    """
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.dictionary_decode(), kind.value_type
        if pa.types.is_dictionary(kind):
            return None
    if pa.types.is_null(kind):
        return prefix + "null" + suffix
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind):
        # Arrow writes true/false and plain decimal digits, as json.dumps does.
        return _framed(pc.cast(column, pa.string()), prefix, suffix)
    if pa.types.is_floating(kind):
        return _json_float_texts(column, prefix, suffix)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _json_string_texts(column.cast(pa.string()), prefix, suffix)
    if pa.types.is_date(kind):
        days = column.cast(pa.date32())  # safe cast: a date64 that is not whole days raises
        low, high = pc.min_max(days.cast(pa.int32())).values()
        if low.is_valid and (low.as_py() < _MIN_DATE_DAYS or high.as_py() > _MAX_DATE_DAYS):
            return None
        return _framed(pc.strftime(days, format="%Y-%m-%d"), prefix, suffix, quoted=True)
    if pa.types.is_timestamp(kind):
        return _json_timestamp_texts(column, prefix, suffix)
    return None


def _framed(text: pa.Array, prefix: str, suffix: str, *, quoted: bool = False) -> pa.Array:
    """``prefix + text + suffix`` per value (text in quotes if ``quoted``); nulls ``null``."""
    quote = '"' if quoted else ""
    framed = _wrap(text, prefix + quote, quote + suffix)
    if framed.null_count:
        framed = pc.fill_null(framed, prefix + "null" + suffix)
    return framed


#: A byte index past the end of any value: ``binary_replace_slice`` clamps it to the end.
_AT_END = 2**31 - 1


def _wrap(text: pa.Array, before: str, after: str) -> pa.Array:
    """``before + text + after`` per value (nulls stay null).

    ``binary_replace_slice`` inserting at byte 0 / the end is ~3x faster than
    ``binary_join_element_wise`` with scalar arguments, and safe on UTF-8 (whole values).
    """
    if before:
        text = pc.binary_replace_slice(text, 0, 0, before)
    if after:
        text = pc.binary_replace_slice(text, _AT_END, _AT_END, after)
    return text


def _json_string_texts(column: pa.StringArray, prefix: str, suffix: str) -> pa.Array:
    """JSON string literals for a string column, escaped exactly as ``json.dumps`` does."""
    text = _framed(column, prefix, suffix, quoted=True)
    if not _may_need_escapes(column):
        return text
    needs = pc.fill_null(pc.match_substring_regex(column, _JSON_ESCAPE_PATTERN), False)
    if not pc.any(needs).as_py():
        return text
    # Only the values holding a quote, backslash or control character are escaped.
    subset = column.filter(needs)
    escaped = pc.replace_substring(pc.replace_substring(subset, "\\", "\\\\"), '"', '\\"')
    control = pc.match_substring_regex(subset, r"[\x00-\x1f]")
    if pc.any(control).as_py():
        # json.dumps writes \n \t \r \b \f but \u00XX for the other 27; those rows are rare
        # enough to let json.dumps itself encode them (quotes and backslashes included).
        exact = [json.dumps(value, ensure_ascii=False)[1:-1] for value in subset.filter(control).to_pylist()]
        escaped = pc.replace_with_mask(escaped, control, pa.array(exact, type=pa.string()))
    return pc.replace_with_mask(text, needs, _wrap(escaped, prefix + '"', '"' + suffix))


def _may_need_escapes(column: pa.StringArray) -> bool:
    """Whether the bytes behind ``column`` hold a ``"``, ``\\`` or control character.

    A single numpy scan of the data buffer: much cheaper than a per-value regex, and
    UTF-8 never uses bytes below 0x80 inside a multi-byte character. Bytes of null slots
    may be counted too, which only costs the exact per-value check afterwards.
    """
    _, offsets_buffer, data_buffer = column.buffers()
    if data_buffer is None or len(column) == 0:
        return False
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)
    start, stop = int(offsets[column.offset]), int(offsets[column.offset + len(column)])
    data = np.frombuffer(data_buffer, dtype=np.uint8)[start:stop]
    return bool(((data < 0x20) | (data == 0x22) | (data == 0x5C)).any())


def _json_float_texts(column: pa.Array, prefix: str, suffix: str) -> pa.Array:
    """``repr(float)`` per value as json.dumps writes it (NaN -> null, ±inf -> ±Infinity).

    Arrow's float->string cast gives the same shortest round-trip digits as ``repr`` but
    formats them differently: no ``.0`` on integral values and its own choice of when to
    use an exponent (``1e+15`` vs ``1000000000000000.0``, ``0.00001`` vs ``1e-05``). Values
    in the range where ``repr`` is positional and Arrow's text has no exponent only need
    the ``.0``; the rest (rare in ETL data) get ``repr`` one by one.
    """
    values = column.cast(pa.float64())  # float16/32 -> float64 is exact; as_py() does the same
    text = pc.cast(values, pa.string())
    x = values.to_numpy(zero_copy_only=False)  # nulls come back as NaN
    finite = np.isfinite(x)
    magnitude = np.abs(np.where(finite, x, 0.0))
    exponent_form = pc.fill_null(pc.match_substring(text, "e"), False).to_numpy(zero_copy_only=False)
    by_repr = finite & (x != 0) & ((magnitude < 1e-4) | (magnitude >= 1e16) | exponent_form)
    integral = finite & (x == np.floor(np.where(finite, x, 0.0))) & ~by_repr
    text = pc.binary_join_element_wise(text, pc.if_else(pa.array(integral), ".0", ""), "")
    text = _wrap(text, prefix, suffix)
    special = by_repr | np.isinf(x)
    if special.any():
        exact = [
            prefix + ("Infinity" if v == np.inf else "-Infinity" if v == -np.inf else repr(float(v))) + suffix
            for v in x[special]
        ]
        text = pc.replace_with_mask(text, pa.array(special), pa.array(exact, pa.string()))
    # to_json_value turns NaN into None; a null is NaN in ``x`` too.
    return pc.if_else(pa.array(np.isnan(x)), prefix + "null" + suffix, text)


def _json_timestamp_texts(column: pa.Array, prefix: str, suffix: str) -> pa.Array | None:
    """``datetime.isoformat()`` per value, quoted; None for zones/units left to the per-row path.

    ns timestamps come back from ``as_py()`` as pandas Timestamps (nanosecond text) and
    non-UTC zones print local offsets, so only s/ms/us, tz-naive or UTC are handled.
    """
    kind = column.type
    if kind.unit == "ns" or (kind.tz is not None and kind.tz not in _UTC_ZONES):
        return None
    micros = column.cast(pa.timestamp("us"))  # drops a UTC zone; safe cast raises on overflow
    low, high = pc.min_max(micros.cast(pa.int64())).values()
    if low.is_valid and (low.as_py() < _MIN_DATETIME_US or high.as_py() > _MAX_DATETIME_US):
        return None
    # %S on a µs timestamp prints SS.ffffff; isoformat() leaves the fraction out when it is 0.
    text = pc.strftime(micros, format="%Y-%m-%dT%H:%M:%S")
    text = pc.replace_substring_regex(text, r"\.000000$", "")
    return _framed(_wrap(text, "", "+00:00") if kind.tz is not None else text, prefix, suffix, quoted=True)
