"""OAuth 2.0 client credentials (RFC 6749 §4.4): one cached access token per destination.

A token is fetched when first needed, reused until shortly before ``expires_in`` runs out
(on the injected clock), and dropped when the resource server answers 401 with it, so the
next request fetches a fresh one. Concurrent requests share one fetch. The token endpoint's
answers are never stored or logged: they hold the token. A failure says only what went
wrong (HTTP status, the OAuth ``error`` code, the transport error's type) and whether it is
worth retrying: the endpoint unreachable, timing out, busy or failing is; a refused client
or scope (any other 4xx) needs an operator.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from treq import collect
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from channels.destinations.base import Verdict
from channels.destinations.web import BoundedBody, classify, failure_detail, timed_out

EXPIRY_MARGIN_SECONDS = 30.0
"""A token is renewed this long before it expires (at most a tenth of its lifetime)."""
MAX_TOKEN_RESPONSE_BYTES = 64 * 1024
_ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")
"""RFC 6749 §5.2: an error code is printable ASCII without quote or backslash."""


class ClientCredentials(BaseModel):
    """The client-credentials grant: where to ask, as whom, for what."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["client_credentials"]
    token_url: str
    client_id: str = Field(min_length=1)
    client_secret: str = Field(
        min_length=1, repr=False, description="A secret: ${env:NAME} or ${file:PATH}.")
    scope: str | None = Field(None, description="Space-separated scopes, e.g. system/*.write.")
    client_auth: Literal["basic", "post"] = Field(
        "basic", description="client_secret_basic (Authorization header) or client_secret_post.")

    @field_validator("token_url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("token_url must be http:// or https:// with a host")
        return url


class TokenError(Exception):
    """No token: ``detail`` is PHI- and secret-free; ``verdict`` is RETRY or FAIL."""

    def __init__(self, verdict: Verdict, detail: str) -> None:
        super().__init__(detail)
        self.verdict = verdict
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float | None
    """Clock seconds after which it is renewed; None: until the server refuses it."""


class TokenSource:
    """Hands out a valid access token, fetching one from the token endpoint when needed."""

    def __init__(
        self,
        config: ClientCredentials,
        client: HTTPClient,
        clock: Any,
        *,
        reactor: Any,
        timeout_seconds: float,
    ) -> None:
        self.config = config
        self._client = client
        self._clock = clock
        self._reactor = reactor
        self._timeout = timeout_seconds
        self._token: _Token | None = None
        self._waiting: list[Deferred[str]] | None = None
        self.fetches = 0
        """How many times the endpoint was asked (for tests and metrics)."""

    def token(self) -> Deferred[str]:
        """A token valid now: the cached one, or a fresh one (errbacks with TokenError)."""
        current = self._token
        if current is not None and (
            current.expires_at is None or self._clock.seconds() < current.expires_at
        ):
            return succeed(current.value)
        waiter: Deferred[str] = Deferred()
        if self._waiting is None:
            self._waiting = [waiter]
            self._fetch()
        else:
            self._waiting.append(waiter)
        return waiter

    def rejected(self, value: str) -> None:
        """The resource server refused ``value`` (401): forget it if it is still the one held."""
        if self._token is not None and self._token.value == value:
            self._token = None

    def _fetch(self) -> None:
        self.fetches += 1
        form = {"grant_type": "client_credentials"}
        if self.config.scope:
            form["scope"] = self.config.scope
        headers = {"Accept": ["application/json"]}
        if self.config.client_auth == "basic":
            # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
            pair = f"{_form(self.config.client_id)}:{_form(self.config.client_secret)}"
            headers["Authorization"] = ["Basic " + base64.b64encode(pair.encode()).decode()]
        else:
            form["client_id"] = self.config.client_id
            form["client_secret"] = self.config.client_secret
        exchange = self._client.post(
            self.config.token_url,
            data=form,
            headers=Headers(headers),
            allow_redirects=False,
            unbuffered=True,
            reactor=self._reactor,
        )
        exchange.addCallback(self._read)
        exchange.addTimeout(self._timeout, self._clock, timed_out)
        exchange.addCallbacks(self._got, self._failed)

    def _read(self, response: IResponse) -> Deferred[tuple[int, bytes]]:
        body = BoundedBody(MAX_TOKEN_RESPONSE_BYTES)
        return collect(response, body).addCallback(lambda _: (response.code, body.body))

    def _got(self, answer: tuple[int, bytes]) -> None:
        status, body = answer
        try:
            self._token = _parse(status, body, self._clock.seconds())
        except TokenError as error:
            self._settle(Failure(error))
            return
        self._settle(self._token.value)

    def _failed(self, reason: Failure) -> None:
        if reason.check(TimeoutError):
            detail = f"OAuth token endpoint: timeout after {self._timeout:g}s"
        else:
            try:
                detail = f"OAuth token endpoint: {failure_detail(reason)}"
            except Exception as error:  # a programming error: report it, keep going
                detail = f"OAuth token endpoint: {type(error).__name__}"
        self._settle(Failure(TokenError(Verdict.RETRY, detail)))

    def _settle(self, outcome: str | Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for waiter in waiting:
            if isinstance(outcome, Failure):
                waiter.errback(Failure(outcome.value))
            else:
                waiter.callback(outcome)


def _form(text: str) -> str:
    """application/x-www-form-urlencoded, as RFC 6749 §2.3.1 asks for the Basic pair."""
    return quote(text, safe="").replace("%20", "+")


def _parse(status: int, body: bytes, now: float) -> _Token:
    """The token in a token endpoint's answer, or a TokenError naming what was wrong."""
    if classify(status, frozenset(range(200, 300))) is not Verdict.SENT:
        verdict = classify(status, frozenset())
        detail = f"OAuth token endpoint: HTTP {status}"
        code = _error_code(body)
        if code:
            detail += f" {code}"
        raise TokenError(verdict, detail)
    try:
        answer = json.loads(body)
    except ValueError:
        raise TokenError(Verdict.RETRY, "OAuth token endpoint: answer is not JSON") from None
    if not isinstance(answer, dict):
        raise TokenError(Verdict.RETRY, "OAuth token endpoint: answer is not a JSON object")
    value = answer.get("access_token")
    if not isinstance(value, str) or not value or not value.isascii() or not value.isprintable():
        raise TokenError(Verdict.RETRY, "OAuth token endpoint: no usable access_token")
    kind = answer.get("token_type")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise TokenError(Verdict.FAIL, "OAuth token endpoint: token_type is not bearer")
    lifetime = answer.get("expires_in")
    expires_at = None
    if isinstance(lifetime, int | float) and not isinstance(lifetime, bool) and lifetime > 0:
        expires_at = now + lifetime - min(EXPIRY_MARGIN_SECONDS, lifetime / 10)
    return _Token(value, expires_at)


def _error_code(body: bytes) -> str:
    """RFC 6749 §5.2 ``error`` (e.g. invalid_client) when the body has a well-formed one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    code = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code
    return ""
