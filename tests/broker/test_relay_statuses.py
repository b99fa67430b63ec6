"""Order statuses across outages (issue 13, item 2): after every (re)connect the relay brings
every order it has seen, and every order TWS lists, to its broker state. The real ib_async
client against the fake TWS, a real service on a loopback port."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import grpc
import pytest

from client import AsyncPortfolioClient
from portfolio.v1 import portfolio_pb2 as pb
from relay.relay import ExecutionRelay
from tests.broker.fake_tws import FakeContract, FakeTws
from tests.broker.test_relay import (
    AAPL,
    ACCOUNT,
    CLIENT_IDS,
    MSFT,
    Exec,
    all_sent,
    eventually,
    new_relay,
    order_status_of,
)
from tests.conftest import ServerThread

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def relay(tws: FakeTws, portfolio: AsyncPortfolioClient) -> AsyncIterator[ExecutionRelay]:
    relay = new_relay(tws, portfolio)
    await relay.start()
    await relay.connection.wait_connected(5)
    try:
        yield relay
    finally:
        await relay.stop()


@dataclass
class Order:
    """One order the test makes TWS work: its executions and where it ends."""

    number: int
    perm_id: int
    contract: FakeContract
    strategy: str
    side: str  # BOT / SLD
    parts: list[int]
    prices: list[Decimal]
    executed: list[Exec] = field(default_factory=list)
    status: str = "Submitted"

    @property
    def total(self) -> int:
        return sum(self.parts)

    @property
    def filled(self) -> int:
        return sum(int(e.shares) for e in self.executed)

    def place(self, tws: FakeTws) -> None:
        action = "BUY" if self.side == "BOT" else "SELL"
        tws.add_order(ACCOUNT, self.number, self.perm_id, CLIENT_IDS[self.strategy],
                      self.contract, action, str(self.total), self.strategy)  # fmt: skip

    def execute(self, tws: FakeTws, *, live: bool, final: str = "Filled") -> None:
        """The next part; the order's status follows (Filled after its last part)."""
        part = len(self.executed)
        e = Exec(
            f"0000a2a2.{self.perm_id:08x}.{part + 1:02d}.01",
            self.contract,
            self.side,
            str(self.parts[part]),
            str(self.prices[part]),
            "0.5",
            self.strategy,
            self.perm_id,
            self.number,
        )
        self.executed.append(e)
        e.report(tws, live=live)
        notional = sum(Decimal(x.shares) * Decimal(x.price) for x in self.executed)
        average = notional / self.filled
        self.status = final if self.filled == self.total else "Submitted"
        tws.set_order_status(self.perm_id, self.status, str(self.filled),
                             str(self.total - self.filled), str(average), e.price)  # fmt: skip

    def cancel(self, tws: FakeTws) -> None:
        self.status = "Cancelled"
        tws.set_order_status(self.perm_id, "Cancelled", str(self.filled),
                             str(self.total - self.filled))  # fmt: skip


def new_orders(rng: random.Random, count: int, first: int) -> list[Order]:
    orders = []
    for number in range(first, first + count):
        contract = rng.choice([AAPL, MSFT])
        base = {AAPL: 150, MSFT: 410}[contract]
        parts = [rng.randint(1, 20) for _ in range(3)]
        prices = [Decimal(base) + Decimal(rng.randint(-300, 300)) / 100 for _ in parts]
        orders.append(Order(number, 61000 + number, contract, rng.choice(["momo", "meanrev"]),
                            rng.choice(["BOT", "SLD"]), parts, prices))  # fmt: skip
    return orders


_STATUSES = {
    "Filled": pb.ORDER_STATUS_FILLED,
    "Cancelled": pb.ORDER_STATUS_CANCELLED,
    "Submitted": pb.ORDER_STATUS_PARTIALLY_FILLED,
}


