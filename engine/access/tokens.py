"""Secrets callers present: API tokens, session ids, and the local admin token file.

Tokens are 256 random bits, so a plain SHA-256 is enough to store them safely (a slow KDF
protects guessable passwords, not random keys) and lets a token be found by its hash.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

TOKEN_PREFIX = "il_"
LOCAL_TOKEN_FILE = "admin.token"


def new_token() -> str:
    """A fresh API token, recognisable by its prefix in logs of leaked-secret scanners."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def local_token_path(data_dir: Path) -> Path:
    """Where the running engine leaves its local admin token for `interlink` commands."""
    return data_dir / LOCAL_TOKEN_FILE


def write_local_token(data_dir: Path) -> str:
    """Write a fresh local admin token, readable by the engine's own OS user only."""
    path = local_token_path(data_dir)
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode("ascii"))
    finally:
        os.close(fd)
    return token


def read_local_token(data_dir: Path) -> str | None:
    """The local admin token if this OS user can read it, else None."""
    try:
        return local_token_path(data_dir).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def remove_local_token(data_dir: Path, token: str) -> None:
    """Remove the token file if it is still the one this engine wrote."""
    if read_local_token(data_dir) == token:
        local_token_path(data_dir).unlink(missing_ok=True)
