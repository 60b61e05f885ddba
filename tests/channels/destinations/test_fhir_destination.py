"""The FHIR destination's config, verdicts and OAuth against real twisted.web servers.

The mapping is exercised elsewhere (tests/profiles/fhir, and the integration test with
the corpus); here the message handed over is already the Bundle's JSON, so each test
controls exactly what is sent.
"""

from __future__ import annotations

import json
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
from channels.destinations.fhir import FHIRDestination, FHIRDestinationConfig
from profiles.fhir import NothingToMap

reactor: Any = _reactor

BUNDLE = {"resourceType": "Bundle", "type": "transaction", "entry": [
    {"fullUrl": "urn:uuid:5f0b1e52-0b43-5c47-9f0e-3f5a3c6f1d11",
     "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
     "request": {"method": "POST", "url": "Observation", "ifNoneExist": "identifier=a|b"}}]}
PAYLOAD = json.dumps(BUNDLE).encode()
ENVELOPE = Envelope(7, "icu", "ehr-fhir", "MSG1", "ORU^R01", 1, 1_700_000_000.0)
RESPONSE = json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": [
    {"response": {"status": "201 Created"}}, {"response": {"status": "200 OK"}},
    {"response": {"status": "200 OK"}}]}).encode()


def outcome(*codes: str) -> bytes:
    return json.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": code, "diagnostics": "Patient Doe, John: bad value"}
        for code in codes]}).encode()


def config(url: str = "http://127.0.0.1:1/fhir", **overrides: Any) -> FHIRDestinationConfig:
    return FHIRDestinationConfig.model_validate({"type": "fhir", "base_url": url, **overrides})


def build_from_json(payload: bytes) -> dict[str, Any]:
    """The test's stand-in for the mapping: the payload is the Bundle itself."""
    bundle = json.loads(payload)
    if not bundle.get("entry"):
        raise NothingToMap("no device observations to map (PCD-04)")
    return bundle


# --- configuration ---------------------------------------------------------------------


def test_config_defaults() -> None:
    """No auth, 30 s, the sender's offset for device times, identifier-only subject."""
    c = config("https://ehr.example/fhir/")
    assert (c.base_url, c.auth.type, c.timeout_seconds, c.timezone, c.subject) == (
        "https://ehr.example/fhir", "none", 30.0, None, "identifier")


@pytest.mark.parametrize(("overrides", "complaint"), [
    ({"base_url": "ftp://ehr/fhir"}, "http:// or https://"),
    ({"base_url": "https://ehr/fhir?x=1"}, "without a query"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"tls_ca": "ca.pem"}, "only used with an https"),
    ({"auth": {"type": "basic"}}, "does not match any of the expected tags"),
    ({"auth": {"type": "bearer", "token": "s3cret\r\nX-Evil: 1"}}, "not allowed in a header"),
    ({"auth": {"type": "client_credentials", "token_url": "https://idp/token",
               "client_id": "x"}}, "client_secret"),
    ({"subject": "patient"}, "subject"),
    ({"base_uri": "https://ehr/fhir"}, "base_uri"),
])
def test_config_errors(overrides: dict[str, Any], complaint: str) -> None:
    """Every mistake is a located config error; a secret value is never repeated."""
    with pytest.raises(ValidationError, match=complaint) as caught:
        config(**overrides)
    assert "s3cret" not in str(caught.value)


def test_registry_builds_the_fhir_type_from_a_channel_file_mapping() -> None:
    """``to: {type: fhir, …}`` validates to this config and builds this connector."""
    from channels.destinations.registry import DESTINATION_CONFIG, build_destination

    parsed = DESTINATION_CONFIG.validate_python({"type": "fhir", "base_url": "http://h/fhir"})
    assert isinstance(parsed, FHIRDestinationConfig)
    assert isinstance(build_destination("ehr", parsed, reactor), FHIRDestination)


