"""The dashboard's files as a running engine serves them, and the rules the files keep.

Served: `/` and `/static/<file>` with the right content types and the security headers
(a CSP without inline script, nosniff, no framing), 404 for anything else. Kept: every
module the page imports is served, no file builds markup from strings (`innerHTML`),
the page has no inline script or handler, and the field-name table matches what
`tools/hl7-field-names.py` derives from hl7apy.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.api.web import CONTENT_SECURITY_POLICY
from tests.support import REPO, EngineProcess, start_engine

pytestmark = pytest.mark.integration

WEB = REPO / "engine" / "web"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    running = start_engine(tmp_path_factory.mktemp("dashboard") / "data")
    try:
        yield running
    finally:
        assert running.stop() == 0


def fetch(engine: EngineProcess, path: str, method: str = "GET") -> tuple[int, dict[str, str],
                                                                           bytes]:
    """Status, headers (lower-case names) and body of one plain HTTP request."""
    request = urllib.request.Request(f"http://127.0.0.1:{engine.admin_port}{path}",
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, \
                answer.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_the_page_and_its_files_are_served_with_security_headers(
        engine: EngineProcess) -> None:
    """`/` is the page, `/static/` its files, each with its type and the strict headers."""
    expected = {"/": "text/html", "/static/app.js": "text/javascript",
                "/static/style.css": "text/css", "/static/hl7-fields.json": "application/json"}
    for path, content_type in expected.items():
        status, headers, body = fetch(engine, path)
        assert status == 200, path
        assert headers["content-type"].startswith(content_type), path
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        on_disk = (WEB / ("index.html" if path == "/" else path.rsplit("/", 1)[1])).read_bytes()
        assert body == on_disk, path
    status, headers, body = fetch(engine, "/static/app.js", method="HEAD")
    assert status == 200 and body == b"" and headers["content-type"].startswith(
        "text/javascript")


@pytest.mark.parametrize("path", ["/static/", "/static/missing.js", "/static/../admin.py",
                                  "/static/%2e%2e/admin.py", "/static/web/app.js",
                                  "/index.html/x", "/nothing-here"])
def test_anything_else_is_not_found(engine: EngineProcess, path: str) -> None:
    """No listing, no way out of the folder, no other files."""
    status, headers, _ = fetch(engine, path)
    assert status == 404, path
    if path.startswith("/static/"):
        assert headers["x-content-type-options"] == "nosniff"


def test_the_policy_forbids_inline_script_and_framing() -> None:
    """Scripts only from this origin, nothing framed, no plugins or foreign connections."""
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_every_module_the_page_imports_is_shipped() -> None:
    """Each `import … from "./x.js"` names a file in engine/web (so a typo cannot ship)."""
    page = (WEB / "index.html").read_text()
    wanted = set(re.findall(r'src="/static/([^"]+)"', page))
    wanted |= set(re.findall(r'href="/static/([^"]+)"', page))
    for script in WEB.glob("*.js"):
        wanted |= set(re.findall(r'from "\./([^"]+)"', script.read_text()))
    assert wanted >= {"app.js", "style.css", "channels.js", "messages.js", "hl7view.js"}
    missing = sorted(name for name in wanted if not (WEB / name).is_file())
    assert not missing


def test_no_markup_is_built_from_strings() -> None:
    """Message content is untrusted: the scripts build DOM with text nodes only."""
    for script in WEB.glob("*.js"):
        text = script.read_text()
        for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                       "eval(", "new Function"):
            assert unsafe not in text, f"{script.name} uses {unsafe}"
    page = (WEB / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "inline script in index.html"
    assert not re.search(r"\son[a-z]+=", page), "inline handler in index.html"
    assert "style=" not in page


def test_field_names_match_hl7apy() -> None:
    """hl7-fields.json is what tools/hl7-field-names.py derives from hl7apy today."""
    check = subprocess.run([sys.executable, str(REPO / "tools" / "hl7-field-names.py"),
                            "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    text = (WEB / "hl7-fields.json").read_text()
    assert '"MSH":' in text and '"Message Control Id"' in text
    assert Path(WEB / "hl7-fields.json").stat().st_size < 200_000
