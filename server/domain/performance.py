"""Performance attribution: round trips per row, fills per venue, and the statistics of a
scope's daily P&L.

A round trip is a row's life from flat to flat (or to a flip through zero, which closes one
trip and opens the next): its P&L is the realized P&L booked on the row meanwhile minus the
row's fees meanwhile (in the row's currency; fees charged in other currencies are not in it).
Trips are counted as fills are booked, O(1) per fill: a late fill that restates a row changes
its figures but not the trips already closed. Per venue: fills, traded notional, fees and the
realized P&L the venue's fills booked on their strategy rows, per currency.

Statistics of daily P&L (Sharpe, Sortino, volatility) are floats: they are estimates, not
money. They are computed from a scope's net P&L per trading day (pnl_history.py); on a
constant capital, the ratios of daily returns equal those of daily P&L, so no capital is
needed for them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, Rounded, localcontext
from typing import NamedTuple

from server.domain import steps
from server.domain.decimals import EXACT, ZERO
from server.domain.events import Fill
from server.domain.position import Position, PositionKey
from server.domain.steps import Steps, at_once

__all__ = ["Drawdown", "Performance", "RoundTrips", "VenueFigures", "daily_statistics", "mean"]

TRADING_DAYS_PER_YEAR = 252

# Sums here are read outside `EXACT` (on the event loop, by the wire encoders), where the
# thread's context (28 digits) would round 18+18-digit amounts: they use EXACT's methods.
_add = EXACT.add

# An average that is not exact (171.5 / 3) is given to 28 significant digits, as it always was.
_AVERAGE = Context(prec=28)


def mean(total: Decimal, count: int) -> Decimal:
    """total / count (count > 0): exact when the quotient is (a tail of one day, an even
    split), else rounded half-even to 28 significant digits: an estimate, not an amount."""
    try:
        return EXACT.divide(total, count)
    except (Inexact, Rounded):
        return _AVERAGE.divide(total, count)


@dataclass(slots=True)
class RoundTrips:
    """Closed round trips, in one currency."""

    count: int = 0
    wins: int = 0
    losses: int = 0
    gross_win: Decimal = ZERO
    gross_loss: Decimal = ZERO  # the sum of losing trips' P&L (<= 0)
    largest_win: Decimal = ZERO
    largest_loss: Decimal = ZERO  # the most negative trip

    def add(self, pnl: Decimal) -> None:
        """Adds a closed trip; inside `EXACT` (`Performance.booked`)."""
        self.count += 1
        if pnl > 0:
            self.wins += 1
            self.gross_win += pnl
            self.largest_win = max(self.largest_win, pnl)
        elif pnl < 0:
            self.losses += 1
            self.gross_loss += pnl
            self.largest_loss = min(self.largest_loss, pnl)

    def merge(self, other: RoundTrips) -> None:
        self.count += other.count
        self.wins += other.wins
        self.losses += other.losses
        self.gross_win = _add(self.gross_win, other.gross_win)
        self.gross_loss = _add(self.gross_loss, other.gross_loss)
        self.largest_win = max(self.largest_win, other.largest_win)
        self.largest_loss = min(self.largest_loss, other.largest_loss)

    @property
    def net(self) -> Decimal:
        return _add(self.gross_win, self.gross_loss)

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.count if self.count else None

    def average_win(self) -> Decimal | None:
        return mean(self.gross_win, self.wins) if self.wins else None

    def average_loss(self) -> Decimal | None:
        return mean(self.gross_loss, self.losses) if self.losses else None

    def profit_factor(self) -> float | None:
        """Gross win over gross loss; None without a losing trip."""
        return float(self.gross_win / -self.gross_loss) if self.gross_loss else None

    def expectancy(self) -> Decimal | None:
        """The average trip's P&L."""
        return mean(self.net, self.count) if self.count else None


@dataclass(slots=True)
class VenueFigures:
    """What one venue's fills did, in one currency."""

    fills: int = 0
    volume: Decimal = ZERO  # traded notional, buys and sells alike
    fees: Decimal = ZERO
    realized_pnl: Decimal = ZERO


