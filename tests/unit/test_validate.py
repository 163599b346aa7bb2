"""validate: every column rule, formats, row checks (SQL and user Python), rule names in
messages, spec errors with paths, and uniqueness over the whole input (pure function and one
Beam pipeline with small batches)."""

from __future__ import annotations

import datetime as dt
import json
import random

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.json_rows import rows_as_json
from beam_etl.errors import SpecError
from beam_etl.quality.validate import ColumnRules, RowCheck, ValidateSpec, _ValidateFn, duplicate_mask, validate_batch
from beam_etl.spec import load_spec

# --------------------------------------------------------------------------- user rules (by import path)


def positive_total(batch: pa.RecordBatch, limit: float = 0) -> pa.Array:
    """A vectorized rule: true where the row is valid."""
    return pc.greater(pc.add(batch.column("a"), batch.column("b")), limit)


def numpy_rule(batch: pa.RecordBatch) -> np.ndarray:
    return np.asarray(batch.column("a").to_numpy(zero_copy_only=False)) % 2 == 0


def row_rule(row: dict, banned: str = "x") -> bool:
    if row["name"] == "boom":
        raise KeyError("no such thing")
    return row["name"] != banned


def picky_batch_rule(batch: pa.RecordBatch) -> pa.Array:
    if "bad" in batch.column("name").to_pylist():
        raise ValueError("cannot judge 'bad'")
    return pa.array([True] * batch.num_rows)


def wrong_length(batch: pa.RecordBatch) -> list[bool]:
    return [True]


NOT_CALLABLE = 42


# --------------------------------------------------------------------------- column rules

# rules for column "v", values, failing flags, first message of a failing row
RULE_CASES = [
    ({"required": True}, [1, None, float("nan")], [False, True, True], "v is required"),
    ({"required": True}, ["a", " ", ""], [False, True, True], "v is required"),
    ({"nullable": False}, ["a", None, ""], [False, True, False], "v is null (nullable: false)"),
    ({"type": "int64"}, ["1", " 2 ", "x", "", None, "1.5"], [False, False, True, False, False, True], "v: 'x' is not a valid int64"),
    ({"type": "date32"}, ["2024-01-05", "2024-02-30"], [False, True], "v: '2024-02-30' is not a valid date32"),
    ({"min": 0, "max": 10}, [0, 10, -1, 11, None], [False, False, True, True, False], "v: -1 is less than min 0"),
    ({"exclusive_min": 0, "exclusive_max": 10}, [0, 10, 5, 0.5], [True, True, False, False], "v: 0 is not greater than exclusive_min 0"),
    ({"min": 1.5}, ["2", "1", "abc"], [False, True, False], "v: '1' is less than min 1.5"),
    ({"min": dt.date(2024, 1, 1)}, [dt.date(2023, 12, 31), dt.date(2024, 1, 1)], [True, False], "v: 2023-12-31 is less than min 2024-01-01"),
    ({"min": dt.date(2024, 1, 1)}, ["2023-12-31", "2024-06-01"], [True, False], "v: '2023-12-31' is less than min 2024-01-01"),
    ({"min": "b"}, ["a", "b", "c"], [True, False, False], "v: 'a' is less than min b"),
    ({"regex": "^[A-Z]{2}$"}, ["US", "usa", None], [False, True, False], "v: 'usa' does not match regex ^[A-Z]{2}$"),
    ({"enum": ["a", "b"]}, ["a", "c", None], [False, True, False], "v: 'c' is not one of ['a', 'b']"),
    ({"enum": [1, 2]}, [1, 3], [False, True], "v: 3 is not one of [1, 2]"),
    ({"length": 2}, ["ab", "abc", "ü1"], [False, True, False], "v: 'abc' does not have length 2"),
    ({"min_length": 2, "max_length": 3}, ["a", "ab", "abcd"], [True, False, True], "v: 'a' is shorter than 2 characters"),
    ({"format": "email"}, ["a@example.com", "nope", None], [False, True, False], "v: 'nope' is not a valid email"),
    ({"format": {"zip": {"country": "CA"}}}, ["K1A 0B1", "12345"], [False, True], "v: '12345' is not a valid zip (CA)"),
    ({"format": {"phone": {"region": "US"}}}, ["(650) 253-0000", "12"], [False, True], "v: '12' is not a valid phone (US)"),
    ({"format": {"date": {"formats": ["%d/%m/%Y"]}}}, ["31/01/2024", "31/02/2024"], [False, True], "v: '31/02/2024' is not a valid date"),
    ({"format": "credit_card"}, ["4111 1111 1111 1111", "4111 1111 1111 1112"], [False, True], "is not a valid credit_card"),
]


