"""Clean functions: a table of input -> output per function, spec errors, row dropping, and
property tests against Python's str methods / unicodedata / DuckDB on generated values."""

from __future__ import annotations

import math
import re
import unicodedata

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_etl.quality.clean import CLEAN_FUNCTIONS, CleanSpec, _CleanFn, clean_batch, clean_column

# op (name or {name: arg}), input values, expected output
CASES = [
    ("trim", ["  a b  ", "\t\nx\u3000", None, ""], ["a b", "x", None, ""]),
    ({"trim": "-_"}, ["--a_b__", "x"], ["a_b", "x"]),
    ("ltrim", ["  a  "], ["a  "]),
    ("rtrim", ["  a  "], ["  a"]),
    ("collapse_spaces", ["a   b\t\tc", " x  ", "a\u00a0\u00a0b"], ["a b c", " x ", "a b"]),
    ("lower", ["ÀBC", None], ["àbc", None]),
    ("upper", ["àbc straße"], ["ÀBC STRAẞE"]),  # per character: ß -> ẞ, not "SS"
    ("title", ["jOHN o'neil-smith"], ["John O'Neil-Smith"]),
    ("normalize", ["ﬁ①", "A\u030a"], ["fi1", "\u00c5"]),
    ({"normalize": "NFD"}, ["é"], ["e\u0301"]),
    ("strip_accents", ["Crème Brûlée", "Ångström", "naïve", "日本"], ["Creme Brulee", "Angstrom", "naive", "日本"]),
    ("sanitize_html", ['<p onclick="x()">Hi <b>there</b><script>alert(1)</script></p>', "<a href='javascript:x'>l</a>", "plain & simple"],
     ["<p>Hi <b>there</b></p>", '<a rel="noopener noreferrer">l</a>', "plain &amp; simple"]),
    ({"sanitize_html": {"tags": ["b"]}}, ["<p>Hi <b>there</b></p>"], ["Hi <b>there</b>"]),
    ("strip_html", ["<p>Hi <b>there</b></p>", "a<script>var x = '<b>';</script>b", "x <!-- c --> y", "Caf&eacute; &amp; 1 < 2 > 0", None],
     ["Hi there", "ab", "x  y", "Café & 1 < 2 > 0", None]),
    ("remove_non_printable", ["a\x00b\x07c", "zero\u200bwidth", "tab\tnew\nline", "\ufeffbom"], ["abc", "zerowidth", "tab\tnew\nline", "bom"]),
    ("null_if", ["", " ", "x", None], [None, None, "x", None]),
    ({"null_if": ["N/A", "null", "-"]}, ["N/A", " - ", "null", "ok"], [None, None, None, "ok"]),
    ({"fill_default": "unknown"}, ["a", None], ["a", "unknown"]),
    ({"standardize_phone": {"region": "US"}}, ["(650) 253-0000", "+44 20 7946 0958", "nope", None], ["+16502530000", "+442079460958", "nope", None]),
    ({"standardize_phone": {"region": "US", "invalid": "null"}}, ["nope"], [None]),
    ("standardize_email", ["  Ann@Example.COM ", "mailto:Bob@x.org"], ["ann@example.com", "bob@x.org"]),
    ({"replace": {"&": "and", "  ": " "}}, ["salt & pepper", "a  b"], ["salt and pepper", "a b"]),
    ({"regex_replace": {r"[^0-9]": "", r"^0+": ""}}, ["(0)12-34", "abc"], ["1234", ""]),
    ("parse_bool", ["Yes", "n", "TRUE", "0", "on", "maybe", "", None], [True, False, True, False, True, None, None, None]),
    ({"parse_bool": {"true_values": ["ja"], "false_values": ["nein"]}}, ["JA", "nein", "yes"], [True, False, None]),
]

NUMERIC_CASES = [
    ("round", pa.array([1.25, 2.5, -2.5, 0.4, None]), [1.0, 3.0, -3.0, 0.0, None]),
    ({"round": 1}, pa.array([1.25, 1.35, -1.25]), [1.3, 1.4, -1.3]),
    ({"round": 1}, pa.array([1, 2]), [1, 2]),
    ({"clip": {"min": 0, "max": 10}}, pa.array([-5.0, 5.0, 50.0, None, float("nan")]), [0.0, 5.0, 10.0, None, "nan"]),
    ({"clip": [0, 10]}, pa.array([-1, 11]), [0, 10]),
    ({"clip": {"max": 3}}, pa.array([1, 5]), [1, 3]),
    ({"fill_default": 0}, pa.array([1, None]), [1, 0]),
    ({"null_if": [-1, 999]}, pa.array([-1, 5, 999]), [None, 5, None]),
    ("parse_bool", pa.array([0, 2, None]), [False, True, None]),
    ("trim", pa.array([1, 2]), [1, 2]),  # text functions leave numbers alone
    ("round", pa.array(["1.5"]), ["1.5"]),  # numeric functions leave text alone
]


