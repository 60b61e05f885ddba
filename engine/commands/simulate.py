"""`interlink simulate`: a unit of simulated bedside devices streaming IHE PCD over MLLP.

Monitors and infusion pumps (``profiles.pcd.simulated``) each report every ``--interval``
seconds, their first reports spread over one interval so the load is smooth, for
``--duration`` seconds; then the command waits for the last answers, prints what the
receiver said and exits 1 if any message was refused or went unanswered (2 for bad
arguments). Each device has its own connection, or all share one. Time comes from the
reactor, so the schedule runs the same on ``task.Clock``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from profiles.pcd.simulated import MessageKind, SimulatedUnit

_SEGMENT_END = re.compile(rb"\r\n|\n|\r")
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Connections(Enum):
    """How the simulated devices reach the receiver."""

    PER_DEVICE = "per-device"
    SHARED = "shared"


class Outcome(Enum):
    """What became of one message; the value is its line in the summary."""

    ACCEPTED = "accepted (AA/CA)"
    REFUSED = "refused (AE/AR/CE/CR)"
    UNEXPECTED = "unreadable or mismatched answers"
    NO_ANSWER = "no answer"
    CONNECTION_ERROR = "connection errors"


REFUSALS = frozenset({"AE", "AR", "CE", "CR"})
ACCEPTANCES = frozenset({"AA", "CA"})


class Link(Protocol):
    """Where the devices' messages go: MLLP senders, or a fake in tests."""

    def start(self) -> None: ...

    def send(self, device: int, payload: bytes) -> Deferred[bytes]: ...

    def stop(self) -> Deferred[Any]: ...


def answer_code(answer: bytes) -> tuple[str, str]:
    """MSA-1 and MSA-2 of an answer, read without trusting its shape ('' when absent)."""
    sep = answer[3:4] if answer.startswith(b"MSH") and len(answer) > 3 else b"|"
    for line in _SEGMENT_END.split(answer):
        fields = line.split(sep)
        if fields[0] == b"MSA":
            code = fields[1].decode("ascii", "replace") if len(fields) > 1 else ""
            named = fields[2].decode("ascii", "replace") if len(fields) > 2 else ""
            return code, named
    return "", ""


def judge(answer: bytes, control_id: str) -> Outcome:
    """An answer's outcome: positive only when it acknowledges this very message."""
    code, named = answer_code(answer)
    if code in REFUSALS:
        return Outcome.REFUSED
    if code in ACCEPTANCES and named == control_id:
        return Outcome.ACCEPTED
    return Outcome.UNEXPECTED


def judge_failure(failure: Failure, stopping: bool) -> Outcome:
    """A send that failed: never connected, or sent and not answered."""
    from mllp.sender import NotConnected

    if failure.check(NotConnected) and not stopping:
        return Outcome.CONNECTION_ERROR
    return Outcome.NO_ANSWER


@dataclass
class Tally:
    """What was sent and what the receiver said."""

    sent: Counter[MessageKind] = field(default_factory=Counter)
    outcomes: Counter[Outcome] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        """Messages handed to the link."""
        return sum(self.sent.values())

    @property
    def ok(self) -> bool:
        """Every message sent was positively acknowledged."""
        return self.outcomes[Outcome.ACCEPTED] == self.total

    def lines(self) -> list[str]:
        """The summary, one figure per line."""
        kinds = ", ".join(f"{kind.value} {self.sent[kind]}" for kind in MessageKind)
        rows = [("sent", f"{self.total} ({kinds})")]
        rows += [(outcome.value, str(self.outcomes[outcome])) for outcome in Outcome]
        return [f"{label:<34}{figure}" for label, figure in rows]