def test_without_its_own_zone_a_fhir_destination_takes_the_channels_device_zone() -> None:
    """Device times without an offset mean the same instant to the channel's device rules
    (`pcd.default_timezone`) and to the FHIR mapping, unless the destination names a zone."""
    from channels.destinations.fhir import pcd_bundle
    from channels.model import ChannelConfig

    channel = ChannelConfig.model_validate({
        "name": "icu", "pcd": {"default_timezone": "America/Chicago"},
        "destinations": [
            {"name": "inherits", "to": {"type": "fhir", "base_url": "http://h/fhir"}},
            {"name": "own", "to": {"type": "fhir", "base_url": "http://h/fhir",
                                   "timezone": "UTC"}}]})
    assert [spec.to.timezone for spec in channel.destinations] == ["America/Chicago", "UTC"]
    message = (b"MSH|^~\\&|MON^0123456789ABCDEF^EUI-64|ICU|||20261125100000||ORU^R01^ORU_R01|"
               b"Z1|P|2.6|||AL|NE||8859/1|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1"
               b"^ISO\r"
               b"PID|||MRN1^^^HOSP^MR||Doe^John\r"
               b"OBR|1|||182777000^monitoring of patient^SCT|||20261125100000\r"
               b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC"
               b"|||||F|||20261125100000\r")
    times = [{entry["resource"].get("effectiveDateTime")
              for entry in pcd_bundle(spec.to)(message)["entry"]} - {None}
             for spec in channel.destinations]
    assert times == [{"2026-11-25T10:00:00-06:00"}, {"2026-11-25T10:00:00+00:00"}]


def test_tls_ca_is_relative_to_the_channel_file() -> None:
    """As for the HTTP destination, a relative CA path is read from the file's folder."""
    c = config("https://ehr.example/fhir", tls_ca="certs/ca.pem")
    assert c.relative_to(Path("/etc/interlink/channels")).tls_ca == Path(
        "/etc/interlink/channels/certs/ca.pem")


# --- over sockets ----------------------------------------------------------------------


class Server(Resource):
    """Records each request and answers as ``respond(request, number)`` says."""

    isLeaf = True

    def __init__(self, respond: Callable[[Request, int], bytes | object]) -> None:
        super().__init__()
        self.respond = respond
        self.requests: list[tuple[bytes, dict[bytes, list[bytes]], bytes]] = []
        self.arrived: Deferred[None] = Deferred()

    def render(self, request: Request) -> bytes | object:
        assert request.content is not None
        headers = dict(request.requestHeaders.getAllRawHeaders())
        self.requests.append((request.uri, headers, request.content.read()))
        answer = self.respond(request, len(self.requests))
        if not self.arrived.called:
            self.arrived.callback(None)
        return answer


def answer(status: int, body: bytes = b"", **headers: str) -> Callable[[Request, int], bytes]:
    def respond(request: Request, number: int) -> bytes:
        request.setResponseCode(status)
        request.setHeader("Content-Type", "application/fhir+json")
        for name, value in headers.items():
            request.setHeader(name.replace("_", "-"), value)
        return body

    return respond


def token_endpoint(request: Request, number: int) -> bytes:
    request.setHeader("Content-Type", "application/json")
    return json.dumps({"access_token": f"token-{number}", "token_type": "bearer",
                       "expires_in": 300}).encode()


