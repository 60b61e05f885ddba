"""The admin API router with access control wired in: refusals go on the audit chain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from twisted.web import server

from engine.access.gate import CsrfRefused, peer_of
from engine.api.routing import Answer, Authenticator, Principal, Route, Router

Audit = Callable[..., Awaitable[None]]


class AccessRouter(Router):
    """A `Router` that audits every 403 and answers a missing CSRF token with 403."""

    def __init__(self, routes: Iterable[Route], authenticate: Authenticator,
                 audit: Audit) -> None:
        super().__init__(routes, authenticate)
        self.audit = audit

    async def refused(self, request: server.Request, principal: Principal, route: Route) -> None:
        """`access.refused`: who, which route, from where (path ids only, no query)."""
        await self.audit(principal.name, "access.refused", peer=peer_of(request), detail={
            "route": f"{route.method} {route.pattern}",
            "path": request.path.decode("utf-8", "replace"),
            "role": principal.role.name.lower(), "needs": _role_name(route),
            "via": principal.via})

    def _failed(self, failure: Any, request: server.Request) -> Answer:  # type: ignore[override]
        if failure.check(CsrfRefused):
            return Answer(403, {"error": str(failure.value)})
        return Router._failed(failure, request)


def _role_name(route: Route) -> str:
    return route.role.name.lower() if route.role is not None else ""
