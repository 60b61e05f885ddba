"""The engine file's `access:` section: how callers of the admin API prove who they are."""

from __future__ import annotations

from channels.model import Strict


class AccessConfig(Strict):
    """Authentication settings for the admin API and dashboard."""
