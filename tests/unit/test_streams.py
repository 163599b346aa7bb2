"""WebSocket and SSE sources against real servers on loopback: reconnects, resume, DLQ."""

from __future__ import annotations

import pyarrow as pa

from beam_etl.io.microbatch import MicroBatcher
from beam_etl.io.streams import SseSource, WebSocketSource, _ReadStreamFn
from tests.support.stream_servers import SseServer, WebSocketServer, json_messages


def drain(spec, name="s", batch_rows=1000):
    fn = _ReadStreamFn(name, spec, batch_rows)
    fn.setup()
    out, dead = [], []
    try:
        for item in fn.process(None):
            if isinstance(item, pa.RecordBatch):
                out.extend(item.to_pylist())
            else:
                dead.extend(item.value.to_pylist())
    finally:
        fn.teardown()
    return out, dead, fn


def test_websocket_bounded_reads_everything_across_dropped_connections():
    with WebSocketServer(json_messages(25, bad={7}), drop_every=10) as server:
        spec = WebSocketSource(type="websocket", url=server.url, max_messages=25, max_seconds=20, subscribe={"op": "subscribe"})
        rows, dead, fn = drain(spec)
    assert sorted(r["seq"] for r in rows) == [i for i in range(25) if i != 7]
    assert len(dead) == 1 and dead[0]["error_type"] == "stream.parse" and dead[0]["record"] == "{not json"
    assert server.connections == 3 and fn._reader.reconnects == 2
    assert server.subscriptions[0] == '{"op": "subscribe"}'  # resent after every reconnect
    assert len(server.subscriptions) == 3


def test_websocket_max_seconds_stops_an_idle_stream():
    with WebSocketServer(json_messages(3)) as server:
        rows, _, _ = drain(WebSocketSource(type="websocket", url=server.url, max_seconds=1.0))
    assert len(rows) == 3


def test_websocket_unreachable_fails_clearly():
    import pytest

    from beam_etl.errors import SourceError

    spec = WebSocketSource(type="websocket", url="ws://127.0.0.1:1", max_seconds=30, reconnect={"max_attempts": 2, "initial_backoff": 0.01})
    with pytest.raises(SourceError, match="2 connection attempts failed in a row"):
        drain(spec)


def test_sse_resumes_with_last_event_id_and_filters_event_types():
    events = [("tick" if i % 5 else "heartbeat", f'{{"seq": {i}}}') for i in range(30)]
    with SseServer(events, drop_every=8) as server:
        spec = SseSource(type="sse", url=server.url, events=["tick"], max_seconds=15, max_messages=24)
        rows, dead, fn = drain(spec)
    assert sorted(r["seq"] for r in rows) == [i for i in range(30) if i % 5]  # nothing lost or repeated
    assert server.last_event_ids[:4] == [None, "8", "16", "24"]
    assert dead == []


def test_microbatcher_flushes_by_count_and_time_and_routes_misfits():
    clock = [0.0]
    batcher = MicroBatcher(max_rows=3, max_seconds=5, schema=pa.schema([("a", pa.int64())]), clock=lambda: clock[0])
    assert list(batcher.add_text('{"a": 1}', "src")) == []
    clock[0] = 6
    (batch,) = list(batcher.add_text('[{"a": 2}, {"a": "x"}]', "src"))
    assert batch.column("a").to_pylist() == [1, 2]
    assert batcher.take_dead()[0].column("error_type").to_pylist() == ["stream.schema"]
