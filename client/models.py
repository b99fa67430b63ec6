"""The SDK's own types: what callers build and get back instead of protobuf messages.

Amounts are `Decimal` because positions and P&L must reconcile to the cent with the broker;
a float would not. Timestamps are timezone-aware UTC `datetime`s; an unset timestamp on the wire
is `None`. Every type is an immutable value, safe to share between threads and tasks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

_ZERO = Decimal(0)


def require_decimals(value: object, *names: str) -> None:
    """Refuses, naming the field, an amount that is not a `Decimal`: a float such as 0.1 is
    not the amount it looks like, and booking it would make the books disagree with the
    broker's by a rounding error nobody typed. None passes (an optional amount left out)."""
    for name in names:
        amount = getattr(value, name)
        if amount is None or isinstance(amount, Decimal):
            continue
        inexact = isinstance(amount, float)
        hint = ": a float is inexact, pass Decimal('...') instead" if inexact else ""
        raise TypeError(
            f"{type(value).__name__}.{name} must be a decimal.Decimal, got "
            f"{type(amount).__name__} {amount!r}{hint}"
        )


class Side(enum.Enum):
    """Buy or sell."""

    UNSPECIFIED = 0
    BUY = 1
    SELL = 2


class OrderStatus(enum.Enum):
    """The broker's view of an order's life cycle."""

    UNSPECIFIED = 0
    PENDING_SUBMIT = 1
    PRE_SUBMITTED = 2
    SUBMITTED = 3
    PARTIALLY_FILLED = 4
    FILLED = 5
    PENDING_CANCEL = 6
    CANCELLED = 7
    REJECTED = 8
    INACTIVE = 9


class EventResult(enum.Enum):
    """What the service did with one ingested event."""

    UNSPECIFIED = 0
    #: Applied now, under a new sequence number.
    ACCEPTED = 1
    #: Already applied earlier: counted once; the ack carries the original sequence.
    DUPLICATE = 2
    #: Invalid, or an id reused with different content: nothing changed.
    REJECTED = 3


class RejectCode(enum.Enum):
    """Why the service rejected an event, for programs (`EventAck.reason` is for people)."""

    #: Not rejected (accepted or duplicate).
    UNSPECIFIED = 0
    #: A field is missing or invalid: resending the same event fails again.
    INVALID_FIELD = 1
    #: The id was already used by a different event.
    ID_REUSED = 2
    #: It names something the service does not have (the fill a correction or commission
    #: amendment names).
    NOT_FOUND = 3
    #: The service's state does not allow it (an undefined instrument in a strict registry).
    FAILED_PRECONDITION = 4
    #: It contradicts what the service holds.
    CONFLICT = 5
    #: It could not be decided now: resend it later.
    RETRY_LATER = 6


class PositionLevel(enum.Enum):
    """Which book a position row belongs to."""

    #: In a subscription: both levels. In a listing: strategy rows.
    UNSPECIFIED = 0
    #: A strategy's attributed row.
    STRATEGY = 1
    #: The account-level book, every fill of the account as the broker sees it.
    ACCOUNT = 2
    #: A row reconciliation added (strategy_id UNATTRIBUTED or RESIDUAL).
    RESIDUAL = 3


class AccountKind(enum.Enum):
    """Paper or live. Paper figures are never added to live ones."""

    #: In a summary query: across accounts of both kinds, side by side.
    UNSPECIFIED = 0
    #: Simulated: needs no broker, never reconciled.
    PAPER = 1
    #: Held at the broker (an account nobody defined is live).
    LIVE = 2


class BookingPlacement(enum.Enum):
    """Where a fill was booked in its rows, which follow execution time whatever the order
    fills arrive in."""

    #: Not a fill (or not accepted now), or a service that predates placements.
    UNSPECIFIED = 0
    #: After every fill already in its rows: nothing booked before changed.
    IN_ORDER = 1
    #: Older than fills already booked: the row was recomputed in execution-time order, so its
    #: realized P&L and average cost may have changed after the fact.
    RESTATED = 2
    #: Older than the restatement window: booked at the window's start, not its exact place.
    OUTSIDE_WINDOW = 3


class UpdateKind(enum.Enum):
    """What a live update is about."""

    UNSPECIFIED = 0
    POSITION_OPENED = 1
    POSITION_MODIFIED = 2
    POSITION_CLOSED = 3
    ORDER_STATUS = 4
    #: Nothing happened; everything up to the update's sequence has been sent.
    HEARTBEAT = 5
    #: An instrument's market price moved (opt-in, coalesced, not replayed).
    MARK = 6
    #: A cash balance changed (opt-in).
    BALANCE = 7
    #: A reconciliation run against the broker finished (opt-in): its report.
    RECONCILIATION = 8
    #: Several updates in one message; never yielded: `subscribe` yields them one by one.
    BATCH = 9


