"""The composition root of the use cases: the write path, the read model, the mark feed and
reconciliation, over one ledger that one asyncio loop owns.

`PortfolioService` builds them and names their methods in one place, so the gRPC adapter and
the app call one object; each method lives (and is documented) in its own module:
writes.py, reads.py, marks.py, reconciler.py; what subscribers hear is publishing.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from typing import Generic

from server.application.day_close import DayCloser, SessionCalendar
from server.application.marks import MarkFeed
from server.application.point_in_time import PointInTime
from server.application.ports import EventStore
from server.application.publishing import PortfolioChange
from server.application.reads import NotFound, PositionQuery, ReadModel
from server.application.reconciler import NotAllowed, Reconciliations
from server.application.subscriptions import (
    Payload,
    Published,
    Subscriber,
    SubscriptionFilter,
    SubscriptionHub,
)
from server.application.writes import WritePath
from server.domain.ledger import Ledger
from server.domain.time_window import TimeWindow

__all__ = ["NotAllowed", "NotFound", "PortfolioChange", "PortfolioService", "PositionQuery"]


class PortfolioService(Generic[Payload]):
    def __init__(
        self,
        ledger: Ledger,
        hub: SubscriptionHub[PortfolioChange, Payload],
        store: EventStore,
        executor: Executor,
        views_executor: Executor,
        *,
        checkpoint_every: int = 10_000,
        checkpoint_seconds: float = 60.0,
        on_health: Callable[[bool], None] = lambda healthy: None,
        clock_ns: Callable[[], int] = time.time_ns,
        reporting_currency: str = "USD",
        mark_publish_seconds: float = 0.1,
        marks_save_seconds: float = 1.0,
        fx_journal_seconds: float = 1.0,
        time_window: TimeWindow | None = None,
        on_books: Callable[[bool], None] = lambda exact: None,
        session: SessionCalendar | None = None,
        account_sessions: Mapping[str, SessionCalendar] | None = None,
        new_ledger: Callable[[], Ledger] | None = None,
    ) -> None:
        self.ledger = ledger
        self.hub = hub
        self.reads = reads = ReadModel(
            ledger, store, views_executor, clock_ns=clock_ns,
            reporting_currency=reporting_currency,
        )  # fmt: skip
        self.writes = writes = WritePath(
            ledger, hub, store, executor, views_executor, reads,
            checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds,
            on_health=on_health, clock_ns=clock_ns, time_window=time_window, on_books=on_books,
        )  # fmt: skip
        self.marks = marks = MarkFeed(
            writes, clock_ns=clock_ns, mark_publish_seconds=mark_publish_seconds,
            marks_save_seconds=marks_save_seconds, fx_journal_seconds=fx_journal_seconds,
        )  # fmt: skip
        self.reconciling = cases = Reconciliations(writes, reads)
        # The book at a past point (point_in_time.py): a ledger like this one, replayed.
        self.point_in_time = PointInTime(
            new_ledger or Ledger, store, views_executor, lambda: reads.sequence,
            clock_ns=clock_ns, reporting_currency=reporting_currency,
        )  # fmt: skip
        # Trading-day closes (day_close.py): the P&L history.
        calendars = [session, *(account_sessions or {}).values()]
        self.day_closer = (
            DayCloser(writes, session, clock_ns=clock_ns, accounts=account_sessions)
            if session is not None and any(c is not None and c.weekdays for c in calendars)
            else None
        )
        self.committer, self.checkpoints, self.projector = (
            writes.committer,
            writes.checkpoints,
            writes.projector,
        )
        # The write path (writes.py).
        self.recover, self.check_time = writes.recover, writes.check_time
        self.admit, self.wait_durable = writes.admit, writes.wait_durable
        self.on_durable = writes.committer.on_durable
        self.ingest, self.execute = writes.ingest, writes.execute
        self.books_exact, self.end_books_alert = writes.books_exact, writes.end_books_alert
        self.placement = writes.placement
        self.judge, self.reports_for = writes.judge, writes.reports_for
        # The mark feed (marks.py).
        self.apply_marks, self.save_marks_now = marks.apply_marks, marks.save_marks_now
        self.journal_fx_now = marks.journal_fx_now
        # Reconciliation (reconciler.py).
        self.reconcile, self.book_positions = cases.reconcile, cases.book_positions
        self.is_paper, self.live_accounts = cases.is_paper, cases.live_accounts
        self.require_reconcilable = cases.require_reconcilable
        self.reconciliation, self.reconciliations = cases.reconciliation, cases.reconciliations
        self.valued_run = cases.valued
        # The read model (reads.py).
        self.get_position, self.view, self.base_of = reads.get_position, reads.view, reads.base_of
        self.strategy_portfolio = reads.strategy_portfolio
        self.portfolio_summary, self.in_base = reads.portfolio_summary, reads.in_base
        self.fx_rate = reads.fx_rate
        self.order, self.order_anywhere = reads.order, reads.order_anywhere
        self.open_orders, self.balances = reads.open_orders, reads.balances
        self.instrument, self.instruments = reads.instrument, reads.instruments
        self.account, self.accounts = reads.account, reads.accounts
        self.reservation, self.consolidated = reads.reservation, reads.consolidated
        self.list_positions, self.trace = reads.list_positions, reads.trace
        self.expire_traces = reads.expire_traces
        self.pnl_history = reads.pnl_history

    @property
    def sequence(self) -> int:
        """The last sequence applied: what queries and subscribers see, all of it durable."""
        return self.ledger.applied_sequence

    @property
    def version(self) -> tuple[int, int, int]:
        return self.reads.version

    def subscribe(
        self, filter_: SubscriptionFilter, from_sequence: int
    ) -> tuple[Iterator[Published[PortfolioChange, Payload]], Subscriber[PortfolioChange, Payload]]:
        return self.hub.subscribe(filter_, from_sequence)
