"""Retries with backoff, rate limiting and a circuit breaker — one helper for every connector.

REST sources and sinks use it today; the broker connectors (Kafka, RabbitMQ, SQS) and the
WebSocket/SSE streams use the same pieces, so a retry policy reads the same everywhere.

Retries are tenacity's (exponential backoff with full jitter); the token bucket and the
circuit breaker are small classes here because tenacity has neither.

Example:
    >>> policy = RetryPolicy(max_attempts=3, initial_backoff=0.01)
    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise TransientError("try again")
    ...     return "ok"
    >>> policy.call(flaky)
    'ok'
"""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

import tenacity
from pydantic import Field

from beam_etl.errors import SourceError
from beam_etl.models import StrictModel

__all__ = [
    "TransientError",
    "RetryAfter",
    "CircuitOpenError",
    "RetryPolicy",
    "RetrySpec",
    "RateLimiter",
    "RateLimitSpec",
    "CircuitBreaker",
]

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth retrying (5xx, timeout, dropped connection)."""


class RetryAfter(TransientError):
    """The server asked us to wait ``seconds`` (HTTP 429 / 503 with ``Retry-After``)."""

    def __init__(self, seconds: float, message: str = ""):
        super().__init__(message or f"retry after {seconds:.1f} s")
        self.seconds = seconds


class CircuitOpenError(SourceError):
    """Too many consecutive failures: the connector stops instead of hammering the server."""


class RetrySpec(StrictModel):
    """Spec block ``retry:``."""

    max_attempts: int = Field(default=5, ge=1)
    initial_backoff: float = Field(default=0.5, ge=0)
    max_backoff: float = Field(default=30.0, ge=0)


class RateLimitSpec(StrictModel):
    """Spec block ``rate_limit:``."""

    requests_per_second: float = Field(gt=0)
    burst: int | None = Field(default=None, ge=1)


class RetryPolicy:
    """Call a function, retrying :class:`TransientError` with exponential backoff and jitter.

    A :class:`RetryAfter` waits at least what the server asked for.
    """

    def __init__(self, max_attempts: int = 5, initial_backoff: float = 0.5, max_backoff: float = 30.0, sleep: Callable[[float], None] = time.sleep):
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self._sleep = sleep

    @classmethod
    def from_spec(cls, spec: RetrySpec | None) -> "RetryPolicy":
        spec = spec or RetrySpec()
        return cls(spec.max_attempts, spec.initial_backoff, spec.max_backoff)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        jitter = tenacity.wait_random_exponential(multiplier=self.initial_backoff, max=self.max_backoff)(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryAfter):
            return max(exc.seconds, jitter if exc.seconds == 0 else 0.0)
        return jitter

    def call(self, fn: Callable[[], T]) -> T:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(TransientError),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(fn)


class RateLimiter:
    """A token bucket: at most ``rate`` calls per second on average, ``burst`` at once.

    Thread-safe; ``acquire()`` blocks until a token is free. ``pause(seconds)`` empties the
    bucket for a while (a 429 with ``Retry-After`` pauses every caller, not only the one
    that got it).
    """

    def __init__(self, rate: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.capacity = float(burst or max(1, int(rate)))
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: RateLimitSpec | None) -> "RateLimiter | None":
        return cls(spec.requests_per_second, spec.burst) if spec else None

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            self._tokens = 0.0

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                if now < self._paused_until:
                    wait = self._paused_until - now
                else:
                    self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
                    self._updated = now
                    if self._tokens >= 1:
                        self._tokens -= 1
                        return
                    wait = (1 - self._tokens) / self.rate
            self._sleep(wait)


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; the next call raises at once.

    One breaker per connector instance: once open, the source fails with a clear error
    instead of retrying forever against a server that is down.
    """

    def __init__(self, threshold: int = 5, name: str = "connector"):
        if threshold < 1:
            raise ValueError(f"circuit breaker threshold must be at least 1, got {threshold}")
        self.threshold = threshold
        self.name = name
        self.failures = 0
        self.last_error: str | None = None

    @property
    def open(self) -> bool:
        return self.failures >= self.threshold

    def call(self, fn: Callable[[], T]) -> T:
        if self.open:
            raise CircuitOpenError(
                f"{self.name}: circuit open after {self.failures} consecutive failures (last: {self.last_error}); "
                "check that the server is up, then rerun"
            )
        try:
            result = fn()
        except Exception as exc:
            self.failures += 1
            self.last_error = str(exc)
            raise
        self.failures = 0
        return result