@pytest.mark.parametrize("op, values, expected", CASES, ids=[f"{c[0] if isinstance(c[0], str) else next(iter(c[0]))}-{i}" for i, c in enumerate(CASES)])
def test_text_functions(op, values, expected):
    assert clean_column(pa.array(values, pa.string()), [op]).to_pylist() == expected


@pytest.mark.parametrize("op, values, expected", NUMERIC_CASES, ids=[f"{c[0] if isinstance(c[0], str) else next(iter(c[0]))}-{i}" for i, c in enumerate(NUMERIC_CASES)])
def test_numeric_and_any_type_functions(op, values, expected):
    got = clean_column(values, [op]).to_pylist()
    assert ["nan" if isinstance(v, float) and math.isnan(v) else v for v in got] == expected


def test_every_function_is_covered_and_there_are_at_least_15():
    covered = {next(iter(op)) if isinstance(op, dict) else op for op, *_ in CASES + NUMERIC_CASES} | {"drop_if_null"}
    assert covered == set(CLEAN_FUNCTIONS)
    assert len(CLEAN_FUNCTIONS) >= 15


def test_drop_if_null_filters_rows_and_counts_them():
    batch = pa.RecordBatch.from_pydict({"id": [1, 2, 3, 4], "email": [" a@x.io ", "N/A", None, "b@y.io"]})
    outcome = _CleanFn({"email": ["trim", {"null_if": ["N/A"]}, "drop_if_null"]})(batch)
    assert outcome.out.to_pylist() == [{"id": 1, "email": "a@x.io"}, {"id": 4, "email": "b@y.io"}]
    assert outcome.filtered.column("id").to_pylist() == [2, 3]  # counted as rows_filtered by ApplyBatchFn
    kept, dropped = clean_batch(batch, {"email": ["trim"]})
    assert kept.num_rows == 4 and dropped is None


