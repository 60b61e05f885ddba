"""The shipped code maps and glucose conversion."""

from __future__ import annotations

import csv
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiles.pcd.codes import (
    convert_glucose,
    glucose_mg_dl_to_mmol_l,
    glucose_mmol_l_to_mg_dl,
    loinc_for,
    ucum_for_unit,
    vital_sign,
)


def _table(name: str) -> list[dict[str, str]]:
    text = resources.files("profiles.pcd").joinpath("data", name).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@pytest.mark.parametrize("name", ["mdc_units.csv", "mdc_loinc.csv"])
def test_every_row_names_its_source(name: str) -> None:
    """A map row without a source cannot be checked, so none ships without one."""
    rows = _table(name)
    assert rows
    assert all(row["source"].strip() for row in rows)


def test_unit_codes_follow_partition_four() -> None:
    """Every MDC unit code lies in partition 4 (262144..327679), as 11073-10101 puts them."""
    for row in _table("mdc_units.csv"):
        assert 262144 <= int(row["mdc_code"]) < 327680, row["mdc_refid"]


@pytest.mark.parametrize(
    ("key", "ucum"),
    [
        ("MDC_DIM_PERCENT", "%"),
        ("MDC_DIM_BEAT_PER_MIN", "/min"),
        ("264864", "/min"),
        ("MDC_DIM_MMHG", "mm[Hg]"),
        (266016, "mm[Hg]"),
        ("MDC_DIM_MILLI_L_PER_HR", "mL/h"),
        ("MDC_DIM_MILLI_G_PER_DL", "mg/dL"),
        ("MDC_DIM_MILLI_MOLE_PER_L", "mmol/L"),
        ("266866", "mmol/L"),
        ("MDC_DIM_DEGC", "Cel"),
        ("268192", "Cel"),
        ("MDC_DIM_FAHR", "[degF]"),
        ("MDC_DIM_X_SEC", "s"),
        ("MDC_DIM_MICRO_G_PER_KG_PER_MIN", "ug/kg/min"),
    ],
)
def test_mdc_units_to_ucum(key: str | int, ucum: str) -> None:
    """The units PCD devices send resolve to the UCUM a FHIR Quantity needs."""
    assert ucum_for_unit(key) == ucum


def test_unknown_unit_is_none() -> None:
    """A unit nobody mapped is None, not a guess."""
    assert ucum_for_unit("MDC_DIM_NOT_A_UNIT") is None


@pytest.mark.parametrize(
    ("key", "first", "profile"),
    [
        ("MDC_ECG_HEART_RATE", "8867-4", "heartrate"),
        ("150456", "59408-5", "oxygensat"),
        ("MDC_RESP_RATE", "9279-1", "resprate"),
        ("MDC_TEMP", "8310-5", "bodytemp"),
        ("150021", "8480-6", "bp-component"),
        ("MDC_PRESS_BLD_NONINV_DIA", "8462-4", "bp-component"),
        ("MDC_PRESS_BLD_NONINV_MEAN", "8478-0", "bp-component"),
        ("MDC_PRESS_BLD_NONINV", "85354-9", "bp"),
        ("MDC_MASS_BODY_ACTUAL", "29463-7", "bodyweight"),
    ],
)
def test_vital_signs_map_to_fhir_loinc(key: str, first: str, profile: str) -> None:
    """Vital signs carry the LOINC the FHIR R4 vital-signs profiles require."""
    codes = loinc_for(key)
    assert codes[0].code == first
    assert vital_sign(key) == profile


def test_spo2_carries_both_loinc_codes() -> None:
    """SpO2 maps to 59408-5 and 2708-6 (US Core pulse oximetry uses both)."""
    assert [c.code for c in loinc_for("MDC_PULS_OXIM_SAT_O2")] == ["59408-5", "2708-6"]


def test_glucose_loinc_depends_on_the_unit() -> None:
    """Glucose by mass is 2339-0; by moles 15074-8; an unmapped unit gives nothing."""
    assert loinc_for("MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD", "mg/dL")[0].code == "2339-0"
    assert loinc_for("160184", "mmol/L")[0].code == "15074-8"
    assert loinc_for("160184", "g/L") == ()
    assert loinc_for("MDC_NOT_A_CODE") == ()


def test_glucose_conversion_known_values() -> None:
    """100 mg/dL is 5.55 mmol/L; 10 mmol/L is 180.156 mg/dL."""
    assert glucose_mg_dl_to_mmol_l(100) == pytest.approx(5.5508, abs=1e-4)
    assert glucose_mmol_l_to_mg_dl(10) == pytest.approx(180.156)
    assert convert_glucose(180.156, "mg/dL", "mmol/L") == pytest.approx(10)
    assert convert_glucose(10, "MDC_DIM_MILLI_MOLE_PER_L", "264274") == pytest.approx(180.156)
    assert convert_glucose(37.5, "mg/dL", "MDC_DIM_MILLI_G_PER_DL") == 37.5


def test_glucose_conversion_refuses_other_units() -> None:
    """A unit that is not a glucose concentration is a clear error, not a wrong number."""
    with pytest.raises(ValueError, match="not a glucose unit"):
        convert_glucose(5, "mm[Hg]", "mg/dL")


@given(st.floats(min_value=0, max_value=5000, allow_nan=False))
def test_glucose_round_trip(value: float) -> None:
    """mg/dL → mmol/L → mg/dL gives the value back."""
    back = glucose_mmol_l_to_mg_dl(glucose_mg_dl_to_mmol_l(value))
    assert back == pytest.approx(value, rel=1e-12, abs=1e-12)
    assert convert_glucose(convert_glucose(value, "mmol/L", "mg/dL"), "mg/dL", "mmol/L") == (
        pytest.approx(value, rel=1e-12, abs=1e-12)
    )
