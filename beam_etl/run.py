"""Run a spec: build the Beam graph, run it, balance the counters, record the run.

Used by the CLI (``python -m beam_etl run``); the REST service and the scheduler call
:func:`run_spec` too, so a run looks the same whoever starts it.

Example:
    >>> from beam_etl.spec import load_spec
    >>> report = run_spec(load_spec("pipeline.yaml"), ["--runner=DirectRunner"])  # doctest: +SKIP
    >>> report.status, report.summary["balanced"]  # doctest: +SKIP
    ('succeeded', True)
"""

from __future__ import annotations

import json
import logging
import re
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from beam_etl.errors import BeamEtlError, StepFailed
from beam_etl.spec import PipelineSpec

__all__ = ["RunReport", "run_spec", "pipeline_options"]

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    """The outcome of one run; ``summary`` is also written as JSON next to the outputs."""

    run_id: str
    spec_name: str
    runner: str
    status: str  # succeeded | failed
    seconds: float
    summary: dict[str, Any]
    output_dir: str
    summary_path: str | None = None
    error: str | None = None
    sink_paths: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("succeeded", "dry_run") and self.summary.get("balanced", False)


def pipeline_options(beam_args: list[str]):
    """PipelineOptions from pass-through Beam args, after the runner module's checks/defaults."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    if not any(arg == "--runner" or arg.startswith("--runner=") for arg in args):
        args.append("--runner=DirectRunner")
    from beam_etl import runners

    prepare = getattr(runners, "prepare_pipeline_args", None)
    if prepare is not None:
        args = prepare(args)
    return PipelineOptions(args), args


def _runner_name(args: list[str]) -> str:
    for index, arg in enumerate(args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and index + 1 < len(args):
            return args[index + 1]
    return "DirectRunner"


def run_spec(
    spec: PipelineSpec,
    beam_args: list[str] | None = None,
    *,
    output_dir: str = ".",
    state_url: str | None = None,
    summary_path: str | None = None,
    progress: Callable[[Any], Any] | None = None,
    record_state: bool = True,
) -> RunReport:
    """Build and run ``spec``; never raises for a failed run (see ``RunReport.status``).

    Args:
        spec: a validated spec.
        beam_args: Beam pipeline options, passed through unchanged (``--runner=...``).
        output_dir: where relative sink/DLQ paths and the summary JSON go.
        state_url: the state store URL (default: ``BEAM_ETL_STATE_URL`` or a local SQLite file).
        summary_path: where to write the summary JSON (default ``<output_dir>/run_summary.json``).
        progress: an object with ``tap()`` (a DoFn for source batches) and ``watch(thread_fn)``;
            see :mod:`beam_etl.progress`.
        record_state: record the run in the state store.

    Raises:
        BeamEtlError: for problems found before the run starts (runner options, sinks that
        refuse to overwrite) — the run never started.
    """
    import apache_beam as beam

    from beam_etl.graph import build_graph, summarize

    options, args = pipeline_options(beam_args or [])
    runner = _runner_name(args)
    os.makedirs(output_dir, exist_ok=True)
    store = None
    run_id = uuid.uuid4().hex[:12]
    if record_state:
        from beam_etl.state import StateStore

        store = StateStore(state_url)
        run_id = store.start_run(spec_name=spec.name, spec_hash=spec.spec_hash, runner=runner, run_id=run_id)

    started = time.monotonic()
    status, error, summary = "succeeded", None, {"steps": [], "balanced": False, "dlq_rows": 0, "dlq_reasons": []}
    graph = None
    try:
        # Build errors (a sink that refuses to overwrite, an unreachable broker while
        # planning offsets) mean the run never started: they propagate to the caller.
        pipeline = beam.Pipeline(options=options)
        graph = build_graph(
            pipeline,
            spec,
            job_id=run_id,
            output_dir=output_dir,
            progress_tap=progress.tap() if progress is not None else None,
            state_url=state_url,
        )
    except BeamEtlError as exc:
        if store is not None:
            store.finish_run(run_id, status="failed", summary=summary, error=str(exc))
            store.close()
        raise
    try:
        if progress is not None:
            result = progress.watch(pipeline.run)
        else:
            result = pipeline.run()
        result.wait_until_finish()
        if "--dry_run=True" in args:
            # Dataflow built the job request offline and submitted nothing: no counters.
            status = "dry_run"
            summary = {"steps": [], "balanced": True, "dlq_rows": 0, "dlq_reasons": [], "job": _dry_run_job(result)}
        else:
            summary = summarize(result, graph)
        state = str(getattr(result, "state", "DONE"))
        if "FAIL" in state.upper() or "CANCEL" in state.upper():
            status, error = "failed", f"runner reported state {state}"
    except Exception as exc:  # a worker error surfaces as the runner's exception type
        status, error = "failed", _root_message(exc)
        log.debug("run failed", exc_info=True)
    if graph is not None:
        # Acks, offset commits and watermarks move only now, after every sink committed.
        try:
            # A dry run read nothing: acknowledge nothing (the failure hooks release what was held).
            graph.lifecycle.finish(succeeded=status == "succeeded" and summary.get("balanced", False))
        except Exception as exc:
            status, error = "failed", f"after the run: {_root_message(exc)}"
        scratch = graph.lifecycle.scratch_dir
        if scratch and "://" not in scratch:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
            try:
                os.rmdir(os.path.dirname(scratch))  # the _beam_etl_scratch folder, if now empty
            except OSError:
                pass
    seconds = time.monotonic() - started
    summary.update(
        {
            "run_id": run_id,
            "pipeline": spec.name,
            "spec_hash": spec.spec_hash,
            "runner": runner,
            "status": status,
            "seconds": round(seconds, 3),
            "error": error,
        }
    )
    path = summary_path or os.path.join(output_dir, "run_summary.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, default=str)
    if store is not None:
        # The store knows running/succeeded/failed/cancelled; a dry run is a success whose
        # summary says dry_run.
        store.finish_run(run_id, status="succeeded" if status == "dry_run" else status, summary=summary, error=error)
        store.close()
    sink_paths = {name: _sink_path(sink, output_dir) for name, sink in spec.sinks.items()}
    sink_paths["dlq"] = _sink_path(spec.dlq, output_dir)
    return RunReport(
        run_id=run_id,
        spec_name=spec.name,
        runner=runner,
        status=status,
        seconds=seconds,
        summary=summary,
        output_dir=output_dir,
        summary_path=path,
        error=error,
        sink_paths=sink_paths,
    )


def _dry_run_job(result: Any) -> dict[str, Any]:
    job = getattr(result, "job", None)
    proto = getattr(job, "proto", None)
    return {"name": getattr(proto, "name", None), "steps": len(getattr(proto, "steps", []) or [])}


def _sink_path(model: Any, output_dir: str) -> str:
    path = getattr(model, "path", None) or getattr(model, "url", None) or getattr(model, "type", "")
    if isinstance(path, str) and "://" not in path and not os.path.isabs(path) and getattr(model, "path", None):
        return os.path.normpath(os.path.join(output_dir, path))
    return str(path)


def _root_message(exc: BaseException) -> str:
    """One line for a failed run: our own error if one is in the chain, else the innermost.

    Beam wraps worker exceptions (with tracebacks, and a "[while running ...]" suffix); a
    BeamEtlError (StepFailed, SourceError, ...) already says what and where, so it wins.
    """
    from beam_etl.errors import BeamEtlError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, BeamEtlError):
            return _one_line(str(current))
        current = current.__cause__ or current.__context__
    text = str(exc)
    # Remote runners hand back only text: find our error's line in it.
    found = re.findall(r"beam_etl\.errors\.\w+: (.+)", text)
    if found:
        return _one_line(found[-1])
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return _one_line(lines[-1]) if lines else type(exc).__name__


def _one_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else text
    return re.sub(r" \[while running '[^']*'\]$", "", first).strip()
