"""DataflowRunner dry runs: the job is built offline, nothing reaches Google Cloud.

``--dry_run=True`` makes Beam build the Dataflow job (staging, proto, options) and stop
before submitting it. Without it, or with a temp location Beam finds invalid, staging to
``gs://`` retries credentials for minutes (DESIGN §9). These tests refuse every connection
to a non-loopback host and assert that none was attempted.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beam_etl.runners import prepare_pipeline_args
from beam_etl.runners._argv import get_option
from beam_etl.runners.dataflow import package_setup_file
from beam_etl.runners.smoke import arrow_coder_pcollections, build_smoke_pipeline

pytestmark = pytest.mark.integration

DRY_RUN = [
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--project=beam-etl-test",
    "--region=us-central1",
    "--temp_location=gs://beam-etl-test/tmp",
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_remote_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse name lookups of any host but loopback; return the hosts something tried."""
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in ("localhost", "127.0.0.1", "::1", "", "None") and not name.startswith("127."):
            attempts.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"remote host {name} refused by the test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return attempts


def test_dry_run_builds_the_job_offline_with_arrow_coder_and_setup_file(tmp_path: Path, no_remote_network: list[str]) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

    argv = prepare_pipeline_args(DRY_RUN)
    assert get_option(argv, "setup_file") == str(package_setup_file())
    pipeline = beam.Pipeline(options=PipelineOptions(argv))
    build_smoke_pipeline(pipeline, "gs://beam-etl-test/out/smoke")
    started = time.monotonic()
    result = pipeline.run()
    result.wait_until_finish()
    assert time.monotonic() - started < 120, "a dry run builds the job in seconds"
    assert no_remote_network == [], f"the dry run tried to reach {sorted(set(no_remote_network))}"

    job = result.job
    assert job.options.view_as(SetupOptions).setup_file == str(package_setup_file())
    # The staged package is part of the worker environment: beam_etl ships to the workers.
    staged = {
        dep.role_payload
        for env in job.proto_pipeline.components.environments.values()
        for dep in env.dependencies
    }
    assert any(b"workflow.tar.gz" in payload for payload in staged), staged
    # Batches are declared pa.RecordBatch, so their PCollections carry ArrowBatchCoder.
    arrow = arrow_coder_pcollections(job.proto_pipeline)
    names = " ".join(arrow.values())
    for label in ("MakeBatches", "Double", "Key", "Group"):
        assert label in names, f"{label}'s output is not ArrowBatchCoder-encoded: {arrow}"


def _offline_prefix() -> list[str]:
    """``unshare -n`` (a private network namespace: no route anywhere) where we may use it."""
    if shutil.which("unshare") and os.geteuid() == 0:
        if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
            return ["unshare", "-n"]
    return []


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, cut off from every network where the machine allows it."""
    return subprocess.run(
        [*_offline_prefix(), sys.executable, "-m", "beam_etl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_refuses_a_bucket_beam_would_hang_on(tmp_path: Path) -> None:
    """gs://b is not a valid bucket: Beam would try to create a default bucket and hang offline."""
    started = time.monotonic()
    done = _cli(
        "--runner=DataflowRunner", "--dry_run=True", "--project=beam-etl-test", "--region=us-central1",
        "--temp_location=gs://b/tmp", "--output", str(tmp_path / "out"), cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'b' is not a valid bucket name" in lines[0]
    assert time.monotonic() - started < 60


def test_cli_demo_dry_run_on_dataflow(tmp_path: Path) -> None:
    done = _cli(*DRY_RUN, "--output", str(tmp_path / "out"), "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DataflowRunner" in done.stdout