async def test_statuses_of_a_burst_survive_a_reconnect(
    tws: FakeTws, relay: ExecutionRelay, service: ServerThread
) -> None:
    rng = random.Random(13)
    orders = new_orders(rng, 36, first=1)
    before, during, cancelled, after = orders[:6], orders[6:24], orders[24:28], orders[28:]
    offline_only = new_orders(rng, 10, first=100)  # placed and filled while the relay is away
    # Connected: every order placed and partly filled; a few finished.
    for order in orders:
        order.place(tws)
        order.execute(tws, live=True)
    for order in before:
        order.execute(tws, live=True)
        order.execute(tws, live=True)
    await all_sent(relay, sum(len(o.executed) for o in orders))
    await eventually(lambda: relay.stats.statuses_sent >= len(orders))

    tws.accepting = False
    await tws.drop_clients()
    await relay.connection.wait_disconnected(5)
    # Away: TWS fills and cancels orders the relay saw working, and works new ones.
    for order in during:
        order.execute(tws, live=False)
        order.execute(tws, live=False)
    for order in cancelled:
        order.execute(tws, live=False)
        order.cancel(tws)
    for order in offline_only:
        order.place(tws)
        for _ in order.parts:
            order.execute(tws, live=False)
    tws.accepting = True
    await relay.connection.wait_connected(5)
    # Back: the rest finish live.
    for order in after:
        order.execute(tws, live=True)
        order.execute(tws, live=True)

    everything = orders + offline_only
    await all_sent(relay, sum(len(o.executed) for o in everything))
    async with grpc.aio.insecure_channel(service.address) as channel:

        async def states() -> list[tuple[int, str, str, str]]:
            got = []
            for order in everything:
                state = await order_status_of(channel, order.perm_id)
                got.append((order.perm_id, pb.OrderStatus.Name(state.status),
                            state.filled_quantity, state.quantity_mismatch))  # fmt: skip
            return got

        expected = [
            (o.perm_id, pb.OrderStatus.Name(_STATUSES[o.status]), str(o.filled), "0")
            for o in everything
        ]
        for _ in range(100):
            if await states() == expected:
                break
            await asyncio.sleep(0.1)
        wrong = [(got, want) for got, want in zip(await states(), expected, strict=True)
                 if got != want]  # fmt: skip
    assert not wrong, f"{len(wrong)} of {len(everything)} orders off their TWS state: {wrong}"
    assert relay.stats.rejected == 0


async def test_a_restarted_relay_brings_orders_done_meanwhile_to_their_state(
    tws: FakeTws, portfolio: AsyncPortfolioClient, service: ServerThread
) -> None:
    rng = random.Random(17)
    seen, unseen = new_orders(rng, 8, first=200), new_orders(rng, 4, first=300)
    first = new_relay(tws, portfolio)
    await first.start()
    await first.connection.wait_connected(5)
    for order in seen:
        order.place(tws)
        order.execute(tws, live=True)
    for order in seen[:4]:
        order.execute(tws, live=True)
        order.execute(tws, live=True)
    await all_sent(first, sum(len(o.executed) for o in seen))
    await eventually(lambda: first.stats.statuses_sent >= len(seen) + 8)
    await first.drained(8)
    await first.stop()
    # No relay runs: the working orders finish, others are placed and done.
    for order in seen[4:]:
        order.execute(tws, live=False)
        order.execute(tws, live=False)
    for order in unseen:
        order.place(tws)
        for _ in order.parts:
            order.execute(tws, live=False)

    second = new_relay(tws, portfolio)  # no memory of what the first one sent
    await second.start()
    try:
        everything = seen + unseen
        await eventually(lambda: second.stats.statuses_sent >= len(everything))
        await second.drained(8)
        assert second.stats.rejected == 0
    finally:
        await second.stop()
    async with grpc.aio.insecure_channel(service.address) as channel:
        for order in everything:
            state = await order_status_of(channel, order.perm_id)
            assert (state.status, state.filled_quantity, state.quantity_mismatch) == (
                pb.ORDER_STATUS_FILLED,
                str(order.filled),
                "0",
            ), order.perm_id
