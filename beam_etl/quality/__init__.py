"""Data quality: validation, cleaning, coercion, profiling, quality checks, anomalies, GX.

``evaluate_expectations`` (GX expectations on an Arrow table, no pipeline needed) is
exported here; it is imported on first use so importing a sibling module stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate_expectations", "profile_table", "Validate", "Clean", "Coerce", "Quality", "Profile", "DetectOutliers"]

#: Public PTransforms, importable as ``beam_etl.quality.Validate`` (DESIGN §2), loaded lazily.
_TRANSFORMS = {
    "Validate": "beam_etl.quality.validate",
    "Clean": "beam_etl.quality.clean",
    "Coerce": "beam_etl.quality.coerce",
    "Quality": "beam_etl.quality.checks",
    "Profile": "beam_etl.quality.profile",
    "DetectOutliers": "beam_etl.quality.anomaly",
}


def __getattr__(name: str) -> Any:
    if name in _TRANSFORMS:
        import importlib

        return getattr(importlib.import_module(_TRANSFORMS[name]), name)
    if name == "evaluate_expectations":
        from beam_etl.quality.expectations import evaluate_expectations

        return evaluate_expectations
    if name == "profile_table":
        from beam_etl.quality.profile import profile_table

        return profile_table
    raise AttributeError(f"module 'beam_etl.quality' has no attribute '{name}'")
