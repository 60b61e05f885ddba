"""`/api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the route table.

Every route of every API module appears, with its path parameters, documented query
parameters, request body, content type and the least role it needs, so the document
cannot drift from what the router serves. It is served without authentication: it
describes the API and holds no data.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from engine.api.routing import Answer, ApiRequest, Role, Route

if TYPE_CHECKING:
    from engine.service import EngineService

SESSION_COOKIE = "interlink_session"
"""The session cookie set by `POST /api/v1/auth/login` (described, not read, here)."""
_PATH_PARAM = re.compile(r"\{([^}/]+)\}")


def package_version() -> str:
    """The installed Interlink version, which versions the document."""
    try:
        return version("interlink")
    except PackageNotFoundError:
        return "0"


def operation_id(route: Route) -> str:
    """A stable, unique name: method and path words (`get_messages_by_id`)."""
    words = [("by_" + p[1:-1]) if p.startswith("{") else p
             for p in route.pattern.split("/") if p]
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join([route.method.lower(), *words]))


def operation(route: Route) -> dict[str, Any]:
    """One route as an OpenAPI operation object."""
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(route.pattern)]
    for p in route.params:
        if p.where == "path":
            continue
        parameters.append({"name": p.name, "in": p.where, "required": p.required,
                           "description": p.description, "schema": {"type": p.type}})
    responses: dict[str, Any] = {
        "200": {"description": "Success",
                "content": {route.produces: {"schema": {}}}},
        "400": {"description": "The request is unusable (the answer says why)"},
        "404": {"description": "Not found"},
    }
    op: dict[str, Any] = {"operationId": operation_id(route),
                          "summary": route.summary or f"{route.method} {route.pattern}",
                          "tags": [route.pattern.split("/")[0]],
                          "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if route.body:
        op["requestBody"] = {"description": route.body, "required": True,
                             "content": {"application/json": {"schema": {"type": "object"}}}}
    if route.role is None:
        op["security"] = []
    else:
        op["description"] = f"Needs the {route.role.name.lower()} role or higher."
        op["x-interlink-role"] = route.role.name.lower()
        responses["401"] = {"description": "No credentials"}
        responses["403"] = {"description": f"Needs the {route.role.name.lower()} role"}
    return op


def document(routes: list[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a route table."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault("/" + route.pattern.strip("/"), {})[route.method.lower()] = (
            operation(route))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Interlink admin API", "version": package_version(),
                 "description": "Channels, messages, audit and users of one Interlink "
                                "engine. Roles: " + ", ".join(r.name.lower() for r in Role)
                                + " (each includes the ones before it)."},
        "servers": [{"url": "/api/v1"}],
        "components": {"securitySchemes": {
            "token": {"type": "http", "scheme": "bearer",
                      "description": "An API token, or the local admin token"},
            "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                        "description": "The cookie POST /auth/login sets"},
        }},
        "security": [{"token": []}, {"session": []}],
        "paths": dict(sorted(paths.items())),
    }


def routes(engine: EngineService) -> list[Route]:
    """The document itself, open to anyone."""

    async def openapi(request: ApiRequest) -> Answer:
        from engine.admin import all_routes

        return Answer(200, document(all_routes(engine)))

    return [Route("GET", "openapi.json", openapi, None,
                  "This OpenAPI 3.1 document (no authentication)")]
