"""Kafka streaming pieces that need no broker: partition restrictions, the watermark policy,
batch timestamps; and file sinks on streams (one file per window pane)."""

from __future__ import annotations

import datetime as dt
import time

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import FixedWindows, GlobalWindow, IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from beam_etl.io.files_windowed import window_file_name
from beam_etl.io.files_write import WriteToFiles
from beam_etl.io.kafka import KafkaSource
from beam_etl.io.kafka_streaming import OFFSET_INFINITY, PartitionOffsets, _oldest_in, _PartitionWatermarks, _ReadPartitionStreamFn


def test_partition_restriction_is_open_ended_checkpoints_but_never_splits():
    provider = PartitionOffsets()
    restriction = provider.initial_restriction({"partition": 0, "start": 42})
    assert (restriction.start, restriction.stop) == (42, OFFSET_INFINITY)
    assert list(provider.split({"partition": 0, "start": 42}, restriction)) == [restriction]
    tracker = provider.create_tracker(restriction)
    assert not tracker.is_bounded()
    assert tracker.try_claim(42) and tracker.try_claim(43)
    assert tracker.try_split(0.5) is None  # one ordered reader per partition
    primary, residual = tracker.try_split(0)  # a checkpoint: the rest of the partition resumes later
    assert (primary.start, primary.stop) == (42, 44) and (residual.start, residual.stop) == (44, OFFSET_INFINITY)
    assert provider.create_tracker(OffsetRange(0, 10)).is_bounded()


def test_shared_watermark_is_the_minimum_once_every_partition_reported():
    marks = _PartitionWatermarks()
    assert marks.update("s", [0, 1, 2], 0, Timestamp(100)) is None  # 1 and 2 unknown: no watermark yet
    assert marks.update("s", [0, 1, 2], 1, Timestamp(50)) is None
    assert marks.update("s", [0, 1, 2], 2, None) is None  # reported, but nothing known
    assert marks.update("s", [0, 1, 2], 2, Timestamp(70)) == Timestamp(50)
    assert marks.update("s", [0, 1, 2], 1, Timestamp(80)) == Timestamp(70)
    assert marks.update("s", [0, 1, 2], 1, Timestamp(10)) == Timestamp(70)  # a partition never moves back
    assert marks.update("other", [0], 0, Timestamp(5)) == Timestamp(5)  # sources are separate


def _batch(times: list[int | None]) -> pa.RecordBatch:
    stamps = [None if t is None else dt.datetime.fromtimestamp(t, tz=dt.timezone.utc) for t in times]
    return pa.RecordBatch.from_pydict({"n": list(range(len(times))), "_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC"))})


def test_a_batch_is_stamped_with_its_oldest_record():
    assert _oldest_in(_batch([30, 10, None, 20]), MIN_TIMESTAMP) == Timestamp(10)
    assert _oldest_in(_batch([None]), Timestamp(7)) == Timestamp(7)
    assert _oldest_in(pa.RecordBatch.from_pydict({"n": [1]}), Timestamp(7)) == Timestamp(7)


class _Reader:
    def __init__(self, quiet_for: float | None, caught_up: bool = True):
        self.quiet_since = None if quiet_for is None else time.monotonic() - quiet_for
        self._caught_up = caught_up

    def caught_up(self) -> bool:
        return self._caught_up


@pytest.mark.parametrize(
    "newest, quiet_for, caught_up, idle, expected",
    [
        (1000, None, True, 10.0, "newest"),  # data: newest record time - delay
        (None, None, True, 10.0, None),  # nothing yet: no watermark
        (1000, 11.0, True, 10.0, "now"),  # caught up and quiet for longer than idle: now - delay
        (1000, 11.0, False, 10.0, "newest"),  # quiet but behind the log end (slow broker): not idle
        (1000, 5.0, True, 10.0, "newest"),  # not quiet long enough
        (1000, 60.0, True, None, "newest"),  # idle_seconds: null: only data moves it
    ],
)
def test_watermark_policy(newest, quiet_for, caught_up, idle, expected):
    spec = KafkaSource(type="kafka", bootstrap_servers="x:1", topic="t", group_id="g", streaming=True, watermark_delay_seconds=5, idle_seconds=idle)
    fn = _ReadPartitionStreamFn("s", spec, 100, [0], shared_watermark=False, token="t")
    estimator = ManualWatermarkEstimator(None)
    before = Timestamp.now()
    fn._advance(0, None if newest is None else Timestamp(newest), _Reader(quiet_for, caught_up), estimator)
    mark = estimator.current_watermark()
    if expected is None:
        assert mark is None
    elif expected == "newest":
        assert mark == Timestamp(newest - 5)
    else:
        assert before - 5 <= mark <= Timestamp.now() - 5


def test_window_file_names_carry_the_window_and_pane():
    assert window_file_name(IntervalWindow(Timestamp(60), Timestamp(120)), 2, "abc", ".parquet") == "window-19700101T000100Z-19700101T000200Z-pane2-abc.parquet"
    assert window_file_name(GlobalWindow(), 0, "abc", ".ndjson", written_at=Timestamp(1.5)) == "global-19700101T000001500000Z-abc.ndjson"


def test_file_sink_on_a_stream_writes_one_file_per_window(tmp_path):
    """--streaming routes WriteToFiles to the pane writer; each window's rows land in its own file."""
    rows = [(5, "a"), (20, "b"), (61, "c"), (130, "d"), (131, "e")]
    batches = [TimestampedValue(pa.RecordBatch.from_pydict({"t": [t], "v": [v]}), t) for t, v in rows]
    options = PipelineOptions(["--streaming"])
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | beam.Create(batches)
            | beam.WindowInto(FixedWindows(60))
            | WriteToFiles(str(tmp_path / "out") + "/", "parquet")
        )
    files = sorted((tmp_path / "out").glob("*.parquet"))
    assert all(f.name.startswith("window-") for f in files)
    by_window: dict[str, list[str]] = {}
    for f in files:
        by_window.setdefault(f.name.split("-pane")[0], []).extend(pq.read_table(f).column("v").to_pylist())
    assert {k: sorted(v) for k, v in by_window.items()} == {
        "window-19700101T000000Z-19700101T000100Z": ["a", "b"],
        "window-19700101T000100Z-19700101T000200Z": ["c"],
        "window-19700101T000200Z-19700101T000300Z": ["d", "e"],
    }
    assert not [f for f in (tmp_path / "out").iterdir() if f.is_file() and f.suffix != ".parquet"]
