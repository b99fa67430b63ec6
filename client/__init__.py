"""Typed Python SDK of the portfolio manager.

    from client import PortfolioClient, Fill, Side

    with PortfolioClient("localhost:50051") as pm:
        acks = pm.ingest(fills)
        position = pm.get_position("A1", "AAPL", strategy_id="S1")
        for update in pm.subscribe(account_id="A1", from_sequence=1):
            ...

Amounts are `decimal.Decimal` and timestamps timezone-aware `datetime`s, in and out. Failures
raise `PortfolioError` (or a subclass) carrying the gRPC status code.
"""

from client.aio import AsyncPortfolioClient
from client.errors import (
    IngestIncomplete,
    PortfolioError,
    ProtocolViolation,
    ResyncRequired,
)
from client.marks import FxRate, MarkAck, MarkPrice
from client.models import (
    AccountKind,
    BookingPlacement,
    CommissionAmendment,
    CurrencyPerformance,
    CurrencyTotals,
    EventAck,
    EventResult,
    ExecutionEvent,
    Exposure,
    Fill,
    NamedExposure,
    OrderStatus,
    OrderStatusUpdate,
    Performance,
    PnlCurrencyDay,
    PnlDay,
    PnlHistory,
    PortfolioSummary,
    PortfolioTotals,
    PortfolioUpdate,
    Position,
    PositionLevel,
    PositionPage,
    Reconciliation,
    ReconciliationLine,
    ReconciliationPage,
    ReconciliationStatus,
    RejectCode,
    RiskMetrics,
    Side,
    StrategyCorrelation,
    StrategyPortfolio,
    StrategyTotals,
    TraceLeg,
    TraceNet,
    TracePosition,
    UpdateKind,
    ValueAtRisk,
    VenuePerformance,
)
from client.queries import (
    PerformanceQuery,
    PnlHistoryQuery,
    PortfolioSummaryQuery,
    PositionQuery,
    PositionsQuery,
    Query,
    RiskMetricsQuery,
    StrategyPortfolioQuery,
    TracePositionQuery,
)
from client.retry import Backoff
from client.sync import PortfolioClient

__all__ = [
    "AccountKind",
    "AsyncPortfolioClient",
    "Backoff",
    "BookingPlacement",
    "CommissionAmendment",
    "CurrencyPerformance",
    "CurrencyTotals",
    "EventAck",
    "EventResult",
    "ExecutionEvent",
    "Exposure",
    "Fill",
    "FxRate",
    "IngestIncomplete",
    "MarkAck",
    "MarkPrice",
    "NamedExposure",
    "OrderStatus",
    "OrderStatusUpdate",
    "Performance",
    "PerformanceQuery",
    "PnlCurrencyDay",
    "PnlDay",
    "PnlHistory",
    "PnlHistoryQuery",
    "PortfolioClient",
    "PortfolioError",
    "PortfolioSummary",
    "PortfolioSummaryQuery",
    "PortfolioTotals",
    "PortfolioUpdate",
    "Position",
    "PositionLevel",
    "PositionPage",
    "PositionQuery",
    "PositionsQuery",
    "ProtocolViolation",
    "Query",
    "Reconciliation",
    "ReconciliationLine",
    "ReconciliationPage",
    "ReconciliationStatus",
    "RejectCode",
    "ResyncRequired",
    "RiskMetrics",
    "RiskMetricsQuery",
    "Side",
    "StrategyCorrelation",
    "StrategyPortfolio",
    "StrategyPortfolioQuery",
    "StrategyTotals",
    "TraceLeg",
    "TraceNet",
    "TracePosition",
    "TracePositionQuery",
    "UpdateKind",
    "ValueAtRisk",
    "VenuePerformance",
]
