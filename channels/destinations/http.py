"""The HTTP destination: POST (or PUT) the message, judged by the status code.

2xx (or the configured success codes) is SENT; 408, 429, 5xx, timeouts and connection
errors are RETRY, with the server's ``Retry-After`` kept as a hint; any other answer
(other 4xx, 3xx: redirects are not followed) is FAIL. The response body is kept, up to
``max_response_bytes``, because it is the receiver's own account of what happened.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from treq import collect
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from channels.destinations.base import DeliveryResult, Envelope, Verdict
from channels.destinations.web import (
    RETRYABLE_STATUS,
    BoundedBody,
    classify,
    failure_detail,
    make_agent,
    retry_after,
    timed_out,
)

__all__ = [
    "RETRYABLE_STATUS",
    "HTTPDestination",
    "HTTPDestinationConfig",
    "classify",
    "retry_after",
]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")


class HTTPDestinationConfig(BaseModel):
    """One HTTP endpoint. Header values may be secrets: resolved before this, never logged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http"]
    url: str
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    content_type: str = "application/hl7-v2; charset=utf-8"
    timeout_seconds: float = Field(30.0, gt=0)
    tls_ca: Path | None = Field(None, description="CA certificates (PEM) to verify the server.")
    success_status: list[int] = Field(default_factory=lambda: list(range(200, 300)))
    max_response_bytes: int = Field(1024 * 1024, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http:// or https:// with a host")
        return url

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if name.lower() in ("content-type", "content-length", "host"):
                raise ValueError(f"header {name} is set by the destination itself")
            if not _VALUE.fullmatch(value):
                # The value may be a secret: name the header only.
                raise ValueError(f"header {name} has characters not allowed in a header value")
        return headers

    @field_validator("success_status")
    @classmethod
    def _statuses(cls, codes: list[int]) -> list[int]:
        if not codes:
            raise ValueError("success_status needs at least one code")
        for code in codes:
            if not 200 <= code <= 299:
                raise ValueError(f"success status {code} is not a 2xx code")
        return codes

    @model_validator(mode="after")
    def _ca_needs_https(self) -> HTTPDestinationConfig:
        if self.tls_ca is not None and urlsplit(self.url).scheme != "https":
            raise ValueError("tls_ca is only used with an https:// url")
        return self


class HTTPDestination:
    """A Destination sending each message as one HTTP request."""

    def __init__(
        self, name: str, config: HTTPDestinationConfig, reactor: Any, *, clock: Any = None
    ) -> None:
        self.name = name
        self.config = config
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._success = frozenset(config.success_status)
        self._in_flight: set[Deferred[DeliveryResult]] = set()
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        agent = make_agent(reactor, self._pool, config.tls_ca, config.timeout_seconds)
        self._client = HTTPClient(agent)
        self._headers = {
            **{name: [value] for name, value in config.headers.items()},
            "Content-Type": [config.content_type],
        }

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        """Let requests in flight finish (each is bounded by the timeout), then disconnect."""
        waiting = DeferredList(list(self._in_flight), consumeErrors=True)
        return waiting.addCallback(lambda _: self._pool.closeCachedConnections())

    def send(self, payload: bytes, envelope: Envelope) -> Deferred[DeliveryResult]:
        """Send one request; the whole exchange, body included, is bounded by the timeout."""
        exchange = self._client.request(
            self.config.method,
            self.config.url,
            data=payload,
            headers=Headers(self._headers),
            allow_redirects=False,
            unbuffered=True,
            reactor=self._reactor,
        )
        exchange.addCallback(self._read)
        exchange.addTimeout(self.config.timeout_seconds, self._clock, timed_out)
        exchange.addErrback(self._failed)
        self._in_flight.add(exchange)
        return exchange.addBoth(self._forget, exchange)

    def _forget(self, result: Any, exchange: Deferred[DeliveryResult]) -> Any:
        self._in_flight.discard(exchange)
        return result

    def _read(self, response: IResponse) -> Deferred[DeliveryResult]:
        body = BoundedBody(self.config.max_response_bytes)

        def judged(_: None) -> DeliveryResult:
            status = response.code
            hint = retry_after(
                response.headers.getRawHeaders(b"retry-after", [None])[0], self._clock.seconds()
            )
            detail = f"HTTP {status}"
            if body.dropped:
                detail += f" (response cut to {body.limit} bytes)"
            return DeliveryResult(classify(status, self._success), body.body, detail, hint)

        return collect(response, body).addCallback(judged)

    def _failed(self, reason: Failure) -> DeliveryResult:
        if reason.check(TimeoutError):
            detail = f"HTTP timeout after {self.config.timeout_seconds:g}s"
            return DeliveryResult(Verdict.RETRY, None, detail)
        return DeliveryResult(Verdict.RETRY, None, failure_detail(reason))
