"""``quality``: weighted data-quality checks, an overall score, a report and a gate.

Every check computes a score in 0..1 over the whole input, in one mergeable pass (a
``CombineGlobally`` beside the rows, which pass through unchanged), and passes when its
score reaches its ``threshold``:

==============  ===============================================  ===========================
kind            spec                                             score
==============  ===============================================  ===========================
completeness    ``{completeness: email}`` (or a list)            share of non-missing values
                ``blank_as_missing: true`` counts ``""`` too     (null, NaN)
accuracy        ``{accuracy: "amount >= 0"}`` (SQL or a          share of rows where the rule
                structured condition)                            is true (NULL fails)
consistency     ``{consistency: age, type: int64}``              share of values of the type
                ``{consistency: zip}``                           share of the dominant type
                ``{consistency: "ship_date >= order_date"}``     share of rows where it holds
uniqueness      ``{uniqueness: id}`` (or a list: compound)       share of rows whose key is
                                                                 not repeated
timeliness      ``{timeliness: updated_at, max_age: 24h,         1 when the newest value is
                reference: now}``                                at most ``max_age`` old
validity        ``{validity: email, format: email}`` or          share of rows passing the
                ``rules: {regex: ..., min: ...}`` (validate's    ``validate`` rules
                column rules and validators)
expectation     ``{expectation: expect_..., column: ..., ...}``  GX's result; share of
                (GX names and kwargs; ``suite:`` adds a file)    expected values for map ones
==============  ===============================================  ===========================

Each check also takes ``threshold`` (default 1.0), ``weight`` (default 1), ``name``,
``severity`` (``error``, the default, fails the gate; ``warning`` only reports) and
``samples`` (failing examples kept, default the step's ``samples``). An expectation passes
when GX says so (its ``mostly`` plays the threshold's part).

The overall score is the weighted mean of the check scores. The gate fails when the score is
below ``min_score`` or an ``error`` check fails (or, with ``anomalies: {fail: true}``, a run
metric is anomalous); ``on_failure: fail`` then stops the job with :class:`StepFailed` after
the report is written, ``on_failure: continue`` lets it go on and marks the report.

Example:
    >>> import pyarrow as pa
    >>> report = run_quality(pa.table({"id": [1, 2, 2], "email": ["a@x.io", None, "b@y.io"]}),
    ...                      [{"completeness": "email", "threshold": 0.9}, {"uniqueness": "id"}])
    >>> round(report["score"], 3), report["gate"]["passed"]
    (0.5, False)
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Mapping, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AfterValidator, Field, model_validator

from beam_etl.batch import to_json_value
from beam_etl.errors import ExpressionError, SpecError, SpecIssue, StepFailed
from beam_etl.models import StepModel, StrictModel, parse_type
from beam_etl.quality.anomaly import RUN_METRICS, StateMetricsRepository, StrategySpec, run_anomalies
from beam_etl.quality.expectations import (
    ExpectationConfig,
    ExpectationsEvaluator,
    load_suite,
    parse_expectation,
)
from beam_etl.quality.expectations_native import UniqueState, compact, compound_key, key_counts, merge_unique, unique_outcome
from beam_etl.quality.profile import (
    _TEXT_TYPES,
    ProfileOptions,
    ProfileState,
    combine_report,
    hashable_values,
    missing_mask,
    report_paths,
    windowed_path,
)
from beam_etl.registry import register_step
from beam_etl.steps import ApplyBatchFn, BatchOutcome, BuildContext, StepOutputs

__all__ = [
    "CHECK_KINDS",
    "CheckConfig",
    "parse_check",
    "QualitySpec",
    "AnomaliesSpec",
    "Quality",
    "QualityEvaluator",
    "QualityCombineFn",
    "run_quality",
    "build_report",
    "parse_duration",
]

#: The check kinds, in the order the report lists them.
CHECK_KINDS = ("completeness", "accuracy", "consistency", "uniqueness", "timeliness", "validity", "expectation")
#: Keys every check takes besides its kind and the kind's own options.
_COMMON = ("threshold", "weight", "name", "severity", "samples", "description")
_KIND_OPTIONS: dict[str, tuple[str, ...]] = {
    "completeness": ("blank_as_missing",),
    "accuracy": (),
    "consistency": ("type",),
    "uniqueness": (),
    "timeliness": ("max_age", "reference"),
    "validity": ("rules",),  # plus the column rules of ``validate`` inline
}
_SEVERITY = {"error": "error", "critical": "error", "warning": "warning", "info": "warning"}


# --------------------------------------------------------------------------- configuration


def parse_duration(text: str | int | float) -> _dt.timedelta:
    """``90s``, ``15m``, ``24h``, ``7d``, ``1d12h``, ``2w`` or a number of seconds.

    Example:
        >>> parse_duration("1d12h")
        datetime.timedelta(days=1, seconds=43200)
    """
    if isinstance(text, bool):
        raise ValueError(f"max_age must be a duration like '24h', got {text!r}")
    if isinstance(text, (int, float)):
        return _dt.timedelta(seconds=float(text))
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", str(text).strip().lower())
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", str(text).strip().lower()):
        raise ValueError(f"max_age {text!r} is not a duration; write e.g. '90s', '15m', '24h', '7d' or '1d12h'")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return _dt.timedelta(seconds=sum(float(n) * seconds[u] for n, u in parts))


def _parse_reference(value: Any) -> _dt.datetime | None:
    """None for ``now``; else an aware datetime (naive values are UTC)."""
    if value in (None, "now"):
        return None
    if isinstance(value, _dt.datetime):
        moment = value
    elif isinstance(value, _dt.date):
        moment = _dt.datetime(value.year, value.month, value.day)
    else:
        try:
            moment = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"reference {value!r} must be 'now' or an ISO date/time like '2024-05-01T00:00:00Z'") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def _rule_fields() -> set[str]:
    from beam_etl.quality.validate import ColumnRules

    return set(ColumnRules.model_fields) - {"unique"}


@dataclass
class CheckConfig:
    """One parsed check (see the module docstring for the kinds)."""

    kind: str
    target: Any
    name: str
    threshold: float = 1.0
    weight: float = 1.0
    severity: str = "error"
    samples: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> list[str]:
        """Columns the check reads directly (SQL checks report theirs through the schema check)."""
        if self.kind in ("completeness", "uniqueness"):
            return [self.target] if isinstance(self.target, str) else list(self.target)
        if self.kind in ("timeliness", "validity"):
            return [self.target]
        if self.kind == "consistency" and self.options.get("mode") != "rule":
            return [self.target]
        if self.kind == "expectation":
            return self.options["expectation"].columns()
        return []


def _is_identifier(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text))


def parse_check(item: Any) -> CheckConfig:
    """A :class:`CheckConfig` from a spec entry; raises ValueError with a sentence and a hint."""
    from beam_etl.spec import did_you_mean

    if not isinstance(item, Mapping):
        raise ValueError(f"a check must be a mapping like {{completeness: email, threshold: 0.99}}, got {item!r}")
    kinds = [k for k in item if k in CHECK_KINDS]
    if len(kinds) > 1:
        raise ValueError(f"a check has one kind, this one has {', '.join(kinds)}; split it into several checks")
    if not kinds:
        unknown = [k for k in item if k not in _COMMON]
        word = unknown[0] if unknown else None
        if word is None:
            raise ValueError(f"check has no kind (one of {', '.join(CHECK_KINDS)})")
        hint = did_you_mean(word, CHECK_KINDS) or f"one of {', '.join(CHECK_KINDS)}"
        raise ValueError(f"unknown check kind '{word}' ({hint})")
    kind = kinds[0]
    target = item[kind]
    common = {k: item[k] for k in _COMMON if k in item}
    rest = {k: v for k, v in item.items() if k != kind and k not in _COMMON}

    threshold = common.get("threshold", 1.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number between 0 and 1, got {threshold!r}")
    weight = common.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise ValueError(f"weight must be a number >= 0, got {weight!r}")
    severity = _SEVERITY.get(str(common.get("severity", "error")).lower())
    if severity is None:
        raise ValueError(f"severity must be error or warning, got {common.get('severity')!r}")
    samples = common.get("samples")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 0):
        raise ValueError(f"samples must be a whole number >= 0, got {samples!r}")

    options: dict[str, Any] = {}
    if kind == "expectation":
        gx_item = {"expectation": target, **rest}
        if "severity" in item and str(item["severity"]).lower() in ("critical", "warning", "info"):
            gx_item["severity"] = str(item["severity"]).lower()
        options["expectation"] = parse_expectation(gx_item)
        name = common.get("name") or _expectation_label(options["expectation"])
        return CheckConfig(kind, target, str(name), float(threshold), float(weight), severity, samples, options)

    allowed = set(_KIND_OPTIONS[kind]) | (_rule_fields() if kind == "validity" else set())
    for key in rest:
        if key not in allowed:
            hint = did_you_mean(key, sorted(allowed | set(_COMMON))) or (
                f"{kind} takes {', '.join(sorted(allowed | set(_COMMON)))}" if allowed else f"{kind} takes {', '.join(_COMMON)}"
            )
            raise ValueError(f"unknown option '{key}' for a {kind} check ({hint})")

    if kind in ("completeness", "uniqueness"):
        columns = [target] if isinstance(target, str) else target
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) and c for c in columns):
            raise ValueError(f"{kind} takes a column name or a list of column names, got {target!r}")
        if kind == "completeness":
            options["blank_as_missing"] = bool(rest.get("blank_as_missing", False))
    elif kind in ("accuracy",):
        _check_condition(target, kind)
    elif kind == "consistency":
        if "type" in rest:
            if not isinstance(target, str) or not target:
                raise ValueError("consistency with a type takes a column name: {consistency: age, type: int64}")
            parse_type(str(rest["type"]))
            options.update(mode="type", type=str(rest["type"]))
        elif isinstance(target, str) and _is_identifier(target):
            options["mode"] = "dominant"
        else:
            _check_condition(target, kind)
            options["mode"] = "rule"
    elif kind == "timeliness":
        if not isinstance(target, str) or not target:
            raise ValueError("timeliness takes a timestamp column: {timeliness: updated_at, max_age: 24h}")
        if "max_age" not in rest:
            raise ValueError("timeliness needs max_age, e.g. max_age: 24h")
        options["max_age"] = parse_duration(rest["max_age"])
        options["reference"] = _parse_reference(rest.get("reference", "now"))
    elif kind == "validity":
        if not isinstance(target, str) or not target:
            raise ValueError("validity takes a column name: {validity: email, format: email}")
        from beam_etl.quality.validate import ColumnRules

        rules = dict(rest.get("rules") or {})
        rules.update({k: v for k, v in rest.items() if k != "rules"})
        if not rules:
            raise ValueError("validity needs rules, e.g. {validity: email, format: email} or rules: {regex: '^[0-9]{5}$'}")
        if rules.get("unique"):
            raise ValueError("uniqueness is its own check: {uniqueness: column}")
        try:
            options["rules"] = ColumnRules.model_validate(rules)
        except Exception as exc:  # pydantic's message, first line
            raise ValueError(f"validity rules for '{target}': {_first_error(exc)}") from None
    name = common.get("name") or _default_name(kind, target, options)
    return CheckConfig(kind, target, str(name), float(threshold), float(weight), severity, samples, options)


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(exc).splitlines()[0]


def _check_condition(target: Any, kind: str) -> None:
    if not isinstance(target, (str, Mapping)) or not target:
        raise ValueError(f"{kind} takes a SQL condition such as \"amount >= 0\" (or a structured condition)")
    from beam_etl.expressions import compile_condition

    try:
        compile_condition(target)
    except ExpressionError as exc:
        raise ValueError(f"{exc.message}" + (f" ({exc.hint})" if exc.hint else "")) from None


def _default_name(kind: str, target: Any, options: dict[str, Any]) -> str:
    if isinstance(target, list):
        target = ",".join(target)
    if isinstance(target, Mapping):
        target = "condition"
    if options.get("mode") == "type":
        return f"{kind}:{target}:{options['type']}"
    return f"{kind}:{target}"


def _expectation_label(config: ExpectationConfig) -> str:
    cols = config.columns()
    return f"{config.type}({', '.join(cols)})" if cols else config.type


def _format_name(fmt: Any) -> str:
    return next(iter(fmt)) if isinstance(fmt, Mapping) else str(fmt)


def _check_item(item: Any) -> Any:
    parse_check(item)
    return item


# --------------------------------------------------------------------------- per-check evaluation


def _column_or_nulls(batch: pa.RecordBatch, name: str) -> pa.Array:
    index = batch.schema.get_field_index(name)
    if index < 0:
        return pa.nulls(batch.num_rows, pa.string())
    column = batch.column(index)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _rows(batch: pa.RecordBatch, mask: pa.Array, limit: int) -> list[dict[str, Any]]:
    if limit <= 0:
        return []
    positions = np.flatnonzero(mask.to_numpy(zero_copy_only=False))[:limit]
    if positions.size == 0:
        return []
    return [to_json_value(row) for row in batch.take(pa.array(positions)).to_pylist()]


def _add_samples(samples: list, more: list, limit: int) -> list:
    return (samples + more)[:limit] if len(samples) < limit else samples


class _Check:
    """The mergeable evaluation of one check: initial / add / merge / finish."""

    def __init__(self, config: CheckConfig, samples: int):
        self.config = config
        self.samples = config.samples if config.samples is not None else samples

    def initial(self) -> dict[str, Any]:
        return {"rows": 0, "bad": 0, "considered": 0, "samples": []}

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {
            "rows": a["rows"] + b["rows"],
            "bad": a["bad"] + b["bad"],
            "considered": a["considered"] + b["considered"],
            "samples": _add_samples(a["samples"], b["samples"], self.samples),
        }

    def share(self, state: dict[str, Any]) -> float:
        considered = state["considered"]
        return 1.0 if considered == 0 else 1.0 - state["bad"] / considered


class _Completeness(_Check):
    def add(self, state, batch):
        columns = self.config.columns()
        any_missing = None
        for name in columns:
            column = _column_or_nulls(batch, name)
            missing = missing_mask(column)
            if self.config.options.get("blank_as_missing") and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                missing = pc.or_(missing, pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), False))
            state["bad"] += pc.sum(missing).as_py() or 0
            any_missing = missing if any_missing is None else pc.or_(any_missing, missing)
        state["rows"] += batch.num_rows
        state["considered"] += batch.num_rows * len(columns)
        if len(state["samples"]) < self.samples:
            state["samples"] = _add_samples(state["samples"], _rows(batch, any_missing, self.samples), self.samples)
        return state

    def finish(self, state):
        share = self.share(state)
        cols = ", ".join(self.config.columns())
        return share, f"{state['bad']:,} of {state['considered']:,} values missing in {cols} ({(1 - share) * 100:.2f}%)", {"missing": state["bad"]}


class _Condition(_Check):
    """accuracy and cross-field consistency: a SQL condition per row (NULL counts as failing)."""

    def __init__(self, config, samples):
        super().__init__(config, samples)
        self._compiled = None

    def __getstate__(self):
        return {**self.__dict__, "_compiled": None}

    def condition(self):
        if self._compiled is None:
            from beam_etl.expressions import compile_condition

            self._compiled = compile_condition(self.config.target)
        return self._compiled

    def add(self, state, batch):
        values, errors = self.condition().evaluate_with_errors(batch)
        ok = pc.fill_null(values, False)
        if errors:
            bad_rows = np.zeros(batch.num_rows, dtype=bool)
            bad_rows[sorted(errors)] = True
            ok = pc.and_(ok, pa.array(~bad_rows))
            state.setdefault("errors", 0)
            state["errors"] = state.get("errors", 0) + len(errors)
        failed = pc.invert(ok)
        state["rows"] += batch.num_rows
        state["considered"] += batch.num_rows
        state["bad"] += pc.sum(failed).as_py() or 0
        if len(state["samples"]) < self.samples:
            state["samples"] = _add_samples(state["samples"], _rows(batch, failed, self.samples), self.samples)
        return state

    def merge(self, a, b):
        out = super().merge(a, b)
        out["errors"] = a.get("errors", 0) + b.get("errors", 0)
        return out

    def finish(self, state):
        share = self.share(state)
        sql = self.condition().sql
        extra = f"; {state.get('errors', 0):,} could not be evaluated" if state.get("errors") else ""
        return share, f"{state['bad']:,} of {state['considered']:,} rows break {sql}{extra}", {"failed_rows": state["bad"]}


class _Validity(_Check):
    def add(self, state, batch):
        from beam_etl.quality.validate import validate_batch

        name = self.config.target
        valid, _, messages = validate_batch(batch, {name: self.config.options["rules"]})
        failed = pc.invert(valid)
        state["rows"] += batch.num_rows
        state["considered"] += batch.num_rows
        state["bad"] += pc.sum(failed).as_py() or 0
        if len(state["samples"]) < self.samples:
            positions = np.flatnonzero(failed.to_numpy(zero_copy_only=False))[: self.samples]
            if positions.size:
                column = _column_or_nulls(batch, name)
                take = pa.array(positions)
                more = [
                    {name: to_json_value(v), "reason": m}
                    for v, m in zip(column.take(take).to_pylist(), messages.take(take).to_pylist())
                ]
                state["samples"] = _add_samples(state["samples"], more, self.samples)
        return state

    def finish(self, state):
        share = self.share(state)
        rules = self.config.options["rules"].model_dump(exclude_defaults=True)
        return share, f"{state['bad']:,} of {state['considered']:,} rows fail {self.config.target} rules {rules}", {"invalid_rows": state["bad"]}


class _TypeConsistency(_Check):
    """``{consistency: col, type: T}``: non-null values that cast to T."""

    def add(self, state, batch):
        from beam_etl.quality.validate import ColumnRules, validate_batch

        name = self.config.target
        column = _column_or_nulls(batch, name)
        present = pc.invert(missing_mask(column))
        valid, _, _ = validate_batch(batch, {name: ColumnRules(type=self.config.options["type"])})
        failed = pc.and_(present, pc.invert(valid))
        state["rows"] += batch.num_rows
        state["considered"] += pc.sum(present).as_py() or 0
        state["bad"] += pc.sum(failed).as_py() or 0
        if len(state["samples"]) < self.samples:
            positions = np.flatnonzero(failed.to_numpy(zero_copy_only=False))[: self.samples]
            more = [to_json_value(v) for v in column.take(pa.array(positions)).to_pylist()] if positions.size else []
            state["samples"] = _add_samples(state["samples"], more, self.samples)
        return state

    def finish(self, state):
        share = self.share(state)
        t = self.config.options["type"]
        return share, f"{state['bad']:,} of {state['considered']:,} {self.config.target} values are not {t}", {"mismatched": state["bad"]}


def _value_kinds(column: pa.Array) -> pa.Array:
    """The kind of each value: the Arrow type, or for text the first matching text type."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return pa.array(np.full(len(column), str(column.type), dtype=object), pa.string())
    trimmed = pc.utf8_trim_whitespace(column)
    kinds = pa.nulls(len(column), pa.string())
    for type_name, pattern in _TEXT_TYPES:
        hit = pc.fill_null(pc.match_substring_regex(trimmed, pattern), False)
        kinds = pc.if_else(pc.and_(hit, pc.is_null(kinds)), pa.scalar(type_name), kinds)
    blank = pc.fill_null(pc.equal(trimmed, ""), False)
    kinds = pc.if_else(blank, pa.scalar("empty"), kinds)
    return pc.fill_null(kinds, "string")


