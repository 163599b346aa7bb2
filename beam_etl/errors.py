"""The error hierarchy. Every message names where (spec path, file:line) and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


__all__ = [
    "BeamEtlError",
    "SpecIssue",
    "SpecError",
    "ExpressionError",
    "SourceError",
    "SinkError",
    "RunnerError",
    "StepFailed",
]


class BeamEtlError(Exception):
    """Base of every error beam-etl raises on purpose (the CLI prints it in one line)."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a pipeline spec: where it is, what is wrong, and a hint."""

    path: str
    message: str
    hint: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "<spec>"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class SpecError(BeamEtlError):
    """A spec that cannot run. Carries every issue found, not just the first."""

    def __init__(self, issues: list[SpecIssue] | SpecIssue | str, path: str = ""):
        if isinstance(issues, str):
            issues = [SpecIssue(path, issues)]
        elif isinstance(issues, SpecIssue):
            issues = [issues]
        self.issues: list[SpecIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


class ExpressionError(BeamEtlError):
    """A SQL expression outside the whitelist, unparsable, or naming an unknown column.

    ``hint`` carries a suggestion ("did you mean 'amount'?") when one exists.
    """

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} ({hint})")


class SourceError(BeamEtlError):
    """A source that cannot be read at all (missing file, corrupt Parquet, refused login)."""


class SinkError(BeamEtlError):
    """A sink that cannot be written (target exists with mode error_if_exists, ...)."""


class RunnerError(BeamEtlError):
    """A runner that cannot start: unknown name, missing jar, missing required options."""


class StepFailed(BeamEtlError):
    """A step configured ``on_error: fail`` met a bad row, or a step crashed.

    Built as ``StepFailed(step, reason)``; also constructible from its one-line message,
    because Beam re-creates worker exceptions from their (augmented) ``args``.
    """

    def __init__(self, step: str, reason: str | None = None):
        if reason is None:
            message = step
            step = message.split("'")[1] if message.count("'") >= 2 else ""
        else:
            message = f"step '{step}' failed: {reason}"
        super().__init__(message)
        self.step = step
        self.reason = reason if reason is not None else message
