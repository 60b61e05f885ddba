"""The engine file's `alerts:` section: rules and where alerts go.

```yaml
alerts:
  check_seconds: 15          # how often rules are evaluated
  cooldown_seconds: 900      # per rule and subject: at most one "firing" per cool-down
  rules:
    - {name: inbound-errors, type: error_count, channel: inbound, threshold: 5,
       window_seconds: 300}
    - {name: error-ratio, type: error_rate, threshold: 0.2, window_seconds: 600}
    - {name: ehr-backlog, type: queue_depth, destination: ehr, threshold: 500}
    - {name: ehr-stale, type: queue_age, destination: ehr, threshold_seconds: 600}
    - {name: ehr-down, type: destination_unreachable, failures: 3, for_seconds: 60}
    - {name: monitors-quiet, type: device_silence, min_silence_seconds: 300}
  webhooks:
    - {url: "https://hooks.example/interlink", headers: {Authorization: "${env:HOOK}"}}
  email:
    - {host: smtp.example, port: 587, starttls: true, username: alerts,
       password: "${env:SMTP_PASSWORD}", from_address: interlink@example,
       to: [oncall@example]}
```
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from channels.model import Name, Strict


class RuleBase(Strict):
    """What every rule has: a name (unique) and an optional cool-down of its own."""

    name: Name
    cooldown_seconds: float | None = Field(
        None, ge=0, description="Overrides the section's cooldown_seconds for this rule.")


class ErrorCountRule(RuleBase):
    """More than `threshold` errored messages of a channel within the window."""

    type: Literal["error_count"]
    channel: str | None = Field(None, description="One channel; every channel if omitted.")
    threshold: int = Field(ge=1)
    window_seconds: float = Field(300.0, gt=0)


class ErrorRateRule(RuleBase):
    """Errored / received of a channel within the window at or above `threshold`."""

    type: Literal["error_rate"]
    channel: str | None = None
    threshold: float = Field(gt=0, le=1)
    window_seconds: float = Field(300.0, gt=0)
    min_messages: int = Field(10, ge=1, description="Fewer messages in the window: no alert.")


class QueueDepthRule(RuleBase):
    """At least `threshold` deliveries waiting in a destination's queue."""

    type: Literal["queue_depth"]
    channel: str | None = None
    destination: str | None = None
    threshold: int = Field(ge=1)


class QueueAgeRule(RuleBase):
    """The oldest message waiting for a destination has waited `threshold_seconds`."""

    type: Literal["queue_age"]
    channel: str | None = None
    destination: str | None = None
    threshold_seconds: float = Field(gt=0)


class UnreachableRule(RuleBase):
    """A destination's attempts keep failing: `failures` in a row and for `for_seconds`."""

    type: Literal["destination_unreachable"]
    channel: str | None = None
    destination: str | None = None
    failures: int = Field(3, ge=1)
    for_seconds: float = Field(0.0, ge=0)


class DeviceSilenceRule(RuleBase):
    """A device the device tracker expects readings from has gone quiet."""

    type: Literal["device_silence"]
    channel: str | None = None
    min_silence_seconds: float = Field(0.0, ge=0)


Rule = Annotated[
    ErrorCountRule | ErrorRateRule | QueueDepthRule | QueueAgeRule | UnreachableRule
    | DeviceSilenceRule, Field(discriminator="type")]


class WebhookReceiver(Strict):
    """An HTTP POST of the alert as JSON; retried a few times when it fails."""

    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Secrets as ${env:NAME} or ${file:PATH}.")
    timeout_seconds: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0)
    retry_seconds: float = Field(5.0, ge=0)


class EmailReceiver(Strict):
    """A mail through an SMTP relay, optionally with STARTTLS and authentication."""

    host: str = Field(min_length=1)
    port: int = Field(25, ge=1, le=65535)
    from_address: str = Field(min_length=3)
    to: list[str] = Field(min_length=1)
    starttls: bool = Field(False, description="Require STARTTLS before sending.")
    username: str | None = None
    password: str | None = Field(None, description="${env:NAME} or ${file:PATH}.")
    timeout_seconds: float = Field(30.0, gt=0)
    subject_prefix: str = "[interlink]"


class AlertsConfig(Strict):
    """Alert rules and their receivers (the log always receives every alert)."""

    check_seconds: float = Field(15.0, gt=0)
    cooldown_seconds: float = Field(900.0, ge=0)
    rules: list[Rule] = Field(default_factory=list)
    webhooks: list[WebhookReceiver] = Field(default_factory=list)
    email: list[EmailReceiver] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsConfig:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"two alert rules are named {rule.name}")
            seen.add(rule.name)
        return self
