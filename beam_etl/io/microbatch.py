"""Micro-batching for message sources: records in, RecordBatches out, by count or by time.

Every streaming connector (WebSocket, SSE, and the brokers) turns messages into rows here,
so parsing failures become DLQ rows the same way everywhere: the raw message text, the
reason, and where it came from.

Example:
    >>> batcher = MicroBatcher(max_rows=2, max_seconds=60)
    >>> batcher.add_text('{"a": 1}', source="ws://x")
    >>> [b.num_rows for b in batcher.add_text('{"a": 2}', source="ws://x")]
    [2]
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator

import pyarrow as pa

from beam_etl.batch import rows_to_batch
from beam_etl.dlq import dlq_batch
from beam_etl.io.rest import json_path

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Collect parsed records; hand out a batch when ``max_rows`` or ``max_seconds`` is reached.

    Args:
        max_rows: rows per batch.
        max_seconds: the oldest pending row waits at most this long before a flush.
        schema: an Arrow schema to build batches with (values coerced; misfits to the DLQ).
        records_path: a JSON path to the record(s) inside each message.
        step: the source name written into DLQ rows.
    """

    def __init__(
        self,
        max_rows: int = 10_000,
        max_seconds: float = 1.0,
        schema: pa.Schema | None = None,
        records_path: str | None = None,
        step: str = "stream",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.schema = schema
        self.records_path = records_path
        self.step = step
        self._clock = clock
        self._rows: list[dict[str, Any]] = []
        self._first_at: float | None = None
        self.dead: list[pa.RecordBatch] = []  # DLQ batches waiting to be emitted

    def __len__(self) -> int:
        return len(self._rows)

    def add_text(self, text: str | bytes, source: str) -> Iterator[pa.RecordBatch]:
        """Parse one message (JSON object or array of objects); yield a batch when one is due."""
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            self._dead(text, f"message is not valid JSON: {exc}", "stream.parse", source)
            return self.due()
        records = json_path(document, self.records_path)
        records = records if isinstance(records, list) else [records]
        for record in records:
            if isinstance(record, dict):
                self.add_record(record)
            else:
                self._dead(json.dumps(record), f"record is a {type(record).__name__}, not a JSON object", "stream.record", source)
        return self.due()

    def add_record(self, record: dict[str, Any]) -> None:
        if self._first_at is None:
            self._first_at = self._clock()
        self._rows.append(record)

    def due(self) -> Iterator[pa.RecordBatch]:
        if len(self._rows) >= self.max_rows or (
            self._first_at is not None and self._clock() - self._first_at >= self.max_seconds
        ):
            yield from self.flush()

    def flush(self) -> Iterator[pa.RecordBatch]:
        rows, self._rows, self._first_at = self._rows, [], None
        for start in range(0, len(rows), self.max_rows):
            yield from self._build(rows[start : start + self.max_rows])

    def take_dead(self) -> list[pa.RecordBatch]:
        dead, self.dead = self.dead, []
        return dead

    def _build(self, rows: list[dict[str, Any]]) -> Iterator[pa.RecordBatch]:
        try:
            yield rows_to_batch(rows, self.schema)
            return
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            pass
        # Some record does not fit: find which, row by row (only on this rare path).
        schema = self.schema or rows_to_batch(rows[:1]).schema
        good = []
        for row in rows:
            try:
                rows_to_batch([row], schema)
                good.append(row)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                self._dead(json.dumps(row, default=str), f"record does not fit the schema: {exc}", "stream.schema", None)
        if good:
            yield rows_to_batch(good, schema)

    def _dead(self, text: str | bytes, reason: str, kind: str, source: str | None) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        self.dead.append(dlq_batch(None, step=self.step, error_type=kind, error_message=reason, source=source, records=[text]))
