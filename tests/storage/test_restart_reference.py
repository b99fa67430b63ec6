"""Orders, instruments, accounts, balances, marks and FX rates survive a restart on LMDB,
from the journal alone and from a checkpoint."""

from __future__ import annotations

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks, pb_fill
from tests.api.test_reference_and_cash import define, fx, mark, status, stream_marks, transfer
from tests.conftest import start_test_server


def snapshot(stub: pb_grpc.PortfolioManagerStub) -> dict[str, object]:
    """Everything the issue names, as the API shows it."""
    return {
        "order": stub.GetOrder(pb.GetOrderRequest(account_id="P1", order_id="42")),
        "open": stub.ListOpenOrders(pb.ListOpenOrdersRequest(account_id="P1")),
        "balances": stub.GetBalances(pb.GetBalancesRequest(account_id="P1")),
        "summary": stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="P1")),
        "sap": stub.GetConsolidatedPosition(
            pb.GetConsolidatedPositionRequest(account_id="P1", instrument_id="SAP")
        ),
        "instruments": stub.ListInstruments(pb.ListInstrumentsRequest()),
        "accounts": stub.ListAccounts(pb.ListAccountsRequest()),
    }


@pytest.mark.parametrize("checkpoint_every", [3, 10_000], ids=["checkpoint", "journal"])
def test_an_order_half_way_through_its_life_survives_a_restart(tmp_path, checkpoint_every):
    store = f"lmdb://{tmp_path / 'store'}"
    server = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            stub.DefineAccount(pb.DefineAccountRequest(account=pb.Account(
                account_id="P1", kind=pb.ACCOUNT_KIND_PAPER, base_currency="USD",
                initial_cash="100000")))  # fmt: skip
            define(stub, "SAP", currency="EUR", asset_class=pb.ASSET_CLASS_EQUITY)
            acks(stub, transfer("t1", "6000", account="P1", currency="EUR"))
            stub.ReserveCash(pb.ReserveCashRequest(
                reservation_id="r42", account_id="P1", currency="EUR", amount="5000",
                order_id="42"))  # fmt: skip
            acks(
                stub,
                status("s1", "SUBMITTED", 1, account_id="P1", order_id="42",
                       remaining_quantity="40", instrument_id="SAP", strategy_id="S1"),
                pb_fill("BUY", 10, 100, account="P1", instrument="SAP", order_id="42"),
                status("s2", "PARTIALLY_FILLED", 2, account_id="P1", order_id="42",
                       filled_quantity="10", remaining_quantity="30"),
                status("s3", "PENDING_SUBMIT", 3, account_id="P1", order_id="42",
                       filled_quantity="10"),  # illegal
                pb_fill("SELL", 3, 50, account="P1", instrument="AAPL", strategy="S2"),
            )  # fmt: skip
            stream_marks(stub, pb.MarkBatch(marks=[mark("SAP", 9, mark="104")]))
            before = snapshot(stub)
            summary = before["summary"]
            assert list(summary.missing_fx_rates) == ["EUR"]  # no EUR/USD rate yet
            assert not summary.HasField("base_totals")
            assert before["order"].history[-1].flag.startswith("illegal")
            assert before["balances"].reservations[0].remaining == "4000"
    finally:
        server.stop()

    server = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            after = snapshot(stub)
            for name, message in before.items():
                assert after[name] == message, name
            # The order goes on where it stopped: filled, its reservation's rest released.
            acks(
                stub,
                pb_fill("BUY", 30, 100, account="P1", instrument="SAP", order_id="42"),
                status("s4", "FILLED", 4, account_id="P1", order_id="42",
                       filled_quantity="40"),
            )  # fmt: skip
            order = stub.GetOrder(pb.GetOrderRequest(account_id="P1", order_id="42"))
            assert (order.status, order.quantity_mismatch) == (pb.ORDER_STATUS_FILLED, "0")
            balances = stub.GetBalances(pb.GetBalancesRequest(account_id="P1"))
            assert [(b.currency, b.cash, b.reserved) for b in balances.balances] == [
                ("EUR", "2000", "0"), ("USD", "100150", "0"),
            ]  # fmt: skip
            stream_marks(stub, pb.MarkBatch(fx_rates=[fx("EUR", "USD", "1.2")]))
            summary = stub.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="P1"))
            assert list(summary.missing_fx_rates) == []
            # SAP 40 x 104 EUR x 1.2 = 4992 USD long; AAPL 3 x 50 USD short
            assert summary.base_totals.long_exposure == "4992"
            assert summary.base_totals.short_exposure == "150"
    finally:
        server.stop()
