"""Through the gRPC API: a commission reported after its fill amends it (fees and cash, nothing
else), also across a restart on LMDB; and every rejection carries a machine-readable code beside
its reason, so that a relay never has to parse English."""

from __future__ import annotations

import arcticdb as adb
import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import BASE_SECONDS, acks, pb_fill
from tests.conftest import start_test_server


def pb_amendment(
    fill_id: str, commission: str, currency: str = "", *, amendment_id: str = ""
) -> pb.ExecutionEvent:
    message = pb.CommissionAmendment(
        amendment_id=amendment_id or f"{fill_id}/commission",
        account_id="A1",
        fill_id=fill_id,
        commission=commission,
        commission_currency=currency,
    )
    message.timestamp.FromSeconds(BASE_SECONDS + 3600)
    return pb.ExecutionEvent(commission=message)


def figures(stub: pb_grpc.PortfolioManagerStub) -> tuple[object, ...]:
    rows = []
    for strategy in ("S1", ""):
        row = stub.GetPosition(
            pb.GetPositionRequest(account_id="A1", instrument_id="AAPL", strategy_id=strategy)
        )
        rows.append((row.quantity, row.avg_cost, row.realized_pnl, row.fees))
    balances = stub.GetBalances(pb.GetBalancesRequest(account_id="A1"))
    return tuple(rows), {b.currency: b.cash for b in balances.balances}


def test_a_late_commission_amends_fees_and_cash_only(stub):
    bought, sold = acks(
        stub, pb_fill("BUY", 100, 10, fill_id="x.01"), pb_fill("SELL", 40, 12, fill_id="y.01")
    )
    assert bought.result == sold.result == pb.EVENT_RESULT_ACCEPTED
    before = figures(stub)
    (amended,) = acks(stub, pb_amendment("x.01", "1.25"))
    assert amended.result == pb.EVENT_RESULT_ACCEPTED
    assert amended.event_id == "x.01/commission" and amended.sequence == sold.sequence + 1
    assert amended.code == pb.REJECT_CODE_UNSPECIFIED
    rows, cash = figures(stub)
    assert [r[:3] for r in rows] == [r[:3] for r in before[0]]  # quantity, avg, realized
    assert [r[3] for r in rows] == ["1.25", "1.25"]
    assert cash == {"USD": "-521.25"}  # -1000 + 480 - 1.25
    (again,) = acks(stub, pb_amendment("x.01", "1.25"))
    assert again.result == pb.EVENT_RESULT_DUPLICATE and again.sequence == amended.sequence


def test_each_rejection_says_why_for_programs(tmp_path):
    server = start_test_server(strict_instruments=True)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            stub.DefineInstrument(
                pb.DefineInstrumentRequest(
                    instrument=pb.Instrument(
                        instrument_id="AAPL", asset_class=pb.ASSET_CLASS_EQUITY, currency="USD"
                    )
                ),
                timeout=5,
            )
            (fill,) = acks(stub, pb_fill("BUY", 1, 10, fill_id="x.01"))
            assert fill.result == pb.EVENT_RESULT_ACCEPTED
            results = acks(
                stub,
                pb_fill("BUY", 0, 10, fill_id="bad.01"),  # quantity must be > 0
                pb_fill("BUY", 2, 10, fill_id="x.01"),  # the id, another content
                pb_amendment("nope.01", "1"),  # no such fill
                pb_fill("BUY", 1, 10, fill_id="z.01", instrument="MSFT"),  # not defined
                pb_fill("BUY", 1, 10, fill_id="z.02", corrects="gone.01"),  # nothing to correct
                pb_amendment("x.01", "nan"),  # not a decimal
            )
            codes = [(a.result, a.code) for a in results]
            assert codes == [
                (pb.EVENT_RESULT_REJECTED, pb.REJECT_CODE_INVALID_FIELD),
                (pb.EVENT_RESULT_REJECTED, pb.REJECT_CODE_ID_REUSED),
                (pb.EVENT_RESULT_REJECTED, pb.REJECT_CODE_NOT_FOUND),
                (pb.EVENT_RESULT_REJECTED, pb.REJECT_CODE_FAILED_PRECONDITION),
                (pb.EVENT_RESULT_REJECTED, pb.REJECT_CODE_NOT_FOUND),
                (pb.EVENT_RESULT_REJECTED, pb.REJECT_CODE_INVALID_FIELD),
            ]
            assert "quantity" in results[0].reason and "commission" in results[5].reason
            assert all(a.sequence == 0 for a in results)
    finally:
        server.stop()


def test_an_amendment_a_later_fill_of_its_batch_moves_out_of_the_window_is_rejected(stub):
    """Fill `old`, fill `new` three days later, an amendment of `old`, in one batch: `new`
    books first and moves the correction window (1 day) past `old`, so the amendment is
    rejected in its ack, as in a later batch, not acked and then refused when booked."""
    old = pb_fill("BUY", 1, 10, fill_id="old.01")
    new = pb_fill("BUY", 1, 10, fill_id="new.01")
    new.fill.timestamp.FromSeconds(old.fill.timestamp.seconds + 3 * 86_400)
    late = pb_amendment("old.01", "1")
    late.commission.timestamp.CopyFrom(new.fill.timestamp)
    results = acks(stub, old, new, late)
    assert [a.result for a in results[:2]] == [pb.EVENT_RESULT_ACCEPTED] * 2
    assert (results[2].result, results[2].code, results[2].sequence) == (
        pb.EVENT_RESULT_REJECTED,
        pb.REJECT_CODE_NOT_FOUND,
        0,
    )
    assert "old.01" in results[2].reason and "correction window" in results[2].reason
    _, cash = figures(stub)
    assert cash == {"USD": "-20"}


@pytest.mark.parametrize("checkpoint_every", [1, 10_000], ids=["checkpoint", "journal"])
def test_an_amended_fill_stays_amended_after_a_restart(tmp_path, checkpoint_every):
    """And a late fill after the restart restates the row with the amended commission kept."""
    store = f"lmdb://{tmp_path / 'store'}"

    def fill_at(seconds: int, side: str, quantity: int, price: int, fill_id: str):
        event = pb_fill(side, quantity, price, fill_id=fill_id)
        event.fill.timestamp.FromSeconds(BASE_SECONDS + seconds)
        return event

    server = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, fill_at(10, "BUY", 10, 100, "a"), fill_at(30, "SELL", 10, 95, "b"))
            acks(stub, pb_amendment("a", "4"), fill_at(40, "BUY", 5, 96, "c"))
            before = figures(stub)
    finally:
        server.stop()
    server = start_test_server(store=store, checkpoint_every=checkpoint_every)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            assert figures(stub) == before
            (resent,) = acks(stub, pb_amendment("a", "4"))
            assert resent.result == pb.EVENT_RESULT_DUPLICATE
            (late,) = acks(stub, fill_at(20, "BUY", 10, 80, "late"))
            assert late.placement == pb.BOOKING_PLACEMENT_RESTATED
            rows, cash = figures(stub)
    finally:
        server.stop()
    # 10 @100, 10 @80 (avg 90), sold 10 @95 (realized 50), 5 @96: 15 at basis 1380 (avg 92)
    assert rows[0] == ("15", "92", "50", "4")
    assert cash == {"USD": str(-1000 + 950 - 480 - 800 - 4)}
    commissions = adb.Arctic(store).get_library("commissions").read("A1").data
    assert list(commissions.amendment_id) == ["a/commission"]  # once, whatever was resent
    assert (commissions.fill_id.iloc[0], commissions.commission_exact.iloc[0]) == ("a", "4")
