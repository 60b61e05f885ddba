"""The HTTP destination against a real twisted.web server on 127.0.0.1 (plain and TLS)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from channels.destinations import DeliveryResult, Envelope, Verdict
from channels.destinations.http import (
    HTTPDestination,
    HTTPDestinationConfig,
    classify,
    retry_after,
)
from mllp.endpoints import TLSSettings, server_endpoint
from tests.mllp import certs

reactor: Any = _reactor

PAYLOAD = b"MSH|^~\\&|PUMP|ICU|EHR|HOSP|20240101120000||ORU^R01|PUMP0001|P|2.6\rPID|||12345\r"
ENVELOPE = Envelope(7, "icu", "fhir", "PUMP0001", "ORU^R01", 1, 1_700_000_000.0)


def config(url: str = "http://127.0.0.1:8080/hl7", **overrides: Any) -> HTTPDestinationConfig:
    return HTTPDestinationConfig.model_validate({"type": "http", "url": url, **overrides})


# --- configuration and pure rules ------------------------------------------------------


def test_config_defaults() -> None:
    """POST as application/hl7-v2, 30 s, every 2xx is success."""
    c = config()
    assert (c.method, c.content_type, c.timeout_seconds) == (
        "POST", "application/hl7-v2; charset=utf-8", 30.0)
    assert c.success_status == list(range(200, 300))


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"url": "ftp://example.org/x"}, "http:// or https://"),
        ({"url": "http:///nohost"}, "with a host"),
        ({"headers": {"Bad Name": "x"}}, "not a valid HTTP token"),
        ({"headers": {"Authorization": "Bearer s3cret\r\nX-Evil: 1"}}, "header Authorization"),
        ({"headers": {"Content-Type": "text/plain"}}, "set by the destination"),
        ({"success_status": [404]}, "not a 2xx"),
        ({"tls_ca": "/etc/ca.pem"}, "only used with an https"),
        ({"verb": "POST"}, "verb"),
        ({"method": "GET"}, "method"),
    ],
)
def test_config_errors(overrides: dict[str, Any], complaint: str) -> None:
    """Bad URLs, header injection, unknown keys and odd codes are config errors.

    The messages (what `interlink check` prints) never repeat a header value.
    """
    with pytest.raises(ValidationError, match=complaint) as caught:
        config(**overrides)
    messages = " ".join(str(error["msg"]) for error in caught.value.errors())
    assert "s3cret" not in messages


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, Verdict.SENT), (204, Verdict.SENT), (408, Verdict.RETRY), (429, Verdict.RETRY),
     (500, Verdict.RETRY), (503, Verdict.RETRY), (400, Verdict.FAIL), (401, Verdict.FAIL),
     (404, Verdict.FAIL), (301, Verdict.FAIL)],
)
def test_status_codes_map_to_verdicts(status: int, verdict: Verdict) -> None:
    """2xx sent; 408, 429 and 5xx retried; other 4xx and 3xx dead-lettered."""
    assert classify(status, frozenset(range(200, 300))) is verdict


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Delta-seconds as given; an HTTP-date relative to now; junk ignored."""
    assert retry_after(b"120", 0.0) == 120.0
    assert retry_after(b"Thu, 01 Jan 1970 00:02:00 GMT", 60.0) == 60.0
    assert retry_after(b"Thu, 01 Jan 1970 00:00:00 GMT", 60.0) == 0.0
    assert retry_after(b"soon", 0.0) is None
    assert retry_after(None, 0.0) is None


# --- over sockets ----------------------------------------------------------------------


class Endpoint(Resource):
    """Records each request and answers as ``respond(request)`` says."""

    isLeaf = True

    def __init__(self, respond: Callable[[Request], bytes | object]) -> None:
        super().__init__()
        self.respond = respond
        self.requests: list[tuple[bytes, bytes, dict[bytes, list[bytes]], bytes]] = []
        self.arrived: Deferred[None] = Deferred()

    def render(self, request: Request) -> bytes | object:
        assert request.content is not None
        headers = dict(request.requestHeaders.getAllRawHeaders())
        self.requests.append((request.method, request.uri, headers, request.content.read()))
        response = self.respond(request)
        if not self.arrived.called:
            self.arrived.callback(None)
        return response


