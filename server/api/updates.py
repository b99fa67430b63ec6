"""The update stream's messages: one per change, encoded once and shared by subscribers."""

from __future__ import annotations

from portfolio.v1 import portfolio_pb2 as pb
from server.api.wire import fill_to_proto, position_to_proto, status_to_proto
from server.api.wire_reconciliation import reconciliation_to_proto
from server.api.wire_reference import balance_to_proto, mark_to_proto, order_to_proto
from server.application.service import (
    BalanceChanged,
    MarkChanged,
    OrderStatusChanged,
    PortfolioChange,
    PositionChanged,
    ReconciliationChanged,
)
from server.domain.position import ChangeKind

UPDATE_KIND = {
    ChangeKind.OPENED: pb.UPDATE_KIND_POSITION_OPENED,
    ChangeKind.MODIFIED: pb.UPDATE_KIND_POSITION_MODIFIED,
    ChangeKind.CLOSED: pb.UPDATE_KIND_POSITION_CLOSED,
}


def update_to_proto(change: PortfolioChange) -> pb.PortfolioUpdate:
    if isinstance(change, OrderStatusChanged):
        return pb.PortfolioUpdate(
            sequence=change.sequence,
            kind=pb.UPDATE_KIND_ORDER_STATUS,
            event_id=change.update.update_id,
            order_status=status_to_proto(change.update),
            order=order_to_proto(change.order),
        )
    if isinstance(change, BalanceChanged):
        return pb.PortfolioUpdate(
            sequence=change.sequence,
            kind=pb.UPDATE_KIND_BALANCE,
            balance=balance_to_proto(change.balance),
        )
    if isinstance(change, MarkChanged):
        return pb.PortfolioUpdate(
            sequence=change.sequence, kind=pb.UPDATE_KIND_MARK, mark=mark_to_proto(change.mark)
        )
    if isinstance(change, ReconciliationChanged):
        # Residual rows as the run valued them, by instrument.
        residuals = {view.key.instrument_id: view for view in change.run.residuals}
        return pb.PortfolioUpdate(
            sequence=change.sequence,
            kind=pb.UPDATE_KIND_RECONCILIATION,
            event_id=change.run.reconciliation.snapshot_id,
            reconciliation=reconciliation_to_proto(
                change.run.reconciliation, lambda row: residuals[row.instrument_id]
            ),
        )
    assert isinstance(change, PositionChanged)
    return pb.PortfolioUpdate(
        sequence=change.sequence,
        kind=UPDATE_KIND[change.kind],
        event_id=change.fill.fill_id,
        position=position_to_proto(change.position),
        fill=fill_to_proto(change.fill, change.corrects),
    )
