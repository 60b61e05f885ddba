"""Message search and detail on a real SQLite file and a real PostgreSQL: every filter,
keyset pages newest first, text inside raw and outgoing content (non-ASCII included),
and a text search that stays within its scan bound."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.store.deliveries import DeliveryOutcome, NewDelivery, Routing
from engine.store.search import MessageFilter, for_reprocess, iter_matches, message_detail, search
from engine.store.status import Status
from engine.store.store import IncomingMessage, Store, now_us, open_store


def hl7(control_id: str, *, app: str = "MON", kind: str = "ORU^R01", patient: str = "MRN1",
        name: str = "DOE^JOHN") -> bytes:
    return (f"MSH|^~\\&|{app}|ICU|||20261125||{kind}|{control_id}|P|2.6\r"
            f"PID|||{patient}||{name}\r").encode()


def arriving(control_id: str, received_at: int, *, channel: str = "inbound", app: str = "MON",
             kind: str = "ORU^R01", patient: str = "MRN1", raw: bytes | None = None,
             ack: str = "AA") -> IncomingMessage:
    return IncomingMessage(
        channel=channel, received_at=received_at, peer="127.0.0.1:40000",
        raw=raw or hl7(control_id, app=app, kind=kind, patient=patient), ack_code=ack,
        control_id=control_id, message_type=kind, version="2.6", sending_application=app,
        sending_facility="ICU", patient_id=patient)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


T0 = 1_790_000_000_000_000


@pytest.fixture
def traffic(store: Store) -> dict[str, int]:
    """Nine messages over two channels, types, senders, patients and states."""
    batch = [
        arriving("A1", T0 + 1, patient="MRN1"),
        arriving("A2", T0 + 2, patient="MRN2", kind="ORU^R01^ORU_R01"),
        arriving("A3", T0 + 3, kind="ADT^A01", app="PAS"),
        arriving("A4", T0 + 4, channel="pumps", kind="ORU^R40"),
        arriving("A5", T0 + 5, raw=hl7("A5", name="MÜLLER^JÖRG")),
        # A6 arrives in ISO 8859-1, as many HL7 senders write it.
        arriving("A6", T0 + 6, raw=hl7("A6").replace(b"DOE^JOHN",
                                                      "MÜLLER^JÖRG".encode("latin-1"))),
        arriving("A7", T0 + 7, channel="pumps", ack="AR"),
        arriving("A8", T0 + 8, kind="ORUX^R01"),
        arriving("A9", T0 + 9),
    ]
    stored = store.commit_batch(batch)
    ids = {s_msg.control_id: s.id for s_msg, s in zip(batch, stored, strict=True)}
    # A9 is routed to the EHR with a transformed payload carrying a name only it has.
    store.commit_batch([], routings=[
        Routing(ids["A9"], "inbound", Status.QUEUED, deliveries=[
            NewDelivery("ehr", b"MSH|^~\\&|X|Y\rPID|||MRN1||Z\xc3\x9cRICH^OUT\r")]),
        Routing(ids["A1"], "inbound", Status.FILTERED, reason="not for us"),
    ])
    return ids


def ids_of(page) -> list[int]:
    return [m["id"] for m in page.messages]


def found(store: Store, **kw) -> set[str]:
    return {m["control_id"] for m in search(store, MessageFilter(**kw), limit=1000).messages}


def test_every_metadata_filter(store: Store, traffic: dict[str, int]) -> None:
    """Each filter narrows to exactly the messages it names."""
    everything = set(traffic)
    assert found(store) == everything
    assert found(store, channel="pumps") == {"A4", "A7"}
    assert found(store, statuses=("ERROR",)) == {"A7"}
    assert found(store, statuses=("FILTERED", "QUEUED")) == {"A1", "A9"}
    assert found(store, since_us=T0 + 3, until_us=T0 + 6) == {"A3", "A4", "A5"}
    assert found(store, control_id="A2") == {"A2"}
    assert found(store, patient_id="MRN2") == {"A2"}
    assert found(store, sending_application="PAS") == {"A3"}
    assert found(store, message_type="ORU") == everything - {"A3", "A8"}
    assert found(store, message_type="ORU^R01") == everything - {"A3", "A4", "A8"}
    assert found(store, message_type="ORU^R40") == {"A4"}
    assert found(store, message_type="ORU_") == set()
    assert found(store, channel="inbound", message_type="ORU", since_us=T0 + 5) == {"A5", "A6",
                                                                                 "A9"}


def test_unknown_status_is_refused() -> None:
    """A status that does not exist is an error, not an empty answer."""
    with pytest.raises(ValueError, match="unknown status"):
        MessageFilter(statuses=("LOST",))


def test_pages_newest_first_without_gaps_or_repeats(store: Store,
                                                    traffic: dict[str, int]) -> None:
    """Keyset pages of two cover every message once, newest first, and then stop."""
    seen: list[int] = []
    before = None
    pages = 0
    while True:
        page = search(store, MessageFilter(), limit=2, before_id=before)
        seen += ids_of(page)
        pages += 1
        if page.next_before_id is None:
            break
        assert page.next_before_id == seen[-1]
        before = page.next_before_id
    assert seen == sorted(traffic.values(), reverse=True)
    assert pages == 5
    assert list(m["id"] for m in iter_matches(store, MessageFilter(), page=2)) == seen


def test_text_inside_raw_content_is_found_in_utf8_and_latin1(store: Store,
                                                             traffic: dict[str, int]) -> None:
    """Non-ASCII text matches the UTF-8 message and the ISO 8859-1 one, nothing else."""
    assert found(store, text="MÜLLER") == {"A5", "A6"}
    assert found(store, text="JÖRG", control_id="A6") == {"A6"}
    assert found(store, text="müller") == set()  # byte-exact, so case-sensitive
    assert found(store, text="DOE^JOHN", channel="pumps") == {"A4", "A7"}


def test_text_inside_outgoing_content_is_found(store: Store, traffic: dict[str, int]) -> None:
    """A payload queued for a destination is searched as well as the raw message."""
    assert found(store, text="ZÜRICH") == {"A9"}


def test_text_search_is_bounded_and_says_where_to_go_on(store: Store,
                                                        traffic: dict[str, int]) -> None:
    """Only `scan_limit` candidates are read per page; the cursor continues past them."""
    flt = MessageFilter(text="MÜLLER")
    first = search(store, flt, scan_limit=3)
    assert ids_of(first) == [] and first.scanned == 3
    assert first.next_before_id == traffic["A7"]
    second = search(store, flt, scan_limit=3, before_id=first.next_before_id)
    assert ids_of(second) == [traffic["A6"], traffic["A5"]]
    assert second.next_before_id == traffic["A4"]
    third = search(store, flt, scan_limit=3, before_id=second.next_before_id)
    assert ids_of(third) == [] and third.next_before_id is None


def test_detail_has_contents_per_destination_deliveries_and_timeline(
        store: Store, traffic: dict[str, int]) -> None:
    """Raw content, the EHR's payload and response, the delivery and every event."""
    mid = traffic["A9"]
    delivery = store.queued("inbound", "ehr")[0]
    store.commit_batch([], outcomes=[DeliveryOutcome(
        delivery.id, mid, "inbound", "ehr", Status.SENT, 1, now_us(), now_us(),
        response=b"MSH|^~\\&|EHR\rMSA|AA|A9\r")])
    detail = message_detail(store, mid)
    assert detail is not None
    assert detail["message"]["control_id"] == "A9"
    assert detail["message"]["status"] == "SENT"
    assert detail["contents"]["raw"][0]["text"] == hl7("A9").decode()
    ehr = detail["destinations"]["ehr"]
    assert ehr["status"] == "SENT" and ehr["attempts"] == 1
    assert ehr["contents"]["encoded"][0]["text"].endswith("ZÜRICH^OUT\r")
    assert ehr["contents"]["response"][0]["text"] == "MSH|^~\\&|EHR\rMSA|AA|A9\r"
    actions = [e["action"] for e in detail["timeline"]]
    assert actions == ["message.received", "message.routed", "delivery.sent",
                       "message.status"]
    assert message_detail(store, 10_000) is None


def test_detail_keeps_bytes_that_are_not_utf8(store: Store, traffic: dict[str, int]) -> None:
    """A raw message in ISO 8859-1 comes with base64 so no byte is lost in JSON."""
    raw = message_detail(store, traffic["A6"])["contents"]["raw"][0]
    assert "base64" in raw and "MÜLLER" in raw["text"]


def test_bulk_reprocess_filter_takes_only_errors() -> None:
    """A reprocess filter is forced to ERROR; asking for another state is refused."""
    assert for_reprocess(MessageFilter(channel="x")).statuses == ("ERROR",)
    with pytest.raises(ValueError):
        for_reprocess(MessageFilter(statuses=("SENT",)))
