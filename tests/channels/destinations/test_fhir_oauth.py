"""The FHIR destination's OAuth token source against a real twisted.web token endpoint."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import pytest
from pydantic import ValidationError
from treq.client import HTTPClient
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from channels.destinations.base import Verdict
from channels.destinations.oauth import ClientCredentials, TokenError, TokenSource

reactor: Any = _reactor


def credentials(url: str = "http://127.0.0.1:1/token", **overrides: Any) -> ClientCredentials:
    return ClientCredentials.model_validate({
        "type": "client_credentials", "token_url": url, "client_id": "interlink",
        "client_secret": "s3cret", **overrides})


class TokenEndpoint(Resource):
    """A client-credentials token endpoint: answers as ``respond`` says, records each request."""

    isLeaf = True

    def __init__(self, respond: Callable[[Request, int], bytes | object] | None = None) -> None:
        super().__init__()
        self.requests: list[tuple[dict[bytes, list[bytes]], dict[str, list[str]]]] = []
        self.respond = respond or self.issue
        self.arrived: Deferred[None] = Deferred()

    def render_POST(self, request: Request) -> bytes | object:
        assert request.content is not None
        headers = dict(request.requestHeaders.getAllRawHeaders())
        form = parse_qs(request.content.read().decode())
        self.requests.append((headers, form))
        answer = self.respond(request, len(self.requests))
        if not self.arrived.called:
            self.arrived.callback(None)
        return answer

    @staticmethod
    def issue(request: Request, number: int, expires_in: Any = 3600) -> bytes:
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Cache-Control", "no-store")
        body: dict[str, Any] = {"access_token": f"token-{number}", "token_type": "Bearer"}
        if expires_in is not None:
            body["expires_in"] = expires_in
        return json.dumps(body).encode()


def refuse(status: int, body: bytes) -> Callable[[Request, int], bytes]:
    def respond(request: Request, number: int) -> bytes:
        request.setResponseCode(status)
        request.setHeader("Content-Type", "application/json")
        return body

    return respond


def test_config_needs_a_web_url_and_forbids_unknown_keys() -> None:
    """A token URL must be http(s) with a host; a typo in a key is an error."""
    with pytest.raises(ValidationError, match="token_url must be"):
        credentials("ftp://idp.example/token")
    with pytest.raises(ValidationError, match="client_secrett"):
        credentials(client_secrett="x")


class TokenSourceTest(TestCase):
    """A twisted.web Site on 127.0.0.1 port 0; token lifetimes on a task.Clock."""

    timeout = 30

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(self.pool.closeCachedConnections)
        self.client = HTTPClient(Agent(reactor, pool=self.pool))

    @inlineCallbacks
    def source(self, endpoint: TokenEndpoint, **overrides: Any) -> Any:
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Site(endpoint, timeout=None))
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/auth/token"
        return TokenSource(credentials(url, **overrides), self.client, self.clock,
                           reactor=reactor, timeout_seconds=10)

    @inlineCallbacks
    def test_basic_client_auth_and_scope(self) -> Any:
        """The grant goes as a form with the scope; id and secret in a Basic header."""
        endpoint = TokenEndpoint()
        source = yield self.source(endpoint, scope="system/*.write", client_id="a b:c")
        self.assertEqual((yield source.token()), "token-1")
        ((headers, form),) = endpoint.requests
        self.assertEqual(form, {"grant_type": ["client_credentials"], "scope": ["system/*.write"]})
        expected = base64.b64encode(b"a+b%3Ac:s3cret")
        self.assertEqual(headers[b"Authorization"], [b"Basic " + expected])

    @inlineCallbacks
    def test_post_client_auth_puts_the_credentials_in_the_form(self) -> Any:
        """client_auth: post sends client_id and client_secret as form fields, no header."""
        endpoint = TokenEndpoint()
        source = yield self.source(endpoint, client_auth="post")
        yield source.token()
        ((headers, form),) = endpoint.requests
        self.assertNotIn(b"Authorization", headers)
        self.assertEqual(form["client_id"], ["interlink"])
        self.assertEqual(form["client_secret"], ["s3cret"])

    @inlineCallbacks
    def test_token_is_cached_until_shortly_before_it_expires(self) -> Any:
        """Reused while valid; renewed 30 s before expires_in runs out, not earlier."""
        endpoint = TokenEndpoint()
        source = yield self.source(endpoint)
        self.assertEqual((yield source.token()), "token-1")
        self.clock.advance(3600 - 31)
        self.assertEqual((yield source.token()), "token-1")
        self.clock.advance(1)
        self.assertEqual((yield source.token()), "token-2")
        self.assertEqual(source.fetches, 2)

    @inlineCallbacks
    def test_short_lived_token_keeps_most_of_its_life(self) -> Any:
        """For a 60 s token the margin is a tenth of its life (6 s), not 30 s."""
        endpoint = TokenEndpoint(lambda r, n: TokenEndpoint.issue(r, n, expires_in=60))
        source = yield self.source(endpoint)
        yield source.token()
        self.clock.advance(53)
        self.assertEqual((yield source.token()), "token-1")
        self.clock.advance(1)
        self.assertEqual((yield source.token()), "token-2")

    @inlineCallbacks
    def test_token_without_lifetime_lasts_until_refused(self) -> Any:
        """No expires_in: kept until the resource server rejects it, then fetched anew."""
        endpoint = TokenEndpoint(lambda r, n: TokenEndpoint.issue(r, n, expires_in=None))
        source = yield self.source(endpoint)
        yield source.token()
        self.clock.advance(10 * 86400)
        self.assertEqual((yield source.token()), "token-1")
        source.rejected("token-1")
        self.assertEqual((yield source.token()), "token-2")

    @inlineCallbacks
    def test_rejecting_an_old_token_keeps_the_newer_one(self) -> Any:
        """A 401 for a token already replaced does not throw the new one away."""
        endpoint = TokenEndpoint()
        source = yield self.source(endpoint)
        yield source.token()
        source.rejected("token-1")
        yield source.token()
        source.rejected("token-1")
        self.assertEqual((yield source.token()), "token-2")
        self.assertEqual(source.fetches, 2)

    @inlineCallbacks
    def test_concurrent_requests_share_one_fetch(self) -> Any:
        """Three sends waiting for a token cause one request to the endpoint."""
        held: list[Request] = []
        endpoint = TokenEndpoint(lambda r, n: held.append(r) or NOT_DONE_YET)
        source = yield self.source(endpoint)
        waiting = gatherResults([source.token() for _ in range(3)])
        yield endpoint.arrived
        held[0].write(TokenEndpoint.issue(held[0], 1))
        held[0].finish()
        self.assertEqual((yield waiting), ["token-1"] * 3)
        self.assertEqual(len(endpoint.requests), 1)

    @inlineCallbacks
    def test_refused_client_fails_with_the_oauth_error_code_only(self) -> Any:
        """401 invalid_client is FAIL; the detail names the code, never the description."""
        body = json.dumps({"error": "invalid_client", "error_description": "bad s3cret"}).encode()
        source = yield self.source(TokenEndpoint(refuse(401, body)))
        error = yield self.assertFailure(source.token(), TokenError)
        self.assertEqual(error.verdict, Verdict.FAIL)
        self.assertEqual(error.detail, "OAuth token endpoint: HTTP 401 invalid_client")

    @inlineCallbacks
    def test_busy_or_broken_endpoint_is_retried(self) -> Any:
        """503 and a 200 without a usable token are RETRY; a later call fetches again."""
        answers = iter([refuse(503, b"down"), refuse(200, b'{"token_type": "bearer"}'),
                        TokenEndpoint.issue])
        source = yield self.source(TokenEndpoint(lambda r, n: next(answers)(r, n)))
        first = yield self.assertFailure(source.token(), TokenError)
        second = yield self.assertFailure(source.token(), TokenError)
        self.assertEqual((first.verdict, first.detail),
                         (Verdict.RETRY, "OAuth token endpoint: HTTP 503"))
        self.assertEqual((second.verdict, second.detail),
                         (Verdict.RETRY, "OAuth token endpoint: no usable access_token"))
        self.assertEqual((yield source.token()), "token-3")

    @inlineCallbacks
    def test_other_token_types_are_refused(self) -> Any:
        """A token_type other than bearer (e.g. a DPoP or MAC token) cannot be used: FAIL."""
        body = b'{"access_token": "x", "token_type": "DPoP", "expires_in": 60}'
        source = yield self.source(TokenEndpoint(refuse(200, body)))
        error = yield self.assertFailure(source.token(), TokenError)
        self.assertEqual(error.verdict, Verdict.FAIL)

    @inlineCallbacks
    def test_silent_endpoint_times_out_on_the_clock(self) -> Any:
        """No answer within the timeout is RETRY, and every waiter hears it."""
        endpoint = TokenEndpoint(lambda r, n: NOT_DONE_YET)
        source = yield self.source(endpoint)
        first, second = source.token(), source.token()
        yield endpoint.arrived
        self.clock.advance(10)
        for waiting in (first, second):
            error = yield self.assertFailure(waiting, TokenError)
            self.assertEqual(error.detail, "OAuth token endpoint: timeout after 10s")

    @inlineCallbacks
    def test_unreachable_endpoint_is_retried_naming_the_error(self) -> Any:
        """Nothing listening: RETRY with the error type."""
        probe = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(Resource()))
        closed = probe.getHost().port
        yield probe.stopListening()
        source = TokenSource(credentials(f"http://127.0.0.1:{closed}/token"), self.client,
                             self.clock, reactor=reactor, timeout_seconds=10)
        error = yield self.assertFailure(source.token(), TokenError)
        self.assertEqual(error.verdict, Verdict.RETRY)
        self.assertIn("ConnectionRefusedError", error.detail)