@pytest.mark.parametrize(
    "ops, message",
    [
        ({"a": ["trimm"]}, "a: unknown cleaning function 'trimm' (did you mean 'trim'?)"),
        ({"a": [{"round": "two"}]}, "a: round takes a whole number of digits"),
        ({"a": [{"clip": {"min": 5, "max": 1}}]}, "a: clip min 5 is greater than max 1"),
        ({"a": [{"regex_replace": {"([a": ""}}]}, "a: regex_replace: regex '([a' does not compile"),
        ({"a": [{"normalize": "NFX"}]}, "a: normalize takes NFC, NFKC, NFD or NFKD"),
        ({"a": [{"lower": True}]}, "a: 'lower' takes no argument"),
        ({"a": [{"standardize_phone": {"region": "ZZ"}}]}, "unknown phone region 'ZZ'"),
        ({"a": [{"parse_bool": {"true_values": ["y"], "false_values": ["Y"]}}]}, "cannot be both true and false"),
        ({"a": [{"fill_default": None}]}, "fill_default needs a scalar value"),
        ({"a": [{"trim": None, "lower": None}]}, "one key"),
    ],
)
def test_bad_ops_are_spec_errors(ops, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CleanSpec.model_validate({"name": "c", "type": "clean", "input": "x", "ops": ops})


def test_spec_check_reports_numeric_function_on_text_column_with_path():
    spec = CleanSpec.model_validate({"name": "c", "type": "clean", "input": "x", "ops": {"price": ["trim", {"round": 2}]}})
    issues = spec.check([pa.schema([("price", pa.string())])], "steps[0]")
    assert [(i.path, i.message) for i in issues] == [("steps[0].ops.price[1]", "'round' needs a numeric column but 'price' is string")]


def test_parse_bool_changes_the_declared_output_type():
    spec = CleanSpec.model_validate({"name": "c", "type": "clean", "input": "x", "ops": {"flag": ["parse_bool"]}})
    assert spec.output_schema([pa.schema([("flag", pa.string())])]).field("flag").type == pa.bool_()


# --------------------------------------------------------------------------- properties

# Characters whose case maps one-to-one in Python (``ß``.upper() is "SS" in Python but a
# per-character mapping keeps it) and that Python and Arrow's Unicode tables both know.
_ONE_TO_ONE = st.characters(
    max_codepoint=0x2FFF,
    categories=("Lu", "Ll", "Nd", "Zs", "Po", "Pd", "Cc"),
).filter(lambda c: len(c.upper()) == len(c.lower()) == len(c.title()) == 1 and unicodedata.category(c.upper()) != "Cn")
_SPACES = st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000"))
_TEXT = st.text(alphabet=st.one_of(_ONE_TO_ONE, _SPACES), max_size=20)


def _apply(op, values):
    return clean_column(pa.array(values, pa.string()), [op]).to_pylist()


@settings(max_examples=100, deadline=None)
@given(st.lists(_TEXT, max_size=10))
def test_whitespace_functions_agree_with_python(values):
    assert _apply("trim", values) == [v.strip() for v in values]
    assert _apply("ltrim", values) == [v.lstrip() for v in values]
    assert _apply("rtrim", values) == [v.rstrip() for v in values]
    assert _apply("collapse_spaces", values) == [re.sub(r"\s+", " ", v) for v in values]


@settings(max_examples=100, deadline=None)
@given(st.lists(_TEXT, max_size=10))
def test_case_functions_agree_with_python(values):
    assert _apply("lower", values) == [v.lower() for v in values]
    assert _apply("upper", values) == [v.upper() for v in values]


_WORDS = st.text(alphabet=st.sampled_from(list("abcXYZéÉ ,.-'1")), max_size=20)


@settings(max_examples=100, deadline=None)
@given(st.lists(_WORDS, max_size=10))
def test_title_agrees_with_python(values):
    assert _apply("title", values) == [v.title() for v in values]


# Latin, Greek, Cyrillic letters with and without marks, ligatures, fullwidth forms,
# circled digits, combining marks: stable in every Unicode version since 6.
_COMPOSABLE = st.text(
    alphabet=st.characters(
        include_characters="ﬁﬂＡＢ１２①②½ÅåÉéÑñÇçœŒŸÿ", min_codepoint=0x20, max_codepoint=0x52F,
        categories=("Lu", "Ll", "Lt", "Lm", "Mn", "Nd", "No", "Zs", "Po"),
    ),
    max_size=15,
)


@settings(max_examples=100, deadline=None)
@given(st.lists(_COMPOSABLE, max_size=10))
def test_normalize_and_strip_accents_agree_with_unicodedata(values):
    for form in ("NFC", "NFKC", "NFD", "NFKD"):
        assert _apply({"normalize": form}, values) == [unicodedata.normalize(form, v) for v in values]
    expected = [
        unicodedata.normalize("NFC", "".join(c for c in unicodedata.normalize("NFD", v) if unicodedata.category(c) != "Mn"))
        for v in values
    ]
    assert _apply("strip_accents", values) == expected


_CONTROLS = st.text(alphabet=st.characters(max_codepoint=0x20FF, categories=("Cc", "Cf", "Ll", "Zs")), max_size=15)


@settings(max_examples=100, deadline=None)
@given(st.lists(_CONTROLS, max_size=10))
def test_remove_non_printable_removes_control_and_format_characters(values):
    def oracle(text: str) -> str:
        return "".join(c for c in text if c in "\t\n\r" or unicodedata.category(c) not in ("Cc", "Cf"))

    assert _apply("remove_non_printable", values) == [oracle(v) for v in values]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="ab &<>", max_size=10), max_size=8), st.text(alphabet="ab &", min_size=1, max_size=2), st.text(alphabet="xy", max_size=2))
def test_replace_agrees_with_str_replace(values, old, new):
    assert _apply({"replace": {old: new}}, values) == [v.replace(old, new) for v in values]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=30),
    st.integers(0, 3),
)
def test_round_agrees_with_duckdb(values, digits):
    got = clean_column(pa.array(values, pa.float64()), [{"round": digits}]).to_pylist()
    frame = pa.table({"x": pa.array(values, pa.float64())})  # noqa: F841 (read by DuckDB by name)
    expected = [row[0] for row in duckdb.sql(f"SELECT round(x, {digits}) FROM frame").fetchall()]
    for value, mine, theirs in zip(values, got, expected):
        if value is None:
            assert mine is None and theirs is None
        else:
            # Halves that are not exact in binary (2.675) may round either way in either engine.
            assert mine == pytest.approx(theirs, abs=10 ** -digits * 1.0001), (value, mine, theirs)
            if abs(value * 10**digits - math.floor(value * 10**digits) - 0.5) > 1e-6:
                assert mine == pytest.approx(theirs, rel=1e-12, abs=1e-12), (value, mine, theirs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), min_size=1, max_size=30), st.integers(-500, 0), st.integers(0, 500))
def test_clip_agrees_with_duckdb_greatest_least(values, low, high):
    got = clean_column(pa.array(values, pa.int64()), [{"clip": {"min": low, "max": high}}]).to_pylist()
    frame = pa.table({"x": pa.array(values, pa.int64())})  # noqa: F841 (read by DuckDB by name)
    expected = [row[0] for row in duckdb.sql(f"SELECT CASE WHEN x IS NULL THEN NULL ELSE least(greatest(x, {low}), {high}) END FROM frame").fetchall()]
    assert got == expected