class _Open(NamedTuple):
    """A trip in progress: its side and the row's running realized P&L and fees at its start."""

    sign: int
    realized_pnl: Decimal
    fees: Decimal


# Most trips start on a new row: realized P&L and fees before its first fill are both zero.
# Such starts share one record per (side, zeros' texts) instead of a tuple and a fresh zero
# each (~170 B a row). Keyed by text, not value: Decimal("0") and Decimal("0.00") are equal
# but a trip's P&L keeps the exponent it was computed with, so a record holds zeros of the
# very exponent and sign the row's figures gave. Records are immutable; the table is bounded
# (zeros of odd exponents beyond it get a record of their own), so it never grows with the book.
_SHARED_STARTS_MAX = 256


OpenTrip = tuple[PositionKey, int, Decimal, Decimal]
"""A row's round trip in progress, as a checkpoint keeps it: the row's key, the sign of the
position that opened it, and the realized P&L and fees it started from."""

PerformanceState = tuple[
    list[OpenTrip],
    list[tuple[PositionKey, RoundTrips]],
    list[tuple[tuple[str, str, str, str], VenueFigures]],
    list[tuple[tuple[str, str], int]],
]
"""What a checkpoint keeps: trips in progress, closed trips per row, venues, inceptions."""


def _sign(quantity: Decimal) -> int:
    return 1 if quantity > 0 else -1


class _Starts:
    """The shared records of trips that start from zero realized P&L and zero fees."""

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: dict[tuple[int, str, str], _Open] = {}

    def of(self, sign: int, realized_pnl: Decimal, fees: Decimal) -> _Open:
        if realized_pnl or fees:
            return _Open(sign, realized_pnl, fees)
        text = (sign, str(realized_pnl), str(fees))
        record = self._records.get(text)
        if record is None:
            record = _Open(sign, realized_pnl, fees)
            if len(self._records) < _SHARED_STARTS_MAX:
                self._records[text] = record
        return record


