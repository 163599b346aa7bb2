"""Sources and sinks, one module per family; the public PTransforms are importable from here.

Example:
    >>> import beam_etl.io
    >>> beam_etl.io.ReadCsv  # doctest: +SKIP
    >>> p | beam_etl.io.ReadCsv("data/*.csv") | beam_etl.quality.Validate("v", {...})  # doctest: +SKIP

Imports are lazy (PEP 562) so that ``import beam_etl.io`` stays cheap and a connector whose
extra is not installed only fails when it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "beam_etl.io.files_read": ["ReadFromFiles", "ReadCsv", "ReadJson", "ReadNdjson", "ReadParquet", "ReadAvro", "ReadExcel"],
    "beam_etl.io.files_write": ["WriteToFiles"],
    "beam_etl.io.inline": ["ReadInline"],
    "beam_etl.io.sql": ["ReadFromSql", "WriteToSql"],
    "beam_etl.io.cdc": ["ReadPostgresChanges", "ReadMysqlChanges"],
    "beam_etl.io.rest": ["ReadFromRest", "WriteToRest"],
    "beam_etl.io.streams": ["ReadFromWebSocket", "ReadFromSse"],
    "beam_etl.io.kafka": ["ReadFromKafka", "WriteToKafka"],
    "beam_etl.io.rabbitmq": ["WriteToRabbitMq"],
    "beam_etl.io.sqs": ["WriteToSqs"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'beam_etl.io' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
