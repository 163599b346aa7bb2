"""Data quality: validation, cleaning, coercion, profiling, quality checks, anomalies, GX.

``evaluate_expectations`` (GX expectations on an Arrow table, no pipeline needed) is
exported here; it is imported on first use so importing a sibling module stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate_expectations", "profile_table"]


def __getattr__(name: str) -> Any:
    if name == "evaluate_expectations":
        from beam_etl.quality.expectations import evaluate_expectations

        return evaluate_expectations
    if name == "profile_table":
        from beam_etl.quality.profile import profile_table

        return profile_table
    raise AttributeError(f"module 'beam_etl.quality' has no attribute '{name}'")
