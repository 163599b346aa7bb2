"""Read and edit Beam pipeline arguments (``--name=value`` / ``--name value`` / ``--flag``).

Beam parses these with argparse, where the last occurrence of an option wins; these helpers
follow the same rule, so what we check is what Beam will use. They never import Beam, so
the checks in :mod:`beam_etl.runners` stay fast and testable.
"""

from __future__ import annotations

__all__ = ["get_option", "has_option", "set_default", "set_option", "remove_option", "parse_bool"]

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", ""}


def _matches(arg: str, name: str) -> bool:
    return arg == f"--{name}" or arg.startswith(f"--{name}=")


def get_option(argv: list[str], name: str) -> str | None:
    """The value Beam will see for ``--name`` (last one wins), or None when absent.

    A bare flag (``--streaming``) reads as ``"true"``.

    Args:
        argv: pipeline arguments.
        name: option name without dashes, e.g. ``"flink_master"``.

    Example:
        >>> get_option(["--flink_master", "localhost:8081", "--streaming"], "flink_master")
        'localhost:8081'
    """
    value: str | None = None
    for index, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}":
            following = argv[index + 1] if index + 1 < len(argv) else None
            value = following if following is not None and not following.startswith("--") else "true"
    return value


def has_option(argv: list[str], name: str) -> bool:
    """Whether ``--name`` appears at all (with or without a value)."""
    return any(_matches(arg, name) for arg in argv)


def remove_option(argv: list[str], name: str) -> list[str]:
    """A copy of ``argv`` without any ``--name``, ``--name=value`` or ``--name value``."""
    out: list[str] = []
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith(f"--{name}="):
            continue
        if arg == f"--{name}":
            following = argv[index + 1] if index + 1 < len(argv) else None
            skip = following is not None and not following.startswith("--")
            continue
        out.append(arg)
    return out


def set_option(argv: list[str], name: str, value: str) -> list[str]:
    """A copy of ``argv`` with ``--name=value`` replacing every earlier form of ``--name``."""
    return [*remove_option(argv, name), f"--{name}={value}"]


def set_default(argv: list[str], name: str, value: str) -> list[str]:
    """A copy of ``argv`` with ``--name=value`` appended only when ``--name`` is absent.

    Example:
        >>> set_default(["--runner=FlinkRunner"], "parallelism", "2")
        ['--runner=FlinkRunner', '--parallelism=2']
    """
    return list(argv) if has_option(argv, name) else [*argv, f"--{name}={value}"]


def parse_bool(value: str | None, option: str) -> bool:
    """``True``/``False`` from a textual option value; ValueError naming the option otherwise."""
    if value is None:
        return False
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"--{option}={value} is not a boolean: use --{option}=True or --{option}=False")
