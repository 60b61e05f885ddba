"""Every PCD-01 message of the public corpus, extracted and mapped, validates as FHIR."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from profiles.fhir import NothingToMap, systems, transaction_bundle
from profiles.pcd.extract import extract
from tests.profiles.corpus import CORPUS, file_id
from tests.profiles.fhir.fhir_models import validate_bundle

PCD01 = sorted([*(CORPUS / "pcd01-monitor").glob("*.hl7"),
                *(CORPUS / "pcd01-pump").glob("*.hl7")])


def observations(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Observation"]


@pytest.mark.parametrize("path", PCD01, ids=file_id)
def test_every_resource_validates(path: Path) -> None:
    """Each Device and Observation of the Bundle validates with the R4B models."""
    report = extract(path.read_bytes())
    try:
        bundle = transaction_bundle(report)
    except NothingToMap:
        assert not report.metrics
        return
    validate_bundle(bundle)
    assert len(observations(bundle)) >= 1
    identifiers = [o["identifier"][0]["value"] for o in observations(bundle)]
    assert len(identifiers) == len(set(identifiers))
    urls = {e["fullUrl"] for e in bundle["entry"]}
    for resource in (e["resource"] for e in bundle["entry"]):
        for link in ("device", "parent"):
            if link in resource:
                assert resource[link]["reference"] in urls


def test_the_corpus_has_pcd01_messages_with_observations() -> None:
    """The corpus is where the tests expect it, and most of it maps to Observations."""
    mapped = 0
    for path in PCD01:
        with contextlib.suppress(NothingToMap):
            mapped += bool(transaction_bundle(extract(path.read_bytes())))
    assert len(PCD01) >= 10
    assert mapped >= len(PCD01) - 1


def test_philips_monitor_tree_and_readings() -> None:
    """The TF's Philips example: its device tree, blood pressure with LOINC, its time."""
    raw = (CORPUS / "pcd01-monitor" / "ihe-tf-philips-multiparam-monitor.hl7").read_bytes()
    bundle = transaction_bundle(extract(raw))
    devices = [e["resource"] for e in bundle["entry"]
               if e["resource"]["resourceType"] == "Device"]
    types = [d.get("type", {}).get("coding", [{}])[0].get("display") for d in devices]
    assert "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS" in types
    assert "MDC_DEV_ANALY_SAT_O2_VMD" in types
    systolic = next(o for o in observations(bundle)
                    if o["code"]["coding"][0]["code"] == "150021")
    assert {"system": systems.LOINC, "code": "8480-6", "display": "Systolic blood pressure"} in (
        systolic["code"]["coding"])
    assert systolic["valueQuantity"]["value"] == 117
    assert systolic["valueQuantity"]["code"] == "mm[Hg]"
    assert systolic["effectiveDateTime"].startswith("2015-01-22T11:50:00")
    assert systolic["status"] == "cancelled"  # OBX-11 is X throughout the TF example
    assert systolic["subject"]["identifier"]["value"] == "HO2009001"
