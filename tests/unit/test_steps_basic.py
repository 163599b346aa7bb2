"""The vectorized functions behind validate, clean, cast, select/rename/drop — no Beam needed."""

from __future__ import annotations

import pyarrow as pa
import pytest

from beam_etl.quality.clean import CleanSpec, clean_column
from beam_etl.quality.validate import ColumnRules, _ValidateFn, validate_batch
from beam_etl.steps import isolate_row_errors
from beam_etl.transforms.fields import _CastFn, drop_columns, rename_columns, select_columns


def test_validate_rules_report_every_failure_with_rule_names():
    batch = pa.RecordBatch.from_pydict(
        {
            "id": [1, None, 3, 4, 5],
            "age": ["5", "-3", "x", "200", None],
            "email": ["a@b.co", "bad", "c@d.io", None, "e@f.org"],
        }
    )
    rules = {
        "id": ColumnRules(required=True),
        "age": ColumnRules(type="int64", min=0, max=130),
        "email": ColumnRules(regex=r"^[^@\s]+@[^@\s]+\.[a-z]+$"),
    }
    valid, first_rule, messages = validate_batch(batch, rules)
    assert valid.to_pylist() == [True, False, False, False, True]  # nulls pass all but required
    assert first_rule.to_pylist() == [None, "validate.required", "validate.type", "validate.max", None]
    assert messages[1].as_py() == (
        "id is required; age: '-3' is less than min 0; email: 'bad' does not match regex ^[^@\\s]+@[^@\\s]+\\.[a-z]+$"
    )
    assert messages[2].as_py() == "age: 'x' is not a valid int64"


@pytest.mark.parametrize(
    "on_error, out_ids, dlq, filtered",
    [("dlq", [1], 2, 0), ("drop", [1], 0, 2), ("flag", [1, 2, 3], 0, 0)],
)
def test_validate_on_error_policies(on_error, out_ids, dlq, filtered):
    batch = pa.RecordBatch.from_pydict({"id": [1, 2, 3], "age": [10, -1, 500]})
    outcome = _ValidateFn("v", {"age": ColumnRules(min=0, max=130)}, on_error)(batch)
    assert outcome.out.column("id").to_pylist() == out_ids
    assert (outcome.dlq.num_rows if outcome.dlq is not None else 0) == dlq
    assert (outcome.filtered.num_rows if outcome.filtered is not None else 0) == filtered
    if on_error == "dlq":
        assert outcome.dlq.column("error_type").to_pylist() == ["validate.min", "validate.max"]
        assert outcome.dlq.column("record").to_pylist() == ['{"id": 2, "age": -1}', '{"id": 3, "age": 500}']
    if on_error == "flag":
        assert outcome.out.column("_valid").to_pylist() == [True, False, False]


def test_validate_fail_raises_step_failed():
    from beam_etl.errors import StepFailed

    with pytest.raises(StepFailed, match="step 'v' failed: 1 invalid row"):
        _ValidateFn("v", {"age": ColumnRules(min=0)}, "fail")(pa.RecordBatch.from_pydict({"age": [-1, 1]}))


def test_rules_reject_bad_bounds_and_regex():
    with pytest.raises(ValueError, match="min 5 is greater than max 1"):
        ColumnRules(min=5, max=1)
    with pytest.raises(ValueError, match="does not compile"):
        ColumnRules(regex="([a-z")


def test_clean_functions_in_order():
    column = pa.array(["  jOHN   smith ", None, " N/A ", ""])
    assert clean_column(column, ["trim", "collapse_spaces", "title", {"null_if": ["N/A", ""]}]).to_pylist() == [
        "John Smith",
        None,
        None,
        None,
    ]
    assert clean_column(pa.array([1, 2]), ["trim", "lower"]).to_pylist() == [1, 2]  # non-strings untouched


