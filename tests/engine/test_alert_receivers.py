"""Alert receivers against real loopback servers: a twisted.web webhook and a twisted.mail
ESMTP server, reached through the monitor the engine runs."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.message import Message
from typing import Any

from twisted.internet import defer, task
from twisted.internet import reactor as _reactor
from twisted.mail import smtp
from twisted.trial.unittest import TestCase
from twisted.web import resource, server
from zope.interface import implementer

from engine.alerts.config import AlertsConfig
from engine.alerts.monitor import AlertMonitor
from engine.alerts.receivers import build_receivers
from engine.metrics import EngineMetrics
from engine.store.queue_stats import QueueStat

reactor: Any = _reactor

PATIENT = "DOE^JANE"


class Hook(resource.Resource):
    """A webhook endpoint that fails its first `failures` calls with 503."""

    isLeaf = True

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls: list[tuple[dict[str, Any], str | None]] = []

    def render_POST(self, request: server.Request) -> bytes:
        body = json.loads(request.content.read())
        self.calls.append((body, request.getHeader("authorization")))
        if len(self.calls) <= self.failures:
            request.setResponseCode(503)
            return b"busy"
        return b"ok"


@implementer(smtp.IMessage)
class Mail:
    def __init__(self, box: list[bytes]) -> None:
        self.box = box
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred[None]:
        self.box.append(b"\n".join(self.lines))
        return defer.succeed(None)

    def connectionLost(self) -> None:
        self.lines = []


@implementer(smtp.IMessageDelivery)
class Delivery:
    """Accepts every sender and recipient; keeps each mail's bytes."""

    def __init__(self) -> None:
        self.box: list[bytes] = []
        self.recipients: list[str] = []

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: by the test relay"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        return origin

    def validateTo(self, user: Any) -> Any:
        self.recipients.append(str(user.dest))
        return lambda: Mail(self.box)


class ClosingESMTP(smtp.ESMTP):
    """Tells its factory when the client has gone (so the test ends with no socket open)."""

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.factory.closed.callback(None)


class Relay(smtp.SMTPFactory):
    """An ESMTP server (no TLS, no auth) handing mail to a Delivery."""

    protocol = ClosingESMTP

    def __init__(self, delivery: Delivery) -> None:
        super().__init__()
        self.delivery = delivery
        self.closed: defer.Deferred[None] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> Any:
        p = super().buildProtocol(addr)
        p.delivery = self.delivery
        return p


class ReceiverTests(TestCase):
    """A queue alert goes from the monitor to each receiver over loopback."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.metrics = EngineMetrics(self.clock)
        self.metrics.queues = {("inbound", "ehr"): QueueStat(42, None)}

    def listen(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def monitor(self, receivers_config: dict[str, Any]) -> AlertMonitor:
        config = AlertsConfig.model_validate({
            "rules": [{"name": "ehr-backlog", "type": "queue_depth", "destination": "ehr",
                       "threshold": 10}], **receivers_config})
        receivers = build_receivers(config, reactor, environ={"HOOK_TOKEN": "s3cret"})
        return AlertMonitor(config, self.metrics, receivers, clock=self.clock, node="n1")

    @defer.inlineCallbacks
    def test_webhook_gets_the_json_and_is_retried(self) -> Any:
        """The first POST gets 503, the retry gets through; the token came from the env."""
        hook = Hook(failures=1)
        port = self.listen(server.Site(hook))
        m = self.monitor({"webhooks": [{
            "url": f"http://127.0.0.1:{port}/alerts", "retries": 2, "retry_seconds": 0,
            "headers": {"Authorization": "Bearer ${env:HOOK_TOKEN}"}}]})
        m.check()
        yield m.sending()
        self.assertEqual(len(hook.calls), 2)
        body, auth = hook.calls[-1]
        self.assertEqual(auth, "Bearer s3cret")
        self.assertEqual((body["rule"], body["state"], body["subject"], body["value"]),
                         ("ehr-backlog", "firing", {"channel": "inbound",
                                                    "destination": "ehr"}, 42))
        self.metrics.queues = {}
        m.check()
        yield m.sending()
        self.assertEqual(hook.calls[-1][0]["state"], "resolved")

    @defer.inlineCallbacks
    def test_webhook_gives_up_after_its_retries(self) -> Any:
        """An endpoint that always fails is tried retries + 1 times, then left alone."""
        hook = Hook(failures=100)
        port = self.listen(server.Site(hook))
        m = self.monitor({"webhooks": [{"url": f"http://127.0.0.1:{port}/", "retries": 2,
                                        "retry_seconds": 0}]})
        m.check()
        yield m.sending()
        self.assertEqual(len(hook.calls), 3)

    @defer.inlineCallbacks
    def test_email_reaches_an_smtp_server(self) -> Any:
        """The relay gets one mail per notice: subject names rule and subject, body the JSON."""
        delivery = Delivery()
        relay = Relay(delivery)
        port = self.listen(relay)
        m = self.monitor({"email": [{"host": "127.0.0.1", "port": port,
                                     "from_address": "interlink@example.org",
                                     "to": ["oncall@example.org"]}]})
        m.check()
        yield m.sending()
        yield relay.closed
        yield task.deferLater(reactor, 0, lambda: None)  # the client's side closes too
        self.assertEqual(delivery.recipients, ["oncall@example.org"])
        self.assertEqual(len(delivery.box), 1)
        mail: Message = message_from_bytes(delivery.box[0])
        self.assertEqual(mail["Subject"],
                         "[interlink] FIRING ehr-backlog: channel inbound destination ehr")
        text = mail.get_payload(decode=True).decode()
        self.assertIn("inbound/ehr: 42 deliveries queued (threshold 10)", text)
        self.assertEqual(json.loads(text[text.index("{"):])["state"], "firing")
        self.assertNotIn(PATIENT, text)