class Performance:
    """Round trips per row and fills per venue, kept as fills are booked."""

    def __init__(self) -> None:
        self._open: dict[PositionKey, _Open] = {}
        self._starts = _Starts()
        self._trips: dict[PositionKey, RoundTrips] = {}
        # (account_id, strategy_id, venue, currency) -> its figures.
        self._venues: dict[tuple[str, str, str, str], VenueFigures] = {}
        # (account_id, strategy_id; "" = the account-level book) -> its first fill's time.
        self._inception: dict[tuple[str, str], int] = {}

    def booked(
        self,
        fill: Fill,
        rows: Iterable[Position],
        *,
        realized_before: Decimal,
        notional: Decimal,
        currency: str,
    ) -> None:
        """After `fill` was booked: `rows` are its rows as it left them, `realized_before` its
        strategy row's realized P&L before it, `notional` its traded value in `currency`.
        Inside `EXACT` (the ledger books the fill in it)."""
        fee_here = fill.commission if fill.commission_currency in ("", currency) else ZERO
        for row in rows:
            self._row_booked(row, fee_here)
            scope = (fill.account_id, row.key.strategy_id)
            if scope not in self._inception or fill.timestamp_ns < self._inception[scope]:
                self._inception[scope] = fill.timestamp_ns
            if not row.key.is_account_level:
                key = (fill.account_id, fill.strategy_id, fill.venue, currency)
                venue = self._venues.get(key)
                if venue is None:
                    venue = self._venues[key] = VenueFigures()
                venue.fills += 1
                venue.volume += abs(notional)
                venue.fees += fee_here
                venue.realized_pnl += row.realized_pnl - realized_before

    def _row_booked(self, row: Position, fee: Decimal) -> None:
        key, quantity = row.key, row.quantity
        trip = self._open.get(key)
        if trip is None:
            if quantity:  # opened: this fill's fee is the trip's first
                self._open[key] = self._starts.of(_sign(quantity), row.realized_pnl, row.fees - fee)
            return
        if quantity and _sign(quantity) == trip.sign:
            return
        pnl = (row.realized_pnl - trip.realized_pnl) - (row.fees - trip.fees)
        trips = self._trips.get(key)
        if trips is None:
            trips = self._trips[key] = RoundTrips()
        trips.add(pnl)
        if quantity:  # a flip: the next trip starts now (this fill's fee went to the last)
            self._open[key] = _Open(_sign(quantity), row.realized_pnl, row.fees)
        else:
            del self._open[key]

    # -- reading ---------------------------------------------------------------------------

    def trips(self, keys: Iterable[tuple[PositionKey, str]]) -> dict[str, RoundTrips]:
        """The round trips of rows (key, currency), summed per currency."""
        total: dict[str, RoundTrips] = {}
        for key, currency in keys:
            trips = self._trips.get(key)
            if trips is not None:
                total.setdefault(currency, RoundTrips()).merge(trips)
        return total

    def open_trips(self, keys: Iterable[PositionKey]) -> int:
        return sum(key in self._open for key in keys)

    def venues(
        self, account_id: str = "", strategy_id: str = ""
    ) -> dict[tuple[str, str], VenueFigures]:
        """(venue, currency) -> figures of an account ("": every account), of one strategy
        ("": every strategy)."""
        total: dict[tuple[str, str], VenueFigures] = {}
        for (account, strategy, venue, currency), figures in self._venues.items():
            if (account_id and account != account_id) or (strategy_id and strategy != strategy_id):
                continue
            into = total.get((venue, currency))
            if into is None:
                into = total[(venue, currency)] = VenueFigures()
            into.fills += figures.fills
            into.volume = _add(into.volume, figures.volume)
            into.fees = _add(into.fees, figures.fees)
            into.realized_pnl = _add(into.realized_pnl, figures.realized_pnl)
        return total

    def inception_ns(self, account_id: str, strategy_id: str) -> int:
        return self._inception.get((account_id, strategy_id), 0)

    # -- checkpoints -----------------------------------------------------------------------

    def state(self, rows_in_order: Iterable[PositionKey] = ()) -> PerformanceState:
        return at_once(self.stating(rows_in_order))

    def stating(self, rows_in_order: Iterable[PositionKey] = ()) -> Steps[PerformanceState]:
        """The figures as a checkpoint keeps them, in an order that depends only on them. The
        rows' trips follow `rows_in_order` (the book's keys, kept sorted), those of rows not
        in it (a flat row evicted) after, in key order: sorting a million trips opened in
        random order held the event loop about 13 s at a snapshot (a key-sorted dict, as
        after a restart, sorted in a fraction of a second). In steps of
        `steps.COPIES_PER_STEP` rows (about 1 us a row); nothing may change between them."""
        opened, closed = self._open, self._trips
        open_trips: list[OpenTrip] = []
        trips: list[tuple[PositionKey, RoundTrips]] = []
        for chunk in steps.copies(rows_in_order):
            for key in chunk:
                trip = opened.get(key)
                if trip is not None:
                    open_trips.append((key, *trip))
                done = closed.get(key)
                if done is not None:
                    trips.append((key, _copy(done)))
            yield
        if len(open_trips) < len(opened):
            listed = {trip[0] for trip in open_trips}
            open_trips += sorted((k, *t) for k, t in opened.items() if k not in listed)
        if len(trips) < len(closed):
            listed = {key for key, _ in trips}
            trips += sorted(
                ((k, _copy(t)) for k, t in closed.items() if k not in listed), key=lambda t: t[0]
            )
        return (
            open_trips,
            trips,
            sorted(((k, _copy_venue(f)) for k, f in self._venues.items()), key=lambda t: t[0]),
            sorted(self._inception.items()),
        )

    def restore(
        self,
        open_trips: Iterable[OpenTrip],
        trips: Iterable[tuple[PositionKey, RoundTrips]],
        venues: Iterable[tuple[tuple[str, str, str, str], VenueFigures]],
        inception: Iterable[tuple[tuple[str, str], int]],
    ) -> None:
        # One record for the trips whose start is the same objects (a checkpoint reads one
        # Decimal per distinct text): records are immutable, and a million rows' trips at a
        # start cost about 0.9 s made one by one. A record is taken only if it holds those
        # very objects (an id can be another object's once the first is gone).
        of = self._starts.of
        made: dict[tuple[int, int, int], _Open] = {}
        opened = self._open = {}
        for key, sign, realized, fees in open_trips:
            same = (sign, id(realized), id(fees))
            record = made.get(same)
            if record is None or record.realized_pnl is not realized or record.fees is not fees:
                record = made[same] = of(sign, realized, fees)
            opened[key] = record
        self._trips = {key: _copy(t) for key, t in trips}
        self._venues = {key: _copy_venue(f) for key, f in venues}
        self._inception = dict(inception)


