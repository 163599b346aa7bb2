"""prepare_pipeline_args: runner names, per-runner defaults, and checks before anything is staged.

No external services: the runner caches live in a temporary ``BEAM_ETL_CACHE``/``HOME``, the
Flink master is a real loopback HTTP server (or a closed port), and the Maven/GitHub
reachability probe is replaced where a test needs "offline" or "not served".
"""

from __future__ import annotations

import json
import socket
import stat
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from beam_etl.errors import RunnerError
from beam_etl.runners import RUNNERS, _cache, canonical_runner, prepare_pipeline_args
from beam_etl.runners._argv import get_option, remove_option, set_default
from beam_etl.runners.dataflow import package_setup_file

BEAM = _cache.beam_version()
DATAFLOW_OK = [
    "--runner=DataflowRunner",
    "--project=beam-etl-test",
    "--region=us-central1",
    "--temp_location=gs://beam-etl-test/tmp",
]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty runner caches and no service env vars; the network probe says "offline"."""
    monkeypatch.setenv("BEAM_ETL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("BEAM_ETL_FLINK_JOB_SERVER_JAR", "BEAM_ETL_FLINK_VERSION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_cache, "url_status", lambda url, timeout=3.0: None)
    return tmp_path


def fake_prism(cache: Path) -> Path:
    binary = cache / "prism" / f"v{BEAM}" / "prism"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def fake_flink_cache(cache: Path, flink_version: str = "1.19") -> Path:
    jar = cache / "flink" / f"beam-runners-flink-{flink_version}-job-server-2.62.0.jar"
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b"PK")
    (cache / "flink" / "job-server.env").write_text(
        f"BEAM_ETL_FLINK_VERSION={flink_version}\nBEAM_ETL_FLINK_JOB_SERVER_JAR={jar}\n"
        "BEAM_ETL_FLINK_JOB_SERVER_BEAM_VERSION=2.62.0\n"
    )
    return jar


def error_of(argv: list[str]) -> str:
    with pytest.raises(RunnerError) as info:
        prepare_pipeline_args(argv)
    message = str(info.value)
    assert "\n" not in message, "RunnerError messages are one line (the CLI prints them as they are)"
    return message


# --- runner names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("DirectRunner", "DirectRunner"),
        ("direct", "DirectRunner"),
        ("Flink", "FlinkRunner"),
        ("flinkrunner", "FlinkRunner"),
        ("DATAFLOW", "DataflowRunner"),
        ("PrismRunner", "PrismRunner"),
        ("SparkRunner", "SparkRunner"),
        ("my.module.CustomRunner", "my.module.CustomRunner"),
    ],
)
def test_runner_names_accept_what_beam_accepts(given: str, expected: str) -> None:
    assert canonical_runner(given) == expected


@pytest.mark.parametrize(
    "given, suggestion",
    [("FlinkRuner", "FlinkRunner"), ("DirectRuner", "DirectRunner"), ("Dataflwo", "DataflowRunner"), ("prsim", "PrismRunner")],
)
def test_unknown_runner_suggests_the_closest_and_lists_all(given: str, suggestion: str) -> None:
    message = error_of([f"--runner={given}"])
    assert f"unknown runner '{given}'" in message
    assert f"did you mean {suggestion}?" in message
    for name in RUNNERS:
        assert name in message


def test_unknown_runner_without_a_close_match_still_lists_the_runners() -> None:
    message = error_of(["--runner=Hadoop"])
    assert "did you mean" not in message and "DirectRunner, PrismRunner, FlinkRunner" in message


def test_runner_is_rewritten_in_beams_spelling_and_other_options_pass_through() -> None:
    argv = ["--job_name=x", "--runner", "direct", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    assert prepare_pipeline_args(argv) == [
        "--runner=DirectRunner",
        "--job_name=x",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    ]


def test_the_last_runner_wins_as_in_beam() -> None:
    out = prepare_pipeline_args(["--runner=FlinkRunner", "--runner=DirectRunner"])
    assert get_option(out, "runner") == "DirectRunner"
    assert out.count("--runner=DirectRunner") == 1 and not any("FlinkRunner" in arg for arg in out)


# --- DirectRunner --------------------------------------------------------------------------


def test_direct_passes_worker_options_and_streaming_through_unchanged() -> None:
    argv = ["--runner=DirectRunner", "--direct_num_workers=0", "--direct_running_mode=multi_threading", "--streaming"]
    assert prepare_pipeline_args(argv) == argv


@pytest.mark.parametrize(
    "option, expected",
    [
        ("--direct_running_mode=multiprocessing", "did you mean multi_processing?"),
        ("--direct_running_mode=threads", "use one of in_memory, multi_threading, multi_processing"),
        ("--direct_num_workers=two", "--direct_num_workers=two is not a worker count"),
        ("--direct_num_workers=-1", "use a whole number"),
        ("--streaming=True", "--streaming takes no value"),
    ],
)
def test_direct_rejects_values_beam_would_reject(option: str, expected: str) -> None:
    assert expected in error_of(["--runner=DirectRunner", option])


def test_direct_offers_the_cached_prism_binary(isolated: Path) -> None:
    binary = fake_prism(isolated / "cache")
    assert get_option(prepare_pipeline_args(["--runner=DirectRunner"]), "prism_location") == str(binary)
    # without --runner at all (Beam's default runner) too
    assert get_option(prepare_pipeline_args([]), "prism_location") == str(binary)


def test_direct_does_not_offer_prism_when_fnapi_runner_options_are_given(isolated: Path) -> None:
    fake_prism(isolated / "cache")
    out = prepare_pipeline_args(["--runner=DirectRunner", "--direct_num_workers=2"])
    assert get_option(out, "prism_location") is None


def test_direct_without_prism_adds_nothing() -> None:
    assert prepare_pipeline_args(["--runner=DirectRunner"]) == ["--runner=DirectRunner"]


# --- PrismRunner ---------------------------------------------------------------------------


def test_prism_uses_the_cached_binary(isolated: Path) -> None:
    binary = fake_prism(isolated / "cache")
    assert prepare_pipeline_args(["--runner=PrismRunner"]) == ["--runner=PrismRunner", f"--prism_location={binary}"]


def test_prism_keeps_a_given_location(isolated: Path) -> None:
    fake_prism(isolated / "cache")
    own = isolated / "my-prism"
    own.write_text("")
    out = prepare_pipeline_args(["--runner=PrismRunner", f"--prism_location={own}"])
    assert get_option(out, "prism_location") == str(own)


def test_prism_offline_without_binary_says_to_build_it() -> None:
    message = error_of(["--runner=PrismRunner"])
    assert "bash scripts/services/prism.sh" in message and "--prism_location" in message


def test_prism_missing_given_location() -> None:
    assert "--prism_location=/nope/prism does not exist" in error_of(["--runner=PrismRunner", "--prism_location=/nope/prism"])


# --- FlinkRunner ---------------------------------------------------------------------------


def test_flink_defaults_to_embedded_loopback_with_the_cached_jar(isolated: Path) -> None:
    jar = fake_flink_cache(isolated / "cache")
    out = prepare_pipeline_args(["--runner=FlinkRunner"])
    assert get_option(out, "flink_master") == "[local]"
    assert get_option(out, "environment_type") == "LOOPBACK"
    assert get_option(out, "flink_version") == "1.19"
    assert get_option(out, "flink_job_server_jar") == str(jar)


def test_flink_keeps_explicit_choices(isolated: Path) -> None:
    fake_flink_cache(isolated / "cache")
    own = isolated / "own.jar"
    own.write_bytes(b"PK")
    out = prepare_pipeline_args(
        ["--runner=FlinkRunner", "--flink_master=[auto]", "--environment_type=PROCESS", f"--flink_job_server_jar={own}"]
    )
    assert get_option(out, "flink_master") == "[auto]"
    assert get_option(out, "environment_type") == "PROCESS"
    assert get_option(out, "flink_job_server_jar") == str(own)


def test_flink_env_var_jar_wins_over_the_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_flink_cache(isolated / "cache")
    other = isolated / "other.jar"
    other.write_bytes(b"PK")
    monkeypatch.setenv("BEAM_ETL_FLINK_JOB_SERVER_JAR", str(other))
    assert get_option(prepare_pipeline_args(["--runner=FlinkRunner"]), "flink_job_server_jar") == str(other)


def test_flink_offline_without_jar_says_to_run_the_script() -> None:
    message = error_of(["--runner=FlinkRunner"])
    assert "Maven Central is not reachable" in message
    assert "bash scripts/services/flink.sh" in message and "--flink_job_server_jar" in message


def test_flink_jar_not_served_names_the_artifact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cache, "url_status", lambda url, timeout=3.0: 404)
    message = error_of(["--runner=FlinkRunner", "--flink_version=1.20"])
    assert f"does not serve beam-runners-flink-1.20-job-server:{BEAM}" in message


def test_flink_uses_beams_own_jar_cache_or_download_when_available(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = isolated / "home" / ".apache_beam" / "cache" / "jars" / f"beam-runners-flink-2.0-job-server-{BEAM}.jar"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK")
    out = prepare_pipeline_args(["--runner=FlinkRunner", "--flink_version=2.0"])
    assert get_option(out, "flink_job_server_jar") is None  # Beam finds it itself
    monkeypatch.setattr(_cache, "url_status", lambda url, timeout=3.0: 200)
    assert get_option(prepare_pipeline_args(["--runner=FlinkRunner", "--flink_version=2.1"]), "flink_job_server_jar") is None


def test_flink_cached_jar_for_another_version_is_not_used(isolated: Path) -> None:
    fake_flink_cache(isolated / "cache", "1.19")
    message = error_of(["--runner=FlinkRunner", "--flink_version=2.2"])
    assert "the cached job server is for Flink 1.19" in message and "drop --flink_version" in message


def test_flink_missing_given_jar() -> None:
    message = error_of(["--runner=FlinkRunner", "--flink_job_server_jar=/nope/js.jar"])
    assert "--flink_job_server_jar=/nope/js.jar does not exist" in message and "flink.sh" in message


def test_flink_unknown_version_suggests_one() -> None:
    message = error_of(["--runner=FlinkRunner", "--flink_version=1.18"])
    assert "did you mean 1.19?" in message and "1.19, 1.20, 2.0, 2.1, 2.2" in message


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_flink_master_that_does_not_answer(isolated: Path) -> None:
    fake_flink_cache(isolated / "cache")
    port = _closed_port()
    message = error_of(["--runner=FlinkRunner", f"--flink_master=localhost:{port}"])
    assert f"--flink_master=localhost:{port} does not answer" in message
    assert "flink.sh" in message and "--flink_master=[local]" in message


class _FakeFlinkRest(BaseHTTPRequestHandler):
    version = "1.19.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/config":
            self.send_error(404)
            return
        body = json.dumps({"flink-version": self.version, "refresh-interval": 3000}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flink_rest():
    """A loopback HTTP server answering GET /config like a Flink JobManager."""
    servers = []

    def start(version: str = "1.19.0") -> str:
        handler = type("Handler", (_FakeFlinkRest,), {"version": version})
        server = HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"localhost:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_flink_cluster_on_loopback_gets_loopback_environment(isolated: Path, flink_rest) -> None:
    fake_flink_cache(isolated / "cache")
    master = flink_rest("1.19.0")
    out = prepare_pipeline_args(["--runner=FlinkRunner", f"--flink_master={master}", "--parallelism=2"])
    assert get_option(out, "flink_master") == master
    assert get_option(out, "environment_type") == "LOOPBACK"
    assert get_option(out, "parallelism") == "2"


def test_flink_cluster_of_another_version_is_refused(isolated: Path, flink_rest) -> None:
    fake_flink_cache(isolated / "cache")
    master = flink_rest("1.20.1")
    message = error_of(["--runner=FlinkRunner", f"--flink_master={master}"])
    assert "runs Flink 1.20.1" in message and "--flink_version=1.20" in message


def test_flink_master_that_is_not_flink(isolated: Path, flink_rest) -> None:
    fake_flink_cache(isolated / "cache")
    master = flink_rest()
    message = error_of(["--runner=FlinkRunner", f"--flink_master=http://{master}/not-flink"])
    assert "answered HTTP 404, not a Flink REST endpoint" in message


# --- DataflowRunner ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "drop, expected",
    [
        ("--project=", "DataflowRunner needs --project"),
        ("--region=", "DataflowRunner needs --region"),
        ("--temp_location=", "DataflowRunner needs --temp_location"),
    ],
)
def test_dataflow_names_each_missing_required_option(drop: str, expected: str) -> None:
    argv = [arg for arg in DATAFLOW_OK if not arg.startswith(drop)]
    message = error_of(argv)
    assert message.startswith(expected) and f"add {drop}" in message


@pytest.mark.parametrize(
    "option, expected",
    [
        ("--temp_location=/tmp/beam", "is not a Cloud Storage path"),
        ("--temp_location=s3://bucket/tmp", "use --temp_location=gs://BUCKET/tmp"),
        # Beam itself would find this bucket name invalid and try to create a default bucket,
        # retrying credentials for minutes offline: refused here at once.
        ("--temp_location=gs://b/tmp", "'b' is not a valid bucket name"),
        ("--staging_location=/local/dir", "--staging_location=/local/dir is not a Cloud Storage path"),
        ("--project=123456789", "is a project number"),
        ("--project=My_Project", "is not a project ID"),
        ("--project=p", "is not a project ID"),
        ("--job_name=My Job", "e.g. --job_name=my-job"),
        ("--dry_run=maybe", "--dry_run=maybe is not a boolean"),
        ("--setup_file=/nope/setup.py", "--setup_file=/nope/setup.py does not exist"),
    ],
)
def test_dataflow_rejects_bad_options_before_staging(option: str, expected: str) -> None:
    name = option.split("=", 1)[0]
    argv = [arg for arg in DATAFLOW_OK if not arg.startswith(name + "=")] + [option]
    assert expected in error_of(argv)


def test_dataflow_defaults_ship_beam_etl_and_use_the_sdk_in_the_container() -> None:
    out = prepare_pipeline_args(DATAFLOW_OK + ["--dry_run=True"])
    setup = get_option(out, "setup_file")
    assert setup is not None and Path(setup) == package_setup_file()
    assert 'name="beam-etl"' in Path(setup).read_text(encoding="utf-8")
    assert get_option(out, "sdk_location") == "container"
    assert get_option(out, "dry_run") == "True"


@pytest.mark.parametrize("value, kept", [("True", True), ("true", True), ("1", True), ("False", False), ("no", False)])
def test_dataflow_dry_run_is_normalized_because_beam_reads_it_as_text(value: str, kept: bool) -> None:
    out = prepare_pipeline_args(DATAFLOW_OK + [f"--dry_run={value}"])
    assert (get_option(out, "dry_run") == "True") is kept
    if not kept:
        assert not any(arg.startswith("--dry_run") for arg in out)


@pytest.mark.parametrize("carrier", ["--sdk_container_image=gcr.io/p/img:1", "--extra_package=dist/beam_etl.tar.gz"])
def test_dataflow_no_setup_file_when_something_else_ships_the_package(carrier: str) -> None:
    assert get_option(prepare_pipeline_args(DATAFLOW_OK + [carrier]), "setup_file") is None


def test_dataflow_keeps_a_given_setup_file(tmp_path: Path) -> None:
    own = tmp_path / "setup.py"
    own.write_text("")
    assert get_option(prepare_pipeline_args(DATAFLOW_OK + [f"--setup_file={own}"]), "setup_file") == str(own)


# --- argv helpers --------------------------------------------------------------------------


def test_argv_helpers_follow_argparse() -> None:
    argv = ["--a=1", "--b", "x", "--a", "2", "--flag"]
    assert get_option(argv, "a") == "2"  # last one wins
    assert get_option(argv, "b") == "x"
    assert get_option(argv, "flag") == "true"
    assert get_option(argv, "ab") is None
    assert remove_option(argv, "a") == ["--b", "x", "--flag"]
    assert set_default(argv, "b", "y") == argv
    assert set_default(argv, "c", "3") == [*argv, "--c=3"]


def test_prepare_does_not_mutate_its_input(tmp_path: Path) -> None:
    jar = tmp_path / "js.jar"
    jar.write_bytes(b"PK")
    argv = ["--runner=flink", f"--flink_job_server_jar={jar}"]
    before = list(argv)
    prepare_pipeline_args(argv)
    assert argv == before
