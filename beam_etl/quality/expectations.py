"""Great Expectations in beam-etl: native evaluation where we can, GX itself where we cannot.

An expectation is written with GX's own names and kwargs::

    {expectation: expect_column_values_to_be_between, column: age, min_value: 0, max_value: 130, mostly: 0.95}

(GX's JSON forms ``{type: ..., kwargs: {...}}`` and ``{expectation_type: ..., kwargs: ...}``
are accepted too, and so is a whole GX ExpectationSuite JSON file.) The expectations listed in
:data:`beam_etl.quality.expectations_native.NATIVE` are evaluated natively — vectorized over
Arrow batches, merged across batches and workers, with GX's semantics and result shapes.
Any other GX expectation runs through GX itself: row-local ones (regex lists, JSON parsing,
types, ...) batch by batch with their counts merged; the rest on the rows of the
columns they read, gathered up to ``gx_max_rows``. GX is imported only when such an
expectation is present (its import takes seconds), and one GX context serves a whole worker
process (GX issue 12209: several ephemeral contexts in threads fail).

Example:
    >>> import pyarrow as pa
    >>> table = pa.table({"age": [31, 45, None, 200]})
    >>> [result] = evaluate_expectations(table, [{"expectation": "expect_column_values_to_be_between",
    ...                                           "column": "age", "min_value": 0, "max_value": 130}])
    >>> result["success"], result["result"]["unexpected_count"], result["result"]["partial_unexpected_list"]
    (False, 1, [200])
"""

from __future__ import annotations

import copy
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

from beam_etl.errors import SpecError, SpecIssue
from beam_etl.quality.expectations_native import (
    GX_EXPECTATIONS,
    GX_ROW_LOCAL,
    NATIVE,
    MapState,
    NativeExpectation,
    ResultFormat,
    format_map_output,
    native_expectation,
    parse_result_format,
)

__all__ = [
    "ExpectationConfig",
    "ExpectationsEvaluator",
    "evaluate_expectations",
    "parse_expectation",
    "parse_expectations",
    "expectation_issues",
    "load_suite",
    "gx_runner",
    "KNOWN_EXPECTATIONS",
]

#: Every name accepted in a spec (native ones and every GX 1.24 expectation).
KNOWN_EXPECTATIONS: frozenset[str] = frozenset(NATIVE) | GX_EXPECTATIONS

#: Rows gathered for a non-row-local GX expectation before it is reported as not evaluated.
GX_MAX_ROWS = 1_000_000

_SPEC_ONLY_KEYS = ("expectation", "type", "expectation_type", "kwargs", "meta")


@dataclass
class ExpectationConfig:
    """One expectation: its GX name, kwargs and meta; ``native`` is None when GX evaluates it."""

    type: str
    kwargs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    native: NativeExpectation | None = None

    @property
    def engine(self) -> str:
        return "native" if self.native is not None else "great_expectations"

    def columns(self) -> list[str]:
        if self.native is not None:
            return self.native.columns()
        cols = [self.kwargs[k] for k in ("column", "column_A", "column_B") if isinstance(self.kwargs.get(k), str)]
        cols.extend(c for c in (self.kwargs.get("column_list") or []) if isinstance(c, str))
        return cols

    def config_dict(self) -> dict[str, Any]:
        return {"type": self.type, "kwargs": copy.deepcopy(self.kwargs), "meta": dict(self.meta)}


def _did_you_mean(name: str) -> str:
    from beam_etl.spec import did_you_mean

    return did_you_mean(name, sorted(KNOWN_EXPECTATIONS)) or "see the Great Expectations gallery for expectation names"


def parse_expectation(item: Mapping[str, Any]) -> ExpectationConfig:
    """An :class:`ExpectationConfig` from a spec or GX JSON mapping.

    Raises ValueError with a sentence (and a "did you mean" for a misspelt name).
    """
    if not isinstance(item, Mapping):
        raise ValueError(f"an expectation must be a mapping, got {item!r}")
    name = item.get("expectation") or item.get("type") or item.get("expectation_type")
    if not isinstance(name, str) or not name:
        raise ValueError("an expectation needs a name: {expectation: expect_..., column: ..., ...}")
    if "kwargs" in item:
        kwargs = item["kwargs"]
        if not isinstance(kwargs, Mapping):
            raise ValueError(f"{name}: kwargs must be a mapping")
        kwargs = dict(kwargs)
        extra = set(item) - set(_SPEC_ONLY_KEYS) - {"id", "notes", "description", "rendered_content", "severity"}
        if extra:
            raise ValueError(f"{name}: unexpected keys {', '.join(sorted(extra))} next to kwargs")
    else:
        kwargs = {k: v for k, v in item.items() if k not in _SPEC_ONLY_KEYS}
    meta = dict(item.get("meta") or {})
    if name not in KNOWN_EXPECTATIONS:
        raise ValueError(f"unknown expectation '{name}' ({_did_you_mean(name)})")
    native = native_expectation(name, kwargs)
    if native is None:
        parse_result_format(kwargs.get("result_format"))
    return ExpectationConfig(name, kwargs, meta, native)


