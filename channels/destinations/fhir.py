"""The FHIR R4 destination: device observations as one transaction Bundle per message.

The HL7 v2 message handed over is read as IHE PCD device data and mapped
(``profiles.fhir``) to a transaction Bundle of conditional creates, POSTed to the server's
base URL. Because every resource is created only if none with its identifier exists, a
resend (a retry after a lost answer, a reprocess, a sender repeating itself) creates
nothing new.

Verdicts: 2xx is SENT, the transaction-response kept. 408, 429, 5xx, timeouts and
connection errors are RETRY with the server's ``Retry-After`` as a hint. A 401 with an
OAuth token renews the token and tries once more. 400, 412, 422 and any other answer are
FAIL with the server's OperationOutcome kept as the response and only its issue codes in
the detail (its diagnostics may quote the message). A message with no device observation
to map is FAIL too: a channel should filter such messages away from this destination.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from channels.destinations.base import DeliveryResult, Envelope, Verdict
from channels.destinations.oauth import ClientCredentials, TokenError, TokenSource
from channels.destinations.web import (
    Answer,
    Exchanges,
    classify,
)
from profiles.fhir import MappingOptions, NothingToMap, transaction_bundle
from profiles.pcd.extract import extract

FHIR_JSON = "application/fhir+json"
_HEADER_VALUE = re.compile(r"[\x21-\x7e]+")
_ISSUE_CODE = re.compile(r"[a-z][a-z-]{0,40}")
_SUCCESS = frozenset(range(200, 300))


class NoAuth(BaseModel):
    """No Authorization header (a server on a trusted network, or behind mutual TLS)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["none"]


class BearerAuth(BaseModel):
    """A fixed bearer token, from a secret reference."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["bearer"]
    token: str = Field(
        min_length=1, repr=False, description="A secret: ${env:NAME} or ${file:PATH}.")

    @field_validator("token")
    @classmethod
    def _header_safe(cls, token: str) -> str:
        if not _HEADER_VALUE.fullmatch(token):
            # Never repeat the value: it is a secret.
            raise ValueError("the token has characters not allowed in a header value")
        return token


FHIRAuth = Annotated[NoAuth | BearerAuth | ClientCredentials, Field(discriminator="type")]


class FHIRDestinationConfig(BaseModel):
    """A FHIR R4 server that takes transaction Bundles at its base URL."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["fhir"]
    base_url: str
    auth: FHIRAuth = NoAuth(type="none")
    timeout_seconds: float = Field(30.0, gt=0)
    tls_ca: Path | None = Field(None, description="CA certificates (PEM) to verify the server.")
    timezone: str | None = Field(
        None, description="IANA zone of device times written without an offset "
        "(default: the channel's pcd.default_timezone, else the offset of the sender's "
        "MSH-7).")
    subject: Literal["identifier", "conditional", "none"] = "identifier"
    patient_identifier_system: str | None = None
    max_response_bytes: int = Field(1024 * 1024, ge=0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be http:// or https:// with a host")
        if parts.query or parts.fragment:
            raise ValueError("base_url is the server's base, without a query or fragment")
        return url.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str | None) -> str | None:
        if name is None:
            return None
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name[:64]!r} (use an IANA name)") from None
        return name

    @model_validator(mode="after")
    def _ca_needs_https(self) -> FHIRDestinationConfig:
        if self.tls_ca is not None and urlsplit(self.base_url).scheme != "https":
            raise ValueError("tls_ca is only used with an https:// base_url")
        return self

    def relative_to(self, base: Path) -> FHIRDestinationConfig:
        """TLS files named relative to the channel file's directory."""
        if self.tls_ca is None:
            return self
        return self.model_copy(update={"tls_ca": base / self.tls_ca})

    def mapping_options(self) -> MappingOptions:
        return MappingOptions(subject=self.subject,
                              patient_system=self.patient_identifier_system)


BuildBundle = Callable[[bytes], dict[str, Any]]
"""The message as delivered → the transaction Bundle (NothingToMap when there is none)."""


def pcd_bundle(config: FHIRDestinationConfig) -> BuildBundle:
    """Read the HL7 v2 message as IHE PCD device data and map it (``output: hl7``)."""
    zone = ZoneInfo(config.timezone) if config.timezone else None
    options = config.mapping_options()

    def build(payload: bytes) -> dict[str, Any]:
        return transaction_bundle(extract(payload, default_tz=zone), options)

    return build


