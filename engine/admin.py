"""The admin listener: the API under `/api/v1`, plus what other modules mount beside it.

Every module in `engine.api` that has `routes(engine)` adds API routes; one that has
`mounts(engine) -> {b"name": Resource}` adds top-level resources (metrics, health, the
dashboard). A new endpoint is a new module; this file does not change.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.web import resource, server

import engine.api
from engine.api.routing import Route, Router

if TYPE_CHECKING:
    from engine.service import EngineService


def api_modules() -> Iterator[ModuleType]:
    """The modules of `engine.api`, in name order."""
    for info in sorted(pkgutil.iter_modules(engine.api.__path__), key=lambda m: m.name):
        yield importlib.import_module(f"engine.api.{info.name}")


def all_routes(engine: EngineService) -> list[Route]:
    """Every route every API module declares."""
    routes: list[Route] = []
    for module in api_modules():
        declare = getattr(module, "routes", None)
        if callable(declare):
            routes.extend(declare(engine))
    return routes


def build_site(engine: EngineService) -> server.Site:
    """The whole admin web site for one engine."""
    root = resource.Resource()
    api = resource.Resource()
    root.putChild(b"api", api)
    api.putChild(b"v1", Router(all_routes(engine)))
    for module in api_modules():
        mount = getattr(module, "mounts", None)
        if callable(mount):
            for name, child in mount(engine).items():
                root.putChild(name, child)
    site = server.Site(root)
    site.noisy = False
    return site


def listen_admin(engine: EngineService) -> defer.Deferred[Any]:
    """Listen for the admin API on the configured interface and port."""
    from twisted.internet.endpoints import TCP4ServerEndpoint

    admin = engine.config.admin
    endpoint = TCP4ServerEndpoint(engine.reactor, admin.port, interface=admin.interface)
    return endpoint.listen(build_site(engine))