class _DominantType(_Check):
    """``{consistency: col}``: share of values of the column's dominant kind."""

    def initial(self):
        return {"rows": 0, "counts": {}, "examples": {}}

    def add(self, state, batch):
        column = _column_or_nulls(batch, self.config.target)
        present = column.filter(pc.invert(missing_mask(column)))
        state["rows"] += batch.num_rows
        if len(present) == 0:
            return state
        kinds = _value_kinds(present)
        counted = pc.value_counts(kinds)
        for kind, count in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()):
            state["counts"][kind] = state["counts"].get(kind, 0) + count
            examples = state["examples"].setdefault(kind, [])
            if len(examples) < self.samples:
                found = present.filter(pc.equal(kinds, kind)).slice(0, self.samples - len(examples))
                examples.extend(to_json_value(v) for v in found.to_pylist())
        return state

    def merge(self, a, b):
        counts = dict(a["counts"])
        for k, v in b["counts"].items():
            counts[k] = counts.get(k, 0) + v
        examples = {k: list(v) for k, v in a["examples"].items()}
        for k, v in b["examples"].items():
            examples[k] = _add_samples(examples.get(k, []), v, self.samples)
        return {"rows": a["rows"] + b["rows"], "counts": counts, "examples": examples}

    def finish(self, state):
        counts = state["counts"]
        total = sum(counts.values())
        if not total:
            return 1.0, "no values", {"kinds": {}}
        dominant = max(sorted(counts), key=lambda k: counts[k])
        share = counts[dominant] / total
        others = {k: v for k, v in counts.items() if k != dominant}
        self._samples = [v for k in others for v in state["examples"].get(k, [])][: self.samples]
        detail = ", ".join(f"{k} {v:,}" for k, v in sorted(others.items(), key=lambda kv: -kv[1]))
        message = f"{share * 100:.2f}% of {self.config.target} values are {dominant}" + (f"; others: {detail}" if detail else "")
        return share, message, {"kinds": counts, "dominant": dominant}


