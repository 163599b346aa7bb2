"""``rest`` source: authenticated, paginated, rate-limited HTTP JSON APIs (httpx + tenacity).

Pagination styles: ``offset`` (offset/limit), ``page`` (page number), ``cursor`` (next
cursor from a JSON path), ``link`` (RFC 8288 ``Link: <...>; rel="next"``), or ``none``.
Pages stop on an empty page, when ``total`` (from a JSON path) is reached, or at
``max_pages``. For ``offset``/``page`` with a known total the remaining pages are fetched in
parallel (``parallel`` workers) after the first page tells the total.

Auth: ``bearer``, ``basic``, ``api_key`` (header or query), ``oauth2`` client credentials
(token fetched, cached and refreshed on expiry or on a 401). Secrets come from
``${env:..}`` and never appear in errors, logs or DLQ rows.

Every request goes through one token bucket (``rate_limit``), retries with exponential
backoff and jitter on 5xx, 429 (honouring ``Retry-After``) and timeouts, and a circuit
breaker that fails the source after ``circuit_breaker`` consecutive failures. Records that
are not JSON objects go to the DLQ with the URL they came from.

Example spec::

    sources:
      users:
        type: rest
        url: https://api.example.com/v1/users
        auth: {type: bearer, token: "${env:API_TOKEN}"}
        pagination: {type: cursor, cursor_path: meta.next_cursor, cursor_param: cursor}
        records_path: data
        rate_limit: {requests_per_second: 5}
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import threading
import time
from typing import Any, Iterator, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit, parse_qsl

import apache_beam as beam
import pyarrow as pa
from pydantic import Field

from beam_etl.batch import rows_to_batch, split_batch
from beam_etl.dlq import dlq_batch
from beam_etl.errors import SourceError
from beam_etl.io.resilience import (
    CircuitBreaker,
    RateLimiter,
    RateLimitSpec,
    RetryAfter,
    RetryPolicy,
    RetrySpec,
    TransientError,
)
from beam_etl.models import SinkModel, SourceModel, StrictModel, schema_from_spec
from beam_etl.registry import register_sink, register_source
from beam_etl.steps import BuildContext, StepCounters, StepOutputs

__all__ = ["RestSource", "RestSink", "ReadFromRest", "WriteToRest", "RestClient", "HttpOptions", "json_path"]


# --------------------------------------------------------------------------- spec


class AuthSpec(StrictModel):
    type: Literal["none", "bearer", "basic", "api_key", "oauth2"] = "none"
    token: str | None = None
    username: str | None = None
    password: str | None = None
    name: str | None = Field(default=None, description="api_key: header or query parameter name")
    value: str | None = None
    location: Literal["header", "query"] = Field(default="header", alias="in")
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None


class PaginationSpec(StrictModel):
    type: Literal["none", "offset", "page", "cursor", "link"] = "none"
    limit: int = Field(default=100, gt=0, description="offset: page size")
    limit_param: str = "limit"
    offset_param: str = "offset"
    page_param: str = "page"
    size_param: str | None = None
    start_page: int = 1
    cursor_path: str | None = None
    cursor_param: str = "cursor"
    total_path: str | None = None
    max_pages: int | None = Field(default=None, gt=0)


class HttpOptions(StrictModel):
    """What every HTTP connector (source or sink) shares."""

    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    auth: AuthSpec = Field(default_factory=AuthSpec)
    timeout: float = Field(default=30.0, gt=0)
    rate_limit: RateLimitSpec | None = None
    retry: RetrySpec = Field(default_factory=RetrySpec)
    circuit_breaker: int = Field(default=5, ge=1)


class RestSource(SourceModel, HttpOptions):
    type: Literal["rest"]
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, Any] = Field(default_factory=dict)
    body: dict[str, Any] | None = None
    pagination: PaginationSpec = Field(default_factory=PaginationSpec)
    records_path: str | None = None
    parallel: int = Field(default=4, ge=1)


def json_path(document: Any, path: str | None) -> Any:
    """``a.b.0.c`` into nested dicts/lists; None when any part is missing."""
    if not path:
        return document
    current = document
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else None
        else:
            return None
        if current is None:
            return None
    return current


# --------------------------------------------------------------------------- client


class RestClient:
    """One authenticated, rate-limited, retrying HTTP client per worker (thread-safe)."""

    def __init__(self, spec: HttpOptions, name: str = "rest"):
        import httpx

        self.spec = spec
        self.name = name
        self._http = httpx.Client(timeout=spec.timeout, follow_redirects=True)
        self._limiter = RateLimiter.from_spec(spec.rate_limit)
        self._retry = RetryPolicy.from_spec(spec.retry)
        self._breaker = CircuitBreaker(spec.circuit_breaker, name=f"'{name}' ({_redact_url(spec.url)})")
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    def close(self) -> None:
        self._http.close()

    # auth
    def _oauth_token(self, force: bool = False) -> str:
        with self._token_lock:
            if self._token and not force and time.monotonic() < self._token_expires:
                return self._token
            auth = self.spec.auth
            response = self._http.post(
                auth.token_url,
                data={"grant_type": "client_credentials", **({"scope": auth.scope} if auth.scope else {})},
                auth=(auth.client_id or "", auth.client_secret or ""),
            )
            if response.status_code >= 400:
                raise SourceError(f"'{self.name}': OAuth2 token request failed with HTTP {response.status_code}; check client_id/client_secret")
            payload = response.json()
            self._token = payload["access_token"]
            # Refresh a little early so a token never expires mid-request.
            self._token_expires = time.monotonic() + float(payload.get("expires_in", 3600)) * 0.9
            return self._token

    def _auth(self, headers: dict[str, str], params: dict[str, Any], force_refresh: bool = False) -> None:
        auth = self.spec.auth
        if auth.type == "bearer":
            headers["Authorization"] = f"Bearer {auth.token}"
        elif auth.type == "basic":
            raw = f"{auth.username or ''}:{auth.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif auth.type == "api_key":
            if auth.location == "query":
                params[auth.name or "api_key"] = auth.value
            else:
                headers[auth.name or "X-API-Key"] = auth.value or ""
        elif auth.type == "oauth2":
            headers["Authorization"] = f"Bearer {self._oauth_token(force_refresh)}"

    def get(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """(parsed JSON, response) for one page, with rate limit, retries and breaker."""
        method = getattr(self.spec, "method", "GET")
        response = self.request(method, url, params=params, json_body=getattr(self.spec, "body", None))
        try:
            return response.json(), response
        except ValueError:
            raise SourceError(f"source '{self.name}': {_redact_url(url)} did not return JSON") from None

    def request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        raise_client_errors: bool = True,
    ):
        """One HTTP exchange with auth, rate limit, retries (5xx, 429, timeouts) and breaker.

        Returns the response. A 4xx other than 429 raises :class:`SourceError` unless
        ``raise_client_errors`` is false (sinks report those rows to the DLQ instead).
        """

        state = {"refresh_token": False}

        def attempt() -> tuple[Any, Any]:
            import httpx

            request_headers = {**self.spec.headers, **(headers or {})}
            query = dict(params or {})
            self._auth(request_headers, query, state["refresh_token"])
            state["refresh_token"] = False
            if self._limiter is not None:
                self._limiter.acquire()
            try:
                response = self._http.request(method, url, params=query or None, headers=request_headers, json=json_body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                raise TransientError(f"{type(exc).__name__} for {_redact_url(url)}") from None
            status = response.status_code
            if status == 429 or (status == 503 and "retry-after" in response.headers):
                seconds = _retry_after(response.headers.get("retry-after"))
                if self._limiter is not None:
                    self._limiter.pause(seconds)
                raise RetryAfter(seconds, f"HTTP {status} from {_redact_url(url)}")
            if status == 401 and self.spec.auth.type == "oauth2":
                state["refresh_token"] = True  # the token expired early: fetch a new one and retry
                raise TransientError(f"HTTP 401 from {_redact_url(url)}")
            if status >= 500:
                raise TransientError(f"HTTP {status} from {_redact_url(url)}")
            if status >= 400 and raise_client_errors:
                raise SourceError(f"'{self.name}': HTTP {status} from {_redact_url(url)}: {response.text[:200]}")
            return response

        try:
            return self._retry.call(lambda: self._breaker.call(attempt))
        except TransientError as exc:
            raise SourceError(
                f"'{self.name}': giving up after {self.spec.retry.max_attempts} attempts: {exc}"
            ) from None


def _retry_after(value: str | None) -> float:
    if not value:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return 1.0


def _redact_url(url: str) -> str:
    """The URL without credentials or query values that look secret."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = [(k, "***" if any(s in k.lower() for s in ("key", "token", "secret", "password", "sig")) else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


