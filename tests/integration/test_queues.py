"""RabbitMQ (real broker, scripts/services/rabbitmq.sh) and SQS (moto server,
scripts/services/moto.sh): bounded drains acknowledged only after the sinks commit."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from beam_etl.run import run_spec
from beam_etl.spec import load_spec

pytestmark = pytest.mark.integration


def env(name: str, script: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/services/{script}")
    return value


def read_ndjson(directory):
    return [json.loads(line) for f in sorted(directory.glob("*")) if f.is_file() for line in f.read_text().splitlines() if line]


def run(tmp_path, spec):
    return run_spec(load_spec(spec), ["--runner=DirectRunner"], output_dir=str(tmp_path), record_state=False)


# --------------------------------------------------------------------------- RabbitMQ


@pytest.fixture()
def rabbit():
    import pika

    url = env("BEAM_ETL_TEST_RABBITMQ_URL", "rabbitmq.sh")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    queue = f"q_{uuid.uuid4().hex[:8]}"
    channel.exchange_declare(exchange=f"{queue}_dlx", exchange_type="fanout")
    channel.queue_declare(queue=f"{queue}_dead")
    channel.queue_bind(queue=f"{queue}_dead", exchange=f"{queue}_dlx")
    channel.queue_declare(queue=queue, arguments={"x-dead-letter-exchange": f"{queue}_dlx"})
    yield url, channel, queue
    for name in (queue, f"{queue}_dead", f"{queue}_out"):
        channel.queue_delete(queue=name)
    channel.exchange_delete(exchange=f"{queue}_dlx")
    connection.close()


def depth(channel, queue: str) -> int:
    return channel.queue_declare(queue=queue, passive=True).method.message_count


def test_rabbitmq_drain_acks_after_sinks_and_dead_letters_bad_messages(tmp_path, rabbit):
    url, channel, queue = rabbit
    for i in range(25):
        channel.basic_publish("", queue, b"{broken" if i == 5 else json.dumps({"n": i}).encode())
    channel.queue_declare(queue=f"{queue}_out")
    spec = {
        "name": "rabbit",
        "sources": {"jobs": {"type": "rabbitmq", "url": url, "queue": queue, "batch_rows": 7}},
        "steps": [{"name": "big", "type": "validate", "input": "jobs", "rules": {"n": {"min": 3}}}],
        "sinks": {
            "files": {"type": "ndjson", "input": "big", "path": "out/"},
            "out": {"type": "rabbitmq", "input": "big", "url": url, "routing_key": f"{queue}_out"},
        },
    }
    report = run(tmp_path, spec)
    assert report.ok, report.error
    assert sorted(r["n"] for r in read_ndjson(tmp_path / "out")) == [i for i in range(3, 25) if i != 5]
    dlq = read_ndjson(tmp_path / "dlq")
    assert sorted(r["error_type"] for r in dlq) == ["queue.decode", "validate.min", "validate.min", "validate.min"]
    assert depth(channel, queue) == 0  # acked after the sinks
    assert depth(channel, f"{queue}_dead") == 1  # the broken one went to the dead-letter exchange
    assert depth(channel, f"{queue}_out") == 21  # published with confirms


def test_rabbitmq_failed_run_requeues_everything(tmp_path, rabbit):
    url, channel, queue = rabbit
    for i in range(5):
        channel.basic_publish("", queue, json.dumps({"n": i}).encode())
    spec = {
        "name": "rabbit_fail",
        "sources": {"jobs": {"type": "rabbitmq", "url": url, "queue": queue}},
        "steps": [{"name": "strict", "type": "validate", "input": "jobs", "on_error": "fail", "rules": {"n": {"max": 2}}}],
        "sinks": {"files": {"type": "ndjson", "input": "strict", "path": "out/"}},
    }
    report = run(tmp_path, spec)
    assert report.status == "failed"
    assert depth(channel, queue) == 5  # nothing lost: back in the queue for the rerun


def test_rabbitmq_unreachable_is_one_line(tmp_path):
    from beam_etl.errors import SourceError

    spec = {"name": "r", "sources": {"q": {"type": "rabbitmq", "url": "amqp://u:secret@127.0.0.1:1/%2F", "queue": "x"}}, "sinks": {"o": {"type": "ndjson", "input": "q", "path": "o/"}}}
    with pytest.raises(SourceError) as info:
        run(tmp_path, spec)
    assert "cannot connect" in str(info.value) and "secret" not in str(info.value)


# --------------------------------------------------------------------------- SQS


@pytest.fixture()
def sqs():
    import boto3

    endpoint = env("BEAM_ETL_TEST_MOTO_URL", "moto.sh")
    client = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test")
    url = client.create_queue(QueueName=f"q{uuid.uuid4().hex[:8]}")["QueueUrl"]
    yield endpoint, client, url
    client.delete_queue(QueueUrl=url)


def visible(client, url) -> int:
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def sqs_spec(endpoint, url, **extra):
    return {"type": "sqs", "queue_url": url, "endpoint_url": endpoint, "aws_access_key_id": "test", "aws_secret_access_key": "test", **extra}


def test_sqs_drain_deletes_only_after_success(tmp_path, sqs):
    endpoint, client, url = sqs
    for start in range(0, 30, 10):
        client.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": json.dumps({"n": i}) if i != 17 else "nope"} for i in range(start, start + 10)])
    out_url = client.create_queue(QueueName=f"out{uuid.uuid4().hex[:8]}")["QueueUrl"]
    spec = {
        "name": "sqs",
        "sources": {"q": sqs_spec(endpoint, url, wait_seconds=0)},
        "sinks": {"files": {"type": "ndjson", "input": "q", "path": "out/"}, "out": {**sqs_spec(endpoint, out_url), "input": "q"}},
    }
    report = run(tmp_path, spec)
    assert report.ok, report.error
    assert sorted(r["n"] for r in read_ndjson(tmp_path / "out")) == [i for i in range(30) if i != 17]
    assert [r["record"] for r in read_ndjson(tmp_path / "dlq")] == ["nope"]
    assert visible(client, url) == 0
    assert visible(client, out_url) == 29


def test_sqs_failed_run_makes_messages_visible_again(tmp_path, sqs):
    endpoint, client, url = sqs
    client.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": json.dumps({"n": i})} for i in range(4)])
    spec = {
        "name": "sqs_fail",
        "sources": {"q": sqs_spec(endpoint, url, wait_seconds=0)},
        "steps": [{"name": "strict", "type": "validate", "input": "q", "on_error": "fail", "rules": {"n": {"max": 1}}}],
        "sinks": {"files": {"type": "ndjson", "input": "strict", "path": "out/"}},
    }
    assert run(tmp_path, spec).status == "failed"
    received = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert len(received.get("Messages", [])) == 4  # visible again right away
