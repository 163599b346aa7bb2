"""The demo job gives the same rows and DLQ rows on every runner, through the real CLI.

The baseline is the DirectRunner's in-process FnApiRunner (``--direct_num_workers=1`` keeps
Prism out). Compared against it: the DirectRunner as users get it (it picks Prism when
``scripts/services/prism.sh`` built it), the PrismRunner, embedded Flink, and the Flink
cluster. Needs ``bash scripts/services/all.sh`` (flink, prism); a missing service fails.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
import pytest

from beam_etl.runners import _cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Columns that differ by run, not by runner.
VOLATILE = ("failed_at", "job_id")


def run_demo(output: Path, *beam_args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "beam_etl", *beam_args, "--output", str(output), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"demo failed on {beam_args}: {done.stderr[-3000:]}"
    return done


def _read(folder: Path) -> Any:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))
    assert files, f"no output files in {folder}"
    readers = {".parquet": pq.read_table, ".csv": pcsv.read_csv, ".ndjson": pjson.read_json, ".json": pjson.read_json}
    tables = [readers[p.suffix](p) for p in files if p.suffix in readers]
    assert tables, f"no readable output in {folder}: {[p.name for p in files]}"
    import pyarrow as pa

    return pa.concat_tables(tables, promote_options="default")


def outputs(output: Path) -> dict[str, list[str]]:
    """Sink folder -> its rows as sorted canonical JSON, without run-specific columns."""
    result: dict[str, list[str]] = {}
    for folder in sorted(p for p in output.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        table = _read(folder)
        table = table.drop_columns([name for name in VOLATILE if name in table.column_names])
        result[folder.name] = sorted(json.dumps(_rounded(row), sort_keys=True, default=str) for row in table.to_pylist())
    return result


def _rounded(row: dict) -> dict:
    """Floats to 12 significant digits: sums differ in the last bits when runners add the
    same values in another order (a relative difference below 1e-12)."""
    return {key: float(f"{value:.12g}") if isinstance(value, float) else value for key, value in row.items()}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    output = tmp_path_factory.mktemp("fnapi")
    run_demo(output, "--runner=DirectRunner", "--direct_num_workers=1")
    found = outputs(output)
    summary = json.loads((output / "run_summary.json").read_text())
    assert summary["balanced"] and summary["dlq_rows"] > 0, "the demo exercises the DLQ"
    assert {"customers", "dlq"} <= set(found), found.keys()
    return found


def _flink_master() -> str:
    master = os.environ.get("BEAM_ETL_TEST_FLINK_MASTER")
    if not master:
        pytest.fail("BEAM_ETL_TEST_FLINK_MASTER is not set: run `bash scripts/services/flink.sh` and source .services.env")
    return master


RUNNERS = {
    "direct-default": lambda: ["--runner=DirectRunner"],
    "prism": lambda: ["--runner=PrismRunner"],
    "flink-embedded": lambda: ["--runner=FlinkRunner"],
    "flink-cluster": lambda: ["--runner=FlinkRunner", f"--flink_master={_flink_master()}", "--parallelism=2"],
}


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_demo_rows_and_dlq_rows_match_the_direct_runner(runner: str, baseline: dict[str, list[str]], tmp_path: Path) -> None:
    if runner in ("prism", "direct-default") and _cache.prism_binary() is None:
        pytest.fail("Prism is not built: run `bash scripts/services/prism.sh`")
    if runner.startswith("flink") and _cache.cached_flink_job_server() is None:
        pytest.fail("no Flink job server cached: run `bash scripts/services/flink.sh`")
    run_demo(tmp_path, *RUNNERS[runner]())
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["balanced"], summary
    assert outputs(tmp_path) == baseline


def test_demo_graph_carries_batches_with_arrow_batch_coder(tmp_path: Path) -> None:
    """What any runner receives: the demo's PCollections of batches are ArrowBatchCoder-encoded."""
    import apache_beam as beam
    from importlib import resources

    from beam_etl.graph import build_graph
    from beam_etl.runners.smoke import arrow_coder_pcollections
    from beam_etl.spec import load_spec

    spec_path = resources.files("beam_etl.data") / "demo.yaml"
    spec = load_spec(str(spec_path))
    pipeline = beam.Pipeline()
    build_graph(pipeline, spec, job_id="coder-check", output_dir=str(tmp_path))
    proto = pipeline.to_runner_api()
    arrow = arrow_coder_pcollections(proto)
    total = len(proto.components.pcollections)
    assert len(arrow) >= 5, f"only {len(arrow)} of {total} PCollections carry ArrowBatchCoder: {sorted(arrow.values())}"
    for step in ("clean", "valid", "typed", "enriched", "kept"):
        assert any(step in name for name in arrow.values()), f"step {step}'s output is not ArrowBatchCoder-encoded"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--runner=FlinkRuner"], "did you mean FlinkRunner?"),
        (["--runner=FlinkRunner", f"--flink_master=localhost:{_closed_port()}"], "does not answer"),
        (["--runner=DataflowRunner", "--project=beam-etl-test"], "DataflowRunner needs --region"),
    ],
)
def test_cli_prints_runner_errors_in_one_line_and_exits_2(args: list[str], expected: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "beam_etl", *args, "--output", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and expected in lines[0], done.stderr


PARITY_SPEC = Path(__file__).parent / "data" / "parity.yaml"


def run_parity_spec(output: Path, *beam_args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "beam_etl", "run", str(PARITY_SPEC), *beam_args, "--output", str(output), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"parity spec failed on {beam_args}: {done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def join_baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    output = tmp_path_factory.mktemp("fnapi_join")
    run_parity_spec(output, "--runner=DirectRunner", "--direct_num_workers=1")
    found = outputs(output)
    summary = json.loads((output / "run_summary.json").read_text())
    assert summary["balanced"] and summary["dlq_rows"] == 3, summary
    assert {"by_country", "ranked", "dlq"} <= set(found), found.keys()
    assert len(found["ranked"]) == 117 and len(found["by_country"]) == 5
    return found


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_join_aggregate_window_and_dlq_match_on_every_runner(runner: str, join_baseline: dict[str, list[str]], tmp_path: Path) -> None:
    """The issue's second parity job: validate (3 DLQ rows) -> left join -> aggregate and window."""
    if runner in ("prism", "direct-default") and _cache.prism_binary() is None:
        pytest.fail("Prism is not built: run `bash scripts/services/prism.sh`")
    if runner.startswith("flink") and _cache.cached_flink_job_server() is None:
        pytest.fail("no Flink job server cached: run `bash scripts/services/flink.sh`")
    run_parity_spec(tmp_path, *RUNNERS[runner]())
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["balanced"], summary
    assert outputs(tmp_path) == join_baseline


def test_the_cached_prism_is_built_with_the_counter_patch() -> None:
    """The Prism the DirectRunner picks keeps every bundle's counts (scripts/services/prism/).

    prism.sh stamps the binary with the hash of the patch and its Go test (which it ran before
    building); a released Prism 2.77 can drop one of two bundles' counts and unbalance a run.
    """
    import hashlib

    binary = _cache.prism_binary()
    if binary is None:
        pytest.fail("Prism is not built: run `bash scripts/services/prism.sh`")
    patch_dir = Path(__file__).resolve().parents[2] / "scripts" / "services" / "prism"
    sources = sorted(patch_dir.glob("*.patch")) + sorted(patch_dir.glob("*_test.go"))
    want = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()
    stamp = binary.parent / "patches.sha256"
    assert stamp.is_file() and stamp.read_text().strip() == want, "stale Prism: rerun `bash scripts/services/prism.sh`"
