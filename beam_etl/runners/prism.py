"""PrismRunner defaults: the locally built Prism binary as ``--prism_location``.

Beam 2.77 downloads Prism (a Go binary) from a GitHub release unless ``--prism_location``
names one. ``scripts/services/prism.sh`` builds it from the Go module proxy into
``~/.cache/beam-etl/prism/v<beam version>/prism``; :func:`prepare` passes it, so
``--runner=PrismRunner`` works offline.

Example:
    >>> prepare(["--runner=PrismRunner"])  # doctest: +SKIP
    ['--runner=PrismRunner', '--prism_location=/root/.cache/beam-etl/prism/v2.77.0/prism']
"""

from __future__ import annotations

import os

from beam_etl.errors import RunnerError
from beam_etl.runners import _cache
from beam_etl.runners._argv import get_option, set_option

__all__ = ["prepare", "with_cached_prism", "release_url"]

_SCRIPT = "bash scripts/services/prism.sh"


def release_url(beam_version: str) -> str:
    """The GitHub release zip Beam downloads for this machine when no binary is given."""
    import platform

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine().lower(), platform.machine().lower())
    return (
        f"https://github.com/apache/beam/releases/download/v{beam_version}/"
        f"apache_beam-v{beam_version}-prism-{platform.system().lower()}-{arch}.zip"
    )


def with_cached_prism(argv: list[str]) -> list[str]:
    """``argv`` plus ``--prism_location`` of the cached binary, when there is one and none is given."""
    if get_option(argv, "prism_location"):
        return list(argv)
    binary = _cache.prism_binary()
    return set_option(argv, "prism_location", str(binary)) if binary is not None else list(argv)


def prepare(argv: list[str]) -> list[str]:
    """Defaults and checks for ``--runner=PrismRunner``; returns the new argv.

    Args:
        argv: pipeline arguments including ``--runner=PrismRunner``.

    Raises:
        RunnerError: ``--prism_location`` names a missing file, or no binary is cached and
            Beam could not download one.
    """
    given = get_option(argv, "prism_location")
    if given:
        if "://" not in given and not os.path.exists(given):
            raise RunnerError(f"--prism_location={given} does not exist: run `{_SCRIPT}` or pass the path of a prism binary")
        return list(argv)
    argv = with_cached_prism(argv)
    if get_option(argv, "prism_location"):
        return argv
    status = _cache.url_status(release_url(_cache.beam_version()))
    if status is not None and status < 400:
        return argv  # Beam downloads and caches the release binary
    raise RunnerError(
        f"no Prism binary is cached and Beam cannot download one (GitHub is "
        f"{'not reachable' if status is None else f'answering HTTP {status}'}): run `{_SCRIPT}` "
        f"(builds it with Go) or pass --prism_location=PATH"
    )
