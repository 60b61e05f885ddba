"""Password hashes: salted scrypt with its parameters, checked in constant time."""

from __future__ import annotations

from engine.access.passwords import (
    DEFAULT_PARAMETERS,
    ScryptParameters,
    hash_password,
    needs_rehash,
    verify_password,
)

FAST = ScryptParameters(n=2 ** 10, r=8, p=1)


def test_right_password_verifies_and_wrong_one_does_not() -> None:
    """Only the password that was hashed matches its hash."""
    stored = hash_password("correct horse battery staple", FAST)
    assert verify_password("correct horse battery staple", stored)
    assert not verify_password("correct horse battery stapl", stored)
    assert not verify_password("", stored)


def test_hash_keeps_no_password_and_a_salt_of_its_own() -> None:
    """The stored text does not contain the password; the same password hashes differently."""
    first = hash_password("s3cret-Passw0rd", FAST)
    second = hash_password("s3cret-Passw0rd", FAST)
    assert "s3cret-Passw0rd" not in first
    assert first != second
    assert verify_password("s3cret-Passw0rd", first) and verify_password("s3cret-Passw0rd",
                                                                         second)


def test_parameters_are_stored_with_the_hash_and_can_be_raised() -> None:
    """A hash names its cost, still verifies after the default rises, and asks for a rehash."""
    stored = hash_password("pw", FAST)
    scheme, params, _salt, _digest = stored.split("$")
    assert (scheme, params) == ("scrypt", "n=1024,r=8,p=1")
    assert verify_password("pw", stored)
    assert needs_rehash(stored, DEFAULT_PARAMETERS)
    assert not needs_rehash(stored, FAST)
    assert DEFAULT_PARAMETERS.n >= 2 ** 14  # memory-hard: 16 MiB or more per guess


def test_damaged_or_foreign_hashes_never_verify() -> None:
    """A malformed stored value answers False instead of raising."""
    for stored in ("", "plain", "bcrypt$x$y$z", "scrypt$n=x$a$b", "scrypt$n=1024,r=8,p=1$!!$??"):
        assert not verify_password("pw", stored)
