"""Step, source and sink registries: a spec ``type`` name -> (pydantic model, builder).

A step type is one registered builder plus its model (STYLE 2)::

    @register_step("filter", FilterSpec)
    def build_filter(spec: FilterSpec, inputs: list[PCollection], ctx: BuildContext) -> StepOutputs:
        ...

Builders are called by ``beam_etl.graph`` with the validated model; the model class
is also what ``beam_etl.spec`` validates the spec entry against.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Literal

__all__ = [
    "Registered",
    "STEPS",
    "SOURCES",
    "SINKS",
    "register_step",
    "register_source",
    "register_sink",
    "load_plugins",
]

Kind = Literal["step", "source", "sink"]


@dataclass(frozen=True)
class Registered:
    kind: Kind
    type: str
    model: type  # a pydantic model class (subclass of spec.StepModel/SourceModel/SinkModel)
    build: Callable[..., Any]


STEPS: dict[str, Registered] = {}
SOURCES: dict[str, Registered] = {}
SINKS: dict[str, Registered] = {}

_TABLES: dict[Kind, dict[str, Registered]] = {"step": STEPS, "source": SOURCES, "sink": SINKS}

#: Modules whose import registers the built-in types. A module missing an optional
#: dependency (a connector extra that is not installed) is skipped, not fatal.
PLUGIN_MODULES: tuple[str, ...] = (
    "beam_etl.transforms.fields",
    "beam_etl.transforms.filter",
    "beam_etl.transforms.aggregate",
    "beam_etl.transforms.join",
    "beam_etl.transforms.window",
    "beam_etl.transforms.window_into",
    "beam_etl.transforms.pivot",
    "beam_etl.transforms.dedupe",
    "beam_etl.quality.validate",
    "beam_etl.quality.clean",
    "beam_etl.quality.profile",
    "beam_etl.quality.checks",
    "beam_etl.quality.anomaly",
    "beam_etl.quality.coerce",
    "beam_etl.io.files",
    "beam_etl.io.inline",
    "beam_etl.io.rest",
    "beam_etl.io.streams",
    "beam_etl.io.sql",
    "beam_etl.io.cdc",
    "beam_etl.io.kafka",
    "beam_etl.io.rabbitmq",
    "beam_etl.io.sqs",
)


def _register(kind: Kind, type_name: str, model: type) -> Callable:
    def decorator(build: Callable) -> Callable:
        table = _TABLES[kind]
        existing = table.get(type_name)
        if existing is not None and existing.build.__qualname__ != build.__qualname__:
            raise ValueError(f"{kind} type '{type_name}' is registered twice")
        table[type_name] = Registered(kind, type_name, model, build)
        return build

    return decorator


def register_step(type_name: str, model: type) -> Callable:
    """Register ``build(spec, inputs, ctx) -> StepOutputs`` for steps of ``type_name``."""
    return _register("step", type_name, model)


def register_source(type_name: str, model: type) -> Callable:
    """Register ``build(spec, root, ctx) -> StepOutputs`` for sources of ``type_name``."""
    return _register("source", type_name, model)


def register_sink(type_name: str, model: type) -> Callable:
    """Register ``build(spec, pcoll, ctx) -> PCollection | None`` for sinks of ``type_name``."""
    return _register("sink", type_name, model)


_loaded = False


def load_plugins() -> None:
    """Import every module that registers built-in types (once)."""
    global _loaded
    if _loaded:
        return
    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A missing third-party extra (a connector not installed) is tolerated; a broken
            # import inside our own module is not.
            if exc.name and exc.name.startswith("beam_etl") and exc.name != module:
                raise
    _loaded = True