def test_clean_spec_rejects_unknown_function():
    with pytest.raises(ValueError, match="unknown cleaning function 'trimm' \\(did you mean 'trim'\\?\\)"):
        CleanSpec.model_validate({"name": "c", "type": "clean", "input": "x", "ops": {"a": ["trimm"]}})


def test_cast_routes_exactly_the_bad_values():
    batch = pa.RecordBatch.from_pydict({"id": list(range(6)), "n": ["1", " 2 ", "x", "", None, "9999999999999999999999"]})
    outcome = _CastFn("c", {"n": "int64"}, "dlq")(batch)
    assert outcome.out.column("id").to_pylist() == [0, 1, 3, 4]
    assert outcome.out.column("n").to_pylist() == [1, 2, None, None]
    assert outcome.dlq.column("error_message").to_pylist() == [
        "cannot cast 'x' in column 'n' to int64",
        "cannot cast '9999999999999999999999' in column 'n' to int64",
    ]
    nulls = _CastFn("c", {"n": "int64"}, "null")(batch)
    assert nulls.out.num_rows == 6 and nulls.dlq is None


def test_isolate_row_errors_finds_each_bad_row_in_a_large_batch():
    import pyarrow.compute as pc

    values = [str(i) for i in range(20_000)]
    bad = {17, 4_096, 19_999}
    for i in bad:
        values[i] = "oops"
    batch = pa.RecordBatch.from_pydict({"s": values})
    result, errors = isolate_row_errors(lambda b: pc.cast(b.column(0), pa.int64()), batch, pa.int64())
    assert set(errors) == bad
    assert result.null_count == 3 and result[18].as_py() == 18


def test_field_helpers():
    batch = pa.RecordBatch.from_pydict({"a": [1], "b": ["x"]})
    assert select_columns(batch, ["b", "missing"]).to_pylist() == [{"b": "x", "missing": None}]
    assert rename_columns(batch, {"a": "id"}).schema.names == ["id", "b"]
    assert drop_columns(batch, ["a"]).schema.names == ["b"]


def test_flatten_structs_and_explode_lists_keeps_every_row():
    from beam_etl.transforms.fields import _FlattenFn, unflatten_batch

    batch = pa.RecordBatch.from_pylist(
        [
            {"id": 1, "a": {"b": {"c": 1}, "d": "x"}, "items": [1, 2]},
            {"id": 2, "a": None, "items": []},
            {"id": 3, "a": {"b": None, "d": "y"}, "items": None},
        ]
    )
    outcome = _FlattenFn("_", ["items"])(batch)
    assert outcome.out.schema.names == ["id", "a_b_c", "a_d", "items"]
    assert outcome.out.to_pylist() == [
        {"id": 1, "a_b_c": 1, "a_d": "x", "items": 1},
        {"id": 1, "a_b_c": 1, "a_d": "x", "items": 2},
        {"id": 2, "a_b_c": None, "a_d": None, "items": None},  # a null struct gives null children
        {"id": 3, "a_b_c": None, "a_d": "y", "items": None},  # empty/null lists keep their row
    ]
    assert outcome.merged == 3
    nested = unflatten_batch(_FlattenFn(".", [])(batch).out)
    assert nested.to_pylist()[0] == {"id": 1, "a": {"b": {"c": 1}, "d": "x"}, "items": [1, 2]}


def test_every_counting_dofn_announces_its_counters_at_bundle_start():
    """Prism loses a split bundle's first report of a counter; see StepCounters.announce."""
    import ast
    import pathlib

    import beam_etl

    missing = []
    for path in pathlib.Path(beam_etl.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for cls in [node for node in tree.body if isinstance(node, ast.ClassDef)]:
            source = ast.unparse(cls)
            if "StepCounters(" not in source:
                continue
            starts = [f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "start_bundle"]
            inherited = any(isinstance(b, ast.Name) and b.id in {"_CountingFn"} for b in cls.bases)
            if not inherited and not any("announce()" in ast.unparse(f) for f in starts):
                missing.append(f"{path.name}:{cls.name}")
    assert not missing, missing

