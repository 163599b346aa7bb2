"""FlinkRunner defaults and checks: the job-server jar, the master, the SDK environment.

Beam's Python FlinkRunner starts a Java job server (a jar) that runs the pipeline on an
embedded Flink (``--flink_master=[local]``) or submits it to a cluster
(``--flink_master=host:8081``). Without a jar it downloads one from Maven Central, which
is not possible offline; ``scripts/services/flink.sh`` caches one, and :func:`prepare`
passes it as ``--flink_job_server_jar`` together with the Flink version it was built for.

Example:
    >>> prepare(["--runner=FlinkRunner"])  # doctest: +SKIP
    ['--runner=FlinkRunner', '--flink_master=[local]', '--environment_type=LOOPBACK',
     '--flink_version=1.19', '--flink_job_server_jar=/root/.cache/beam-etl/flink/...jar']
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from difflib import get_close_matches
from urllib.parse import urlparse

from beam_etl.errors import RunnerError
from beam_etl.runners import _cache
from beam_etl.runners._argv import get_option, set_default, set_option

__all__ = ["PUBLISHED_FLINK_VERSIONS", "LOCAL_MASTERS", "prepare", "master_url", "cluster_flink_version"]

log = logging.getLogger(__name__)

#: The Flink versions Beam 2.77's Python FlinkRunner accepts for --flink_version (kept in
#: step with apache_beam.options.pipeline_options.FlinkRunnerOptions, which we do not import
#: here to keep this check fast).
PUBLISHED_FLINK_VERSIONS = ("1.19", "1.20", "2.0", "2.1", "2.2")

#: ``--flink_master`` values that mean "embedded Flink inside the job server".
LOCAL_MASTERS = ("[local]", "[auto]")

_SCRIPT = "bash scripts/services/flink.sh"
_MAVEN = "https://repo.maven.apache.org/maven2/org/apache/beam"


def master_url(master: str) -> str:
    """``host:port`` or a URL -> ``http://host:port`` (what Beam's FlinkRunner does too)."""
    master = master.strip().rstrip("/")
    return master if master.startswith(("http://", "https://")) else f"http://{master}"