@pytest.mark.parametrize("rules, values, failing, message", RULE_CASES, ids=[f"{next(iter(c[0]))}-{i}" for i, c in enumerate(RULE_CASES)])
def test_column_rules(rules, values, failing, message):
    batch = pa.RecordBatch.from_pydict({"v": values})
    valid, first_rule, messages = validate_batch(batch, {"v": ColumnRules.model_validate(rules)})
    assert [not v for v in valid.to_pylist()] == failing
    first_failing = failing.index(True)
    assert messages[first_failing].as_py().startswith(message) or message in messages[first_failing].as_py()
    assert first_rule[first_failing].as_py() == f"validate.{next(iter(rules))}"
    assert all(m is None for m, f in zip(messages.to_pylist(), failing) if not f)


def test_every_failing_rule_is_reported_by_name_in_order():
    batch = pa.RecordBatch.from_pydict({"code": ["x", "ABC"], "n": [-5, 5]})
    rules = {"code": ColumnRules(length=2, regex="^[A-Z]+$", enum=["AB"]), "n": ColumnRules(min=0)}
    valid, first_rule, messages = validate_batch(batch, rules)
    assert valid.to_pylist() == [False, False]
    assert first_rule.to_pylist() == ["validate.regex", "validate.enum"]
    assert messages[0].as_py() == "code: 'x' does not match regex ^[A-Z]+$; code: 'x' is not one of ['AB']; code: 'x' does not have length 2; n: -5 is less than min 0"
    assert messages[1].as_py() == "code: 'ABC' is not one of ['AB']; code: 'ABC' does not have length 2"


def test_a_missing_column_is_null():
    batch = pa.RecordBatch.from_pydict({"other": [1, 2]})
    valid, _, messages = validate_batch(batch, {"id": ColumnRules(required=True), "email": ColumnRules(format="email")})
    assert valid.to_pylist() == [False, False]
    assert messages.to_pylist() == ["id is required"] * 2


# --------------------------------------------------------------------------- row checks


def test_sql_check_null_passes_and_errors_fail_the_row():
    batch = pa.RecordBatch.from_pydict(
        {"start": [dt.date(2024, 1, 1), dt.date(2024, 1, 5), None, dt.date(2024, 1, 1)],
         "end": [dt.date(2024, 1, 2), dt.date(2024, 1, 1), dt.date(2024, 1, 1), dt.date(2024, 1, 1)],
         "qty": [1, 1, 1, 0]}
    )
    checks = [RowCheck(name="dates_ordered", expr="end >= start"), RowCheck(name="per_unit", expr="10 / qty > 1", message="qty must be 1..9")]
    valid, first_rule, messages = validate_batch(batch, {}, checks)
    assert valid.to_pylist() == [True, False, True, False]  # NULL passes, as in a SQL CHECK
    assert first_rule.to_pylist() == [None, "validate.dates_ordered", None, "validate.per_unit"]
    assert messages[1].as_py() == "check dates_ordered failed: end >= start"
    assert messages[3].as_py() == "check per_unit could not be evaluated: division by zero in '10 / qty'"


def test_structured_condition_check():
    batch = pa.RecordBatch.from_pydict({"age": [10, 30]})
    check = RowCheck(name="adult", expr={"column": "age", "op": "gte", "value": 18})
    valid, _, messages = validate_batch(batch, {}, [check])
    assert valid.to_pylist() == [False, True]
    assert messages[0].as_py().startswith("check adult failed: ")


@pytest.mark.parametrize(
    "check, valid",
    [
        ({"function": f"{__name__}:positive_total"}, [True, False, True, False]),
        ({"function": f"{__name__}:positive_total", "args": {"limit": 3}}, [False, False, True, False]),
        ({"function": f"{__name__}.numpy_rule"}, [True, False, True, False]),
        ({"function": f"{__name__}:row_rule", "mode": "row"}, [True, True, False, False]),
        ({"function": f"{__name__}:row_rule", "mode": "row", "args": {"banned": "ok"}}, [False, True, True, False]),
        ({"function": f"{__name__}:picky_batch_rule"}, [True, True, True, False]),
    ],
)
def test_custom_python_rules(check, valid):
    batch = pa.RecordBatch.from_pydict({"a": [2, -5, 4, 1], "b": [1, 1, 0, -1], "name": ["ok", "y", "x", "boom" if check.get("mode") == "row" else "bad"]})
    got, first_rule, messages = validate_batch(batch, {}, [RowCheck.model_validate(check)])
    assert got.to_pylist() == valid
    name = check["function"].replace(":", ".").rsplit(".", 1)[-1]
    assert {r for r in first_rule.to_pylist() if r} <= {f"validate.{name}"}
    if check["function"].endswith("row_rule"):
        assert messages[3].as_py() == f"check row_rule ({check['function']}) raised KeyError: 'no such thing'"
    if check["function"].endswith("picky_batch_rule"):  # only the row the function cannot judge fails
        assert messages[3].as_py() == f"check picky_batch_rule ({check['function']}) raised: cannot judge 'bad'"