class _Uniqueness(_Check):
    CAP = 2

    def initial(self):
        return {"rows": 0, "state": UniqueState()}

    def add(self, state, batch):
        names = self.config.columns()
        columns = [_column_or_nulls(batch, n) for n in names]
        dropped = missing_mask(columns[0])
        for column in columns[1:]:
            dropped = pc.and_(dropped, missing_mask(column))
        keep = pc.invert(dropped)
        kept = [c.filter(keep) for c in columns]
        positions = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
        state["rows"] += batch.num_rows
        if len(kept[0]):
            if len(names) == 1:
                keys, reps = hashable_values(kept[0]), kept[0]
            else:
                keys, reps = compound_key(kept), pa.StructArray.from_arrays(kept, names=names)
            counts = key_counts(keys, reps, positions, self.CAP)
            part = UniqueState(0, len(keys), [counts], len(counts.keys))
            state["state"] = merge_unique(state["state"], part, self.CAP)
        return state

    def merge(self, a, b):
        return {"rows": a["rows"] + b["rows"], "state": merge_unique(a["state"], b["state"], self.CAP)}

    def finish(self, state):
        unique_state = state["state"]
        dup_rows, _ = unique_outcome(unique_state, 0)
        considered = unique_state.considered
        share = 1.0 if considered == 0 else 1.0 - dup_rows / considered
        self._samples = []
        if unique_state.parts and dup_rows:
            total = compact(unique_state.parts, self.CAP)
            repeated = np.flatnonzero(total.counts >= 2)
            top = repeated[np.argsort(-total.counts[repeated], kind="stable")][: self.samples]
            names = self.config.columns()
            for value, count in zip(total.representatives.take(pa.array(top)).to_pylist(), total.counts[top].tolist()):
                key = value if isinstance(value, dict) else {names[0]: value}
                self._samples.append({**{k: to_json_value(v) for k, v in key.items()}, "count": int(count)})
        keys = ", ".join(self.config.columns())
        return share, f"{dup_rows:,} of {considered:,} rows share a {keys} value with another row", {"duplicate_rows": dup_rows}


