"""A real HTTP server on loopback for REST connector tests: paginates in every style and
injects 429s, 500s, slow responses and expiring OAuth2 tokens on request.

It is a small ``http.server`` in a thread, not a mock: the connector talks HTTP to it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ITEMS = [{"id": i, "name": f"item-{i}", "price": round(i * 1.5, 2)} for i in range(1, 48)]


@dataclass
class ApiState:
    requests: list[tuple[float, str]] = field(default_factory=list)  # (time, path?query)
    fail_next: list[int] = field(default_factory=list)  # statuses to return before succeeding
    retry_after: str = "0"
    slow_next: int = 0  # number of requests to answer after `slow_seconds`
    slow_seconds: float = 0.0
    token_lifetime: float = 3600
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    token_requests: int = 0
    received: list[tuple[str, object]] = field(default_factory=list)  # (idempotency key, body)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: ApiState):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, payload, headers: dict | None = None):
            body = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            if self.path.startswith("/oauth/token"):
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                if self.headers.get("Authorization") != "Basic Y2xpZW50OnNlY3JldA==" or form.get("grant_type") != ["client_credentials"]:
                    return self._send(401, {"error": "invalid_client"})
                with state.lock:
                    state.token_requests += 1
                    token = f"tok-{state.token_requests}"
                    state.tokens[token] = time.monotonic() + state.token_lifetime
                return self._send(200, {"access_token": token, "expires_in": 3600})
            if self.path.startswith("/ingest"):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                with state.lock:
                    state.requests.append((time.monotonic(), self.path))
                    status = state.fail_next.pop(0) if state.fail_next else None
                if status is not None:
                    return self._send(status, {"error": "injected"})
                rows = body if isinstance(body, list) else [body]
                if any(isinstance(r, dict) and r.get("reject") for r in rows):
                    return self._send(422, {"error": "row rejected by validation"})
                with state.lock:
                    state.received.append((self.headers.get("Idempotency-Key"), body))
                return self._send(201, {"ok": True})
            return self._send(404, {})

        def do_GET(self):
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            with state.lock:
                state.requests.append((time.monotonic(), self.path))
                status = state.fail_next.pop(0) if state.fail_next else None
                slow = state.slow_next > 0
                if slow:
                    state.slow_next -= 1
            if slow:
                time.sleep(state.slow_seconds)
            if status == 429:
                return self._send(429, {"error": "slow down"}, {"Retry-After": state.retry_after})
            if status is not None:
                return self._send(status, {"error": "injected"})
            if url.path.startswith("/secure"):
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ")
                expiry = state.tokens.get(token)
                if expiry is None or time.monotonic() > expiry:
                    return self._send(401, {"error": "token expired"})
                return self._send(200, {"data": ITEMS[:5]})
            if url.path == "/apikey":
                if query.get("api_key") != "k3y" and self.headers.get("X-API-Key") != "k3y":
                    return self._send(403, {"error": "forbidden"})
                return self._send(200, {"data": ITEMS[:3]})
            if url.path == "/offset":
                offset, limit = int(query.get("offset", 0)), int(query.get("limit", 10))
                return self._send(200, {"items": ITEMS[offset : offset + limit], "total": len(ITEMS)})
            if url.path == "/page":
                page, size = int(query.get("page", 1)), int(query.get("size", 10))
                return self._send(200, {"data": ITEMS[(page - 1) * size : page * size]})
            if url.path == "/cursor":
                start = int(query.get("cursor", 0))
                chunk = ITEMS[start : start + 10]
                nxt = start + 10 if start + 10 < len(ITEMS) else None
                return self._send(200, {"data": chunk, "meta": {"next": nxt}})
            if url.path == "/link":
                page = int(query.get("p", 1))
                chunk = ITEMS[(page - 1) * 10 : page * 10]
                headers = {}
                if page * 10 < len(ITEMS):
                    port = self.server.server_address[1]
                    headers["Link"] = f'<http://127.0.0.1:{port}/link?p={page + 1}>; rel="next"'
                return self._send(200, chunk, headers)
            if url.path == "/mixed":
                return self._send(200, {"data": [{"id": 1}, "not-an-object", {"id": 2}, 7]})
            return self._send(404, {"error": "no such path"})

    return Handler


class ApiServer:
    """``with ApiServer() as api: api.url('/offset')``."""

    def __init__(self):
        self.state = ApiState()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "ApiServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"
