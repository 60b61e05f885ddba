"""Talking to a running engine's admin API from the command line."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

from engine.config import EngineConfig

TIMEOUT_S = 60.0


def call(config: EngineConfig, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request to `/api/v1/<path>` of the engine this config describes."""
    host = config.admin.interface
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{host}:{config.admin.port}/api/v1/{path}"
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url, data=data if method == "POST" else None,
                                     method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except (urllib.error.URLError, ConnectionError) as error:
        print(f"interlink: no engine answering at {url}: {error}", file=sys.stderr)
        raise SystemExit(3) from error


def report(code: int, answer: Any) -> int:
    """Print an answer as JSON; exit status 0 for 2xx, 1 otherwise."""
    print(json.dumps(answer, indent=2))
    return 0 if 200 <= code < 300 else 1