def expectation_issues(item: Any, path: str) -> list[SpecIssue]:
    """Spec issues of one expectation entry (empty when it is fine)."""
    try:
        parse_expectation(item)
    except ValueError as exc:
        message = str(exc)
        hint = None
        if message.endswith(")") and " (" in message:
            message, _, hint = message[:-1].rpartition(" (")
        return [SpecIssue(path, message, hint)]
    return []


def parse_expectations(items: Iterable[Mapping[str, Any]], path: str = "expectations") -> list[ExpectationConfig]:
    """Parse a list of expectations; raises :class:`SpecError` naming every bad entry."""
    items = list(items)
    issues = [issue for i, item in enumerate(items) for issue in expectation_issues(item, f"{path}[{i}]")]
    if issues:
        raise SpecError(issues)
    return [parse_expectation(item) for item in items]


def load_suite(path: str) -> list[dict[str, Any]]:
    """The expectations of a GX ExpectationSuite JSON file (GX 1.x or 0.x layout).

    Raises ValueError naming the file when it is not a suite.
    """
    try:
        if "://" in path:
            from apache_beam.io.filesystems import FileSystems

            with FileSystems.open(path) as handle:
                data = json.loads(handle.read().decode("utf-8"))
        else:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"expectation suite '{path}' not found (check the path)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"expectation suite '{path}' is not readable JSON: {exc}") from None
    items = data if isinstance(data, list) else data.get("expectations") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"'{path}' is not a GX ExpectationSuite: it needs an 'expectations' list")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"'{path}': every expectation must be an object, got {item!r}")
        name = item.get("type") or item.get("expectation_type")
        entry: dict[str, Any] = {"expectation": name, **dict(item.get("kwargs") or {})}
        if item.get("meta"):
            entry["meta"] = item["meta"]
        out.append(entry)
    return out


# --------------------------------------------------------------------------- GX itself


class _GxRunner:
    """One ephemeral GX context per process, used under a lock."""

    def __init__(self) -> None:
        import logging

        import great_expectations as gx

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        self._gx = gx
        self._context = gx.get_context(mode="ephemeral")
        try:  # no "Calculating Metrics" bars on the console
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        except Exception:  # an older/newer GX without this knob: bars are cosmetic
            pass
        asset = self._context.data_sources.add_pandas("beam_etl").add_dataframe_asset("batch")
        self._definition = asset.add_batch_definition_whole_dataframe("whole")
        self._lock = threading.Lock()
        self._suites = 0

    def validate(self, frame, configs: Sequence[ExpectationConfig], result_format: str = "SUMMARY") -> list[dict[str, Any]]:
        """GX's result dicts for ``configs`` on a pandas ``frame``, in the order given."""
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        with self._lock:
            self._suites += 1
            suite = self._gx.ExpectationSuite(name=f"beam_etl_{self._suites}")
            for index, config in enumerate(configs):
                kwargs = {k: v for k, v in config.kwargs.items() if k not in ("result_format", "include_config")}
                meta = dict(config.meta, beam_etl_index=index)
                suite.add_expectation(ExpectationConfiguration(type=config.type, kwargs=kwargs, meta=meta).to_domain_obj())
            batch = self._definition.get_batch(batch_parameters={"dataframe": frame})
            validation = batch.validate(suite, result_format=result_format)
        results: list[dict[str, Any] | None] = [None] * len(configs)
        for result in validation.results:
            data = result.to_json_dict()
            meta = dict(data["expectation_config"].get("meta") or {})
            index = meta.pop("beam_etl_index")
            data["expectation_config"]["meta"] = meta
            data["exception_info"] = _flat_exception_info(data.get("exception_info"))
            results[index] = data
        return results  # type: ignore[return-value]

    def check(self, configs: Sequence[ExpectationConfig]) -> list[str]:
        """GX's own configuration errors for ``configs`` (one message per bad one)."""
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        errors = []
        for config in configs:
            kwargs = {k: v for k, v in config.kwargs.items() if k not in ("result_format", "include_config")}
            try:
                ExpectationConfiguration(type=config.type, kwargs=kwargs).to_domain_obj()
            except Exception as exc:  # GX raises pydantic and its own errors here
                errors.append(f"{config.type}: {str(exc).splitlines()[0]}")
        return errors


