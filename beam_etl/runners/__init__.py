"""Runner support: check the runner name and its options, add the defaults it needs.

The CLI calls :func:`prepare_pipeline_args` on the pass-through Beam arguments before
``PipelineOptions(argv)``, so a bad runner name, a missing Dataflow option or a Flink master
that does not answer is one line with its fix (exit 2) instead of a traceback minutes later.

| runner | module | what it adds / checks |
|---|---|---|
| DirectRunner | :mod:`.direct` | checks worker options; ``--prism_location`` when Prism is built |
| PrismRunner | :mod:`.prism` | ``--prism_location`` from ``scripts/services/prism.sh`` |
| FlinkRunner | :mod:`.flink` | ``--flink_master=[local]``, ``LOOPBACK``, the cached job-server jar |
| DataflowRunner | :mod:`.dataflow` | project/region/``gs://`` temp; ``--setup_file`` |
| SparkRunner, PortableRunner | — | passed through unchanged |

Example:
    >>> prepare_pipeline_args(["--runner=direct", "--direct_num_workers=2"])
    ['--runner=DirectRunner', '--direct_num_workers=2']
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Callable

from beam_etl.errors import RunnerError
from beam_etl.runners import dataflow, direct, flink, prism
from beam_etl.runners._argv import get_option, remove_option

__all__ = ["RUNNERS", "DEFAULT_RUNNER", "prepare_pipeline_args", "runner_name", "canonical_runner"]

DEFAULT_RUNNER = "DirectRunner"


def _unchanged(argv: list[str]) -> list[str]:
    return list(argv)


#: Runner name -> the function that checks its options and adds defaults.
RUNNERS: dict[str, Callable[[list[str]], list[str]]] = {
    "DirectRunner": direct.prepare,
    "PrismRunner": prism.prepare,
    "FlinkRunner": flink.prepare,
    "DataflowRunner": dataflow.prepare,
    "SparkRunner": _unchanged,  # optional: needs --spark_job_server_jar or a job endpoint; no checks here
    "PortableRunner": _unchanged,  # --job_endpoint=host:port of any Beam job service
}

_BY_KEY = {name.lower().removesuffix("runner"): name for name in RUNNERS}


def runner_name(argv: list[str]) -> str | None:
    """The ``--runner`` value in ``argv`` (last one wins, as in Beam), or None."""
    return get_option(argv, "runner")


def canonical_runner(name: str) -> str:
    """Beam's spelling of a runner name; accepts what Beam accepts (``flink``, ``Direct``, ...).

    A dotted name (``my.module.MyRunner``) is a runner class path and is returned unchanged.

    Args:
        name: the ``--runner`` value.

    Raises:
        RunnerError: an unknown name, with the closest known one and the list.

    Example:
        >>> canonical_runner("flink")
        'FlinkRunner'
    """
    text = name.strip()
    if "." in text:
        return text
    key = text.lower().removesuffix("runner")
    if key in _BY_KEY:
        return _BY_KEY[key]
    names = list(RUNNERS)
    close = get_close_matches(text.lower(), [n.lower() for n in names], n=1, cutoff=0.5)
    hint = f"did you mean {_BY_KEY[close[0].removesuffix('runner')]}? " if close else ""
    raise RunnerError(f"unknown runner '{name}': {hint}use one of {', '.join(names)} (e.g. --runner=DirectRunner)")


def prepare_pipeline_args(argv: list[str]) -> list[str]:
    """Validate ``--runner`` and its options, add per-runner defaults; return the new argv.

    Nothing is staged, uploaded or started here: checks that need the network are quick
    probes (a Flink master's REST port; whether Maven Central serves a job-server jar when
    none is cached). Options are never removed except a ``--dry_run=False`` that Beam would
    read as true; the runner name is rewritten in Beam's spelling.

    Args:
        argv: Beam pipeline arguments (``--runner=...`` and any other Beam option). No
            ``--runner`` means the DirectRunner, as in Beam.

    Raises:
        RunnerError: one line naming the option and the fix.

    Example:
        >>> prepare_pipeline_args(["--runner=Dataflow"])
        Traceback (most recent call last):
        ...
        beam_etl.errors.RunnerError: DataflowRunner needs --project (the Google Cloud project that owns the job): add --project=my-gcp-project
    """
    argv = list(argv)
    given = runner_name(argv)
    if given is None or not given.strip():
        return RUNNERS[DEFAULT_RUNNER]([arg for arg in argv if arg != "--runner"])
    name = canonical_runner(given)
    if name not in RUNNERS:  # a runner class path: Beam's business
        return argv
    argv = [*remove_option(argv, "runner"), f"--runner={name}"]
    # Keep the runner first, where people look for it.
    argv.insert(0, argv.pop())
    return RUNNERS[name](argv)
