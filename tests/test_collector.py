"""The collector's policy (server/application/collector.py): the steps that make objects in
proportion to the book, a day's close and a checkpoint's snapshot, run with no collection
inside; everything else runs with the collector as it was."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import grpc
import pytest

from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application import checkpoints
from server.application.collector import collector_paused
from server.domain.events import DayClose
from server.domain.ledger import KINDS, Ledger
from server.domain.state import capture, capture_rows, capturing, capturing_rows
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server
from tests.domain.builders import fill


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of each collection that starts, with young collections every 100
    allocations, so that a step making thousands of objects would trigger some."""
    started: list[int] = []

    def noted(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(100, 10, 10)
    gc.enable()
    gc.callbacks.append(noted)
    try:
        yield started
    finally:
        gc.callbacks.remove(noted)
        gc.set_threshold(*thresholds)
        if not enabled:
            gc.disable()


def test_paused_inside_restored_after_even_on_error_and_nested():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outermost decides
    assert gc.isenabled()
    with pytest.raises(ValueError, match="inside"), collector_paused():
        raise ValueError("inside")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.enable()


def _book(rows: int) -> Ledger:
    ledger = Ledger()
    for n in range(rows):
        event = fill("BUY", 1, 10, strategy=f"S{n % 7}", instrument=f"I{n}", fill_id=f"f{n}")
        ledger.apply(event, ledger.admit(event).sequence)
    return ledger


def test_a_snapshot_copies_the_book_with_no_collection(collections, monkeypatch):
    ledger = _book(3_000)
    capture_rows(ledger), capture(ledger), ledger.book.anchors()
    assert collections, "the same copies made with the collector on trigger collections"
    during: list[int] = []

    def watched(steps):  # type: ignore[no-untyped-def]
        def run(ledger):  # type: ignore[no-untyped-def]
            before = len(collections)
            made = yield from steps(ledger)
            during.append(len(collections) - before)
            return made

        return run

    monkeypatch.setattr(checkpoints, "capturing_rows", watched(capturing_rows))
    monkeypatch.setattr(checkpoints, "capturing", watched(capturing))
    checkpoint = checkpoints.snapshot(ledger)
    assert during == [0, 0]
    assert len(checkpoint.rows) == len(ledger.book)


def test_only_a_days_close_applies_in_steps():
    assert [kind for kind, rules in KINDS.items() if rules.steps is not None] == [DayClose]


def test_the_service_applies_a_close_with_the_collector_paused_and_a_fill_without():
    """Seen from inside the ledger of a running service: whether the collector was on while
    each event applied."""
    server = start_test_server()
    try:
        ledger = server.running.service.writes.ledger
        seen: list[tuple[str, bool]] = []
        apply, closing = ledger.apply, ledger.pnl.closing

        def noted(event, sequence):  # type: ignore[no-untyped-def]
            seen.append((type(event).__name__, gc.isenabled()))
            return apply(event, sequence)

        def noted_close(**close):  # type: ignore[no-untyped-def]
            seen.append(("DayClose", gc.isenabled()))
            return (yield from closing(**close))

        ledger.apply = noted  # type: ignore[method-assign]
        ledger.pnl.closing = noted_close  # type: ignore[method-assign]
        with grpc.insecure_channel(server.address) as channel:
            acks(pb_grpc.PortfolioManagerStub(channel), pb_fill("BUY", 10, 100))
        close = DayClose(
            account_id="A1",
            trading_date="2026-01-02",
            timestamp_ns=ledger.clock_ns + 1,
            marks=ledger.closing_marks("A1"),
            late=False,
        )
        server.call(server.running.service.writes.ingest([close]))
        assert seen == [("Fill", True), ("DayClose", False)]
        assert gc.isenabled()
        assert ledger.pnl.closed_through("A1") == "2026-01-02"
    finally:
        server.stop()