class MarkSource(enum.Enum):
    """Where a position's market price comes from."""

    UNSPECIFIED = 0
    #: A mark sent with `send_marks`.
    MARKET = 1
    #: No mark for the instrument yet: its last fill price.
    LAST_FILL = 2


class AssetClass(enum.Enum):
    """The kind of an instrument."""

    UNSPECIFIED = 0
    EQUITY = 1
    FUTURE = 2
    OPTION = 3
    CRYPTO = 4
    FX = 5


class OptionRight(enum.Enum):
    """An option's right."""

    UNSPECIFIED = 0
    CALL = 1
    PUT = 2


class ReservationStatus(enum.Enum):
    """Where a cash reservation is in its life."""

    UNSPECIFIED = 0
    #: Still holds cash.
    ACTIVE = 1
    #: Given back, in whole.
    RELEASED = 2
    #: Used up by the order's fills.
    CONSUMED = 3


# ---------------------------------------------------------------------------------------------
# Execution events (what goes in)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """One execution. `fill_id` is the idempotency key: resending a fill is always safe."""

    fill_id: str
    account_id: str
    strategy_id: str
    instrument_id: str
    side: Side
    #: Always positive; the side gives the direction.
    quantity: Decimal
    #: May be zero or negative (spreads and some futures trade below zero).
    price: Decimal
    #: When the venue executed it. The service may refuse a fill without one.
    timestamp: datetime | None = None
    #: The fill's total commission; negative for a rebate.
    commission: Decimal = _ZERO
    commission_currency: str = ""
    #: IB's orderRef, which also names the strategy.
    order_ref: str = ""
    venue: str = ""
    #: Groups the legs of a multi-step trade.
    trace_id: str = ""
    #: The broker's order id.
    order_id: str = ""
    #: A broker correction: the fill_id of the execution this one replaces (IB: the same
    #: execId stem with a new suffix; name the original). The service takes back what it
    #: booked for that execution and books this one instead.
    corrects: str = ""

    def __post_init__(self) -> None:
        require_decimals(self, "quantity", "price", "commission")

    @property
    def event_id(self) -> str:
        """The id the service acks this fill under."""
        return self.fill_id


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderStatusUpdate:
    """A change in an order's status. `update_id` is the idempotency key."""

    update_id: str
    account_id: str
    instrument_id: str
    status: OrderStatus
    strategy_id: str = ""
    #: At least one of order_ref and order_id is required by the service.
    order_ref: str = ""
    order_id: str = ""
    filled_quantity: Decimal = _ZERO
    remaining_quantity: Decimal = _ZERO
    #: None until something has filled.
    avg_fill_price: Decimal | None = None
    timestamp: datetime | None = None
    side: Side = Side.UNSPECIFIED
    perm_id: str = ""

    def __post_init__(self) -> None:
        require_decimals(self, "filled_quantity", "remaining_quantity", "avg_fill_price")

    @property
    def event_id(self) -> str:
        """The id the service acks this update under."""
        return self.update_id


@dataclass(frozen=True, slots=True, kw_only=True)
class CommissionAmendment:
    """A fill's commission reported after the fill was sent: it sets the fill's commission
    (replacing what the fill carried), so fees and cash change by the difference; quantity,
    average cost and realized P&L never do. Send it after the fill's ack: a fill the service
    does not have (or no longer has, past the correction window) is rejected NOT_FOUND.
    `amendment_id` is the idempotency key."""

    amendment_id: str
    account_id: str
    #: The fill (or correction) whose commission this is.
    fill_id: str
    #: The fill's whole commission; negative for a rebate.
    commission: Decimal
    commission_currency: str = ""
    #: When the broker reported it.
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        require_decimals(self, "commission")

    @property
    def event_id(self) -> str:
        """The id the service acks this amendment under."""
        return self.amendment_id


@dataclass(frozen=True, slots=True, kw_only=True)
class CashTransfer:
    """A deposit (amount > 0) or a withdrawal (amount < 0) of cash; cash may go below zero
    (margin). `transfer_id` is the idempotency key."""

    transfer_id: str
    account_id: str
    currency: str
    amount: Decimal
    timestamp: datetime | None = None
    #: The chain of a crypto venue's balance; empty off-chain.
    chain_id: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        require_decimals(self, "amount")

    @property
    def event_id(self) -> str:
        """The id the service acks this transfer under."""
        return self.transfer_id


