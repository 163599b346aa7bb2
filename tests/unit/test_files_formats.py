"""File formats without a pipeline: chunk parsers, coercion, splitting, schemas, writers."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import os

import duckdb
import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.io import files_formats as fmt
from beam_etl.io.files_formats import CsvOptions, JsonArrayReader, coerce_batch, parse_csv_chunk, parse_ndjson_chunk
from beam_etl.io.files_read import _count_newlines, _iter_chunks, _read_range, match_files

NAMES = ["a", "b", "c"]


def rejects_of(rejects):
    return sorted(zip(rejects.positions, rejects.error_types))


# --------------------------------------------------------------------------- CSV chunks

CSV_CASES = [
    # (description, data, expected good values of 'a', expected (line, error_type) rejects)
    ("clean", b"1,x,2\n2,y,3\n", ["1", "2"], []),
    ("blank lines skipped, no trailing newline", b"1,x,2\n\n\n2,y,3", ["1", "2"], []),
    ("crlf", b"1,x,2\r\n2,y,3\r\n", ["1", "2"], []),
    ("too few fields", b"1,x,2\n2,y\n3,z,4\n", ["1", "3"], [(1, "csv.parse")]),
    ("too many fields", b"1,x,2,9\n2,y,3\n", ["2"], [(0, "csv.parse")]),
    ("unterminated quote", b'1,"x,2\n2,y,3\n', ["2"], [(0, "csv.parse")]),
    ("stray quote in field", b'1,a"b,2\n2,y,3\n', ["2"], [(0, "csv.parse")]),
    ("quoted delimiter and escaped quote", b'1,"x,""y""",2\n', ["1"], []),
    ("invalid utf-8", b"1,\xff\xfe,2\n2,y,3\n", ["2"], [(0, "encoding")]),
    ("several errors keep their lines", b"1,x\n\n2,\xc3(,3\n3,\"q,3\n4,y,5\n", ["4"], [(0, "csv.parse"), (2, "encoding"), (3, "csv.parse")]),
]


