"""The portfolio service's use cases: ingest events, answer queries, feed subscribers.

One asyncio loop owns all state. The single write path: `admit` (dedup, sequence) as a batch
arrives, then the group commit makes it durable, then `replay` applies and publishes it, then
the acks go out. Queries and subscribers only ever see durable events.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext
from typing import Generic

from sortedcontainers import SortedDict

from server.application.checkpoints import Checkpointer
from server.application.committer import GroupCommitter
from server.application.ports import (
    EventStore,
    OrderTransition,
    ReconciliationRun,
    Sequenced,
    StorageUnavailable,
)
from server.application.projector import ViewProjector
from server.application.subscriptions import (
    Payload,
    Published,
    Subscriber,
    SubscriptionFilter,
    SubscriptionHub,
    Topic,
)
from server.domain.balances import Balance, BalanceKey, Reservation
from server.domain.book import ALL, PositionView, Price, fee_rates, position_view
from server.domain.decimals import EXACT
from server.domain.events import (
    AccountDefinition,
    AccountKind,
    BrokerPosition,
    BrokerPositions,
    ExecutionEvent,
    Fill,
    FillCorrection,
    InstrumentDefinition,
    OrderStatusUpdate,
)
from server.domain.fx_history import fx_fixing
from server.domain.ledger import Applied, Ledger, Outcome, Result
from server.domain.marks import FxRate, Mark, MarkSource
from server.domain.orders import Order, Transition
from server.domain.position import ACCOUNT_LEVEL, ChangeKind, Position, PositionKey
from server.domain.reconciliation import Reconciliation, ReconciliationLine, ResidualRow
from server.domain.refusals import Refusal, RefusalKind
from server.domain.restatement import Placement
from server.domain.seen import JournalUnreadable
from server.domain.time_window import TimeWindow
from server.domain.totals import Totals, merged
from server.domain.traces import Trace
from server.log_limit import LogLimiter

_HIGHEST = "\U0010ffff"  # sorts after any id

log = logging.getLogger("portfolio.service")
_misplaced_log = LogLimiter(log, 10.0)  # at most one line per 10 s; the rest are counted
_fx_conflict_log = LogLimiter(log, 60.0)

FX_RETRY_SECONDS = 1.0
"""While the store is down, pending FX rates are offered to the journal again this often (at
least)."""

MISPLACED_ALERT_SECONDS = 900.0
"""How long health `books` stays NOT_SERVING after a fill was booked outside its place."""


class NotFound(LookupError):
    """The thing asked for does not exist; the message says what."""


class NotAllowed(Exception):
    """The request is valid but the state does not allow it; `refusal` says why."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionChanged:
    """A row moved by a fill: a copy of the row as it was then, viewed only when needed."""

    sequence: int
    kind: ChangeKind
    fill: Fill
    row: Position
    price: Price
    precision: Decimal
    base_currency: str
    fx_rate: Decimal | None
    corrects: str = ""  # set when the fill is a broker correction of that fill
    placement: Placement = Placement.IN_ORDER  # whether the fill restated the row
    fee_rates: tuple[Decimal | None, ...] = ()  # of the row's fees in other currencies

    @property
    def position(self) -> PositionView:
        return position_view(
            self.row, self.price.price, self.precision, self.price,
            base_currency=self.base_currency, fx_rate=self.fx_rate, fee_rates=self.fee_rates,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    sequence: int
    update: OrderStatusUpdate
    order: Order
    transition: Transition


@dataclass(frozen=True, slots=True)
class BalanceChanged:
    sequence: int
    balance: Balance


@dataclass(frozen=True, slots=True)
class MarkChanged:
    """An instrument's price moved (coalesced: the latest of a burst)."""

    sequence: int
    mark: Mark


@dataclass(frozen=True, slots=True)
class ReconciliationChanged:
    """A reconciliation run finished."""

    sequence: int
    run: ReconciliationRun


PortfolioChange = (
    PositionChanged | OrderStatusChanged | BalanceChanged | MarkChanged | ReconciliationChanged
)


@dataclass(frozen=True, slots=True)
class InBase:
    """Totals converted into a base currency; `totals` is None when a rate is missing."""

    base_currency: str
    totals: Totals | None
    missing: list[str]
    by_currency: list[tuple[str, Totals, Decimal | None]]


@dataclass(frozen=True, slots=True)
class StrategyPortfolio:
    """A strategy's rows and totals in one account, or across its accounts of one kind.
    `totals` is None when more than one currency is involved: nothing adds two currencies
    (see `in_base`). Across accounts of both kinds, `positions` lists every row (rows are
    not sums) but the figures are None or empty and `by_account_kind` holds each kind's
    portfolio: paper is never added to live."""

    strategy_id: str
    account_id: str
    positions: list[PositionView]
    totals: Totals | None
    as_of_sequence: int
    in_base: InBase
    account_kind: AccountKind | None = None  # the account's, or the kind summed across
    by_account_kind: list[StrategyPortfolio] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PortfolioSummary:
    """Totals of one account, or across the accounts of one kind. Across accounts of both
    kinds, the figures are None or empty and `by_account_kind` holds each kind's summary:
    paper is never added to live. `account_totals` (and each strategy's) is None when more
    than one currency is involved."""

    account_id: str
    account_totals: Totals | None
    strategies: list[tuple[str, Totals | None, InBase]]
    as_of_sequence: int
    account: AccountDefinition | None
    in_base: InBase
    cash: list[Balance]
    account_kind: AccountKind | None = None  # the account's, or the kind summed across
    by_account_kind: list[PortfolioSummary] = field(default_factory=list)


def one_currency(by_currency: dict[str, Totals]) -> Totals | None:
    """The totals when at most one currency is involved (fee currencies count); None rather
    than a sum of different currencies."""
    if len(by_currency) > 1:
        return None
    return next(iter(by_currency.values()), Totals())


@dataclass(frozen=True, slots=True)
class AccountBalances:
    account: AccountDefinition
    balances: list[Balance]
    reservations: list[Reservation]
    as_of_sequence: int


@dataclass(frozen=True, slots=True)
class Consolidated:
    account: AccountDefinition
    instrument_id: str
    account_position: PositionView
    strategy_positions: list[PositionView]
    attributed_quantity: Decimal
    as_of_sequence: int
    reconciled: ReconciliationLine | None = None
    reconciled_at_ns: int = 0
    residual: PositionView | None = None


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[Order]
    last_key: tuple[str, str, str] | None
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
        checkpoint_seconds: float = 60.0,
        on_health: Callable[[bool], None] = lambda healthy: None,
        clock_ns: Callable[[], int] = time.time_ns,
        reporting_currency: str = "USD",
        mark_publish_seconds: float = 0.1,
        marks_save_seconds: float = 1.0,
        fx_journal_seconds: float = 1.0,
        time_window: TimeWindow | None = None,
        on_books: Callable[[bool], None] = lambda exact: None,
    ) -> None:
        self.ledger = ledger
        self.hub = hub
        self.committer = GroupCommitter(
            store, executor, self._apply_durable, on_health, ledger.applied_sequence
        )
        self.checkpoints = Checkpointer(store, executor, checkpoint_every, checkpoint_seconds)
        self.projector = ViewProjector(
            store, views_executor, ledger.book.precision, base_of=self.base_of
        )
        self._store, self._views_executor = store, views_executor  # forgotten orders
        self._clock_ns = clock_ns
        self.time_window = time_window or TimeWindow()
        self.reporting_currency = reporting_currency
        self.mark_publish_seconds = mark_publish_seconds
        self.marks_save_seconds = marks_save_seconds
        self._pending_marks: dict[str, Mark] = {}
        self._marks_flush: asyncio.TimerHandle | None = None
        self._marks_saved_at = 0.0
        self._marks_unsaved = False
        # FX rates the valuation table took, waiting for the journal: the latest per pair
        # (key: the pair sorted, time 0), or every one (key with its time) when
        # fx_journal_seconds is 0. Journaled at most every fx_journal_seconds.
        self.fx_journal_seconds = fx_journal_seconds
        self._fx_pending: dict[tuple[str, str, int], FxRate] = {}
        self._fx_flush: asyncio.TimerHandle | None = None
        self._fx_journaled_at = float("-inf")
        self._fx_outage = False  # the store refused the last flush: logged once, retried
        # A fill booked OUTSIDE_WINDOW turns `on_books(False)`; it stays so for
        # MISPLACED_ALERT_SECONDS after the latest one (see books_exact).
        self.on_books = on_books
        self.misplaced_at: float | None = None

    @property
    def sequence(self) -> int:
        """The last sequence applied: what queries and subscribers see, all of it durable."""
        return self.ledger.applied_sequence

    # -- the write path --------------------------------------------------------------------

    def check_time(self, field: str, time_ns: int) -> None:
        """Refuses (InvalidEvent naming `field`) a new event's or mark's time that the
        service's clock says cannot be right: see TimeWindow."""
        self.time_window.check(field, time_ns, self._clock_ns())

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

    async def execute(self, event: ExecutionEvent) -> tuple[Outcome, Refusal | None]:
        """One event through the write path, for the unary RPCs: its outcome once durable,
        and the domain's refusal if applying it refused it (replays refuse it the same)."""
        (outcome,), wait_for = self.admit([event])
        await self.wait_durable(wait_for)
        if outcome.result is Result.REJECTED:
            return outcome, None
        return outcome, self.ledger.refusals.get(outcome.sequence)

    def _apply_durable(self, group: list[Sequenced]) -> None:
        changed, transitions, runs = self.replay(group)
        self._alert_misplaced(group)
        self.ledger.traces.received(self._clock_ns())  # a trace's TTL counts from receipt
        self.projector.submit(group, changed, transitions, [change.run for change in runs])
        self.checkpoints.after_apply(self.ledger)

    def _alert_misplaced(self, group: list[Sequenced]) -> None:
        """Says so when a fill could not be booked in its place (older than the restatement
        window): logged, counted (`book.misplaced`) and on health."""
        placements = self.ledger.placements
        for sequence, event in group:
            if placements.get(sequence) is Placement.OUTSIDE_WINDOW:
                _misplaced_log.log(
                    logging.WARNING,
                    "misplaced",
                    "%s %s (sequence %d) is older than fills already folded out of the "
                    "restatement window: booked at the window's start, not in its place "
                    "(%d such fills since start)",
                    event.kind,
                    event.event_id,
                    sequence,
                    self.ledger.book.misplaced,
                )
                self.misplaced_at = time.monotonic()
                self.on_books(False)

    def books_exact(self, now: float | None = None) -> bool:
        """False for MISPLACED_ALERT_SECONDS after a fill was booked outside its place."""
        if self.misplaced_at is None:
            return True
        return (time.monotonic() if now is None else now) - self.misplaced_at > (
            MISPLACED_ALERT_SECONDS
        )

    def replay(
        self, events: Iterable[Sequenced]
    ) -> tuple[list[tuple[Position, Decimal]], list[OrderTransition], list[ReconciliationChanged]]:
        """Applies journaled events in sequence order and publishes their updates; returns
        copies of the rows they changed, each with its mark then, the order transitions and
        the reconciliation runs."""
        published: list[tuple[int, Topic, PortfolioChange]] = []
        changed: list[tuple[Position, Decimal]] = []
        transitions: list[OrderTransition] = []
        runs: list[ReconciliationChanged] = []
        for sequence, event in events:
            previous = (
                self.ledger.reconciliations.latest(event.account_id)
                if isinstance(event, BrokerPositions)
                else None
            )
            applied = self.ledger.apply(event, sequence)
            if applied.refusal is not None and isinstance(event, FillCorrection):
                log.warning("correction %s refused: %s", event.correction_id, applied.refusal)
            changed.extend((change.position, change.market_price) for change in applied.rows)
            published.extend(self._changes(event, sequence, applied))
            if applied.order is not None and applied.transition is not None:
                transitions.append(
                    OrderTransition(sequence, applied.order.order_key, applied.transition)
                )
            if applied.reconciliation is not None:
                run = self.reconciliation_changed(applied.reconciliation, previous)
                runs.append(run)
                topic = Topic(event.account_id, "", "", is_position=False, is_reconciliation=True)
                published.append((sequence, topic, run))
        self.hub.publish(published)
        return changed, transitions, runs

    def reconciliation_changed(
        self, run: Reconciliation, previous: Reconciliation | None
    ) -> ReconciliationChanged:
        """A run with its residual rows valued now; a residual of the previous run that this
        one no longer has is included flat, so the stored snapshot drops it."""
        residuals = {row.instrument_id: self.residual_view(row) for row in run.residuals}
        for gone in previous.residuals if previous else ():
            if gone.instrument_id not in residuals:
                flat = replace(
                    gone, quantity=Decimal(0), cost_basis=Decimal(0), avg_cost=Decimal(0),
                    sequence=run.sequence, timestamp_ns=run.timestamp_ns,
                )  # fmt: skip
                residuals[gone.instrument_id] = self.residual_view(flat)
        return ReconciliationChanged(run.sequence, ReconciliationRun(run, list(residuals.values())))

    def judge(self, events: Iterable[Sequenced]) -> list[OrderTransition]:
        """How status events applied earlier were judged, from their orders' histories (for
        views catching up after a restart)."""
        judged = []
        for sequence, event in events:
            if not isinstance(event, OrderStatusUpdate):
                continue
            order = self.ledger.orders.find(event.account_id, event.order_id, event.order_ref)
            if order is None:
                continue
            found = next((t for t in order.history if t.sequence == sequence), None)
            judged.append(OrderTransition(sequence, order.order_key, found))
        return judged

    def _changes(
        self, event: ExecutionEvent, sequence: int, applied: Applied
    ) -> Iterator[tuple[int, Topic, PortfolioChange]]:
        if isinstance(event, FillCorrection):
            # The bust and the replacement: each row once, as the correction left it.
            last = {change.position.key: change for change in applied.rows}
            corrected = replace(applied, rows=tuple(last.values()))
            yield from self._position_changes(
                event.replacement(), sequence, corrected, event.corrects
            )
        if isinstance(event, OrderStatusUpdate):
            assert applied.order is not None and applied.transition is not None
            order = replace(applied.order, history=[applied.transition])
            topic = Topic(event.account_id, order.strategy_id, order.instrument_id, False)
            yield sequence, topic, OrderStatusChanged(sequence, event, order, applied.transition)
        if isinstance(event, Fill):
            yield from self._position_changes(event, sequence, applied)
        for balance in applied.balances:
            topic = Topic(balance.key.account_id, "", "", is_position=False, is_balance=True)
            yield sequence, topic, BalanceChanged(sequence, balance)

    def _position_changes(
        self, fill: Fill, sequence: int, applied: Applied, corrects: str = ""
    ) -> Iterator[tuple[int, Topic, PortfolioChange]]:
        precision = self.ledger.book.precision
        base = self.ledger.accounts.base_currency(fill.account_id)
        for change in applied.rows:
            key = change.position.key
            topic = Topic(*key, is_position=True, is_account_level=key.is_account_level)
            price = self.ledger.book.price(key.instrument_id)
            rate = self.ledger.fx.rate(change.position.currency, base)
            rates = fee_rates(change.position, lambda currency: self.ledger.fx.rate(currency, base))
            yield (
                sequence,
                topic,
                PositionChanged(
                    sequence=sequence, kind=change.kind, fill=fill, row=change.position,
                    price=price, precision=precision, base_currency=base, fx_rate=rate,
                    corrects=corrects, placement=change.placement, fee_rates=rates,
                ),
            )  # fmt: skip

    # -- reconciliation --------------------------------------------------------------------

    async def reconcile(
        self, account_id: str, positions: Sequence[BrokerPosition], time_ns: int
    ) -> Reconciliation:
        """Journals what the broker holds and returns the run it made. Raises NotAllowed for
        a paper account."""
        self.require_reconcilable(account_id)
        snapshot = BrokerPositions(
            snapshot_id=f"reconcile:{account_id}:{time_ns}",
            account_id=account_id,
            timestamp_ns=time_ns,
            positions=tuple(positions),
        )
        outcome, refusal = await self.execute(snapshot)
        if refusal is not None:
            raise NotAllowed(refusal)
        if outcome.result is Result.REJECTED:
            raise NotAllowed(Refusal(RefusalKind.CONFLICT, "account_id", outcome.reason))
        run = self.ledger.reconciliations.latest(account_id)
        assert run is not None and run.sequence == outcome.sequence
        return run

    def book_positions(self, account_id: str) -> list[BrokerPosition]:
        """The account-level book as a broker would report it (the paper broker's view)."""
        precision = self.ledger.book.precision
        return [
            BrokerPosition(
                instrument_id=row.key.instrument_id,
                quantity=row.quantity,
                avg_cost=row.avg_cost(precision),
            )
            for rows in self.ledger.account_instrument_rows(account_id).values()
            for row in rows[:1]
        ]

    def is_paper(self, account_id: str) -> bool:
        return self.ledger.accounts.get(account_id).account_kind is AccountKind.PAPER

    def require_reconcilable(self, account_id: str) -> None:
        """Raises NotAllowed for a paper account before anything is journaled (the ledger
        refuses it the same way if it is)."""
        refusal = self.ledger.unreconcilable(account_id)
        if refusal is not None:
            raise NotAllowed(refusal)

    def live_accounts(self) -> list[str]:
        """Accounts reconciliation covers: every account known that is not paper."""
        return [
            account.account_id
            for account, _ in self.accounts()
            if account.account_kind is AccountKind.LIVE
        ]

    def reconciliation(self, account_id: str) -> Reconciliation:
        run = self.ledger.reconciliations.latest(account_id)
        if run is None:
            raise NotFound(f"account {account_id!r} has not been reconciled yet")
        return run

    def reconciliations(
        self, account_id: str, before_sequence: int, limit: int
    ) -> list[Reconciliation]:
        """Runs newest first, older than `before_sequence` (0: from the latest); one more
        than `limit` says more follow."""
        runs = self.ledger.reconciliations.runs(account_id)
        if before_sequence:
            runs = itertools.dropwhile(lambda run: run.sequence >= before_sequence, runs)
        return list(itertools.islice(runs, limit + 1))

    def residual_view(self, row: ResidualRow) -> PositionView:
        """A residual row as queries show it, valued at its instrument's price."""
        key = PositionKey(row.account_id, row.owner, row.instrument_id)
        position = Position(
            key=key, multiplier=row.multiplier, quantity=row.quantity,
            cost_basis=row.cost_basis, currency=row.currency, updated_at_ns=row.timestamp_ns,
            last_sequence=row.sequence,
        )  # fmt: skip
        price = self.ledger.book.price(row.instrument_id)
        if price.source is MarkSource.NONE:  # never traded nor marked here: the broker's price
            known = row.broker_price if row.broker_price is not None else row.avg_cost
            price = Price(known, MarkSource.NONE, row.timestamp_ns)
        base, rate = self.base_of(row.account_id, row.currency)
        view = position_view(
            position,
            price.price,
            self.ledger.book.precision,
            price,
            base_currency=base,
            fx_rate=rate,
        )  # fmt: skip  (a residual row has no fees)
        return replace(view, residual=True)

    def reports_for(self, events: Iterable[Sequenced]) -> list[ReconciliationRun]:
        """The runs of broker snapshots applied earlier, still kept (for views catching up
        after a restart)."""
        found = []
        for sequence, event in events:
            if not isinstance(event, BrokerPositions):
                continue
            runs = list(self.ledger.reconciliations.runs(event.account_id))  # newest first
            for index, run in enumerate(runs):
                if run.sequence == sequence:
                    previous = runs[index + 1] if index + 1 < len(runs) else None
                    found.append(self.reconciliation_changed(run, previous).run)
        return found

    # -- marks -----------------------------------------------------------------------------

    def apply_marks(self, marks: Sequence[Mark], rates: Sequence[FxRate]) -> tuple[int, int]:
        """Values instruments at new marks and keeps new FX rates; returns how many of each
        were older than what is held (ignored). Subscribers hear of it coalesced."""
        stale_marks = stale_rates = 0
        plausible = self._clock_ns() + self.time_window.max_ahead_ns
        for mark in marks:
            if self.ledger.book.set_mark(mark, plausible):
                self._pending_marks[mark.instrument_id] = mark
            else:
                stale_marks += 1
        for rate in rates:
            if self.ledger.fx.set(rate, plausible):
                self._queue_fx(rate)
            else:
                stale_rates += 1
        if len(marks) + len(rates) > stale_marks + stale_rates:
            self._marks_unsaved = True
            if self._marks_flush is None:
                self._marks_flush = asyncio.get_running_loop().call_later(
                    self.mark_publish_seconds, self._flush_marks
                )
        return stale_marks, stale_rates

    def _flush_marks(self) -> None:
        """Publishes the latest mark of each instrument that moved since the last flush, and
        hands marks to the store at most every `marks_save_seconds`."""
        self._marks_flush = None
        pending, self._pending_marks = self._pending_marks, {}
        sequence = self.hub.latest_sequence
        self.hub.publish_ephemeral(
            [
                (Topic("", "", instrument_id, is_position=False, is_market=True),
                 MarkChanged(sequence, mark))
                for instrument_id, mark in pending.items()
            ]
        )  # fmt: skip
        now = asyncio.get_running_loop().time()
        if self._marks_unsaved and now - self._marks_saved_at >= self.marks_save_seconds:
            self._marks_unsaved = False
            self._marks_saved_at = now
            self.projector.submit_marks(self.ledger.book.market_marks(), self.ledger.fx.rates())
        elif self._marks_unsaved:
            self._marks_flush = asyncio.get_running_loop().call_later(
                self.marks_save_seconds, self._flush_marks
            )

    def save_marks_now(self) -> None:
        """On shutdown: the latest marks go to the store with the last views write."""
        if self._marks_flush is not None:
            self._marks_flush.cancel()
            self._marks_flush = None
        if self._marks_unsaved:
            self._marks_unsaved = False
            self.projector.submit_marks(self.ledger.book.market_marks(), self.ledger.fx.rates())

    # -- FX rates of record -----------------------------------------------------------------

    def _queue_fx(self, rate: FxRate) -> None:
        """Queues a rate the valuation table took for the journal (see FxHistory): coalesced
        per pair, the latest wins, unless every rate is journaled (fx_journal_seconds 0 and
        the store working)."""
        self._fx_pending[self._fx_key(rate)] = rate
        if self._fx_flush is None:
            loop = asyncio.get_running_loop()
            wait = self._fx_journaled_at + self.fx_journal_seconds - loop.time()
            self._fx_flush = loop.call_later(max(wait, 0.0), self._journal_fx)

    def _fx_key(self, rate: FxRate) -> tuple[str, str, int]:
        low, high = sorted((rate.base, rate.quote))
        every = self.fx_journal_seconds <= 0 and not self._fx_outage
        return low, high, rate.time_ns if every else 0

    def _journal_fx(self) -> None:
        """Admits the pending rates to the journal, in time order; their durability is not
        awaited (the mark stream's acks never wait for the store). A store that refuses them
        keeps them pending (the latest per pair) for the next flush; logged once per outage."""
        self._fx_flush = None
        if not self._fx_pending:
            return
        rates = sorted(self._fx_pending.values(), key=lambda r: (r.time_ns, r.base, r.quote))
        loop = asyncio.get_running_loop()
        self._fx_journaled_at = loop.time()
        try:
            outcomes, _ = self.admit([fx_fixing(rate) for rate in rates])
        except StorageUnavailable as error:
            if not self._fx_outage:
                self._fx_outage = True
                log.error(
                    "FX rates not journaled, the store is unavailable (%s): the latest rate of "
                    "each pair is kept and journaled once it works",
                    error,
                )
            self._fx_pending = {self._fx_key(rate): rate for rate in rates}  # latest wins
            self._fx_flush = loop.call_later(
                max(self.fx_journal_seconds, FX_RETRY_SECONDS), self._journal_fx
            )
            return
        self._fx_pending = {}
        if self._fx_outage:
            self._fx_outage = False
            log.info("FX rates journaled again (%d held while the store was down)", len(rates))
        for rate, outcome in zip(rates, outcomes, strict=True):
            if outcome.result is Result.REJECTED:  # another rate of the same pair and time
                _fx_conflict_log.log(
                    logging.WARNING,
                    "fx",
                    "FX rate %s/%s %s not journaled: %s",
                    rate.base,
                    rate.quote,
                    rate.rate,
                    outcome.reason,
                )

    def journal_fx_now(self) -> None:
        """On shutdown, before the last commit: the pending FX rates go to the journal."""
        if self._fx_flush is not None:
            self._fx_flush.cancel()
            self._fx_flush = None
        self._journal_fx()
        if self._fx_flush is not None:  # the store is down: nothing more can be done
            self._fx_flush.cancel()
            self._fx_flush = None
            log.error("%d FX rates not journaled at stop: store down", len(self._fx_pending))

    # -- queries ---------------------------------------------------------------------------

    def get_position(self, account_id: str, instrument_id: str, strategy_id: str) -> PositionView:
        row = self.ledger.book.get(PositionKey(account_id, strategy_id, instrument_id))
        if row is None:
            level = f"strategy {strategy_id!r}" if strategy_id else "the account-level book"
            raise NotFound(
                f"no position in {instrument_id!r} for {level} of account {account_id!r}"
            )
        return self.view(row)

    def view(self, row: Position) -> PositionView:
        """A row's view, with its account's base currency and the rate into it."""
        account_id = row.key.account_id
        base, rate = self.base_of(account_id, row.currency)
        rates = fee_rates(row, lambda currency: self.base_of(account_id, currency)[1])
        return self.ledger.book.view(row, base, rate, rates)

    def base_of(self, account_id: str, currency: str) -> tuple[str, Decimal | None]:
        """The account's base currency and the latest rate from `currency` into it (None:
        no quote): one home for queries, updates and the analysts' views."""
        base = self.ledger.accounts.base_currency(account_id)
        return base, self.ledger.fx.rate(currency, base)

    def strategy_portfolio(
        self,
        strategy_id: str,
        account_id: str = ALL,
        include_flat: bool = False,
        kind: AccountKind | None = None,
    ) -> StrategyPortfolio:
        """The strategy in one account, or across its accounts: of `kind` only, or (None)
        one portfolio per kind it trades in side by side, never paper added to live (as
        `portfolio_summary`). O(rows of the strategy + its accounts x currencies)."""
        book = self.ledger.book
        if not book.has_strategy(strategy_id, account_id):
            where = f" in account {account_id!r}" if account_id else ""
            raise NotFound(f"strategy {strategy_id!r} has no positions{where}")
        rows = list(book.strategy_positions(strategy_id, account_id))
        if account_id:
            account_kind = self.ledger.accounts.get(account_id).account_kind
            return self._strategy_share(strategy_id, account_id, rows, include_flat, account_kind)
        by_kind = self._accounts_by_kind({row.key.account_id for row in rows})
        if kind is not None:
            if kind not in by_kind:
                raise NotFound(f"strategy {strategy_id!r} has no positions in {kind.name} accounts")
            return self._kind_share(strategy_id, rows, by_kind[kind], include_flat, kind)
        kinds = sorted(by_kind, key=lambda k: k.value)  # PAPER, then LIVE
        parts = [self._kind_share(strategy_id, rows, by_kind[k], include_flat, k) for k in kinds]
        if len(parts) == 1:
            return replace(parts[0], by_account_kind=parts)
        return StrategyPortfolio(
            strategy_id, ALL, [view for part in parts for view in part.positions],
            None, self.sequence, InBase(self.reporting_currency, None, [], []),
            by_account_kind=parts,
        )  # fmt: skip

    def _kind_share(
        self,
        strategy_id: str,
        rows: list[Position],
        account_ids: list[str],
        include_flat: bool,
        kind: AccountKind,
    ) -> StrategyPortfolio:
        """The strategy across `account_ids` (all of `kind`): their rows of `rows`."""
        held = set(account_ids)
        mine = [row for row in rows if row.key.account_id in held]
        return self._strategy_share(strategy_id, ALL, mine, include_flat, kind, account_ids)

    def _strategy_share(
        self,
        strategy_id: str,
        account_id: str,
        rows: list[Position],
        include_flat: bool,
        kind: AccountKind,
        account_ids: Iterable[str] = (),
    ) -> StrategyPortfolio:
        """The strategy's `rows` and totals in `account_id`, or (ALL) across `account_ids`,
        in the accounts' common base currency (else the reporting one)."""
        book = self.ledger.book
        scopes = list(account_ids) or [account_id]
        by_currency = merged(book.strategy_currency_totals(strategy_id, a) for a in scopes)
        base, shared = self._common_base(scopes)
        return StrategyPortfolio(
            strategy_id,
            account_id,
            [self.view(row) for row in rows if include_flat or row.quantity],
            one_currency(by_currency),
            self.sequence,
            self.in_base(by_currency, base, historic=shared),
            account_kind=kind,
        )

    def _common_base(self, account_ids: Iterable[str]) -> tuple[str, bool]:
        """The accounts' base currency if they share one (True), else the reporting currency
        (and whether every account has it as its base)."""
        bases = {self.ledger.accounts.base_currency(account_id) for account_id in account_ids}
        if len(bases) == 1:
            return bases.pop(), True
        return self.reporting_currency, not bases

    def portfolio_summary(
        self, account_id: str = ALL, kind: AccountKind | None = None
    ) -> PortfolioSummary:
        """One account's summary, or across accounts: of `kind` only, or (None) one summary
        per kind present side by side, never paper added to live. O(accounts x strategies x
        currencies): every figure comes from running totals."""
        if account_id:
            return self._account_summary(account_id)
        by_kind = self._accounts_by_kind()
        every = len(by_kind) <= 1  # one kind holds every account: the book's own totals do
        if kind is not None:
            return self._kind_summary(kind, by_kind.get(kind, []), every and kind in by_kind)
        kinds = sorted(by_kind, key=lambda k: k.value)  # PAPER, then LIVE
        parts = [self._kind_summary(k, by_kind[k], every) for k in kinds]
        if len(parts) == 1:
            return replace(parts[0], by_account_kind=parts)
        return PortfolioSummary(
            ALL, None, [], self.sequence, None,
            InBase(self.reporting_currency, None, [], []), [], by_account_kind=parts,
        )  # fmt: skip

    def _account_summary(self, account_id: str) -> PortfolioSummary:
        book, accounts = self.ledger.book, self.ledger.accounts
        known = book.has_account(account_id) or accounts.is_defined(account_id)
        if not (known or self.ledger.balances.of_account(account_id)):
            raise NotFound(f"account {account_id!r} has no positions, balances or definition")
        account = accounts.get(account_id)
        base = account.base_currency
        strategies = []
        for strategy_id in book.strategies(account_id):
            by_currency = book.strategy_currency_totals(strategy_id, account_id)
            strategies.append(
                (
                    strategy_id,
                    one_currency(by_currency),
                    self.in_base(by_currency, base, historic=True),
                )
            )
        by_currency = book.account_currency_totals(account_id)
        return PortfolioSummary(
            account_id,
            one_currency(by_currency),
            strategies,
            self.sequence,
            account,
            self.in_base(by_currency, base, historic=True),
            [balance.copy() for balance in self.ledger.balances.of_account(account_id)],
            account_kind=account.account_kind,
        )

    def _accounts_by_kind(self, among: Iterable[str] | None = None) -> dict[AccountKind, list[str]]:
        """Every account known (rows, cash or a definition), or only those `among`, by kind,
        in id order. An account nobody defined is whatever the registry says (live)."""
        ledger, accounts = self.ledger, self.ledger.accounts
        if among is None:
            among = {
                *(account.account_id for account in accounts),
                *ledger.book.accounts(),
                *ledger.balances.accounts(),
            }
        by_kind: dict[AccountKind, list[str]] = {}
        for account_id in sorted(among):
            by_kind.setdefault(accounts.get(account_id).account_kind, []).append(account_id)
        return by_kind

    def _kind_summary(
        self, kind: AccountKind, account_ids: list[str], every: bool = False
    ) -> PortfolioSummary:
        """The summary across `account_ids` (all of `kind`), in the reporting currency;
        `every`: they are every account of the book, whose totals across accounts are these."""
        book, base = self.ledger.book, self.reporting_currency
        accounts = self.ledger.accounts
        historic = all(accounts.base_currency(a) == base for a in account_ids)
        per_strategy: dict[str, dict[str, Totals]] = {}
        if every:
            for strategy_id in book.strategies(ALL):
                per_strategy[strategy_id] = book.strategy_currency_totals(strategy_id, ALL)
            by_currency = book.account_currency_totals(ALL)
        else:
            parts: dict[str, list[dict[str, Totals]]] = {}
            for account_id in account_ids:
                for strategy_id in book.strategies(account_id):
                    parts.setdefault(strategy_id, []).append(
                        book.strategy_currency_totals(strategy_id, account_id)
                    )
            per_strategy = {strategy_id: merged(parts[strategy_id]) for strategy_id in parts}
            by_currency = merged(book.account_currency_totals(a) for a in account_ids)
        strategies = []
        for strategy_id in sorted(per_strategy):
            totals = per_strategy[strategy_id]
            strategies.append(
                (strategy_id, one_currency(totals), self.in_base(totals, base, historic))
            )
        return PortfolioSummary(
            ALL,
            one_currency(by_currency),
            strategies,
            self.sequence,
            None,
            self.in_base(by_currency, base, historic),
            self._cash_across_accounts(account_ids),
            account_kind=kind,
        )

    def _cash_across_accounts(self, account_ids: Iterable[str]) -> list[Balance]:
        """Cash per currency and chain, summed over the accounts (account_id "")."""
        summed: dict[BalanceKey, Balance] = {}
        for account_id in account_ids:
            for balance in self.ledger.balances.of_account(account_id):
                key = BalanceKey("", balance.key.currency, balance.key.chain_id)
                total = summed.setdefault(key, Balance(key))
                with localcontext(EXACT):
                    total.cash += balance.cash
                    total.reserved += balance.reserved
                total.updated_at_ns = max(total.updated_at_ns, balance.updated_at_ns)
                total.last_sequence = max(total.last_sequence, balance.last_sequence)
        return [summed[key] for key in sorted(summed)]

    def fx_rate(self, from_currency: str, to_currency: str) -> Decimal | None:
        """The latest rate between two currencies (None: no quote), for figures that convert
        each part at its own rate (a row's fees in other currencies)."""
        return self.ledger.fx.rate(from_currency, to_currency)

    def in_base(self, by_currency: dict[str, Totals], base: str, historic: bool) -> InBase:
        """Totals per currency converted into `base` at the latest rates, realized P&L at the
        rates in force when realized when `historic` (every row's account has `base` as its
        base currency; across accounts of other bases, at the latest rate). A currency with
        a rate missing (now, or when P&L was realized) leaves the sum unset."""
        precision = self.ledger.book.precision
        converted: list[Totals] = []
        missing: list[str] = []
        rows: list[tuple[str, Totals, Decimal | None]] = []
        for currency, totals in by_currency.items():
            rate = self.ledger.fx.rate(currency, base)
            rows.append((currency, totals, rate))
            in_base = (
                None if rate is None else totals.converted(base, rate, precision, historic=historic)
            )
            if in_base is None:
                missing.append(currency)
            else:
                converted.append(in_base)
        total = None if missing else Totals.combined(converted)
        return InBase(base, total, missing, rows)

    # -- orders, balances, instruments, accounts -------------------------------------------

    def order(self, account_id: str, order_id: str, order_ref: str) -> Order:
        order = self.ledger.orders.find(account_id, order_id, order_ref)
        if order is None:
            which = f"order_id {order_id!r}" if order_id else f"order_ref {order_ref!r}"
            raise NotFound(f"account {account_id!r} has no order with {which}")
        return order.copy()

    async def order_anywhere(self, account_id: str, order_id: str, order_ref: str) -> Order:
        """The order in memory, else (it ended more than the retention ago and left memory)
        as the store's orders view holds it, read on the views' thread: an order in memory
        costs no more than `order`. Raises NotFound, StorageUnavailable."""
        try:
            return self.order(account_id, order_id, order_ref)
        except NotFound:
            stored = await asyncio.get_running_loop().run_in_executor(
                self._views_executor, self._store.order_from_views, account_id, order_id,
                order_ref,
            )  # fmt: skip
            if stored is None:
                raise
            return stored

    def open_orders(
        self, account_id: str, strategy_id: str, after: tuple[str, str, str] | None, limit: int
    ) -> OrderPage:
        index = self.ledger.orders.open_orders
        prefix = tuple(part for part in (account_id, strategy_id) if part)
        lower = (*prefix, *[""] * (3 - len(prefix)))
        upper = (*prefix, *[_HIGHEST] * (3 - len(prefix)))
        orders: list[Order] = []
        for key in index.irange(after or lower, upper, inclusive=(after is None, True)):
            if len(orders) == limit:
                return OrderPage(
                    orders,
                    (orders[-1].account_id, orders[-1].strategy_id, orders[-1].order_key),
                    self.sequence,
                )
            orders.append(replace(index[key], history=[]))
        return OrderPage(orders, None, self.sequence)

    def balances(self, account_id: str) -> AccountBalances:
        ledger = self.ledger
        balances = ledger.balances.of_account(account_id)
        if not balances and not ledger.accounts.is_defined(account_id):
            raise NotFound(f"account {account_id!r} has no balances")
        reservations = [r.copy() for r in ledger.balances.active(account_id)]
        return AccountBalances(
            ledger.accounts.get(account_id),
            [balance.copy() for balance in balances],
            reservations,
            self.sequence,
        )

    def instrument(self, instrument_id: str) -> InstrumentDefinition:
        instrument = self.ledger.instruments.get(instrument_id)
        if instrument is None:
            raise NotFound(f"no instrument {instrument_id!r}")
        return instrument

    def instruments(self, after: str, limit: int) -> list[InstrumentDefinition]:
        """Up to `limit` instruments in id order, from just after `after`."""
        return self.ledger.instruments.page(after, limit)

    def account(self, account_id: str) -> AccountDefinition:
        """The account as defined, or as an undefined one is treated."""
        return self.ledger.accounts.get(account_id)

    def accounts(self) -> list[tuple[AccountDefinition, bool]]:
        """Defined accounts, then those known only from their events; True when defined."""
        ledger = self.ledger
        defined = list(ledger.accounts)
        known = {account.account_id for account in defined}
        active = set(ledger.balances.accounts()) | set(ledger.book.accounts())
        undefined = [ledger.accounts.get(a) for a in sorted(active - known)]
        return [(a, True) for a in defined] + [(a, False) for a in undefined]

    def reservation(self, account_id: str, reservation_id: str, sequence: int = 0) -> Reservation:
        """The reservation; one that ended and left memory is rebuilt from its journaled
        event at `sequence` (see Ledger.reservation). Raises NotFound, StorageUnavailable."""
        try:
            return self.ledger.reservation(account_id, reservation_id, sequence).copy()
        except JournalUnreadable as error:
            raise StorageUnavailable(str(error)) from error
        except LookupError as missing:
            raise NotFound(str(missing)) from None

    def consolidated(self, account_id: str, instrument_id: str) -> Consolidated:
        rows = self.ledger.book.instrument_rows(account_id, instrument_id)
        if not rows:
            raise NotFound(f"account {account_id!r} has no position in {instrument_id!r}")
        account_row = next(row for row in rows if row.key.is_account_level)
        strategy_rows = [row for row in rows if not row.key.is_account_level]
        with localcontext(EXACT):
            attributed = sum((row.quantity for row in strategy_rows), Decimal(0))
        line = self.ledger.reconciliations.line(account_id, instrument_id)
        latest = self.ledger.reconciliations.latest(account_id)
        return Consolidated(
            self.ledger.accounts.get(account_id),
            instrument_id,
            self.view(account_row),
            [self.view(row) for row in strategy_rows],
            attributed,
            self.sequence,
            reconciled=line,
            reconciled_at_ns=latest.timestamp_ns if line and latest else 0,
            residual=self.residual_view(line.residual) if line and line.residual else None,
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
            positions.append(self.view(row))
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
        """Drops the traces whose latest leg was received a TTL ago or more (by this
        service's clock: the fills' own times do not count)."""
        return self.ledger.traces.expire(self._clock_ns())

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(
        self, filter_: SubscriptionFilter, from_sequence: int
    ) -> tuple[Iterator[Published[PortfolioChange, Payload]], Subscriber[PortfolioChange, Payload]]:
        return self.hub.subscribe(filter_, from_sequence)
