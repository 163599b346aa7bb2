"""Run the benchmark job in every implementation, check the outputs agree, print the table.

    python -m benchmarks.run --rows 1000000 10000000      # the README table (about an hour)
    python -m benchmarks.run --quick                        # 200k rows, 1 repetition: a smoke run
    python -m benchmarks.run --rows 1000000 --memory --scaling   # plus the memory and scaling runs

For every row count: the data is generated (or reused from ``benchmarks/data/``), then each
implementation (:data:`benchmarks.impls.IMPLEMENTATIONS`) runs ``--repeat`` times in its own
process, interleaved (rep 1 of all, rep 2 of all, ...) so that load from other processes on
the machine spreads over all of them. After the first repetition every output is compared
with DuckDB's (:mod:`benchmarks.compare`); nothing is printed but progress until they agree,
and a disagreement stops the run (exit 1).

The table: wall seconds (median over repetitions, whole process: interpreter start, imports,
graph building, run), rows/s (input rows / median wall), CPU seconds (user + system of the
process tree, median), peak RSS (the largest over repetitions of the process tree's summed
RSS), the wall time relative to DuckDB's and the rows/s relative to the row-by-row Beam
pipeline's. The same figures, every single run and the machine they ran on go to a JSON file
(``--json``, default ``benchmarks/out/results.json``).

``--memory``: the streaming-shaped spec ``benchmarks/streaming.yaml`` (read -> clean ->
validate -> write) runs on a small input and on an input ``--memory-factor`` (3) times larger
than a memory cap (``--memory-cap-mb``, default 1024; a cgroup, else ``prlimit --as``), and
reports both peak RSS figures. ``--scaling``: beam-etl with one DirectRunner worker vs two
(``multi_threading`` and ``multi_processing``), and on embedded Flink with parallelism 1 vs 2
when a Flink job server is cached (``scripts/services/flink.sh``); each output is checked
against DuckDB's. The row-by-row pipeline runs ``--repeat`` times up to 2M rows, once above
(``--row-beam-repeat``): at 10M rows one run takes several minutes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from benchmarks.compare import compare_dlq, compare_results, load_dlq_ids, load_result
from benchmarks.generate import DEFAULT_SEED, ensure_data, ensure_orders, rows_for_bytes
from benchmarks.impls import IMPLEMENTATIONS
from benchmarks.measure import MemoryCap, run_measured

__all__ = ["Run", "main", "summarize", "check_targets", "cross_check", "run_implementation"]

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT_DIR = os.path.join(HERE, "out")
STREAMING_SPEC = os.path.join(HERE, "streaming.yaml")

#: Beam options for beam-etl and the row-by-row pipeline in the main table: the in-process
#: FnApiRunner. On this 2-core machine two workers (``--scaling``) cost more CPU and memory
#: than they gain (each worker process imports Beam and every stage's data crosses gRPC).
DEFAULT_BEAM_ARGS = "--direct_num_workers=1"
#: Above this many rows the slow row-by-row pipeline runs once (default of --row-beam-repeat).
SLOW_ROWS = 2_000_000
REFERENCE = "duckdb"
BASELINE = "row_beam"


@dataclass
class Run:
    """One measured run of one implementation."""

    implementation: str
    rows: int
    rep: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    max_process_rss_mb: float
    dlq_rows: int
    beam_args: str = ""


# --------------------------------------------------------------------------- running


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def run_implementation(
    implementation: str,
    orders: str,
    products: str,
    out: str,
    beam_args: Sequence[str] = (),
    *,
    spec: str | None = None,
    cap: MemoryCap | None = None,
) -> tuple[Any, dict]:
    """Run one implementation in a child process; (measurement, its stats.json).

    Args:
        implementation: a name from :data:`benchmarks.impls.IMPLEMENTATIONS`.
        orders: the orders CSV.
        products: the products CSV.
        out: its output directory (emptied first).
        beam_args: Beam options (beam_etl and row_beam only).
        spec: beam_etl only: another spec than ``benchmarks/job.yaml``.
        cap: run under this memory cap.

    Raises:
        RuntimeError: the child failed; the message has the end of its log.
    """
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cmd = [sys.executable, "-m", "benchmarks.impls", implementation, "--orders", orders, "--products", products, "--out", out]
    if spec:
        cmd += ["--spec", spec]
    if implementation in ("beam_etl", "row_beam"):
        cmd += list(beam_args)
    log = out.rstrip("/") + ".log"
    measured = run_measured(cmd, env=_env(), cwd=REPO, cap=cap, log_path=log)
    if measured.returncode != 0:
        killed = " (killed by the memory cap)" if cap is not None and cap.oom_killed() else ""
        error = RuntimeError(
            f"{implementation} exited with {measured.returncode}{killed}; log {log}:\n{measured.stderr_tail[-3000:]}"
        )
        error.measured = measured  # type: ignore[attr-defined]  (peak RSS and timeline up to the end)
        raise error
    with open(os.path.join(out, "stats.json"), encoding="utf-8") as handle:
        stats = json.load(handle)
    return measured, stats


def cross_check(outputs: dict[str, str], reference: str = REFERENCE) -> list[str]:
    """Compare every implementation's output directory with the reference's; the problems found."""
    problems: list[str] = []
    ref_table = load_result(reference, outputs[reference])
    ref_dlq = load_dlq_ids(reference, outputs[reference])
    for implementation, out in outputs.items():
        if implementation == reference:
            continue
        try:
            found = compare_results(ref_table, load_result(implementation, out))
            found += compare_dlq(ref_dlq, load_dlq_ids(implementation, out))
        except (OSError, ValueError) as exc:
            found = [f"cannot read the output: {exc}"]
        problems += [f"{implementation} vs {reference}: {problem}" for problem in found]
    return problems


# --------------------------------------------------------------------------- figures


def summarize(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (rows, implementation): medians, peak RSS, ratios to DuckDB and row Beam."""
    table: list[dict[str, Any]] = []
    for rows in sorted({run.rows for run in runs}):
        at = [run for run in runs if run.rows == rows]
        walls = {name: statistics.median(r.wall_s for r in at if r.implementation == name)
                 for name in dict.fromkeys(r.implementation for r in at)}  # fmt: skip
        for name, wall in walls.items():
            mine = [r for r in at if r.implementation == name]
            row = {
                "implementation": name,
                "rows": rows,
                "repetitions": len(mine),
                "wall_s": round(wall, 2),
                "rows_per_s": round(rows / wall),
                "cpu_s": round(statistics.median(r.cpu_s for r in mine), 2),
                "peak_rss_mb": round(max(r.peak_rss_mb for r in mine)),
                "wall_vs_duckdb": round(wall / walls[REFERENCE], 2) if REFERENCE in walls else None,
                "speed_vs_row_beam": round(walls[BASELINE] / wall, 1) if BASELINE in walls else None,
            }
            table.append(row)
    return table