def _flat_exception_info(info: Any) -> dict[str, Any]:
    """GX reports one exception_info, or one per failing metric keyed by metric id: flatten."""
    if not isinstance(info, dict) or "raised_exception" in info:
        return info or {"raised_exception": False, "exception_traceback": None, "exception_message": None}
    raised = [value for value in info.values() if isinstance(value, dict) and value.get("raised_exception")]
    if not raised:
        return {"raised_exception": False, "exception_traceback": None, "exception_message": None}
    first = raised[0]
    return {"raised_exception": True, "exception_traceback": first.get("exception_traceback"), "exception_message": first.get("exception_message")}


_RUNNER: _GxRunner | None = None
_RUNNER_LOCK = threading.Lock()


def gx_runner() -> _GxRunner:
    """The process-wide GX runner (created, and GX imported, on first use)."""
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None:
            _RUNNER = _GxRunner()
        return _RUNNER


def _to_pandas(table: pa.Table | pa.RecordBatch):
    table = table if isinstance(table, pa.Table) else pa.Table.from_batches([table])
    return table.to_pandas()


# --------------------------------------------------------------------------- evaluator


def _result_dict(config: ExpectationConfig, outcome: dict[str, Any]) -> dict[str, Any]:
    return {
        "success": outcome["success"],
        "expectation_config": config.config_dict(),
        "result": outcome.get("result", {}),
        "exception_info": outcome.get("exception_info")
        or {"raised_exception": False, "exception_traceback": None, "exception_message": None},
        "meta": {"engine": config.engine},
    }


def _mostly(config: ExpectationConfig) -> float:
    mostly = config.kwargs.get("mostly", 1.0)
    return 1.0 if mostly is None else float(mostly)


def _gx_map_state(data: dict[str, Any], offset: int) -> MapState:
    info = data.get("exception_info") or {}
    if info.get("raised_exception"):
        return MapState(error=info.get("exception_message") or "great_expectations raised an exception")
    result = data.get("result") or {}
    total = int(result.get("element_count") or 0)
    missing = result.get("missing_count")
    nonnull = total - int(missing) if missing is not None else -1
    indices = result.get("partial_unexpected_index_list") or []
    values = result.get("partial_unexpected_list") or []
    partial = [(int(i) + offset, v) for i, v in zip(indices, values)]
    return MapState(total, nonnull, int(result.get("unexpected_count") or 0), partial)


def _finish_gx_map(config: ExpectationConfig, state: MapState, fmt: ResultFormat) -> dict[str, Any]:
    if state.error:
        return {"success": False, "result": {}, "exception_info": {"raised_exception": True, "exception_traceback": None, "exception_message": state.error}}
    total, unexpected = state.element_count, state.unexpected_count
    nonnull = state.nonnull_count if state.nonnull_count >= 0 else None
    mostly = _mostly(config)
    if nonnull is None:
        success = True if total == 0 else (total - unexpected) / total >= mostly
    else:
        success = True if (total == 0 or nonnull == 0) else (nonnull - unexpected) / nonnull >= mostly
    return {"success": bool(success), "result": format_map_output(fmt, success, total, nonnull, unexpected, state.partial)}