#: Anything `ingest` accepts.
ExecutionEvent = Fill | OrderStatusUpdate | CommissionAmendment | CashTransfer


@dataclass(frozen=True, slots=True, kw_only=True)
class EventAck:
    """The service's answer to one ingested event."""

    event_id: str
    #: The global sequence the event was applied under (the original one for a duplicate);
    #: 0 when rejected.
    sequence: int
    result: EventResult
    #: Why it was rejected or treated as a duplicate; names the offending field if there is one.
    reason: str = ""
    #: For an accepted fill or correction: where it was booked in its rows.
    placement: BookingPlacement = BookingPlacement.UNSPECIFIED
    #: Why it was rejected, for programs (UNSPECIFIED unless REJECTED).
    code: RejectCode = RejectCode.UNSPECIFIED

    @property
    def applied(self) -> bool:
        """True when the event is part of the book, whether now or earlier."""
        return self.result in (EventResult.ACCEPTED, EventResult.DUPLICATE)


# ---------------------------------------------------------------------------------------------
# Positions and totals (what comes out)


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """One position row with average-cost accounting.

    Every amount is in `currency` (the instrument's), except `other_fees` (each in its own)
    and the `*_base` figures (in `base_currency`, at `fx_rate`; None when a rate is missing,
    never zero)."""

    account_id: str
    #: Empty for the account-level row.
    strategy_id: str
    instrument_id: str
    level: PositionLevel
    #: Signed: positive long, negative short, zero flat.
    quantity: Decimal
    #: Cost basis / |quantity|, rounded to the service's precision; zero when flat.
    avg_cost: Decimal
    #: Gross: fees are not deducted.
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    #: Commissions charged in the row's currency (see other_fees for the rest).
    fees: Decimal
    #: realized_pnl + unrealized_pnl - fees, in the row's currency (other_fees not in it).
    net_pnl: Decimal
    market_price: Decimal
    market_value: Decimal
    #: The exact total cost of the open quantity, signed like quantity.
    cost_basis: Decimal
    multiplier: Decimal
    trade_count: int
    #: When the current open leg was opened; None while flat.
    opened_at: datetime | None
    updated_at: datetime | None
    #: The sequence of the last event that changed this row.
    last_sequence: int
    #: The instrument's currency.
    currency: str = ""
    #: Commissions charged in other currencies, (currency, amount) by currency.
    other_fees: tuple[tuple[str, Decimal], ...] = ()
    #: The account's base currency and units of it per unit of `currency` (None: no rate).
    base_currency: str = ""
    fx_rate: Decimal | None = None
    realized_pnl_base: Decimal | None = None
    unrealized_pnl_base: Decimal | None = None
    #: fees and other_fees in base currency, each at its own rate; None if any rate is missing.
    fees_base: Decimal | None = None
    #: Counts every fee, other_fees included; None if any rate is missing.
    net_pnl_base: Decimal | None = None
    market_value_base: Decimal | None = None
    #: Since the start of the trading day (the account's last close; before the first,
    #: inception): realized P&L, change in unrealized P&L, fees and net. None from a service
    #: that does not send them.
    day_realized_pnl: Decimal | None = None
    day_unrealized_change: Decimal | None = None
    day_fees: Decimal | None = None
    day_net_pnl: Decimal | None = None
    #: Where market_price comes from (a mark, or the last fill before any mark) and when it
    #: was set: how old the price is.
    mark_source: MarkSource = MarkSource.UNSPECIFIED
    marked_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioTotals:
    """The aggregates a risk manager watches."""

    realized_pnl: Decimal = _ZERO
    unrealized_pnl: Decimal = _ZERO
    fees: Decimal = _ZERO
    net_pnl: Decimal = _ZERO
    long_exposure: Decimal = _ZERO
    #: Positive: the sum of |market value| of short rows.
    short_exposure: Decimal = _ZERO
    gross_exposure: Decimal = _ZERO
    net_exposure: Decimal = _ZERO
    #: Rows with a non-zero quantity.
    open_positions: int = 0
    #: All rows, flat ones included.
    total_positions: int = 0
    trade_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrencyTotals:
    """Totals of the rows (and fees) in one currency."""

    currency: str
    totals: PortfolioTotals
    #: Units of the base currency per unit of this one; None when no rate is known.
    fx_rate: Decimal | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyPortfolio:
    """A strategy's share of the book, across accounts (account_id empty) or within one.

    Nothing adds different currencies: `totals` is None when more than one is involved
    (fee currencies count); read `by_currency` and `base_totals`. Nor paper to live: across
    accounts of both kinds `positions` lists every row but the figures are None or empty and
    `by_account_kind` holds one portfolio per kind."""

    strategy_id: str
    account_id: str
    positions: tuple[Position, ...]
    totals: PortfolioTotals | None
    as_of_sequence: int
    base_currency: str = ""
    #: by_currency converted into base_currency; None when a rate is missing.
    base_totals: PortfolioTotals | None = None
    missing_fx_rates: tuple[str, ...] = ()
    by_currency: tuple[CurrencyTotals, ...] = ()
    #: The account's kind; across accounts, the kind summed (UNSPECIFIED: both, side by side).
    account_kind: AccountKind = AccountKind.UNSPECIFIED
    by_account_kind: tuple[StrategyPortfolio, ...] = ()
    #: Fills booked on the strategy's rows.
    trade_count: int = 0
    #: The strategy's first fill (its execution time); None before any.
    inception_time: datetime | None = None
    #: In base_currency: base_totals' net P&L and fees; None when a rate is missing.
    total_pnl: Decimal | None = None
    total_fees: Decimal | None = None
    #: The largest fall of the cumulative daily net P&L from a peak (>= 0), over the closed
    #: trading days; None across accounts of different base currencies.
    max_drawdown: Decimal | None = None
    #: Of daily net P&L, annualized (a float: an estimate); None with fewer than two days or
    #: no variation. `get_performance` has the rest of the track record.
    sharpe_ratio: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyTotals:
    """One strategy's attributed totals within a summary (totals: None when more than one
    currency is involved)."""

    strategy_id: str
    totals: PortfolioTotals | None
    base_totals: PortfolioTotals | None = None
    by_currency: tuple[CurrencyTotals, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioSummary:
    """The consolidated book's totals (what the broker shows) and each strategy's share.

    Nothing adds different currencies (`account_totals` is None when more than one is
    involved) nor paper to live: across accounts of both kinds the figures here are None or
    empty and `by_account_kind` holds one summary per kind."""

    #: Empty when across accounts.
    account_id: str
    account_totals: PortfolioTotals | None
    strategies: tuple[StrategyTotals, ...]
    as_of_sequence: int
    #: The account's kind; across accounts, the kind summed (UNSPECIFIED: both, side by side).
    account_kind: AccountKind = AccountKind.UNSPECIFIED
    #: The account's base currency (across accounts: the service's reporting currency).
    base_currency: str = ""
    #: by_currency converted into base_currency; None when a rate is missing.
    base_totals: PortfolioTotals | None = None
    missing_fx_rates: tuple[str, ...] = ()
    by_currency: tuple[CurrencyTotals, ...] = ()
    by_account_kind: tuple[PortfolioSummary, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionPage:
    """One page of a position listing; pass next_page_token back for the next one."""

    positions: tuple[Position, ...]
    #: Empty on the last page.
    next_page_token: str
    as_of_sequence: int


# ---------------------------------------------------------------------------------------------
# Multi-step trades


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceLeg:
    """One fill of a multi-step trade."""

    step: int
    sequence: int
    fill_id: str
    account_id: str
    strategy_id: str
    instrument_id: str
    side: Side
    quantity: Decimal
    price: Decimal
    venue: str
    timestamp: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceNet:
    """One instrument's net across a multi-step trade."""

    instrument_id: str
    quantity: Decimal
    #: Signed: sells add, buys subtract, times the multiplier.
    cash_flow: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class TracePosition:
    """The legs of a multi-step trade and their net effect, until the trace expires."""

    trace_id: str
    legs: tuple[TraceLeg, ...]
    net: tuple[TraceNet, ...]
    first_fill_at: datetime | None
    last_fill_at: datetime | None
    expires_at: datetime | None


# ---------------------------------------------------------------------------------------------
# Live updates


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioUpdate:
    """One change, after it happened.

    An event that changes two rows (the strategy's and the account-level one) yields two updates
    with the same sequence.
    """

    sequence: int
    kind: UpdateKind
    #: The fill_id or update_id that caused the change; empty for a heartbeat.
    event_id: str = ""
    #: The row after the change, for position kinds.
    position: Position | None = None
    #: The status event, for ORDER_STATUS.
    order_status: OrderStatusUpdate | None = None
    #: The fill that changed the row, for position kinds.
    fill: Fill | None = None
    #: For position kinds: where the fill was booked (RESTATED: the row's realized P&L and
    #: average cost changed after the fact).
    placement: BookingPlacement = BookingPlacement.UNSPECIFIED
    #: For ORDER_STATUS: the order after the change (its history holds just this transition).
    order: Order | None = None
    #: For BALANCE (opt-in): the balance after the cash moved.
    balance: Balance | None = None
    #: For MARK (opt-in): the instrument's new price.
    mark: MarkPrice | None = None
    #: For RECONCILIATION (opt-in): the run's report.
    reconciliation: Reconciliation | None = None

    @property
    def is_heartbeat(self) -> bool:
        """True for a keep-alive that only reports how far the stream has got."""
        return self.kind is UpdateKind.HEARTBEAT


# ---------------------------------------------------------------------------------------------
# Reconciliation against the broker


class ReconciliationStatus(enum.Enum):
    """How one instrument compared with the broker."""

    UNSPECIFIED = 0
    #: Quantities agree exactly; average costs within the service's tolerance.
    MATCHED = 1
    #: Flat at the broker; the strategies' rows net to zero and are kept.
    FLAT_ATTRIBUTED = 2
    #: The broker holds a position no strategy holds.
    UNATTRIBUTED = 3
    #: The broker's quantity differs from the strategies' sum.
    RESIDUAL = 4
    #: Quantities agree; average costs differ beyond the tolerance.
    COST_MISMATCH = 5
    #: A cash line: the broker's cash differs from the service's beyond the cash tolerance.
    CASH_MISMATCH = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconciliationLine:
    """One instrument of a run: both sides' figures, the attribution, the residual row."""

    instrument_id: str
    status: ReconciliationStatus
    discrepancy: bool
    broker_quantity: Decimal
    #: As the broker reports it (IB: commissions included, per contract for derivatives).
    broker_avg_cost: Decimal
    #: broker_avg_cost / the contract's multiplier: comparable with service_avg_cost.
    broker_unit_cost: Decimal
    account_quantity: Decimal
    service_avg_cost: Decimal
    attributed_quantity: Decimal
    #: Each strategy's quantity, flat rows included.
    strategies: tuple[tuple[str, Decimal], ...]
    residual_quantity: Decimal
    #: The row reconciliation added for the difference (level RESIDUAL), if any.
    residual_position: Position | None
    note: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciliation:
    """One reconciliation run of one account."""

    account_id: str
    snapshot_id: str
    sequence: int
    reconciled_at: datetime | None
    broker_positions: int
    matched: int
    discrepancies: int
    clean: bool
    #: Every instrument of the run (a run from the history keeps only its differences).
    lines: tuple[ReconciliationLine, ...]
    #: Cash per currency, the broker's against the service's (none when the broker reports
    #: no cash); counted in matched, discrepancies and clean like the lines.
    cash: tuple[ReconciliationCashLine, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconciliationCashLine:
    """One currency of a run: the broker's cash against the service's (every chain summed)."""

    currency: str
    #: MATCHED or CASH_MISMATCH.
    status: ReconciliationStatus
    discrepancy: bool
    broker_cash: Decimal
    service_cash: Decimal
    #: broker_cash - service_cash.
    difference: Decimal
    note: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconciliationPage:
    """Runs newest first; pass next_page_token back for older ones (empty: the last page)."""

    reconciliations: tuple[Reconciliation, ...]
    next_page_token: str


# ---------------------------------------------------------------------------------------------
# P&L history, performance and risk
#
# Money is Decimal, None where the service has no figure (a missing FX rate, no trip yet);
# the statistics (ratios, volatility, correlation) are floats because they are estimates, None
# where undefined (too few days, no variation).


@dataclass(frozen=True, slots=True, kw_only=True)
class PnlCurrencyDay:
    """A scope's trading day in one currency (fees charged in another currency count in that
    currency's entry)."""

    currency: str
    #: Booked since the previous close.
    realized_pnl: Decimal
    #: At the close's marks, on what is still held.
    unrealized_pnl: Decimal
    #: Since the previous close.
    unrealized_change: Decimal
    #: Charged since the previous close.
    fees: Decimal
    #: realized_pnl + unrealized_change - fees.
    net_pnl: Decimal
    #: Market value at the close: long minus short, and long plus short.
    exposure: Decimal
    gross_exposure: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class PnlDay:
    """One trading day of a scope, as recorded at its close: the day's figures are changes
    since the previous close. A fill that arrives after the close it was executed before
    counts on the day it arrived."""

    #: The close's date in the session's time zone.
    trading_date: date
    closed_at: datetime | None
    #: The close's sequence in the journal.
    sequence: int
    #: Recorded after the service restarted past the close: includes what arrived until then.
    late: bool
    by_currency: tuple[PnlCurrencyDay, ...]
    #: In the account's base currency: realized at the rates when realized, the rest at the
    #: close's rates; None when a rate was missing (missing_fx_rates names the currencies).
    realized_pnl_base: Decimal | None = None
    unrealized_pnl_base: Decimal | None = None
    fees_base: Decimal | None = None
    net_pnl_base: Decimal | None = None
    exposure_base: Decimal | None = None
    gross_exposure_base: Decimal | None = None
    missing_fx_rates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PnlHistory:
    """An account's book (strategy_id empty) or one strategy's days in it, oldest first."""

    account_id: str
    strategy_id: str
    base_currency: str
    days: tuple[PnlDay, ...]
    #: Every event up to this sequence is in the answer.
    as_of_sequence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrencyPerformance:
    """Trade statistics in one currency. A round trip is a row's life from flat to flat (a
    flip through zero closes one and opens the next); its P&L is the realized P&L booked on
    the row meanwhile minus the row's fees meanwhile."""

    currency: str
    #: Fills booked.
    trade_count: int
    round_trips: int
    #: Trips still open (not counted in round_trips).
    open_trips: int
    wins: int
    losses: int
    #: wins / round_trips; None before a trip has closed.
    win_rate: float | None
    #: Average P&L of winning trips, and of losing ones (<= 0); None without one.
    average_win: Decimal | None
    average_loss: Decimal | None
    #: Gross win / -gross loss; None without a losing trip.
    profit_factor: float | None
    #: The average trip's P&L; None before a trip has closed.
    expectancy: Decimal | None
    #: The best trip (>= 0) and the worst (<= 0); zero without one.
    largest_win: Decimal
    largest_loss: Decimal
    #: Now: realized + unrealized, fees, and net (gross - fees); realized alone.
    gross_pnl: Decimal
    fees: Decimal
    net_pnl: Decimal
    realized_pnl: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class VenuePerformance:
    """What one venue's fills did, in one currency."""

    #: As the fills name it (empty: none given).
    venue: str
    currency: str
    fills: int
    #: Traded notional, buys and sells alike.
    volume: Decimal
    fees: Decimal
    #: Realized P&L the venue's fills booked.
    realized_pnl: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class Performance:
    """Performance attribution of an account's book, of a strategy in one account, or of a
    strategy across its accounts (account_id empty; days summed by trading date when they
    share a base currency).

    The daily statistics come from the closed trading days' net P&L in base_currency."""

    account_id: str
    strategy_id: str
    base_currency: str
    #: The scope's first fill (execution time); None before any.
    inception_time: datetime | None
    by_currency: tuple[CurrencyPerformance, ...]
    trading_days: int
    #: Days left out because a base figure was missing (an FX rate).
    days_missing_base: int
    #: The sum and the mean (None with no day) of the days' net P&L.
    total_daily_pnl: Decimal
    mean_daily_pnl: float | None
    #: Sample standard deviation of daily net P&L; None with fewer than two days.
    volatility: float | None
    #: Annualized with the square root of 252, no risk-free rate subtracted (the ratios of
    #: daily returns on a constant capital); None with fewer than two days or no variation
    #: (Sortino: no losing day).
    sharpe_ratio: float | None
    sortino_ratio: float | None
    #: The largest fall of the cumulative daily P&L (from zero before the first day) from a
    #: peak (>= 0, zero with no fall) and its dates: peak None when the fall began at the
    #: start, trough None with no fall, recovered None while not recovered.
    max_drawdown: Decimal
    max_drawdown_peak_date: date | None
    max_drawdown_trough_date: date | None
    max_drawdown_recovered_date: date | None
    venues: tuple[VenuePerformance, ...]
    as_of_sequence: int
    #: The account's multi-step trades per venue (an account's book only; empty for a
    #: strategy).
    trace_venues: tuple[TraceVenuePerformance, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceVenuePerformance:
    """One venue's legs of multi-step trades: a step is a leg after its trace's first, its
    latency the time since the trace's previous leg; when a trace ends its legs count as done
    if every instrument netted to zero, else as left open."""

    venue: str
    steps: int
    average_step_latency: timedelta
    legs_done: int
    legs_open: int
    #: legs_done / (legs_done + legs_open); None before any trace ended.
    success_rate: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Exposure:
    """Market value now: long rows (>= 0) and short rows (<= 0), gross = long - short,
    net = long + short."""

    long: Decimal
    short: Decimal
    gross: Decimal
    net: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedExposure:
    """The exposure of one instrument, asset class or currency."""

    name: str
    exposure: Exposure


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueAtRisk:
    """One-day historical value at risk over the scope's own daily net P&L in base currency:
    with n days at confidence c, the k-th worst day's loss, k = ceil((1 - c) n); expected
    shortfall is the average loss of those k days. Losses are positive (negative: even the
    k-th worst day made money)."""

    #: 0.95 or 0.99.
    confidence: Decimal
    #: None with no day yet.
    value_at_risk: Decimal | None
    expected_shortfall: Decimal | None
    days_in_tail: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StrategyCorrelation:
    """How two strategies' daily net P&L moved together."""

    strategy_a: str
    strategy_b: str
    #: Trading days both recorded.
    days: int
    #: Pearson; None with fewer than 3 common days or no variation.
    correlation: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskMetrics:
    """Exposure, concentration, volatility, value at risk and correlations of an account's
    book or of one strategy in it."""

    account_id: str
    strategy_id: str
    base_currency: str
    #: In base currency; rows in a currency with no rate (missing_fx_rates) are left out.
    total: Exposure
    by_instrument: tuple[NamedExposure, ...]
    by_asset_class: tuple[NamedExposure, ...]
    #: Each in its own currency (every row).
    by_currency: tuple[NamedExposure, ...]
    missing_fx_rates: tuple[str, ...]
    #: The largest position by gross exposure ("" with none), and its share of the gross (0 to
    #: 1; None with no exposure or a missing rate).
    largest_instrument: str
    concentration: Decimal | None
    #: Trading days asked for, and those the history had.
    lookback_days: int
    trading_days: int
    #: Standard deviation of daily net P&L in base currency.
    volatility: float | None
    #: At 95% and 99%.
    value_at_risk: tuple[ValueAtRisk, ...]
    #: Between the account's strategies (account-level request only).
    correlations: tuple[StrategyCorrelation, ...]
    as_of_sequence: int


# ---------------------------------------------------------------------------------------------
# Market prices


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkPrice:
    """An instrument's market price when `timestamp` says. The service values the position at
    `mark` if given, else the bid/ask midpoint, else `last`; bid above ask is refused."""

    instrument_id: str
    timestamp: datetime
    mark: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal | None = None

    def __post_init__(self) -> None:
        require_decimals(self, "mark", "bid", "ask", "last")


@dataclass(frozen=True, slots=True, kw_only=True)
class FxRate:
    """One `base` is worth `rate` `quote` (EUR/USD 1.08: base EUR, quote USD); either way
    round converts."""

    base: str
    quote: str
    rate: Decimal
    timestamp: datetime

    def __post_init__(self) -> None:
        require_decimals(self, "rate")


# ---------------------------------------------------------------------------------------------
# Orders


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderTransition:
    """One status change of an order, as the service judged it."""

    sequence: int
    update: OrderStatusUpdate | None
    #: Empty when the change moved the order; else why it did not (illegal, out of order).
    flag: str = ""
    #: The order's quantity changed while working (cancel/replace, or a modification).
    replaced: bool = False
    #: On a correction: the update_id of the transition it replaced.
    corrects: str = ""
    #: Arrived after a status timestamped later: placed by time, the current status unmoved.
    late: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    """One order: its state (the fold of its history) and, from `get_order`, every change."""

    account_id: str
    #: What the service files it under: "id:<order_id>" or "ref:<order_ref>".
    order_key: str
    order_id: str
    order_ref: str
    perm_id: str
    strategy_id: str
    instrument_id: str
    side: Side
    #: UNSPECIFIED: known only from its fills so far.
    status: OrderStatus
    filled_quantity: Decimal
    remaining_quantity: Decimal
    #: None before any fill.
    avg_fill_price: Decimal | None
    #: The quantity of the fills booked for the order.
    booked_quantity: Decimal
    #: filled_quantity - booked_quantity: zero when the broker's figure and the fills agree
    #: (a working order may differ for a moment: fills and statuses race).
    quantity_mismatch: Decimal
    booked_fills: int
    #: Pending submit to pending cancel.
    is_open: bool
    created_at: datetime | None
    updated_at: datetime | None
    last_sequence: int
    #: Empty in a listing of open orders.
    history: tuple[OrderTransition, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPage:
    """One page of working orders (without histories); pass next_page_token back for more."""

    orders: tuple[Order, ...]
    #: Empty on the last page.
    next_page_token: str
    as_of_sequence: int


# ---------------------------------------------------------------------------------------------
# Instruments and accounts


@dataclass(frozen=True, slots=True, kw_only=True)
class Instrument:
    """What an instrument is; P&L and exposure use its multiplier, in its currency.

    Defining the same instrument again changes nothing (definitions are identified by their
    content); changing the multiplier or currency of one with positions is refused."""

    instrument_id: str
    #: "USD", "EUR", "USDT"...
    currency: str
    symbol: str = ""
    asset_class: AssetClass = AssetClass.UNSPECIFIED
    #: The contract size of a future, 100 for most equity options.
    multiplier: Decimal = Decimal(1)
    tick_size: Decimal | None = None
    #: Options (required) and futures.
    underlying: str = ""
    #: Options: required.
    strike: Decimal | None = None
    #: YYYY-MM-DD or YYYY-MM; required for options and futures.
    expiry: str = ""
    right: OptionRight = OptionRight.UNSPECIFIED
    settlement_date: str = ""
    #: Crypto: the token's decimals, 0 to 18.
    decimals: int | None = None
    #: Output only: registered by the service for a fill naming an unknown instrument
    #: (multiplier 1, the default currency); define it to replace the defaults.
    provisional: bool = False

    def __post_init__(self) -> None:
        require_decimals(self, "multiplier", "tick_size", "strike")


@dataclass(frozen=True, slots=True, kw_only=True)
class InstrumentPage:
    """Instruments in id order, defined or provisional; pass next_page_token back for more."""

    instruments: tuple[Instrument, ...]
    #: Empty on the last page.
    next_page_token: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """A trading account. Defining the same account again changes nothing; a paper account's
    starting cash is paid in once, when first defined."""

    account_id: str
    #: PAPER or LIVE (the service refuses UNSPECIFIED).
    kind: AccountKind
    #: What P&L and exposure are also reported in ("USD").
    base_currency: str
    #: Paper accounts: cash in base_currency paid in when first defined.
    initial_cash: Decimal = _ZERO
    #: Output only: False for an account known only from its events (live, default currency).
    defined: bool = False

    def __post_init__(self) -> None:
        require_decimals(self, "initial_cash")


# ---------------------------------------------------------------------------------------------
# Balances and reservations


@dataclass(frozen=True, slots=True, kw_only=True)
class Balance:
    """One currency's (and chain's) cash in an account."""

    account_id: str
    currency: str
    #: Empty off-chain.
    chain_id: str
    #: All the cash: fills, commissions, deposits and withdrawals.
    cash: Decimal
    #: Held for pending orders.
    reserved: Decimal
    #: cash - reserved.
    available: Decimal
    updated_at: datetime | None
    last_sequence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """Cash set aside for a pending order: a fill of the order consumes it (buys: notional
    plus commission), the order ending releases the rest."""

    reservation_id: str
    account_id: str
    currency: str
    chain_id: str
    #: What was reserved, what it still holds, what fills used and what was given back.
    amount: Decimal
    remaining: Decimal
    consumed: Decimal
    released: Decimal
    status: ReservationStatus
    #: The order whose fills consume it ("id:<order_id>" or "ref:<order_ref>"); empty if none.
    order_key: str
    strategy_id: str
    sequence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Balances:
    """An account's cash per currency and chain, and the reservations still holding some."""

    account_id: str
    account_kind: AccountKind
    base_currency: str
    balances: tuple[Balance, ...]
    reservations: tuple[Reservation, ...]
    as_of_sequence: int


# ---------------------------------------------------------------------------------------------
# The consolidated book


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsolidatedPosition:
    """One instrument of one account: the account-level row (what the broker shows) next to
    each strategy's attributed row, flat ones and opposite sides included."""

    account_id: str
    instrument_id: str
    account_kind: AccountKind
    account_position: Position | None
    strategy_positions: tuple[Position, ...]
    #: The sum of the strategy rows' quantities.
    attributed_quantity: Decimal
    #: account quantity - attributed quantity: zero unless something booked outside strategies.
    unattributed_quantity: Decimal
    as_of_sequence: int
    #: From the account's latest reconciliation; None (UNSPECIFIED) before one covered it.
    broker_quantity: Decimal | None = None
    reconciliation_status: ReconciliationStatus = ReconciliationStatus.UNSPECIFIED
    residual_position: Position | None = None
    reconciled_at: datetime | None = None
