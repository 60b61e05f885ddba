"""A small router for the admin API: routes declared as data, JSON in and out.

Each resource module exposes `routes(engine) -> list[Route]`; a route names its method,
its path pattern (`messages/{id}`), the least role that may call it, and an async
handler. The router authenticates the caller once, refuses what the role does not allow
(401 without credentials, 403 with too little), and writes JSON answers, so a handler
only computes its answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import resource, server
from zope.interface import implementer

log = Logger()


class Role(IntEnum):
    """What a caller may do; each role includes the ones below it."""

    VIEWER = 1
    """Counters, states and queues: never message content."""
    OPERATOR = 2
    """Message content, search, reprocess."""
    ADMIN = 3
    """Channels, configuration, users."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user name (or token name) and their role."""

    name: str
    role: Role
    via: str = "session"
    """How they proved it: session, token, or local (no authentication configured)."""


@dataclass(slots=True)
class ApiRequest:
    """One call as a handler sees it: path parameters, query, body, caller."""

    raw: server.Request
    params: dict[str, str]
    principal: Principal | None

    @property
    def peer(self) -> str:
        """The caller's address, for the audit record."""
        address = self.raw.getClientAddress()
        return f"{getattr(address, 'host', '')}:{getattr(address, 'port', '')}"

    def query(self, name: str, default: str | None = None) -> str | None:
        """One query-string argument (the first if repeated)."""
        values = self.raw.args.get(name.encode())
        return values[0].decode("utf-8", "replace") if values else default

    def query_all(self, name: str) -> list[str]:
        """Every value of a repeated query-string argument."""
        return [v.decode("utf-8", "replace") for v in self.raw.args.get(name.encode(), [])]

    def json(self) -> Any:
        """The JSON body; raises BadRequest when it is not JSON."""
        data = self.raw.content.read() if self.raw.content is not None else b""
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise BadRequest("the body is not valid JSON") from exc


@dataclass(frozen=True, slots=True)
class Streamed:
    """A body written chunk by chunk as it is produced (exports), with back-pressure."""

    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class Param:
    """One documented parameter of a route (path or query), for the OpenAPI document."""

    name: str
    description: str = ""
    where: str = "query"
    """`query` or `path`."""
    type: str = "string"
    """A JSON Schema type: string, integer, boolean."""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """A handler's answer: status, JSON body (or raw bytes with a content type), headers."""

    status: int
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class BadRequest(Exception):
    """The caller sent something unusable: answered 400 with this text."""


class NotFound(Exception):
    """The thing asked for does not exist: answered 404 with this text."""


Handler = Callable[[ApiRequest], Awaitable[Answer]]
Authenticator = Callable[[server.Request], Awaitable[Principal | None]]


@dataclass(frozen=True, slots=True)
class Route:
    """One operation of the API."""

    method: str
    pattern: str
    handler: Handler
    role: Role | None = Role.VIEWER
    """The least role allowed; None means anyone, even unauthenticated (login, health)."""
    summary: str = ""
    """One line for the OpenAPI document."""
    params: Sequence[Param] = ()
    """Query parameters worth documenting (path parameters are found in `pattern`)."""
    body: str = ""
    """What the JSON request body holds, when the route takes one."""
    produces: str = "application/json"
    """The content type of a successful answer."""

    def match(self, method: str, parts: Sequence[str]) -> dict[str, str] | None:
        """Path parameters when this route serves the call, else None."""
        if method != self.method:
            return None
        pattern = [p for p in self.pattern.split("/") if p]
        if len(pattern) != len(parts):
            return None
        params: dict[str, str] = {}
        for want, got in zip(pattern, parts, strict=True):
            if want.startswith("{") and want.endswith("}"):
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


async def no_authentication(request: server.Request) -> Principal | None:
    """Every caller is an administrator: only for an engine with no users configured."""
    return Principal("local", Role.ADMIN, via="local")


