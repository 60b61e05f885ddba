"""The HTTP source: HL7 v2 messages POSTed over HTTP(S), answered with their ACK.

``POST <path>`` with an ER7 body (``Content-Type: application/hl7-v2``,
``x-application/hl7-v2+er7`` or ``text/plain``) is handed to `receive` exactly as an MLLP
frame would be: one message, a batch, or several messages back to back. The response is
written only after `receive` fired, which is after the store's commit (promise 1):

- ``200`` with the ACK as body (``Content-Type: application/hl7-v2``). AE/AR/CE/CR ACKs
  are ``200`` too: the HTTP exchange worked and the HL7 ACK carries the verdict, as it
  would over MLLP. A sender must read MSA-1, not only the status code.
- ``400`` empty body; ``404`` another path; ``405`` any method but POST; ``413`` body over
  ``max_body_bytes``; ``415`` another content type; ``500`` the receiver failed (nothing
  says the message was stored; the sender should retry).

A body over the limit is counted and dropped as it arrives, never buffered whole. If the
client disconnects before its answer, the message is still committed; only the answer is
lost, as with an MLLP sender that hangs up. Error texts and logs carry peers and sizes,
never message content.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from twisted.internet import defer, interfaces
from twisted.internet.endpoints import quoteStringArgument
from twisted.logger import Logger
from twisted.web import pages, resource, server

from channels.sources import Receive
from channels.tls import ListenerTLS
from mllp.endpoints import TLSSettings, server_endpoint

log = Logger()

HL7_MEDIA_TYPES = frozenset({"application/hl7-v2", "x-application/hl7-v2+er7", "text/plain"})
ANSWER_TYPE = b"application/hl7-v2"
DEFAULT_MAX_BODY = 16 * 1024 * 1024
IDLE_TIMEOUT_SECONDS = 300


HTTPTLSConfig = ListenerTLS
"""The listener's certificate chain and key; optionally the CAs clients must come from."""