class FHIRDestination:
    """A Destination POSTing one transaction Bundle per message to a FHIR server."""

    def __init__(
        self,
        name: str,
        config: FHIRDestinationConfig,
        reactor: Any,
        *,
        build: BuildBundle | None = None,
        clock: Any = None,
    ) -> None:
        self.name = name
        self.config = config
        clock = clock if clock is not None else reactor
        self._build = build if build is not None else pcd_bundle(config)
        self._exchanges = Exchanges(
            reactor, clock, tls_ca=config.tls_ca, timeout_seconds=config.timeout_seconds,
            max_response_bytes=config.max_response_bytes, label="FHIR")
        self._tokens: TokenSource | None = None
        if isinstance(config.auth, ClientCredentials):
            self._tokens = TokenSource(config.auth, self._exchanges.client, clock,
                                       reactor=reactor, timeout_seconds=config.timeout_seconds)

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        """Let requests in flight finish (each is bounded by the timeout), then disconnect."""
        return self._exchanges.stop()

    def send(self, payload: bytes, envelope: Envelope) -> Deferred[DeliveryResult]:
        """Map the message and POST the Bundle; a 401 with an OAuth token is tried once more."""
        try:
            bundle = self._build(payload)
        except NothingToMap as error:
            return succeed(DeliveryResult(Verdict.FAIL, None, str(error)))
        except Exception as error:
            # The exception text may quote the message: name its type only.
            detail = f"cannot map the message to FHIR ({type(error).__name__})"
            return succeed(DeliveryResult(Verdict.FAIL, None, detail))
        body = json.dumps(bundle, separators=(",", ":"), ensure_ascii=False).encode()
        return self._exchanges.track(self._attempt(body, renewed=False))

    def _attempt(self, body: bytes, *, renewed: bool) -> Deferred[DeliveryResult]:
        authorization = self._authorization()

        def post(token: str | None) -> Deferred[DeliveryResult]:
            exchange = self._post(body, token)
            return exchange.addCallback(self._judge, body, token, renewed)

        def no_token(reason: Failure) -> DeliveryResult:
            reason.trap(TokenError)
            error: TokenError = reason.value
            return DeliveryResult(error.verdict, None, error.detail)

        return authorization.addCallbacks(post, no_token)

    def _authorization(self) -> Deferred[str | None]:
        auth = self.config.auth
        if isinstance(auth, BearerAuth):
            return succeed(auth.token)
        if self._tokens is not None:
            return self._tokens.token()
        return succeed(None)

    def _post(self, body: bytes, token: str | None) -> Deferred[Answer | DeliveryResult]:
        headers = {
            "Content-Type": [f"{FHIR_JSON}; charset=utf-8"],
            "Accept": [FHIR_JSON],
            "Prefer": ["return=minimal"],
        }
        if token is not None:
            headers["Authorization"] = [f"Bearer {token}"]
        return self._exchanges.request("POST", self.config.base_url, body, headers)

    def _judge(
        self, answer: Answer | DeliveryResult, body: bytes, token: str | None, renewed: bool
    ) -> DeliveryResult | Deferred[DeliveryResult]:
        if isinstance(answer, DeliveryResult):
            return answer
        if answer.status == 401 and self._tokens is not None and token is not None:
            self._tokens.rejected(token)
            if not renewed:
                return self._attempt(body, renewed=True)
        verdict = classify(answer.status, _SUCCESS)
        detail = f"HTTP {answer.status}"
        if answer.status == 401 and renewed:
            detail += " with a renewed token"
        summary = _summary(answer.body, verdict) if not answer.cut else ""
        if summary:
            detail += f" ({summary})"
        if answer.cut:
            detail += f" (response cut to {self.config.max_response_bytes} bytes)"
        return DeliveryResult(verdict, answer.body, detail, answer.retry_after)


def _summary(body: bytes, verdict: Verdict) -> str:
    """PHI-free: entry outcomes of a transaction-response, or an OperationOutcome's codes."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(answer, dict):
        return ""
    if verdict is Verdict.SENT and answer.get("resourceType") == "Bundle":
        statuses = [str((e.get("response") or {}).get("status", "")).split(" ", 1)[0]
                    for e in answer.get("entry") or [] if isinstance(e, dict)]
        created = statuses.count("201")
        return f"{created} created, {len(statuses) - created} already there"
    if answer.get("resourceType") == "OperationOutcome":
        codes = []
        for issue in answer.get("issue") or []:
            code = issue.get("code") if isinstance(issue, dict) else None
            if isinstance(code, str) and _ISSUE_CODE.fullmatch(code) and code not in codes:
                codes.append(code)
        return f"OperationOutcome: {', '.join(codes)}" if codes else "OperationOutcome"
    return ""
