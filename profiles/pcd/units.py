"""Units as rules write them: UCUM text, an MDC unit reference id or an MDC unit code.

A channel rule may name its unit any of these ways (``mg/dL``, ``MDC_DIM_MILLI_G_PER_DL``,
``264274``); ``ucum_of`` brings each to its UCUM form using the shipped map, so a rule's
unit and a message's unit can be compared.
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources

from profiles.pcd.codes import ucum_for_unit


@cache
def known_ucum() -> frozenset[str]:
    """Every UCUM unit the shipped MDC unit map names."""
    text = resources.files("profiles.pcd").joinpath("data", "mdc_units.csv").read_text("utf-8")
    return frozenset(row["ucum"] for row in csv.DictReader(text.splitlines()) if row["ucum"])


def ucum_of(unit: str) -> str | None:
    """The UCUM form of ``unit`` (UCUM, MDC reference id or MDC code); None if unknown."""
    unit = unit.strip()
    if not unit:
        return None
    if unit in known_ucum():
        return unit
    return ucum_for_unit(unit)
