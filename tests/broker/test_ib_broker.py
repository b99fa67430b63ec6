"""IbBroker and IbConnection against the real ib_async client talking to a fake TWS."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from server.application.ports import BrokerUnavailable
from server.broker.ib import AccountFigure, IbBroker, PortfolioRow
from server.broker.paper import PaperBroker
from server.domain.events import BrokerPosition
from tests.broker.fake_tws import FakeContract, FakeTws
from tws.connection import IbConnection, ReconnectPolicy
from tws.contracts import ContractMap, ContractMapError

pytestmark = pytest.mark.timeout(30)

# Distinct delays, so that the logs show which step of the back-off ran.
FAST = ReconnectPolicy(initial=0.1, factor=3.0, maximum=0.9)

AAPL = FakeContract(265598, "AAPL")
TSLA = FakeContract(76792991, "TSLA")
ES = FakeContract(
    495512563, "ES", sec_type="FUT", last_trade_date="20261218", multiplier="50", exchange="CME"
)


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws(accounts=("U123",))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


def connect_to(tws: FakeTws, **options) -> IbConnection:
    return IbConnection(tws.host, tws.port, 17, connect_timeout=2.0, reconnect=FAST, **options)


async def started(broker: IbBroker) -> IbBroker:
    await broker.start()
    await broker._connection.wait_connected(5)
    return broker


@pytest.fixture
async def broker(tws: FakeTws) -> AsyncIterator[IbBroker]:
    broker = IbBroker(connect_to(tws), request_timeout=2.0)
    try:
        yield await started(broker)
    finally:
        await broker.stop()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def by_instrument(positions: list[BrokerPosition]) -> dict[str, BrokerPosition]:
    return {p.instrument_id: p for p in positions}


def set_book(tws: FakeTws) -> None:
    tws.set_position("U123", AAPL, "100", "150.1")  # 150.1 is not a binary fraction
    tws.set_position("U123", ES, "-2", "250012.5")  # per contract: 5000.25 x 50
    tws.set_position("U123", TSLA, "0", "0")  # closed today: TWS still lists it
    tws.set_portfolio_item("U123", AAPL, "100", "151.37", "15137", "150.1", "127", "0")


# ---------------------------------------------------------------------------------------------
# Positions


async def test_positions_are_the_brokers_figures_exactly(tws: FakeTws) -> None:
    set_book(tws)
    broker = await started(IbBroker(connect_to(tws)))
    try:
        positions = await broker.positions("U123")
    finally:
        await broker.stop()

    assert by_instrument(positions) == {
        "265598": BrokerPosition(
            instrument_id="265598",
            quantity=Decimal("100"),
            avg_cost=Decimal("150.1"),
            market_price=Decimal("151.37"),
            currency="USD",
        ),
        "495512563": BrokerPosition(
            instrument_id="495512563",
            quantity=Decimal("-2"),
            avg_cost=Decimal("250012.5"),
            multiplier=Decimal("50"),
            currency="USD",
        ),
        "76792991": BrokerPosition(
            instrument_id="76792991", quantity=Decimal("0"), avg_cost=Decimal("0"), currency="USD"
        ),
    }
    # The decimal text TWS sent, not a binary float's expansion.
    assert str(by_instrument(positions)["265598"].avg_cost) == "150.1"


async def test_a_contract_map_file_names_the_instruments(tws: FakeTws, tmp_path) -> None:
    path = tmp_path / "contracts.json"
    path.write_text(json.dumps({"265598": "AAPL", "495512563": "ES-202612"}))
    set_book(tws)
    broker = await started(IbBroker(connect_to(tws), ContractMap.load(path)))
    try:
        positions = by_instrument(await broker.positions("U123"))
    finally:
        await broker.stop()

    assert sorted(positions) == ["76792991", "AAPL", "ES-202612"]  # unmapped: the conId
    assert positions["ES-202612"].avg_cost == Decimal("250012.5")
    assert positions["ES-202612"].multiplier == Decimal("50")


async def test_positions_are_read_fresh_and_per_account() -> None:
    tws = FakeTws(accounts=("U123", "U456"))
    await tws.start()
    broker = await started(IbBroker(connect_to(tws)))
    try:
        tws.set_position("U123", AAPL, "100", "150.1")
        tws.set_position("U456", AAPL, "7", "149")
        assert by_instrument(await broker.positions("U123"))["265598"].quantity == 100
        tws.set_position("U123", AAPL, "40", "150.1")
        assert [p.quantity for p in await broker.positions("U123")] == [Decimal(40)]
        assert [p.quantity for p in await broker.positions("U456")] == [Decimal(7)]
        assert await broker.positions("U999") == []
    finally:
        await broker.stop()
        await tws.stop()


async def test_portfolio_items_and_account_values(broker: IbBroker, tws: FakeTws) -> None:
    tws.set_portfolio_item("U123", ES, "-2", "5010.5", "-501050", "250012.5", "-976", "12.5")
    tws.set_account_value("U123", "NetLiquidation", "1000250.75", "USD")
    tws.set_account_value("U123", "AccountType", "INDIVIDUAL", "")
    await eventually(lambda: len(broker.account_values("U123")) == 1)
    await eventually(lambda: len(broker.portfolio_items("U123")) == 1)

    assert broker.account_values("U123") == [
        AccountFigure("NetLiquidation", Decimal("1000250.75"), "USD")
    ]
    assert broker.portfolio_items("U123") == [
        PortfolioRow(
            instrument_id="495512563",
            quantity=Decimal(-2),
            market_price=Decimal("5010.5"),
            market_value=Decimal(-501050),
            avg_cost=Decimal("250012.5"),
            unrealized_pnl=Decimal(-976),
            realized_pnl=Decimal("12.5"),
            multiplier=Decimal(50),
        )
    ]


async def test_unavailable_while_not_connected(tws: FakeTws) -> None:
    broker = IbBroker(connect_to(tws))
    with pytest.raises(BrokerUnavailable, match="not connected"):
        await broker.positions("U123")
    await started(broker)
    try:
        tws.accepting = False
        await tws.drop_clients()
        await broker._connection.wait_disconnected(5)
        assert not broker.connected
        with pytest.raises(BrokerUnavailable, match=r"ib 127\.0\.0\.1:\d+ client 17: not conn"):
            await broker.positions("U123")
    finally:
        await broker.stop()


async def test_unavailable_when_tws_does_not_answer(
    broker: IbBroker, tws: FakeTws, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake answers every reqPositions; silence it (the one private hook this test needs).
    monkeypatch.setitem(tws._handlers, 61, lambda session, args: None)
    broker._timeout = 0.3
    with pytest.raises(BrokerUnavailable, match="no answer to the positions request"):
        await broker.positions("U123")
    monkeypatch.undo()
    assert await broker.positions("U123") == []  # the next request is answered again


async def test_paper_broker_reports_the_book() -> None:
    book = {
        "PAPER-1": [
            BrokerPosition(instrument_id="AAPL", quantity=Decimal(5), avg_cost=Decimal("10.5"))
        ]
    }
    paper = PaperBroker(lambda account: book.get(account, []))
    await paper.start()
    assert (paper.name, paper.connected) == ("paper", True)
    assert await paper.positions("PAPER-1") == book["PAPER-1"]
    assert await paper.positions("OTHER") == []
    await paper.stop()


# ---------------------------------------------------------------------------------------------
# Contract map


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"26559x": "AAPL"}', "entry '26559x': conId must be a positive integer"),
        ('{"0": "AAPL"}', "entry '0': conId must be a positive integer"),
        ('{"265598": ""}', "entry '265598': instrument id must be a non-empty string"),
        ('{"265598": 7}', "entry '265598': instrument id must be a non-empty string"),
        ('{"1": "AAPL", "2": "AAPL"}', "entry '2': instrument id 'AAPL' is already conId 1's"),
        ('{"1": ', "contracts.json: Expecting value"),
    ],
)
def test_contract_map_errors_name_the_file_and_entry(tmp_path, document, message) -> None:
    path = tmp_path / "contracts.json"
    path.write_text(document)
    with pytest.raises(ContractMapError, match=re.escape(message)) as raised:
        ContractMap.load(path)
    assert str(path) in str(raised.value)


def test_contract_map_missing_file(tmp_path) -> None:
    with pytest.raises(ContractMapError, match=r"nope\.json"):
        ContractMap.load(tmp_path / "nope.json")


# ---------------------------------------------------------------------------------------------
# Connection


def test_reconnect_policy_doubles_up_to_its_maximum() -> None:
    policy = ReconnectPolicy()
    assert [policy.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    with pytest.raises(ValueError, match="invalid reconnect policy"):
        ReconnectPolicy(initial=2, maximum=1)


def _delays(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    pattern = re.compile(re.escape(text) + r".* in (\d+\.\d) s")
    return [m.group(1) for r in caplog.records if (m := pattern.search(r.getMessage()))]


async def test_reconnects_after_a_drop_and_reports_each_transition(
    tws: FakeTws, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portfolio.broker.ib")
    states: list[bool] = []
    set_book(tws)
    broker = await started(IbBroker(connect_to(tws, on_state=states.append)))
    try:
        await tws.drop_clients()
        await eventually(lambda: states == [True, False, True])
        assert tws.connections == 2
        assert len(await broker.positions("U123")) == 3
    finally:
        await broker.stop()
    assert states == [True, False, True, False]
    assert _delays(caplog, "ib connection lost; reconnecting") == ["0.1"]
    connected = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connected")]
    assert connected == [f"connected to ib 127.0.0.1:{tws.port} as client 17 (accounts U123)"] * 2


async def test_keeps_retrying_with_back_off_while_refused(
    tws: FakeTws, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="portfolio.broker.ib")
    states: list[bool] = []
    connection = connect_to(tws, on_state=states.append)
    await connection.start()
    try:
        await connection.wait_connected(5)
        tws.accepting = False
        await tws.drop_clients()
        await eventually(lambda: len(_delays(caplog, "ib connect failed")) >= 3)
        assert not connection.connected
        tws.accepting = True
        await connection.wait_connected(5)
        assert states == [True, False, True]
        failed = _delays(caplog, "ib connect failed")
        assert failed[:3] == ["0.3", "0.9", "0.9"]  # after the drop's 0.1: x3, capped at 0.9
        assert "closed by the peer before the API was ready" in caplog.text

        # A successful connect resets the back-off: the next loss waits the initial delay.
        await tws.drop_clients()
        await eventually(lambda: states == [True, False, True, False, True])
        assert _delays(caplog, "ib connection lost; reconnecting") == ["0.1", "0.1"]
    finally:
        await connection.stop()


async def test_a_connect_attempt_times_out() -> None:
    """A peer that accepts and never answers (a hung gateway) costs one time-out per try."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    failures: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("ib connect failed"):
                failures.append(record.getMessage())

    handler = Collect()
    logging.getLogger("portfolio.broker.ib").addHandler(handler)
    connection = IbConnection("127.0.0.1", port, 17, connect_timeout=0.2, reconnect=FAST)
    try:
        await connection.start()
        await eventually(lambda: len(failures) >= 2)
        assert failures[0].startswith("ib connect failed: TimeoutError")
    finally:
        logging.getLogger("portfolio.broker.ib").removeHandler(handler)
        await connection.stop()
        server.close()
        await server.wait_closed()


# Where the reconciler's tasks run from: its adapter, the shared TWS link, and ib_async.
OUR_CODE = ("server/broker/", "/tws/", "ib_async")


def _our_tasks() -> list[asyncio.Task[object]]:
    current = asyncio.current_task()
    found = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if task is not current and any(part in filename for part in OUR_CODE):
            found.append(task)
    return found


async def test_stop_leaves_no_tasks(tws: FakeTws) -> None:
    connection = connect_to(tws)
    await connection.start()
    await connection.wait_connected(5)
    await connection.stop()
    await connection.stop()  # twice is harmless
    assert not connection.connected
    assert _our_tasks() == []

    # Stopping while it is still trying to connect.
    tws.accepting = False
    connection = connect_to(tws)
    await connection.start()
    await asyncio.sleep(0.15)
    await connection.stop()
    assert _our_tasks() == []
