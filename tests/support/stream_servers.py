"""Real WebSocket and Server-Sent Events servers on loopback for the stream source tests.

Both can drop the connection after a number of messages, to exercise reconnects.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class WebSocketServer:
    """Sends ``messages`` (in order, across connections) to each client; drops after ``drop_every``."""

    def __init__(self, messages: list[str], drop_every: int | None = None):
        from websockets.sync.server import serve

        self.messages = messages
        self.drop_every = drop_every
        self.position = 0
        self.connections = 0
        self.subscriptions: list[str] = []
        self._lock = threading.Lock()
        self._server = serve(self._handle, "127.0.0.1", 0)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handle(self, websocket) -> None:
        with self._lock:
            self.connections += 1
        try:
            self.subscriptions.append(websocket.recv(timeout=0.5))
        except TimeoutError:
            pass
        sent = 0
        while True:
            with self._lock:
                if self.position >= len(self.messages):
                    break
                message = self.messages[self.position]
                self.position += 1
            websocket.send(message)
            sent += 1
            if self.drop_every and sent >= self.drop_every:
                websocket.close()  # the server drops the connection mid-stream
                return
        time.sleep(5)  # stay open, idle

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()


class SseServer:
    """Serves events id 1..n; each connection ends after ``drop_every`` events; honours Last-Event-ID."""

    def __init__(self, events: list[tuple[str, str]], drop_every: int | None = None):
        self.events = events  # (event type, data)
        self.drop_every = drop_every
        self.last_event_ids: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                last = self.headers.get("Last-Event-ID")
                server.last_event_ids.append(last)
                start = int(last) if last else 0
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                sent = 0
                for index in range(start, len(server.events)):
                    kind, data = server.events[index]
                    self.wfile.write(f"id: {index + 1}\nevent: {kind}\ndata: {data}\n\n".encode())
                    self.wfile.flush()
                    sent += 1
                    if server.drop_every and sent >= server.drop_every and index + 1 < len(server.events):
                        return  # close mid-stream
                time.sleep(3)  # all sent: stay open, idle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/events"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


def json_messages(n: int, bad: set[int] = frozenset()) -> list[str]:
    return ["{not json" if i in bad else json.dumps({"seq": i, "value": i * 2}) for i in range(n)]
