"""FX rates of the mark stream are journaled (coalesced per pair) through the real gRPC server
and ArcticDB on LMDB, so that a restart, or a replay of the journal alone, knows which rate was
in force when; a store that refuses them keeps the latest per pair until it works again."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application import marks as marks_module
from server.application.ports import Sequenced, StorageUnavailable
from server.domain.events import FxFixing
from server.domain.ledger import Ledger, Result
from server.domain.marks import FxRate
from server.storage.arctic import ArcticEventStore
from tests.conftest import ServerThread, start_test_server
from tests.polling import wait_for

D = Decimal
T = TypeVar("T")


def on_loop(server: ServerThread, function: Callable[[], T]) -> T:
    """Reads the service's state on its own event loop (the one thread that changes it)."""

    async def call() -> T:
        return function()

    result: T = server.call(call())
    return result


def fx(base: str, quote: str, rate: str, time_ns: int) -> pb.FxRate:
    message = pb.FxRate(base_currency=base, quote_currency=quote, rate=rate)
    message.timestamp.FromNanoseconds(time_ns)
    return message


def stream(server: ServerThread, *batches: pb.MarkBatch) -> list[pb.MarkAck]:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        return list(stub.StreamMarks(iter(batches), timeout=10))


def journaled_fx(server: ServerThread) -> list[tuple[int, FxFixing]]:
    return [
        (sequence, event)
        for sequence, event in server.running.store.events_after(0)
        if isinstance(event, FxFixing)
    ]


def history(server: ServerThread) -> list[tuple[int, FxRate]]:
    return on_loop(server, lambda: server.running.service.ledger.fx_history.rates())


def valuation(server: ServerThread) -> list[FxRate]:
    return on_loop(server, lambda: sorted(server.running.service.ledger.fx.rates(), key=str))


def rate_at(server: ServerThread, base: str, quote: str, time_ns: int) -> Decimal | None:
    ledger = server.running.service.ledger
    return on_loop(server, lambda: ledger.fx_history.rate_at(base, quote, time_ns))


def replayed(events: list[Sequenced]) -> Ledger:
    """A ledger fed the journal alone, as a recovery without a checkpoint would."""
    ledger = Ledger()
    for sequence, event in events:
        outcome = ledger.record(event)
        assert (outcome.result, outcome.sequence) == (Result.ACCEPTED, sequence)
    return ledger


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"lmdb://{tmp_path}/store"


def test_a_burst_of_ticks_is_journaled_as_a_few_rates_and_a_restart_keeps_the_history(store):
    start = time.time_ns() - 60 * 10**9
    ticks = [fx("EUR", "USD", f"1.{1000 + i}", start + i * 10**6) for i in range(100)]
    server = start_test_server(store=store)
    try:
        acks = stream(
            server, *(pb.MarkBatch(batch_id=str(i), fx_rates=[t]) for i, t in enumerate(ticks))
        )
        assert sum(ack.fx_rates_applied for ack in acks) == 100
        stream(server, pb.MarkBatch(fx_rates=[fx("USD", "JPY", "150.25", start)]))
        last = start + 99 * 10**6
        assert wait_for(lambda: rate_at(server, "EUR", "USD", last) == D("1.1099"))
        assert wait_for(lambda: rate_at(server, "JPY", "USD", start) is not None)
        journaled = journaled_fx(server)
        eur_usd = [event for _, event in journaled if event.base == "EUR"]
        assert 1 <= len(eur_usd) <= 5  # coalesced: the latest per pair, at most once a second
        assert eur_usd[-1] == FxFixing(base="EUR", quote="USD", rate=D("1.1099"), timestamp_ns=last)
        assert [e.timestamp_ns for e in eur_usd] == sorted(e.timestamp_ns for e in eur_usd)
        before = history(server), valuation(server)
        assert [rate for _, rate in before[0]] == [
            *(FxRate(e.base, e.quote, e.rate, e.timestamp_ns) for e in eur_usd),
            FxRate("USD", "JPY", D("150.25"), start),
        ]
        events = list(server.running.store.events_after(0))
    finally:
        server.stop()
    replay = replayed(events)  # the journal alone
    assert replay.fx_history.rates() == before[0]
    assert sorted(replay.fx.rates(), key=str) == before[1]

    again = start_test_server(store=store)
    try:
        assert (history(again), valuation(again)) == before
        assert rate_at(again, "USD", "EUR", last) == rate_at(again, "USD", "EUR", last + 1)
    finally:
        again.stop()


