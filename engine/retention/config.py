"""The engine file's `retention:` section: when and how the pruning job runs."""

from __future__ import annotations

from channels.model import Strict


class RetentionConfig(Strict):
    """Schedule and pace of content pruning."""
