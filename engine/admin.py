"""The admin listener: the API under `/api/v1`, plus what other modules mount beside it.

Every module in `engine.api` that has `routes(engine)` adds API routes; one that has
`mounts(engine) -> {b"name": Resource}` adds top-level resources (metrics, health, the
dashboard). A new endpoint is a new module; this file does not change.
"""

from __future__ import annotations

import importlib
import ipaddress
import pkgutil
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.iweb import IAccessLogFormatter
from zope.interface import provider

import engine.api
from engine.access.router import AccessRouter
from engine.api.routing import Route
from mllp.endpoints import server_endpoint

if TYPE_CHECKING:
    from engine.service import EngineService

log = Logger()


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
    api.putChild(b"v1", AccessRouter(all_routes(engine), engine.access.authenticate,
                                     engine.audit_action))
    for module in api_modules():
        mount = getattr(module, "mounts", None)
        if callable(mount):
            for name, child in mount(engine).items():
                root.putChild(name, child)
    site = server.Site(root, logFormatter=access_line)
    site.noisy = False
    return site


@provider(IAccessLogFormatter)
def access_line(timestamp: str, request: Any) -> str:
    """One access-log line without the query string: search filters may name a patient.

    Promise 6: `?patient_id=…` or `?text=…` never reaches the log; the path, method,
    status and size are enough to follow what operators did (the audit chain has the rest).
    """
    address = request.getClientAddress()
    peer = getattr(address, "host", "-")
    path = request.path.decode("ascii", "replace")
    return (f'"{peer}" - - {timestamp} "{request.method.decode("ascii", "replace")} {path}" '
            f'{request.code} {request.sentLength or "-"}')


def is_loopback(interface: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; an empty interface means every one."""
    if interface == "localhost":
        return True
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return False


def admin_endpoint_description(port: int, interface: str) -> str:
    """The Twisted endpoint string of the admin listener (IPv6 colons escaped)."""
    return f"tcp:{port}:interface={interface.replace(':', chr(92) + ':')}"


def listen_admin(engine: EngineService) -> defer.Deferred[Any]:
    """Listen for the admin API on the configured interface and port, over TLS if set.

    Writes a fresh local admin token first, for `interlink` commands on this machine.
    """
    admin = engine.config.admin
    if admin.tls is None and not is_loopback(admin.interface):
        log.warn("ADMIN API WITHOUT TLS ON A NON-LOOPBACK INTERFACE ({interface}): "
                 "passwords, session cookies and message content cross the network in "
                 "clear text; set admin.tls in the engine file", interface=admin.interface)
    engine.access.write_local_token()
    tls = admin.tls.settings() if admin.tls is not None else None
    endpoint = server_endpoint(engine.reactor,
                               admin_endpoint_description(admin.port, admin.interface), tls)
    return defer.ensureDeferred(endpoint.listen(build_site(engine)))