class _Timeliness(_Check):
    def __init__(self, config, samples, now: _dt.datetime):
        super().__init__(config, samples)
        self.reference = config.options["reference"] or now

    def initial(self):
        return {"rows": 0, "newest": None, "unparsed": 0}

    def add(self, state, batch):
        column = _column_or_nulls(batch, self.config.target)
        state["rows"] += batch.num_rows
        times, unparsed = _as_utc_times(column)
        state["unparsed"] += unparsed
        if len(times) and times.null_count < len(times):
            newest = pc.max(times).as_py()
            if newest is not None and (state["newest"] is None or newest > state["newest"]):
                state["newest"] = newest
        return state

    def merge(self, a, b):
        newest = [t for t in (a["newest"], b["newest"]) if t is not None]
        return {"rows": a["rows"] + b["rows"], "newest": max(newest) if newest else None, "unparsed": a["unparsed"] + b["unparsed"]}

    def finish(self, state):
        max_age = self.config.options["max_age"]
        newest = state["newest"]
        if newest is None:
            return 0.0, f"no {self.config.target} value to judge freshness by", {"lag_seconds": None}
        if newest.tzinfo is None:
            newest = newest.replace(tzinfo=_dt.timezone.utc)
        lag = self.reference - newest
        fresh = lag <= max_age
        message = f"newest {self.config.target} is {newest.isoformat()}, {_human(lag)} before {self.reference.isoformat(timespec='seconds')} (allowed {_human(max_age)})"
        return (1.0 if fresh else 0.0), message, {"newest": newest.isoformat(), "lag_seconds": lag.total_seconds(), "unparsed": state["unparsed"]}


