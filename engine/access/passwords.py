"""Password hashing with scrypt (memory-hard, in the standard library).

A stored hash reads `scrypt$n=32768,r=8,p=1$<salt>$<hash>` (base64): the parameters travel
with each hash, so they can be raised later and old hashes still verify; `needs_rehash`
says when a hash was made with weaker parameters than the current ones.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
from dataclasses import dataclass

SALT_BYTES = 16
HASH_BYTES = 32


@dataclass(frozen=True, slots=True)
class ScryptParameters:
    """scrypt's cost: memory is about 128 * n * r bytes (32 MiB for the default)."""

    n: int = 2 ** 15
    r: int = 8
    p: int = 1

    def encode(self) -> str:
        return f"n={self.n},r={self.r},p={self.p}"

    @classmethod
    def decode(cls, text: str) -> ScryptParameters:
        values = dict(part.split("=", 1) for part in text.split(","))
        return cls(int(values["n"]), int(values["r"]), int(values["p"]))

    @property
    def maxmem(self) -> int:
        """The memory bound handed to OpenSSL: what these parameters need, plus room."""
        return 128 * self.n * self.r * (self.p + 1) + 1024 * 1024


DEFAULT_PARAMETERS = ScryptParameters()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(password: str, salt: bytes, params: ScryptParameters) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=params.n, r=params.r,
                          p=params.p, maxmem=params.maxmem, dklen=HASH_BYTES)


def hash_password(password: str, params: ScryptParameters = DEFAULT_PARAMETERS) -> str:
    """A new salted hash of `password`, with its parameters, for the users table."""
    salt = os.urandom(SALT_BYTES)
    return f"scrypt${params.encode()}${_b64(salt)}${_b64(_derive(password, salt, params))}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches the stored hash; compared in constant time."""
    try:
        scheme, params_text, salt_text, hash_text = stored.split("$")
        if scheme != "scrypt":
            return False
        params = ScryptParameters.decode(params_text)
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(hash_text, validate=True)
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(_derive(password, salt, params), expected)


def needs_rehash(stored: str, params: ScryptParameters = DEFAULT_PARAMETERS) -> bool:
    """True when a hash was made with other parameters than `params` (raise them on login)."""
    try:
        scheme, params_text, _, _ = stored.split("$")
        return scheme != "scrypt" or ScryptParameters.decode(params_text) != params
    except (ValueError, KeyError):
        return True


@functools.cache
def dummy_hash(params: ScryptParameters = DEFAULT_PARAMETERS) -> str:
    """Verified against when a login names no such user, so timing does not tell them apart."""
    return hash_password("unused: equalises time for unknown users", params)
