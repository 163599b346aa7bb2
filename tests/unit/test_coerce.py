"""coerce: numbers as people write them, booleans, dates and timestamps with formats and time
zones; failures with the value and the target type; the ``schema:`` block; spec errors."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import zoneinfo

import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from beam_etl.errors import SpecError, StepFailed
from beam_etl.quality.coerce import CoerceSpec, _CoerceFn, coerce_batch, coerce_column
from beam_etl.spec import load_spec

D = decimal.Decimal
UTC = dt.timezone.utc

# spec, inputs, expected values, rows that fail
CASES = [
    ("int64", ["1", " 42 ", "+5", "-7", "1,234,567", "12.0", "", None], [1, 42, 5, -7, 1234567, 12, None, None], []),
    ("int64", ["1.5", "abc", "1,23", "9999999999999999999999", "1e3"], [None] * 5, [0, 1, 2, 3, 4]),
    ("float64", ["$1,234.50", "-€5", "(12.00)", "USD 3.5", "1.5e3", "£0.99", "12 EUR"], [1234.5, -5.0, -12.0, 3.5, 1500.0, 0.99, 12.0], []),
    ("float64", ["1,2,3", "12,34.5", "$", "one"], [None] * 4, [0, 1, 2, 3]),
    ({"type": "float64", "thousands": ".", "decimal": ","}, ["1.234,5", "12,25", "1.000.000"], [1234.5, 12.25, 1000000.0], []),
    ({"type": "float64", "thousands": " "}, ["1 234.5", "1\u00a0000", "12 34"], [1234.5, 1000.0, None], [2]),
    ({"type": "float64", "thousands": None}, ["1,234"], [None], [0]),
    ({"type": "float64", "currency": False}, ["$5"], [None], [0]),
    ("decimal128(10, 2)", ["$1,234.50", "0.1", "-3"], [D("1234.50"), D("0.10"), D("-3.00")], []),
    ("decimal128(10, 2)", ["1.234", "123456789012"], [None, None], [0, 1]),
    ("bool", ["Yes", "n", "TRUE", "0", " on ", "", None], [True, False, True, False, True, None, None], []),
    ("bool", ["maybe", "2"], [None, None], [0, 1]),
    ({"type": "bool", "true_values": ["ja", "j"], "false_values": ["nein"]}, ["JA", "nein", "yes"], [True, False, None], [2]),
    ("date32", ["2024-02-29", "2024-01-05"], [dt.date(2024, 2, 29), dt.date(2024, 1, 5)], []),
    ("date32", ["2023-02-29", "05/01/2024", "2024-01-05T10:00"], [None] * 3, [0, 1, 2]),
    ({"type": "date32", "formats": ["%d/%m/%Y", "%Y-%m-%d", "%d %b %Y"]}, ["05/01/2024", "2024-01-06", "7 Jan 2024", "31/02/2024"],
     [dt.date(2024, 1, 5), dt.date(2024, 1, 6), dt.date(2024, 1, 7), None], [3]),
    ("timestamp[us]", ["2024-01-05T10:30:00", "2024-01-05 10:30:00.123456", "2024-01-05T10:30:00Z"],
     [dt.datetime(2024, 1, 5, 10, 30), dt.datetime(2024, 1, 5, 10, 30, 0, 123456), dt.datetime(2024, 1, 5, 10, 30)], []),
    ("timestamp[ms]", ["2024-01-05T10:30:00.123456789"], [dt.datetime(2024, 1, 5, 10, 30, 0, 123000)], []),
    ("timestamp[us, tz=UTC]", ["2024-07-01T12:00:00+02:00", "2024-07-01 12:00"],
     [dt.datetime(2024, 7, 1, 10, tzinfo=UTC), dt.datetime(2024, 7, 1, 12, tzinfo=UTC)], []),
    ({"type": "timestamp[us, tz=UTC]", "timezone": "Europe/Berlin"}, ["2024-07-01 12:00", "2024-01-01 12:00", "2024-07-01T12:00:00Z"],
     [dt.datetime(2024, 7, 1, 10, tzinfo=UTC), dt.datetime(2024, 1, 1, 11, tzinfo=UTC), dt.datetime(2024, 7, 1, 12, tzinfo=UTC)], []),
    ({"type": "timestamp[us, tz=UTC]", "timezone": "Europe/Berlin"}, ["2024-10-27 02:30", "2024-03-31 02:30"], [None, None], [0, 1]),
    ({"type": "timestamp[us, tz=UTC]", "timezone": "Europe/Berlin", "ambiguous": "earliest", "nonexistent": "latest"},
     ["2024-10-27 02:30", "2024-03-31 02:30"], [dt.datetime(2024, 10, 27, 0, 30, tzinfo=UTC), dt.datetime(2024, 3, 31, 1, tzinfo=UTC)], []),
    ({"type": "timestamp[us]", "timezone": "America/New_York"}, ["2024-07-01T12:00:00Z", "2024-07-01 12:00"],
     [dt.datetime(2024, 7, 1, 8), dt.datetime(2024, 7, 1, 12)], []),
    ({"type": "timestamp[s, tz=UTC]", "formats": ["%d.%m.%Y %H:%M", "%Y-%m-%dT%H:%M:%S%z"], "timezone": "Europe/Berlin"},
     ["05.01.2024 10:30", "2024-01-05T10:30:00+0000", "05.01.2024"],
     [dt.datetime(2024, 1, 5, 9, 30, tzinfo=UTC), dt.datetime(2024, 1, 5, 10, 30, tzinfo=UTC), None], [2]),
    ("string", ["a", None], ["a", None], []),
]


def _label(case) -> str:
    spec = case[0]
    return spec if isinstance(spec, str) else spec["type"] + "+" + ",".join(k for k in spec if k != "type")


@pytest.mark.parametrize("spec, values, expected, failing", CASES, ids=[f"{_label(c)}-{i}" for i, c in enumerate(CASES)])
def test_coerce_text(spec, values, expected, failing):
    result, errors = coerce_column(pa.array(values, pa.string()), spec)
    got = result.to_pylist()
    if got and isinstance(got[0], dt.datetime) and got[0].tzinfo is not None:
        got = [v.astimezone(UTC) if v is not None else None for v in got]
    assert got == expected
    assert sorted(errors) == failing


@pytest.mark.parametrize(
    "spec, values, expected, failing",
    [
        ("float64", pa.array([1, 2]), [1.0, 2.0], []),
        ("int32", pa.array([1.0, 1.5, 3e10]), [1, None, None], [1, 2]),
        ("bool", pa.array([0, 3, None]), [False, True, None], []),
        ("string", pa.array([1.5, None]), ["1.5", None], []),
        ("date32", pa.array([dt.datetime(2024, 1, 5, 10)], pa.timestamp("us")), [dt.date(2024, 1, 5)], []),
        ("timestamp[us]", pa.array([dt.date(2024, 1, 5)]), [dt.datetime(2024, 1, 5)], []),
        ("int64", pa.nulls(2), [None, None], []),
        ("int64", pa.array(["1", "x"]).dictionary_encode(), [1, None], [1]),
    ],
)
def test_coerce_non_text_columns(spec, values, expected, failing):
    result, errors = coerce_column(values, spec)
    assert result.to_pylist() == expected
    assert sorted(errors) == failing


def test_coerce_batch_names_value_column_and_type_and_conforms_to_the_schema():
    batch = pa.RecordBatch.from_pydict({"note": ["x", "y", "z"], "id": ["1", "two", "3"], "price": ["$5", "1,2", "$7"]})
    result, errors = coerce_batch(batch, {"id": "int64", "price": "float64", "added": "date32"})
    assert result.schema == pa.schema([("note", pa.string()), ("id", pa.int64()), ("price", pa.float64()), ("added", pa.date32())])
    assert result.column("price").to_pylist() == [5.0, None, 7.0]
    assert errors == {
        1: "cannot coerce 'two' in column 'id' to int64: is not a whole number in the range of the type; "
        "cannot coerce '1,2' in column 'price' to float64: misplaced thousands separator ','"
    }
    dropped, _ = coerce_batch(batch, {"price": "float64", "id": "int64"}, extra="drop")
    assert dropped.schema.names == ["price", "id"]


@pytest.mark.parametrize("on_error, out_ids, dlq_rows, filtered", [("dlq", [1, 3], 1, 0), ("drop", [1, 3], 0, 1), ("null", [1, None, 3], 0, 0)])
def test_on_error_policies(on_error, out_ids, dlq_rows, filtered):
    batch = pa.RecordBatch.from_pydict({"id": ["1", "oops", "3"]})
    outcome = _CoerceFn("typed", {"id": "int64"}, "keep", on_error)(batch)
    assert outcome.out.column("id").to_pylist() == out_ids
    assert (outcome.dlq.num_rows if outcome.dlq is not None else 0) == dlq_rows
    assert (outcome.filtered_count or 0) == filtered
    if on_error == "dlq":
        row = outcome.dlq.to_pylist()[0]
        assert (row["step"], row["error_type"], json.loads(row["record"])) == ("typed", "coerce", {"id": "oops"})
        assert row["error_message"] == "cannot coerce 'oops' in column 'id' to int64: is not a whole number in the range of the type"


def test_on_error_fail_stops_with_the_first_message():
    with pytest.raises(StepFailed, match="1 row\\(s\\) failed coerce: cannot coerce 'x' in column 'd' to date32"):
        _CoerceFn("typed", {"d": "date32"}, "keep", "fail")(pa.RecordBatch.from_pydict({"d": ["2024-01-01", "x"]}))


def _spec(schema):
    return {
        "name": "t",
        "sources": {"raw": {"type": "inline", "rows": [{"a": "1"}]}},
        "steps": [{"name": "typed", "type": "coerce", "input": "raw", "schema": schema}],
        "sinks": {},
    }


@pytest.mark.parametrize(
    "schema, path, message",
    [
        ({"a": "int65"}, "steps[0].schema.a.type", "unknown type 'int65'"),
        ({"a": {"type": "timestamp[us]", "timezone": "Mars/Base"}}, "steps[0].schema.a.timezone", "unknown time zone 'Mars/Base'"),
        ({"a": {"type": "date32", "formats": ["DD/MM/YYYY"]}}, "steps[0].schema.a.formats", "has no % directive"),
        ({"a": {"type": "float64", "thousands": ".", "decimal": "."}}, "steps[0].schema.a", "thousands separator and decimal mark are both '.'"),
        ({"a": {"type": "float64", "thousand": ","}}, "steps[0].schema.a.thousand", "unknown field 'thousand'"),
        ({"a": {"type": "bool", "true_values": ["y"], "false_values": ["Y"]}}, "steps[0].schema.a", "cannot be both true_values and false_values"),
    ],
)
def test_spec_errors_name_the_path(schema, path, message):
    with pytest.raises(SpecError) as info:
        load_spec(_spec(schema))
    issues = [(issue.path, issue.message) for issue in info.value.issues]
    assert any(p == path and message in m for p, m in issues), issues


def test_output_schema_is_known_before_running():
    spec = CoerceSpec.model_validate({"name": "c", "type": "coerce", "input": "x", "schema": {"a": "int64", "b": {"type": "date32"}}})
    assert spec.output_schema([pa.schema([("z", pa.string()), ("a", pa.string())])]) == pa.schema(
        [("z", pa.string()), ("a", pa.int64()), ("b", pa.date32())]
    )


# --------------------------------------------------------------------------- properties


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(10**15), 10**15), min_size=1, max_size=20), st.sampled_from(["{:,}", "{:}", "${:,}", "{:,} USD", "{:,}.00"]))
def test_integers_round_trip_through_their_written_forms(numbers, pattern):
    texts = [pattern.format(n) if n >= 0 or not pattern.startswith("$") else "-" + pattern.format(-n) for n in numbers]
    result, errors = coerce_column(pa.array(texts), "int64")
    assert errors == {}
    assert result.to_pylist() == numbers


@settings(max_examples=100, deadline=None)
@given(st.lists(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False), min_size=1, max_size=20))
def test_european_decimals_round_trip(values):
    def european(value: D) -> str:  # 1234567.5 -> "1.234.567,50 €"
        return f"{value:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".") + " €"

    result, errors = coerce_column(pa.array([european(v) for v in values]), {"type": "decimal128(14, 2)", "thousands": ".", "decimal": ","})
    assert errors == {}
    assert result.to_pylist() == values


_ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "America/Sao_Paulo", "UTC"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2037, 12, 31)), min_size=1, max_size=10), st.sampled_from(_ZONES))
def test_wall_clock_times_in_a_zone_agree_with_zoneinfo(moments, zone_name):
    zone = zoneinfo.ZoneInfo(zone_name)

    def unambiguous(wall: dt.datetime) -> bool:  # exists once: both folds give the same instant and it round-trips
        first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
        return first.utcoffset() == second.utcoffset() and first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall

    moments = [m.replace(microsecond=0) for m in moments]
    assume(all(unambiguous(m) for m in moments))
    texts = [m.strftime("%d/%m/%Y %H:%M:%S") for m in moments]
    result, errors = coerce_column(pa.array(texts), {"type": "timestamp[us, tz=UTC]", "formats": ["%d/%m/%Y %H:%M:%S"], "timezone": zone_name})
    assert errors == {}
    assert [v.astimezone(UTC) for v in result.to_pylist()] == [m.replace(tzinfo=zone).astimezone(UTC) for m in moments]


def test_clean_then_coerce_in_a_spec_run_balances_and_routes_failures(tmp_path):
    from beam_etl.run import run_spec

    rows = [
        {"id": " 1 ", "price": "$1,200.50", "day": "05/01/2024", "active": "yes"},
        {"id": "2", "price": "N/A", "day": "06/01/2024", "active": "no"},
        {"id": "3", "price": "12,34", "day": "07/01/2024", "active": "y"},
        {"id": None, "price": "$1", "day": "08/01/2024", "active": "n"},
        {"id": "5", "price": "€7", "day": "31/02/2024", "active": "maybe"},
        {"id": "6", "price": "(3.00)", "day": "09/01/2024", "active": "TRUE"},
    ]
    spec = load_spec(
        {
            "name": "typed",
            "sources": {"raw": {"type": "inline", "rows": rows}},
            "steps": [
                {"name": "tidy", "type": "clean", "input": "raw", "ops": {"id": ["trim", "drop_if_null"], "price": [{"null_if": ["N/A"]}]}},
                {"name": "typed", "type": "coerce", "input": "tidy",
                 "schema": {"id": "int64", "price": "float64", "day": {"type": "date32", "formats": ["%d/%m/%Y"]}, "active": "bool"}},
            ],
            "sinks": {"out": {"type": "ndjson", "input": "typed", "path": "out/"}},
            "settings": {"batch_rows": 2},
        }
    )
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert report.status == "succeeded", report.error
    out = sorted((json.loads(line) for f in (tmp_path / "out").glob("*") for line in f.read_text().splitlines() if line), key=lambda r: r["id"])
    assert out == [
        {"id": 1, "price": 1200.5, "day": "2024-01-05", "active": True},
        {"id": 2, "price": None, "day": "2024-01-06", "active": False},
        {"id": 6, "price": -3.0, "day": "2024-01-09", "active": True},
    ]
    dlq = sorted((json.loads(line) for f in (tmp_path / "dlq").glob("*") for line in f.read_text().splitlines() if line), key=lambda r: r["record"])
    assert [(r["step"], r["error_type"], json.loads(r["record"])["id"]) for r in dlq] == [("typed", "coerce", "3"), ("typed", "coerce", "5")]
    assert dlq[1]["error_message"] == (
        "cannot coerce '31/02/2024' in column 'day' to date32: matches none of the formats ['%d/%m/%Y']; "
        "cannot coerce 'maybe' in column 'active' to bool: is not a recognised boolean (true/t/yes/false/f/no ...)"
    )
    steps = {row["name"]: row for row in report.summary["steps"]}
    assert (steps["tidy"]["rows_in"], steps["tidy"]["rows_out"], steps["tidy"]["rows_filtered"]) == (6, 5, 1)
    assert (steps["typed"]["rows_in"], steps["typed"]["rows_out"], steps["typed"]["rows_dlq"]) == (5, 3, 2)
    assert all(row["balanced"] for row in report.summary["steps"])
