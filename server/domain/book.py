"""The book: every position row, the instruments' market prices, and running totals.

Each account has two kinds of rows per instrument: one per strategy (attribution) and one
account-level row fed by every fill of the account, whatever its strategy (what the broker
shows). Totals are kept per scope and currency so that summaries are O(1) in the number of
rows.

An instrument's price is its latest market mark; without one, its last fill price (and the
views say which).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from decimal import Decimal, localcontext
from typing import Any, TypeVar

import numpy as np
from sortedcontainers import SortedDict, SortedSet

from server.domain import steps
from server.domain.decimals import EXACT, ONE, ZERO
from server.domain.events import Fill
from server.domain.expiry import ExpiryQueue
from server.domain.instruments import InstrumentRegistry
from server.domain.marks import Mark, MarkSource
from server.domain.pnl_history import RowClose
from server.domain.position import ACCOUNT_LEVEL, ChangeKind, Position, PositionKey, change_kind
from server.domain.restatement import (
    Booker,
    Booking,
    BookingKey,
    Deferred,
    JournalRows,
    JournalWindow,
    Placement,
    RateAt,
    RowWindow,
    WindowedFill,
    WindowOrder,
    appends,
    book,
    book_outside_window,
    checkpoint_anchor,
    defer,
    deferred_of,
    evict,
    find,
    first_ns,
    materialize,
    rebuild,
    replace,
    visible,
)
from server.domain.steps import Steps, at_once
from server.domain.totals import Totals, convert, merged

ALL = ""
"""The account id of totals across every account."""

_FROM_NOTHING = Position(key=PositionKey("", "", ""), multiplier=Decimal(1))
"""The anchor of a row whose window starts from nothing (reload_windows; never changed: its
figures are copied, and a window never keeps it as its anchor)."""

PRICE_LOG_LIMIT = 1 << 16
"""Price moves remembered for lazy revaluation; a scope read less often revalues every row."""
VALUE_WHOLE_SCOPE_AFTER = 4096
"""Past this many price moves since a scope's last read, revaluing its rows is cheaper."""


@dataclass(frozen=True, slots=True)
class RowChange:
    """A row as a fill left it: a detached copy, with the market price at that moment, and
    whether the fill landed after every fill of the row or restated it."""

    position: Position
    kind: ChangeKind
    market_price: Decimal
    placement: Placement = Placement.IN_ORDER


@dataclass(frozen=True, slots=True)
class Price:
    """What an instrument is valued at, where that price came from, and when it was set."""

    price: Decimal
    source: MarkSource
    time_ns: int
    fill_id: str = ""  # a last fill price's fill: the latest by (time_ns, fill_id) wins


