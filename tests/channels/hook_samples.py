"""Hooks the channel tests load by name, the way a site's own module is loaded."""

from __future__ import annotations

import os

from profiles.hl7.edit import EditableMessage, FieldReader

NOT_CALLABLE = 42


def is_female(message: FieldReader) -> bool:
    """A filter hook: PID-8 is F."""
    return message.get("PID-8") == "F"


def leaky_failure(message: FieldReader) -> bool:
    """Fails with message content in the exception text, as careless hooks do."""
    raise ValueError(f"cannot handle patient {message.get('PID-5.1')}")


def returns_text(message: FieldReader) -> str:
    """A filter hook that forgot it must answer True or False."""
    return "yes"


def tag_ward(message: EditableMessage) -> None:
    """A transformer hook that edits in place."""
    message.set("PV1-3.1", "HOOKED")


def replace_message(message: EditableMessage) -> EditableMessage:
    """A transformer hook that returns a new message instead of editing."""
    other = message.copy()
    other.set("MSH-5", "REPLACED")
    other.keep_segments(["PID"])
    return other


def returns_number(message: EditableMessage) -> int:
    """A transformer hook with a wrong return type."""
    return 3


def lf_to_cr(raw: bytes) -> bytes:
    """A preprocessor hook."""
    return raw.replace(b"\n", b"\r")


def bytes_to_text(raw: bytes) -> str:
    """A preprocessor hook that returns text instead of bytes."""
    return raw.decode("latin-1")


def two_arguments(first: object, second: object) -> None:
    """Not a hook: it needs two arguments."""


class Namespace:
    """Holds a hook one attribute deeper (``module:Namespace.is_male``)."""

    @staticmethod
    def is_male(message: FieldReader) -> bool:
        """A filter hook reached through a class attribute."""
        return message.get("PID-8") == "M"


def chatty_tag_ward(message: EditableMessage) -> None:
    """A transformer hook that prints while it works, as debugging hooks do."""
    print("looking at", message.get("MSH-10"), "x" * 5000)
    message.set("PV1-3.1", "HOOKED")


def ends_the_process(message: EditableMessage) -> None:
    """A transformer hook that ends its interpreter on one control id, as a crashing C
    extension or a stray `os._exit` would; any other message is tagged."""
    if message.get("MSH-10") == "END-THE-PROCESS":
        os._exit(3)
    message.set("PV1-3.1", "HOOKED")