# --------------------------------------------------------------------------- pagination


def _records_of(spec: RestSource, payload: Any) -> list[Any]:
    records = json_path(payload, spec.records_path)
    if records is None:
        return []
    return records if isinstance(records, list) else [records]


def _next_link(response: Any) -> str | None:
    links = getattr(response, "links", None) or {}
    nxt = links.get("next")
    return nxt.get("url") if nxt else None


def iter_pages(client: RestClient, spec: RestSource) -> Iterator[tuple[str, list[Any]]]:
    """``(url, records)`` for each page, following the spec's pagination style."""
    pagination = spec.pagination
    params = dict(spec.params)
    style = pagination.type
    max_pages = pagination.max_pages
    if style == "none":
        payload, _ = client.get(spec.url, params)
        yield spec.url, _records_of(spec, payload)
        return
    if style in ("offset", "page"):
        yield from _numbered_pages(client, spec, params)
        return
    url: str | None = spec.url
    pages = 0
    while url is not None and (max_pages is None or pages < max_pages):
        payload, response = client.get(url, params)
        pages += 1
        records = _records_of(spec, payload)
        yield str(response.url), records
        if not records:
            return
        if style == "cursor":
            cursor = json_path(payload, pagination.cursor_path)
            if cursor in (None, ""):
                return
            params = {**params, pagination.cursor_param: cursor}
        else:  # link
            url = _next_link(response)
            params = {}  # the next link carries its own query


