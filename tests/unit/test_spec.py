"""Spec loading: interpolation, cross-references, and errors that name path, line and fix."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from beam_etl.errors import SpecError
from beam_etl.spec import load_spec

GOOD = """\
name: orders
sources:
  customers:
    type: csv
    path: customers.csv
    schema: {id: int64, email: string, age: int64, amount: float64}
steps:
  - name: clean
    type: clean
    input: customers
    ops: {email: [trim, lower]}
  - name: valid
    type: validate
    input: clean
    rules: {id: {required: true}, age: {min: 0, max: 130}}
  - name: enriched
    type: derive
    input: valid
    columns: {total: "amount * 2"}
sinks:
  out: {type: parquet, input: enriched, path: out/}
"""


def write(tmp_path, text: str, name: str = "pipeline.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def issues_of(path_or_dict, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path_or_dict, **kwargs)
    return [str(issue) for issue in info.value.issues]


def test_good_spec_loads_in_dependency_order(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert [step.name for step in spec.steps] == ["clean", "valid", "enriched"]
    assert spec.sinks["out"].input == "enriched"
    assert spec.schemas["enriched"].names == ["id", "email", "age", "amount", "total"]


def test_unknown_input_names_path_line_and_suggestion(tmp_path):
    text = GOOD.replace("input: clean\n", "input: cleam\n")
    issues = issues_of(write(tmp_path, text))
    assert issues == ["steps[1].input (line 14): unknown step or source 'cleam' (did you mean 'clean'?)"]


def test_all_errors_are_reported_at_once(tmp_path):
    text = GOOD.replace("type: derive", "type: derivee").replace("input: enriched, path", "input: enrich, path")
    text = text.replace("rules: {id:", "rulez: {id:")
    issues = issues_of(write(tmp_path, text))
    joined = "\n".join(issues)
    assert "steps[2].type (line 17): unknown step type 'derivee' (did you mean 'derive'?)" in joined
    assert "steps[1].rulez (line 15): unknown field 'rulez' (did you mean 'rules'?)" in joined
    assert "sinks.out.input" in joined and "'enrich'" in joined
    assert len(issues) >= 3


def test_unknown_source_type(tmp_path):
    issues = issues_of(write(tmp_path, GOOD.replace("type: csv", "type: cvs")))
    assert issues[0].startswith("sources.customers.type (line 4): unknown source type 'cvs' (did you mean 'csv'?)")


def test_duplicate_step_names(tmp_path):
    issues = issues_of(write(tmp_path, GOOD.replace("name: enriched", "name: clean").replace("input: enriched", "input: clean")))
    assert any("duplicate step name 'clean' (first used by steps[0])" in issue for issue in issues)


def test_cycle_is_reported(tmp_path):
    text = GOOD.replace("input: customers\n    ops", "input: enriched\n    ops")
    issues = issues_of(write(tmp_path, text))
    assert any("steps form a cycle" in issue for issue in issues)


def test_unknown_column_in_expression_with_suggestion(tmp_path):
    issues = issues_of(write(tmp_path, GOOD.replace('"amount * 2"', '"amout * 2"')))
    assert issues == ["steps[2].columns.total (line 19): unknown column 'amout' (did you mean 'amount'?)"]


def test_unknown_column_in_rules(tmp_path):
    issues = issues_of(write(tmp_path, GOOD.replace("age: {min: 0", "agee: {min: 0")))
    assert issues == ["steps[1].rules.agee (line 15): unknown column 'agee' (did you mean 'age'?)"]


def test_expression_outside_whitelist_is_a_spec_error(tmp_path):
    issues = issues_of(write(tmp_path, GOOD.replace('"amount * 2"', "\"system('rm -rf /')\"")))
    assert len(issues) == 1 and issues[0].startswith("steps[2].columns.total")


def test_min_greater_than_max_and_bad_regex(tmp_path):
    text = GOOD.replace("age: {min: 0, max: 130}", "age: {min: 10, max: 1}, email: {regex: '([a-z'}")
    joined = "\n".join(issues_of(write(tmp_path, text)))
    assert "min 10 is greater than max 1" in joined
    assert "does not compile" in joined


def test_env_interpolation_and_missing_variable(tmp_path):
    text = GOOD.replace("path: customers.csv", "path: ${env:CUSTOMERS_PATH}")
    spec = load_spec(write(tmp_path, text), env={"CUSTOMERS_PATH": "/data/c.csv"}, check_schemas=False)
    assert spec.sources["customers"].path == "/data/c.csv"
    # the spec as written keeps the placeholder, not the value
    assert spec.raw["sources"]["customers"]["path"] == "${env:CUSTOMERS_PATH}"
    issues = issues_of(write(tmp_path, text), env={})
    assert issues == [
        "sources.customers.path (line 5): environment variable 'CUSTOMERS_PATH' is not set "
        "(export CUSTOMERS_PATH=... or write ${env:CUSTOMERS_PATH:-default})"
    ]


def test_secret_values_never_appear_in_errors(tmp_path):
    text = GOOD.replace("path: customers.csv", "path: ${env:SECRET_PATH}").replace("input: clean\n", "input: cleam\n")
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text), env={"SECRET_PATH": "hunter2-secret"})
    assert "hunter2-secret" not in str(info.value)


def test_file_interpolation(tmp_path):
    (tmp_path / "path.txt").write_text("from-file.csv\n")
    text = GOOD.replace("path: customers.csv", "path: ${file:path.txt}")
    spec = load_spec(write(tmp_path, text), check_schemas=False)
    assert spec.sources["customers"].path == "from-file.csv"


def test_json_spec_and_dict_spec(tmp_path):
    import yaml

    data = yaml.safe_load(GOOD)
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(data))
    assert load_spec(path).name == "orders"
    assert load_spec(data).name == "orders"


def test_invalid_yaml_names_the_line(tmp_path):
    issues = issues_of(write(tmp_path, "name: x\nsources: {a: [\n"))
    assert "line" in issues[0] and "invalid YAML" in issues[0]


def test_validate_cli_prints_all_errors_and_exits_2(tmp_path):
    text = GOOD.replace("input: clean\n", "input: cleam\n").replace("type: derive", "type: derivee")
    path = write(tmp_path, text)
    result = subprocess.run([sys.executable, "-m", "beam_etl", "validate", str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "2 errors in spec:" in result.stderr
    assert "steps[1].input (line 14): unknown step or source 'cleam' (did you mean 'clean'?)" in result.stderr
    assert "unknown step type 'derivee'" in result.stderr
    ok = subprocess.run([sys.executable, "-m", "beam_etl", "validate", str(write(tmp_path, GOOD, "good.yaml"))], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 'orders'")


def test_yaml_on_and_yes_stay_strings(tmp_path):
    import yaml as _yaml

    from beam_etl.spec import _SpecLoader

    data = _yaml.load("on: {id: customer_id}\nanswer: yes\nflag: true\noff_key: off\n", Loader=_SpecLoader)
    assert data == {"on": {"id": "customer_id"}, "answer": "yes", "flag": True, "off_key": "off"}
