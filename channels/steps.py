"""Choosing a step's model by the one key that names its kind (`set:`, `replace:`, …).

Preprocessor and transformer steps are written as mappings whose kind is a key rather
than a `type:` tag; picking the model from that key keeps every validation error at the
place the analyst wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticCustomError

M = TypeVar("M", bound=BaseModel)


def pick_step(value: Any, kinds: Mapping[str, type[M]], base: type[M], noun: str,
              example: str) -> M:
    """Validate `value` as the step kind named by its one kind key."""
    if isinstance(value, base):
        return value
    if not isinstance(value, dict):
        raise PydanticCustomError("step", f"a {noun} is a mapping such as {example}")
    found = [key for key in kinds if key in value]
    if len(found) != 1:
        raise PydanticCustomError(
            "step", f"a {noun} has exactly one of {{kinds}} (found: {{found}})",
            {"kinds": ", ".join(kinds), "found": ", ".join(found) if found else "none"})
    return kinds[found[0]].model_validate(value)
