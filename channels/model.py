"""The channel file: one YAML file per channel under `conf/channels/`.

A channel has a source, an optional preprocessor, a filter, a transformer, one or more
destinations (each with its own filter, transformer, output format, lanes and retry
policy) and a response policy; it may carry `tests:` that `interlink test` runs. Every
model forbids unknown keys, so a typo is an error with a file, line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from channels.destinations.fhir import FHIRDestinationConfig
from channels.destinations.registry import DestinationConfig
from channels.pcd import PcdConfig
from channels.preprocess import PreprocessStep
from channels.rules import Condition, FieldPath
from channels.sources.file import FileSourceConfig
from channels.sources.http import HTTPSourceConfig
from channels.tls import ListenerTLS
from channels.transforms import OutputFormat, TransformStep

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MLLPListenerConfig(Strict):
    """An MLLP listener: the engine's own (engine file) or a channel's (`source:`)."""

    port: int = Field(ge=0, le=65535)
    interface: str = "127.0.0.1"
    endpoint: str | None = Field(
        None, description="A full Twisted endpoint string; overrides port and interface.")
    max_frame_bytes: int = Field(16 * 1024 * 1024, gt=0)
    idle_timeout_seconds: float | None = Field(300.0, gt=0)
    max_connections: int = Field(1000, gt=0)
    tls: ListenerTLS | None = None

    def endpoint_description(self) -> str:
        """The Twisted server endpoint string this listener binds."""
        return self.endpoint or f"tcp:{self.port}:interface={self.interface}:backlog=1024"


class MLLPSourceConfig(MLLPListenerConfig):
    """An MLLP listener of the channel's own."""

    type: Literal["mllp"]


SourceConfig = Annotated[
    MLLPSourceConfig | FileSourceConfig | HTTPSourceConfig, Field(discriminator="type")]


class RetryConfig(Strict):
    """Exponential backoff with jitter; then ERROR (dead letter) with the last error kept."""

    initial_seconds: float = Field(1.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    max_seconds: float = Field(300.0, gt=0)
    jitter: float = Field(0.2, ge=0, le=1)
    max_attempts: int | None = Field(10, ge=1)
    max_age_seconds: float | None = Field(None, gt=0)


class DestinationSpec(Strict):
    """Where a channel delivers, and how: connector, filter, transformer, order, retries."""

    name: Name
    to: DestinationConfig
    enabled: bool = True
    filter: Condition | None = None
    transformer: list[TransformStep] = Field(default_factory=list)
    output: OutputFormat = "hl7"
    lanes: FieldPath | None = Field(
        None, description="A field path whose value splits the queue into ordered lanes.")
    retry: RetryConfig = RetryConfig()
    on_exhausted: Literal["hold", "skip"] = "hold"


class ResponseConfig(Strict):
    """When the sender gets its ACK: after the commit, or after every destination."""

    mode: Literal["after_commit", "after_delivery"] = "after_commit"
    timeout_seconds: float = Field(30.0, gt=0)


class DestinationExpectation(Strict):
    """What one destination should receive for a test message."""

    expect: Literal["delivered", "filtered"] = "delivered"
    fields: dict[FieldPath, str] = Field(default_factory=dict)
    contains: list[str] = Field(default_factory=list)
    output: str | None = Field(None, description="The whole expected output.")


class RetentionPolicy(Strict):
    """How long this channel's message contents are kept; metadata and audit stay."""

    content_days: float | None = Field(
        None, gt=0, description="Prune raw, transformed, sent and response contents older "
        "than this; unset keeps them (or follows the engine's retention default).")


class ChannelTest(Strict):
    """An input message and what the channel should make of it."""

    name: str = Field(min_length=1)
    message: str | None = None
    file: Path | None = None
    expect: Literal["queued", "filtered", "error"] = "queued"
    destinations: dict[str, DestinationExpectation] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_input(self) -> ChannelTest:
        if (self.message is None) == (self.file is None):
            raise ValueError("give exactly one of 'message' or 'file'")
        return self


class ChannelConfig(Strict):
    """One channel file."""

    name: Name
    description: str = ""
    enabled: bool = True
    source: SourceConfig | None = Field(
        None, description="Omitted: fed by the engine's own listener or by other channels.")
    preprocessor: list[PreprocessStep] = Field(default_factory=list)
    filter: Condition | None = None
    transformer: list[TransformStep] = Field(default_factory=list)
    tables: dict[str, dict[str, str]] = Field(default_factory=dict)
    destinations: list[DestinationSpec] = Field(default_factory=list)
    response: ResponseConfig = ResponseConfig()
    retention: RetentionPolicy = RetentionPolicy()
    pcd: PcdConfig | None = Field(
        None, description="Device data rules: plausibility, conformance, de-duplication, "
        "device silence (see channels.pcd).")
    tests: list[ChannelTest] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_destinations(self) -> ChannelConfig:
        seen: set[str] = set()
        for spec in self.destinations:
            if spec.name in seen:
                raise ValueError(f"destination name {spec.name!r} is used twice")
            seen.add(spec.name)
        return self

    @model_validator(mode="after")
    def _fhir_zone_from_pcd(self) -> ChannelConfig:
        """A FHIR destination without its own `timezone` reads device times written
        without an offset in the channel's `pcd.default_timezone`, as the channel's
        device rules do, so both agree on when an observation was made."""
        zone = self.pcd.default_timezone if self.pcd is not None else None
        if zone is None:
            return self
        return self.model_copy(update={"destinations": [
            spec.model_copy(update={"to": spec.to.model_copy(update={"timezone": zone})})
            if isinstance(spec.to, FHIRDestinationConfig) and spec.to.timezone is None
            else spec for spec in self.destinations]})


def channel_schema() -> dict[str, Any]:
    """The JSON Schema of a channel file, for editors to complete and check."""
    schema = ChannelConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Interlink channel"
    return schema
