"""Live progress for long runs: rows read so far and rows/s, drawn with rich on stderr.

Source batches pass through :class:`ProgressTap` (one Python call per batch, not per row),
which records the rows seen by its worker process in a small file under a run-specific
directory; the CLI sums those files. That works whether workers run in the CLI's process
(DirectRunner, Flink LOOPBACK) or in local subprocesses (``multi_processing``); on remote
workers (Dataflow, a remote Flink cluster) the display shows elapsed time only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable

import apache_beam as beam
import pyarrow as pa

__all__ = ["ProgressTap", "Progress"]


class ProgressTap(beam.DoFn):
    """Pass batches through unchanged, counting their rows into ``directory``."""

    def __init__(self, directory: str, interval: float = 0.5):
        self._directory = directory
        self._interval = interval

    def setup(self) -> None:
        self._rows = 0
        self._written = 0.0
        self._path = os.path.join(self._directory, f"{os.getpid()}-{id(self)}")

    def process(self, batch: pa.RecordBatch):
        self._rows += batch.num_rows
        now = time.monotonic()
        if now - self._written >= self._interval:
            self._flush(now)
        yield batch

    def finish_bundle(self) -> None:
        self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        self._written = now
        try:
            with open(self._path + ".tmp", "w") as handle:
                handle.write(str(self._rows))
            os.replace(self._path + ".tmp", self._path)
        except OSError:  # progress is best effort; never fail a run for it
            pass


class Progress:
    """Draw rows read and rows/s while ``watch(run)`` runs; silent for the first second."""

    def __init__(self, quiet: bool = False, delay: float = 1.0):
        self.quiet = quiet
        self.delay = delay
        self.directory = tempfile.mkdtemp(prefix="beam_etl_progress_")

    def tap(self) -> ProgressTap:
        return ProgressTap(self.directory)

    def rows(self) -> int:
        total = 0
        for name in os.listdir(self.directory):
            if name.endswith(".tmp"):
                continue
            try:
                with open(os.path.join(self.directory, name)) as handle:
                    total += int(handle.read() or 0)
            except (OSError, ValueError):
                continue
        return total

    def watch(self, run: Callable[[], Any]) -> Any:
        if self.quiet:
            try:
                return run()
            finally:
                shutil.rmtree(self.directory, ignore_errors=True)
        stop = threading.Event()
        thread = threading.Thread(target=self._draw, args=(stop,), daemon=True)
        thread.start()
        try:
            return run()
        finally:
            stop.set()
            thread.join(timeout=2)
            shutil.rmtree(self.directory, ignore_errors=True)

    def _draw(self, stop: threading.Event) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        started = time.monotonic()
        if stop.wait(self.delay):
            return
        console = Console(stderr=True)
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while not stop.wait(0.25):
                elapsed = time.monotonic() - started
                rows = self.rows()
                rate = rows / elapsed if elapsed > 0 else 0.0
                live.update(Text(f"running {elapsed:6.1f} s  rows read {rows:,}  ({rate:,.0f} rows/s)"))
