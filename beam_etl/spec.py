"""Load and check pipeline specs: YAML/JSON/dict -> a validated :class:`PipelineSpec`.

Every problem found is reported at once, each with its spec path, its YAML line and a
hint where one exists::

    steps[2].input (line 14): unknown step 'cleam' (did you mean 'clean'?)

``${env:VAR}`` and ``${file:path}`` are interpolated in string values; the values are
never logged, and :attr:`PipelineSpec.raw` keeps the text as written (with the
placeholders) for display, hashing and lineage.

Example:
    >>> spec = load_spec({"name": "demo", "sources": {"a": {"type": "csv", "path": "a.csv"}},
    ...                   "steps": [], "sinks": {}})  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import difflib
import graphlib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import yaml
from pydantic import BaseModel, Field, ValidationError

from beam_etl import registry
from beam_etl.errors import SpecError, SpecIssue
from beam_etl.models import DlqModel, SinkModel, SourceModel, StepModel, StrictModel

__all__ = ["PipelineSpec", "load_spec", "did_you_mean", "format_path"]

PathT = tuple[str | int, ...]

_PLACEHOLDER = re.compile(r"\$\{(env|file):([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """``"did you mean 'x'?"`` for the closest candidate, or None."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


def format_path(path: PathT) -> str:
    """``('steps', 2, 'input')`` -> ``steps[2].input``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


class _Settings(StrictModel):
    batch_rows: int | None = Field(default=None, gt=0)


class _Top(StrictModel):
    """The loose top-level shape; entries are checked against their registered models after."""

    name: str
    description: str | None = None
    version: int | str | None = None
    sources: dict[str, dict[str, Any]]
    steps: list[dict[str, Any]] = Field(default_factory=list)
    sinks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    dlq: DlqModel | None = None
    settings: _Settings = Field(default_factory=_Settings)


@dataclass
class PipelineSpec:
    """A validated spec: typed entries in dependency order, plus the text as written."""

    name: str
    sources: dict[str, SourceModel]
    steps: list[StepModel]
    sinks: dict[str, SinkModel]
    dlq: DlqModel
    raw: dict[str, Any]
    base_dir: str = "."
    description: str | None = None
    batch_rows: int | None = None
    schemas: dict[str, pa.Schema | None] = field(default_factory=dict)

    @property
    def spec_hash(self) -> str:
        """sha256 of the spec as written (placeholders, not secrets)."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def step(self, name: str) -> StepModel:
        return next(step for step in self.steps if step.name == name)


# --------------------------------------------------------------------------- loading


class _SpecLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no as booleans,
    which turns a join's or pivot's ``on:`` key into ``True``."""


_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class _LineIndex:
    """Spec path -> YAML line, from the composed node tree."""

    def __init__(self, node: yaml.Node | None):
        self.lines: dict[PathT, int] = {}
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: PathT) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                self.lines[child] = key.start_mark.line + 1
                self._walk(value, child)
                self.lines[child] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, path + (index,))

    def line(self, path: PathT) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def _read_document(source: str | Path | Mapping[str, Any]) -> tuple[Any, _LineIndex, str]:
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), _LineIndex(None), os.getcwd()
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(SpecIssue("", f"spec file '{path}' not found", "check the path")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(SpecIssue("", f"cannot read spec file '{path}': {exc}")) from None
    base_dir = str(path.resolve().parent)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text), _LineIndex(None), base_dir
        except json.JSONDecodeError as exc:
            raise SpecError(
                SpecIssue("", f"invalid JSON in '{path}': {exc.msg}", line=exc.lineno)
            ) from None
    try:
        node = yaml.compose(text, Loader=_SpecLoader)
        data = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(
            SpecIssue(
                "",
                f"invalid YAML in '{path}': {getattr(exc, 'problem', None) or exc}",
                "check indentation and quoting",
                line=mark.line + 1 if mark else None,
            )
        ) from None
    return data, _LineIndex(node), base_dir


def _interpolate(value: Any, path: PathT, base_dir: str, env: Mapping[str, str], issues: list[SpecIssue]) -> Any:
    """Replace ``${env:VAR}`` / ``${file:path}`` in every string (values never logged)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, path + (k,), base_dir, env, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path + (i,), base_dir, env, issues) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            name, _, default = ref.partition(":-")
            if name in env:
                return env[name]
            if ":-" in ref:
                return default
            issues.append(
                SpecIssue(
                    format_path(path),
                    f"environment variable '{name}' is not set",
                    f"export {name}=... or write ${{env:{name}:-default}}",
                )
            )
            return ""
        file_path = Path(ref if os.path.isabs(ref) else os.path.join(base_dir, ref))
        try:
            return file_path.read_text(encoding="utf-8").strip()
        except OSError:
            issues.append(
                SpecIssue(format_path(path), f"file '{ref}' for ${{file:...}} cannot be read", "check the path (relative to the spec file)")
            )
            return ""

    return _PLACEHOLDER.sub(replace, value)


