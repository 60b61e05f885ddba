"""The dashboard: static files from `engine/web`, served on the admin port at `/` and `/static/`.

The files are plain HTML, CSS and ES modules shipped as package data, so the dashboard
needs no build step and nothing from the internet. Every answer carries a strict
Content-Security-Policy (scripts and styles only from this origin, no inline script, no
framing), so message content rendered by the page can never run as code.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from twisted.web import resource, server

if TYPE_CHECKING:
    from engine.service import EngineService

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    b"content-security-policy": CONTENT_SECURITY_POLICY.encode(),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of the dashboard, held in memory with its content type."""

    body: bytes
    content_type: str


def load_files() -> dict[str, StaticFile]:
    """Every file directly under `engine/web`, by name (no directories, no listing)."""
    files: dict[str, StaticFile] = {}
    for entry in resources.files("engine").joinpath("web").iterdir():
        name = entry.name
        if not entry.is_file() or name.startswith("."):
            continue
        suffix = name[name.rfind("."):] if "." in name else ""
        content_type = CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0]
        if content_type is None:
            continue
        files[name] = StaticFile(entry.read_bytes(), content_type)
    return files


def answer(request: server.Request, status: int, body: bytes, content_type: str) -> bytes:
    """Set the status and headers every dashboard answer carries; return the body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type.encode())
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)
    return b"" if request.method == b"HEAD" else body


class StaticFiles(resource.Resource):
    """`/static/<name>`: one of the dashboard's files, or 404."""

    isLeaf = True

    def __init__(self, files: dict[str, StaticFile]) -> None:
        super().__init__()
        self.files = files

    def render_GET(self, request: server.Request) -> bytes:
        parts = [p for p in request.postpath if p]
        found = self.files.get(parts[0].decode("utf-8", "replace")) if len(parts) == 1 else None
        if found is None:
            return answer(request, 404, b"not found\n", "text/plain; charset=utf-8")
        return answer(request, 200, found.body, found.content_type)

    render_HEAD = render_GET


class Index(resource.Resource):
    """`/`: the dashboard's single page (everything else is the API or a static file)."""

    isLeaf = True

    def __init__(self, page: StaticFile) -> None:
        super().__init__()
        self.page = page

    def render_GET(self, request: server.Request) -> bytes:
        if any(request.postpath):
            return answer(request, 404, b"not found\n", "text/plain; charset=utf-8")
        return answer(request, 200, self.page.body, self.page.content_type)

    render_HEAD = render_GET


def mounts(engine: EngineService) -> dict[bytes, resource.Resource]:
    """The dashboard at `/` and its files at `/static/`."""
    files = load_files()
    return {b"": Index(files["index.html"]), b"static": StaticFiles(files)}
