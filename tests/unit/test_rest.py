"""REST source against a real HTTP server on loopback (tests/support/http_api.py)."""

from __future__ import annotations

import time

import pytest

from beam_etl.errors import SourceError
from beam_etl.io.resilience import CircuitBreaker, CircuitOpenError, RateLimiter, RetryPolicy, TransientError
from beam_etl.io.rest import RestClient, RestSource, iter_pages, json_path
from tests.support.http_api import ITEMS, ApiServer


@pytest.fixture()
def api():
    with ApiServer() as server:
        yield server


def read_all(spec: dict) -> list[dict]:
    source = RestSource.model_validate({"type": "rest", "retry": {"initial_backoff": 0.01, "max_backoff": 0.05}, **spec})
    client = RestClient(source, "test")
    try:
        return [record for _, records in iter_pages(client, source) for record in records]
    finally:
        client.close()


@pytest.mark.parametrize(
    "path, pagination, records_path",
    [
        ("/offset", {"type": "offset", "limit": 10}, "items"),
        ("/offset", {"type": "offset", "limit": 10, "total_path": "total"}, "items"),  # parallel pages
        ("/page", {"type": "page", "size_param": "size", "limit": 7}, "data"),
        ("/cursor", {"type": "cursor", "cursor_path": "meta.next"}, "data"),
        ("/link", {"type": "link"}, None),
    ],
)
def test_every_pagination_style_reads_every_record_once(api, path, pagination, records_path):
    records = read_all({"url": api.url(path), "pagination": pagination, "records_path": records_path})
    assert sorted(r["id"] for r in records) == [item["id"] for item in ITEMS]


def test_max_pages_stops_early(api):
    records = read_all({"url": api.url("/cursor"), "pagination": {"type": "cursor", "cursor_path": "meta.next", "max_pages": 2}, "records_path": "data"})
    assert len(records) == 20


def test_retries_500s_and_429_with_retry_after(api):
    api.state.fail_next = [500, 503, 429]
    api.state.retry_after = "0.3"
    started = time.monotonic()
    records = read_all({"url": api.url("/page"), "pagination": {"type": "none"}, "records_path": "data"})
    assert [r["id"] for r in records] == list(range(1, 11))
    assert time.monotonic() - started >= 0.3  # Retry-After honoured
    assert len(api.state.requests) == 4


def test_gives_up_with_a_clear_error_after_max_attempts(api):
    api.state.fail_next = [500] * 10
    with pytest.raises(SourceError, match="giving up after 3 attempts: HTTP 500"):
        read_all({"url": api.url("/page"), "retry": {"max_attempts": 3, "initial_backoff": 0.01}})


def test_circuit_breaker_opens_after_consecutive_failures(api):
    api.state.fail_next = [500] * 10
    with pytest.raises(SourceError, match="circuit open after 2 consecutive failures"):
        read_all({"url": api.url("/page"), "circuit_breaker": 2, "retry": {"max_attempts": 5, "initial_backoff": 0.01}})
    assert len(api.state.requests) == 2  # no hammering once open


def test_timeout_is_retried(api):
    api.state.slow_next, api.state.slow_seconds = 1, 1.0
    records = read_all({"url": api.url("/page"), "timeout": 0.3, "records_path": "data"})
    assert len(records) == 10 and len(api.state.requests) == 2


def test_rate_limit_measured_at_the_server(api):
    read_all({"url": api.url("/page"), "pagination": {"type": "page", "size_param": "size", "limit": 5}, "records_path": "data", "rate_limit": {"requests_per_second": 10, "burst": 1}})
    times = [t for t, _ in api.state.requests]
    assert len(times) == 11  # 10 pages of 5 + the empty page that stops
    # 11 requests at 10/s with no burst take at least 1 s, and no 0.5 s window holds more
    # than 5 (+1 for the window edge): the bucket spaces them out, however the server is loaded
    assert times[-1] - times[0] >= 0.95
    assert max(sum(1 for t in times if start <= t < start + 0.5) for start in times) <= 6


