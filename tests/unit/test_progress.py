"""Progress: source batches are counted per worker process and summed by the CLI."""

from __future__ import annotations

import pyarrow as pa

from beam_etl.progress import Progress


def test_progress_counts_rows_from_every_tap():
    progress = Progress(quiet=True)
    taps = [progress.tap(), progress.tap()]  # e.g. two sources, or two workers
    batch = pa.RecordBatch.from_pydict({"x": list(range(1000))})
    for tap in taps:
        tap.setup()
        for _ in range(3):
            assert list(tap.process(batch)) == [batch]  # batches pass through unchanged
        tap.finish_bundle()
    assert progress.rows() == 6000
    assert progress.watch(lambda: "done") == "done"  # quiet: runs, draws nothing, cleans up
