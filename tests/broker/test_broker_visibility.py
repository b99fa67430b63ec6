"""Saying when blind (issue 13, item 7): IB errors 1100 / 2110 until 1101 / 1102, a TWS that
hangs with its socket open, and a relay that is not TWS's master client. The real ib_async
client against the fake TWS; a real service (and relay) on loopback ports."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import AsyncPortfolioClient
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from relay.health import RelayHealth
from relay.relay import ExecutionRelay
from server.application.ports import BrokerUnavailable
from server.broker.ib import IbBroker
from tests.broker.fake_tws import FakeContract, FakeTws
from tests.broker.test_relay import new_relay
from tests.conftest import ServerThread, start_test_server
from tws.connection import IbConnection, ReconnectPolicy
from tws.contracts import ContractMap

pytestmark = pytest.mark.timeout(60)

AAPL = FakeContract(265598, "AAPL")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.UNKNOWN
FAST = ReconnectPolicy(initial=0.05, maximum=0.2)
LOST = "Connectivity between IB and Trader Workstation has been lost."
RESTORED = "Connectivity between IB and Trader Workstation has been restored - data maintained."


async def eventually(condition: Callable[[], bool], timeout: float = 8.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def health_of(channel: grpc.aio.Channel, name: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    return int(answer.status)


async def wait_health(channel: grpc.aio.Channel, name: str, status: int) -> None:
    async with asyncio.timeout(10):
        while await health_of(channel, name) != status:
            await asyncio.sleep(0.05)


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws(accounts=("U123",))
    await fake.start()
    try:
        yield fake
    finally:
        fake.answering = True
        await fake.stop()


# ---------------------------------------------------------------------------------------------
# The service's broker adapter


@dataclass
class Rig:
    tws: FakeTws
    server: ServerThread
    channel: grpc.aio.Channel

    @property
    def pm(self) -> pb_grpc.PortfolioManagerStub:
        return pb_grpc.PortfolioManagerStub(self.channel)

    async def reconcile(self) -> pb.Reconciliation:
        return await self.pm.Reconcile(pb.ReconcileRequest(account_id="U123"), timeout=10)

    async def refused(self) -> str:
        """Reconcile, which must fail UNAVAILABLE: its details."""
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await self.reconcile()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        return refused.value.details() or ""


@asynccontextmanager
async def service_rig(tws: FakeTws, tmp_path: Path, **heartbeat: float) -> AsyncIterator[Rig]:
    contract_map = tmp_path / "contracts.json"
    contract_map.write_text(json.dumps({"265598": "AAPL"}))
    connection = IbConnection(
        "127.0.0.1", tws.port, 91, readonly=True, connect_timeout=2, reconnect=FAST, **heartbeat
    )
    broker = IbBroker(connection, ContractMap.load(contract_map), request_timeout=3)
    server = start_test_server(broker=broker, reconcile_seconds=0)
    channel = grpc.aio.insecure_channel(server.address)
    try:
        running = Rig(tws, server, channel)
        await wait_health(channel, "broker", SERVING)
        fill = pb.Fill(
            fill_id="f-1", account_id="U123", strategy_id="S1", instrument_id="AAPL",
            side=pb.SIDE_BUY, quantity="10", price="150",
            timestamp=Timestamp(seconds=1_767_364_200),
        )  # fmt: skip
        request = pb.IngestRequest(batch_id="b", events=[pb.ExecutionEvent(fill=fill)])
        async for response in running.pm.Ingest(iter([request])):
            assert [ack.result for ack in response.acks] == [pb.EVENT_RESULT_ACCEPTED]
        tws.set_position("U123", AAPL, "10", "150")
        yield running
    finally:
        await channel.close()
        await asyncio.to_thread(server.stop)


@pytest.mark.parametrize(("lost", "restored"), [(1100, 1102), (2110, 1101)])
async def test_blind_until_restored(tws: FakeTws, tmp_path: Path, lost: int, restored: int) -> None:
    async with service_rig(tws, tmp_path) as live:
        assert (await live.reconcile()).clean
        tws.send_error(-1, lost, LOST)
        await wait_health(live.channel, "broker", NOT_SERVING)
        details = await live.refused()
        assert f"blind since IB error {lost}" in details, details
        tws.send_error(-1, restored, RESTORED)
        await wait_health(live.channel, "broker", SERVING)
        assert (await live.reconcile()).clean


async def test_a_hung_tws_is_noticed_by_the_heartbeat(tws: FakeTws, tmp_path: Path) -> None:
    async with service_rig(tws, tmp_path, heartbeat_seconds=0.2, heartbeat_timeout=0.3) as live:
        tws.answering = False  # the socket stays open; nothing is answered
        await wait_health(live.channel, "broker", NOT_SERVING)
        assert "hung" in await live.refused()
        tws.resume()
        await wait_health(live.channel, "broker", SERVING)
        assert (await live.reconcile()).clean


async def test_positions_from_before_a_restore_are_refused(tws: FakeTws) -> None:
    connection = IbConnection(
        "127.0.0.1", tws.port, 92, readonly=True, connect_timeout=2, reconnect=FAST,
        heartbeat_seconds=0,
    )  # fmt: skip
    broker = IbBroker(connection, request_timeout=5)
    tws.set_position("U123", AAPL, "10", "150")
    await broker.start()
    try:
        await connection.wait_connected(5)
        assert len(await broker.positions("U123")) == 1
        tws.answering = False
        asked = asyncio.create_task(broker.positions("U123"))
        await tws.wait_for_request(61, count=3)  # the connect's, the first call's, this one's
        tws.send_error(-1, 1100, LOST)  # blind while the answer is on its way ...
        tws.send_error(-1, 1102, RESTORED)
        await eventually(lambda: connection.seeing)
        tws.resume()  # ... and the answer comes after the restore
        with pytest.raises(BrokerUnavailable, match="before the link last changed"):
            await asked
        assert len(await broker.positions("U123")) == 1  # a fresh one is fine
    finally:
        await broker.stop()


async def test_connectivity_changes_are_logged_once_each(
    tws: FakeTws, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portfolio.broker.ib")
    states: list[bool] = []
    connection = IbConnection("127.0.0.1", tws.port, 93, connect_timeout=2, reconnect=FAST,
                              on_state=states.append, heartbeat_seconds=0)  # fmt: skip
    await connection.start()
    try:
        await connection.wait_connected(5)
        tws.send_error(-1, 1100, LOST)
        tws.send_error(-1, 1100, LOST)  # TWS may repeat it: still one change
        await eventually(lambda: states == [True, False])
        assert connection.connected and connection.blind and not connection.seeing
        tws.send_error(-1, 1102, RESTORED)
        await eventually(lambda: states == [True, False, True])
    finally:
        await connection.stop()
    lines = [r.getMessage() for r in caplog.records if " is blind" in r.getMessage()]
    assert len(lines) == 1 and "error 1100" in lines[0]
    assert sum(" sees again" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------------------------------------
# The relay: master client, and its health surface


@pytest.fixture
async def portfolio() -> AsyncIterator[AsyncPortfolioClient]:
    running = await asyncio.to_thread(start_test_server)
    try:
        async with AsyncPortfolioClient(running.address) as client:
            yield client
    finally:
        await asyncio.to_thread(running.stop)


@asynccontextmanager
async def watched_relay(
    tws: FakeTws, portfolio: AsyncPortfolioClient, **options: float
) -> AsyncIterator[tuple[ExecutionRelay, grpc.aio.Channel]]:
    relay = new_relay(tws, portfolio, **options)
    health = RelayHealth(relay, 0, period=0.05)
    await health.start()
    await relay.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{health.port}")
    try:
        await relay.connection.wait_connected(5)
        yield relay, channel
    finally:
        await channel.close()
        await relay.stop()
        await health.stop()


def another_clients_filled_order(tws: FakeTws) -> None:
    """An order of strategy client 3, 10 of 100 filled: TWS lists it to everyone."""
    tws.add_order("U123", 5, 8101, 3, AAPL, "BUY", "100", "momo")
    tws.add_execution("U123", AAPL, "00008101.01.01", "BOT", "10", "150", order_id=5,
                      perm_id=8101, client_id=3, order_ref="momo", commission="1")  # fmt: skip
    tws.set_order_status(8101, "Submitted", "10", "90", "150", "150")


async def test_a_relay_that_is_not_the_master_client_says_so(
    tws: FakeTws, portfolio: AsyncPortfolioClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portfolio.relay")
    tws.master_client_id = 0  # TWS's setting names another client than the relay's 900
    another_clients_filled_order(tws)
    async with watched_relay(tws, portfolio) as (relay, health):
        await wait_health(health, "visibility", NOT_SERVING)
        assert await health_of(health, "tws") == SERVING
        assert await health_of(health, "dead_letters") == SERVING
        warning = [
            r.getMessage()
            for r in caplog.records
            if r.name == "portfolio.relay" and "master API client" in r.getMessage()
        ]
        assert len(warning) == 1, warning
        assert "permId 8101" in warning[0] and "Master API client ID to 900" in warning[0]
        assert relay.stats.fills_sent == 0  # the fill it cannot see


async def test_the_master_client_sees_other_clients_fills(
    tws: FakeTws, portfolio: AsyncPortfolioClient
) -> None:
    tws.master_client_id = 900
    another_clients_filled_order(tws)
    async with watched_relay(tws, portfolio) as (relay, health):
        await wait_health(health, "visibility", SERVING)
        await eventually(lambda: relay.stats.accepted >= 1)
    row = await portfolio.get_position("U123", "AAPL", strategy_id="momo")
    assert row.quantity == 10


async def test_the_relay_health_follows_blindness_and_dead_letters(
    tws: FakeTws, portfolio: AsyncPortfolioClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portfolio.relay.health")
    async with watched_relay(tws, portfolio) as (relay, health):
        await wait_health(health, "tws", SERVING)
        await wait_health(health, "visibility", SERVING)  # nothing TWS lists is unseen
        assert await health_of(health, "") == SERVING
        tws.send_error(-1, 1100, LOST)
        await wait_health(health, "tws", NOT_SERVING)
        tws.send_error(-1, 1102, RESTORED)
        await wait_health(health, "tws", SERVING)
        relay.stats.dead_lettered += 1  # an event set aside
        await wait_health(health, "dead_letters", NOT_SERVING)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("health tws")]
    assert lines[:4] == [  # one line per change (and one more if it saw the relay stop)
        "health tws: NOT_SERVING (not connected)",
        "health tws: SERVING (connected and seeing)",
        f"health tws: NOT_SERVING (blind since IB error 1100: {LOST})",
        "health tws: SERVING (connected and seeing)",
    ], lines


async def test_the_relay_catches_up_after_a_restore(
    tws: FakeTws, portfolio: AsyncPortfolioClient
) -> None:
    tws.add_order("U123", 6, 8201, 3, AAPL, "BUY", "10", "momo")
    # No sweep: only the restore's catch-up can find what happened while TWS was blind.
    async with watched_relay(tws, portfolio, sweep_seconds=3600) as (relay, health):
        await wait_health(health, "tws", SERVING)
        tws.send_error(-1, 1100, LOST)
        await wait_health(health, "tws", NOT_SERVING)
        # While TWS is blind, the order fills; nothing is pushed.
        tws.add_execution("U123", AAPL, "00008201.01.01", "BOT", "10", "150", order_id=6,
                          perm_id=8201, client_id=3, order_ref="momo", commission="1",
                          live=False)  # fmt: skip
        tws.set_order_status(8201, "Filled", "10", "0", "150", "150")
        requests = len(tws.requests_of(99))
        tws.send_error(-1, 1101, "Connectivity restored - data lost.")
        await tws.wait_for_request(99, count=requests + 1)  # the restore's completed orders
        await eventually(lambda: relay.stats.fills_sent >= 1)
        await relay.drained(8)
    row = await portfolio.get_position("U123", "AAPL", strategy_id="momo")
    assert row.quantity == 10
