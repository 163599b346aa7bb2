"""Kafka source and sink against a real single-node KRaft broker (scripts/services/kafka.sh)."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from beam_etl.run import run_spec
from beam_etl.spec import load_spec

pytestmark = pytest.mark.integration


@pytest.fixture()
def kafka():
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    bootstrap = os.environ.get("BEAM_ETL_TEST_KAFKA_BOOTSTRAP")
    if not bootstrap:
        pytest.fail("BEAM_ETL_TEST_KAFKA_BOOTSTRAP is not set: run scripts/services/kafka.sh")
    topic = f"t{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1), NewTopic(f"{topic}_out", num_partitions=1, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    yield bootstrap, topic, producer
    producer.close()
    admin.delete_topics([topic, f"{topic}_out"])
    admin.close()


def produce(producer, topic, values, start=0):
    for i, value in enumerate(values, start):
        producer.send(topic, key=str(i).encode(), value=value, headers=[("source", b"test")])
    producer.flush()


def consume_all(bootstrap, topic):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000, group_id=None)
    records = [(r.key, json.loads(r.value)) for r in consumer]
    consumer.close()
    return records


def read_ndjson(directory):
    return [json.loads(line) for f in sorted(directory.glob("*")) if f.is_file() for line in f.read_text().splitlines() if line]


def spec_for(bootstrap, topic, steps=None, sinks=None):
    return {
        "name": f"kafka_{topic}",
        "sources": {"events": {"type": "kafka", "bootstrap_servers": bootstrap, "topic": topic, "group_id": f"g_{topic}", "batch_rows": 7}},
        "steps": steps or [],
        "sinks": sinks or {"files": {"type": "ndjson", "input": (steps[-1]["name"] if steps else "events"), "path": "out/"}},
    }


def run(path, spec):
    return run_spec(load_spec(spec), ["--runner=DirectRunner"], output_dir=str(path), record_state=False)


def test_bounded_read_commits_offsets_only_after_success(tmp_path, kafka):
    bootstrap, topic, producer = kafka
    produce(producer, topic, [b"not json" if i == 4 else json.dumps({"n": i}).encode() for i in range(30)])
    sinks = {
        "files": {"type": "ndjson", "input": "events", "path": "out/"},
        "out": {"type": "kafka", "input": "events", "bootstrap_servers": bootstrap, "topic": f"{topic}_out", "key": "n"},
    }
    first = run(tmp_path / "1", spec_for(bootstrap, topic, sinks=sinks))
    assert first.ok, first.error
    rows = read_ndjson(tmp_path / "1" / "out")
    assert sorted(r["n"] for r in rows) == [i for i in range(30) if i != 4]
    assert {r["_partition"] for r in rows} == {0, 1, 2} and all(r["_headers"] == '{"source": "test"}' for r in rows)
    assert [r["record"] for r in read_ndjson(tmp_path / "1" / "dlq")] == ["not json"]
    produced = consume_all(bootstrap, f"{topic}_out")
    assert sorted(value["n"] for _, value in produced) == [i for i in range(30) if i != 4]
    assert all(key == str(value["n"]).encode() for key, value in produced)

    # offsets were committed: a second run reads only what arrived since
    produce(producer, topic, [json.dumps({"n": i}).encode() for i in range(30, 35)], start=30)
    second = run(tmp_path / "2", spec_for(bootstrap, topic))
    assert second.ok, second.error
    assert sorted(r["n"] for r in read_ndjson(tmp_path / "2" / "out")) == list(range(30, 35))


def test_failed_run_does_not_commit(tmp_path, kafka):
    bootstrap, topic, producer = kafka
    produce(producer, topic, [json.dumps({"n": i}).encode() for i in range(6)])
    failing = spec_for(bootstrap, topic, steps=[{"name": "strict", "type": "validate", "input": "events", "on_error": "fail", "rules": {"n": {"max": 3}}}])
    assert run(tmp_path / "1", failing).status == "failed"
    again = run(tmp_path / "2", spec_for(bootstrap, topic))
    assert again.ok, again.error
    assert sorted(r["n"] for r in read_ndjson(tmp_path / "2" / "out")) == list(range(6))  # nothing skipped


def test_unknown_topic_is_a_clear_error(tmp_path, kafka):
    from beam_etl.errors import SourceError

    bootstrap, _, _ = kafka
    with pytest.raises(SourceError, match="topic 'no_such_topic' does not exist"):
        run(tmp_path, spec_for(bootstrap, "no_such_topic"))
