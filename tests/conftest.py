"""Suite-wide test settings.

Hypothesis: no deadline (a Beam pipeline inside a property takes seconds), and no "explain"
phase — it re-runs a failing example under a line tracer, which makes a test that builds
Beam pipelines take minutes before it reports. The failing example itself is still shown.
"""

from hypothesis import Phase, settings

settings.register_profile(
    "beam_etl",
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    print_blob=True,
)
settings.load_profile("beam_etl")
