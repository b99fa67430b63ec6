"""Derivatives missing from the contract map are defined from their execution's contract (or
TWS's contract details) before their first fill, never booked at multiplier 1 (issue 13 item 4):
the real ib_async client against the fake TWS and a real service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from ib_async import Contract

from client import AsyncPortfolioClient
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from relay.dead_letters import DeadLetters
from relay.instruments import (
    InstrumentUndefinable,
    ServiceInstruments,
    instrument_definition,
    needs_definition,
)
from relay.relay import ExecutionRelay
from tests.broker.fake_tws import FakeContract, FakeTws
from tests.broker.test_relay import ACCOUNT, all_sent, eventually, new_relay
from tests.conftest import ServerThread

pytestmark = pytest.mark.timeout(60)

# Not in the test contract map (its ES is conId 495512563).
ES_UNMAPPED = FakeContract(
    551601561, "ES", sec_type="FUT", last_trade_date="20261218", multiplier="50",
    exchange="CME", local_symbol="ESZ6", trading_class="ES",
)  # fmt: skip
AAPL_CALL = FakeContract(
    712345678, "AAPL", sec_type="OPT", last_trade_date="20261218", strike="150", right="C",
    local_symbol="AAPL  261218C00150000",
)  # fmt: skip
NQ_NO_MULTIPLIER = FakeContract(
    551601999, "NQ", sec_type="FUT", last_trade_date="20261218", exchange="CME"
)


@pytest.fixture
async def relay(
    tws: FakeTws, portfolio: AsyncPortfolioClient, service: ServerThread, tmp_path: Path
) -> AsyncIterator[ExecutionRelay]:
    instruments = ServiceInstruments(service.address)
    letters = DeadLetters(tmp_path / "dead.jsonl")
    relay = new_relay(tws, portfolio, instruments=instruments, dead_letters=letters)
    await relay.start()
    await relay.connection.wait_connected(5)
    try:
        yield relay
    finally:
        await relay.stop()
        await instruments.close()


async def stub_call(service: ServerThread, method: str, request: object) -> pb.Instrument:
    async with grpc.aio.insecure_channel(service.address) as channel:
        answer: pb.Instrument = await getattr(pb_grpc.PortfolioManagerStub(channel), method)(
            request
        )
        return answer


async def instrument(service: ServerThread, instrument_id: str) -> pb.Instrument:
    return await stub_call(
        service, "GetInstrument", pb.GetInstrumentRequest(instrument_id=instrument_id)
    )


def round_trip(tws: FakeTws, contract: FakeContract, stem: str, buy: str, sell: str,
               quantity: str = "1") -> None:  # fmt: skip
    tws.add_execution(ACCOUNT, contract, f"{stem}.01.01", "BOT", quantity, buy, commission="2.5",
                      time="20260102 15:30:00 UTC")  # fmt: skip
    tws.add_execution(ACCOUNT, contract, f"{stem}.02.01", "SLD", quantity, sell, commission="2.5",
                      time="20260102 15:31:00 UTC")  # fmt: skip


async def test_an_unmapped_future_is_booked_with_its_multiplier(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient, service: ServerThread
) -> None:
    round_trip(tws, ES_UNMAPPED, "0000e501", "5000", "5010")
    await all_sent(relay, 2)

    row = await portfolio.get_position(ACCOUNT, "551601561", strategy_id="UNASSIGNED")
    assert (row.quantity, row.realized_pnl, row.fees) == (0, Decimal(500), Decimal(5))
    defined = await instrument(service, "551601561")
    assert (defined.asset_class, defined.multiplier, defined.currency) == (
        pb.ASSET_CLASS_FUTURE, "50", "USD"
    )  # fmt: skip
    assert (defined.expiry, defined.symbol, defined.provisional) == ("2026-12-18", "ESZ6", False)
    # Defining it afterwards, as a user would, with its multiplier: nothing to refuse.
    again = pb.Instrument(instrument_id="551601561", currency="USD", multiplier="50",
                          asset_class=pb.ASSET_CLASS_FUTURE, expiry="2026-12")  # fmt: skip
    await stub_call(service, "DefineInstrument", pb.DefineInstrumentRequest(instrument=again))


async def test_an_option_without_a_multiplier_takes_it_from_the_contract_details(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient, service: ServerThread
) -> None:
    tws.add_contract_details(FakeContract(**{**AAPL_CALL.__dict__, "multiplier": "100"}))
    round_trip(tws, AAPL_CALL, "0000e502", "3.5", "4", quantity="2")
    await all_sent(relay, 2)

    row = await portfolio.get_position(ACCOUNT, "712345678", strategy_id="UNASSIGNED")
    assert (row.quantity, row.realized_pnl) == (0, Decimal(100))
    defined = await instrument(service, "712345678")
    assert (defined.asset_class, defined.multiplier, defined.strike, defined.right) == (
        pb.ASSET_CLASS_OPTION, "100", "150", pb.OPTION_RIGHT_CALL
    )  # fmt: skip
    assert (defined.underlying, defined.expiry) == ("AAPL", "2026-12-18")


async def test_a_future_whose_multiplier_is_nowhere_is_set_aside_not_booked_at_1(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient, tmp_path: Path
) -> None:
    round_trip(tws, NQ_NO_MULTIPLIER, "0000e503", "21000", "21010")
    await eventually(lambda: relay.stats.dead_lettered == 2)
    assert relay.stats.fills_sent == 0
    letters = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(x["kind"], x["code"]) for x in letters] == [("fill", "UNDEFINED_INSTRUMENT")] * 2
    assert "has no multiplier" in letters[0]["reason"]


async def test_a_definition_the_service_holds_is_left_as_it_is(
    tws: FakeTws, relay: ExecutionRelay, portfolio: AsyncPortfolioClient, service: ServerThread
) -> None:
    mine = pb.Instrument(instrument_id="551601561", currency="USD", multiplier="50",
                         asset_class=pb.ASSET_CLASS_FUTURE, expiry="2026-12-18",
                         symbol="ES DEC26", tick_size="0.25")  # fmt: skip
    await stub_call(service, "DefineInstrument", pb.DefineInstrumentRequest(instrument=mine))
    round_trip(tws, ES_UNMAPPED, "0000e504", "5000", "5001")
    await all_sent(relay, 2)
    row = await portfolio.get_position(ACCOUNT, "551601561", strategy_id="UNASSIGNED")
    assert row.realized_pnl == 50
    held = await instrument(service, "551601561")
    assert (held.symbol, held.tick_size) == ("ES DEC26", "0.25")


# ---------------------------------------------------------------------------------------------
# The pure mapping


def contract(**fields: object) -> Contract:
    return Contract(conId=1, currency="USD", **fields)  # type: ignore[arg-type]


def test_what_an_execution_says_an_instrument_is() -> None:
    assert not needs_definition(contract(secType="STK"))
    fx = instrument_definition(contract(secType="CASH", symbol="EUR"), "1", None)
    assert (fx.asset_class, fx.multiplier, fx.currency) == (pb.ASSET_CLASS_FX, "", "USD")
    month = instrument_definition(
        contract(secType="FUT", symbol="ES", lastTradeDateOrContractMonth="202612",
                 multiplier="50"), "1", Decimal(50))  # fmt: skip
    assert (month.asset_class, month.expiry, month.multiplier) == (
        pb.ASSET_CLASS_FUTURE, "2026-12", "50"
    )  # fmt: skip
    put = instrument_definition(
        contract(secType="FOP", symbol="ES", lastTradeDateOrContractMonth="20261218",
                 strike=5000.5, right="P"), "1", Decimal(50))  # fmt: skip
    assert (put.asset_class, put.strike, put.right, put.underlying) == (
        pb.ASSET_CLASS_OPTION, "5000.5", pb.OPTION_RIGHT_PUT, "ES"
    )  # fmt: skip
    # An option missing what the service requires of one still gets its multiplier.
    bare = instrument_definition(contract(secType="OPT", symbol="X"), "1", Decimal(100))
    assert (bare.asset_class, bare.multiplier) == (pb.ASSET_CLASS_UNSPECIFIED, "100")
    with pytest.raises(InstrumentUndefinable, match="has no multiplier"):
        instrument_definition(contract(secType="FUT", symbol="NQ"), "1", None)
