"""Where the service scripts cache runner binaries, and small probes used before a run.

``scripts/services/flink.sh`` and ``scripts/services/prism.sh`` fill ``~/.cache/beam-etl``
(or ``$BEAM_ETL_CACHE``); the runner modules read it here so the CLI can pass
``--flink_job_server_jar`` / ``--prism_location`` without the user typing them.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = [
    "cache_dir",
    "beam_version",
    "beam_jar_cache",
    "FlinkJobServer",
    "cached_flink_job_server",
    "prism_binary",
    "url_status",
]

#: Seconds a reachability probe may take before we call the target unreachable.
PROBE_TIMEOUT = 3.0


def cache_dir() -> Path:
    """``$BEAM_ETL_CACHE`` or ``~/.cache/beam-etl``: what the service scripts fill."""
    return Path(os.environ.get("BEAM_ETL_CACHE") or Path.home() / ".cache" / "beam-etl")


def beam_version() -> str:
    """The installed Apache Beam Python SDK version (read from metadata: no Beam import)."""
    try:
        return version("apache-beam")
    except PackageNotFoundError:  # pragma: no cover - beam is a core dependency
        return "unknown"


def beam_jar_cache() -> Path:
    """Beam's own jar cache, searched by ``JavaJarServer.local_jar`` before downloading."""
    return Path.home() / ".apache_beam" / "cache" / "jars"


@dataclass(frozen=True)
class FlinkJobServer:
    """A Flink job-server jar recorded by ``scripts/services/flink.sh``."""

    flink_version: str
    jar: Path
    beam_version: str


def cached_flink_job_server() -> FlinkJobServer | None:
    """The job server ``flink.sh`` fetched or built, if its manifest and jar exist."""
    manifest = cache_dir() / "flink" / "job-server.env"
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    values = dict(line.split("=", 1) for line in lines if "=" in line)
    jar = Path(values.get("BEAM_ETL_FLINK_JOB_SERVER_JAR", ""))
    flink_version = values.get("BEAM_ETL_FLINK_VERSION", "")
    if not flink_version or not jar.is_file():
        return None
    return FlinkJobServer(flink_version, jar, values.get("BEAM_ETL_FLINK_JOB_SERVER_BEAM_VERSION", ""))


def prism_binary() -> Path | None:
    """The Prism binary ``prism.sh`` built for the installed Beam version, if present."""
    path = cache_dir() / "prism" / f"v{beam_version()}" / "prism"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def url_status(url: str, timeout: float = PROBE_TIMEOUT) -> int | None:
    """HTTP status of a HEAD/GET on ``url``, or None when nothing answers in ``timeout`` s."""
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "beam-etl"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return None