def cluster_flink_version(master: str, timeout: float = _cache.PROBE_TIMEOUT) -> str:
    """The Flink version a cluster's REST endpoint reports; RunnerError when it does not answer.

    Args:
        master: ``--flink_master`` value (``host:port`` or ``http://host:port``).
        timeout: seconds to wait for the answer.
    """
    url = f"{master_url(master)}/config"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise RunnerError(
            f"--flink_master={master}: {url} answered HTTP {exc.code}, not a Flink REST endpoint; "
            f"point --flink_master at the JobManager's REST address (e.g. localhost:8081)"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RunnerError(
            f"--flink_master={master} does not answer ({reason}): start the cluster "
            f"(`{_SCRIPT}` starts one on localhost:8081) or use --flink_master=[local] for embedded Flink"
        ) from None
    return str(body.get("flink-version", ""))


def _is_loopback(master: str) -> bool:
    host = urlparse(master_url(master)).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _check_flink_version(value: str) -> None:
    if value not in PUBLISHED_FLINK_VERSIONS:
        close = get_close_matches(value, PUBLISHED_FLINK_VERSIONS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise RunnerError(
            f"--flink_version={value} is not one Beam publishes a job server for{hint}; "
            f"use one of {', '.join(PUBLISHED_FLINK_VERSIONS)}"
        )


def _resolve_jar(argv: list[str], flink_version: str) -> list[str]:
    """Add ``--flink_job_server_jar`` when we have one; RunnerError when Beam could not get one."""
    given = get_option(argv, "flink_job_server_jar")
    if given:
        if "://" not in given and not os.path.isfile(given):
            raise RunnerError(
                f"--flink_job_server_jar={given} does not exist: run `{_SCRIPT}` to cache the job server "
                f"or pass the path of a beam-runners-flink-{flink_version}-job-server jar"
            )
        return argv
    env_jar = os.environ.get("BEAM_ETL_FLINK_JOB_SERVER_JAR")
    env_version = os.environ.get("BEAM_ETL_FLINK_VERSION", flink_version)
    if env_jar and os.path.isfile(env_jar) and env_version == flink_version:
        return set_option(argv, "flink_job_server_jar", env_jar)
    cached = _cache.cached_flink_job_server()
    if cached is not None and cached.flink_version == flink_version:
        if cached.beam_version and cached.beam_version != _cache.beam_version():
            log.info(
                "Flink job server %s is Beam %s (Python SDK %s): the newest Beam Flink runner Maven Central serves here",
                cached.jar,
                cached.beam_version,
                _cache.beam_version(),
            )
        return set_option(argv, "flink_job_server_jar", str(cached.jar))
    # Beam looks in its own jar cache, then downloads from Maven Central.
    beam = _cache.beam_version()
    artifact = f"beam-runners-flink-{flink_version}-job-server"
    if (_cache.beam_jar_cache() / f"{artifact}-{beam}.jar").is_file():
        return argv
    status = _cache.url_status(f"{_MAVEN}/{artifact}/{beam}/{artifact}-{beam}.jar")
    if status == 200:
        return argv  # Beam downloads it on first use and caches it
    why = "Maven Central is not reachable" if status is None else f"Maven Central does not serve {artifact}:{beam}"
    cached_note = f" (the cached job server is for Flink {cached.flink_version})" if cached else ""
    raise RunnerError(
        f"no Flink {flink_version} job-server jar is cached and {why}{cached_note}: run `{_SCRIPT}`"
        + (" and drop --flink_version" if cached else "")
        + " or pass --flink_job_server_jar=PATH"
    )


def prepare(argv: list[str]) -> list[str]:
    """Defaults and checks for ``--runner=FlinkRunner``; returns the new argv.

    - ``--flink_master`` defaults to ``[local]`` (embedded Flink in the job server);
      a cluster address must answer on its REST port, and report the Flink version we run;
    - ``--environment_type`` defaults to ``LOOPBACK`` (the SDK harness runs in this
      process) for embedded Flink and clusters on this machine; Beam's own default is Docker;
    - ``--flink_version`` defaults to the version of the cached job server;
    - ``--flink_job_server_jar`` defaults to the jar ``scripts/services/flink.sh`` cached
      (``$BEAM_ETL_FLINK_JOB_SERVER_JAR`` wins over the cache).

    Args:
        argv: pipeline arguments including ``--runner=FlinkRunner``.

    Raises:
        RunnerError: unknown Flink version, a master that does not answer, no job server.
    """
    argv = list(argv)
    master = get_option(argv, "flink_master")
    if master is None or not master.strip():
        master = "[local]"
        argv = set_option(argv, "flink_master", master)

    cached = _cache.cached_flink_job_server()
    default_version = os.environ.get("BEAM_ETL_FLINK_VERSION") or (cached.flink_version if cached else None)
    flink_version = get_option(argv, "flink_version")
    if flink_version is None and default_version:
        flink_version = default_version
        argv = set_default(argv, "flink_version", flink_version)
    if flink_version is not None:
        _check_flink_version(flink_version)
    else:
        flink_version = PUBLISHED_FLINK_VERSIONS[-1]  # Beam's default

    if master in LOCAL_MASTERS or _is_loopback(master):
        argv = set_default(argv, "environment_type", "LOOPBACK")
    if master not in LOCAL_MASTERS:
        running = cluster_flink_version(master)
        if running and not running.startswith(flink_version + "."):
            raise RunnerError(
                f"the Flink cluster at {master} runs Flink {running} but the job server is for "
                f"Flink {flink_version}: pass --flink_version={'.'.join(running.split('.')[:2])} "
                f"with a matching --flink_job_server_jar"
            )
    return _resolve_jar(argv, flink_version)