class ExpectationsEvaluator:
    """Mergeable evaluation of a list of expectations (native and GX) over batches.

    ``initial()`` / ``add(state, batch, offset)`` / ``merge(a, b)`` / ``finalize(state)`` —
    the shape of a Beam ``CombineFn``; ``finalize`` returns GX-shaped result dicts in the
    order of the configs.

    Args:
        configs: parsed expectations (:func:`parse_expectations`).
        gx_max_rows: rows gathered for GX expectations that need the whole column.
        with_index: report ``partial_unexpected_index_list`` (meaningful only when batches
            are added in order with their global ``offset``).
    """

    def __init__(self, configs: Sequence[ExpectationConfig], gx_max_rows: int = GX_MAX_ROWS, with_index: bool = True):
        self.configs = list(configs)
        self.gx_max_rows = gx_max_rows
        self.with_index = with_index
        self.native = [i for i, c in enumerate(self.configs) if c.native is not None]
        self.gx_local = [i for i, c in enumerate(self.configs) if c.native is None and c.type in GX_ROW_LOCAL]
        self.gx_whole = [i for i, c in enumerate(self.configs) if c.native is None and c.type not in GX_ROW_LOCAL]
        if not with_index:
            for i in self.native:
                native = self.configs[i].native
                native.result_format = ResultFormat(native.result_format.level, native.result_format.partial_unexpected_count, False)
        whole_columns: list[str] | None = []
        for i in self.gx_whole:
            cols = self.configs[i].columns()
            if not cols:  # a table-level expectation: every column
                whole_columns = None
                break
            whole_columns.extend(c for c in cols if c not in whole_columns)
        self._whole_columns = whole_columns

    @property
    def uses_gx(self) -> bool:
        return bool(self.gx_local or self.gx_whole)

    def setup(self) -> None:
        """Create this process's GX context now (call from ``DoFn.setup``/``CombineFn.setup``)."""
        if self.uses_gx:
            gx_runner()

    def check_gx(self) -> list[str]:
        """GX's configuration errors for the expectations GX evaluates (imports GX)."""
        configs = [self.configs[i] for i in self.gx_local + self.gx_whole]
        return gx_runner().check(configs) if configs else []

    def initial(self) -> dict[str, Any]:
        return {
            "native": {i: self.configs[i].native.initial() for i in self.native},
            "gx_local": {i: MapState() for i in self.gx_local},
            "gx_whole": {"parts": [], "rows": 0, "overflow": False},
        }

    def add(self, state: dict[str, Any], batch: pa.RecordBatch, offset: int = 0) -> dict[str, Any]:
        for i in self.native:
            native = self.configs[i].native
            state["native"][i] = native.add(state["native"][i], batch, offset)
        if self.gx_local:
            configs = [self.configs[i] for i in self.gx_local]
            results = gx_runner().validate(_to_pandas(batch), configs)
            for i, data in zip(self.gx_local, results):
                part = _gx_map_state(data, offset)
                state["gx_local"][i] = self._merge_map(state["gx_local"][i], part)
        if self.gx_whole:
            whole = state["gx_whole"]
            if whole["rows"] + batch.num_rows > self.gx_max_rows:
                whole["overflow"] = True
                whole["parts"] = []
            elif not whole["overflow"]:
                names = self._whole_columns
                part = batch if names is None else batch.select([n for n in names if n in batch.schema.names])
                whole["parts"].append(pa.Table.from_batches([part]))
            whole["rows"] += batch.num_rows
        return state

    @staticmethod
    def _merge_map(a: MapState, b: MapState) -> MapState:
        if a.element_count == 0 and not a.error:
            return b
        if b.element_count == 0 and not b.error:
            return a
        partial = sorted(a.partial + b.partial, key=lambda item: item[0])[:1000]
        # nonnull_count -1: GX reported no missing_count (not_null-like expectations)
        nonnull = -1 if a.nonnull_count < 0 or b.nonnull_count < 0 else a.nonnull_count + b.nonnull_count
        return MapState(a.element_count + b.element_count, nonnull, a.unexpected_count + b.unexpected_count, partial, a.error or b.error)

    def merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = {"native": {}, "gx_local": {}, "gx_whole": {}}
        for i in self.native:
            out["native"][i] = self.configs[i].native.merge(a["native"][i], b["native"][i])
        for i in self.gx_local:
            out["gx_local"][i] = self._merge_map(a["gx_local"][i], b["gx_local"][i])
        wa, wb = a["gx_whole"], b["gx_whole"]
        rows = wa["rows"] + wb["rows"]
        overflow = wa["overflow"] or wb["overflow"] or rows > self.gx_max_rows
        out["gx_whole"] = {"parts": [] if overflow else wa["parts"] + wb["parts"], "rows": rows, "overflow": overflow}
        return out

    def finalize(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(self.configs)
        for i in self.native:
            config = self.configs[i]
            results[i] = _result_dict(config, config.native.finalize(state["native"][i]))
        for i in self.gx_local:
            config = self.configs[i]
            fmt = parse_result_format(config.kwargs.get("result_format"))
            fmt = ResultFormat(fmt.level, fmt.partial_unexpected_count, self.with_index)
            results[i] = _result_dict(config, _finish_gx_map(config, state["gx_local"][i], fmt))
        if self.gx_whole:
            whole = state["gx_whole"]
            configs = [self.configs[i] for i in self.gx_whole]
            if whole["overflow"]:
                message = (
                    f"not evaluated: {whole['rows']} rows exceed gx_max_rows={self.gx_max_rows} for an expectation "
                    "GX must see whole; raise gx_max_rows or use a native expectation"
                )
                for i, config in zip(self.gx_whole, configs):
                    results[i] = _result_dict(config, {"success": False, "result": {}, "exception_info": {"raised_exception": True, "exception_traceback": None, "exception_message": message}})
            else:
                parts = whole["parts"]
                table = pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({})
                for i, data in zip(self.gx_whole, gx_runner().validate(table.to_pandas(), configs, self._gx_format(configs))):
                    data["meta"] = {"engine": "great_expectations"}
                    results[i] = data
        return results  # type: ignore[return-value]

    @staticmethod
    def _gx_format(configs: Sequence[ExpectationConfig]) -> str:
        return "SUMMARY"


def evaluate_expectations(
    table: pa.Table | pa.RecordBatch,
    expectations: list[dict[str, Any]],
    result_format: str | dict | None = None,
    batch_rows: int = 1 << 20,
) -> list[dict[str, Any]]:
    """Evaluate GX expectations on an Arrow table, without a pipeline.

    Native expectations run vectorized batch by batch (merged in row order, so the result
    equals GX's on ``table.to_pandas()``); the others run through GX on the whole table.

    Args:
        table: the data.
        expectations: ``[{expectation: name, **kwargs}, ...]`` or GX's ``{type, kwargs}`` form.
        result_format: default ``result_format`` for expectations that do not set one
            (``BOOLEAN_ONLY``, ``BASIC`` or ``SUMMARY``; default ``SUMMARY``).
        batch_rows: rows per native evaluation step.

    Returns:
        One GX-shaped dict per expectation, in order: ``success``, ``expectation_config``,
        ``result``, ``exception_info``, ``meta`` (``{"engine": "native" | "great_expectations"}``).

    Raises:
        SpecError: an unknown expectation (with "did you mean"), or bad kwargs.

    Example:
        >>> evaluate_expectations(pa.table({"id": [1, 1]}),
        ...                       [{"expectation": "expect_column_values_to_be_unique", "column": "id"}])[0]["success"]
        False
    """
    if result_format is not None:
        expectations = [
            {**item, "result_format": result_format} if "kwargs" not in item and "result_format" not in item else item
            for item in expectations
        ]
    configs = parse_expectations(expectations)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    natives = [c for c in configs if c.native is not None]
    others = [c for c in configs if c.native is None]
    native_results = iter(_evaluate_native(natives, table, batch_rows))
    gx_results = iter(gx_runner().validate(table.to_pandas(), others) if others else [])
    out = []
    for config in configs:
        if config.native is not None:
            out.append(next(native_results))
        else:
            data = next(gx_results)
            data["meta"] = {"engine": "great_expectations"}
            out.append(data)
    return out


def _evaluate_native(configs: Sequence[ExpectationConfig], table: pa.Table, batch_rows: int) -> list[dict[str, Any]]:
    """Native expectations over ``table`` in row order; the expectations of one batch run in
    parallel threads (Arrow and NumPy kernels release the GIL)."""
    if not configs:
        return []
    from concurrent.futures import ThreadPoolExecutor

    evaluators = [c.native for c in configs]
    states = [e.initial() for e in evaluators]
    batches = table.to_batches(max_chunksize=batch_rows) if table.num_rows else [pa.RecordBatch.from_pylist([], schema=table.schema)]
    # a thread per core: the kernels release the GIL; the dearest expectations start first
    workers = min(len(evaluators), os.cpu_count() or 1, 8)
    order = sorted(range(len(evaluators)), key=lambda i: -evaluators[i].cost)

    def step(index: int, batch: pa.RecordBatch, offset: int) -> None:
        evaluator = evaluators[index]
        states[index] = evaluator.merge(states[index], evaluator.add(evaluator.initial(), batch, offset))

    offset = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for batch in batches:
            list(pool.map(lambda i, b=batch, o=offset: step(i, b, o), order))
            offset += batch.num_rows
    return [_result_dict(c, e.finalize(s)) for c, e, s in zip(configs, evaluators, states)]


# --------------------------------------------------------------------------- Beam


def expectations_combine_fn(configs: Sequence[ExpectationConfig], gx_max_rows: int = GX_MAX_ROWS):
    """A ``beam.CombineFn`` from batches to the list of GX-shaped results."""
    import apache_beam as beam

    class ExpectationsCombineFn(beam.CombineFn):
        def __init__(self) -> None:
            self._evaluator = ExpectationsEvaluator(configs, gx_max_rows, with_index=False)

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
            return self._evaluator.finalize(state)

    return ExpectationsCombineFn()

