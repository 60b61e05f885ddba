"""Destination configs by ``type``, and the one step that builds a connector from one.

A channel file lists destinations as mappings with a ``type`` key; pydantic picks the
model from it, so an unknown type or a key of another type's model is a config error
located like any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from channels.destinations.base import Destination
from channels.destinations.fhir import FHIRDestination, FHIRDestinationConfig
from channels.destinations.file import FileDestination, FileDestinationConfig
from channels.destinations.http import HTTPDestination, HTTPDestinationConfig
from channels.destinations.mllp import MLLPDestination, MLLPDestinationConfig


class ChannelLinkConfig(BaseModel):
    """Hand the message to another channel of this engine (the engine delivers it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["channel"]
    channel: str = Field(min_length=1, max_length=128)


DestinationConfig = Annotated[
    MLLPDestinationConfig
    | FileDestinationConfig
    | HTTPDestinationConfig
    | FHIRDestinationConfig
    | ChannelLinkConfig,
    Field(discriminator="type"),
]

DESTINATION_CONFIG: TypeAdapter[Any] = TypeAdapter(DestinationConfig)
"""Validates one destination mapping on its own (tests, ``interlink check``)."""


class NotAConnector(ValueError):
    """The config describes something the engine delivers itself (a channel link)."""


def _mllp(name: str, config: Any, reactor: Any) -> Destination:
    return MLLPDestination(name, config, reactor)


def _file(name: str, config: Any, reactor: Any) -> Destination:
    return FileDestination(name, config, reactor)


def _http(name: str, config: Any, reactor: Any) -> Destination:
    return HTTPDestination(name, config, reactor)


def _fhir(name: str, config: Any, reactor: Any) -> Destination:
    return FHIRDestination(name, config, reactor)


BUILDERS: dict[type[BaseModel], Callable[[str, Any, Any], Destination]] = {
    MLLPDestinationConfig: _mllp,
    FileDestinationConfig: _file,
    HTTPDestinationConfig: _http,
    FHIRDestinationConfig: _fhir,
}


def build_destination(name: str, config: BaseModel, reactor: Any) -> Destination:
    """A connector for one configured destination; not started yet.

    Raises NotAConnector for a channel link, and ValueError/OSError when a TLS file
    cannot be read (so a bad certificate stops a deploy instead of every send).
    """
    if isinstance(config, ChannelLinkConfig):
        raise NotAConnector(f"destination {name}: channel links are delivered by the engine")
    builder = BUILDERS.get(type(config))
    if builder is None:
        raise TypeError(f"destination {name}: no connector for {type(config).__name__}")
    return builder(name, config, reactor)
