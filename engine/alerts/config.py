"""The engine file's `alerts:` section: rules and where alerts go."""

from __future__ import annotations

from channels.model import Strict


class AlertsConfig(Strict):
    """Alert rules and their receivers."""