def answer(status: int, body: bytes = b"", **headers: str) -> Callable[[Request], bytes]:
    def respond(request: Request) -> bytes:
        request.setResponseCode(status)
        for name, value in headers.items():
            request.setHeader(name.replace("_", "-"), value)
        return body

    return respond


class HTTPDestinationTest(TestCase):
    """A twisted.web Site on 127.0.0.1 port 0; the destination's timer on a task.Clock."""

    timeout = 30

    def setUp(self) -> None:
        self.clock = Clock()

    @inlineCallbacks
    def serve(self, endpoint: Endpoint, listener: Any = None) -> Any:
        site = Site(endpoint, timeout=None)
        listener = listener or TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = yield listener.listen(site)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def destination(self, url: str, **overrides: Any) -> HTTPDestination:
        dest = HTTPDestination("fhir", config(url, **overrides), reactor, clock=self.clock)
        dest.start()
        self.addCleanup(dest.stop)
        return dest

    @inlineCallbacks
    def test_created_is_sent_with_body_headers_and_content_type(self) -> Any:
        """A 201 is SENT; the server saw the payload, our headers and the HL7 media type."""
        endpoint = Endpoint(answer(201, b'{"id": "obs-1"}'))
        port = yield self.serve(endpoint)
        dest = self.destination(
            f"http://127.0.0.1:{port}/hl7/in?x=1", headers={"Authorization": "Bearer t0ken"}
        )
        result = yield dest.send(PAYLOAD, ENVELOPE)
        self.assertEqual(result, DeliveryResult(Verdict.SENT, b'{"id": "obs-1"}', "HTTP 201"))
        ((method, uri, headers, body),) = endpoint.requests
        self.assertEqual((method, uri, body), (b"POST", b"/hl7/in?x=1", PAYLOAD))
        self.assertEqual(headers[b"Content-Type"], [b"application/hl7-v2; charset=utf-8"])
        self.assertEqual(headers[b"Authorization"], [b"Bearer t0ken"])

    @inlineCallbacks
    def test_busy_server_is_retried_with_its_retry_after_hint(self) -> Any:
        """429 with Retry-After: 120 is RETRY carrying 120 s and the body."""
        port = yield self.serve(Endpoint(answer(429, b"slow down", Retry_After="120")))
        result = yield self.destination(f"http://127.0.0.1:{port}/").send(PAYLOAD, ENVELOPE)
        self.assertEqual(result, DeliveryResult(Verdict.RETRY, b"slow down", "HTTP 429", 120.0))

    @inlineCallbacks
    def test_server_error_is_retried_and_client_error_fails(self) -> Any:
        """503 asks for a retry; 422 (the server refuses the content) dead-letters."""
        codes = iter([503, 422])
        port = yield self.serve(Endpoint(lambda request: answer(next(codes), b"why")(request)))
        dest = self.destination(f"http://127.0.0.1:{port}/", method="PUT")
        first = yield dest.send(PAYLOAD, ENVELOPE)
        second = yield dest.send(PAYLOAD, ENVELOPE)
        self.assertEqual(first, DeliveryResult(Verdict.RETRY, b"why", "HTTP 503"))
        self.assertEqual(second, DeliveryResult(Verdict.FAIL, b"why", "HTTP 422"))

    @inlineCallbacks
    def test_redirect_is_not_followed(self) -> Any:
        """A 302 is FAIL: re-posting a message to another place is a config decision."""
        endpoint = Endpoint(answer(302, b"", Location="/elsewhere"))
        port = yield self.serve(endpoint)
        result = yield self.destination(f"http://127.0.0.1:{port}/").send(PAYLOAD, ENVELOPE)
        self.assertEqual(result.verdict, Verdict.FAIL)
        self.assertEqual(len(endpoint.requests), 1)

    @inlineCallbacks
    def test_large_response_is_kept_only_up_to_the_limit(self) -> Any:
        """The stored response is bounded; the detail says it was cut."""
        port = yield self.serve(Endpoint(answer(200, b"x" * 5000)))
        dest = self.destination(f"http://127.0.0.1:{port}/", max_response_bytes=1000)
        result = yield dest.send(PAYLOAD, ENVELOPE)
        self.assertEqual(result.response, b"x" * 1000)
        self.assertEqual(result.detail, "HTTP 200 (response cut to 1000 bytes)")

    @inlineCallbacks
    def test_server_that_never_answers_times_out_on_the_clock(self) -> Any:
        """No response within timeout_seconds is RETRY; the connection is abandoned."""
        endpoint = Endpoint(lambda request: NOT_DONE_YET)
        port = yield self.serve(endpoint)
        dest = self.destination(f"http://127.0.0.1:{port}/", timeout_seconds=10)
        result = dest.send(PAYLOAD, ENVELOPE)
        yield endpoint.arrived
        self.clock.advance(10)
        timed_out = DeliveryResult(Verdict.RETRY, None, "HTTP timeout after 10s")
        self.assertEqual((yield result), timed_out)

    @inlineCallbacks
    def test_refused_connection_is_retried_naming_the_error(self) -> Any:
        """Nothing listening is RETRY with the error type, never an errback."""
        port = yield self.serve(Endpoint(answer(200)))
        # Find a port that is closed: listen, note it, stop listening.
        probe = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(Resource()))
        closed = probe.getHost().port
        yield probe.stopListening()
        self.assertNotEqual(port, closed)
        result = yield self.destination(f"http://127.0.0.1:{closed}/").send(PAYLOAD, ENVELOPE)
        self.assertEqual(result.verdict, Verdict.RETRY)
        self.assertIn("ConnectionRefusedError", result.detail)

    @inlineCallbacks
    def test_https_with_configured_ca(self) -> Any:
        """Over HTTPS the server is verified against tls_ca; an unknown CA is a RETRY."""
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        ca = certs.make_ca(directory, "test-ca")
        rogue = certs.make_ca(directory, "rogue-ca")
        server = certs.issue(directory, ca, "fhir", server=True)
        identity = TLSSettings(server.certificate, server.private_key)
        listener = server_endpoint(reactor, "tcp:0:interface=127.0.0.1", identity)
        endpoint = Endpoint(answer(200, b"ok"))
        port = yield self.serve(endpoint, listener)
        url = f"https://127.0.0.1:{port}/"
        trusted = yield self.destination(url, tls_ca=str(ca.certificate)).send(PAYLOAD, ENVELOPE)
        self.assertEqual(trusted, DeliveryResult(Verdict.SENT, b"ok", "HTTP 200"))
        untrusted = yield self.destination(url, tls_ca=str(rogue.certificate)).send(
            PAYLOAD, ENVELOPE
        )
        self.assertEqual(untrusted.verdict, Verdict.RETRY)
        self.assertIn("(TLSError)", untrusted.detail)
        self.assertEqual(len(endpoint.requests), 1)

    @inlineCallbacks
    def test_stop_waits_for_the_request_in_flight(self) -> Any:
        """stop() fires only after the answer to a request already sent has been read."""
        held: list[Request] = []
        endpoint = Endpoint(lambda request: held.append(request) or NOT_DONE_YET)
        port = yield self.serve(endpoint)
        dest = self.destination(f"http://127.0.0.1:{port}/")
        result = dest.send(PAYLOAD, ENVELOPE)
        yield endpoint.arrived
        stopped = dest.stop()
        self.assertFalse(stopped.called)
        held[0].write(b"late but fine")
        held[0].finish()
        self.assertEqual((yield result).verdict, Verdict.SENT)
        yield stopped