NO_PRICE = Price(ZERO, MarkSource.NONE, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class PositionView:
    """A row as queries and updates show it: frozen, with its mark-dependent figures."""

    key: PositionKey
    quantity: Decimal
    avg_cost: Decimal
    cost_basis: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    fees: Decimal
    market_price: Decimal
    market_value: Decimal
    multiplier: Decimal
    trade_count: int
    opened_at_ns: int
    updated_at_ns: int
    last_sequence: int
    currency: str = ""
    mark_source: MarkSource = MarkSource.LAST_FILL
    marked_at_ns: int = 0
    # The account's base currency and the rate into it (None: missing), set by the service.
    base_currency: str = ""
    fx_rate: Decimal | None = None
    precision: Decimal = Decimal("1e-9")  # what base-currency figures are rounded to
    residual: bool = False  # a row reconciliation added (its strategy_id names its owner)
    # Fees charged in other currencies than the row's, (currency, amount) by currency: they
    # are not in `fees` nor in `net_pnl` (nothing adds two currencies); and the rate of each
    # into the base currency (None: missing), in the same order.
    other_fees: tuple[tuple[str, Decimal], ...] = ()
    fee_rates: tuple[Decimal | None, ...] = ()
    # Realized P&L in base_currency at the rates in force when realized (None: one was
    # missing then), when the row keeps it in that currency (`historic_base`).
    realized_pnl_base: Decimal | None = None
    historic_base: bool = False
    # The row's figures at the start of the trading day (its account's last close; None:
    # none yet, the day started at inception).
    day_start: RowClose | None = None

    @property
    def net_pnl(self) -> Decimal:
        """Exact (the thread's context would round past 28 digits; figures reach 36)."""
        return _subtract(_add(self.realized_pnl, self.unrealized_pnl), self.fees)

    def since_day_start(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """Realized P&L, change in unrealized P&L, fees and net since the trading day began
        (before the first close: the row's own figures)."""
        start = self.day_start
        if start is None:
            return self.realized_pnl, self.unrealized_pnl, self.fees, self.net_pnl
        realized = _subtract(self.realized_pnl, start.realized_pnl)
        change = _subtract(self.unrealized_pnl, start.unrealized_pnl)
        fees = _subtract(self.fees, start.fees)
        return realized, change, fees, _subtract(_add(realized, change), fees)

    def in_base(self) -> BaseFigures:
        """The figures in the base currency, for every reader (API, views): each converted at
        the row's latest rate and rounded half-even to `precision`, except realized P&L, at
        the rates in force when it was realized (`realized_pnl_base`); fees and net also
        count the fees in other currencies, each at its own rate. A figure whose rate is
        missing is None (missing, never a sum of two currencies)."""
        rate = self.fx_rate
        if (rate is ONE or rate == ONE) and not self.other_fees:
            # The row is in the base currency (or quoted at 1): every figure as it is, as
            # `convert` gives it at a rate of 1; the usual case, and once per answer built.
            realized_base = self.realized_pnl_base if self.historic_base else self.realized_pnl
            unrealized, fees_base = self.unrealized_pnl, self.fees
            return _base_figures(
                realized_pnl=realized_base,
                unrealized_pnl=unrealized,
                market_value=self.market_value,
                fees=fees_base,
                net_pnl=None
                if realized_base is None
                else _subtract(_add(realized_base, unrealized), fees_base),
            )
        return self.converted_to_base()

    def converted_to_base(self) -> BaseFigures:
        """`in_base` without its shortcut: every figure converted (what the shortcut must equal;
        the tests hold them together)."""
        rate, precision = self.fx_rate, self.precision
        realized: Decimal | None
        if self.historic_base:
            realized = self.realized_pnl_base
        else:  # no history in this base currency (a residual row): at the latest rate
            realized = None if rate is None else convert(self.realized_pnl, rate, precision)
        if rate is None:
            return BaseFigures(
                realized_pnl=realized, unrealized_pnl=None, market_value=None, fees=None,
                net_pnl=None,
            )  # fmt: skip
        unrealized = convert(self.unrealized_pnl, rate, precision)
        fees: Decimal | None = convert(self.fees, rate, precision)
        with localcontext(EXACT):
            for (_, amount), fee_rate in zip(self.other_fees, self.fee_rates, strict=True):
                if fee_rate is None or fees is None:
                    fees = None
                    break
                fees += convert(amount, fee_rate, precision)
            net = None if realized is None or fees is None else realized + unrealized - fees
        return BaseFigures(
            realized_pnl=realized,
            unrealized_pnl=unrealized,
            market_value=convert(self.market_value, rate, precision),
            fees=fees,
            net_pnl=net,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BaseFigures:
    """A row's figures in its account's base currency; None where a rate is missing."""

    realized_pnl: Decimal | None
    unrealized_pnl: Decimal | None
    market_value: Decimal | None
    fees: Decimal | None
    net_pnl: Decimal | None


_T = TypeVar("_T")
_add, _subtract = EXACT.add, EXACT.subtract  # exact, without a localcontext (about 1 us)


def _frozen_builder(cls: type[_T]) -> Callable[..., _T]:
    """A keyword-only constructor of a frozen slots dataclass (no __post_init__), every field
    required, for a value built once per answer or update: it sets each field through its
    slot, where the dataclass's own __init__ goes through object.__setattr__ by name for
    each field because the class is frozen (PositionView's 25 fields: 4.0 -> 2.0 us, loaded
    2-core VM). The instance is the same, and as frozen."""
    names = [field.name for field in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    namespace.update({f"_set_{name}": vars(cls)[name].__set__ for name in names})
    exec(  # the straight-line code dataclasses writes, with slots set directly
        f"def build(*, {', '.join(names)}):\n    made = _new(_cls)\n"
        + "".join(f"    _set_{name}(made, {name})\n" for name in names)
        + "    return made\n",
        namespace,
    )
    build: Callable[..., _T] = namespace["build"]
    return build


_position_view = _frozen_builder(PositionView)
_base_figures = _frozen_builder(BaseFigures)


def fee_rates(
    row: Position, rate_into_base: Callable[[str], Decimal | None]
) -> tuple[Decimal | None, ...]:
    """The rates into base of the row's fees in other currencies (usually none: no call)."""
    if not row.other_fees:
        return ()
    return tuple(rate_into_base(currency) for currency, _ in row.other_fee_items())


def position_view(
    row: Position,
    market_price: Decimal,
    precision: Decimal,
    price: Price | None = None,
    *,
    base_currency: str = "",
    fx_rate: Decimal | None = None,
    fee_rates: tuple[Decimal | None, ...] = (),
    day_start: RowClose | None = None,
) -> PositionView:
    """A row's view at `market_price`; `price` says where that price came from. Built whole
    in one go (no copy with the base currency added after): it is made for every update sent
    and every answer built (hence `_position_view`, every field given)."""
    with localcontext(EXACT):
        return _position_view(
            key=row.key,
            quantity=row.quantity,
            avg_cost=row.avg_cost(precision),
            cost_basis=row.cost_basis,
            realized_pnl=row.realized_pnl,
            unrealized_pnl=row.unrealized_pnl(market_price),
            fees=row.fees,
            market_price=market_price,
            market_value=row.market_value(market_price),
            multiplier=row.multiplier,
            trade_count=row.trade_count,
            opened_at_ns=row.opened_at_ns,
            updated_at_ns=row.updated_at_ns,
            last_sequence=row.last_sequence,
            currency=row.currency,
            mark_source=price.source if price else MarkSource.LAST_FILL,
            marked_at_ns=price.time_ns if price else row.updated_at_ns,
            base_currency=base_currency,
            fx_rate=fx_rate,
            precision=precision,
            other_fees=row.other_fee_items(),
            fee_rates=fee_rates,
            realized_pnl_base=row.realized_pnl_base,
            historic_base=bool(base_currency) and row.base_currency == base_currency,
            day_start=day_start,
            residual=False,
        )


class PositionBook:
    """Rows follow execution time (see restatement.py): `window_ns` is the restatement
    window's length, ending at the latest fill time seen (`latest_ns`)."""

    def __init__(
        self,
        instruments: InstrumentRegistry,
        precision: Decimal,
        window_ns: int = 0,
        *,
        rate_at: RateAt | None = None,
        base_currency: Callable[[str], str] | None = None,
    ) -> None:
        self.instruments = instruments
        self.precision = precision
        self.booker = Booker(precision, rate_at) if rate_at else Booker(precision)
        # An account's base currency: realized P&L in base is kept in it, from the row's start.
        self._base_currency = base_currency or (lambda account_id: "")
        self.window_ns = window_ns
        self.latest_ns = 0
        # (first booking time, row key) per windowed row: which row's fills leave first.
        self._expiry = ExpiryQueue()
        # Fills booked OUTSIDE_WINDOW since start, and the latest one's sequence.
        self.misplaced = 0
        self.last_misplaced_sequence = 0
        # Rows whose window, read back from the journal after a restart, came out other than
        # checkpointed (none, unless a bug), and who hears of each (see _refigured).
        self.windows_differ = 0
        self.on_differ: Callable[[PositionKey], None] | None = None
        # Ordered views, for listing and pagination: PositionKey -> Position.
        self.strategy_rows: SortedDict = SortedDict()
        self.account_rows: SortedDict = SortedDict()
        # instrument_id -> PositionKey -> Position, for instrument filters.
        self.by_instrument: dict[str, SortedDict] = {}
        # Revaluation is lazy, so a price move costs the same whatever the book holds: the
        # instruments whose price moved, in order (version = _log_base + index + 1), and per
        # scope, (account, strategy or "" for the account level), the version its totals are
        # valued to. A read brings a scope's rows that moved since up to date (see _valued).
        self._price_log: list[str] = []
        self._log_base = 0
        self._prices_set = 0
        self._scope_version: dict[tuple[str, str], int] = {}
        # strategy_id -> accounts it has rows in.
        self._strategy_accounts: SortedDict = SortedDict()  # str -> SortedSet
        self._account_strategies: dict[str, SortedSet] = {}
        # instrument_id -> the price rows are valued at; the market mark and last fill price.
        self._prices: dict[str, Price] = {}
        self._market: dict[str, Mark] = {}
        self._fill_prices: dict[str, Price] = {}
        # Each row counts in one Totals: its account's (account-level rows) or its strategy's
        # in its account, in the row's currency. Figures across accounts or currencies add
        # these up when asked: O(accounts x currencies).
        self._account_totals: dict[str, dict[str, Totals]] = {}
        self._strategy_totals: dict[tuple[str, str], dict[str, Totals]] = {}

    def __len__(self) -> int:
        return len(self.strategy_rows) + len(self.account_rows)

    # -- writes ----------------------------------------------------------------------------

    @property
    def price_version(self) -> int:
        """Counts the prices set (marks and last fill prices, moved or not: a view shows when
        and where from): what a valuation read from the book depends on besides the events
        applied."""
        return self._prices_set

    def horizon_ns(self) -> int:
        """The restatement window's start: fills executed before it are folded."""
        return self.latest_ns - self.window_ns

    def apply_fill(
        self, fill: Fill, sequence: int, *, outside_window: bool = False
    ) -> list[RowChange]:
        """Books a fill on its strategy row and its account row, each at its place in
        execution time; `outside_window` books it at the windows' start instead (a correction
        whose fill left the window: its bust and replacement)."""
        booking = Booking.of(fill, sequence, amounts=self.booker.amounts)  # one for both rows
        # The booking's price, shared, not the fill's: rows keep what they are valued at.
        self._note_fill_price(fill.instrument_id, booking.price, fill.timestamp_ns, fill.fill_id)
        market_price = self._prices[fill.instrument_id].price
        if fill.timestamp_ns > self.latest_ns:
            self.latest_ns = fill.timestamp_ns
        horizon = self.horizon_ns()
        if outside_window:
            booking.booked_id = ""  # never found by a later correction
        account, instrument = fill.account_id, fill.instrument_id
        with localcontext(EXACT):
            changes = []
            for strategy_id in (fill.strategy_id, ACCOUNT_LEVEL):
                key = PositionKey(account, strategy_id, instrument)
                changes.append(
                    self._change(
                        key, sequence, market_price, booking, horizon, outside=outside_window
                    )
                )
            self._evict()
        return changes

    def correct(self, booked: Fill, replacement: Fill, sequence: int) -> list[RowChange] | None:
        """Books a broker correction in the place in time of what it corrects (`booked`, as
        booked now): the rows become those of a history with the replacement there. None when
        what it corrects is not in its rows' windows (the caller busts and rebooks)."""
        old_keys = _keys(booked)
        new_keys = _keys(replacement)
        old_rows = [self.get(key) for key in old_keys]
        for old_row in old_rows:  # looked up among the deferred bookings: read back first
            if (
                old_row is not None
                and deferred_of(old_row.window) is not None
                and find(old_row, booked.fill_id) is None
            ):
                self._materialize(old_row)
        places = [find(row, booked.fill_id) if row is not None else None for row in old_rows]
        if None in places:
            return None
        strategy_row = old_rows[0]
        assert strategy_row is not None and strategy_row.window is not None
        place = visible(strategy_row.window)[places[0] or 0].key
        held = self._fill_prices.get(booked.instrument_id)
        if held is not None and (held.time_ns, held.fill_id) == place:  # it set the price
            self._fill_prices.pop(booked.instrument_id)
            if replacement.instrument_id != booked.instrument_id:
                self._fill_price_without(booked.instrument_id, place)
            self._note_fill_price(replacement.instrument_id, replacement.price, *place)
        elif replacement.instrument_id != booked.instrument_id:
            self._note_fill_price(replacement.instrument_id, replacement.price, *place)
        horizon = self.horizon_ns()
        booking = Booking.of(replacement, sequence, place, self.booker.amounts)  # both rows
        changes = []
        with localcontext(EXACT):
            for old_key, new_key, index in zip(old_keys, new_keys, places, strict=True):
                old_price = self.mark(old_key.instrument_id)
                if old_key == new_key:  # in place
                    changes.append(
                        self._change(old_key, sequence, old_price, booking, horizon, index)
                    )
                    continue
                changes.append(self._change(old_key, sequence, old_price, None, horizon, index))
                new_price = self.mark(new_key.instrument_id)
                changes.append(self._change(new_key, sequence, new_price, booking, horizon))
            if replacement.timestamp_ns > self.latest_ns:
                self.latest_ns = replacement.timestamp_ns
            self._evict()
        return changes

    def _change(
        self,
        key: PositionKey,
        sequence: int,
        market_price: Decimal,
        booking: Booking | None,
        horizon: int,
        replacing: int | None = None,
        *,
        outside: bool = False,
    ) -> RowChange:
        """Books `booking` on one row at its place (or, `outside`, at the window's start; or
        at index `replacing`, in place of what is there, None taking it out), keeping its
        totals by difference; inside `EXACT`."""
        row = self._row(key)
        if (
            deferred_of(row.window) is not None
            and replacing is None  # else among the bookings since the deferred (see correct)
            and (outside or booking is None or not appends(row, booking, horizon))
        ):
            self._materialize(row)
        totals = self._scope_totals(row)
        self._revalue(row)  # its share of the totals at market_price, the current price
        totals.add(row, market_price, -1)
        self._add_other_fees(row, -1)
        was_flat = not row.quantity
        if replacing is not None:
            placement = _replaced(replace(row, replacing, booking, self.booker))
        else:
            assert booking is not None
            if outside:
                placement = book_outside_window(row, booking, self.booker)
            else:
                placement = book(row, booking, horizon, self.booker)
        totals.add(row, market_price)
        self._add_other_fees(row, 1)
        row.last_sequence = sequence
        if placement is Placement.OUTSIDE_WINDOW and key.is_account_level:
            self.misplaced += 1
            self.last_misplaced_sequence = sequence
        self._queue(row)
        return RowChange(row.copy(), change_kind(was_flat, row.quantity), market_price, placement)

    def _queue(self, row: Position) -> None:
        """Puts a windowed row in the eviction queue at its first booking's time, unless it is
        there at that time or earlier already (one entry per row, and one more per fill that
        lands before a row's first)."""
        window = row.window
        if window is None:
            return
        if isinstance(window, Booking):  # made by this change (see RowWindow): not queued
            self._expiry.push(window.time_ns, row.key)
            return
        first = first_ns(window)
        if window.queued_ns is None or first < window.queued_ns:
            self._expiry.push(first, row.key)
            window.queued_ns = first

    def _materialize(self, row: Position) -> None:
        """Reads back a row's deferred window bookings (see restatement.materialize)."""
        before = _counted(row)
        with localcontext(EXACT):
            if materialize(row, self.booker):
                self._refigured(row, before)

    def _refigured(self, row: Position, before: _Counted) -> None:
        """A row whose window, read back from the journal, gave other figures than it held
        (`before`; a bug): it keeps the journal's, its totals count those, and it is told."""
        self.windows_differ += 1
        if self.on_differ is not None:
            self.on_differ(row.key)
        if _counted(row) != before:
            self._recount(row, before)

    def _recount(self, row: Position, before: _Counted) -> Position:
        """A row's totals count its figures now instead of `before` (both at `valued_at`);
        returns the row as it was counted."""
        saved = row.copy()
        _take_counted(saved, before)
        totals = self._scope_totals(row)
        totals.add(saved, row.valued_at, -1)
        self._add_other_fees(saved, -1)
        totals.add(row, row.valued_at)
        self._add_other_fees(row, 1)
        return saved

    def materialize_windows(self, limit: int) -> int:
        """Reads back the deferred bookings of up to `limit` rows' windows (after a restart);
        returns how many rows still have some."""
        left = 0
        for row in self.rows():
            if deferred_of(row.window) is None:
                continue
            if limit > 0:
                self._materialize(row)
                limit -= 1
            else:
                left += 1
        return left

    def _scope_totals(self, row: Position) -> Totals:
        """The totals a row counts in: its scope's, in the row's currency (from the row in
        hand: an index of a million rows is a dict whose probes miss the cache)."""
        key = row.key
        if key.strategy_id == ACCOUNT_LEVEL:
            return self._account_totals[key.account_id][row.currency]
        return self._strategy_totals[(key.account_id, key.strategy_id)][row.currency]

    def _add_other_fees(self, row: Position, sign: int) -> None:
        """Fees in other currencies count in the totals of their own currency."""
        if not row.other_fees:
            return
        key = row.key
        scope = (
            self._account_totals[key.account_id]
            if key.is_account_level
            else self._strategy_totals[(key.account_id, key.strategy_id)]
        )
        for currency, amount in row.other_fees.items():
            totals = scope.get(currency)
            if totals is None:
                totals = scope[currency] = Totals(currency=currency)
            totals.fees += sign * amount
            if not totals.total_positions and totals == Totals(currency=currency):  # fees: gone
                del scope[currency]

    def _evict(self) -> None:
        """Folds what left the window, row by row (each booking is folded once)."""
        horizon = self.horizon_ns()
        expiry = self._expiry
        while (key := expiry.pop_before(horizon)) is not None:
            row = self.get(key)
            if row is None or row.window is None:
                continue
            deferred = deferred_of(row.window) is not None
            before = _counted(row) if deferred else None
            if evict(row, horizon, self.booker) and before is not None:
                self._refigured(row, before)
            window = row.window
            if isinstance(window, RowWindow | Deferred) and (
                window.queued_ns is None or window.queued_ns < horizon
            ):
                window.queued_ns = None  # its entry is gone (or going, with nothing to do)
                self._queue(row)

    def _fill_price_without(self, instrument_id: str, place: BookingKey) -> None:
        """The instrument's last fill price once its latest fill (at `place`) was corrected to
        another instrument: the latest fill left in its rows' windows (each account-level
        row's, read back from the journal if deferred; a rare event). With none left (older
        fills have left the window and their prices are not kept) it has no fill price, and
        no price unless marked: the moved fill's price was another instrument's. A restart
        then gives the same (the checkpoint holds what is noted here)."""
        latest: Booking | None = None
        for key, row in (self.by_instrument.get(instrument_id) or {}).items():
            if not key.is_account_level or row.window is None:
                continue
            if deferred_of(row.window) is not None:
                self._materialize(row)
            left = [b for b in visible(row.window) if b.key != place]
            if left and (latest is None or left[-1].key > latest.key):
                latest = left[-1]
        if latest is not None:
            self._note_fill_price(instrument_id, latest.price, *latest.key)
        elif instrument_id not in self._market:
            self._reprice(instrument_id, NO_PRICE)

    def _note_fill_price(
        self, instrument_id: str, price: Decimal, time_ns: int, fill_id: str
    ) -> None:
        """The last fill price is the latest executed fill's, whatever the arrival order."""
        held = self._fill_prices.get(instrument_id)
        if held is not None and (held.time_ns, held.fill_id) > (time_ns, fill_id):
            return
        fill_price = Price(price, MarkSource.LAST_FILL, time_ns, fill_id)
        self._fill_prices[instrument_id] = fill_price
        if instrument_id not in self._market:
            self._reprice(instrument_id, fill_price)

    def set_mark(self, mark: Mark, latest_plausible_ns: int | None = None) -> bool:
        """Values an instrument at a market mark; a mark older than the one held is ignored
        (returns False), unless the held one is stamped after `latest_plausible_ns`: a mark
        from the future (kept before the door refused such times) must not freeze the
        instrument's price for good."""
        held = self._market.get(mark.instrument_id)
        if (
            held is not None
            and held.time_ns > mark.time_ns
            and (latest_plausible_ns is None or held.time_ns <= latest_plausible_ns)
        ):
            return False
        self._market[mark.instrument_id] = mark
        self._reprice(mark.instrument_id, Price(mark.price, MarkSource.MARKET, mark.time_ns))
        return True

    def market_marks(self) -> list[Mark]:
        return list(self._market.values())

    def _reprice(self, instrument_id: str, price: Price) -> None:
        """Moves an instrument's price; its rows' totals follow when next read or touched
        (O(1) here, whatever the number of rows)."""
        previous = self._prices.get(instrument_id)
        self._prices[instrument_id] = price
        self._prices_set += 1
        if previous is None or previous.price == price.price:
            return
        log = self._price_log
        log.append(sys.intern(instrument_id))  # not the event's own string: 50 bytes a move
        if len(log) > PRICE_LOG_LIMIT:  # scopes older than what is left revalue every row
            drop = len(log) // 2
            del log[:drop]
            self._log_base += drop

    def _revalue(self, row: Position) -> None:
        """Brings one row's share of its totals to its instrument's price; inside EXACT."""
        price = self._prices.get(row.key.instrument_id, NO_PRICE).price
        held = row.valued_at
        if held != price:
            if row.quantity:
                self._scope_totals(row).revalue(row.market_value(price - held), row.quantity > 0)
            row.valued_at = price

    def _valued(self, account_id: str, strategy_id: str) -> None:
        """Brings a scope's totals to the current prices: only the rows whose instrument moved
        since its last read, each once (every row, when more moved than it holds)."""
        version = self._log_base + len(self._price_log)
        scope = (account_id, strategy_id)
        seen = self._scope_version.get(scope, 0)
        if seen == version:
            return
        self._scope_version[scope] = version
        start = seen - self._log_base
        with localcontext(EXACT):
            if start < 0 or version - seen > VALUE_WHOLE_SCOPE_AFTER:
                for row in self._scope_rows(account_id, strategy_id):
                    self._revalue(row)
                return
            for instrument_id in set(self._price_log[start:]):
                moved = self.get(PositionKey(account_id, strategy_id, instrument_id))
                if moved is not None:
                    self._revalue(moved)

    def _scope_rows(self, account_id: str, strategy_id: str) -> list[Position]:
        index = self.strategy_rows if strategy_id else self.account_rows
        keys = index.irange(
            PositionKey(account_id, strategy_id, ""),
            PositionKey(account_id, strategy_id, "\U0010ffff"),
        )
        return [index[key] for key in keys]

    def _row(self, key: PositionKey) -> Position:
        row = self.get(key)
        if row is not None:
            return row
        # One string per id for every row, index and totals scope (ids repeat across rows;
        # a row's own would keep its first fill's strings alive: about 100 bytes a row).
        account_id, strategy_id, instrument_id = (sys.intern(part) for part in key)
        key = PositionKey(account_id, strategy_id, instrument_id)
        instrument = self.instruments.ensure(instrument_id)
        row = Position(
            key=key,
            multiplier=instrument.multiplier,
            currency=instrument.currency,
            base_currency=self._base_currency(account_id),
        )
        rows = self.by_instrument.get(instrument_id)
        if rows is None:
            rows = self.by_instrument[instrument_id] = SortedDict()
        rows[key] = row
        (self.account_rows if key.is_account_level else self.strategy_rows)[key] = row
        self._enter_scope(row).add(row, ZERO)  # an empty row contributes its count of one
        return row

    def _enter_scope(self, row: Position) -> Totals:
        """Registers a new row's scope (its account's strategies, its strategy's accounts,
        its totals in its currency) and returns those totals. get-then-create, not
        setdefault: a SortedSet built for nothing costs microseconds."""
        account_id, strategy_id, _ = row.key
        if row.key.is_account_level:
            scope = self._account_totals.setdefault(account_id, {})
        else:
            accounts = self._strategy_accounts.get(strategy_id)
            if accounts is None:
                accounts = self._strategy_accounts[strategy_id] = SortedSet()
            accounts.add(account_id)
            strategies = self._account_strategies.get(account_id)
            if strategies is None:
                strategies = self._account_strategies[account_id] = SortedSet()
            strategies.add(strategy_id)
            scope = self._strategy_totals.setdefault((account_id, strategy_id), {})
        totals = scope.get(row.currency)
        if totals is None:
            totals = scope[row.currency] = Totals(currency=row.currency)
        self._scope_version.setdefault(
            (account_id, strategy_id), self._log_base + len(self._price_log)
        )
        return totals

    def restore_all(self, saved_rows: Iterable[tuple[Position, Price]]) -> None:
        """Puts a checkpoint's rows, each with its instrument's last fill price, into an empty
        book (recovery; market marks are restored after, with `set_mark`, windows with
        `reload_windows`). The rows go into the sorted indexes at once, a sort rather than an
        insertion each (measured: the insertions were most of restoring a million rows)."""
        if self.strategy_rows or self.account_rows:
            raise ValueError("a checkpoint is restored into an empty book only")
        made: list[Position] = []
        strategy_rows: list[tuple[PositionKey, Position]] = []
        account_rows: list[tuple[PositionKey, Position]] = []
        by_instrument: dict[str, list[tuple[PositionKey, Position]]] = {}
        # Rows come in key order (a checkpoint's book order), so most share the previous
        # row's scope and instrument: registered once each, not per row (about 2 us a row),
        # and a scope's run of rows is added to its totals at once (Totals.add_all).
        scope: tuple[str, str, str] | None = None  # (account, strategy, currency)
        totals = Totals()
        run = 0  # where the rows of `scope` start in `made`
        ensured: set[str] = set()
        with localcontext(EXACT):
            for saved, fill_price in saved_rows:
                row = self._adopt(saved, fill_price, ensured)
                key = row.key
                account_id, strategy_id, instrument_id = key
                if scope != (account_id, strategy_id, row.currency):
                    totals.add_all(made[run:])
                    run = len(made)
                    scope, totals = (account_id, strategy_id, row.currency), self._enter_scope(row)
                if row.other_fees:
                    self._add_other_fees(row, 1)
                made.append(row)
                pair = (key, row)
                (account_rows if strategy_id == ACCOUNT_LEVEL else strategy_rows).append(pair)
                pairs = by_instrument.get(instrument_id)
                if pairs is None:
                    pairs = by_instrument[instrument_id] = []
                pairs.append(pair)
            totals.add_all(made[run:])
        self.strategy_rows.update(strategy_rows)
        self.account_rows.update(account_rows)
        for instrument_id, pairs in by_instrument.items():
            self.by_instrument[instrument_id] = SortedDict(pairs)

    def _adopt(self, row: Position, fill_price: Price, ensured: set[str]) -> Position:
        """A checkpoint's row (nobody else holds it) becomes the book's, at its last fill
        price (`ensured`: the instruments registered already). Neither counted in its totals
        nor indexed yet (see restore_all)."""
        account_id, strategy_id, instrument_id = row.key
        intern = sys.intern
        account_id, instrument_id = intern(account_id), intern(instrument_id)
        row.key = tuple.__new__(PositionKey, (account_id, intern(strategy_id), instrument_id))
        if instrument_id not in ensured:
            self.instruments.ensure(instrument_id)
            ensured.add(instrument_id)
        self._fill_prices[instrument_id] = fill_price
        self._prices[instrument_id] = fill_price
        if not row.base_currency:  # a checkpoint from before the column
            row.base_currency = self._base_currency(account_id)
            if row.foreign and row.realized_pnl:
                row.realized_pnl_base = None  # not known
            else:
                row.realized_pnl_base = row.realized_pnl
        row.valued_at = fill_price.price
        return row

    def reload_windows(
        self,
        anchors: dict[PositionKey, Position],
        bookings: Iterable[tuple[int, Fill | WindowedFill, str]],
        *,
        empty_anchors_left_out: bool = True,
    ) -> list[PositionKey]:
        """Recovery: gives each row with a window its anchor (from the checkpoint) and the
        journal's fills inside the window, (fill, corrects) in sequence order (`corrects` is
        the id a correction replaces, "" for a fill), and recomputes it. Returns the rows
        whose figures came out other than the checkpoint's (kept as the journal gives them).

        `empty_anchors_left_out` (what `anchors()` gives): a row with fills inside the window
        and no anchor had a window from nothing (a row opened inside it), since every fill
        inside the window is in its row's window. False: `anchors` names every row with a
        window (a checkpoint written before, which kept empty anchors too)."""
        anchors = dict(anchors)
        kept: dict[PositionKey, list[Booking]] = {key: [] for key in anchors}

        def window_of(key: PositionKey) -> list[Booking] | None:
            windowed = kept.get(key)
            if windowed is None and empty_anchors_left_out:  # a row not in the book: skipped
                anchors[key] = _FROM_NOTHING  # by _rebuild_windows
                windowed = kept[key] = []
            return windowed

        bookings = list(bookings)
        if not any(corrects for _, _, corrects in bookings):  # most starts: fills only
            for sequence, fill, _ in bookings:
                booking = Booking.of(fill, sequence)  # one for both rows
                for key in _keys(fill):
                    windowed = kept.get(key)  # window_of, inline (a call per row and fill)
                    if windowed is None:
                        if not empty_anchors_left_out:
                            continue
                        anchors[key] = _FROM_NOTHING
                        windowed = kept[key] = []
                    windowed.append(booking)
            return self._rebuild_windows(anchors, kept)
        # (account, original fill id) -> the rows it is booked on, its place, its booked id.
        entries: dict[tuple[str, str], tuple[tuple[PositionKey, ...], BookingKey, str]] = {}
        origin: dict[tuple[str, str], str] = {}  # (account, correction id) -> original id
        for sequence, fill, corrects in bookings:
            account = fill.account_id
            if corrects:
                original = origin.get((account, corrects), corrects)
                entry = entries.pop((account, original), None)
                if entry is None:  # what it corrects is before the window: in the anchor
                    continue
                booked_on, place, booked_id = entry
                for key in booked_on:
                    kept[key] = [b for b in kept[key] if b.booked_id != booked_id]
                origin[(account, fill.fill_id)] = original
            else:
                original, place = fill.fill_id, (fill.timestamp_ns, fill.fill_id)
            keys = tuple(k for k in _keys(fill) if window_of(k) is not None)
            booking = Booking.of(fill, sequence, place)  # one for both rows
            for key in keys:
                kept[key].append(booking)
            entries[(account, original)] = (keys, place, fill.fill_id)
        return self._rebuild_windows(anchors, kept)

    def defer_windows(
        self,
        anchors: dict[PositionKey, Position],
        rows: JournalRows,
        *,
        empty_anchors_left_out: bool = True,
    ) -> None:
        """Recovery: gives each row with fills inside the window (`rows`, journaled before the
        checkpoint) those fills as the journal holds them (restatement.Deferred: read back
        when first needed), and its anchor, taken out of `anchors` (see reload_windows for
        `empty_anchors_left_out`). The rows' figures are the checkpoint's: nothing else is
        done per fill (two sorts of the window by row and time, in C)."""
        if not len(rows.codes):
            return
        journal = JournalWindow(rows.texts, rows.sequences)
        times = rows.times_ns
        deferred: list[Position] = []
        firsts: list[int] = []
        with localcontext(EXACT):
            for keys, codes, index in (
                (rows.keys, rows.codes, self.strategy_rows),
                (rows.account_keys, rows.account_codes[rows.codes], self.account_rows),
            ):
                indexes = np.lexsort((times, codes))
                ordered = times[indexes]
                order = WindowOrder(journal, indexes, ordered)
                counts = np.bincount(codes, minlength=len(keys))
                stops = np.cumsum(counts)
                starts = stops - counts
                kept = counts > 0
                for key, start, stop, first, last in zip(
                    itertools.compress(keys, kept.tolist()), starts[kept].tolist(),
                    stops[kept].tolist(), ordered[starts[kept]].tolist(),
                    ordered[stops[kept] - 1].tolist(), strict=True,
                ):  # fmt: skip
                    row = index.get(key)
                    if row is not None and empty_anchors_left_out and key not in anchors:
                        # most: a row opened inside the window, no anchor (restatement.defer,
                        # inline: a million rows at a start)
                        window = row.window = Deferred(order, start, stop, None, last)
                    else:
                        row = self._defer(
                            row, key, order, start, stop, last, anchors, empty_anchors_left_out
                        )  # fmt: skip
                        if row is None:
                            continue
                        made = row.window
                        assert isinstance(made, Deferred)
                        window = made
                    window.queued_ns = first  # queued below
                    deferred.append(row)
                    firsts.append(first)
        # Queued in time order: entries in order go to the queue's columns (16 bytes each),
        # not its heap of late entries (64), a chunk at a time.
        order = np.argsort(np.array(firsts, dtype=np.int64), kind="stable").tolist()
        self._expiry.extend([firsts[i] for i in order], [deferred[i].key for i in order])

    def _defer(
        self,
        row: Position | None,
        key: PositionKey,
        order: WindowOrder,
        start: int,
        stop: int,
        last_ns: int,
        anchors: dict[PositionKey, Position],
        empty_anchors_left_out: bool,
    ) -> Position | None:
        """Defers the window of `row` (None: not in the book) for defer_windows; returns the
        row, not queued yet."""
        anchor = anchors.pop(key, None)
        if anchor is None and not empty_anchors_left_out:
            return None  # a checkpoint naming every windowed row, not this one
        if row is None:
            if anchor is None:
                return None  # a fill of a row the checkpoint does not hold (none, unless a bug)
            raise KeyError(key)
        if anchor is not None and not anchor.base_currency:  # as _adopt() does
            anchor.base_currency = row.base_currency
            unknown = anchor.foreign and anchor.realized_pnl
            anchor.realized_pnl_base = None if unknown else anchor.realized_pnl
        defer(row, order, start, stop, anchor, last_ns)
        return row

    def _rebuild_windows(
        self, anchors: dict[PositionKey, Position], kept: dict[PositionKey, list[Booking]]
    ) -> list[PositionKey]:
        """Each anchored row from its anchor and its window's bookings (reload_windows)."""
        differ = []
        with localcontext(EXACT):
            for key, anchor in anchors.items():
                found = self.get(key)
                if found is None and anchor is _FROM_NOTHING:
                    continue  # a fill of a row the checkpoint does not hold (none, unless a bug)
                row = found if found is not None else self.row_at(key)
                if anchor is not _FROM_NOTHING and not anchor.base_currency:  # as _adopt()
                    # does, for a checkpoint from before base currencies
                    anchor.base_currency = row.base_currency
                    unknown = anchor.foreign and anchor.realized_pnl
                    anchor.realized_pnl_base = None if unknown else anchor.realized_pnl
                before = _counted(row)
                if kept[key]:
                    rebuild(row, anchor, kept[key], self.booker)
                    self._queue(row)
                elif anchor is _FROM_NOTHING:
                    # Every fill of its window was corrected away (into another row): it had
                    # no window then, its figures were its anchor's, and the checkpoint holds
                    # them, not that anchor (anchors() keeps windowed rows' only).
                    continue
                else:
                    row.take_figures(anchor)
                if _counted(row) == before:
                    continue  # as checkpointed (the rule): its totals stand as they are
                # Its totals count it at `valued_at`: the checkpoint's figures out, the
                # journal's in, at that price.
                saved = self._recount(row, before)
                if _figures(row) != _figures(saved):
                    differ.append(key)
        return differ

    def anchors(self) -> list[Position]:
        """Each windowed row's figures before its window, unless they are a new row's (most
        rows of a large book are opened inside the window): what a checkpoint keeps. A row
        with fills inside the window and no anchor reads as one from nothing (reload_windows);
        leaving those out saves about 11 us a row at a start."""
        return at_once(self.anchoring())

    def anchoring(self) -> Steps[list[Position]]:
        """`anchors` in steps of `steps.COPIES_PER_STEP` rows; nothing may change between."""
        found: list[Position] = []
        for chunk in steps.copies(self.rows()):
            found += [
                anchor.copy()
                for row in chunk
                if row.window is not None and (anchor := checkpoint_anchor(row.window)) is not None
            ]
            yield
        return found

    # -- reads -----------------------------------------------------------------------------

    def rows(self) -> Iterable[Position]:
        return itertools.chain(self.strategy_rows.values(), self.account_rows.values())

    def get(self, key: PositionKey) -> Position | None:
        row: Position | None = (
            self.account_rows if key.is_account_level else self.strategy_rows
        ).get(key)
        return row

    def row_at(self, key: PositionKey) -> Position:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def view(
        self,
        row: Position,
        base_currency: str = "",
        fx_rate: Decimal | None = None,
        fee_rates: tuple[Decimal | None, ...] = (),
        day_start: RowClose | None = None,
    ) -> PositionView:
        price = self.price(row.key.instrument_id)
        return position_view(
            row, price.price, self.precision, price, base_currency=base_currency,
            fx_rate=fx_rate, fee_rates=fee_rates, day_start=day_start,
        )  # fmt: skip

    def mark(self, instrument_id: str) -> Decimal:
        return self.price(instrument_id).price

    def price(self, instrument_id: str) -> Price:
        return self._prices.get(instrument_id, NO_PRICE)

    def fill_price(self, instrument_id: str) -> Price:
        return self._fill_prices.get(instrument_id, NO_PRICE)

    def has_instrument(self, instrument_id: str) -> bool:
        return instrument_id in self.by_instrument

    def instrument_rows(self, account_id: str, instrument_id: str) -> list[Position]:
        """The account-level row and every strategy row of one instrument in one account."""
        rows = self.by_instrument.get(instrument_id)
        if not rows:
            return []
        keys = rows.irange(
            PositionKey(account_id, "", ""), PositionKey(account_id, "\U0010ffff", "")
        )
        return [rows[key] for key in keys]

    def strategy_positions(self, strategy_id: str, account_id: str = ALL) -> Iterator[Position]:
        accounts = [account_id] if account_id else self._strategy_accounts.get(strategy_id, ())
        for account in accounts:
            yield from self._scope_rows(account, strategy_id)

    def has_strategy(self, strategy_id: str, account_id: str = ALL) -> bool:
        if account_id:
            return (account_id, strategy_id) in self._strategy_totals
        return strategy_id in self._strategy_accounts

    def accounts(self) -> Iterable[str]:
        """Accounts with rows, each once."""
        return self._account_totals.keys()

    def has_account(self, account_id: str) -> bool:
        return account_id in self._account_totals

    def strategy_totals(self, strategy_id: str, account_id: str = ALL) -> Totals:
        """A strategy's totals when it trades in one currency; raises CurrencyMismatch
        otherwise (see strategy_currency_totals)."""
        return Totals.combined(self.strategy_currency_totals(strategy_id, account_id).values())

    def account_totals(self, account_id: str = ALL) -> Totals:
        """The account-level totals when one currency is involved; raises CurrencyMismatch
        otherwise (see account_currency_totals)."""
        return Totals.combined(self.account_currency_totals(account_id).values())

    def strategy_currency_totals(
        self, strategy_id: str, account_id: str = ALL
    ) -> dict[str, Totals]:
        accounts = [account_id] if account_id else self._strategy_accounts.get(strategy_id, ())
        for account in accounts:
            self._valued(account, strategy_id)
        return merged(self._strategy_totals.get((a, strategy_id), {}) for a in accounts)

    def account_currency_totals(self, account_id: str = ALL) -> dict[str, Totals]:
        """Totals of the account-level rows, per currency."""
        if account_id:
            self._valued(account_id, ACCOUNT_LEVEL)
            return merged([self._account_totals.get(account_id, {})])
        for account in self._account_totals:
            self._valued(account, ACCOUNT_LEVEL)
        return merged(self._account_totals.values())

    def strategies(self, account_id: str = ALL) -> Iterable[str]:
        """Strategy ids in order, of one account or of all."""
        ids: Iterable[str] = (
            self._account_strategies.get(account_id, ())
            if account_id
            else self._strategy_accounts.keys()
        )
        return ids


def _replaced(later: bool) -> Placement:
    return Placement.RESTATED if later else Placement.IN_ORDER


def _keys(fill: Fill | WindowedFill) -> tuple[PositionKey, PositionKey]:
    """The strategy row and the account-level row a fill books on."""
    return (
        PositionKey(fill.account_id, fill.strategy_id, fill.instrument_id),
        PositionKey(fill.account_id, ACCOUNT_LEVEL, fill.instrument_id),
    )


_Counted = tuple[
    Decimal, Decimal, Decimal, Decimal | None, Decimal, dict[str, Decimal] | None, int, int, int
]


def _counted(row: Position) -> _Counted:
    """All the figures `take_figures` sets (the totals count some of them): rows equal in
    these count the same in their totals."""
    return (
        row.quantity, row.cost_basis, row.realized_pnl, row.realized_pnl_base, row.fees,
        dict(row.other_fees) if row.other_fees else None, row.trade_count, row.opened_at_ns,
        row.updated_at_ns,
    )  # fmt: skip


def _take_counted(row: Position, figures: _Counted) -> None:
    (
        row.quantity, row.cost_basis, row.realized_pnl, row.realized_pnl_base, row.fees,
        row.other_fees, row.trade_count, row.opened_at_ns, row.updated_at_ns,
    ) = figures  # fmt: skip


def _figures(row: Position) -> tuple[object, ...]:
    return (
        row.quantity, row.cost_basis, row.realized_pnl, row.fees, row.other_fee_items(),
        row.trade_count, row.opened_at_ns, row.updated_at_ns,
    )  # fmt: skip
