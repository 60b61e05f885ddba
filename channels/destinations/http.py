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
from twisted.internet.defer import Deferred

from channels.destinations.base import DeliveryResult, Envelope
from channels.destinations.web import (
    RETRYABLE_STATUS,
    Answer,
    Exchanges,
    classify,
    retry_after,
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
        self._success = frozenset(config.success_status)
        self._exchanges = Exchanges(
            reactor, clock if clock is not None else reactor, tls_ca=config.tls_ca,
            timeout_seconds=config.timeout_seconds,
            max_response_bytes=config.max_response_bytes, label="HTTP")
        self._headers = {
            **{name: [value] for name, value in config.headers.items()},
            "Content-Type": [config.content_type],
        }

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        """Let requests in flight finish (each is bounded by the timeout), then disconnect."""
        return self._exchanges.stop()

    def send(self, payload: bytes, envelope: Envelope) -> Deferred[DeliveryResult]:
        """Send one request; the whole exchange, body included, is bounded by the timeout."""
        exchange = self._exchanges.request(self.config.method, self.config.url, payload,
                                           dict(self._headers))
        return self._exchanges.track(exchange.addCallback(self._judge))

    def _judge(self, answer: Answer | DeliveryResult) -> DeliveryResult:
        if isinstance(answer, DeliveryResult):
            return answer
        detail = f"HTTP {answer.status}"
        if answer.cut:
            detail += f" (response cut to {self.config.max_response_bytes} bytes)"
        return DeliveryResult(classify(answer.status, self._success), answer.body, detail,
                              answer.retry_after)
