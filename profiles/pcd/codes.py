"""Code maps shipped as data (``data/*.csv``, each row with its source), read on first use.

``mdc_units.csv``: MDC unit codes and reference ids → UCUM. ``mdc_loinc.csv``: MDC
observation codes → LOINC as the FHIR R4 vital-signs profiles use them, per UCUM unit where
the LOINC depends on it (glucose by mass or by moles). Plus glucose unit conversion.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

# mg/dL per mmol/L for glucose: molar mass 180.156 g/mol, over 10 (dL per L).
GLUCOSE_MG_DL_PER_MMOL_L = 18.0156

_MG_DL = frozenset({"mg/dL", "MDC_DIM_MILLI_G_PER_DL", "264274"})
_MMOL_L = frozenset({"mmol/L", "MDC_DIM_MILLI_MOLE_PER_L", "266866"})


@dataclass(frozen=True, slots=True)
class Loinc:
    """One LOINC code with its display and the FHIR vital-signs profile it belongs to."""

    code: str
    display: str
    vital_sign: str = ""


@dataclass(frozen=True, slots=True)
class _LoincRow:
    ucum: str
    codes: tuple[Loinc, ...]


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("profiles.pcd").joinpath("data", name).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def _units() -> dict[str, str]:
    table: dict[str, str] = {}
    for row in _rows("mdc_units.csv"):
        table.setdefault(row["mdc_code"], row["ucum"])
        table[row["mdc_refid"]] = row["ucum"]
    return table


@cache
def _loinc() -> dict[str, list[_LoincRow]]:
    table: dict[str, list[_LoincRow]] = {}
    for row in _rows("mdc_loinc.csv"):
        displays = row["loinc_display"].split("|")
        codes = tuple(
            Loinc(code, displays[i] if i < len(displays) else "", row["vital_sign"])
            for i, code in enumerate(row["loinc"].split("|"))
        )
        entry = _LoincRow(row["ucum"], codes)
        for key in (row["mdc_code"], row["mdc_refid"]):
            rows = table.setdefault(key, [])
            if entry not in rows:
                rows.append(entry)
    return table


def ucum_for_unit(key: str | int) -> str | None:
    """The UCUM unit of an MDC unit code or reference id (``266016`` → ``mm[Hg]``)."""
    return _units().get(str(key).strip())


def loinc_for(key: str | int, ucum: str | None = None) -> tuple[Loinc, ...]:
    """LOINC codes for an MDC observation code or reference id, best first.

    When the LOINC depends on the unit (glucose in mg/dL or mmol/L), ``ucum`` picks the
    row; without it the first row wins. Unknown codes give ``()``.
    """
    rows = _loinc().get(str(key).strip(), [])
    if not rows:
        return ()
    if ucum is not None:
        for row in rows:
            if row.ucum == ucum:
                return row.codes
        if len(rows) > 1:
            return ()
    return rows[0].codes


def vital_sign(key: str | int) -> str:
    """The FHIR R4 vital-signs profile of an MDC code ('heartrate', 'bp', ...; '' if none)."""
    codes = loinc_for(key)
    return codes[0].vital_sign if codes else ""


def glucose_mg_dl_to_mmol_l(value: float) -> float:
    """Glucose mg/dL → mmol/L (divided by 18.0156)."""
    return value / GLUCOSE_MG_DL_PER_MMOL_L


def glucose_mmol_l_to_mg_dl(value: float) -> float:
    """Glucose mmol/L → mg/dL (times 18.0156)."""
    return value * GLUCOSE_MG_DL_PER_MMOL_L


def convert_glucose(value: float, unit: str, to: str) -> float:
    """Convert a glucose value between mg/dL and mmol/L; units in UCUM or as MDC codes.

    Raises ValueError naming the unit when either is not a glucose concentration unit.
    """
    source = _glucose_unit(unit)
    target = _glucose_unit(to)
    if source == target:
        return value
    if source == "mg/dL":
        return glucose_mg_dl_to_mmol_l(value)
    return glucose_mmol_l_to_mg_dl(value)


def _glucose_unit(unit: str) -> str:
    unit = unit.strip()
    if unit in _MG_DL:
        return "mg/dL"
    if unit in _MMOL_L:
        return "mmol/L"
    raise ValueError(f"{unit[:40]!r} is not a glucose unit (mg/dL or mmol/L)")
