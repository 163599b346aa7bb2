"""Helpers for streaming tests: Kafka topics, producing and reading, and a streaming CLI run.

A streaming pipeline runs as users run it — ``python -m beam_etl run SPEC --streaming`` in a
subprocess — and is stopped with SIGINT (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def bootstrap_servers() -> str:
    bootstrap = os.environ.get("BEAM_ETL_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.fail("BEAM_ETL_TEST_KAFKA_BOOTSTRAP is not set: run scripts/services/kafka.sh")
    return bootstrap


@contextlib.contextmanager
def kafka_topics(bootstrap: str, partitions: dict[str, int]) -> Iterator[dict[str, str]]:
    """Fresh topics named ``<random>_<role>`` per role (``{"in": 2, "out": 1}``); deleted afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    base = f"s{uuid.uuid4().hex[:8]}"
    names = {role: f"{base}_{role}" for role in partitions}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(names[role], num_partitions=n, replication_factor=1) for role, n in partitions.items()])
    try:
        yield names
    finally:
        try:
            admin.delete_topics(list(names.values()))
        except Exception:  # the broker may have been restarted by the test: topics stay, harmless
            pass
        admin.close()


def produce(bootstrap: str, topic: str, messages: list[tuple[int | None, int | None, Any]]) -> None:
    """``(partition, timestamp_ms, value)`` per message (dict values as JSON); waits for every ack."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for partition, at, value in messages:
            payload = value if isinstance(value, bytes) else json.dumps(value).encode()
            producer.send(topic, value=payload, partition=partition, timestamp_ms=at)
        producer.flush(timeout=60)
    finally:
        producer.close()


class TopicReader:
    """Reads a topic from the beginning (no group), keeping every value seen across calls."""

    def __init__(self, bootstrap: str, topic: str):
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, enable_auto_commit=False, reconnect_backoff_max_ms=1000
        )
        self.values: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        for records in self._consumer.poll(timeout_ms=500).values():
            self.values.extend(json.loads(record.value) for record in records)
        return self.values

    def close(self) -> None:
        self._consumer.close()


def committed_offsets(bootstrap: str, topic: str, group_id: str) -> dict[int, int | None]:
    """The group's committed offset per partition of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen | None = None, log: Path | None = None, timeout: float = 120) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the pipeline's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the pipeline exited ({proc.returncode}) while waiting for {what}:\n{_tail(log)}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text()[-4000:] if log is not None and log.exists() else ""


def start_pipeline(workdir: Path, spec: dict[str, Any], name: str = "run") -> tuple[subprocess.Popen, Path]:
    """``python -m beam_etl run SPEC --streaming`` in a subprocess; output in ``<workdir>/<name>.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    log = workdir / f"{name}.log"
    env = {**os.environ, "BEAM_ETL_STATE_URL": f"sqlite:///{workdir / 'state.db'}", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "beam_etl", "run", str(spec_path), "--output", str(workdir / "out"), "--quiet", "--streaming"]
    with open(log, "wb") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    return proc, log


def stop_pipeline(proc: subprocess.Popen, log: Path) -> int:
    """Ctrl-C, as a user stops a streaming run; the CLI must exit on its own within a minute."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"the pipeline did not stop within 60 s of SIGINT:\n{_tail(log)}")
    return proc.returncode
