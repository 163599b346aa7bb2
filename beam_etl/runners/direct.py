"""DirectRunner checks: worker count, running mode, Prism.

Everything passes through to Beam unchanged (``--direct_num_workers``,
``--direct_running_mode=multi_processing``, ``--streaming``); we only reject values Beam
would reject later with an argparse usage dump, and say how to fix them.

Beam 2.77's DirectRunner first tries Prism, downloading it from GitHub; offline that fails
and it falls back to the in-process FnApiRunner. When ``scripts/services/prism.sh`` has
built Prism, :func:`prepare` passes it as ``--prism_location`` so the DirectRunner uses it —
except when ``--direct_num_workers``/``--direct_running_mode`` are given: only the
FnApiRunner honours those, so then Prism is not offered.

Example:
    >>> prepare(["--runner=DirectRunner", "--direct_num_workers=2",
    ...          "--direct_running_mode=multi_processing"])
    ['--runner=DirectRunner', '--direct_num_workers=2', '--direct_running_mode=multi_processing']
"""

from __future__ import annotations

from difflib import get_close_matches

from beam_etl.errors import RunnerError
from beam_etl.runners._argv import get_option, has_option
from beam_etl.runners.prism import with_cached_prism

__all__ = ["RUNNING_MODES", "prepare"]

#: Beam's choices for --direct_running_mode.
RUNNING_MODES = ("in_memory", "multi_threading", "multi_processing")


def prepare(argv: list[str]) -> list[str]:
    """Checks for ``--runner=DirectRunner``; returns the new argv.

    Args:
        argv: pipeline arguments including ``--runner=DirectRunner`` (or none at all).

    Raises:
        RunnerError: a running mode Beam does not have, a worker count that is not a
            non-negative integer, or ``--streaming=...`` (Beam's flag takes no value).
    """
    mode = get_option(argv, "direct_running_mode")
    if mode is not None and mode not in RUNNING_MODES:
        close = get_close_matches(mode, RUNNING_MODES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise RunnerError(f"--direct_running_mode={mode} is unknown{hint}; use one of {', '.join(RUNNING_MODES)}")
    workers = get_option(argv, "direct_num_workers")
    if workers is not None:
        try:
            count = int(workers)
        except ValueError:
            count = -1
        if count < 0:
            raise RunnerError(
                f"--direct_num_workers={workers} is not a worker count: use a whole number "
                f"(0 = one per CPU core), e.g. --direct_num_workers=2"
            )
    bad_flag = next((arg for arg in argv if arg.startswith("--streaming=")), None)
    if bad_flag is not None:
        raise RunnerError(f"{bad_flag}: --streaming takes no value; pass --streaming alone for a streaming run")
    if has_option(argv, "direct_num_workers") or has_option(argv, "direct_running_mode"):
        return list(argv)
    return with_cached_prism(argv)
