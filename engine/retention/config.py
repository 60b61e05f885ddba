"""The engine file's `retention:` section: when and how the pruning job runs."""

from __future__ import annotations

from pydantic import Field

from channels.model import Strict


class RetentionConfig(Strict):
    """Schedule and pace of content pruning; how long contents live is set per channel."""

    content_days: float | None = Field(
        None, gt=0, description="Prune contents older than this for channels that set no "
        "retention.content_days of their own; unset keeps them.")
    enabled: bool = Field(True, description="Run the pruning job on a schedule.")
    interval_minutes: float = Field(60.0, gt=0, description="How often the job runs.")
    batch_size: int = Field(
        500, ge=1, le=10_000, description="Messages whose contents one transaction deletes; "
        "small, so message ingest is never held up for long.")
