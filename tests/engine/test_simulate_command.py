"""`interlink simulate`'s schedule on `task.Clock`: when each device reports, when the run
stops, and how answers (or their absence) are counted. The link is a fake that records
what it was given and answers as each test says; the unit and the schedule are real.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable

import pytest
from twisted.internet import defer, task
from twisted.internet.defer import Deferred

from engine.commands.simulate import (
    Connections,
    Outcome,
    Simulation,
    Tally,
    answer_code,
    judge,
    register,
    run_id_for,
)
from profiles.pcd.simulated import SimulatedUnit, hl7_time

START = 1_795_000_000.0


def ack(control_id: str, code: str = "CA") -> bytes:
    return (
        "MSH|^~\\&|INTERLINK|HOSP|SIM_MONITOR|INTERLINK_SIM|20261118000000+0000||ACK^R01^ACK|"
        f"A1|P|2.6\rMSA|{code}|{control_id}\r"
    ).encode()


def control_id_of(payload: bytes) -> str:
    return payload.split(b"\r", 1)[0].split(b"|")[9].decode()


def msh7_of(payload: bytes) -> str:
    return payload.split(b"\r", 1)[0].split(b"|")[6].decode()


class FakeLink:
    """Records every send with the clock's time; ``answer`` decides each reply."""

    def __init__(self, clock: task.Clock, answer: Callable[[str], bytes | None]) -> None:
        self.clock = clock
        self.answer = answer
        self.sends: list[tuple[float, int, bytes]] = []
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def send(self, device: int, payload: bytes) -> Deferred[bytes]:
        self.sends.append((self.clock.seconds(), device, payload))
        reply = self.answer(control_id_of(payload))
        return defer.succeed(reply) if reply is not None else Deferred()

    def stop(self) -> Deferred[None]:
        self.stopped = True
        return defer.succeed(None)


def simulate(
    answer: Callable[[str], bytes | None],
    *,
    monitors: int = 3,
    pumps: int = 1,
    interval: float = 2.0,
    duration: float = 10.0,
    grace: float = 5.0,
) -> tuple[task.Clock, FakeLink, list[tuple[float, Tally]]]:
    """Run a simulation on a fresh clock until no timer is left."""
    clock = task.Clock()
    clock.advance(START)
    unit = SimulatedUnit(5, monitors, pumps, clock.seconds(), run_id="T1", alarms=False)
    link = FakeLink(clock, answer)
    finished: list[tuple[float, Tally]] = []
    Simulation(clock, unit, link, interval, duration, grace).start().addCallback(
        lambda tally: finished.append((clock.seconds(), tally))
    )
    while calls := clock.getDelayedCalls():  # to each timer exactly when it is due
        clock.advance(min(call.getTime() for call in calls) - clock.seconds())
    return clock, link, finished


def test_each_device_reports_every_interval_staggered_and_the_run_stops_at_the_end() -> None:
    """Device i of n reports at start + interval * (i/n + k) while before start + duration;
    the run ends at start + duration when every answer is in, with nothing left pending."""
    clock, link, finished = simulate(lambda cid: ack(cid))
    times: dict[int, list[float]] = defaultdict(list)
    for at, device, payload in link.sends:
        times[device].append(at)
        assert msh7_of(payload) == hl7_time(at)
    assert sorted(times) == [0, 1, 2, 3]
    for device, seen in times.items():
        expected = [START + 2.0 * (device / 4 + k) for k in range(5)]
        assert seen == pytest.approx(expected, abs=1e-6)
    assert link.started and link.stopped
    assert len(finished) == 1
    ended_at, tally = finished[0]
    assert ended_at == pytest.approx(START + 10.0, abs=1e-6)
    assert tally.total == 20 and tally.outcomes[Outcome.ACCEPTED] == 20 and tally.ok
    assert clock.getDelayedCalls() == []
    control_ids = [control_id_of(p) for _, _, p in link.sends]
    assert len(set(control_ids)) == 20 and all(c.startswith("T1-") for c in control_ids)


def test_unanswered_messages_count_once_the_grace_period_is_over() -> None:
    """A receiver that never answers: the run ends `grace` seconds after the duration and
    every message counts as unanswered."""
    _, link, finished = simulate(lambda cid: None, monitors=1, pumps=1, grace=3.0)
    ended_at, tally = finished[0]
    assert ended_at == pytest.approx(START + 13.0, abs=1e-6)
    assert tally.total == len(link.sends) == 10
    assert tally.outcomes[Outcome.NO_ANSWER] == 10 and not tally.ok


def test_refusals_and_answers_for_another_message_are_not_success() -> None:
    """AE/AR/CE/CR count as refused; a CA naming another control id as unexpected."""

    def answer(cid: str) -> bytes:
        device = cid.split("-")[1]
        if device == "M0001":
            return ack(cid, "AE")
        if device == "P0001":
            return ack("SOMEONE-ELSE", "CA")
        return ack(cid, "AA")

    _, _, finished = simulate(answer, monitors=2, pumps=1)
    tally = finished[0][1]
    assert tally.outcomes[Outcome.REFUSED] == 5
    assert tally.outcomes[Outcome.UNEXPECTED] == 5
    assert tally.outcomes[Outcome.ACCEPTED] == 5
    assert not tally.ok
    summary = "\n".join(tally.lines())
    assert "sent                              15 (PCD-01 15, PCD-04 0)" in summary


def test_answer_reading_tolerates_odd_answers() -> None:
    """MSA is found whatever the segment ends; no MSA at all reads as no code."""
    assert answer_code(b"MSH|^~\\&|A\nMSA|CR|X1\n") == ("CR", "X1")
    assert answer_code(b"garbage") == ("", "")
    assert judge(b"MSH|^~\\&|A\rMSA|CA\r", "X1") is Outcome.UNEXPECTED
    assert judge(ack("X1", "AR"), "X1") is Outcome.REFUSED


def test_run_ids_differ_by_start_and_seed_and_fit_msh10() -> None:
    """Runs a millisecond apart, or with another seed, get other six-character prefixes."""
    ids = {run_id_for(START + n / 1000, 1) for n in range(100)}
    ids |= {run_id_for(START, seed) for seed in range(2, 102)}
    assert len(ids) == 200 and all(len(i) == 6 and i.isalnum() and i.isupper() for i in ids)
    assert run_id_for(START, 1) == run_id_for(START, 1)


def test_the_command_line_options() -> None:
    """Options parse into their types; connections is one policy value."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "simulate",
            "--to",
            "127.0.0.1:2575",
            "--monitors",
            "4",
            "--pumps",
            "2",
            "--interval",
            "0.5",
            "--duration",
            "30",
            "--no-alarms",
            "--connections",
            "shared",
        ]
    )
    assert (args.monitors, args.pumps, args.interval, args.duration) == (4, 2, 0.5, 30.0)
    assert args.alarms is False and args.connections is Connections.SHARED
