"""The engine file's `access:` section: how callers of the admin API prove who they are."""

from __future__ import annotations

from pydantic import Field

from channels.model import Strict


class AccessConfig(Strict):
    """Authentication settings for the admin API and dashboard."""

    session_lifetime_seconds: float = Field(
        12 * 3600.0, gt=0, description="A session ends this long after login, used or not.")
    idle_timeout_seconds: float = Field(
        30 * 60.0, gt=0, description="A session ends after this long without a request.")
    max_failed_logins: int = Field(
        5, ge=1, description="Failed logins in a row for one user before it is locked out.")
    max_failed_logins_per_peer: int = Field(
        20, ge=1, description="Failed logins in a row from one address before it is locked out.")
    lockout_seconds: float = Field(
        60.0, ge=0, description="First lockout; it doubles with each further failure.")
    max_lockout_seconds: float = Field(3600.0, ge=0, description="Longest lockout.")
    secure_cookie: bool | None = Field(
        None, description="Mark the session cookie Secure; by default, when admin TLS is on.")
    metrics_require_token: bool = Field(
        False, description="Serve /metrics only to callers with an API token (any role), "
        "as Prometheus sends one with `authorization: {credentials: …}`.")