def test_custom_rule_returning_the_wrong_length_is_a_bug_not_bad_rows():
    with pytest.raises(TypeError, match="returned 1 values for 3 rows"):
        validate_batch(pa.RecordBatch.from_pydict({"a": [1, 2, 3]}), {}, [RowCheck(function=f"{__name__}:wrong_length")])


# --------------------------------------------------------------------------- on_error


@pytest.mark.parametrize("on_error", ["dlq", "drop", "flag"])
def test_on_error_with_checks(on_error):
    batch = pa.RecordBatch.from_pydict({"id": [1, 2], "a": [1, 1], "b": [1, -5]})
    outcome = _ValidateFn("v", {"id": ColumnRules(max=1)}, on_error, [RowCheck(name="sum", expr="a + b > 0")])(batch)
    if on_error == "flag":
        assert outcome.out.column("_valid").to_pylist() == [True, False]
        assert outcome.out.column("_errors").to_pylist() == [None, "id: 2 is greater than max 1; check sum failed: a + b > 0"]
    elif on_error == "dlq":
        assert outcome.dlq.column("error_type").to_pylist() == ["validate.max"]
        assert outcome.dlq.column("error_message").to_pylist() == ["id: 2 is greater than max 1; check sum failed: a + b > 0"]
    else:
        assert outcome.filtered.column("id").to_pylist() == [2] and outcome.dlq is None


# --------------------------------------------------------------------------- spec errors


def _spec(step: dict, rows=None) -> dict:
    return {
        "name": "t",
        "sources": {"raw": {"type": "inline", "rows": rows or [{"id": 1, "email": "a@b.co", "start": "2024-01-01"}]}},
        "steps": [{"name": "v", "type": "validate", "input": "raw", **step}],
        "sinks": {},
    }


@pytest.mark.parametrize(
    "step, path, message",
    [
        ({"rules": {"id": {"regex": "([a"}}}, "steps[0].rules.id.regex", "regex '([a' does not compile"),
        ({"rules": {"id": {"min": 5, "max": 1}}}, "steps[0].rules.id", "min 5 is greater than max 1: no value can pass"),
        ({"rules": {"id": {"exclusive_min": 5, "max": 5}}}, "steps[0].rules.id", "exclusive_min 5 is equal to max 5"),
        ({"rules": {"id": {"min": "a", "max": 3}}}, "steps[0].rules.id", "are not comparable"),
        ({"rules": {"email": {"format": "emial"}}}, "steps[0].rules.email.format", "unknown format 'emial' (did you mean 'email'?)"),
        ({"rules": {"email": {"format": {"zip": {"country": "ZZ"}}}}}, "steps[0].rules.email.format", "no postal code pattern for country 'ZZ'"),
        ({"rules": {"id": {"type": "int99"}}}, "steps[0].rules.id.type", "unknown type 'int99'"),
        ({"rules": {"id": {"requried": True}}}, "steps[0].rules.id.requried", "unknown field 'requried'"),
        ({"rules": {"idd": {"required": True}}}, "steps[0].rules.idd", "unknown column 'idd'"),
        ({"checks": [{"function": "no_such_module_xyz:rule"}]}, "steps[0].checks[0].function", "cannot import module 'no_such_module_xyz'"),
        ({"checks": [{"function": f"{__name__}:positve_total"}]}, "steps[0].checks[0].function", "has no attribute 'positve_total' (did you mean 'positive_total'?)"),
        ({"checks": [{"function": f"{__name__}:NOT_CALLABLE"}]}, "steps[0].checks[0].function", "is not callable"),
        ({"checks": [{"function": "justaname"}]}, "steps[0].checks[0].function", "is not an import path"),
        ({"checks": [{"expr": "id >"}]}, "steps[0].checks[0].expr", "cannot parse"),
        ({"checks": [{"expr": "idd > 0"}]}, "steps[0].checks[0].expr", "unknown column 'idd'"),
        ({"checks": [{"expr": "id > 0", "unique": ["id"]}]}, "steps[0].checks[0]", "exactly one of expr"),
        ({"checks": [{"unique": ["id", "emial"]}]}, "steps[0].checks[0].unique", "unknown column 'emial'"),
        ({"rules": {"id": {"unique": True}}, "unique_order_by": ["start DOWN"]}, "steps[0].unique_order_by", "'start DOWN' is not 'column' or 'column ASC|DESC'"),
        ({"rules": {"id": {"unique": True}}, "unique_order_by": ["strat DESC"]}, "steps[0].unique_order_by[0]", "unknown column 'strat'"),
        ({}, "steps[0]", "needs rules (per column) or checks (per row)"),
    ],
)
def test_spec_errors_name_the_path(step, path, message):
    with pytest.raises(SpecError) as info:
        load_spec(_spec(step))
    issues = [(issue.path, issue.message) for issue in info.value.issues]
    assert any(p == path and message in m for p, m in issues), issues


