"""Reconciliation reports as portfolio.v1 messages."""

from __future__ import annotations

from portfolio.v1 import portfolio_pb2 as pb
from server.api.wire import position_to_proto, to_timestamp
from server.application.ports import ReconciliationRun
from server.domain.book import PositionView
from server.domain.decimals import canonical
from server.domain.reconciliation import CashLine, LineStatus, ReconciliationLine

STATUS_TO_PROTO = {
    LineStatus.MATCHED: pb.RECONCILIATION_STATUS_MATCHED,
    LineStatus.FLAT_ATTRIBUTED: pb.RECONCILIATION_STATUS_FLAT_ATTRIBUTED,
    LineStatus.UNATTRIBUTED: pb.RECONCILIATION_STATUS_UNATTRIBUTED,
    LineStatus.RESIDUAL: pb.RECONCILIATION_STATUS_RESIDUAL,
    LineStatus.COST_MISMATCH: pb.RECONCILIATION_STATUS_COST_MISMATCH,
    LineStatus.CASH_MISMATCH: pb.RECONCILIATION_STATUS_CASH_MISMATCH,
}


def cash_line_to_proto(line: CashLine) -> pb.ReconciliationCashLine:
    return pb.ReconciliationCashLine(
        currency=line.currency,
        status=STATUS_TO_PROTO[line.status],
        discrepancy=line.status.is_discrepancy,
        broker_cash=canonical(line.broker_cash),
        service_cash=canonical(line.service_cash),
        difference=canonical(line.difference),
        note=line.note,
    )


def line_to_proto(line: ReconciliationLine, residual: PositionView | None) -> pb.ReconciliationLine:
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
    if residual is not None:
        position_to_proto(residual, into=message.residual_position)
    return message


def reconciliation_to_proto(valued: ReconciliationRun) -> pb.Reconciliation:
    """A run with its residual rows valued (now, for queries; as of the run, for updates)."""
    run = valued.reconciliation
    residuals = {view.key.instrument_id: view for view in valued.residuals}
    return pb.Reconciliation(
        account_id=run.account_id,
        snapshot_id=run.snapshot_id,
        sequence=run.sequence,
        reconciled_at=to_timestamp(run.timestamp_ns),
        broker_positions=run.broker_positions,
        matched=run.matched,
        discrepancies=run.discrepancies,
        clean=run.clean,
        lines=[
            line_to_proto(line, residuals[line.instrument_id] if line.residual else None)
            for line in run.lines
        ],
        cash=[cash_line_to_proto(line) for line in run.cash],
    )