# --------------------------------------------------------------------------- validation


def _pydantic_issues(exc: ValidationError, prefix: PathT, model: type[BaseModel], lines: _LineIndex) -> list[SpecIssue]:
    issues = []
    for error in exc.errors():
        loc = prefix + tuple(error["loc"])
        hint = None
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            key = str(error["loc"][-1])
            fields = _model_at(model, error["loc"][:-1])
            names = [f.alias or n for n, f in fields.items()] if fields else []
            message = f"unknown field '{key}'"
            hint = did_you_mean(key, names) or (f"allowed: {', '.join(sorted(names))}" if names else None)
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        issues.append(SpecIssue(format_path(loc), message, hint, lines.line(loc)))
    return issues


def _model_at(model: type[BaseModel], loc: tuple) -> dict | None:
    """The fields of the (nested) model at ``loc`` when it is a plain model path."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(part) or next(
            (f for f in current.model_fields.values() if f.alias == part), None
        )
        if info is None:
            return None
        current = info.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current.model_fields
    return None


def _validate_entry(
    table: Mapping[str, registry.Registered],
    kind: str,
    data: Any,
    path: PathT,
    lines: _LineIndex,
    issues: list[SpecIssue],
) -> Any | None:
    if not isinstance(data, dict):
        issues.append(SpecIssue(format_path(path), f"a {kind} must be a mapping", line=lines.line(path)))
        return None
    type_name = data.get("type")
    if type_name is None:
        issues.append(
            SpecIssue(format_path(path + ("type",)), f"{kind} has no type", f"one of: {', '.join(sorted(table))}", lines.line(path))
        )
        return None
    entry = table.get(str(type_name))
    if entry is None:
        hint = did_you_mean(type_name, table) or f"known {kind} types: {', '.join(sorted(table))}"
        issues.append(SpecIssue(format_path(path + ("type",)), f"unknown {kind} type '{type_name}'", hint, lines.line(path + ("type",))))
        return None
    try:
        return entry.model.model_validate(data)
    except ValidationError as exc:
        issues.extend(_pydantic_issues(exc, path, entry.model, lines))
        return None


def load_spec(
    source: str | Path | Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    check_schemas: bool = True,
) -> PipelineSpec:
    """Read, interpolate and validate a spec; raise :class:`SpecError` listing every issue.

    Args:
        source: a ``.yaml``/``.yml``/``.json`` file path, or an already-parsed dict.
        env: the environment for ``${env:..}`` (default ``os.environ``).
        check_schemas: check column names against schemas known before running
            (declared ``schema:`` blocks, file headers).
    """
    registry.load_plugins()
    env = os.environ if env is None else env
    data, lines, base_dir = _read_document(source)
    if not isinstance(data, dict):
        raise SpecError(SpecIssue("", "a spec must be a mapping with name, sources, steps, sinks", line=1))
    raw = copy.deepcopy(data)
    issues: list[SpecIssue] = []
    data = _interpolate(data, (), base_dir, env, issues)
    for issue in issues:
        object.__setattr__(issue, "line", lines.line(_parse_path(issue.path)))

    try:
        top = _Top.model_validate(data)
    except ValidationError as exc:
        raise SpecError(issues + _pydantic_issues(exc, (), _Top, lines)) from None

    sources: dict[str, SourceModel] = {}
    for name, entry in top.sources.items():
        path = ("sources", name)
        if not _NAME.match(name):
            issues.append(SpecIssue(format_path(path), f"invalid name '{name}'", "use letters, digits, _ and -", lines.line(path)))
        model = _validate_entry(registry.SOURCES, "source", entry, path, lines, issues)
        if model is not None:
            sources[name] = model

    steps: list[StepModel] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(top.steps):
        path: PathT = ("steps", index)
        model = _validate_entry(registry.STEPS, "step", entry, path, lines, issues)
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str):
            if name in seen:
                issues.append(SpecIssue(format_path(path + ("name",)), f"duplicate step name '{name}' (first used by steps[{seen[name]}])", "give each step a unique name", lines.line(path + ("name",))))
            elif name in top.sources:
                issues.append(SpecIssue(format_path(path + ("name",)), f"step name '{name}' is also a source name", "rename one of them", lines.line(path + ("name",))))
            else:
                seen[name] = index
            if not _NAME.match(name):
                issues.append(SpecIssue(format_path(path + ("name",)), f"invalid name '{name}'", "use letters, digits, _ and -", lines.line(path + ("name",))))
        if model is not None:
            steps.append(model)

    sinks: dict[str, SinkModel] = {}
    for name, entry in top.sinks.items():
        model = _validate_entry(registry.SINKS, "sink", entry, ("sinks", name), lines, issues)
        if model is not None:
            sinks[name] = model

    # references and cycles; a step whose own entry is invalid still counts as declared, so
    # one typo does not also report every reference to that step
    declared = {entry["name"] for entry in top.steps if isinstance(entry, dict) and isinstance(entry.get("name"), str)}
    producers = set(sources) | {name for name, entry in top.sources.items()} | declared
    side_outputs = {f"{step.name}.{side}" for step in steps for side in _declared_sides(step)}
    known = producers | side_outputs
    step_index = {step["name"]: index for index, step in enumerate(top.steps) if isinstance(step, dict) and "name" in step}
    graph: dict[str, set[str]] = {}
    for step in steps:
        index = step_index.get(step.name, 0)
        deps = set()
        for field_name, ref, ref_path in _references(step, ("steps", index)):
            if ref not in known:
                hint = did_you_mean(ref, known) or f"inputs can be: {', '.join(sorted(known)) or 'none defined'}"
                issues.append(SpecIssue(format_path(ref_path), f"unknown step or source '{ref}'", hint, lines.line(ref_path)))
            else:
                deps.add(ref.split(".")[0])
        if not step.inputs():
            issues.append(SpecIssue(format_path(("steps", index, "input")), "step has no input", "set input: <source or step name>", lines.line(("steps", index))))
        graph[step.name] = deps
    for name, sink in sinks.items():
        if sink.input not in known:
            path = ("sinks", name, "input")
            hint = did_you_mean(sink.input, known) or f"inputs can be: {', '.join(sorted(known))}"
            issues.append(SpecIssue(format_path(path), f"unknown step or source '{sink.input}'", hint, lines.line(path)))

    order: list[str] = []
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        first = cycle[0]
        path = ("steps", step_index.get(first, 0), "input")
        issues.append(SpecIssue(format_path(path), f"steps form a cycle: {' -> '.join(cycle)}", "a step cannot read its own output, directly or indirectly", lines.line(path)))

    by_name = {step.name: step for step in steps}
    ordered_steps = [by_name[name] for name in order if name in by_name] if order else steps

    schemas: dict[str, pa.Schema | None] = {}
    if check_schemas and not issues:
        schemas = _check_schemas(sources, ordered_steps, step_index, base_dir, lines, issues)

    if issues:
        raise SpecError(issues)
    return PipelineSpec(
        name=top.name,
        description=top.description,
        sources=sources,
        steps=ordered_steps,
        sinks=sinks,
        dlq=top.dlq or DlqModel(),
        raw=raw,
        base_dir=base_dir,
        batch_rows=top.settings.batch_rows,
        schemas=schemas,
    )


def _declared_sides(step: StepModel) -> list[str]:
    sides = getattr(step, "side_outputs", None)
    return list(sides()) if callable(sides) else []


def _references(step: StepModel, path: PathT) -> list[tuple[str, str, PathT]]:
    refs = []
    for field_name in step.input_fields():
        value = getattr(step, field_name, None)
        if value is None:
            continue
        if isinstance(value, str):
            refs.append((field_name, value, path + (field_name,)))
        else:
            refs.extend((field_name, v, path + (field_name, i)) for i, v in enumerate(value))
    return refs


def _parse_path(text: str) -> PathT:
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", text):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return tuple(parts)


def _check_schemas(
    sources: dict[str, SourceModel],
    steps: list[StepModel],
    step_index: dict[str, int],
    base_dir: str,
    lines: _LineIndex,
    issues: list[SpecIssue],
) -> dict[str, pa.Schema | None]:
    """Propagate known schemas through the steps and let each step check its columns."""
    schemas: dict[str, pa.Schema | None] = {}
    for name, source in sources.items():
        try:
            schemas[name] = _known_schema(source, base_dir)
        except Exception:  # discovering a schema is best effort; the run reports real errors
            schemas[name] = None
    for step in steps:
        index = step_index.get(step.name, 0)
        inputs = [schemas.get(ref.split(".")[0]) for ref in step.inputs()]
        path = format_path(("steps", index))
        for issue in step.check(inputs, path):
            issues.append(
                SpecIssue(issue.path, issue.message, issue.hint, issue.line or lines.line(_parse_path(issue.path)))
            )
        try:
            schemas[step.name] = step.output_schema(inputs)
        except Exception:
            schemas[step.name] = None
    return schemas


def _known_schema(source: SourceModel, base_dir: str) -> pa.Schema | None:
    # Relative paths in sources resolve against the spec's directory; known_schema reads
    # them from the current directory, so switch for the duration of the call.
    cwd = os.getcwd()
    try:
        os.chdir(base_dir)
        return source.known_schema()
    finally:
        os.chdir(cwd)
