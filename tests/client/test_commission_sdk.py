"""The SDK sends a late commission as a `CommissionAmendment` and reads why an event was
rejected from `EventAck.code`, against the real service."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from client import (
    CommissionAmendment,
    EventResult,
    Fill,
    PortfolioClient,
    RejectCode,
    Side,
)

AT = datetime(2026, 1, 2, 15, 30, tzinfo=UTC)


def test_a_late_commission_and_reject_codes_through_the_sdk(server_address: str) -> None:
    bare = Fill(
        fill_id="x.01", account_id="A1", strategy_id="S1", instrument_id="AAPL",
        side=Side.BUY, quantity=Decimal(10), price=Decimal("10.5"), timestamp=AT,
    )  # fmt: skip
    amendment = CommissionAmendment(
        amendment_id="x.01/commission", account_id="A1", fill_id="x.01",
        commission=Decimal("0.35"), commission_currency="USD", timestamp=AT,
    )  # fmt: skip
    unknown = CommissionAmendment(
        amendment_id="y.01/commission", account_id="A1", fill_id="y.01",
        commission=Decimal(1), timestamp=AT,
    )  # fmt: skip
    with PortfolioClient(server_address) as client:
        (fill_ack,) = client.ingest([bare])
        acks = client.ingest([amendment, unknown])
        assert [(a.event_id, a.result, a.code) for a in [fill_ack, *acks]] == [
            ("x.01", EventResult.ACCEPTED, RejectCode.UNSPECIFIED),
            ("x.01/commission", EventResult.ACCEPTED, RejectCode.UNSPECIFIED),
            ("y.01/commission", EventResult.REJECTED, RejectCode.NOT_FOUND),
        ]
        position = client.get_position("A1", "AAPL", strategy_id="S1")
        assert (position.quantity, position.avg_cost, position.fees) == (
            Decimal(10),
            Decimal("10.5"),
            Decimal("0.35"),
        )
        # No close yet: the trading day started at inception.
        assert (position.day_fees, position.day_net_pnl) == (Decimal("0.35"), Decimal("-0.35"))