@pytest.mark.parametrize("what,data,good,bad", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_csv_chunk(what, data, good, bad):
    batch, rejects = parse_csv_chunk(data, NAMES, CsvOptions())
    assert (batch.column("a").to_pylist() if batch is not None else []) == good
    assert rejects_of(rejects) == bad


def test_csv_reject_records_keep_the_raw_line_and_reason():
    _, rejects = parse_csv_chunk(b"1,x,2\n2,y\n3,\xff,4\n", NAMES, CsvOptions())
    by_type = dict(zip(rejects.error_types, zip(rejects.records, rejects.messages)))
    assert by_type["csv.parse"] == ("2,y", "expected 3 fields, found 2")
    assert by_type["encoding"][0] == "3,\\xff,4"
    assert "set `encoding:`" in by_type["encoding"][1]


def test_csv_nulls_quoted_empty_and_options():
    data = b'1;"";\n2;NA;x\n'
    batch, _ = parse_csv_chunk(data, NAMES, CsvOptions(delimiter=";", null_values=("", "NA")))
    assert batch.to_pylist() == [{"a": "1", "b": "", "c": None}, {"a": "2", "b": None, "c": "x"}]


def test_csv_latin1_is_transcoded():
    batch, rejects = parse_csv_chunk("1,café,2\n".encode("latin-1"), NAMES, CsvOptions(encoding="latin-1"))
    assert batch.column("b").to_pylist() == ["café"] and not len(rejects)


def test_csv_quoted_newlines_with_split_false():
    data = b'1,"two\nlines",2\n2,y,3\n3,z\n'
    batch, rejects = parse_csv_chunk(data, NAMES, CsvOptions(split=False))
    assert batch.column("b").to_pylist() == ["two\nlines", "y"]
    assert rejects_of(rejects) == [(3, "csv.parse")]  # the short row is on the 4th line


def test_csv_coercion_failures_name_the_line_and_column():
    target = pa.schema([("a", pa.int64()), ("c", pa.float64())])
    batch, rejects = parse_csv_chunk(b"1,x,2.5\n\nbad,y,3\n4,z,oops\n", NAMES, CsvOptions(), target, frozenset({"a"}))
    assert batch.to_pylist() == [{"a": 1, "c": 2.5, "b": "x"}]
    assert rejects_of(rejects) == [(2, "schema.coerce"), (3, "schema.coerce")]
    messages = dict(zip(rejects.positions, rejects.messages))
    assert "column 'a': 'bad' is not a valid int64 (the declared schema)" in messages[2]
    assert "column 'c'" in messages[3] and "declare `schema:" in messages[3]
    assert json.loads(rejects.records[rejects.positions.index(2)]) == {"a": "bad", "b": "y", "c": "3"}


def test_csv_header_skip_rows_bom_and_duplicates():
    names, offset, lines = fmt.read_csv_header(io.BytesIO(b'\xef\xbb\xbfnote\n"id","a,b",id,\n1,2,3,4\n'), CsvOptions(skip_rows=1))
    assert names == ["id", "a,b", "id_1", "column3"]
    assert (offset, lines) == (len(b'\xef\xbb\xbfnote\n"id","a,b",id,\n'), 2)
    names, offset, lines = fmt.read_csv_header(io.BytesIO(b"1,2\n"), CsvOptions(header=False))
    assert (names, offset, lines) == (["f0", "f1"], 0, 0)


def test_csv_inferred_types_and_all_null_columns():
    schema = fmt.infer_csv_schema(b"1,2.5,true,2024-01-01,,x\n2,3,false,2024-01-02,,y\n", list("abcdef"), CsvOptions())
    assert [str(t) for t in schema.types] == ["int64", "double", "bool", "date32[day]", "string", "string"]


# --------------------------------------------------------------------------- byte ranges


def _csv_text(rows):
    lines = []
    for number, text, value in rows:
        quoted = '"' + text.replace('"', '""') + '"'
        lines.append(f"{number},{quoted},{value}")
    return ("id,text,value\n" + "\n".join(lines) + "\n").encode()


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r\x00"), max_size=30),
            st.integers(-5, 5),
        ),
        min_size=1,
        max_size=60,
    ),
    split=st.integers(1, 200),
)
def test_ranges_read_every_row_exactly_once(tmp_path_factory, rows, split):
    path = tmp_path_factory.mktemp("ranges") / "f.csv"
    data = _csv_text(rows)
    path.write_bytes(data)
    names, offset, _ = fmt.read_csv_header(io.BytesIO(data), CsvOptions())
    got = []
    for start in range(offset, len(data), split):
        chunk, aligned = _read_range(str(path), start, min(start + split, len(data)))
        if chunk:
            assert data[aligned - 1 : aligned] == b"\n"  # ranges begin at line starts
            batch, rejects = parse_csv_chunk(chunk, names, CsvOptions())
            assert not len(rejects), rejects
            got.extend(batch.to_pylist() if batch is not None else [])
    expected = [{"id": str(n), "text": t, "value": str(v)} for n, t, v in rows]
    assert got == expected


def test_range_line_numbers_are_counted_from_the_file_start(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"h\n" + b"".join(b"%d\n" % i for i in range(100)))
    chunk, aligned = _read_range(str(path), 50, 80)
    first_line = _count_newlines(str(path), aligned) + 1
    assert chunk.split(b"\n")[0] == path.read_bytes().split(b"\n")[first_line - 1]


def test_sequential_chunks_end_at_rows_outside_quotes():
    data = b'1,"a\nb"\n2,c\n3,"d\n\ne"\n' * 50
    chunks = list(_iter_chunks(io.BytesIO(data), 7, '"'))
    assert b"".join(chunks) == data
    for chunk in chunks:
        assert chunk.endswith(b"\n") and chunk.count(b'"') % 2 == 0


# --------------------------------------------------------------------------- NDJSON / JSON


def test_ndjson_chunk_rejects_exact_lines():
    data = b'{"a": 1}\n\n{"a": \n{"a": 2, "b": "\xff"}\n[1, 2]\n{"a": "x"}\n{"a": 3}\n'
    batch, rejects = parse_ndjson_chunk(data, pa.schema([("a", pa.int64())]), frozenset({"a"}))
    assert batch.column("a").to_pylist() == [1, 3]
    assert rejects_of(rejects) == [(2, "json.parse"), (3, "encoding"), (4, "json.parse"), (5, "schema.coerce")]


def test_ndjson_declared_string_keeps_text_and_numbers_become_text():
    data = b'{"s": "2024-01-01T10:00:00", "n": 1}\n{"s": 5, "n": 2}\n'
    batch, rejects = parse_ndjson_chunk(data, pa.schema([("s", pa.string())]), frozenset({"s"}))
    assert batch.column("s").to_pylist() == ["2024-01-01T10:00:00", "5"] and not len(rejects)