class FHIRDestinationTest(TestCase):
    """A twisted.web Site on 127.0.0.1 port 0; timers and token lifetimes on a task.Clock."""

    timeout = 30

    def setUp(self) -> None:
        self.clock = Clock()

    @inlineCallbacks
    def serve(self, fhir: Server, token: Server | None = None) -> Any:
        root = Resource()
        root.putChild(b"fhir", fhir)
        if token is not None:
            auth = Resource()
            auth.putChild(b"token", token)
            root.putChild(b"auth", auth)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(root, timeout=None))
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def destination(self, root: str, **overrides: Any) -> FHIRDestination:
        dest = FHIRDestination("ehr-fhir", config(f"{root}/fhir", **overrides), reactor,
                               build=build_from_json, clock=self.clock)
        dest.start()
        self.addCleanup(dest.stop)
        return dest

    def oauth(self, root: str) -> dict[str, Any]:
        return {"auth": {"type": "client_credentials", "token_url": f"{root}/auth/token",
                         "client_id": "interlink", "client_secret": "s3cret",
                         "scope": "system/*.write"}}

    @inlineCallbacks
    def test_transaction_is_posted_as_fhir_json_and_sent(self) -> Any:
        """2xx is SENT with the response kept; the detail counts created and existing."""
        fhir = Server(answer(200, RESPONSE))
        root = yield self.serve(fhir)
        dest = self.destination(root, auth={"type": "bearer", "token": "t0ken"})
        result = yield dest.send(PAYLOAD, ENVELOPE)
        self.assertEqual(result, DeliveryResult(
            Verdict.SENT, RESPONSE, "HTTP 200 (1 created, 2 already there)"))
        ((uri, headers, body),) = fhir.requests
        self.assertEqual(uri, b"/fhir")
        self.assertEqual(json.loads(body), BUNDLE)
        self.assertEqual(headers[b"Content-Type"], [b"application/fhir+json; charset=utf-8"])
        self.assertEqual(headers[b"Prefer"], [b"return=minimal"])
        self.assertEqual(headers[b"Authorization"], [b"Bearer t0ken"])

    @inlineCallbacks
    def test_busy_and_failing_servers_are_retried_with_their_hint(self) -> Any:
        """429 with Retry-After and 503 are RETRY; 408 too."""
        answers = iter([answer(429, b"", Retry_After="120"), answer(503, b"down"),
                        answer(408)])
        root = yield self.serve(Server(lambda r, n: next(answers)(r, n)))
        dest = self.destination(root)
        busy = yield dest.send(PAYLOAD, ENVELOPE)
        down = yield dest.send(PAYLOAD, ENVELOPE)
        slow = yield dest.send(PAYLOAD, ENVELOPE)
        self.assertEqual((busy.verdict, busy.retry_after, busy.detail),
                         (Verdict.RETRY, 120.0, "HTTP 429"))
        self.assertEqual((down.verdict, down.response), (Verdict.RETRY, b"down"))
        self.assertEqual(slow.verdict, Verdict.RETRY)

    @inlineCallbacks
    def test_refused_content_fails_keeping_the_operation_outcome(self) -> Any:
        """400, 412 and 422 are FAIL; the outcome is the response, its codes the detail."""
        bodies = {400: outcome("structure"), 412: outcome("multiple-matches"),
                  422: outcome("processing", "business-rule")}
        codes = iter(bodies)
        root = yield self.serve(Server(lambda r, n: (lambda c: answer(c, bodies[c])(r, n))(
            next(codes))))
        dest = self.destination(root)
        details = []
        for status, body in bodies.items():
            result = yield dest.send(PAYLOAD, ENVELOPE)
            self.assertEqual((result.verdict, result.response), (Verdict.FAIL, body))
            self.assertNotIn("Doe", result.detail)
            details.append(result.detail)
            self.assertTrue(result.detail.startswith(f"HTTP {status}"))
        self.assertEqual(details, [
            "HTTP 400 (OperationOutcome: structure)",
            "HTTP 412 (OperationOutcome: multiple-matches)",
            "HTTP 422 (OperationOutcome: processing, business-rule)"])

    @inlineCallbacks
    def test_static_token_refused_is_final(self) -> Any:
        """401 with a fixed bearer token: nothing to renew, FAIL after one request."""
        fhir = Server(answer(401, outcome("login")))
        root = yield self.serve(fhir)
        dest = self.destination(root, auth={"type": "bearer", "token": "stale"})
        result = yield dest.send(PAYLOAD, ENVELOPE)
        self.assertEqual(result.verdict, Verdict.FAIL)
        self.assertEqual(len(fhir.requests), 1)

    @inlineCallbacks
    def test_nothing_to_map_fails_without_a_request(self) -> Any:
        """A message without device observations is FAIL with the mapping's reason."""
        fhir = Server(answer(200, RESPONSE))
        root = yield self.serve(fhir)
        empty = json.dumps({"resourceType": "Bundle", "type": "transaction"}).encode()
        result = yield self.destination(root).send(empty, ENVELOPE)
        self.assertEqual(result, DeliveryResult(
            Verdict.FAIL, None, "no device observations to map (PCD-04)"))
        broken = yield self.destination(root).send(b"MSH|not json", ENVELOPE)
        self.assertEqual(broken.verdict, Verdict.FAIL)
        self.assertEqual(broken.detail, "cannot map the message to FHIR (JSONDecodeError)")
        self.assertEqual(fhir.requests, [])

    @inlineCallbacks
    def test_silent_server_times_out_on_the_clock(self) -> Any:
        """No answer within timeout_seconds is RETRY."""
        fhir = Server(lambda r, n: NOT_DONE_YET)
        root = yield self.serve(fhir)
        result = self.destination(root, timeout_seconds=5).send(PAYLOAD, ENVELOPE)
        yield fhir.arrived
        self.clock.advance(5)
        self.assertEqual((yield result), DeliveryResult(
            Verdict.RETRY, None, "FHIR timeout after 5s"))

    @inlineCallbacks
    def test_unreachable_server_is_retried(self) -> Any:
        """Nothing listening: RETRY naming the error type."""
        probe = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(Resource()))
        closed = probe.getHost().port
        yield probe.stopListening()
        result = yield self.destination(f"http://127.0.0.1:{closed}").send(PAYLOAD, ENVELOPE)
        self.assertEqual(result.verdict, Verdict.RETRY)
        self.assertIn("ConnectionRefusedError", result.detail)

    @inlineCallbacks
    def test_oauth_token_is_fetched_once_and_reused(self) -> Any:
        """Two sends, one token request; the FHIR server sees the bearer token each time."""
        fhir, token = Server(answer(200, RESPONSE)), Server(token_endpoint)
        root = yield self.serve(fhir, token)
        dest = self.destination(root, **self.oauth(root))
        for _ in range(2):
            self.assertEqual((yield dest.send(PAYLOAD, ENVELOPE)).verdict, Verdict.SENT)
        self.assertEqual(len(token.requests), 1)
        self.assertEqual([h[b"Authorization"] for _, h, _ in fhir.requests],
                         [[b"Bearer token-1"]] * 2)

    @inlineCallbacks
    def test_expired_token_is_renewed_before_sending(self) -> Any:
        """Past expires_in (on the clock) the next send fetches a new token first."""
        fhir, token = Server(answer(200, RESPONSE)), Server(token_endpoint)
        root = yield self.serve(fhir, token)
        dest = self.destination(root, **self.oauth(root))
        yield dest.send(PAYLOAD, ENVELOPE)
        self.clock.advance(300)
        yield dest.send(PAYLOAD, ENVELOPE)
        self.assertEqual([h[b"Authorization"] for _, h, _ in fhir.requests],
                         [[b"Bearer token-1"], [b"Bearer token-2"]])

    @inlineCallbacks
    def test_401_renews_the_token_and_tries_once_more(self) -> Any:
        """A token the server stopped accepting is replaced and the Bundle resent: SENT."""
        answers = iter([answer(401, outcome("expired")), answer(200, RESPONSE)])
        fhir, token = Server(lambda r, n: next(answers)(r, n)), Server(token_endpoint)
        root = yield self.serve(fhir, token)
        result = yield self.destination(root, **self.oauth(root)).send(PAYLOAD, ENVELOPE)
        self.assertEqual(result.verdict, Verdict.SENT)
        self.assertEqual([h[b"Authorization"] for _, h, _ in fhir.requests],
                         [[b"Bearer token-1"], [b"Bearer token-2"]])

    @inlineCallbacks
    def test_401_after_renewal_fails(self) -> Any:
        """Refused again with a fresh token: FAIL after exactly two requests."""
        fhir, token = Server(answer(401, outcome("login"))), Server(token_endpoint)
        root = yield self.serve(fhir, token)
        result = yield self.destination(root, **self.oauth(root)).send(PAYLOAD, ENVELOPE)
        self.assertEqual((result.verdict, result.detail), (
            Verdict.FAIL, "HTTP 401 with a renewed token (OperationOutcome: login)"))
        self.assertEqual((len(fhir.requests), len(token.requests)), (2, 2))

    @inlineCallbacks
    def test_refused_client_fails_without_touching_the_fhir_server(self) -> Any:
        """The token endpoint's invalid_client is FAIL; the Bundle is never posted."""
        fhir = Server(answer(200, RESPONSE))
        token = Server(answer(401, b'{"error": "invalid_client"}'))
        root = yield self.serve(fhir, token)
        result = yield self.destination(root, **self.oauth(root)).send(PAYLOAD, ENVELOPE)
        self.assertEqual(result, DeliveryResult(
            Verdict.FAIL, None, "OAuth token endpoint: HTTP 401 invalid_client"))
        self.assertEqual(fhir.requests, [])


def test_secrets_stay_out_of_the_config_repr() -> None:
    """A logged config never shows the bearer token or the client secret."""
    bearer = config(auth={"type": "bearer", "token": "s3cret"})
    oauth = config(auth={"type": "client_credentials", "token_url": "https://idp/token",
                         "client_id": "interlink", "client_secret": "s3cret"})
    assert "s3cret" not in repr(bearer) + str(bearer) + repr(oauth) + str(oauth)
