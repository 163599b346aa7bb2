"""One end-to-end test per CLI command that has no home elsewhere: profile."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources


def test_profile_command_writes_json_and_html(tmp_path):
    sample = str(resources.files("beam_etl").joinpath("data", "sample-data.json"))
    out = tmp_path / "profile.json"
    done = subprocess.run(
        [sys.executable, "-m", "beam_etl", "profile", sample, "--output", str(out), "--format", "both"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    text = json.dumps(report)
    assert "amount" in text and "signup_date" in text
    assert list(tmp_path.glob("*.html")), "the HTML page is written next to the JSON"
    missing = subprocess.run([sys.executable, "-m", "beam_etl", "profile", str(tmp_path / "nope.csv")], capture_output=True, text=True)
    assert missing.returncode == 2 and "not found" in missing.stderr
