"""Free text as every backend can store it.

PostgreSQL refuses a NUL character in text and a value longer than its column, and one
such value fails the whole group-commit transaction it is in, with every other message
of the batch. SQLite would keep either as it is. Text that can come from a message or a
peer (reasons, errors, lane keys) is therefore stored with NUL replaced and cut to its
column on both backends, so both hold the same values.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def storable(value: str, limit: int | None = None) -> str:
    """`value` without NUL characters and no longer than `limit`."""
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT)
    if limit is not None and len(value) > limit:
        value = value[:limit]
    return value


def storable_or_none(value: str | None, limit: int | None = None) -> str | None:
    """`storable`, keeping None as None."""
    return None if value is None else storable(value, limit)