def _numbered_pages(client: RestClient, spec: RestSource, params: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    pagination = spec.pagination

    def page_params(index: int) -> dict[str, Any]:
        if pagination.type == "offset":
            return {**params, pagination.offset_param: index * pagination.limit, pagination.limit_param: pagination.limit}
        query = {**params, pagination.page_param: pagination.start_page + index}
        if pagination.size_param:
            query[pagination.size_param] = pagination.limit
        return query

    def fetch(index: int) -> tuple[str, list[Any], Any]:
        payload, response = client.get(spec.url, page_params(index))
        return str(response.url), _records_of(spec, payload), payload

    url, records, payload = fetch(0)
    yield url, records
    total = json_path(payload, pagination.total_path) if pagination.total_path else None
    limit = pagination.max_pages
    if total is not None and records:
        # The total is known: the remaining pages are independent, fetch them in parallel.
        pages = -(-int(total) // len(records)) if pagination.type == "page" else -(-int(total) // pagination.limit)
        if limit is not None:
            pages = min(pages, limit)
        with concurrent.futures.ThreadPoolExecutor(max_workers=spec.parallel) as pool:
            for url, records, _ in pool.map(fetch, range(1, pages)):
                yield url, records
        return
    index = 1
    while records and (limit is None or index < limit):
        url, records, _ = fetch(index)
        index += 1
        if records:
            yield url, records


# --------------------------------------------------------------------------- Beam


class _ReadRestFn(beam.DoFn):
    def __init__(self, name: str, spec: RestSource, schema: pa.Schema | None, batch_rows: int):
        self._name = name
        self._spec = spec
        self._schema = schema
        self._batch_rows = batch_rows

    def setup(self) -> None:
        self._client = RestClient(self._spec, self._name)
        self._counters = StepCounters("source", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def teardown(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()

    def process(self, _seed: Any):
        pending: list[dict] = []
        for url, records in iter_pages(self._client, self._spec):
            good = [r for r in records if isinstance(r, dict)]
            bad = [r for r in records if not isinstance(r, dict)]
            if bad:
                self._counters.rows_dlq.inc(len(bad))
                yield beam.pvalue.TaggedOutput(
                    "dlq",
                    dlq_batch(
                        None,
                        step=self._name,
                        error_type="rest.record",
                        error_message=[f"record is a {type(r).__name__}, not a JSON object" for r in bad],
                        source=_redact_url(url),
                        records=[json.dumps(r) for r in bad],
                    ),
                )
            pending.extend(good)
            if len(pending) >= self._batch_rows:
                yield from self._emit(pending, url)
                pending = []
        if pending:
            yield from self._emit(pending, self._spec.url)

    def _emit(self, rows: list[dict], url: str):
        try:
            batch = rows_to_batch(rows, self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            # Mixed types across records: build column by column as strings would hide the
            # problem; instead route each record that does not fit the first record's types.
            yield from self._emit_row_by_row(rows, url)
            return
        for part in split_batch(batch, self._batch_rows):
            self._counters.rows_out.inc(part.num_rows)
            yield part

    def _emit_row_by_row(self, rows: list[dict], url: str):
        schema = self._schema or rows_to_batch(rows[:1]).schema
        good, bad, reasons = [], [], []
        for row in rows:  # only on the rare mixed-type page
            try:
                rows_to_batch([row], schema)
                good.append(row)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
                bad.append(row)
                reasons.append(f"record does not fit the schema: {exc}")
        if bad:
            self._counters.rows_dlq.inc(len(bad))
            yield beam.pvalue.TaggedOutput(
                "dlq",
                dlq_batch(None, step=self._name, error_type="rest.schema", error_message=reasons, source=_redact_url(url), records=[json.dumps(r, default=str) for r in bad]),
            )
        if good:
            batch = rows_to_batch(good, schema)
            self._counters.rows_out.inc(batch.num_rows)
            yield batch


class ReadFromRest(beam.PTransform):
    """Read a paginated JSON API into RecordBatches.

    Args:
        name: the source name (counters, DLQ rows, error messages).
        spec: a :class:`RestSource` (or the dict of one).
        batch_rows: rows per batch.

    Example:
        >>> p | ReadFromRest("users", {"type": "rest", "url": "http://localhost:8000/users",
        ...                            "pagination": {"type": "page"}, "records_path": "data"})  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: RestSource | dict, batch_rows: int = 65_536):
        super().__init__()
        self._name = name
        self._spec = spec if isinstance(spec, RestSource) else RestSource.model_validate(spec)
        self._batch_rows = self._spec.batch_rows or batch_rows

    def expand(self, pbegin) -> StepOutputs:
        results = (
            pbegin
            | "seed" >> beam.Create([None])
            | "fetch" >> beam.ParDo(_ReadRestFn(self._name, self._spec, schema_from_spec(self._spec.schema_), self._batch_rows)).with_outputs("dlq", main="main")
        )
        results.main.element_type = pa.RecordBatch
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


@register_source("rest", RestSource)
def build_rest(spec: RestSource, root, ctx: BuildContext) -> StepOutputs:
    return root | ctx.label() >> ReadFromRest(ctx.name, spec, ctx.batch_rows)


# --------------------------------------------------------------------------- sink


class RestSink(SinkModel, HttpOptions):
    """``rest`` sink: POST/PUT rows as JSON, in batches or one per request.

    Each request carries an idempotency key header derived from its body (the same rows
    give the same key on a retry or a rerun), so a server that honours it applies each
    batch once. Responses other than 2xx after retries become DLQ rows with the status
    and the response body.
    """

    type: Literal["rest"]
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    batch_size: int = Field(default=100, ge=1, description="rows per request when mode is batch")
    mode: Literal["batch", "single"] = "batch"
    wrap: str | None = Field(default=None, description="send {wrap: [rows]} instead of a bare array")
    idempotency_header: str | None = "Idempotency-Key"


def _request_bodies(rows: list[dict], spec: RestSink) -> Iterator[tuple[list[dict], Any]]:
    if spec.mode == "single":
        for row in rows:
            yield [row], row
        return
    for start in range(0, len(rows), spec.batch_size):
        chunk = rows[start : start + spec.batch_size]
        yield chunk, ({spec.wrap: chunk} if spec.wrap else chunk)


class _WriteRestFn(beam.DoFn):
    def __init__(self, name: str, spec: RestSink):
        self._name = name
        self._spec = spec

    def setup(self) -> None:
        self._client = RestClient(self._spec, self._name)
        self._counters = StepCounters("sink", self._name)

    def start_bundle(self) -> None:
        self._counters.announce()  # see StepCounters.announce

    def teardown(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()

    def process(self, batch: pa.RecordBatch):
        import hashlib

        from beam_etl.batch import to_json_value

        self._counters.rows_in.inc(batch.num_rows)
        # HTTP bodies are JSON documents: rows become Python dicts here, at the edge (DESIGN §3).
        rows = [to_json_value(row) for row in batch.to_pylist()]
        failed_rows, reasons = [], []
        for chunk, body in _request_bodies(rows, self._spec):
            text = json.dumps(body, sort_keys=True)
            headers = {}
            if self._spec.idempotency_header:
                headers[self._spec.idempotency_header] = hashlib.sha256(text.encode()).hexdigest()[:32]
            try:
                response = self._client.request(self._spec.method, self._spec.url, json_body=body, headers=headers, raise_client_errors=False)
                reason = None if response.status_code < 300 else f"HTTP {response.status_code}: {response.text[:500]}"
            except SourceError as exc:
                reason = str(exc)
            if reason is None:
                self._counters.rows_out.inc(len(chunk))
            else:
                failed_rows.extend(chunk)
                reasons.extend([reason] * len(chunk))
        if failed_rows:
            self._counters.rows_dlq.inc(len(failed_rows))
            yield beam.pvalue.TaggedOutput(
                "dlq",
                dlq_batch(
                    None,
                    step=self._name,
                    error_type="rest.write",
                    error_message=reasons,
                    source=_redact_url(self._spec.url),
                    records=[json.dumps(row) for row in failed_rows],
                ),
            )


class WriteToRest(beam.PTransform):
    """Send batches to an HTTP endpoint; failed requests' rows go to the ``dlq`` output.

    Example:
        >>> batches | WriteToRest("api", {"type": "rest", "input": "x", "url": "http://localhost:8000/ingest",
        ...                               "batch_size": 500})  # doctest: +SKIP
    """

    def __init__(self, name: str, spec: RestSink | dict):
        super().__init__()
        self._name = name
        self._spec = spec if isinstance(spec, RestSink) else RestSink.model_validate(spec)

    def expand(self, pcoll) -> StepOutputs:
        results = pcoll | "send" >> beam.ParDo(_WriteRestFn(self._name, self._spec)).with_outputs("dlq", main="main")
        results.dlq.element_type = pa.RecordBatch
        return StepOutputs(main=results.main, dlq=results.dlq)


@register_sink("rest", RestSink)
def build_rest_sink(spec: RestSink, pcoll, ctx: BuildContext) -> StepOutputs:
    return pcoll | ctx.label() >> WriteToRest(ctx.name, spec)
