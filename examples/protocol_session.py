"""A session on the raw protocol, with the stubs generated from protos/ (what another
language's generated client does): a paper account reporting in EUR, a USD future, a deposit, a
reservation for an order, the order's statuses and its fill, a quote and EUR/USD, then the
reads. Run it against a fresh service (`scripts/serve --store mem://`) with `.venv/bin/python`,
where the `portfolio.v1` package is installed; PORTFOLIO_SERVICE names another address."""

import os

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc

SERVICE = os.environ.get("PORTFOLIO_SERVICE", "127.0.0.1:50051")
T0 = 1767364200  # 2026-01-02T14:30:00Z


def at(seconds: int) -> Timestamp:
    return Timestamp(seconds=T0 + seconds)


with grpc.insecure_channel(SERVICE) as channel:
    pm = portfolio_pb2_grpc.PortfolioManagerStub(channel)

    # Reference data: a paper account reporting in EUR, and a USD future.
    pm.DefineAccount(
        pb.DefineAccountRequest(
            account=pb.Account(
                account_id="PAPER-1",
                kind=pb.ACCOUNT_KIND_PAPER,
                base_currency="EUR",
                initial_cash="100000",
            )
        )
    )
    pm.DefineInstrument(
        pb.DefineInstrumentRequest(
            instrument=pb.Instrument(
                instrument_id="MES-202612",
                symbol="MES",
                asset_class=pb.ASSET_CLASS_FUTURE,
                currency="USD",
                multiplier="5",
                tick_size="0.25",
                underlying="SPX",
                expiry="2026-12",
            )
        )
    )

    def ingest(*events: pb.ExecutionEvent) -> list[pb.EventAck]:
        (response,) = pm.Ingest(iter([pb.IngestRequest(batch_id="b", events=events)]))
        return list(response.acks)

    # Cash in, then a reservation for the order about to be sent.
    ingest(
        pb.ExecutionEvent(
            transfer=pb.CashTransfer(
                transfer_id="dep-1",
                account_id="PAPER-1",
                currency="USD",
                amount="100000",
                timestamp=at(0),
                note="USD funding",
            )
        )
    )
    reservation = pm.ReserveCash(
        pb.ReserveCashRequest(
            reservation_id="res-1001",
            account_id="PAPER-1",
            currency="USD",
            amount="60010",
            strategy_id="momo",
            order_id="1001",
        )
    )
    print(reservation.remaining, pb.ReservationStatus.Name(reservation.status))

    # The relay's events: the order is working, it fills, the broker says it is done.
    acks = ingest(
        pb.ExecutionEvent(
            status=pb.OrderStatusUpdate(
                update_id="st-1",
                account_id="PAPER-1",
                strategy_id="momo",
                order_id="1001",
                order_ref="momo-7",
                instrument_id="MES-202612",
                side=pb.SIDE_BUY,
                status=pb.ORDER_STATUS_SUBMITTED,
                remaining_quantity="2",
                timestamp=at(1),
            )
        ),
        pb.ExecutionEvent(
            fill=pb.Fill(
                fill_id="ex-1",
                account_id="PAPER-1",
                strategy_id="momo",
                instrument_id="MES-202612",
                side=pb.SIDE_BUY,
                quantity="2",
                price="6000",
                commission="2.5",
                commission_currency="USD",
                order_id="1001",
                order_ref="momo-7",
                timestamp=at(2),
            )
        ),
        pb.ExecutionEvent(
            status=pb.OrderStatusUpdate(
                update_id="st-2",
                account_id="PAPER-1",
                order_id="1001",
                status=pb.ORDER_STATUS_FILLED,
                filled_quantity="2",
                remaining_quantity="0",
                avg_fill_price="6000",
                timestamp=at(3),
            )
        ),
    )
    print([(a.event_id, pb.EventResult.Name(a.result)) for a in acks])

    # Market data: a quote (valued at its mid) and EUR/USD.
    (mark_ack,) = pm.StreamMarks(
        iter(
            [
                pb.MarkBatch(
                    batch_id="m1",
                    marks=[
                        pb.MarkPrice(
                            instrument_id="MES-202612", bid="6010", ask="6011", timestamp=at(4)
                        )
                    ],
                    fx_rates=[
                        pb.FxRate(
                            base_currency="EUR", quote_currency="USD", rate="1.08", timestamp=at(4)
                        )
                    ],
                )
            ]
        )
    )
    print(mark_ack.marks_applied, mark_ack.fx_rates_applied)

    order = pm.GetOrder(pb.GetOrderRequest(account_id="PAPER-1", order_id="1001"))
    print(
        order.order_key,
        pb.OrderStatus.Name(order.status),
        order.booked_quantity,
        order.quantity_mismatch,
        [t.flag or "ok" for t in order.history],
    )

    for balance in pm.GetBalances(pb.GetBalancesRequest(account_id="PAPER-1")).balances:
        print(balance.currency, balance.cash, balance.reserved, balance.available)

    summary = pm.GetPortfolioSummary(pb.GetPortfolioSummaryRequest(account_id="PAPER-1"))
    print(
        summary.base_currency,
        summary.account_totals.net_pnl,
        summary.base_totals.net_pnl,
        list(summary.missing_fx_rates),
    )

    book = pm.GetConsolidatedPosition(
        pb.GetConsolidatedPositionRequest(account_id="PAPER-1", instrument_id="MES-202612")
    )
    row = book.account_position
    print(
        row.quantity,
        row.market_price,
        pb.MarkSource.Name(row.mark_source),
        row.unrealized_pnl,
        row.fx_rate,
        row.net_pnl_base,
        book.unattributed_quantity,
    )