def test_json_array_reader_streams_elements_with_lines():
    data = b'[\n {"a": 1},\n {"a": 2}, 7,\n {"b":\n 4}\n]\n'
    items = list(JsonArrayReader(io.BytesIO(data), block_bytes=3))
    assert [(i.line, i.value, i.error_type) for i in items] == [
        (2, {"a": 1}, None),
        (3, {"a": 2}, None),
        (3, None, "json.parse"),
        (4, {"b": 4}, None),
    ]


def test_json_array_reader_does_not_cut_values_at_block_ends():
    items = list(JsonArrayReader(io.BytesIO(b'[{"a":1}, 12345, {"b":2}]'), block_bytes=13))
    assert [(i.value, i.error_type) for i in items] == [({"a": 1}, None), (None, "json.parse"), ({"b": 2}, None)]
    assert "12345" in items[1].text


@pytest.mark.parametrize(
    "data,error",
    [
        (b'[{"a": 1}, {"a": tru}]', "invalid JSON in the array"),
        (b'[{"a": 1}, {"a": 2}', "not closed"),
        (b'[{"a": 1}] trailing', "unexpected text"),
        (b'{"a": 1}', "expected '['"),
    ],
)
def test_json_array_reader_reports_bad_documents(data, error):
    items = list(JsonArrayReader(io.BytesIO(data)))
    assert items[-1].error_type == "json.parse" and error in items[-1].message


def test_json_layout_detection():
    assert fmt.detect_json_layout(io.BytesIO(b'\xef\xbb\xbf  [{"a":1}]')) == "array"
    assert fmt.detect_json_layout(io.BytesIO(b'{"a":1}\n{"a":2}\n')) == "lines"
    assert fmt.detect_json_layout(io.BytesIO(b'{\n "data": []\n}')) == "document"
    assert fmt.read_json_document(io.BytesIO(b'{"data": {"items": [{"a": 1}]}}'), "data.items") == [{"a": 1}]


# --------------------------------------------------------------------------- coercion


COERCE_CASES = [
    (["1", "2", None], pa.int64(), [1, 2, None], []),
    (["1", "x", "3"], pa.int64(), [1, None, 3], [1]),
    (["true", "No", "1", None, "maybe"], pa.bool_(), [True, False, True, None, None], [4]),
    (["2024-01-15", "2024-13-40"], pa.date32(), [dt.date(2024, 1, 15), None], [1]),
    ([1.5, 2.0], pa.int64(), [None, 2], [0]),
    ([1, 2], pa.string(), ["1", "2"], []),
    ([{"x": 1}, None], pa.string(), ['{"x": 1}', None], []),
    (["1.25"], pa.decimal128(5, 2), [decimal.Decimal("1.25")], []),
]


@pytest.mark.parametrize("values,target,expected,bad", COERCE_CASES)
def test_coerce_batch(values, target, expected, bad):
    batch = pa.RecordBatch.from_pydict({"v": values})
    out, errors = coerce_batch(batch, pa.schema([("v", target)]))
    assert out.column("v").to_pylist() == expected
    assert sorted(errors) == bad


def test_coerce_orders_target_first_adds_missing_keeps_extras():
    batch = pa.RecordBatch.from_pydict({"x": [1], "a": ["5"]})
    out, errors = coerce_batch(batch, pa.schema([("a", pa.int64()), ("m", pa.string())]))
    assert out.schema.names == ["a", "m", "x"] and out.to_pylist() == [{"a": 5, "m": None, "x": 1}] and not errors


def test_python_rows_mixed_types_become_text_then_coerce():
    batch = fmt.python_rows_to_batch([{"a": 1}, {"a": "x", "b": True}])
    assert batch.column("a").to_pylist() == ["1", "x"] and batch.column("b").to_pylist() == [None, True]


# --------------------------------------------------------------------------- Avro schemas


def test_avro_schema_round_trip_of_common_types():
    schema = pa.schema(
        [
            ("i", pa.int32()),
            ("l", pa.int64()),
            ("f", pa.float64()),
            ("s", pa.string()),
            ("b", pa.bool_()),
            ("d", pa.date32()),
            ("t", pa.timestamp("us")),
            ("tz", pa.timestamp("us", tz="UTC")),
            ("m", pa.decimal128(10, 2)),
            ("lst", pa.list_(pa.int64())),
            ("st", pa.struct([("x", pa.string())])),
            ("mp", pa.map_(pa.string(), pa.int64())),
        ]
    )
    avro = fastavro.parse_schema(fmt.arrow_to_avro_schema(schema))
    assert fmt.avro_to_arrow_schema(avro) == schema