def _human(delta: _dt.timedelta) -> str:
    seconds = delta.total_seconds()
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{sign}{seconds / size:.1f}{unit}"
    return f"{sign}{seconds:.0f}s"


def _as_utc_times(column: pa.Array) -> tuple[pa.Array, int]:
    """Timestamps (UTC, aware) from a timestamp, date or ISO-text column; and unparsable count."""
    t = column.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            return pc.assume_timezone(column, "UTC") if len(column) else column.cast(pa.timestamp(t.unit, "UTC")), 0
        return column.cast(pa.timestamp(t.unit, "UTC")), 0
    if pa.types.is_date(t):
        return column.cast(pa.timestamp("s")).cast(pa.timestamp("s", "UTC")), 0
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        from beam_etl.quality.validators import parse_datetimes

        parsed = parse_datetimes(column)
        unparsed = pc.sum(parsed.failed).as_py() or 0
        return parsed.values.cast(pa.timestamp(parsed.values.type.unit, "UTC")), unparsed
    raise ValueError(f"timeliness needs a timestamp, date or ISO text column; '{column.type}' is neither")


class _Expectation(_Check):
    """Evaluated by the shared :class:`ExpectationsEvaluator`; this only scores its result."""

    def score(self, result: dict[str, Any]) -> tuple[float, str, dict[str, Any]]:
        outcome = result.get("result") or {}
        info = result.get("exception_info") or {}
        if info.get("raised_exception"):
            return 0.0, f"could not be evaluated: {info.get('exception_message')}", {}
        if outcome.get("unexpected_percent") is not None:
            share = 1.0 - float(outcome["unexpected_percent"]) / 100.0
            message = f"{outcome.get('unexpected_count', 0):,} unexpected of {outcome.get('element_count', 0):,} ({float(outcome['unexpected_percent']):.2f}%)"
        else:
            share = 1.0 if result["success"] else 0.0
            message = f"observed {outcome['observed_value']!r}" if "observed_value" in outcome else ("passed" if result["success"] else "failed")
        self._samples = list(outcome.get("partial_unexpected_list") or [])[: self.samples]
        return share, message, {}


# --------------------------------------------------------------------------- the whole step


class AnomaliesSpec(StrictModel):
    """Run-level anomaly detection on this step's metrics (see :mod:`beam_etl.quality.anomaly`)."""

    metrics: list[Literal["row_count", "completeness", "distinct_count", "mean"]] = Field(default_factory=lambda: list(RUN_METRICS))
    columns: list[str] | None = None
    strategies: list[StrategySpec] = Field(default_factory=lambda: [StrategySpec(type="zscore")])
    window: int = Field(default=20, ge=2)
    fail: bool = False


