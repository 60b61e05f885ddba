"""Device resources for the IEEE 11073 containment tree: MDS, VMD and channel.

Each node becomes one Device with its MDC type and a ``parent`` link, as the HL7
Point-of-Care Device IG models a device. A node is known by an identifier that stays the
same from message to message, so a resend finds the Device it created before:

- an MDS by its EUI-64 in the IEEE system, or by ``urn:interlink:device`` and its key
  when its id is not an EUI-64;
- a VMD or channel by ``urn:interlink:device`` with its device's key and its place in
  the tree (``EUI-64:0009FBFFFFA0F4CA/1.3.1``), plus its own EUI-64 when it has one
  that differs from its parent's (a plug-in module).

A node without any identity (no OBX-18 anywhere above it) has nothing stable to be found
by, so it gets no Device; its observations then name no device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiles.fhir import systems
from profiles.pcd.records import Code, DeviceIdentity, DeviceNode


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One Device resource with the identifier it is conditionally created by."""

    key: tuple[str, str]
    """(system, value) of the identifier used for ``ifNoneExist``."""
    full_url: str
    resource: dict[str, Any]
    device: str = ""
    """The key of the device identity it was made for (see ``device_key``)."""


def device_entries(
    roots: tuple[DeviceNode, ...],
) -> tuple[list[DeviceEntry], dict[tuple[int, ...], DeviceEntry]]:
    """Devices for the tree, parents first, and each node's entry by its tree position."""
    entries: list[DeviceEntry] = []
    by_position: dict[tuple[int, ...], DeviceEntry] = {}
    seen: set[tuple[str, str]] = set()

    def visit(node: DeviceNode, parent: DeviceEntry | None) -> None:
        entry = _node_entry(node, parent)
        if entry is not None:
            by_position[node.path.node_key(node.level)] = entry
            if entry.key not in seen:
                seen.add(entry.key)
                entries.append(entry)
        for child in node.children:
            visit(child, entry or parent)

    for root in roots:
        visit(root, None)
    return entries, by_position


def standalone_entry(identity: DeviceIdentity) -> DeviceEntry:
    """A Device for an identity that no declared node carries (an OBX-18 on a metric only)."""
    identifiers = _identifiers(identity)
    system, value = identifiers[0]["system"], identifiers[0]["value"]
    url = systems.full_url(system, value)
    resource = {"resourceType": "Device", "identifier": identifiers}
    return DeviceEntry((system, value), url, resource, device_key(identity))


def device_key(identity: DeviceIdentity) -> str:
    """The stable text naming a device in our identifiers (its EUI-64, else its key)."""
    eui = identity.eui64
    return f"EUI-64:{eui}" if eui else identity.key


def _node_entry(node: DeviceNode, parent: DeviceEntry | None) -> DeviceEntry | None:
    identity = node.identity
    if identity is None:
        return None
    key = device_key(identity)
    if node.level == "MDS" or parent is None:
        identifiers = _identifiers(identity)
    else:
        # A part is known by its place in its device; one with an EUI-64 of its own
        # (a plug-in module) also carries that.
        place = ".".join(str(n) for n in node.path.node_key(node.level))
        identifiers = [{"system": systems.DEVICE, "value": f"{key}/{place}"}]
        if parent.device != key and identity.eui64:
            identifiers += _identifiers(identity)
    system, value = identifiers[0]["system"], identifiers[0]["value"]
    url = systems.full_url(system, value)
    resource: dict[str, Any] = {"resourceType": "Device", "identifier": identifiers}
    device_type = _type(node.code)
    if device_type:
        resource["type"] = device_type
    if parent is not None:
        resource["parent"] = {"reference": parent.full_url}
    return DeviceEntry((system, value), url, resource, key)


def _identifiers(identity: DeviceIdentity) -> list[dict[str, str]]:
    """A device of its own: its EUI-64 in the IEEE system, else its key in ours."""
    eui = identity.eui64
    if eui:
        octets = "-".join(eui[i : i + 2] for i in range(0, 16, 2))
        return [{"system": systems.EUI64, "value": octets}]
    return [{"system": systems.DEVICE, "value": device_key(identity)}]


def _type(code: Code) -> dict[str, Any] | None:
    """An MDC-coded type; a pending code (0) keeps only its reference id as text."""
    if code.code not in ("", "0") and code.is_mdc:
        coding: dict[str, str] = {"system": systems.MDC, "code": code.code}
        if code.refid:
            coding["display"] = code.refid
        return {"coding": [coding]}
    text = code.refid or code.text
    return {"text": text} if text else None