def check_targets(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 6's targets for beam-etl, each with what was measured and whether it is met."""
    mine = {row["rows"]: row for row in summary if row["implementation"] == "beam_etl"}
    targets: list[dict[str, Any]] = []
    for rows, row in sorted(mine.items()):
        if row["speed_vs_row_beam"] is not None:
            targets.append({"target": f"rows/s >= 20x row-by-row Beam at {rows:,} rows",
                            "measured": f"{row['speed_vs_row_beam']}x", "met": row["speed_vs_row_beam"] >= 20})  # fmt: skip
        if row["wall_vs_duckdb"] is not None:
            targets.append({"target": f"wall <= 3x DuckDB at {rows:,} rows",
                            "measured": f"{row['wall_vs_duckdb']}x", "met": row["wall_vs_duckdb"] <= 3})  # fmt: skip
        if rows >= 10_000_000:
            targets.append({"target": f"peak RSS <= 1 GB at {rows:,} rows",
                            "measured": f"{row['peak_rss_mb']} MB", "met": row["peak_rss_mb"] <= 1024})  # fmt: skip
    if len(mine) >= 2:
        small, large = min(mine), max(mine)
        ratio = mine[large]["rows_per_s"] / mine[small]["rows_per_s"]
        targets.append({"target": f"rows/s flat from {small:,} to {large:,} rows (within 20%)",
                        "measured": f"{mine[small]['rows_per_s']:,} -> {mine[large]['rows_per_s']:,} rows/s ({ratio:.2f}x)",
                        "met": ratio >= 0.8})  # fmt: skip
    return targets


def _format_table(summary: Sequence[dict[str, Any]]) -> str:
    header = ["implementation", "rows", "runs", "wall s", "rows/s", "cpu s", "peak RSS MB", "wall / DuckDB", "speed / row Beam"]
    lines = [header]
    for row in summary:
        lines.append([
            row["implementation"], f"{row['rows']:,}", str(row["repetitions"]), f"{row['wall_s']:.2f}", f"{row['rows_per_s']:,}",
            f"{row['cpu_s']:.1f}", f"{row['peak_rss_mb']:,}",
            "" if row["wall_vs_duckdb"] is None else f"{row['wall_vs_duckdb']:.2f}x",
            "" if row["speed_vs_row_beam"] is None else f"{row['speed_vs_row_beam']:.1f}x",
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        cells = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)]
        out.append("| " + " | ".join(cells) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|")
    return "\n".join(out)


def machine() -> dict[str, Any]:
    """Where and when the figures were taken."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    memory = 0
    try:
        import psutil

        memory = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    versions = {}
    for package in ("apache-beam", "pyarrow", "duckdb", "polars", "pandas", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "when_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


# --------------------------------------------------------------------------- memory and scaling


def memory_test(cap_mb: int, factor: float, small_rows: int, beam_args: Sequence[str], seed: int, out_root: str) -> dict:
    """The streaming spec on a small input and on one ``factor`` x the cap, both under the cap."""
    large_rows = rows_for_bytes(int(cap_mb * 2**20 * factor), seed)
    data = ensure_data(small_rows, seed, formats=("csv",))
    results = []
    with MemoryCap(cap_mb) as cap:
        for rows in (small_rows, large_rows):
            print(f"memory: generating/reusing {rows:,} rows ...", flush=True)
            orders = ensure_orders(rows, seed, "csv")
            size_mb = os.path.getsize(orders) / 2**20
            print(f"memory: streaming spec over {size_mb:,.0f} MB under {cap.how} ...", flush=True)
            out = os.path.join(out_root, f"memory-{rows}")
            try:
                measured, stats = run_implementation(
                    "beam_etl", orders, data.products_csv, out, beam_args, spec=STREAMING_SPEC, cap=cap
                )
            except RuntimeError as exc:
                failed = getattr(exc, "measured", None)
                results.append({
                    "rows": rows, "input_mb": round(size_mb), "input_vs_cap": round(size_mb / cap_mb, 2), "completed": False,
                    "error": str(exc).splitlines()[0],
                    "seconds_until_end": round(failed.wall_s, 1) if failed else None,
                    "peak_rss_mb": round(failed.peak_rss_mb) if failed else None,
                    "rss_timeline_mb": failed.samples[:: max(1, len(failed.samples) // 40)] if failed else None,
                })  # fmt: skip
                continue
            results.append(
                {
                    "rows": rows,
                    "input_mb": round(size_mb),
                    "input_vs_cap": round(size_mb / cap_mb, 2),
                    "completed": True,
                    "wall_s": round(measured.wall_s, 1),
                    "rows_per_s": round(rows / measured.wall_s),
                    "peak_rss_mb": round(measured.peak_rss_mb),
                    "dlq_rows": stats["dlq_rows"],
                }
            )
            shutil.rmtree(out, ignore_errors=True)  # the large output is big
        how = cap.how
    flat = all(r["completed"] for r in results) and results[1]["peak_rss_mb"] <= 1.25 * results[0]["peak_rss_mb"]
    return {"cap_mb": cap_mb, "cap": how, "beam_args": " ".join(beam_args), "runs": results, "flat": flat}


def _flink_args(parallelism: int) -> list[str] | None:
    try:
        from beam_etl.runners import _cache

        cached = _cache.cached_flink_job_server()
    except Exception:  # the runners module is optional for the benchmark
        return None
    if cached is None:
        return None
    return ["--runner=FlinkRunner", "--flink_master=[local]", f"--parallelism={parallelism}"]


def scaling_test(rows: int, seed: int, out_root: str, repeat: int) -> dict:
    """beam-etl rows/s with 1 vs 2 DirectRunner workers, on Prism (when scripts/services/prism.sh
    built it), and on embedded Flink with parallelism 1 vs 2.

    Every configuration's output is checked against DuckDB's before its time counts.
    """
    data = ensure_data(rows, seed, formats=("csv",))
    configs = [
        ("direct, 1 worker (in-process)", ["--direct_num_workers=1"]),
        ("direct, 2 workers (multi_threading)", ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]),
        ("direct, 2 workers (multi_processing)", ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]),
    ]
    from beam_etl.runners._cache import prism_binary

    if prism_binary() is not None:  # Beam's portable local runner, as the DirectRunner picks it
        configs.append(("prism (portable local runner)", ["--runner=PrismRunner"]))
    flink_note = None
    for parallelism in (1, 2):
        args = _flink_args(parallelism)
        if args is None:
            flink_note = "no Flink job server cached (run scripts/services/flink.sh): Flink not measured"
            break
        configs.append((f"flink embedded, parallelism {parallelism}", args))
    reference = os.path.join(out_root, "scaling-duckdb")
    run_implementation(REFERENCE, data.orders_csv, data.products_csv, reference)
    results = []
    for label, args in configs:
        walls, peaks = [], []
        for rep in range(repeat):
            print(f"scaling: {label} ({rep + 1}/{repeat}) ...", flush=True)
            out = os.path.join(out_root, f"scaling-{len(results)}")
            try:
                measured, _ = run_implementation("beam_etl", data.orders_csv, data.products_csv, out, args)
            except RuntimeError as exc:
                results.append({"config": label, "args": " ".join(args), "error": str(exc)[-800:]})
                break
            if rep == 0:
                problems = cross_check({REFERENCE: reference, "beam_etl": out})
                if problems:
                    results.append({"config": label, "args": " ".join(args), "error": "; ".join(problems)})
                    break
            walls.append(measured.wall_s)
            peaks.append(measured.peak_rss_mb)
        else:
            wall = statistics.median(walls)
            results.append({"config": label, "args": " ".join(args), "rows": rows, "wall_s": round(wall, 2),
                            "rows_per_s": round(rows / wall), "peak_rss_mb": round(max(peaks))})  # fmt: skip
    return {"rows": rows, "results": results, "note": flink_note}


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000], help="input sizes")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per implementation (median reported)")
    parser.add_argument("--row-beam-repeat", type=int, default=None,
                        help=f"repetitions of the slow row-by-row Beam pipeline (default: --repeat up to "
                             f"{SLOW_ROWS:,} rows, 1 above)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="200k rows, 1 repetition")
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--beam-args", default=DEFAULT_BEAM_ARGS, help="Beam options for beam_etl and row_beam")
    parser.add_argument("--row-beam-args", default=None, help="Beam options for row_beam (default: --beam-args)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--memory", action="store_true", help="run the memory-cap test")
    parser.add_argument("--memory-cap-mb", type=int, default=1024)
    parser.add_argument("--memory-factor", type=float, default=3.0, help="large input size / memory cap")
    parser.add_argument("--memory-small-rows", type=int, default=1_000_000)
    parser.add_argument("--scaling", action="store_true", help="run the 1-vs-2 worker (and Flink) comparison")
    parser.add_argument("--scaling-rows", type=int, default=1_000_000)
    parser.add_argument("--no-main", action="store_true", help="skip the main table (only --memory/--scaling)")
    parser.add_argument("--json", default=os.path.join(OUT_DIR, "results.json"), help="where the JSON goes")
    parser.add_argument("--out-dir", default=OUT_DIR, help="outputs of the runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.rows, args.repeat = [200_000], 1
    if REFERENCE not in args.impls:
        args.impls = [REFERENCE, *args.impls]  # outputs are checked against it
    beam_args = shlex.split(args.beam_args)
    row_beam_args = shlex.split(args.row_beam_args) if args.row_beam_args is not None else beam_args
    os.makedirs(args.out_dir, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "command": "python -m benchmarks.run " + shlex.join(argv or sys.argv[1:])}
    report["json_path"] = os.path.abspath(args.json)
    report["beam_args"] = {"beam_etl": args.beam_args, "row_beam": " ".join(row_beam_args)}
    runs: list[Run] = []

    def save() -> None:
        report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        report["runs"] = [asdict(run) for run in runs]
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)

    for rows in [] if args.no_main else args.rows:
        print(f"data: {rows:,} rows ...", flush=True)
        data = ensure_data(rows, args.seed, formats=("csv",))
        row_beam_repeat = args.row_beam_repeat or (args.repeat if rows <= SLOW_ROWS else 1)
        for rep in range(args.repeat):
            outputs: dict[str, str] = {}
            for name in args.impls:
                if name == BASELINE and rep >= row_beam_repeat:
                    continue
                print(f"run: {name}, {rows:,} rows, repetition {rep + 1}/{args.repeat} ...", flush=True)
                out = os.path.join(args.out_dir, f"{name}-{rows}")
                extra = row_beam_args if name == BASELINE else beam_args
                try:
                    measured, stats = run_implementation(name, data.orders_csv, data.products_csv, out, extra)
                except RuntimeError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
                outputs[name] = out
                runs.append(Run(name, rows, rep + 1, round(measured.wall_s, 3), round(measured.cpu_s, 3),
                                round(measured.peak_rss_mb, 1), round(measured.max_process_rss_mb, 1),
                                int(stats["dlq_rows"]), " ".join(extra) if name in ("beam_etl", BASELINE) else ""))  # fmt: skip
            if rep == 0:
                problems = cross_check(outputs)
                if problems:
                    print("error: the implementations disagree; no figures are shown:", file=sys.stderr)
                    for problem in problems:
                        print(f"  {problem}", file=sys.stderr)
                    return 1
                print(f"check: {len(outputs)} implementations agree at {rows:,} rows "
                      f"(same output rows, floats within 1e-9, same {runs[-1].dlq_rows:,} DLQ rows)", flush=True)  # fmt: skip
            save()

    if runs:
        report["summary"] = summarize(runs)
        report["targets"] = check_targets(report["summary"])
    if args.memory:
        report["memory"] = memory_test(args.memory_cap_mb, args.memory_factor, args.memory_small_rows, beam_args, args.seed, args.out_dir)
        save()
    if args.scaling:
        report["scaling"] = scaling_test(args.scaling_rows, args.seed, args.out_dir, args.repeat)
        save()
    save()
    _print_report(report)
    return 0


def _print_report(report: dict[str, Any]) -> None:
    info = report["machine"]
    print()
    print(f"{info['when_utc']} · {info['cpu']} · {info['cores']} cores · {info['memory_gb']} GB · Python {info['python']} · "
          f"load {info['load_average_at_start']} -> {info.get('load_average_at_end')}")  # fmt: skip
    if report.get("summary"):
        print(f"beam-etl/row Beam options: {report['beam_args']['beam_etl']} / {report['beam_args']['row_beam']}")
        print(_format_table(report["summary"]))
        print()
        for target in report["targets"]:
            print(f"  [{'met' if target['met'] else 'MISSED'}] {target['target']}: {target['measured']}")
    if "memory" in report:
        memory = report["memory"]
        print(f"\nmemory (streaming spec, {memory['cap']}):")
        for run in memory["runs"]:
            if run["completed"]:
                print(f"  {run['rows']:,} rows ({run['input_mb']:,} MB): {run['wall_s']} s, {run['rows_per_s']:,} rows/s, "
                      f"peak RSS {run['peak_rss_mb']} MB")  # fmt: skip
            else:
                print(f"  {run['rows']:,} rows ({run['input_mb']:,} MB): FAILED after {run['seconds_until_end']} s, "
                      f"peak RSS {run['peak_rss_mb']} MB: {run['error']}")  # fmt: skip
        print(f"  [{'met' if memory['flat'] else 'MISSED'}] completes with flat peak RSS")
    if "scaling" in report:
        scaling = report["scaling"]
        print(f"\nscaling (beam-etl, {scaling['rows']:,} rows):")
        for result in scaling["results"]:
            if "error" in result:
                print(f"  {result['config']}: FAILED {result['error'][-300:]}")
            else:
                print(f"  {result['config']}: {result['wall_s']} s, {result['rows_per_s']:,} rows/s, peak RSS {result['peak_rss_mb']} MB")
        if scaling.get("note"):
            print(f"  {scaling['note']}")
    print(f"\nJSON: {report['json_path']}")


if __name__ == "__main__":
    sys.exit(main())