class QualityEvaluator:
    """All checks of a quality step, evaluated in one mergeable pass (no Beam needed).

    Args:
        checks: parsed :class:`CheckConfig` s.
        samples: failing samples kept per check (unless the check sets its own).
        now: the reference time for ``timeliness: {reference: now}``.
        anomalies: run metrics to compute for anomaly detection (None: none).
        gx_max_rows: rows gathered for GX expectations that need the whole column.
    """

    def __init__(
        self,
        checks: Sequence[CheckConfig],
        samples: int = 5,
        now: _dt.datetime | None = None,
        anomalies: AnomaliesSpec | None = None,
        gx_max_rows: int = 1_000_000,
    ):
        self.configs = list(checks)
        now = now or _dt.datetime.now(_dt.timezone.utc)
        self.checks: list[_Check] = [_make_check(c, samples, now) for c in self.configs]
        expectation_indexes = [i for i, c in enumerate(self.configs) if c.kind == "expectation"]
        self._expectation_index = {check: position for position, check in enumerate(expectation_indexes)}
        self.expectations = ExpectationsEvaluator(
            [self.configs[i].options["expectation"] for i in expectation_indexes], gx_max_rows, with_index=False
        )
        self.anomalies = anomalies
        self._metric_options = ProfileOptions(quantiles=False, top_values=False, patterns=False)

    def setup(self) -> None:
        self.expectations.setup()

    def initial(self) -> dict[str, Any]:
        return {
            "rows": 0,
            "checks": [None if c.config.kind == "expectation" else c.initial() for c in self.checks],
            "expectations": self.expectations.initial(),
            "metrics": ProfileState(self._metric_options, self.anomalies.columns) if self.anomalies else None,
        }

    def add(self, state: dict[str, Any], batch: pa.RecordBatch) -> dict[str, Any]:
        state["rows"] += batch.num_rows
        for i, check in enumerate(self.checks):
            if check.config.kind != "expectation":
                state["checks"][i] = check.add(state["checks"][i], batch)
        state["expectations"] = self.expectations.add(state["expectations"], batch)
        if state["metrics"] is not None:
            state["metrics"].add(batch)
        return state

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        metrics = a["metrics"]
        if metrics is not None and b["metrics"] is not None:
            metrics.merge(b["metrics"])
        return {
            "rows": a["rows"] + b["rows"],
            "checks": [
                None if c.config.kind == "expectation" else c.merge(x, y) for c, x, y in zip(self.checks, a["checks"], b["checks"])
            ],
            "expectations": self.expectations.merge(a["expectations"], b["expectations"]),
            "metrics": metrics,
        }

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        """Per-check results and run metrics (the input of :func:`build_report`)."""
        gx_results = self.expectations.finalize(state["expectations"])
        results = []
        for i, (check, config) in enumerate(zip(self.checks, self.configs)):
            extra: dict[str, Any] = {}
            if config.kind == "expectation":
                result = gx_results[self._expectation_index[i]]
                score, message, metrics = check.score(result)
                passed = bool(result["success"])
                extra["result"] = result
                threshold = config.options["expectation"].kwargs.get("mostly")
            else:
                check._samples = None
                score, message, metrics = check.finish(state["checks"][i])
                passed = score >= config.threshold - 1e-12
                threshold = config.threshold
            samples = getattr(check, "_samples", None)
            if samples is None and config.kind != "expectation":
                samples = state["checks"][i].get("samples", [])
            results.append(
                {
                    "name": config.name,
                    "kind": config.kind,
                    **({"mode": config.options["mode"]} if "mode" in config.options else {}),
                    **({"type": config.options["type"]} if "type" in config.options else {}),
                    **({"format": _format_name(config.options["rules"].format)} if config.kind == "validity" and config.options["rules"].format else {}),
                    "target": config.target if not isinstance(config.target, Mapping) else dict(config.target),
                    "score": score,
                    "threshold": threshold,
                    "weight": config.weight,
                    "severity": config.severity,
                    "passed": passed,
                    "message": message,
                    "metrics": metrics,
                    "samples": samples if not passed else [],
                    **extra,
                }
            )
        return {"row_count": state["rows"], "checks": results, "run_metrics": self._run_metrics(state)}

    def _run_metrics(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        if not self.anomalies:
            return []
        wanted = set(self.anomalies.metrics)
        out: list[dict[str, Any]] = []
        if "row_count" in wanted:
            out.append({"metric": "row_count", "column": None, "value": state["rows"]})
        profile = state["metrics"].to_dict()["columns"]
        for name, column in profile.items():
            if "completeness" in wanted:
                count = column["count"]
                out.append({"metric": "completeness", "column": name, "value": (1 - column["nulls"] / count) if count else None})
            if "distinct_count" in wanted:
                out.append({"metric": "distinct_count", "column": name, "value": column["distinct"]})
            if "mean" in wanted and column.get("mean") is not None:
                out.append({"metric": "mean", "column": name, "value": column["mean"]})
        return out


def _make_check(config: CheckConfig, samples: int, now: _dt.datetime) -> _Check:
    kind = config.kind
    if kind == "completeness":
        return _Completeness(config, samples)
    if kind == "accuracy" or (kind == "consistency" and config.options.get("mode") == "rule"):
        return _Condition(config, samples)
    if kind == "consistency" and config.options.get("mode") == "type":
        return _TypeConsistency(config, samples)
    if kind == "consistency":
        return _DominantType(config, samples)
    if kind == "uniqueness":
        return _Uniqueness(config, samples)
    if kind == "timeliness":
        return _Timeliness(config, samples, now)
    if kind == "validity":
        return _Validity(config, samples)
    return _Expectation(config, samples)


# --------------------------------------------------------------------------- report


def _recommendation(check: dict[str, Any]) -> str:
    kind, target, name = check["kind"], check["target"], check["name"]
    score = check["score"]
    pct = f"{score * 100:.2f}%" if score is not None else "n/a"
    threshold = check.get("threshold")
    limit = f" (threshold {threshold * 100:.2f}%)" if isinstance(threshold, (int, float)) else ""
    if kind == "completeness":
        cols = [target] if isinstance(target, str) else target
        rules = ", ".join(f"{c}: {{required: true}}" for c in cols)
        return (
            f"{name}: {', '.join(cols)} is {pct} complete{limit}. Find where the missing values come from; then either fill them "
            f"in a clean step ({cols[0]}: [fill_default]) or reject them before this gate with a validate step "
            f"(rules: {{{rules}}}, on_error: dlq) so they land in the DLQ with a reason."
        )
    if kind == "accuracy" or (kind == "consistency" and check.get("mode") == "rule"):
        sql = target if isinstance(target, str) else "the condition"
        return (
            f"{name}: only {pct} of rows satisfy {sql}{limit}. Look at the failing samples; fix the upstream logic, or route "
            f"such rows to the DLQ before this gate with a validate check {{name: {name.split(':')[0]}, expr: \"{sql}\"}}."
        )
    if kind == "consistency":
        metrics = check.get("metrics") or {}
        wanted = check.get("type") or metrics.get("dominant") or "string"
        arrow = {"integer": "int64", "float": "float64", "boolean": "bool", "date": "date32", "timestamp": "timestamp[us]"}.get(wanted, wanted)
        return (
            f"{name}: {pct} of {target} values are {wanted}{limit}. Coerce the column before this gate (coerce step with "
            f"schema: {{{target}: {arrow}}}) so values that are not {wanted} reach the DLQ with the value and the target type."
        )
    if kind == "uniqueness":
        cols = [target] if isinstance(target, str) else target
        example = ""
        if check.get("samples"):
            first = check["samples"][0]
            example = f" (e.g. {', '.join(f'{k}={v!r}' for k, v in first.items() if k != 'count')} appears {first.get('count')} times)"
        return (
            f"{name}: {pct} of rows have a unique {', '.join(cols)}{limit}{example}. Add a dedupe step on [{', '.join(cols)}] "
            f"(keep the latest by an updated_at column), or fix the source so it emits one row per key."
        )
    if kind == "timeliness":
        return (
            f"{name}: {check['message']}. Check that the upstream extract ran and that {target} is filled with the event time; "
            f"an incremental source may be stuck on an old watermark."
        )
    if kind == "validity":
        fmt = str(check.get("format") or "")
        ops = {"email": "[trim, standardize_email]", "phone": "[trim, standardize_phone]"}.get(fmt, "[trim, collapse_spaces]")
        return (
            f"{name}: {pct} of {target} values pass their rules{limit}. Normalise them first (clean step: {target}: {ops}), "
            f"then validate with the same rules and on_error: dlq so the rest reach the DLQ with the failing rule."
        )
    result = check.get("result") or {}
    outcome = result.get("result") or {}
    examples = outcome.get("partial_unexpected_list") or []
    shown = f" e.g. {examples[:3]!r}" if examples else ""
    return f"{name}: {check['message']}{shown}. Fix the data upstream or relax the expectation (mostly: …) if this share is acceptable."


def build_report(
    outcome: dict[str, Any],
    *,
    step: str = "quality",
    pipeline: str = "",
    run_id: str | None = None,
    min_score: float | None = None,
    on_failure: str = "fail",
    anomalies: list[dict[str, Any]] | None = None,
    anomalies_fail: bool = False,
) -> dict[str, Any]:
    """The quality report (score, checks, gate, recommendations) from evaluated checks."""
    checks = outcome["checks"]
    weights = sum(c["weight"] for c in checks)
    score = (
        sum(c["weight"] * (c["score"] if c["score"] is not None else 0.0) for c in checks) / weights if weights else 1.0
    )
    reasons = []
    if min_score is not None and score < min_score - 1e-12:
        reasons.append(f"score {score:.4f} is below min_score {min_score}")
    for c in checks:
        if not c["passed"] and c["severity"] == "error":
            reasons.append(f"check {c['name']} failed: {c['message']}")
    flagged = [a for a in anomalies or [] if a.get("anomaly")]
    if anomalies_fail and flagged:
        reasons.extend(f"anomaly in {a['metric']}{'(' + a['column'] + ')' if a.get('column') else ''}: {a['detail']}" for a in flagged)
    passed = not reasons
    failing = sorted((c for c in checks if not c["passed"]), key=lambda c: (-c["weight"], c["score"] if c["score"] is not None else 0))
    recommendations = [_recommendation(c) for c in failing]
    if min_score is not None and score < min_score and failing:
        recommendations.insert(
            0,
            f"The score {score:.4f} is below {min_score}: the checks with the most weight are "
            + ", ".join(f"{c['name']} (weight {c['weight']:g}, score {c['score']:.3f})" for c in failing[:3])
            + "; fixing them raises the score most.",
        )
    for a in flagged:
        column = f" of {a['column']}" if a.get("column") else ""
        recommendations.append(
            f"Run metric {a['metric']}{column} = {a['value']!r} looks anomalous ({a['strategy']}: {a['detail']}); compare this "
            "run's input with the previous runs' before trusting the output."
        )
    return {
        "kind": "quality",
        "title": f"Data quality: {step}",
        "step": step,
        "pipeline": pipeline,
        "run_id": run_id,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "row_count": outcome["row_count"],
        "score": score,
        "checks": checks,
        "gate": {
            "min_score": min_score,
            "passed": passed,
            "action": "none" if passed else on_failure,
            "reasons": reasons,
        },
        "recommendations": recommendations,
        "anomalies": anomalies or [],
        "run_metrics": outcome.get("run_metrics", []),
    }


def _parse_checks(items: Sequence[Any], path: str = "checks") -> list[CheckConfig]:
    issues, configs = [], []
    for i, item in enumerate(items):
        try:
            configs.append(parse_check(item))
        except ValueError as exc:
            message, hint = str(exc), None
            if message.endswith(")") and " (" in message:
                message, _, hint = message[:-1].rpartition(" (")
            issues.append(SpecIssue(f"{path}[{i}]", message, hint))
    if issues:
        raise SpecError(issues)
    return configs


def run_quality(
    table: pa.Table | pa.RecordBatch,
    checks: Sequence[Mapping[str, Any] | CheckConfig],
    *,
    min_score: float | None = None,
    on_failure: str = "continue",
    samples: int = 5,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """Run quality checks on an in-memory table and return the report (no gate is enforced).

    Example:
        >>> run_quality(pa.table({"x": [1, None]}), [{"completeness": "x"}])["checks"][0]["score"]
        0.5
    """
    configs = [c if isinstance(c, CheckConfig) else None for c in checks]
    parsed = _parse_checks([c for c in checks if not isinstance(c, CheckConfig)])
    it = iter(parsed)
    configs = [c if c is not None else next(it) for c in configs]
    evaluator = QualityEvaluator(configs, samples, now)
    state = evaluator.initial()
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    for batch in batches:
        state = evaluator.add(state, batch)
    return build_report(evaluator.finish(state), min_score=min_score, on_failure=on_failure)


# --------------------------------------------------------------------------- spec + Beam

TCheck = Annotated[dict[str, Any], AfterValidator(_check_item)]


class QualitySpec(StepModel):
    """``{type: quality, input: x, checks: [...], min_score: 0.9, on_failure: fail, report: ...}``."""

    type: Literal["quality"]
    checks: list[TCheck] = Field(default_factory=list)
    suite: str | None = Field(default=None, description="a Great Expectations ExpectationSuite JSON file")
    min_score: float | None = Field(default=None, ge=0, le=1)
    on_failure: Literal["fail", "continue"] = "fail"
    report: str | None = None
    samples: int = Field(default=5, ge=0, le=1000)
    html: bool = True
    anomalies: AnomaliesSpec | None = None
    gx_max_rows: int = Field(default=1_000_000, ge=1)

    @model_validator(mode="after")
    def _something(self) -> "QualitySpec":
        if not self.checks and not self.suite:
            raise ValueError("a quality step needs checks or a suite")
        return self

    def check(self, schemas, path):
        schema = schemas[0] if schemas else None
        if schema is None:
            return []
        from beam_etl.expressions import compile_condition
        from beam_etl.spec import did_you_mean

        issues = []
        for i, item in enumerate(self.checks):
            config = parse_check(item)
            where = f"{path}.checks[{i}]"
            for name in config.columns():
                if name not in schema.names:
                    issues.append(SpecIssue(f"{where}.{config.kind}", f"unknown column '{name}'", did_you_mean(name, schema.names)))
            if config.kind == "accuracy" or (config.kind == "consistency" and config.options.get("mode") == "rule"):
                try:
                    compile_condition(config.target).check(schema)
                except ExpressionError as exc:
                    issues.append(SpecIssue(f"{where}.{config.kind}", exc.message, exc.hint))
        if self.anomalies and self.anomalies.columns:
            for i, name in enumerate(self.anomalies.columns):
                if name not in schema.names:
                    issues.append(SpecIssue(f"{path}.anomalies.columns[{i}]", f"unknown column '{name}'", did_you_mean(name, schema.names)))
        return issues

    def output_schema(self, schemas):
        return schemas[0] if schemas else None


class QualityCombineFn(beam.CombineFn):
    """Batches -> evaluated checks (the input of :func:`build_report`); one GX context per worker."""

    def __init__(self, evaluator: QualityEvaluator):
        self._evaluator = evaluator

    def setup(self) -> None:
        self._evaluator.setup()

    def create_accumulator(self):
        return self._evaluator.initial()

    def add_input(self, state, batch):
        return self._evaluator.add(state, batch)

    def merge_accumulators(self, states):
        states = iter(states)
        first = next(states)
        for state in states:
            first = self._evaluator.merge(first, state)
        return first

    def extract_output(self, state):
        return self._evaluator.finish(state)


class _FinishQuality(beam.DoFn):
    """Anomalies against the history, the report files, then the gate (one report per window)."""

    def __init__(self, step, json_path, html_path, pipeline, run_id, min_score, on_failure, anomalies, state_url):
        self.step, self.json_path, self.html_path = step, json_path, html_path
        self.pipeline, self.run_id, self.min_score, self.on_failure = pipeline, run_id, min_score, on_failure
        self.anomalies, self.state_url = anomalies, state_url

    def process(self, outcome: dict[str, Any], window=beam.DoFn.WindowParam):
        yield self.finish(outcome, window)

    def finish(self, outcome: dict[str, Any], window: Any = None) -> dict[str, Any]:
        from beam_etl.quality.report import write_report

        found: list[dict[str, Any]] = []
        if self.anomalies is not None and outcome.get("run_metrics"):
            repository = StateMetricsRepository(self.state_url)
            try:
                found = run_anomalies(
                    outcome["run_metrics"],
                    repository,
                    pipeline=self.pipeline,
                    step=self.step,
                    run_id=self.run_id,
                    strategies=self.anomalies.strategies,
                    window=self.anomalies.window,
                )
            finally:
                repository.close()
        report = build_report(
            outcome,
            step=self.step,
            pipeline=self.pipeline,
            run_id=self.run_id,
            min_score=self.min_score,
            on_failure=self.on_failure,
            anomalies=found,
            anomalies_fail=bool(self.anomalies and self.anomalies.fail),
        )
        json_path = windowed_path(self.json_path, window)
        write_report(report, json_path, windowed_path(self.html_path, window))
        gate = report["gate"]
        if not gate["passed"] and self.on_failure == "fail":
            raise StepFailed(
                self.step,
                f"quality gate failed (score {report['score']:.4f}): " + "; ".join(gate["reasons"][:3]) + f" (report: {json_path})",
            )
        return report


def _passthrough(batch: pa.RecordBatch) -> BatchOutcome:
    return BatchOutcome(out=batch)


class Quality(beam.PTransform):
    """Pass rows through unchanged; score them with checks; write the report; apply the gate.

    Args:
        step: the step name (counters, report title, StepFailed).
        checks: check mappings (see the module docstring) or :class:`CheckConfig` s.
        report: the report's JSON path (an HTML page is written next to it).
        min_score: the gate's minimum overall score (None: only failing checks fail it).
        on_failure: ``fail`` (raise StepFailed after writing the report) or ``continue``.
        samples: failing samples kept per check.
        suite: a GX ExpectationSuite JSON file whose expectations are added as checks.
        anomalies: run-level anomaly detection (:class:`AnomaliesSpec` or a mapping).
        pipeline, run_id, state_url: tags and store for the run-metrics history.
        html: also write the HTML page.
        gx_max_rows: rows gathered for GX expectations that need the whole column.

    Example:
        >>> out = batches | Quality("gate", [{"completeness": "email", "threshold": 0.99},
        ...                                  {"expectation": "expect_column_values_to_be_between",
        ...                                   "column": "age", "min_value": 0, "max_value": 130}],
        ...                         report="reports/gate.json", min_score=0.9)  # doctest: +SKIP
    """

    def __init__(
        self,
        step: str,
        checks: Sequence[Mapping[str, Any] | CheckConfig] = (),
        report: str = "reports/quality.json",
        min_score: float | None = None,
        on_failure: str = "fail",
        samples: int = 5,
        suite: str | None = None,
        anomalies: AnomaliesSpec | Mapping[str, Any] | None = None,
        pipeline: str = "",
        run_id: str | None = None,
        state_url: str | None = None,
        html: bool = True,
        gx_max_rows: int = 1_000_000,
    ):
        super().__init__()
        if on_failure not in ("fail", "continue"):
            raise ValueError(f"on_failure must be fail or continue, got '{on_failure}'")
        if min_score is not None and not 0 <= min_score <= 1:
            raise ValueError(f"min_score must be between 0 and 1, got {min_score}")
        items = list(checks)
        if suite:
            try:
                items.extend({"expectation": e.pop("expectation"), **e} for e in load_suite(suite))
            except ValueError as exc:
                raise SpecError(SpecIssue("suite", str(exc))) from None
        if not items:
            raise ValueError("Quality needs at least one check (or a suite)")
        configs = [c if isinstance(c, CheckConfig) else None for c in items]
        parsed = iter(_parse_checks([c for c in items if not isinstance(c, CheckConfig)]))
        configs = [c if c is not None else next(parsed) for c in configs]
        if isinstance(anomalies, Mapping):
            anomalies = AnomaliesSpec.model_validate(anomalies)
        self._evaluator = QualityEvaluator(configs, samples, _dt.datetime.now(_dt.timezone.utc), anomalies, gx_max_rows)
        gx_errors = self._evaluator.expectations.check_gx() if self._evaluator.expectations.uses_gx else []
        if gx_errors:
            raise SpecError([SpecIssue("checks", message) for message in gx_errors])
        self._step = step
        json_path, html_path = report_paths(report, step)
        self._finish = _FinishQuality(step, json_path, html_path if html else None, pipeline, run_id, min_score, on_failure, anomalies, state_url)

    def expand(self, pcoll) -> StepOutputs:
        outputs = pcoll | "rows" >> ApplyBatchFn(self._step, _passthrough)
        outcome = combine_report(pcoll, QualityCombineFn(self._evaluator), "checks")
        outcome | "report" >> beam.ParDo(self._finish)
        return outputs


@register_step("quality", QualitySpec)
def build_quality(spec: QualitySpec, inputs, ctx: BuildContext) -> StepOutputs:
    suite = ctx.resolve_input(spec.suite) if spec.suite else None
    try:
        transform = Quality(
            spec.name,
            spec.checks,
            report=ctx.resolve_output(spec.report or f"reports/{spec.name}.json"),
            min_score=spec.min_score,
            on_failure=spec.on_failure,
            samples=spec.samples,
            suite=suite,
            anomalies=spec.anomalies,
            pipeline=ctx.pipeline_name,
            run_id=ctx.job_id,
            state_url=ctx.state_url,
            html=spec.html,
            gx_max_rows=spec.gx_max_rows,
        )
    except SpecError as exc:
        raise SpecError([SpecIssue(f"{ctx.path}.{issue.path}", issue.message, issue.hint) for issue in exc.issues]) from None
    return inputs[0] | ctx.label() >> transform