def test_the_journal_alone_gives_the_same_history_and_valuation_rates(store):
    start = time.time_ns() - 60 * 10**9
    server = start_test_server(store=store, fx_journal_seconds=0)  # every rate
    try:
        batch = pb.MarkBatch(
            fx_rates=[fx("EUR", "USD", f"1.0{i}", start + i) for i in range(5)]
            + [fx("USD", "EUR", "0.9", start + 2 * 10**9)]
        )
        (ack,) = stream(server, batch)
        assert ack.fx_rates_applied == 6
        assert wait_for(lambda: len(journaled_fx(server)) == 6)
        assert wait_for(lambda: len(history(server)) == 6)
        events = list(server.running.store.events_after(0))
        before = history(server), valuation(server)
    finally:
        server.stop()
    ledger = replayed(events)
    assert ledger.fx_history.rates() == before[0]
    assert sorted(ledger.fx.rates(), key=str) == before[1]
    assert ledger.fx_history.rate_at("EUR", "USD", start + 3) == D("1.03")
    assert ledger.fx_history.rate_at("EUR", "USD", start + 2 * 10**9) == D("1.111111111111111111")


def test_a_graceful_stop_journals_the_rates_still_pending(store):
    start = time.time_ns() - 60 * 10**9
    server = start_test_server(store=store, fx_journal_seconds=3600)
    try:
        stream(server, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1", start)]))
        assert wait_for(lambda: len(journaled_fx(server)) == 1)  # the first goes at once
        stream(
            server,
            *(pb.MarkBatch(fx_rates=[fx("EUR", "USD", f"1.{i}", start + i)]) for i in range(2, 6)),
        )
        assert len(history(server)) == 1  # the others wait for the next flush, an hour on
    finally:
        server.stop()
    again = start_test_server(store=store)
    try:
        assert [rate for _, rate in history(again)] == [
            FxRate("EUR", "USD", D("1.1"), start),
            FxRate("EUR", "USD", D("1.5"), start + 5),
        ]
    finally:
        again.stop()


class FailingDisk(ArcticEventStore):
    broken = threading.Event()

    def append(self, group: list[Sequenced]) -> None:
        if self.broken.is_set():
            raise StorageUnavailable("MDB_MAP_FULL (simulated)")
        super().append(group)


@pytest.fixture
def failing_server(store: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    monkeypatch.setattr(marks_module, "FX_RETRY_SECONDS", 0.05)
    FailingDisk.broken.clear()
    server = start_test_server(open_store=FailingDisk, store=store, fx_journal_seconds=0.05)
    yield server
    FailingDisk.broken.clear()
    server.stop()


def test_rates_the_store_refuses_are_kept_and_journaled_once_it_works(
    failing_server: ServerThread, caplog: pytest.LogCaptureFixture
):
    server = failing_server
    service = server.running.service
    caplog.set_level(logging.INFO, logger="portfolio.service")
    start = time.time_ns() - 60 * 10**9
    FailingDisk.broken.set()
    (ack,) = stream(server, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.1", start)]))
    assert ack.fx_rates_applied == 1  # the ack does not wait for the store
    assert wait_for(lambda: not on_loop(server, lambda: service.committer.healthy))
    for i in (2, 3):  # while the store is down: refused at the door, kept pending
        (ack,) = stream(server, pb.MarkBatch(fx_rates=[fx("EUR", "USD", f"1.{i}", start + i)]))
        assert ack.fx_rates_applied == 1
    assert on_loop(server, lambda: service.fx_rate("EUR", "USD")) == D("1.3")  # valued at once
    time.sleep(0.5)  # about ten flushes refused
    refused = [r for r in caplog.records if r.getMessage().startswith("FX rates not journaled")]
    assert len(refused) == 1  # logged once per outage
    assert history(server) == []

    FailingDisk.broken.clear()
    assert wait_for(lambda: rate_at(server, "EUR", "USD", start + 3) == D("1.3"))
    # The first rate was admitted before the store failed, and committed once it worked; of
    # the two refused, the latest of the pair was kept.
    assert [rate.rate for _, rate in history(server)] == [D("1.1"), D("1.3")]
    assert [event.rate for _, event in journaled_fx(server)] == [D("1.1"), D("1.3")]
    assert any(r.getMessage().startswith("FX rates journaled again") for r in caplog.records)
