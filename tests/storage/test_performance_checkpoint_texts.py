"""Performance state read back from a checkpoint keeps each amount's text: zeros keep their
exponent and sign ("0.00", "-0"), figures their trailing zeros ("10.00"), so the state after a
restart reads as the state of the same run without one."""

from __future__ import annotations

import itertools
from decimal import Decimal

import grpc
import pandas as pd

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.domain.performance import RoundTrips, VenueFigures
from server.domain.position import PositionKey
from server.domain.state import LedgerState
from server.storage.state_frames import state_frame, state_from_frame
from tests.api.protocol import ingest, pb_fill
from tests.conftest import ServerThread, start_test_server

_TEXTS = ("0", "0.00", "-0", "-0.00", "0E-18", "10.00", "-12.3400", "0.000000000000000001")


def _performance_state() -> LedgerState:
    amounts = [Decimal(text) for text in _TEXTS]
    return LedgerState(
        perf_open=[
            (PositionKey("A1", "S1", f"I{n}"), 1 - 2 * (n % 2), realized, fees)
            for n, (realized, fees) in enumerate(zip(amounts, reversed(amounts), strict=True))
        ],
        perf_trips=[
            (PositionKey("A1", "S1", f"I{n}"), RoundTrips(1, 1, 0, a, b, a, b))
            for n, (a, b) in enumerate(itertools.pairwise(amounts))
        ],
        perf_venues=[
            (("A1", "S1", f"V{n}", "USD"), VenueFigures(3, a, a, a)) for n, a in enumerate(amounts)
        ],
        perf_inception=[(("A1", "S1"), 7)],
    )


def test_performance_state_reads_back_with_each_amounts_text() -> None:
    state = _performance_state()
    again = state_from_frame(state_frame(state))
    assert again == state  # values
    assert repr(again) == repr(state)  # and texts: exponents, signs of zeros


def test_a_checkpoint_holding_canonical_texts_still_reads() -> None:
    """Checkpoints written before kept canonical texts ("0", "10"): same layout, same values."""
    records = [
        '{"key":["A1","S1","I1"],"sign":1,"realized_pnl":"0","fees":"0"}',
        '{"gross_win":"10","gross_loss":"0","largest_win":"10","largest_loss":"0",'
        '"key":["A1","S1","I0"],"count":1,"wins":1,"losses":0}',
        '{"volume":"1010","fees":"0","realized_pnl":"10","key":["A1","S1","ARCA","USD"],"fills":2}',
    ]
    frame = pd.DataFrame({"section": ["perf_open", "perf_trips", "perf_venues"], "record": records})
    state = state_from_frame(frame, {})
    assert state.perf_open == [(PositionKey("A1", "S1", "I1"), 1, Decimal(0), Decimal(0))]
    assert state.perf_trips == [
        (PositionKey("A1", "S1", "I0"), RoundTrips(1, 1, 0, Decimal(10), Decimal(0), Decimal(10)))
    ]
    assert state.perf_venues == [
        (("A1", "S1", "ARCA", "USD"), VenueFigures(2, Decimal(1010), Decimal(0), Decimal(10)))
    ]


def _halves() -> tuple[list[pb.ExecutionEvent], list[pb.ExecutionEvent]]:
    """Trips closed and opened on both sides of the restart, with zero commissions of both
    texts ("0.00" and "0") and prices with trailing zeros."""

    def fill(name: str, side: str, quantity: int, price: str, fee: str, instrument: str):
        return pb_fill(
            side, quantity, price, commission=fee, instrument=instrument, fill_id=name,
            venue="ARCA",
        )  # fmt: skip

    before = [
        fill("f1", "BUY", 10, "100.00", "0.00", "I0"),
        fill("f2", "SELL", 10, "101.00", "0", "I0"),  # a trip of 10.00
        fill("f3", "BUY", 5, "50.50", "0", "I1"),
        fill("f4", "BUY", 5, "51.50", "0.00", "I1"),
        fill("f5", "SELL", 10, "52.00", "1.50", "I1"),
        fill("f6", "SELL", 4, "20.00", "0.00", "I2"),  # open across the restart
        fill("f7", "BUY", 2, "30.00", "0", "I3"),  # open across the restart
    ]
    after = [
        fill("g1", "SELL", 1, "19.00", "0.00", "I2"),  # still open
        fill("g2", "BUY", 3, "10.00", "0", "I0"),
        fill("g3", "SELL", 3, "12.00", "0.00", "I0"),
        fill("g4", "BUY", 1, "31.00", "0.00", "I3"),
    ]
    return before, after


def _ingest(server: ServerThread, events: list[pb.ExecutionEvent]) -> None:
    with grpc.insecure_channel(server.address) as channel:
        ingest(pb_grpc.PortfolioManagerStub(channel), events)


def _read(server: ServerThread) -> tuple[list[str], str]:
    """What a client reads (GetPerformance of the account and of its strategy) and the
    performance state's texts."""
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        answers = [
            str(stub.GetPerformance(pb.GetPerformanceRequest(account_id="A1", strategy_id=s)))
            for s in ("", "S1")
        ]
    return answers, repr(server.running.service.ledger.performance.state())


def test_a_checkpoint_and_restart_in_the_middle_changes_no_text(tmp_path) -> None:
    before, after = _halves()
    straight = start_test_server(store=f"lmdb://{tmp_path}/straight", checkpoint_every=1)
    try:
        _ingest(straight, before)
        _ingest(straight, after)
        expected = _read(straight)
    finally:
        straight.stop()

    store = f"lmdb://{tmp_path}/restarted"
    first = start_test_server(store=store, checkpoint_every=1)
    try:
        _ingest(first, before)
    finally:
        first.stop()
    second = start_test_server(store=store, checkpoint_every=1)
    try:
        recovery = second.running.recovery
        assert (recovery.checkpoint_sequence, recovery.replayed) == (len(before), 0)
        _ingest(second, after)
        answers, texts = _read(second)
    finally:
        second.stop()
    assert answers == expected[0]
    assert texts == expected[1]
    assert "Decimal('0.00')" in texts and "Decimal('10.00')" in texts  # the case is exercised
