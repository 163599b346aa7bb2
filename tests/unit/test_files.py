"""File sources and sinks in DirectRunner pipelines (few pipelines, many files each).

DuckDB (or pyarrow/json on the clean subset of a file) is the oracle for what a reader
must return; DLQ rows are checked by exact ``(source, error_type)``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
from pathlib import Path

import apache_beam as beam
import duckdb
import fastavro
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that

from beam_etl import registry
from beam_etl.errors import SinkError, SourceError
from beam_etl.io import files_read
from beam_etl.io.files import (
    AvroSink,
    CsvSink,
    CsvSource,
    JsonSource,
    NdjsonSource,
    ParquetSink,
    ParquetSource,
    ReadCsv,
    ReadFromFiles,
    WriteToFiles,
)
from beam_etl.steps import BuildContext, StepOutputs

CSV_COLUMNS = {"id": "BIGINT", "name": "VARCHAR", "amount": "DOUBLE", "day": "DATE"}
CSV_SCHEMA = {"id": "int64", "name": "string", "amount": "float64", "day": "date32"}
DEMO_SCHEMA = {
    "id": "int64",
    "name": "string",
    "email": "string",
    "age": "int64",
    "country": "string",
    "signup_date": "string",
    "amount": "float64",
    "is_test": "bool",
}


def pipeline() -> beam.Pipeline:
    return beam.Pipeline(runner="DirectRunner")


def counters(result, kind: str, name: str) -> dict[str, int]:
    namespace = f"beam_etl.{kind}.{name}"
    found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    # zero counters left out: every DoFn reports all five from start_bundle (StepCounters.announce)
    return {c.key.metric.name: c.committed for c in found if c.committed}


def read_ndjson_dir(path: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(path.glob("*.ndjson")) for line in f.read_text().splitlines() if line]


def _at_most(sizes, limit):
    if not sizes or max(sizes) > limit:
        raise AssertionError(f"batch sizes {sorted(sizes)[-3:]} exceed {limit}")


def temp_leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".beam_etl-temp" in p.name]


# --------------------------------------------------------------------------- input files


def _csv_lines(n: int) -> list[bytes]:
    lines = []
    for i in range(n):
        name = f'name "{i}", with comma' if i % 7 == 0 else f"n{i}"
        quoted = '"' + name.replace('"', '""') + '"' if i % 7 == 0 else name
        amount = "" if i % 11 == 0 else f"{i * 1.25}"
        day = (dt.date(2024, 1, 1) + dt.timedelta(days=i % 300)).isoformat()
        lines.append(f"{i},{quoted},{amount},{day}".encode())
    return lines


#: Bad CSV lines inserted after these data rows: (after row, raw line, error type).
CSV_BAD = [
    (10, b'99999,"unterminated,1.0,2024-01-01', "csv.parse"),
    (500, b"1,2", "csv.parse"),
    (1200, b"5,\xff\xfe,1.0,2024-01-01", "encoding"),
    (1800, b"notanint,x,1.0,2024-01-01", "schema.coerce"),
    (2500, b"7,x,1.0,2024-02-30", "schema.coerce"),
    (2999, b"8,x,1.0,2024-01-01,extra", "csv.parse"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inputs")
    header = b"id,name,amount,day"
    good = _csv_lines(3000)
    lines, bad_at = [header], []
    for index, line in enumerate(good):
        lines.append(line)
        for after, bad, kind in CSV_BAD:
            if after == index:
                lines.append(bad)
                bad_at.append((len(lines), kind))  # 1-based line number of the bad line
    (root / "orders.csv").write_bytes(b"\n".join(lines) + b"\n")
    (root / "orders_clean.csv").write_bytes(b"\n".join([header, *good]) + b"\n")

    events = root / "events"
    events.mkdir()
    (events / "a.ndjson").write_text('{"id": 1, "kind": "click"}\n{"id": 2, "kind": \n[3]\n{"id": 4, "kind": "view"}\n')
    with gzip.open(events / "b.ndjson.gz", "wb") as handle:
        handle.write(b'{"id": 5, "kind": "buy"}\n{"id": 6, "kind": "\xff"}\n{"id": "seven", "kind": "x"}\n')
    (events / "_SUCCESS").write_text("")

    table = pa.table(
        {
            "id": pa.array(range(5000), pa.int64()),
            "code": [f"c{i % 13}" for i in range(5000)],
            "value": [None if i % 17 == 0 else str(i) for i in range(5000)],
        }
    )
    (root / "pq").mkdir()
    pq.write_table(table.slice(0, 3000), root / "pq" / "part-a.parquet", row_group_size=500)
    pq.write_table(table.slice(3000), root / "pq" / "part-b.parquet", row_group_size=700)

    shutil.copy(Path(__file__).parents[2] / "beam_etl" / "data" / "sample-data.json", root / "customers.json")

    avro_schema = {
        "type": "record",
        "name": "E",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "note", "type": ["null", "string"]},
        ],
    }
    avro_rows = [
        {"id": i, "at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=i), "tags": ["a"] * (i % 3), "note": None if i % 2 else f"n{i}"}
        for i in range(300)
    ]
    with open(root / "events.avro", "wb") as handle:
        fastavro.writer(handle, avro_schema, avro_rows, sync_interval=512)

    notes = [(i, f"line one {i}\nline two, \"quoted\"" if i % 5 == 0 else f"plain {i}") for i in range(200)]
    text = "id,note\n" + "".join(f'{i},"{n.replace(chr(34), chr(34) * 2)}"\n' for i, n in notes) + "bad,row,extra\n"
    (root / "notes.csv").write_text(text)
    with gzip.open(root / "notes.csv.gz", "wt") as handle:
        handle.write(text)
    (root / "latin1.csv").write_bytes(("id,name\n" + "".join(f"{i},café {i}\n" for i in range(300))).encode("latin-1"))
    (root / "utf16.csv").write_bytes(("id,name\n" + "".join(f"{i},ü {i}\n" for i in range(50))).encode("utf-16"))

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Budget"
    sheet.append(["exported by a tool"])
    sheet.append(["item", "cost", "when"])
    sheet.append(["rent", 1200, dt.datetime(2024, 1, 1)])
    sheet.append(["food", 310.5, dt.datetime(2024, 1, 2)])
    sheet.append([None, None, None])
    sheet.append(["misc", "n/a", dt.datetime(2024, 1, 3)])
    workbook.save(root / "budget.xlsx")
    return {"root": root, "csv_bad_at": bad_at, "parquet": table, "avro": avro_rows, "notes": notes}


# --------------------------------------------------------------------------- reading


@pytest.fixture(scope="module")
def read_run(inputs, tmp_path_factory):
    """One pipeline reading every input format; outputs written as Parquet, DLQs as NDJSON."""
    root, out = inputs["root"], tmp_path_factory.mktemp("read_out")
    p = pipeline()
    ctx = BuildContext(name="orders", path="sources.orders", kind="source", spec_dir=str(root), batch_rows=1000)
    spec = CsvSource.model_validate({"type": "csv", "path": "orders.csv", "schema": CSV_SCHEMA})
    orders = registry.SOURCES["csv"].build(spec, p, ctx)  # the registered builder, as the graph calls it
    orders_split = p | "orders_split" >> ReadCsv(str(root / "orders.csv"), schema=CSV_SCHEMA, split_bytes=4096, batch_rows=700, name="orders_split")
    reads = {
        "orders": orders,
        "orders_split": orders_split,
        "events": p | "events" >> ReadFromFiles(str(root / "events"), "ndjson", schema={"id": "int64"}, name="events", split_bytes=16),
        "parquet": p | "parquet" >> ReadFromFiles(str(root / "pq" / "*.parquet"), "parquet", name="parquet", split_bytes=1, batch_rows=300),
        "customers": p | "customers" >> ReadFromFiles(str(root / "customers.json"), "json", schema=DEMO_SCHEMA, name="customers"),
        "avro": p | "avro" >> ReadFromFiles(str(root / "events.avro"), "avro", name="avro", batch_rows=64),
        "excel": p | "excel" >> ReadFromFiles(str(root / "budget.xlsx"), "excel", skip_rows=1, schema={"cost": "float64"}, name="excel"),
        "notes": p | "notes" >> ReadCsv(str(root / "notes.csv"), split=False, split_bytes=500, schema={"id": "int64"}, name="notes"),
        "notes_gz": p | "notes_gz" >> ReadCsv(str(root / "notes.csv.gz"), split=False, split_bytes=300, schema={"id": "int64"}, name="notes_gz"),
        "latin1": p | "latin1" >> ReadCsv(str(root / "latin1.csv"), encoding="latin-1", split_bytes=100, name="latin1"),
        "utf16": p | "utf16" >> ReadCsv(str(root / "utf16.csv"), encoding="utf-16", name="utf16"),
    }
    limits = {"orders": 1000, "orders_split": 700, "parquet": 300, "avro": 64}
    for name, outputs in reads.items():
        assert isinstance(outputs, StepOutputs)
        if name in limits:  # batches never exceed batch_rows
            sizes = outputs.main | f"size_{name}" >> beam.Map(lambda b: b.num_rows)
            assert_that(sizes, lambda got, limit=limits[name]: _at_most(got, limit), label=f"bounded_{name}")
        outputs.main | f"w_{name}" >> WriteToFiles(str(out / name), "parquet", name=f"out_{name}")
        outputs.dlq | f"d_{name}" >> WriteToFiles(str(out / f"{name}_dlq"), "ndjson", name=f"dlq_{name}")
    result = p.run()
    result.wait_until_finish()
    return result, out


def test_csv_matches_duckdb_and_rejects_exact_lines(inputs, read_run):
    result, out = read_run
    root = inputs["root"]
    oracle = duckdb.sql(
        f"select * from read_csv('{root / 'orders_clean.csv'}', header=true, columns={CSV_COLUMNS}) order by id"
    ).fetchall()
    path = str(root / "orders.csv")
    expected_dlq = sorted((f"{path}:{line}", kind) for line, kind in inputs["csv_bad_at"])
    for name in ("orders", "orders_split"):
        table = pq.read_table(out / name)
        assert table.schema.names == list(CSV_SCHEMA)
        assert [str(t) for t in table.schema.types] == ["int64", "string", "double", "date32[day]"]
        got = sorted(tuple(row.values()) for row in table.to_pylist())
        assert got == oracle, name
        dlq = read_ndjson_dir(out / f"{name}_dlq")
        assert sorted((row["source"], row["error_type"]) for row in dlq) == expected_dlq, name
        assert {row["step"] for row in dlq} == {name}
        assert counters(result, "source", name) == {"rows_in": 3006, "rows_out": 3000, "rows_dlq": 6}


def test_csv_dlq_rows_carry_raw_text_and_reasons(read_run):
    _, out = read_run
    rows = read_ndjson_dir(out / "orders_split_dlq")
    dlq = {row["error_type"] + ":" + row["record"][:8]: row for row in rows}
    assert dlq['csv.parse:99999,"u']["record"] == '99999,"unterminated,1.0,2024-01-01'
    assert "unbalanced quotes" in dlq['csv.parse:99999,"u']["error_message"]
    assert dlq["csv.parse:1,2"]["error_message"] == "expected 4 fields, found 2"
    assert dlq["encoding:5,\\xff\\x"]["record"] == "5,\\xff\\xfe,1.0,2024-01-01"
    coerce = [row for row in rows if row["error_type"] == "schema.coerce"]
    assert sorted(json.loads(row["record"])["id"] for row in coerce) == ["7", "notanint"]
    assert any("column 'day': '2024-02-30' is not a valid date32[day]" in row["error_message"] for row in coerce)


def test_csv_is_split_into_ranges_and_batches_are_bounded(inputs):
    config = files_read._config("csv", {}, 4096)
    splits = list(files_read._ExpandFn(config, "orders").process(str(inputs["root"] / "orders.csv")))
    size = (inputs["root"] / "orders.csv").stat().st_size
    assert len(splits) == -(-(size - len(b"id,name,amount,day\n")) // 4096) > 20
    assert all(s.names == ("id", "name", "amount", "day") for s in splits)


def test_csv_quoted_newlines_compressed_and_other_encodings(inputs, read_run):
    _, out = read_run
    root = inputs["root"]
    for name, file in [("notes", "notes.csv"), ("notes_gz", "notes.csv.gz")]:
        rows = pq.read_table(out / name).sort_by("id").to_pylist()
        assert [(r["id"], r["note"]) for r in rows] == inputs["notes"], name
        (dlq,) = read_ndjson_dir(out / f"{name}_dlq")
        # 1 header + 200 rows + 40 continuation lines: the bad row is line 242
        assert (dlq["source"], dlq["error_type"], dlq["record"]) == (f"{root / file}:242", "csv.parse", "bad,row,extra")
    latin = pq.read_table(out / "latin1").sort_by("id")
    assert latin.column("name").to_pylist() == [f"café {i}" for i in range(300)]
    assert pq.read_table(out / "utf16").sort_by("id").column("name").to_pylist() == [f"ü {i}" for i in range(50)]


def test_ndjson_directory_with_gzip_and_bad_lines(inputs, read_run):
    result, out = read_run
    rows = sorted(pq.read_table(out / "events").to_pylist(), key=lambda r: r["id"])
    assert rows == [{"id": 1, "kind": "click"}, {"id": 4, "kind": "view"}, {"id": 5, "kind": "buy"}]
    events = inputs["root"] / "events"
    dlq = sorted((r["source"], r["error_type"]) for r in read_ndjson_dir(out / "events_dlq"))
    assert dlq == [
        (f"{events}/a.ndjson:2", "json.parse"),
        (f"{events}/a.ndjson:3", "json.parse"),
        (f"{events}/b.ndjson.gz:2", "encoding"),
        (f"{events}/b.ndjson.gz:3", "schema.coerce"),
    ]
    assert counters(result, "source", "events") == {"rows_in": 7, "rows_out": 3, "rows_dlq": 4}


def test_parquet_row_groups_of_several_files_read_once(inputs, read_run):
    result, out = read_run
    table = pq.read_table(out / "parquet").sort_by("id")
    assert table.equals(inputs["parquet"])
    config = files_read._config("parquet", {}, 1)
    splits = list(files_read._ExpandFn(config, "p").process(str(inputs["root"] / "pq" / "*.parquet")))
    assert len(splits) == 6 + 3  # one work item per row group
    assert counters(result, "source", "parquet")["rows_out"] == 5000


def test_json_array_with_declared_schema(read_run):
    _, out = read_run
    rows = sorted(pq.read_table(out / "customers").to_pylist(), key=lambda r: (r["id"] is None, r["id"]))
    assert len(rows) == 10 and rows[0]["name"] == "Alice Johnson" and rows[-1]["id"] is None
    assert pq.read_schema(next((out / "customers").glob("*.parquet"))).field("amount").type == pa.float64()


def test_avro_logical_types(inputs, read_run):
    _, out = read_run
    rows = sorted(pq.read_table(out / "avro").to_pylist(), key=lambda r: r["id"])
    assert rows == inputs["avro"]


def test_excel_sheet_with_skip_rows_and_coercion(inputs, read_run):
    _, out = read_run
    rows = pq.read_table(out / "excel").to_pylist()
    assert rows == [
        {"cost": 1200.0, "item": "rent", "when": dt.datetime(2024, 1, 1)},
        {"cost": 310.5, "item": "food", "when": dt.datetime(2024, 1, 2)},
    ]
    (dlq,) = read_ndjson_dir(out / "excel_dlq")
    assert dlq["source"] == f"{inputs['root'] / 'budget.xlsx'}[Budget]:6" and dlq["error_type"] == "schema.coerce"


def test_no_temp_files_left(read_run, inputs):
    _, out = read_run
    assert temp_leftovers(out) == [] and temp_leftovers(inputs["root"]) == []


# --------------------------------------------------------------------------- writing


def test_every_format_round_trips(tmp_path):
    source = pa.table(
        {
            "id": pa.array([1, 2, 3, None], pa.int64()),
            "name": ["a", 'quote " and, comma', "", None],
            "score": [1.5, -2.25, None, 0.0],
            "ok": [True, False, None, True],
            "day": pa.array([dt.date(2024, 1, 1), None, dt.date(2024, 2, 29), dt.date(1999, 12, 31)]),
        }
    )
    pq.write_table(source, tmp_path / "source.parquet")
    schema = {"id": "int64", "name": "string", "score": "float64", "ok": "bool", "day": "date32"}
    targets = {
        "csv": ("csv", {}),
        "csv_gz": ("csv", {"compression": "gzip"}),
        "ndjson": ("ndjson", {}),
        "json": ("json", {}),
        "parquet": ("parquet", {"compression": "zstd"}),
        "avro": ("avro", {"compression": "deflate"}),
    }
    with pipeline() as p:
        batches = (p | ReadFromFiles(str(tmp_path / "source.parquet"), "parquet", batch_rows=2)).main
        for name, (fmt, options) in targets.items():
            batches | f"w_{name}" >> WriteToFiles(str(tmp_path / name), fmt, num_shards=2, **options)
    with pipeline() as p:
        for name, (fmt, _) in targets.items():
            read = p | f"r_{name}" >> ReadFromFiles(str(tmp_path / name), fmt, schema=schema)
            read.main | f"w_{name}" >> WriteToFiles(str(tmp_path / f"back_{name}"), "parquet", single_file=False)
    expected = sorted(source.to_pylist(), key=lambda r: (r["id"] is None, r["id"] or 0))
    for name in targets:
        files = sorted(os.listdir(tmp_path / name))
        assert 1 <= len(files) <= 2 and all(f.startswith("part-0000") and "-of-0000" in f for f in files), files
        back = pq.read_table(tmp_path / f"back_{name}").select(list(schema)).to_pylist()
        got = sorted(back, key=lambda r: (r["id"] is None, r["id"] or 0))
        assert got == expected, name
    assert all(f.endswith(".csv.gz") for f in os.listdir(tmp_path / "csv_gz"))
    assert temp_leftovers(tmp_path) == []


def test_modes_overwrite_append_single_file_and_error_if_exists(tmp_path):
    pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "in.parquet")
    over, app, single = tmp_path / "over", tmp_path / "app", tmp_path / "single" / "all.csv"
    over.mkdir()
    for stale in ("part-00000-of-00003.parquet", "part-00002-of-00003.parquet", "old.parquet"):
        pq.write_table(pa.table({"x": [99]}), over / stale)
    (over / ".keep").write_text("hidden files are not outputs")
    app.mkdir()
    pq.write_table(pa.table({"x": [7]}), app / "part-earlier-00000-of-00001.parquet")
    single.parent.mkdir()
    single.write_text("x\nold\n")

    ctx = BuildContext(name="app", path="sinks.app", kind="sink", output_dir=str(tmp_path), job_id="run42")
    with pipeline() as p:
        batches = (p | ReadFromFiles(str(tmp_path / "in.parquet"), "parquet")).main
        batches | "over" >> WriteToFiles(str(over), "parquet")
        registry.SINKS["parquet"].build(ParquetSink.model_validate({"type": "parquet", "input": "x", "path": "app/", "mode": "append"}), batches, ctx)
        batches | "single" >> WriteToFiles(str(single), "csv", single_file=True)
    assert sorted(os.listdir(over)) == [".keep", "part-00000-of-00001.parquet"]
    assert pq.read_table(over).column("x").to_pylist() == [1, 2, 3]
    assert sorted(os.listdir(app)) == ["part-earlier-00000-of-00001.parquet", "part-run42-00000-of-00001.parquet"]
    assert sorted(pq.read_table(app).column("x").to_pylist()) == [1, 2, 3, 7]
    assert single.read_text().splitlines() == ["\"x\"", "1", "2", "3"]
    assert temp_leftovers(tmp_path) == []

    p = pipeline()
    batches = (p | ReadFromFiles(str(tmp_path / "in.parquet"), "parquet")).main
    with pytest.raises(SinkError, match=r"already has files .*error_if_exists; remove them"):
        batches | "exists" >> WriteToFiles(str(over), "parquet", mode="error_if_exists")
    batches | "fresh" >> WriteToFiles(str(tmp_path / "fresh"), "parquet", mode="error_if_exists")  # empty target: fine
    with pytest.raises(SinkError, match="is a file"):
        batches | "onfile" >> WriteToFiles(str(tmp_path / "in.parquet"), "parquet")


def test_sink_rows_avro_cannot_hold_go_to_dlq(tmp_path):
    pq.write_table(
        pa.table({"id": pa.array([1, 2, 2**64 - 1], pa.uint64()), "wait": pa.array([1, 2, 3], pa.duration("s"))}),
        tmp_path / "in.parquet",
    )
    ctx = BuildContext(name="events", path="sinks.events", kind="sink", output_dir=str(tmp_path))
    p = pipeline()
    batches = (p | ReadFromFiles(str(tmp_path / "in.parquet"), "parquet")).main
    ok = batches | beam.Map(lambda b: b.select(["id"])).with_output_types(pa.RecordBatch)
    written = registry.SINKS["avro"].build(AvroSink.model_validate({"type": "avro", "input": "x", "path": "ok/"}), ok, ctx)
    both = registry.SINKS["avro"].build(
        AvroSink.model_validate({"type": "avro", "input": "x", "path": "bad/"}), batches, BuildContext(name="bad", path="", kind="sink", output_dir=str(tmp_path))
    )
    assert isinstance(written, StepOutputs) and written.dlq is not None
    written.dlq | "d1" >> WriteToFiles(str(tmp_path / "dlq_ok"), "ndjson")
    both.dlq | "d2" >> WriteToFiles(str(tmp_path / "dlq_bad"), "ndjson")
    result = p.run()
    result.wait_until_finish()
    with open(next((tmp_path / "ok").glob("*.avro")), "rb") as handle:
        assert [r["id"] for r in fastavro.reader(handle)] == [1, 2]
    (overflow,) = read_ndjson_dir(tmp_path / "dlq_ok")
    assert overflow["error_type"] == "avro.write" and json.loads(overflow["record"])["id"] == 2**64 - 1
    assert counters(result, "sink", "events") == {"rows_in": 3, "rows_out": 2, "rows_dlq": 1}
    rejected = read_ndjson_dir(tmp_path / "dlq_bad")
    assert len(rejected) == 3 and "column 'wait' has type duration[s], which Avro cannot hold" in rejected[0]["error_message"]
    assert not list((tmp_path / "bad").glob("*.avro"))


# --------------------------------------------------------------------------- broken files


def test_truncated_parquet_and_corrupt_avro_fail_naming_the_file(tmp_path):
    pq.write_table(pa.table({"x": list(range(1000))}), tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.avro").write_bytes(b"not an avro file at all")
    p = pipeline()
    with pytest.raises(SourceError, match=r"cannot read Parquet file '.*cut\.parquet'.*truncated, corrupt"):
        p | "cut" >> ReadFromFiles(str(tmp_path / "cut.parquet"), "parquet")
    with pytest.raises(SourceError, match=r"cannot read Avro file '.*junk\.avro'"):
        p | "junk" >> ReadFromFiles(str(tmp_path / "junk.avro"), "avro")
    with pytest.raises(SourceError, match=r"no files match '.*missing\.csv'"):
        p | "missing" >> ReadCsv(str(tmp_path / "missing.csv"))


def test_corrupt_files_found_while_running_name_the_file(tmp_path):
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "pq" / "a.parquet")
    (tmp_path / "pq" / "b.parquet").write_bytes(b"PAR1 truncated")
    rows = [{"id": i, "text": "x" * 50} for i in range(2000)]
    with open(tmp_path / "good.avro", "wb") as handle:
        fastavro.writer(handle, {"type": "record", "name": "r", "fields": [{"name": "id", "type": "long"}, {"name": "text", "type": "string"}]}, rows)
    data = (tmp_path / "good.avro").read_bytes()
    (tmp_path / "cut.avro").write_bytes(data[: len(data) - 3000])  # header intact, last block cut
    for path, fmt, pattern in [
        (tmp_path / "pq" / "*.parquet", "parquet", r"cannot read Parquet file '.*pq/b\.parquet'"),
        (tmp_path / "cut.avro", "avro", r"cannot read Avro file '.*cut\.avro'"),
    ]:
        with pytest.raises(Exception, match=pattern):
            with pipeline() as p:
                p | ReadFromFiles(str(path), fmt)


# --------------------------------------------------------------------------- spec models


def test_known_schema_from_headers_and_footers(inputs):
    root = inputs["root"]
    csv = CsvSource.model_validate({"type": "csv", "path": str(root / "orders_clean.csv"), "schema": {"id": "string"}})
    assert [(f.name, str(f.type)) for f in csv.known_schema()] == [
        ("id", "string"),
        ("name", "string"),
        ("amount", "double"),
        ("day", "date32[day]"),
    ]
    parquet = ParquetSource.model_validate({"type": "parquet", "path": str(root / "pq"), "columns": ["id", "code"]})
    assert parquet.known_schema().names == ["id", "code"]
    assert NdjsonSource.model_validate({"type": "ndjson", "path": str(root / "events/a.ndjson")}).known_schema().names == ["id", "kind"]
    assert JsonSource.model_validate({"type": "json", "path": str(root / "customers.json")}).known_schema().names[:2] == ["id", "name"]
    assert CsvSource.model_validate({"type": "csv", "path": str(root / "nope*.csv")}).known_schema() is None


@pytest.mark.parametrize(
    "model,entry,message",
    [
        (ParquetSink, {"path": "out/x.parquet", "single_file": True, "mode": "append"}, "mode append"),
        (ParquetSink, {"path": "out/", "compression": "gzip2"}, "compression 'gzip2' does not apply to parquet"),
        (CsvSink, {"path": "out/", "delimiter": ";;"}, "delimiter must be one character"),
        (CsvSource, {"path": "a.csv", "encoding": "klingon"}, "unknown encoding"),
        (CsvSource, {"path": "a.csv", "bogus": 1}, "Extra inputs are not permitted"),
    ],
)
def test_spec_entries_are_validated(model, entry, message):
    kind = "csv" if model in (CsvSink, CsvSource) else "parquet"
    data = {"type": kind, **entry}
    if model in (ParquetSink, CsvSink):
        data["input"] = "x"
    with pytest.raises(ValueError, match=message):
        model.model_validate(data)


def test_single_file_from_num_shards_one_with_a_file_name():
    sink = CsvSink.model_validate({"type": "csv", "input": "x", "path": "out/report.csv", "num_shards": 1})
    assert sink.writes_single_file()
    assert not CsvSink.model_validate({"type": "csv", "input": "x", "path": "out/report/", "num_shards": 1}).writes_single_file()


def test_csv_chunks_parsed_in_pieces_give_the_same_rows_and_reject_lines(inputs, monkeypatch):
    """Chunks are parsed in pieces, the next on a helper thread; rows and DLQ line numbers must not change."""
    from beam_etl.io import files_read
    from beam_etl.io.files_formats import CsvOptions, parse_csv_chunk

    raw = (inputs["root"] / "orders.csv").read_bytes()
    header_end = raw.index(b"\n") + 1
    chunk, names = raw[header_end:], ["id", "name", "amount", "day"]
    target = pa.schema([(name, pa.type_for_alias(kind) if kind != "date" else pa.date32()) for name, kind in CSV_SCHEMA.items()])
    options = CsvOptions()

    def parse(data: bytes):
        return parse_csv_chunk(data, names, options, target, frozenset(names))

    def run(threshold: int, lines_before):
        monkeypatch.setattr(files_read, "PARSE_PIECE_BYTES", threshold)
        parts = list(files_read.parse_pieces(parse, chunk, lines_before, header_end, options))
        rows, rejects = [], []
        for (batch, rejected), lines, offset in parts:
            rows += batch.to_pylist() if batch is not None else []
            first = (lines if lines is not None else raw[:offset].count(b"\n")) + 1
            for dlq in rejected.to_dlq(step="orders", path="orders.csv", first=first) if len(rejected) else []:
                rejects += list(zip(dlq.column("source").to_pylist(), dlq.column("error_type").to_pylist()))
        return len(parts), rows, sorted(rejects)

    whole = run(len(chunk), 1)
    for lines_before in (1, None):  # line numbers known, or counted from the byte offset
        pieces = run(4096, lines_before)
        assert pieces[0] > 10 and whole[0] == 1
        assert pieces[1] == whole[1]
        assert pieces[2] == whole[2] == sorted((f"orders.csv:{line}", kind) for line, kind in inputs["csv_bad_at"])
