"""Validation of produced FHIR JSON with fhir.resources (its R4B models share R4's names)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class


def validate_resource(resource: dict[str, Any]) -> None:
    """Raise pydantic's ValidationError unless ``resource`` is a valid resource of its type."""
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def validate_bundle(bundle: dict[str, Any]) -> None:
    """The Bundle and, one by one, every resource in it (a Bundle model does not look inside)."""
    validate_resource(bundle)
    for entry in bundle.get("entry", []):
        validate_resource(entry["resource"])
