"""DataflowRunner defaults and checks, all before anything is staged.

Without ``--dry_run``, Beam stages files to ``--temp_location`` before it notices a missing
project or region, and an unreachable ``gs://`` retries credentials for minutes (DESIGN §9).
:func:`prepare` checks what Beam's validator would, first and in one line each, and adds the
defaults a beam-etl job needs on Dataflow workers:

- ``--setup_file``: beam-etl's own ``setup.py``, so workers install the package;
- ``--sdk_location=container``: the worker image (``apache/beam_python3.X_sdk:<beam version>``,
  chosen by Beam for the launching SDK) already carries Beam, so no SDK tarball is staged;
- ``--dry_run=True`` (or ``False``) is normalized: Beam treats any non-empty text as true.

Example:
    >>> prepare(["--runner=DataflowRunner", "--project=my-proj", "--region=us-central1",
    ...          "--temp_location=gs://my-bucket/tmp", "--dry_run=True"])  # doctest: +SKIP
    [..., '--dry_run=True', '--setup_file=/path/to/beam-etl/setup.py', '--sdk_location=container']
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from beam_etl.errors import RunnerError
from beam_etl.runners._argv import get_option, has_option, parse_bool, remove_option, set_default, set_option

__all__ = ["prepare", "package_setup_file"]

# The patterns Beam's PipelineOptionsValidator applies (apache_beam/options/pipeline_options_validator.py).
_PROJECT_ID = re.compile(r"[a-z][-a-z0-9:.]+[a-z0-9]")
_JOB_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_GCS_PATH = re.compile(r"gs://(?P<bucket>[^/]+)(/(?P<object>.*))?")
_GCS_BUCKET = re.compile(r"[a-z0-9][-_a-z0-9.]+[a-z0-9]")

#: Options that already bring beam_etl to the workers, so no --setup_file is added.
_CARRIERS = ("extra_package", "extra_packages", "sdk_container_image", "worker_harness_container_image")


def package_setup_file() -> Path | None:
    """beam-etl's ``setup.py`` next to the package (a source checkout or editable install)."""
    candidate = Path(__file__).resolve().parents[2] / "setup.py"
    try:
        text = candidate.read_text(encoding="utf-8")
    except OSError:
        return None
    return candidate if 'name="beam-etl"' in text else None


def _require(argv: list[str], name: str, example: str, what: str) -> str:
    value = get_option(argv, name)
    if not value:
        raise RunnerError(f"DataflowRunner needs --{name} ({what}): add --{name}={example}")
    return value


def _check_gcs(name: str, value: str) -> None:
    match = _GCS_PATH.fullmatch(value)
    if match is None:
        raise RunnerError(
            f"--{name}={value} is not a Cloud Storage path: Dataflow stages and writes temporary files "
            f"there, so use --{name}=gs://BUCKET/tmp"
        )
    if not _GCS_BUCKET.fullmatch(match.group("bucket")):
        raise RunnerError(f"--{name}={value}: '{match.group('bucket')}' is not a valid bucket name (lowercase letters, digits, - _ .)")


def prepare(argv: list[str]) -> list[str]:
    """Defaults and checks for ``--runner=DataflowRunner``; returns the new argv.

    Args:
        argv: pipeline arguments including ``--runner=DataflowRunner``.

    Raises:
        RunnerError: a missing or malformed ``--project``, ``--region``, ``--temp_location``
            (must be ``gs://``), ``--staging_location``, ``--job_name``, ``--setup_file``,
            or a ``--dry_run`` value that is not a boolean.
    """
    argv = list(argv)
    project = _require(argv, "project", "my-gcp-project", "the Google Cloud project that owns the job")
    if project.isdigit():
        raise RunnerError(f"--project={project} is a project number: pass the project ID (e.g. my-gcp-project)")
    if not _PROJECT_ID.fullmatch(project):
        raise RunnerError(
            f"--project={project} is not a project ID: IDs are lowercase letters, digits and hyphens, "
            f"starting with a letter (e.g. my-gcp-project)"
        )
    _require(argv, "region", "us-central1", "where the job runs")
    _check_gcs("temp_location", _require(argv, "temp_location", "gs://BUCKET/tmp", "a Cloud Storage path for temporary files"))
    staging = get_option(argv, "staging_location")
    if staging:
        _check_gcs("staging_location", staging)
    job_name = get_option(argv, "job_name")
    if job_name and not _JOB_NAME.fullmatch(job_name):
        raise RunnerError(
            f"--job_name={job_name} is not a Dataflow job name: use lowercase letters, digits and hyphens, "
            f"starting with a letter (e.g. --job_name={re.sub(r'[^a-z0-9-]+', '-', job_name.lower()).strip('-') or 'beam-etl-job'})"
        )

    if has_option(argv, "dry_run"):
        value = get_option(argv, "dry_run")
        try:
            dry = parse_bool(value, "dry_run")
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
        # Beam reads --dry_run as text, so "False" would be true: keep only a real True.
        argv = set_option(argv, "dry_run", "True") if dry else remove_option(argv, "dry_run")

    setup_file = get_option(argv, "setup_file")
    if setup_file:
        if not os.path.isfile(setup_file):
            raise RunnerError(f"--setup_file={setup_file} does not exist: pass the path of a setup.py")
    elif not any(has_option(argv, name) for name in _CARRIERS):
        # Workers need beam_etl itself; a custom container or an extra package may carry it.
        own = package_setup_file()
        if own is None:
            raise RunnerError(
                "Dataflow workers need the beam_etl package and its setup.py was not found next to it "
                "(installed from a wheel?): pass --setup_file=/path/to/beam-etl/setup.py, "
                "--extra_package=beam_etl-<version>.tar.gz or an --sdk_container_image that has it"
            )
        argv = set_option(argv, "setup_file", str(own))
    return set_default(argv, "sdk_location", "container")
