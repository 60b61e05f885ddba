"""Talking to a running engine's admin API from the command line."""

from __future__ import annotations

import getpass
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from engine.access.tokens import read_local_token
from engine.config import EngineConfig

TIMEOUT_S = 60.0
TOKEN_ENV = "INTERLINK_TOKEN"
CLIENT_CERT_ENV = "INTERLINK_CLIENT_CERT"
CLIENT_KEY_ENV = "INTERLINK_CLIENT_KEY"
"""PEM files the CLI presents to an admin port that requires a client certificate."""


def os_user() -> str:
    """Who runs this command, for the audit record (`cli:<os user>`)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def credentials(config: EngineConfig) -> dict[str, str]:
    """`Authorization: Bearer` with INTERLINK_TOKEN, else the running engine's local token."""
    token = os.environ.get(TOKEN_ENV) or read_local_token(config.data_dir)
    if not token:
        return {}
    return {"authorization": f"Bearer {token}", "x-interlink-actor": f"cli:{os_user()}"}


class EngineUnreachable(Exception):
    """No engine answers on the configured admin port."""


def call(config: EngineConfig, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to `/api/v1/<path>` of the engine this config describes (exit 3 if none)."""
    try:
        code, answer = request(config, method, path, body)
    except EngineUnreachable as error:
        print(f"interlink: {error}", file=sys.stderr)
        raise SystemExit(3) from error
    if code == 401:
        print(f"interlink: the engine wants credentials: run this as the engine's OS user "
              f"(it reads {config.data_dir}/admin.token) or set {TOKEN_ENV} to an API token",
              file=sys.stderr)
    return code, answer


def request(config: EngineConfig, method: str, path: str, body: Any = None
            ) -> tuple[int, Any]:
    """One request to `/api/v1/<path>`; raises EngineUnreachable when nothing answers."""
    url = api_url(config, path)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json",
                                          **credentials(config)})
    try:
        with open_api(req, TIMEOUT_S, config) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except OSError as error:  # refused, timed out, or TLS failed (URLError, SSLError)
        hint = ""
        tls = config.admin.tls
        if tls is not None and tls.require_client_certificate \
                and not os.environ.get(CLIENT_CERT_ENV):
            hint = (f" (the admin port requires a client certificate: set {CLIENT_CERT_ENV}"
                    f" and {CLIENT_KEY_ENV} to PEM files)")
        raise EngineUnreachable(f"no engine answering at {url}: {error}{hint}") from error


def api_url(config: EngineConfig, path: str) -> str:
    """The address of `/api/v1/<path>` on this machine's engine (https when it has TLS)."""
    host = config.admin.interface
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    scheme = "https" if config.admin.tls is not None else "http"
    return f"{scheme}://{host}:{config.admin.port}/api/v1/{path}"


def open_api(req: urllib.request.Request, timeout: float, config: EngineConfig) -> Any:
    """Open a request to the engine, trusting its own certificate when it has TLS."""
    return urllib.request.urlopen(req, timeout=timeout, context=_tls_context(config))


def _tls_context(config: EngineConfig) -> Any:
    """For an admin port with TLS: trust its own certificate (this machine's engine), and
    present `INTERLINK_CLIENT_CERT` (with `INTERLINK_CLIENT_KEY`) when set."""
    tls = config.admin.tls
    if tls is None:
        return None
    import ssl

    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(tls.certificate))
    # The engine's own certificate is the trust anchor, self-signed or not; the address
    # is this machine's, which the certificate need not name.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False
    certificate = os.environ.get(CLIENT_CERT_ENV)
    if certificate:
        context.load_cert_chain(certificate, os.environ.get(CLIENT_KEY_ENV) or None)
    return context


def report(code: int, answer: Any) -> int:
    """Print an answer as JSON; exit status 0 for 2xx, 1 otherwise."""
    print(json.dumps(answer, indent=2))
    return 0 if 200 <= code < 300 else 1
