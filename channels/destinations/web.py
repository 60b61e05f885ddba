"""What every destination that speaks HTTP shares: trust, status rules, bounded bodies, failures.

The HTTP and FHIR destinations judge answers the same way: 2xx is success, 408, 429 and
5xx are worth retrying (with the server's ``Retry-After`` as a hint), any other answer is
final. Transport failures (refused, reset, TLS, timeout) are retried and named by their
type only, never by anything the peer sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from OpenSSL import SSL, crypto
from treq import collect
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from channels.destinations.base import DeliveryResult, Verdict
from mllp.endpoints import load_certificates

T = TypeVar("T")

RETRYABLE_STATUS: Final = frozenset({408, 429})
WEB_ERRORS: Final = (
    ResponseFailed,
    ResponseNeverReceived,
    RequestTransmissionFailed,
    RequestNotSent,
)
"""Agent failures; each carries the underlying reasons."""
NETWORK_ERRORS: Final = (ConnectError, ConnectionLost, ConnectionDone, SSL.Error, OSError)
"""Failures that mean the request may not have arrived: retried."""


def make_agent(
    reactor: Any, pool: HTTPConnectionPool, tls_ca: Path | None, connect_timeout: float
) -> Agent:
    """An Agent that verifies HTTPS servers against ``tls_ca`` (PEM), or the system roots."""
    if tls_ca is not None:
        roots = [Certificate(crypto.X509.from_cryptography(c)) for c in load_certificates(tls_ca)]
        policy = BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(roots))
    else:
        policy = BrowserLikePolicyForHTTPS()
    return Agent(reactor, contextFactory=policy, pool=pool, connectTimeout=connect_timeout)


def retry_after(value: bytes | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), else None."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def classify(status: int, success: frozenset[int]) -> Verdict:
    """The verdict for an HTTP status code."""
    if status in success:
        return Verdict.SENT
    if status in RETRYABLE_STATUS or status >= 500:
        return Verdict.RETRY
    return Verdict.FAIL


def timed_out(result: object, timeout: float) -> None:
    """Whatever the cancelled request failed with (ResponseNeverReceived …), it timed out."""
    raise TimeoutError(f"no complete answer within {timeout:g} s")


def failure_detail(reason: Failure) -> str:
    """A PHI-free name for a transport failure; re-raises anything that is not one."""
    reason.trap(*NETWORK_ERRORS, *WEB_ERRORS)
    error = reason.value
    detail = error_name(type(error))
    inner = getattr(error, "reasons", None)
    if isinstance(error, WEB_ERRORS) and inner and isinstance(inner[0], Failure):
        detail += f" ({error_name(inner[0].type)})"
    return detail


def error_name(kind: type[BaseException] | None) -> str:
    """An exception type's name; OpenSSL's bare ``Error`` is called what it is."""
    if kind is None:
        return "unknown"
    return "TLSError" if issubclass(kind, SSL.Error) else kind.__name__


class BoundedBody:
    """Keeps the first ``limit`` bytes of a body and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.kept = 0
        self.dropped = 0

    def __call__(self, data: bytes) -> None:
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(data[:room])
            self.kept += min(room, len(data))
        self.dropped += max(0, len(data) - max(room, 0))

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


@dataclass(frozen=True, slots=True)
class Answer:
    """A server's answer as read: status, the kept body, whether it was cut, Retry-After."""

    status: int
    body: bytes
    cut: bool
    retry_after: float | None


class Exchanges:
    """One destination's HTTP traffic: a persistent pool, every exchange bounded by the
    timeout (body included), failures turned into RETRY results, and a stop that waits for
    what is in flight."""

    def __init__(self, reactor: Any, clock: Any, *, tls_ca: Path | None,
                 timeout_seconds: float, max_response_bytes: int, label: str) -> None:
        self._reactor = reactor
        self._clock = clock
        self.timeout_seconds = timeout_seconds
        self.max_response_bytes = max_response_bytes
        self.label = label
        self._in_flight: set[Deferred[Any]] = set()
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self.client = HTTPClient(make_agent(reactor, self._pool, tls_ca, timeout_seconds))

    def request(self, method: str, url: str, body: bytes,
                headers: dict[str, list[str]]) -> Deferred[Answer | DeliveryResult]:
        """One exchange: the Answer, or a RETRY result when it failed or timed out."""
        exchange = self.client.request(method, url, data=body, headers=Headers(headers),
                                       allow_redirects=False, unbuffered=True,
                                       reactor=self._reactor)
        exchange.addCallback(self._read)
        exchange.addTimeout(self.timeout_seconds, self._clock, timed_out)
        return exchange.addErrback(self._failed)

    def track(self, work: Deferred[T]) -> Deferred[T]:
        """Count `work` as in flight until it fires, so `stop` waits for it."""
        self._in_flight.add(work)

        def forget(result: Any) -> Any:
            self._in_flight.discard(work)
            return result

        return work.addBoth(forget)

    def stop(self) -> Deferred[None]:
        """Let requests in flight finish (each is bounded by the timeout), then disconnect."""
        waiting = DeferredList(list(self._in_flight), consumeErrors=True)
        return waiting.addCallback(lambda _: self._pool.closeCachedConnections())

    def _read(self, response: IResponse) -> Deferred[Answer]:
        kept = BoundedBody(self.max_response_bytes)

        def done(_: None) -> Answer:
            hint = retry_after(
                response.headers.getRawHeaders(b"retry-after", [None])[0], self._clock.seconds())
            return Answer(response.code, kept.body, bool(kept.dropped), hint)

        return collect(response, kept).addCallback(done)

    def _failed(self, reason: Failure) -> DeliveryResult:
        if reason.check(TimeoutError):
            detail = f"{self.label} timeout after {self.timeout_seconds:g}s"
            return DeliveryResult(Verdict.RETRY, None, detail)
        return DeliveryResult(Verdict.RETRY, None, failure_detail(reason))