def test_api_key_in_header_and_query(api):
    assert len(read_all({"url": api.url("/apikey"), "auth": {"type": "api_key", "name": "X-API-Key", "value": "k3y"}, "records_path": "data"})) == 3
    assert len(read_all({"url": api.url("/apikey"), "auth": {"type": "api_key", "name": "api_key", "value": "k3y", "in": "query"}, "records_path": "data"})) == 3
    with pytest.raises(SourceError, match="HTTP 403"):
        read_all({"url": api.url("/apikey"), "auth": {"type": "api_key", "value": "wrong"}})


def test_oauth2_token_refreshes_when_it_expires_mid_run(api):
    spec = {"url": api.url("/secure"), "records_path": "data", "auth": {"type": "oauth2", "token_url": api.url("/oauth/token"), "client_id": "client", "client_secret": "secret"}}
    source = RestSource.model_validate({"type": "rest", **spec})
    client = RestClient(source, "test")
    assert len(client.get(api.url("/secure"))[0]["data"]) == 5
    api.state.tokens = {k: 0 for k in api.state.tokens}  # every issued token expires now
    assert len(client.get(api.url("/secure"))[0]["data"]) == 5
    assert api.state.token_requests == 2
    client.close()


def test_secrets_do_not_leak_into_errors(api):
    with pytest.raises(SourceError) as info:
        read_all({"url": api.url("/apikey?api_key=supersecret"), "auth": {"type": "bearer", "token": "tok-secret"}})
    assert "supersecret" not in str(info.value) and "tok-secret" not in str(info.value)


def test_json_path():
    assert json_path({"a": {"b": [{"c": 1}]}}, "a.b.0.c") == 1
    assert json_path({"a": {}}, "a.b.c") is None


def test_rate_limiter_and_breaker_units():
    clock = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    limiter = RateLimiter(2, burst=1, clock=lambda: clock[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire()
    assert sum(sleeps) == pytest.approx(1.0)
    breaker = CircuitBreaker(1, name="x")
    with pytest.raises(ValueError):
        breaker.call(lambda: (_ for _ in ()).throw(ValueError("boom")))
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: 1)
    policy = RetryPolicy(max_attempts=2, initial_backoff=0, sleep=lambda s: None)
    with pytest.raises(TransientError):
        policy.call(lambda: (_ for _ in ()).throw(TransientError("x")))


def test_rest_sink_in_a_pipeline_batches_retries_and_dead_letters(api):
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.testing.util import assert_that, equal_to

    from beam_etl.io.inline import ReadInline
    from beam_etl.io.rest import WriteToRest

    rows = [{"id": i, "reject": i == 7} for i in range(10)]
    api.state.fail_next = [500]  # the first request fails once, then succeeds on retry
    with beam.Pipeline(runner="DirectRunner") as p:
        batches = (p | ReadInline("rows", rows, batch_rows=10)).main
        result = batches | WriteToRest(
            "api", {"type": "rest", "input": "rows", "url": api.url("/ingest"), "batch_size": 4, "retry": {"initial_backoff": 0.01}}
        )
        dead = result.dlq | beam.FlatMap(lambda b: [(r["error_message"][:8], __import__("json").loads(r["record"])["id"]) for r in b.to_pylist()])
        assert_that(dead, equal_to([("HTTP 422", 4), ("HTTP 422", 5), ("HTTP 422", 6), ("HTTP 422", 7)]))
    sent = sorted(row["id"] for _, body in api.state.received for row in body)
    assert sent == [0, 1, 2, 3, 8, 9]  # chunks [0-3] (after a retry) and [8, 9]; [4-7] rejected
    keys = [key for key, _ in api.state.received]
    assert all(keys) and len(set(keys)) == len(keys)


def test_rest_sink_idempotency_key_is_stable_for_the_same_rows(api):
    from beam_etl.io.rest import RestSink, _WriteRestFn

    fn = _WriteRestFn("api", RestSink.model_validate({"type": "rest", "input": "x", "url": api.url("/ingest")}))
    fn.setup()
    import pyarrow as pa

    batch = pa.RecordBatch.from_pylist([{"id": 1}, {"id": 2}])
    list(fn.process(batch))
    list(fn.process(batch))
    first, second = api.state.received
    assert first[0] == second[0]
    fn.teardown()
