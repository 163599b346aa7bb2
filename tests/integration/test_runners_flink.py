"""FlinkRunner against the real job server (embedded Flink) and the standalone cluster.

Needs ``bash scripts/services/flink.sh`` (job-server jar + cluster on localhost:8081; its env
lines are in .services.env). Missing services fail these tests, they never skip.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import duckdb
import pytest

from beam_etl.runners import _cache, prepare_pipeline_args
from beam_etl.runners._argv import get_option
from beam_etl.runners.smoke import SMOKE_ELEMENTS, build_smoke_pipeline, read_smoke_output

pytestmark = pytest.mark.integration


def oracle_sums() -> dict[str, int]:
    """The smoke pipeline's answer from DuckDB: batch ``seed`` holds rows (seed % 2, seed + i), i < 3."""
    rows = duckdb.sql(
        f"SELECT CAST(seed % 2 AS VARCHAR) AS k, SUM(2 * (seed + i)) AS s "
        f"FROM range({SMOKE_ELEMENTS}) t(seed), range(3) u(i) GROUP BY 1"
    ).fetchall()
    return {k: int(s) for k, s in rows}


def run_smoke(tmp_path: Path, args: list[str]) -> tuple[dict[str, int], list[str]]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineState

    argv = prepare_pipeline_args(args)
    prefix = str(tmp_path / "out")
    pipeline = beam.Pipeline(options=PipelineOptions(argv))
    build_smoke_pipeline(pipeline, prefix)
    result = pipeline.run()
    result.wait_until_finish()
    assert result.state == PipelineState.DONE
    return read_smoke_output(prefix), argv


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def job_server_jar() -> Path:
    cached = _cache.cached_flink_job_server()
    jar = os.environ.get("BEAM_ETL_FLINK_JOB_SERVER_JAR") or (str(cached.jar) if cached else "")
    if not jar or not Path(jar).is_file():
        pytest.fail("no Flink job-server jar: run `bash scripts/services/flink.sh` (or `make services`)")
    return Path(jar)


@pytest.fixture(scope="module")
def flink_master() -> str:
    master = os.environ.get("BEAM_ETL_TEST_FLINK_MASTER")
    if not master:
        pytest.fail("BEAM_ETL_TEST_FLINK_MASTER is not set: run `bash scripts/services/flink.sh` and source .services.env")
    try:
        managers = _get_json(f"http://{master}/taskmanagers")["taskmanagers"]
    except OSError as exc:
        pytest.fail(f"Flink at {master} does not answer ({exc}): run `bash scripts/services/flink.sh`")
    assert managers and sum(tm["slotsNumber"] for tm in managers) >= 2, "the test cluster has one TaskManager with 2 slots"
    return master


def test_embedded_flink_runs_arrow_batches_with_the_cached_jar(tmp_path: Path, job_server_jar: Path) -> None:
    sums, argv = run_smoke(tmp_path, ["--runner=FlinkRunner"])
    assert get_option(argv, "flink_job_server_jar") == str(job_server_jar)
    assert get_option(argv, "flink_master") == "[local]" and get_option(argv, "environment_type") == "LOOPBACK"
    assert sums == oracle_sums()


def test_flink_cluster_runs_arrow_batches_with_parallelism_2(tmp_path: Path, job_server_jar: Path, flink_master: str) -> None:
    before = {job["jid"] for job in _get_json(f"http://{flink_master}/jobs/overview")["jobs"]}
    sums, _ = run_smoke(tmp_path, ["--runner=FlinkRunner", f"--flink_master={flink_master}", "--parallelism=2"])
    assert sums == oracle_sums()
    jobs = [job for job in _get_json(f"http://{flink_master}/jobs/overview")["jobs"] if job["jid"] not in before]
    assert len(jobs) == 1, "the job ran on the cluster, not on an embedded Flink"
    assert jobs[0]["state"] == "FINISHED"
    vertices = _get_json(f"http://{flink_master}/jobs/{jobs[0]['jid']}")["vertices"]
    assert max(vertex["parallelism"] for vertex in vertices) == 2


def test_beams_own_jar_lookup_finds_the_cached_job_server_offline(tmp_path: Path, job_server_jar: Path) -> None:
    """Plain Beam options, no --flink_job_server_jar: Beam finds flink.sh's link in its jar cache."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    link = _cache.beam_jar_cache() / f"beam-runners-flink-1.19-job-server-{_cache.beam_version()}.jar"
    assert link.resolve() == job_server_jar.resolve()
    prefix = str(tmp_path / "out")
    options = PipelineOptions(["--runner=FlinkRunner", "--flink_version=1.19", "--flink_master=[local]", "--environment_type=LOOPBACK"])
    with beam.Pipeline(options=options) as pipeline:
        build_smoke_pipeline(pipeline, prefix)
    assert read_smoke_output(prefix) == oracle_sums()
