"""The relay hands fills to the service in execution order, whatever path found them, and books
what TWS reports even when its orderRef or correction looks odd: the real ib_async client
against the fake TWS and a real service."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterable
from decimal import Decimal
from typing import Any

import pytest

from client import AsyncPortfolioClient, EventAck, EventResult, ExecutionEvent, Fill
from client.models import BookingPlacement
from relay.relay import ExecutionRelay
from tests.broker.fake_tws import FakeTws
from tests.broker.test_relay import (
    AAPL,
    ACCOUNT,
    CLIENT_IDS,
    ES,
    MSFT,
    Exec,
    all_sent,
    assert_books,
    eventually,
    new_relay,
)
from tests.conftest import ServerThread

pytestmark = pytest.mark.timeout(60)

__all__ = ["RecordingClient"]


class RecordingClient(AsyncPortfolioClient):
    """The real SDK client, keeping every ack the service gave, in the order it gave them."""

    def __init__(self, target: str, **options: Any) -> None:
        super().__init__(target, **options)
        self.acks: list[tuple[ExecutionEvent, EventAck]] = []

    async def ingest(self, events: Iterable[ExecutionEvent], **options: Any) -> list[EventAck]:
        events = list(events)
        acks = await super().ingest(events, **options)
        self.acks.extend(zip(events, acks, strict=True))
        return acks

    def fill_acks(self) -> list[EventAck]:
        return [a for e, a in self.acks if isinstance(e, Fill) and a.result is EventResult.ACCEPTED]

    def booked(self) -> list[str]:
        """The fills the service booked, in the order it booked them."""
        return [a.event_id for a in self.fill_acks()]

    def restated(self) -> list[str]:
        """Fills the service had to book before fills it already had (out of order)."""
        return [
            a.event_id for a in self.fill_acks() if a.placement is not BookingPlacement.IN_ORDER
        ]


@pytest.fixture
async def recording(service: ServerThread) -> AsyncIterator[RecordingClient]:
    async with RecordingClient(service.address) as client:
        yield client


@pytest.fixture
async def relay(tws: FakeTws, recording: RecordingClient) -> AsyncIterator[ExecutionRelay]:
    relay = new_relay(tws, recording)
    await relay.start()
    await relay.connection.wait_connected(5)
    try:
        yield relay
    finally:
        await relay.stop()


def at(second: int) -> str:
    """An execution time `second` seconds after 15:00:00 (TWS's times have whole seconds)."""
    minutes, seconds = divmod(second, 60)
    return f"20260102 15:{minutes:02d}:{seconds:02d} UTC"


def report(tws: FakeTws, e: Exec, second: int, *, live: bool = True) -> None:
    tws.add_execution(
        ACCOUNT, e.contract, e.exec_id, e.side, e.shares, e.price,
        order_id=e.order_id, perm_id=e.perm_id, client_id=CLIENT_IDS.get(e.order_ref, 0),
        order_ref=e.order_ref, commission=e.commission, live=live, time=at(second),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Execution order


async def test_a_fill_of_an_order_ib_async_does_not_know_is_not_overtaken(
    tws: FakeTws, relay: ExecutionRelay, recording: RecordingClient
) -> None:
    # The figures: an order placed before the relay connected (no Trade in ib_async)
    # fills first, an order the relay knows fills next; both reach ib_async in one read.
    known = 9_0002
    tws.add_order(ACCOUNT, 2, known, 3, AAPL, "BUY", "100", "momo")
    await eventually(lambda: any(t.order.permId == known for t in relay.connection.ib.trades()))
    first = Exec("00009e90.00000001.01.01", AAPL, "BOT", "100", "80", "1", "momo", 9_0001, 1)
    second = Exec("00009e91.00000002.01.01", AAPL, "BOT", "100", "100", "1", "momo", known, 2)
    report(tws, first, 1)
    report(tws, second, 2)

    await all_sent(relay, 2)

    assert recording.booked() == [first.exec_id, second.exec_id]
    assert recording.restated() == []
    await assert_books(recording, [first, second])


async def test_a_burst_with_a_reconnect_is_booked_in_execution_order(
    tws: FakeTws, relay: ExecutionRelay, recording: RecordingClient
) -> None:
    rng = random.Random(13)
    executions: list[Exec] = []
    perm = 20_000
    for number in range(40):
        perm += 1
        strategy = rng.choice(["momo", "meanrev", ""])
        contract = rng.choice([AAPL, MSFT, ES])
        known = rng.random() < 0.5  # else placed before the relay connected, or by hand
        side = rng.choice(["BOT", "BOT", "SLD"])
        base = {AAPL: 150, MSFT: 410, ES: 6000}[contract]
        price = Decimal(base) + Decimal(rng.randint(-500, 500)) / 100
        shares = rng.randint(1, 30)
        action = "BUY" if side == "BOT" else "SELL"
        if known and strategy:
            client_id = CLIENT_IDS[strategy]
            tws.add_order(ACCOUNT, number + 1, perm, client_id, contract, action, str(shares),
                          order_ref=strategy)  # fmt: skip
        commission = str(Decimal(rng.randint(5, 150)) / 100)
        exec_id = f"0000b0b0.{perm:08x}.01.01"
        e = Exec(exec_id, contract, side, str(shares), str(price), commission, strategy, perm)
        executions.append(e)
    before, offline, after = executions[:15], executions[15:30], executions[30:]
    for second, e in enumerate(before):
        report(tws, e, second)
    await all_sent(relay, len(before))

    tws.accepting = False
    await tws.drop_clients()
    await relay.connection.wait_disconnected(5)
    # Executed while the relay was away, and listed by TWS in no particular order.
    for second, e in sorted(enumerate(offline, 15), key=lambda _: rng.random()):
        report(tws, e, second, live=False)
    tws.accepting = True
    await relay.connection.wait_connected(5)
    for second, e in enumerate(after, 30):
        report(tws, e, second)

    await all_sent(relay, len(executions))

    assert recording.restated() == []
    assert sorted(recording.booked()) == sorted(e.exec_id for e in executions)
    await assert_books(recording, executions)  # against a model fed in execution order


# ---------------------------------------------------------------------------------------------
# orderRefs and corrections TWS reports that the service refused


async def test_an_order_ref_with_a_trailing_blank_books_under_its_strategy(
    tws: FakeTws, relay: ExecutionRelay, recording: RecordingClient
) -> None:
    Exec("0000be7a.00000001.01.01", AAPL, "BOT", "10", "150", "1", "beta ").report(tws)
    await all_sent(relay, 1)
    assert relay.stats.rejected == 0
    row = await recording.get_position(ACCOUNT, "AAPL", strategy_id="beta")
    assert (row.quantity, row.fees) == (10, 1)


async def test_a_reserved_order_ref_books_under_the_default_strategy_with_a_warning(
    tws: FakeTws, relay: ExecutionRelay, recording: RecordingClient,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="portfolio.relay")
    Exec("0000a5e5.00000001.01.01", AAPL, "BOT", "10", "150", "1", "RESIDUAL").report(tws)
    Exec("0000a5e5.00000002.01.01", AAPL, "SLD", "4", "151", "1", "UNATTRIBUTED").report(tws)
    await all_sent(relay, 2)
    assert relay.stats.rejected == 0
    row = await recording.get_position(ACCOUNT, "AAPL", strategy_id="UNASSIGNED")
    assert (row.quantity, row.trade_count) == (6, 2)
    assert "orderRef 'RESIDUAL' is reserved" in caplog.text
    assert "orderRef 'UNATTRIBUTED' is reserved" in caplog.text


async def test_a_correction_whose_original_tws_no_longer_lists_is_booked_as_one(
    tws: FakeTws, relay: ExecutionRelay, recording: RecordingClient
) -> None:
    original = Exec("0001c0ee.6571a1b2.01.01", AAPL, "BOT", "100", "10", "1", "momo", 9101)
    report(tws, original, 1)
    await all_sent(relay, 1)
    tws.accepting = False
    await tws.drop_clients()
    await relay.connection.wait_disconnected(5)
    tws.remove_execution(original.exec_id)  # TWS lists the correction only
    corrected = Exec("0001c0ee.6571a1b2.01.02", AAPL, "BOT", "90", "10.05", "0.9", "momo", 9101)
    report(tws, corrected, 3000, live=False)
    tws.accepting = True
    await relay.connection.wait_connected(5)
    await all_sent(relay, 2)
    assert relay.stats.rejected == 0
    row = await recording.get_position(ACCOUNT, "AAPL", strategy_id="momo")
    assert (row.quantity, row.avg_cost, row.trade_count) == (90, Decimal("10.05"), 1)


async def test_a_restarted_relay_books_a_correction_whose_original_is_gone(
    tws: FakeTws, recording: RecordingClient
) -> None:
    original = Exec("0002c0ee.6571a1b2.01.01", MSFT, "SLD", "50", "400", "1", "meanrev", 9102)
    first = new_relay(tws, recording)
    await first.start()
    await first.connection.wait_connected(5)
    report(tws, original, 1)
    await all_sent(first, 1)
    await first.stop()
    tws.remove_execution(original.exec_id)
    corrected = Exec("0002c0ee.6571a1b2.01.02", MSFT, "SLD", "40", "400.5", "0.8", "meanrev", 9102)
    report(tws, corrected, 1, live=False)
    second = new_relay(tws, recording)
    await second.start()
    try:
        await all_sent(second, 1)
        assert second.stats.rejected == 0
    finally:
        await second.stop()
    row = await recording.get_position(ACCOUNT, "272093", strategy_id="meanrev")
    assert (row.quantity, row.avg_cost) == (-40, Decimal("400.5"))
