"""Five minutes with the Python SDK: book five fills, read the position and the account's
totals, then replay the last updates. Run it against a fresh service (`scripts/serve --store
mem://`); PORTFOLIO_SERVICE names another address."""

import os
from datetime import UTC, datetime
from decimal import Decimal

from client import Fill, PortfolioClient, Side

SERVICE = os.environ.get("PORTFOLIO_SERVICE", "127.0.0.1:50051")

now = datetime.now(UTC)
fills = [
    Fill(
        fill_id=f"momo-{i}",
        account_id="U123",
        strategy_id="momo",
        instrument_id="AAPL",
        side=side,
        quantity=Decimal(quantity),
        price=Decimal(price),
        commission=Decimal("0.01") * quantity,  # 0.01 a share
        timestamp=now,
    )
    for i, (side, quantity, price) in enumerate(
        [
            (Side.BUY, 100, "10"),
            (Side.BUY, 50, "12"),
            (Side.SELL, 120, "11"),
            (Side.SELL, 60, "9"),
            (Side.BUY, 30, "8"),
        ]
    )
]

with PortfolioClient(SERVICE) as pm:
    # Each fill is acked once durable, with its sequence number; resending is harmless.
    acks = pm.ingest(fills)
    print([(ack.result.name, ack.sequence) for ack in acks])

    # The strategy's row: flat again, realized 20, fees 3.60, net 16.40.
    position = pm.get_position("U123", "AAPL", strategy_id="momo")
    print(position.quantity, position.realized_pnl, position.fees, position.net_pnl)
    print(pm.get_portfolio_summary("U123").account_totals.net_pnl)

    # Live updates, here replayed from the fourth fill's sequence: each fill updates its
    # strategy's row and the account-level row.
    for update in pm.subscribe(account_id="U123", from_sequence=acks[3].sequence):
        print(
            update.sequence,
            update.kind.name,
            update.position.strategy_id or "(account)",
            update.position.quantity,
        )
        if update.sequence == acks[4].sequence and update.position.strategy_id == "":
            break