class Router(resource.Resource):
    """Serves every `Route` under the resource it is mounted on (`/api/v1`)."""

    isLeaf = True

    def __init__(self, routes: Iterable[Route],
                 authenticate: Authenticator = no_authentication) -> None:
        super().__init__()
        self.routes = list(routes)
        self.authenticate = authenticate

    def render(self, request: server.Request) -> int:
        d = defer.ensureDeferred(self._dispatch(request))
        d.addErrback(self._failed, request)
        d.addCallback(lambda answer: write_answer(request, answer))
        return server.NOT_DONE_YET

    @staticmethod
    def _failed(failure: Any, request: server.Request) -> Answer:
        if failure.check(BadRequest):
            return Answer(400, {"error": str(failure.value)})
        if failure.check(NotFound):
            return Answer(404, {"error": str(failure.value)})
        # By type only: an exception's text may quote message content (promise 6).
        log.error("admin request {path} failed: {kind}", path=request.path.decode(),
                  kind=failure.type.__name__)
        return Answer(500, {"error": failure.type.__name__})

    async def _dispatch(self, request: server.Request) -> Answer:
        parts = [p.decode("utf-8", "replace") for p in request.postpath if p]
        method = request.method.decode()
        allowed = False
        for route in self.routes:
            params = route.match(method, parts)
            if params is None:
                allowed = allowed or route.match(route.method, parts) is not None
                continue
            principal = await self.authenticate(request)
            if route.role is not None:
                if principal is None:
                    return Answer(401, {"error": "authentication required"},
                                  headers={"www-authenticate": 'Bearer realm="interlink"'})
                if principal.role < route.role:
                    await self.refused(request, principal, route)
                    return Answer(403, {"error": f"needs the {route.role.name.lower()} role"})
            return await route.handler(ApiRequest(request, params, principal))
        if allowed:
            return Answer(405, {"error": "method not allowed"})
        return Answer(404, {"error": "not found"})

    async def refused(self, request: server.Request, principal: Principal, route: Route) -> None:
        """Called when a caller lacks the role for a route; the audit hooks in here."""


def write_answer(request: server.Request, answer: Answer) -> defer.Deferred[None] | None:
    """Send an answer unless the caller has gone away."""
    if request.finished or request._disconnected:
        return None
    request.setResponseCode(answer.status)
    request.setHeader(b"content-type", answer.content_type.encode())
    request.setHeader(b"cache-control", b"no-store")
    for name, value in answer.headers.items():
        request.setHeader(name.encode(), value.encode())
    if isinstance(answer.body, Streamed):
        return defer.ensureDeferred(_stream(request, answer.body.chunks))
    if isinstance(answer.body, bytes):
        request.write(answer.body)
    elif answer.body is not None or answer.content_type == "application/json":
        request.write(json.dumps(answer.body, indent=1).encode() + b"\n")
    request.finish()
    return None


@implementer(IPushProducer)
class _Pacer:
    """Pauses a streamed answer while the caller's connection has more than it can take."""

    def __init__(self) -> None:
        self.resumed: defer.Deferred[None] | None = None
        self.stopped = False

    def pauseProducing(self) -> None:
        if self.resumed is None:
            self.resumed = defer.Deferred()

    def resumeProducing(self) -> None:
        resumed, self.resumed = self.resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        self.stopped = True
        self.resumeProducing()


async def _stream(request: server.Request, chunks: AsyncIterator[bytes]) -> None:
    """Write chunks as they come, waiting whenever the transport asks to pause."""
    pacer = _Pacer()
    request.registerProducer(pacer, True)
    complete = False
    try:
        async for chunk in chunks:
            if pacer.stopped or request._disconnected:
                break
            request.write(chunk)
            if pacer.resumed is not None:
                await pacer.resumed
        else:
            complete = True
    except Exception as error:
        log.error("streamed answer to {path} failed: {kind}", path=request.path.decode(),
                  kind=type(error).__name__)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
        request.unregisterProducer()
    if request._disconnected or request.finished:
        return
    if complete:
        request.finish()
    else:
        # Cut the connection rather than end the body: a truncated export must not
        # look complete to the caller.
        request.loseConnection()