def _copy(trips: RoundTrips) -> RoundTrips:
    return RoundTrips(
        trips.count, trips.wins, trips.losses, trips.gross_win, trips.gross_loss,
        trips.largest_win, trips.largest_loss,
    )  # fmt: skip


def _copy_venue(figures: VenueFigures) -> VenueFigures:
    return VenueFigures(figures.fills, figures.volume, figures.fees, figures.realized_pnl)


# -- statistics of daily P&L --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Drawdown:
    """The largest fall of the cumulative P&L curve from a peak (a loss: >= 0), with the
    trading dates of the peak and of the trough, and of the recovery (""; not yet)."""

    amount: Decimal = ZERO
    peak_date: str = ""
    trough_date: str = ""
    recovered_date: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DailyStatistics:
    days: int
    total: Decimal
    mean: float | None
    volatility: float | None  # standard deviation of daily P&L (sample)
    sharpe_ratio: float | None  # annualized, sqrt(252)
    sortino_ratio: float | None  # annualized, downside deviation (target 0)
    drawdown: Drawdown


def daily_statistics(days: Sequence[tuple[str, Decimal]]) -> DailyStatistics:
    """Statistics of (trading date, net P&L) in date order. Ratios need two days and some
    variation (None otherwise); no risk-free rate is subtracted."""
    values = [float(pnl) for _, pnl in days]
    mean = statistics.fmean(values) if values else None
    volatility = statistics.stdev(values) if len(values) > 1 else None
    sharpe = (
        mean / volatility * math.sqrt(TRADING_DAYS_PER_YEAR)
        if mean is not None and volatility
        else None
    )
    downside = math.sqrt(sum(min(v, 0.0) ** 2 for v in values) / len(values)) if values else 0.0
    sortino = (
        mean / downside * math.sqrt(TRADING_DAYS_PER_YEAR)
        if mean is not None and downside and len(values) > 1
        else None
    )
    with localcontext(EXACT):
        total = sum((pnl for _, pnl in days), ZERO)
    return DailyStatistics(
        days=len(values),
        total=total,
        mean=mean,
        volatility=volatility,
        sharpe_ratio=sharpe,
        sortino_ratio=sortino,
        drawdown=max_drawdown(days),
    )


def max_drawdown(days: Sequence[tuple[str, Decimal]]) -> Drawdown:
    """On the cumulative curve, starting from 0 before the first day."""
    with localcontext(EXACT):
        return _max_drawdown(days)


def _max_drawdown(days: Sequence[tuple[str, Decimal]]) -> Drawdown:
    level = peak = ZERO
    peak_date = ""
    worst = Drawdown()
    for trading_date, pnl in days:
        level += pnl
        if level > peak:
            peak, peak_date = level, trading_date
        elif peak - level > worst.amount:
            worst = Drawdown(amount=peak - level, peak_date=peak_date, trough_date=trading_date)
    if worst.amount:
        seen_trough = False
        level = ZERO
        for trading_date, pnl in days:
            level += pnl
            if trading_date == worst.trough_date:
                seen_trough = True
                trough_peak = level + worst.amount
            elif seen_trough and level >= trough_peak:
                return Drawdown(
                    amount=worst.amount, peak_date=worst.peak_date,
                    trough_date=worst.trough_date, recovered_date=trading_date,
                )  # fmt: skip
    return worst
