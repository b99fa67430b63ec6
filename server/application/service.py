"""The portfolio service's use cases: ingest events, answer queries, feed subscribers.

One asyncio loop owns all state. The single write path: `admit` (dedup, sequence) as a batch
arrives, then the group commit makes it durable, then `replay` applies and publishes it, then
the acks go out. Queries and subscribers only ever see durable events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic

from sortedcontainers import SortedDict

from server.application.checkpoints import Checkpointer
from server.application.committer import GroupCommitter
from server.application.ports import EventStore, Sequenced, StorageUnavailable
from server.application.projector import ViewProjector
from server.application.subscriptions import (
    Payload,
    Published,
    Subscriber,
    SubscriptionFilter,
    SubscriptionHub,
    Topic,
)
from server.domain.book import ALL, PositionView, RowChange, position_view
from server.domain.events import ExecutionEvent, Fill, OrderStatusUpdate
from server.domain.ledger import Ledger, Outcome, Result
from server.domain.position import ACCOUNT_LEVEL, ChangeKind, Position, PositionKey
from server.domain.totals import Totals
from server.domain.traces import Trace

_HIGHEST = "\U0010ffff"  # sorts after any id


class NotFound(LookupError):
    """The thing asked for does not exist; the message says what."""


@dataclass(frozen=True, slots=True)
class PositionChanged:
    """A row moved by a fill: a copy of the row as it was then, viewed only when needed."""

    sequence: int
    kind: ChangeKind
    fill: Fill
    row: Position
    market_price: Decimal
    precision: Decimal

    @property
    def position(self) -> PositionView:
        return position_view(self.row, self.market_price, self.precision)


@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    sequence: int
    update: OrderStatusUpdate


PortfolioChange = PositionChanged | OrderStatusChanged


@dataclass(frozen=True, slots=True)
class StrategyPortfolio:
    strategy_id: str
    account_id: str
    positions: list[PositionView]
    totals: Totals
    as_of_sequence: int


@dataclass(frozen=True, slots=True)
class PortfolioSummary:
    account_id: str
    account_totals: Totals
    strategies: list[tuple[str, Totals]]
    as_of_sequence: int


@dataclass(frozen=True, slots=True)
class PositionQuery:
    account_id: str = ""
    strategy_id: str = ""
    instrument_id: str = ""
    account_level: bool = False
    include_flat: bool = False


@dataclass(frozen=True, slots=True)
class PositionPage:
    positions: list[PositionView]
    last_key: PositionKey | None  # set when more rows may follow
    as_of_sequence: int


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
        on_health: Callable[[bool], None] = lambda healthy: None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ledger = ledger
        self.hub = hub
        self.committer = GroupCommitter(
            store, executor, self._apply_durable, on_health, ledger.applied_sequence
        )
        self.checkpoints = Checkpointer(store, executor, checkpoint_every)
        self.projector = ViewProjector(store, views_executor, ledger.book.precision)
        self._clock_ns = clock_ns

    @property
    def sequence(self) -> int:
        """The last sequence applied: what queries and subscribers see, all of it durable."""
        return self.ledger.applied_sequence

    # -- the write path --------------------------------------------------------------------

    def admit(self, events: Sequence[ExecutionEvent]) -> tuple[list[Outcome], int]:
        """Dedups and sequences a batch, in arrival order, and hands what is new to the group
        commit. Returns the outcomes and the sequence that must be durable before they are
        acknowledged (a duplicate waits for its original)."""
        if not self.committer.healthy:
            raise StorageUnavailable(self.committer.fault)
        outcomes = [self.ledger.admit(event) for event in events]
        group = [
            (outcome.sequence, event)
            for event, outcome in zip(events, outcomes, strict=True)
            if outcome.result is Result.ACCEPTED
        ]
        if group:
            self.committer.submit(group)
        wait_for = max((o.sequence for o in outcomes if o.result is not Result.REJECTED), default=0)
        return outcomes, wait_for

    async def wait_durable(self, sequence: int) -> None:
        await self.committer.wait_durable(sequence)

    async def ingest(self, events: Sequence[ExecutionEvent]) -> list[Outcome]:
        outcomes, wait_for = self.admit(events)
        await self.wait_durable(wait_for)
        return outcomes

    def _apply_durable(self, group: list[Sequenced]) -> None:
        changed = self.replay(group)
        self.projector.submit(group, changed)
        self.checkpoints.after_apply(self.ledger)

    def replay(self, events: Iterable[Sequenced]) -> list[tuple[Position, Decimal]]:
        """Applies journaled events in sequence order and publishes their updates; returns
        copies of the rows they changed, each with its mark then."""
        published: list[tuple[int, Topic, PortfolioChange]] = []
        changed: list[tuple[Position, Decimal]] = []
        for sequence, event in events:
            changes = self.ledger.apply(event, sequence)
            changed.extend((change.position, change.market_price) for change in changes)
            published.extend(self._changes(event, sequence, changes))
        self.hub.publish(published)
        return changed

    def _changes(
        self, event: ExecutionEvent, sequence: int, changes: tuple[RowChange, ...]
    ) -> Iterator[tuple[int, Topic, PortfolioChange]]:
        if isinstance(event, OrderStatusUpdate):
            topic = Topic(event.account_id, event.strategy_id, event.instrument_id, False)
            yield sequence, topic, OrderStatusChanged(sequence, event)
            return
        assert isinstance(event, Fill)
        precision = self.ledger.book.precision
        for change in changes:
            key = change.position.key
            topic = Topic(*key, is_position=True, is_account_level=key.is_account_level)
            update = PositionChanged(
                sequence, change.kind, event, change.position, change.market_price, precision
            )
            yield sequence, topic, update

    # -- queries ---------------------------------------------------------------------------

    def get_position(self, account_id: str, instrument_id: str, strategy_id: str) -> PositionView:
        row = self.ledger.book.get(PositionKey(account_id, strategy_id, instrument_id))
        if row is None:
            level = f"strategy {strategy_id!r}" if strategy_id else "the account-level book"
            raise NotFound(
                f"no position in {instrument_id!r} for {level} of account {account_id!r}"
            )
        return self.ledger.book.view(row)

    def strategy_portfolio(
        self, strategy_id: str, account_id: str = ALL, include_flat: bool = False
    ) -> StrategyPortfolio:
        book = self.ledger.book
        if not book.has_strategy(strategy_id, account_id):
            where = f" in account {account_id!r}" if account_id else ""
            raise NotFound(f"strategy {strategy_id!r} has no positions{where}")
        rows = book.strategy_positions(strategy_id, account_id)
        return StrategyPortfolio(
            strategy_id,
            account_id,
            [book.view(row) for row in rows if include_flat or row.quantity],
            book.strategy_totals(strategy_id, account_id),
            self.sequence,
        )

    def portfolio_summary(self, account_id: str = ALL) -> PortfolioSummary:
        book = self.ledger.book
        if account_id and not book.has_account(account_id):
            raise NotFound(f"account {account_id!r} has no positions")
        strategies = [
            (strategy_id, book.strategy_totals(strategy_id, account_id))
            for strategy_id in book.strategies(account_id)
        ]
        return PortfolioSummary(
            account_id, book.account_totals(account_id), strategies, self.sequence
        )

    def list_positions(
        self, query: PositionQuery, after: PositionKey | None, limit: int
    ) -> PositionPage:
        """Rows in key order from just after `after`; `last_key` is set when more may follow."""
        book = self.ledger.book
        index: SortedDict
        if query.instrument_id:
            index = book.by_instrument.get(query.instrument_id, SortedDict())
        else:
            index = book.account_rows if query.account_level else book.strategy_rows
        prefix: tuple[str, ...] = ()
        if query.account_id:
            prefix = (query.account_id, ACCOUNT_LEVEL if query.account_level else query.strategy_id)
            if not prefix[1]:
                prefix = prefix[:1]
        lower = PositionKey(*prefix, *[""] * (3 - len(prefix)))
        upper = PositionKey(*prefix, *[_HIGHEST] * (3 - len(prefix)))
        keys = index.irange(after or lower, upper, inclusive=(after is None, True))
        positions: list[PositionView] = []
        for key in keys:
            row: Position = index[key]
            if not self._matches(query, row):
                continue
            if len(positions) == limit:
                return PositionPage(positions, positions[-1].key, self.sequence)
            positions.append(book.view(row))
        return PositionPage(positions, None, self.sequence)

    @staticmethod
    def _matches(query: PositionQuery, row: Position) -> bool:
        key = row.key
        return (
            key.is_account_level == query.account_level
            and (not query.account_id or key.account_id == query.account_id)
            and (not query.strategy_id or key.strategy_id == query.strategy_id)
            and (not query.instrument_id or key.instrument_id == query.instrument_id)
            and (query.include_flat or bool(row.quantity))
        )

    def trace(self, trace_id: str) -> Trace:
        trace = self.ledger.traces.get(trace_id, self._clock_ns())
        if trace is None:
            raise NotFound(f"no live trace {trace_id!r} (unknown, or expired)")
        return trace

    def expire_traces(self) -> int:
        return self.ledger.traces.expire(self._clock_ns())

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(
        self, filter_: SubscriptionFilter, from_sequence: int
    ) -> tuple[list[Published[PortfolioChange, Payload]], Subscriber[PortfolioChange, Payload]]:
        return self.hub.subscribe(filter_, from_sequence)