class HTTPSourceConfig(BaseModel):
    """Where the HTTP source listens and what it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http"]
    port: int = Field(ge=0, le=65535)
    interface: str = "127.0.0.1"
    path: str = "/hl7"
    tls: HTTPTLSConfig | None = None
    max_body_bytes: int = Field(DEFAULT_MAX_BODY, gt=0)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value or "#" in value:
            raise ValueError("path must start with '/' and hold no query or fragment")
        return value

    def endpoint_description(self) -> str:
        """The Twisted server endpoint string for port and interface."""
        return f"tcp:{self.port}:interface={quoteStringArgument(self.interface)}"

    def tls_settings(self) -> TLSSettings | None:
        """The TLS settings the listener endpoint takes, or None for plain HTTP."""
        return self.tls.settings() if self.tls is not None else None


def _plain(request: server.Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode("utf-8") + b"\n"


def _peer(request: server.Request) -> str:
    address = request.getClientAddress()
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return f"http:{host}:{port}" if host is not None else "http:unknown"


def _media_type(request: server.Request) -> str | None:
    raw = request.getHeader(b"content-type")
    return raw.split(b";", 1)[0].strip().lower().decode("latin-1") if raw else None


class HL7Resource(resource.Resource):
    """Receives one HL7 v2 payload per POST and answers with its ACK after the commit."""

    isLeaf = True

    def __init__(self, receive: Receive, *, max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
        super().__init__()
        self._receive = receive
        self._max_body_bytes = max_body_bytes

    def render(self, request: server.Request) -> bytes | int:
        if request.postpath not in ([], [b""]):
            return _plain(request, 404, "not found: HL7 is received at this resource only")
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return _plain(request, 405, "method not allowed: POST an HL7 v2 message")
        return self.render_POST(request)

    def render_POST(self, request: server.Request) -> bytes | int:
        body = self._body(request)
        if body is None:
            return _plain(request, 413, f"body larger than {self._max_body_bytes} bytes")
        if not body.strip():
            return _plain(request, 400, "empty body: POST an HL7 v2 message")
        if _media_type(request) not in HL7_MEDIA_TYPES:
            return _plain(request, 415, "unsupported content type: send application/hl7-v2, "
                                        "x-application/hl7-v2+er7 or text/plain")
        peer = _peer(request)
        gone = False

        def client_left(_: Any) -> None:
            nonlocal gone
            if not request.finished:
                gone = True
                log.info("HTTP client {peer} left before its answer ({size} bytes received; "
                         "the message is still stored)", peer=peer, size=len(body))

        request.notifyFinish().addErrback(client_left)

        def answer(ack: bytes | None) -> None:
            if gone:
                return
            if not ack:
                request.write(_plain(request, 500, "no acknowledgment was produced"))
            else:
                request.setResponseCode(200)
                request.setHeader(b"content-type", ANSWER_TYPE)
                request.write(ack)
            request.finish()

        def failed(failure: Any) -> None:
            log.error("HTTP source: receive failed for {peer}: {kind}", peer=peer,
                      kind=failure.type.__name__)
            if not gone:
                request.write(_plain(request, 500, "message could not be received; retry"))
                request.finish()

        defer.maybeDeferred(self._receive, body, peer).addCallbacks(answer, failed)
        return server.NOT_DONE_YET

    def _body(self, request: server.Request) -> bytes | None:
        """The body, or None when it is (or was, as it arrived) over the limit."""
        if getattr(request, "body_too_large", False):
            return None
        content = request.content
        content.seek(0)
        body: bytes = content.read(self._max_body_bytes + 1)
        return None if len(body) > self._max_body_bytes else body


class BoundedRequest(server.Request):
    """A request that keeps at most its site's ``max_body_bytes`` of body.

    A larger body (by Content-Length, or counted as chunks arrive) is dropped as it comes
    and the request marked ``body_too_large`` for the resource to answer 413.
    """

    body_too_large = False
    _kept = 0

    def _limit(self) -> int:
        site = getattr(self.channel, "site", None)
        return int(getattr(site, "max_body_bytes", DEFAULT_MAX_BODY))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self.body_too_large = True
            self.content = BytesIO()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        self._kept += len(data)
        if self._kept > self._limit():
            self.body_too_large = True
            self.content.close()
            self.content = BytesIO()
            return
        super().handleContentChunk(data)


class HL7Site(server.Site):
    """A site whose requests stop buffering bodies beyond ``max_body_bytes``."""

    requestFactory = BoundedRequest

    def __init__(self, root: resource.IResource, *, max_body_bytes: int = DEFAULT_MAX_BODY,
                 **kwargs: Any) -> None:
        kwargs.setdefault("timeout", IDLE_TIMEOUT_SECONDS)
        super().__init__(root, **kwargs)
        self.max_body_bytes = max_body_bytes


class _Branch(resource.Resource):
    """A path segment on the way to the HL7 resource; anything else is a plain 404."""

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        return pages.notFound("Not found", "HL7 is received at the configured path only.")


def build_site(config: HTTPSourceConfig, receive: Receive, *, reactor: Any = None) -> HL7Site:
    """The site serving `HL7Resource` at ``config.path`` (other paths answer 404)."""
    hl7 = HL7Resource(receive, max_body_bytes=config.max_body_bytes)
    parts = [p.encode("utf-8") for p in config.path.strip("/").split("/") if p]
    root: resource.IResource = hl7
    if parts:
        root = parent = _Branch()
        for part in parts[:-1]:
            child = _Branch()
            parent.putChild(part, child)
            parent = child
        parent.putChild(parts[-1], hl7)
    site = HL7Site(root, max_body_bytes=config.max_body_bytes,
                   **({"reactor": reactor} if reactor is not None else {}))
    site.noisy = False
    return site


def listen_http(reactor: Any, config: HTTPSourceConfig, receive: Receive, *,
                endpoint: str | None = None) -> defer.Deferred[interfaces.IListeningPort]:
    """Listen for HL7 over HTTP on ``endpoint`` (default: from the config), TLS if set."""
    description = endpoint or config.endpoint_description()
    listener = server_endpoint(reactor, description, config.tls_settings())
    return listener.listen(build_site(config, receive, reactor=reactor))