class Simulation:
    """Drives a simulated unit on a clock: reports, sends, counts the answers.

    Device i reports at ``unit.start + interval * (i / n + k)`` for k = 0, 1, … while that
    time is before ``unit.start + duration``. After the last report the answers still
    owed get ``grace`` seconds; then the link is stopped and whatever is left counts as
    unanswered.
    """

    def __init__(
        self,
        clock: Any,
        unit: SimulatedUnit,
        link: Link,
        interval: float,
        duration: float,
        grace: float,
    ) -> None:
        self._clock = clock
        self._unit = unit
        self._link = link
        self._interval = interval
        self._end = unit.start + duration
        self._grace = grace
        self._calls: dict[int, IDelayedCall] = {}
        self._pending: set[Deferred[None]] = set()
        self._stopping = False
        self.tally = Tally()
        self.done: Deferred[Tally] = Deferred()

    def start(self) -> Deferred[Tally]:
        """Start the link and every device's schedule; fires with the tally at the end."""
        self._link.start()
        count = len(self._unit.devices)
        for device in range(count):
            self._schedule(device, self._unit.start + self._interval * device / count)
        self._clock.callLater(max(0.0, self._end - self._clock.seconds()), self._finish)
        return self.done

    def _schedule(self, device: int, at: float) -> None:
        if at >= self._end:
            self._calls.pop(device, None)
            return
        delay = max(0.0, at - self._clock.seconds())
        self._calls[device] = self._clock.callLater(delay, self._report, device, at)

    def _report(self, device: int, at: float) -> None:
        for message in self._unit.report(device, at):
            self.tally.sent[message.kind] += 1
            sending = self._link.send(device, message.raw)
            counted = sending.addCallbacks(
                self._answered, self._failed, callbackArgs=(message.control_id,)
            )
            self._pending.add(counted)
            counted.addBoth(self._settled, counted)
        self._schedule(device, at + self._interval)

    def _answered(self, answer: bytes, control_id: str) -> None:
        self.tally.outcomes[judge(answer, control_id)] += 1

    def _failed(self, failure: Failure) -> None:
        self.tally.outcomes[judge_failure(failure, self._stopping)] += 1

    def _settled(self, result: object, counted: Deferred[None]) -> None:
        self._pending.discard(counted)

    def _finish(self) -> None:
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()
        owed = defer.DeferredList(list(self._pending), consumeErrors=True)
        give_up = self._clock.callLater(self._grace, self._stop_link)

        def answered(_: object) -> None:
            if give_up.active():
                give_up.cancel()
            self._stop_link()

        owed.addCallback(answered)

    def _stop_link(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for pending in list(self._pending):
            pending.cancel()

        def stopped(_: object) -> None:
            self.done.callback(self.tally)

        self._link.stop().addBoth(stopped)


class MLLPLink:
    """One persistent MLLP sender per device, or one for all of them."""

    def __init__(
        self, make_sender: Callable[[], Any], devices: int, connections: Connections
    ) -> None:
        count = devices if connections is Connections.PER_DEVICE else 1
        self._senders = [make_sender() for _ in range(count)]

    def start(self) -> None:
        for sender in self._senders:
            sender.start()

    def send(self, device: int, payload: bytes) -> Deferred[bytes]:
        sender = self._senders[device % len(self._senders)]
        sent: Deferred[bytes] = sender.send(payload)
        return sent

    def stop(self) -> Deferred[Any]:
        return defer.DeferredList([sender.stop() for sender in self._senders], consumeErrors=True)


def run_id_for(seconds: float, seed: int) -> str:
    """Six base-36 characters from the start time and seed, so that another run, even one
    started in the same second, gets other MSH-10s (the engine would take repeats as
    duplicates and not route them)."""
    digest = hashlib.sha256(f"{seed}:{seconds:.6f}".encode()).digest()
    number, out = int.from_bytes(digest[:8], "big"), ""
    for _ in range(6):
        number, digit = divmod(number, 36)
        out += _BASE36[digit]
    return out


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative, not {text}")
    return value


def register(sub: Any) -> None:
    """Add the `simulate` subcommand."""
    parser = sub.add_parser(
        "simulate",
        help="stream IHE PCD-01/PCD-04 from simulated monitors and pumps",
        description="Stream IHE PCD-01 (and PCD-04 alarms) from simulated monitors and "
        "infusion pumps over MLLP; stops by itself after --duration.",
    )
    parser.add_argument(
        "--to", required=True, metavar="HOST:PORT", help="the MLLP listener to send to"
    )
    parser.add_argument(
        "--monitors",
        type=_count,
        default=1,
        help="multi-parameter monitors, one per bed (default 1)",
    )
    parser.add_argument(
        "--pumps",
        type=_count,
        default=0,
        help="infusion pumps, spread over the monitors' beds (default 0)",
    )
    parser.add_argument(
        "--interval",
        type=_positive,
        default=5.0,
        help="seconds between one device's reports (default 5)",
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        default=60.0,
        help="seconds to run before stopping by itself (default 60)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="the same seed gives the same devices, patients and values",
    )
    parser.add_argument(
        "--alarms",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send PCD-04 alarms: low SpO2, pump occlusion (default on)",
    )
    parser.add_argument(
        "--connections",
        type=Connections,
        choices=list(Connections),
        default=Connections.PER_DEVICE,
        metavar="{per-device,shared}",
        help="a connection per device (default) or one for all",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        help="seconds to wait to connect and for each answer (default 10)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the simulation in the reactor and print the summary."""
    host, _, port = args.to.rpartition(":")
    if not host or not port.isdigit():
        print(f"interlink simulate: --to must be HOST:PORT, not {args.to!r}", file=sys.stderr)
        return 2
    if args.monitors + args.pumps == 0:
        print("interlink simulate: nothing to simulate (--monitors 0 --pumps 0)", file=sys.stderr)
        return 2

    from twisted.internet import task

    from mllp.sender import MLLPSender

    result: dict[str, int] = {"code": 0}

    def run(reactor: Any) -> Deferred[None]:
        start = reactor.seconds()
        unit = SimulatedUnit(
            args.seed,
            args.monitors,
            args.pumps,
            start,
            run_id=run_id_for(start, args.seed),
            alarms=args.alarms,
        )

        def make_sender() -> MLLPSender:
            return MLLPSender(
                reactor,
                (host.strip("[]"), int(port)),
                ack_timeout=args.timeout,
                connect_timeout=args.timeout,
            )

        link = MLLPLink(make_sender, len(unit.devices), args.connections)
        simulation = Simulation(
            reactor, unit, link, args.interval, args.duration, grace=args.timeout
        )
        print(
            f"interlink simulate: {args.monitors} monitor(s), {args.pumps} pump(s), a report "
            f"every {args.interval:g} s each for {args.duration:g} s to {args.to} "
            f"(seed {args.seed}, MSH-10 prefix {unit.run_id}, {args.connections.value} "
            "connections)",
            file=sys.stderr,
        )

        def report(tally: Tally) -> None:
            print("\n".join(tally.lines()))
            result["code"] = 0 if tally.ok else 1

        def interrupted() -> None:
            """Ctrl-C or SIGTERM before the end: say what happened so far, and fail."""
            if not simulation.done.called:
                print("interlink simulate: interrupted before the end", file=sys.stderr)
                tally = simulation.tally
                tally.outcomes[Outcome.NO_ANSWER] += tally.total - sum(tally.outcomes.values())
                report(tally)
                result["code"] = 1

        reactor.addSystemEventTrigger("before", "shutdown", interrupted)
        return simulation.start().addCallback(report)

    with contextlib.suppress(SystemExit):  # react() always exits; the code is ours
        task.react(run)
    return result["code"]
