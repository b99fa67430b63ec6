"""Reconciliation reports as portfolio.v1 messages."""

from __future__ import annotations

from collections.abc import Callable

from portfolio.v1 import portfolio_pb2 as pb
from server.api.wire import position_to_proto, to_timestamp
from server.domain.book import PositionView
from server.domain.decimals import canonical
from server.domain.reconciliation import (
    LineStatus,
    Reconciliation,
    ReconciliationLine,
    ResidualRow,
)

STATUS_TO_PROTO = {
    LineStatus.MATCHED: pb.RECONCILIATION_STATUS_MATCHED,
    LineStatus.FLAT_ATTRIBUTED: pb.RECONCILIATION_STATUS_FLAT_ATTRIBUTED,
    LineStatus.UNATTRIBUTED: pb.RECONCILIATION_STATUS_UNATTRIBUTED,
    LineStatus.RESIDUAL: pb.RECONCILIATION_STATUS_RESIDUAL,
    LineStatus.COST_MISMATCH: pb.RECONCILIATION_STATUS_COST_MISMATCH,
}

ResidualViews = Callable[[ResidualRow], PositionView]
"""How a residual row is valued for display: now (queries) or as of its run (updates)."""


def line_to_proto(line: ReconciliationLine, residual_view: ResidualViews) -> pb.ReconciliationLine:
    message = pb.ReconciliationLine(
        instrument_id=line.instrument_id,
        status=STATUS_TO_PROTO[line.status],
        discrepancy=line.status.is_discrepancy,
        broker_quantity=canonical(line.broker_quantity),
        broker_avg_cost=canonical(line.broker_avg_cost),
        broker_unit_cost=canonical(line.broker_unit_cost),
        account_quantity=canonical(line.account_quantity),
        service_avg_cost=canonical(line.service_avg_cost),
        attributed_quantity=canonical(line.attributed_quantity),
        strategies=[
            pb.StrategyQuantity(strategy_id=strategy, quantity=canonical(quantity))
            for strategy, quantity in line.strategies
        ],
        residual_quantity=canonical(line.residual_quantity),
        note=line.note,
    )
    if line.residual is not None:
        message.residual_position.CopyFrom(position_to_proto(residual_view(line.residual)))
    return message


def reconciliation_to_proto(run: Reconciliation, residual_view: ResidualViews) -> pb.Reconciliation:
    return pb.Reconciliation(
        account_id=run.account_id,
        snapshot_id=run.snapshot_id,
        sequence=run.sequence,
        reconciled_at=to_timestamp(run.timestamp_ns),
        broker_positions=run.broker_positions,
        matched=run.matched,
        discrepancies=run.discrepancies,
        clean=run.clean,
        lines=[line_to_proto(line, residual_view) for line in run.lines],
    )