# --------------------------------------------------------------------------- uniqueness (pure)


def test_duplicate_mask_keeps_the_first_by_order_by_then_content():
    table = pa.table({"id": [1, 1, 2, 1, None, None], "at": [3, 5, 1, 4, 1, 1], "v": ["c", "a", "x", "b", "n", "n"]})
    # Default: by the row's JSON text, '{"id": 1, "at": 3, ...' sorts before "at": 4 and "at": 5.
    assert duplicate_mask(table, ["id"]).to_pylist() == [False, True, False, True, False, False]
    assert duplicate_mask(table, ["id"], ["at DESC"]).to_pylist() == [True, False, False, True, False, False]
    assert duplicate_mask(table, ["id"], ["v"]).to_pylist() == [True, False, False, True, False, False]
    assert duplicate_mask(table, ["id"], ["at"]).to_pylist() == [False, True, False, True, False, False]
    assert duplicate_mask(table, ["id", "v"]).to_pylist() == [False] * 6


rows_strategy = st.lists(
    st.fixed_dictionaries({"k": st.one_of(st.none(), st.integers(0, 5)), "j": st.sampled_from(["a", "b"]), "o": st.integers(0, 3), "p": st.integers(0, 2)}),
    min_size=0,
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(rows_strategy, st.randoms(use_true_random=False))
def test_duplicate_mask_agrees_with_duckdb_and_ignores_row_order(rows, rnd):
    schema = pa.schema([("k", pa.int64()), ("j", pa.string()), ("o", pa.int64()), ("p", pa.int64())])
    table = pa.Table.from_pylist(rows, schema=schema)
    kept = table.filter(pc.invert(duplicate_mask(table, ["k", "j"], ["o DESC"])))
    frame = table.append_column("row_json", rows_as_json(table.combine_chunks().to_batches()[0]) if rows else pa.array([], pa.string()))  # noqa: F841 (read by DuckDB by name)
    expected = duckdb.sql(
        "SELECT k, j, o, p FROM frame QUALIFY k IS NULL OR row_number() OVER (PARTITION BY k, j ORDER BY o DESC, row_json) = 1"
    ).arrow()
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(map(key, kept.to_pylist())) == sorted(map(key, expected.read_all().to_pylist() if hasattr(expected, "read_all") else expected.to_pylist()))
    shuffled_rows = list(rows)
    rnd.shuffle(shuffled_rows)
    shuffled = pa.Table.from_pylist(shuffled_rows, schema=schema)
    kept_again = shuffled.filter(pc.invert(duplicate_mask(shuffled, ["k", "j"], ["o DESC"])))
    assert sorted(map(key, kept_again.to_pylist())) == sorted(map(key, kept.to_pylist()))


# --------------------------------------------------------------------------- uniqueness in Beam


def _people(n: int = 40) -> list[dict]:
    rng = random.Random(7)
    people = []
    for i in range(n):
        people.append({"row": i, "id": i % 13, "email": f"user{i % 5}@example.com", "order_no": i % 2, "updated": rng.randint(0, 1000), "age": 20 + i % 50})
    people[5]["age"] = -1  # fails a row rule; leaves before the uniqueness check
    people[6]["id"] = None  # NULL keys never conflict
    people[7]["id"] = None
    return people


def test_unique_across_batches_in_one_pipeline_run(tmp_path):
    from beam_etl.run import run_spec

    people = _people()
    spec = load_spec(
        {
            "name": "uniq",
            "sources": {"people": {"type": "inline", "rows": people}},
            "steps": [
                {"name": "valid", "type": "validate", "input": "people", "unique_order_by": ["updated DESC"], "shards": 4,
                 "rules": {"id": {"unique": True}, "age": {"min": 0}},
                 "checks": [{"name": "email_order", "unique": ["email", "order_no"]}]},
            ],
            "sinks": {"out": {"type": "ndjson", "input": "valid", "path": "out/"}},
            "settings": {"batch_rows": 3},  # 14 batches: duplicates mostly sit in different batches
        }
    )
    report = run_spec(spec, ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)
    assert report.status == "succeeded", report.error

    # The oracle: the same rules in DuckDB, applied in the documented order.
    frame = pa.Table.from_pylist([p for p in people if p["age"] >= 0])
    frame = frame.append_column("row_json", rows_as_json(frame.to_batches()[0]))
    first = duckdb.sql("SELECT * FROM frame QUALIFY id IS NULL OR row_number() OVER (PARTITION BY id ORDER BY updated DESC, row_json) = 1")  # noqa: F841 (read by DuckDB by name)
    expected = duckdb.sql("SELECT row FROM first QUALIFY row_number() OVER (PARTITION BY email, order_no ORDER BY updated DESC, row_json) = 1")
    expected_rows = sorted(r[0] for r in expected.fetchall())

    out_rows = [json.loads(line) for f in sorted((tmp_path / "out").glob("*")) for line in f.read_text().splitlines() if line]
    assert sorted(r["row"] for r in out_rows) == expected_rows
    assert len({r["id"] for r in out_rows if r["id"] is not None}) == sum(1 for r in out_rows if r["id"] is not None)

    dlq = [json.loads(line) for f in sorted((tmp_path / "dlq").glob("*")) for line in f.read_text().splitlines() if line]
    by_type: dict[str, list[int]] = {}
    for row in dlq:
        by_type.setdefault(row["error_type"], []).append(json.loads(row["record"])["row"])
    assert by_type["validate.min"] == [5]
    assert len(by_type["validate.unique"]) + len(by_type["validate.email_order"]) == len(people) - 1 - len(expected_rows)
    assert by_type["validate.email_order"], "the compound key found no duplicates: the test data does not exercise it"
    sample = next(row for row in dlq if row["error_type"] == "validate.unique")
    assert sample["error_message"].startswith("id: ") and sample["error_message"].endswith(" is not unique (an earlier row has it)")
    assert any(row["error_message"].startswith("(email, order_no): ('user") for row in dlq if row["error_type"] == "validate.email_order")

    step = next(row for row in report.summary["steps"] if row["name"] == "valid")
    assert (step["rows_in"], step["rows_out"], step["rows_dlq"]) == (len(people), len(expected_rows), len(dlq))
    assert all(row["balanced"] for row in report.summary["steps"]), report.summary["steps"]


def test_unique_flag_mode_as_a_plain_ptransform():
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from beam_etl.batch import split_batch
    from beam_etl.quality.validate import Validate

    batch = pa.RecordBatch.from_pydict({"id": [1, 2, 1, 3, 2, 1], "v": ["a", "b", "c", "d", "e", "f"], "n": [1, 1, 1, -1, 1, 1]})
    with beam.Pipeline() as pipeline:
        result = (
            pipeline
            | beam.Create(list(split_batch(batch, 2))).with_output_types(pa.RecordBatch)
            | Validate("v", {"id": {"unique": True}, "n": {"min": 0}}, on_error="flag", shards=3, batch_rows=4)
        )
        rows = result.main | beam.FlatMap(lambda b: [(r["v"], r["_valid"], r["_errors"]) for r in b.to_pylist()])
        assert_that(
            rows,
            equal_to(
                [
                    ("a", True, None),
                    ("b", True, None),
                    ("c", False, "id: 1 is not unique (an earlier row has it)"),
                    ("d", False, "n: -1 is less than min 0"),
                    ("e", False, "id: 2 is not unique (an earlier row has it)"),
                    ("f", False, "id: 1 is not unique (an earlier row has it)"),
                ]
            ),
        )


def test_unique_keys_come_from_rules_and_checks_in_order():
    spec = ValidateSpec.model_validate(
        {"name": "v", "type": "validate", "input": "x", "rules": {"a": {"unique": True}, "b": {"min": 1}},
         "checks": [{"unique": ["b", "c"]}, {"name": "k", "unique": "d"}]}
    )
    assert spec.unique_keys() == [(["a"], "unique"), (["b", "c"], "unique"), (["d"], "k")]