@pytest.mark.parametrize(
    "field,message",
    [
        (pa.field("bad name", pa.int64()), "not a valid Avro field name"),
        (pa.field("d", pa.duration("s")), "which Avro cannot hold"),
        (pa.field("m", pa.map_(pa.int64(), pa.int64())), "string keys"),
    ],
)
def test_avro_schema_rejects_what_avro_cannot_hold(field, message):
    with pytest.raises(ValueError, match=message):
        fmt.arrow_to_avro_schema(pa.schema([field]))


# --------------------------------------------------------------------------- writers


SAMPLE = pa.RecordBatch.from_pydict(
    {
        "id": pa.array([1, 2, None], pa.int64()),
        "name": ["a", 'q"uote,', None],
        "score": [1.5, float("nan"), None],
        "day": pa.array([dt.date(2024, 1, 1), None, dt.date(2024, 2, 29)]),
        "tags": pa.array([["x"], [], None], pa.list_(pa.string())),
    }
)


@pytest.mark.parametrize("name", fmt.WRITE_FORMATS)
def test_writer_output_reads_back(name, tmp_path):
    path = tmp_path / f"f{fmt.file_extension(name)}"
    writer_cls = fmt.make_writer(name)
    good, bad, _ = writer_cls.prepare(SAMPLE, {})
    assert bad is None
    with open(path, "wb") as stream:
        writer = writer_cls(stream, good.schema, {})
        writer.write(good.slice(0, 2))
        writer.write(good.slice(2))
        writer.close()
    if name == "parquet":
        rows = pq.read_table(path).to_pylist()
    elif name == "avro":
        with open(path, "rb") as handle:
            rows = list(fastavro.reader(handle))
    elif name == "csv":
        rows = duckdb.sql(f"select * from read_csv('{path}', header=true, all_varchar=true)").fetchall()
        assert rows == [("1", "a", "1.5", "2024-01-01", '["x"]'), ("2", 'q"uote,', "nan", None, "[]"), (None, None, None, "2024-02-29", None)]
        return
    elif name == "ndjson":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        rows = json.loads(path.read_text())
    assert [r["id"] for r in rows] == [1, 2, None]
    assert [r["name"] for r in rows] == ["a", 'q"uote,', None]
    assert rows[1]["score"] is None or rows[1]["score"] != rows[1]["score"]  # NaN (binary) or null (JSON)
    assert [str(r["day"]) if r["day"] else None for r in rows] == ["2024-01-01", None, "2024-02-29"]


def test_avro_prepare_rejects_rows_and_batches_it_cannot_hold():
    batch = pa.RecordBatch.from_pydict({"u": pa.array([1, 2**64 - 1], pa.uint64())})
    good, bad, reason = fmt.make_writer("avro").prepare(batch, {})
    assert good.column(0).to_pylist() == [1] and bad.column(0).to_pylist() == [2**64 - 1] and "range" in reason
    batch = pa.RecordBatch.from_pydict({"d": pa.array([1], pa.duration("s"))})
    good, bad, reason = fmt.make_writer("avro").prepare(batch, {})
    assert good.num_rows == 0 and bad.num_rows == 1 and "Avro cannot hold" in reason


# --------------------------------------------------------------------------- matching


def test_matching_files_directories_and_globs(tmp_path):
    for rel in ["d/a.csv", "d/b.csv", "d/_SUCCESS", "d/.hidden", "d/.beam_etl-temp-x/t.csv", "d/sub/c.csv", "e.csv"]:
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x\n")
    base = str(tmp_path)
    names = lambda found: [os.path.relpath(p, base) for p, _ in found]  # noqa: E731
    assert names(match_files(f"{base}/d")) == ["d/a.csv", "d/b.csv"]
    assert names(match_files(f"{base}/d/")) == ["d/a.csv", "d/b.csv"]
    assert names(match_files(f"{base}/d/**")) == ["d/a.csv", "d/b.csv", "d/sub/c.csv"]
    assert names(match_files(f"{base}/*.csv")) == ["e.csv"]
    assert names(match_files(f"{base}/e.csv")) == ["e.csv"]
    assert match_files(f"{base}/nope.csv") == []
    assert [os.path.relpath(p, base) for p in fmt.local_data_files(f"{base}/d")] == ["d/a.csv", "d/b.csv"]
    assert [os.path.relpath(p, base) for p in fmt.local_data_files(f"{base}/d/**")] == ["d/a.csv", "d/b.csv", "d/sub/c.csv"]
