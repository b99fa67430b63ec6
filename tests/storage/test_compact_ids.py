"""The compact exactly-once ids and correction window against a real store: an ambiguous hash
is settled by reading the journal (`event_at`), before and after a restart."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.api.wire import event_from_proto
from server.domain import corrections, seen
from server.domain.ledger import Ledger, Result
from server.domain.position import PositionKey
from server.storage.arctic import EVENTS, ArcticEventStore
from server.storage.frames import journal_frame
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server
from tests.domain.builders import fill


@pytest.fixture
def colliding(monkeypatch):
    """Every id hashes to one of two values, and every id is merged as soon as journaled: the
    service must tell ids apart by reading the journal."""

    def tiny(kind: str, event_id: str) -> int:
        return len(event_id) % 2

    monkeypatch.setattr(seen, "id_hash", tiny)
    monkeypatch.setattr(corrections, "id_hash", tiny)
    monkeypatch.setattr(seen, "MERGE_AT_LEAST", 1)


def test_event_at_reads_one_journaled_event(tmp_path):
    store = ArcticEventStore(f"lmdb://{tmp_path}/store")
    try:
        assert store.event_at(1) is None  # no journal yet
        events = [fill("BUY", n + 1, 10, fill_id=f"f{n}") for n in range(150)]
        for start in range(0, 150, 50):
            store.append([(n + 1, events[n]) for n in range(start, start + 50)])
        assert [store.event_at(n) for n in (1, 77, 150)] == [events[0], events[76], events[149]]
        assert store.event_at(151) is None
    finally:
        store.close()


def test_event_at_finds_a_row_away_from_its_position(tmp_path):
    """A journal whose rows do not sit at sequence - 1 (a row journaled twice moves the later
    ones): the few rows read first miss, the scan finds it."""
    store = ArcticEventStore(f"lmdb://{tmp_path}/store")
    try:
        events = [fill("BUY", 1, 10, fill_id=f"g{n}") for n in range(10)]
        group = [(100 + n, event) for n, event in enumerate(events)]
        store.journal.write(EVENTS, journal_frame(group))
        assert store.event_at(100) == events[0]
        assert store.event_at(109) == events[9]
        assert store.event_at(99) is None
    finally:
        store.close()


def results(stub, *events):
    return [(ack.result, ack.sequence) for ack in acks(stub, *events)]


ACCEPTED, DUPLICATE, REJECTED = (
    pb.EVENT_RESULT_ACCEPTED,
    pb.EVENT_RESULT_DUPLICATE,
    pb.EVENT_RESULT_REJECTED,
)


def test_colliding_ids_answer_exactly_across_a_restart(tmp_path, colliding):
    store = f"lmdb://{tmp_path}/store"
    first = [pb_fill("BUY", 10, 10, fill_id=f"x{n}") for n in range(6)]  # "x0" .. "x5": one hash
    second = [pb_fill("BUY", 10, 10, fill_id=f"y{n}") for n in range(3)]  # the same hash again
    reused = pb_fill("BUY", 11, 10, fill_id="x3")
    fixed = pb_fill("BUY", 10, 12, fill_id="x1.fix", corrects="x1")
    fixed_again = pb_fill("BUY", 10, 13, fill_id="x2.fix", corrects="x2")
    running = start_test_server(store=store)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            for event in first:
                assert results(stub, event)[0][0] == ACCEPTED
            assert results(stub, first[2]) == [(DUPLICATE, 3)]
            assert results(stub, reused)[0][0] == REJECTED
            assert [r for r, _ in results(stub, *second)] == [ACCEPTED] * 3
            assert results(stub, fixed) == [(ACCEPTED, 10)]
    finally:
        running.stop()
    running = start_test_server(store=store)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            assert results(stub, *first) == [(DUPLICATE, n) for n in range(1, 7)]
            assert results(stub, *second, fixed) == [(DUPLICATE, n) for n in (7, 8, 9, 10)]
            assert results(stub, reused)[0][0] == REJECTED
            late = pb_fill("BUY", 1, 10, fill_id="x9")
            assert results(stub, late)[0] == (ACCEPTED, 11)
            assert results(stub, fixed_again) == [(ACCEPTED, 12)]  # a fill from before
            row = stub.GetPosition(
                pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id="S1")
            )
    finally:
        running.stop()
    reference = Ledger()  # everything kept whole, no restart
    for event in [*first, *second, fixed, late, fixed_again]:
        assert reference.record(event_from_proto(event)).result is Result.ACCEPTED
    expected = reference.book.view(reference.book.get(PositionKey("A1", "S1", "AAPL")))
    assert (Decimal(row.quantity), Decimal(row.cost_basis)) == (91, expected.cost_basis)
