"""Where alerts go: the log (always), webhooks (JSON over HTTP POST), email (SMTP).

Secrets in receivers (`Authorization` headers, SMTP passwords) are written as
`${env:NAME}` or `${file:PATH}` and resolved when the engine starts; a reference that
cannot be resolved stops the start with its name, never a value. Failures are logged by
kind and host only: an endpoint's answer is not repeated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import treq
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.mail.smtp import sendmail

from channels.secrets import resolve_secrets
from engine.alerts.alert import Alert, AlertState
from engine.alerts.config import AlertsConfig, EmailReceiver, WebhookReceiver

log = Logger()


class Receiver(Protocol):
    """Takes one alert; a Deferred result fires when it is delivered (or given up)."""

    name: str

    def send(self, alert: Alert) -> defer.Deferred[None] | None: ...


class AlertConfigError(Exception):
    """A receiver's secret reference cannot be resolved."""


class LogReceiver:
    """Every alert goes to the engine's log, with its rule and subject as fields."""

    name = "log"

    def send(self, alert: Alert) -> None:
        fields = dict(alert.subject)
        if alert.state is AlertState.FIRING:
            log.warn("alert {rule} firing: {summary}", rule=alert.rule,
                     summary=alert.summary, alert_state=alert.state.value, **fields)
        else:
            log.info("alert {rule} resolved: {summary}", rule=alert.rule,
                     summary=alert.summary, alert_state=alert.state.value, **fields)


class WebhookSender:
    """POSTs each alert as JSON; retries `retries` times, `retry_seconds` apart and more."""

    def __init__(self, config: WebhookReceiver, headers: Mapping[str, str], reactor: Any
                 ) -> None:
        self._config = config
        self._headers = dict(headers)
        self._reactor = reactor
        self.host = urlsplit(config.url).hostname or "?"
        self.name = f"webhook {self.host}"

    def send(self, alert: Alert) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._send(alert))

    async def _send(self, alert: Alert) -> None:
        cfg = self._config
        attempts = cfg.retries + 1
        reason = ""
        for attempt in range(1, attempts + 1):
            try:
                response = await treq.post(
                    cfg.url, json=alert.as_json(), headers=self._headers,
                    timeout=cfg.timeout_seconds, reactor=self._reactor, persistent=False)
                await treq.content(response)
                if 200 <= response.code < 300:
                    return
                reason = f"HTTP {response.code}"
            except defer.CancelledError:
                raise
            except Exception as error:
                reason = type(error).__name__
            if attempt < attempts:
                await task.deferLater(self._reactor, cfg.retry_seconds * attempt)
        log.error("alert {rule}: webhook to {host} failed after {n} attempts ({reason})",
                  rule=alert.rule, host=self.host, n=attempts, reason=reason)


class EmailSender:
    """Mails each alert through an SMTP relay (`twisted.mail.smtp.sendmail`)."""

    def __init__(self, config: EmailReceiver, password: str | None, username: str | None,
                 reactor: Any) -> None:
        self._config = config
        self._password = password
        self._username = username
        self._reactor = reactor
        self.name = f"email {config.host}"

    def message(self, alert: Alert) -> bytes:
        """The mail: subject line, a readable body and the alert as JSON."""
        cfg = self._config
        mail = EmailMessage()
        mail["Subject"] = f"{cfg.subject_prefix} {alert.title}".strip()
        mail["From"] = cfg.from_address
        mail["To"] = ", ".join(cfg.to)
        mail["Date"] = formatdate(alert.at, usegmt=True)
        mail["Message-ID"] = make_msgid(domain=cfg.from_address.rpartition("@")[2] or None)
        mail.set_content(f"{alert.summary}\n\n{json.dumps(alert.as_json(), indent=1)}\n")
        return mail.as_bytes()

    def send(self, alert: Alert) -> defer.Deferred[None]:
        cfg = self._config
        d = sendmail(cfg.host, cfg.from_address, list(cfg.to), self.message(alert),
                     port=cfg.port, reactor=self._reactor, username=self._username,
                     password=self._password, requireAuthentication=self._username is not None,
                     requireTransportSecurity=cfg.starttls)
        d.addTimeout(cfg.timeout_seconds, self._reactor)

        def failed(failure: Any) -> None:
            if failure.check(defer.CancelledError) and not d.called:
                return
            log.error("alert {rule}: mail through {host} failed ({reason})",
                      rule=alert.rule, host=cfg.host, reason=failure.type.__name__)

        return d.addCallbacks(lambda _: None, failed)


def build_receivers(config: AlertsConfig, reactor: Any, *, base_dir: Path | None = None,
                    environ: Mapping[str, str] | None = None) -> list[Receiver]:
    """The log plus every configured webhook and mail relay, secrets resolved."""
    environ = os.environ if environ is None else environ
    base = base_dir or Path.cwd()
    problems: list[str] = []

    def resolve(value: Any, where: str) -> Any:
        resolved, issues = resolve_secrets(value, base_dir=base, environ=environ)
        problems.extend(f"alerts.{where}: {issue.message}" for issue in issues)
        return resolved

    receivers: list[Receiver] = [LogReceiver()]
    for i, hook in enumerate(config.webhooks):
        headers = resolve(dict(hook.headers), f"webhooks[{i}].headers")
        receivers.append(WebhookSender(hook, headers, reactor))
    for i, mail in enumerate(config.email):
        username = resolve(mail.username, f"email[{i}].username")
        password = resolve(mail.password, f"email[{i}].password")
        receivers.append(EmailSender(mail, password, username, reactor))
    if problems:
        raise AlertConfigError("; ".join(problems))
    return receivers


def receiver_names(receivers: Sequence[Receiver]) -> list[str]:
    """For the start-up log line: where alerts will go."""
    return [r.name for r in receivers]
