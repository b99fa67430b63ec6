"""Rows that follow execution time, not arrival.

A row's figures are those of its fills applied in execution-time order: by `timestamp_ns`, ties
by `fill_id` (the booking key). Fills mostly arrive in that order and are simply applied. One
that arrives after a later-executed fill (a relay catching up after a reconnect, a fill of an
order the relay did not know) **restates** the row: it is inserted at its place and the fills
after it are applied again. Average cost and realized P&L then depend only on what happened.

So that this stays cheap and bounded, a row keeps only the fills of its restatement window
(those executed no earlier than the window's length before the latest fill the book has seen)
and its figures before them, the anchor. Every `SNAPSHOT_EVERY`-th booking also keeps the row's
figures after it, so a fill a few places late re-applies a few fills, whatever the row's
history; an in-order fill only appends. Fills leaving the window are folded into the anchor.

A fill older than the window still books, never refused: one executed after every fill
already folded out (`booked_through`) lands in its exact place at the window's start; one
executed before some of them cannot, and is booked at the window's start, flagged
OUTSIDE_WINDOW. The window depends only on the events, so a replay of the journal, or a
checkpoint holding each anchor plus the journal's fills inside the window, rebuilds the same.
"""

from __future__ import annotations

import enum
import sys
from bisect import bisect_right
from collections.abc import Callable, Sequence
from decimal import Decimal
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from server.domain.codec import FIELD_SEPARATOR, VERSION_MARK
from server.domain.events import Fill, Side
from server.domain.position import ACCOUNT_LEVEL, Position, PositionKey
from server.domain.totals import convert

SNAPSHOT_EVERY = 16


class Placement(enum.IntEnum):
    """Where a fill landed in its rows; ordered, so that a fill's placement is its rows'
    worst."""

    IN_ORDER = 1  # after every fill its rows had booked
    RESTATED = 2  # before some: the rows were recomputed from its place on
    OUTSIDE_WINDOW = 3  # before a fill folded out of the window: booked at the window's start


BookingKey = tuple[int, str]


class Booking:
    """One fill as its rows book it (the strategy row and the account-level row share it):
    where it sits in time and what it changes. `booked_id` is the id booked now (the fill's,
    or the latest correction's, which keeps the fill's place)."""

    __slots__ = (
        "booked_id",
        "commission",
        "fee_currency",
        "fill_id",
        "price",
        "quantity",
        "sequence",
        "time_ns",
    )

    def __init__(
        self,
        *,
        time_ns: int,
        fill_id: str,
        quantity: Decimal,
        price: Decimal,
        commission: Decimal,
        fee_currency: str,
        booked_id: str,
        sequence: int,
    ) -> None:
        self.time_ns = time_ns
        self.fill_id = fill_id
        self.quantity = quantity
        self.price = price
        self.commission = commission
        self.fee_currency = fee_currency
        self.booked_id = booked_id
        self.sequence = sequence  # of the event that booked it: what it may know of FX

    @classmethod
    def of(
        cls,
        fill: Fill | WindowedFill,
        sequence: int,
        place: BookingKey | None = None,
        amounts: SharedAmounts | None = None,
    ) -> Booking:
        """The booking of `fill`, at its own place in time or at `place` (a correction takes
        the place of the fill it corrects); its amounts one object per distinct text of
        `amounts` when given (the window and the rows keep them)."""
        time_ns, fill_id = place if place is not None else (fill.timestamp_ns, fill.fill_id)
        quantity, price, commission = fill.signed_quantity, fill.price, fill.commission
        if amounts is not None:
            quantity, price = amounts.shared(quantity), amounts.shared(price)
            commission = amounts.shared(commission)
        return cls(
            time_ns=time_ns, fill_id=fill_id, quantity=quantity, price=price,
            commission=commission, fee_currency=sys.intern(fill.commission_currency),
            booked_id=fill.fill_id, sequence=sequence,
        )  # fmt: skip

    @property
    def key(self) -> BookingKey:
        return (self.time_ns, self.fill_id)

    def apply_to(self, row: Position, booker: Booker) -> None:
        realized = row.book(
            time_ns=self.time_ns, quantity=self.quantity, price=self.price,
            commission=self.commission, fee_currency=self.fee_currency,
            precision=booker.precision,
        )  # fmt: skip
        if not realized or row.realized_pnl_base is None:
            return
        if not row.foreign:
            row.realized_pnl_base += realized
            return
        rate = booker.rate_at(row.currency, row.base_currency, self.time_ns, self.sequence)
        if rate is None:
            row.realized_pnl_base = None
        else:
            row.realized_pnl_base += convert(realized, rate, booker.precision)


class WindowedFill(NamedTuple):
    """What a journaled fill inside the window gives its rows at a restart: the fields its
    rows and its Booking need, no more (see WindowReader)."""

    account_id: str
    strategy_id: str
    instrument_id: str
    fill_id: str
    timestamp_ns: int
    signed_quantity: Decimal
    price: Decimal
    commission: Decimal
    commission_currency: str


_READ = (
    "account_id", "strategy_id", "instrument_id", "fill_id", "timestamp_ns", "side",
    "quantity", "price", "commission", "commission_currency",
)  # fmt: skip
SHARED_AMOUNTS = 65_536  # distinct amount texts given one Decimal each in one restart
_BUY, _SELL = Side.BUY.name, Side.SELL.name


class WindowReader:
    """Reads journaled fills' texts as WindowedFill, for rebuilding the windows at a restart.

    Why not `Fill.from_text`: building and validating each Fill was most of a restart's cost
    per fill inside the window (measured 20 of 39 us), and the journal holds only fills
    validated at admission. A text of the current layout is split and its fields taken
    as the codec would decode them (the same Decimal from the same text, one per distinct
    text); any other (an older layout, a version mark) goes through `Fill.from_text`."""

    def __init__(self) -> None:
        codec = Fill.codec()
        self._count = len(codec.names) + (codec.version > 1)
        self._mark = f"{VERSION_MARK}{codec.version}" if codec.version > 1 else None
        offset = codec.version > 1
        self._fields = itemgetter(*(codec.names.index(name) + offset for name in _READ))
        self._row = itemgetter(
            *(codec.names.index(name) + offset for name in ("strategy_id", "instrument_id"))
        )
        self._amounts: dict[str, Decimal] = {}

    def _current(self, parts: list[str]) -> bool:
        """Whether a text's fields are of the current layout (else Fill.from_text decodes)."""
        return len(parts) == self._count and (
            parts[0] == self._mark if self._mark else parts[0][:1] != VERSION_MARK
        )

    def row(self, text: str) -> tuple[str, str]:
        """A fill text's strategy and instrument, whatever its text version: what the
        journal's columns of layout v3 hold, given to an older journal's fills once
        (upcasters.current_journal; measured 0.3 us a fill of the current layout, loaded)."""
        parts = text.split(FIELD_SEPARATOR)
        if self._current(parts):
            found: tuple[str, str] = self._row(parts)
            return found
        fill = Fill.from_text(text)
        return fill.strategy_id, fill.instrument_id

    def read(self, text: str) -> WindowedFill:
        parts = text.split(FIELD_SEPARATOR)
        if not self._current(parts):
            return self.of(Fill.from_text(text))
        account, strategy, instrument, fill_id, time_ns, side, quantity, price, commission, fee = (
            self._fields(parts)
        )  # fmt: skip
        if side == _BUY:
            signed = self._amount(quantity)
        elif side == _SELL:
            signed = -self._amount(quantity)  # as Fill.signed_quantity has it
        else:
            return self.of(Fill.from_text(text))
        return WindowedFill(
            account, strategy, instrument, fill_id, int(time_ns), signed, self._amount(price),
            self._amount(commission), fee,
        )  # fmt: skip

    def _amount(self, text: str) -> Decimal:
        value = self._amounts.get(text)
        if value is None:
            value = Decimal(text)
            if len(self._amounts) < SHARED_AMOUNTS:
                self._amounts[text] = value
        return value

    @staticmethod
    def of(fill: Fill) -> WindowedFill:
        return WindowedFill(
            fill.account_id, fill.strategy_id, fill.instrument_id, fill.fill_id,
            fill.timestamp_ns, fill.signed_quantity, fill.price, fill.commission,
            fill.commission_currency,
        )  # fmt: skip


RateAt = Callable[[str, str, int, int], Decimal | None]
"""(from, to, time_ns, sequence): the latest rate stamped at or before `time_ns` among those
journaled before `sequence`; None when there is none."""


def _no_rates(from_currency: str, to_currency: str, time_ns: int, sequence: int) -> None:
    return None


SHARED_BOOKED = 16_384
"""Distinct amount texts a book shares one Decimal for, before it starts over."""


class SharedAmounts:
    """One Decimal per distinct amount, among the recent ones, for what the book keeps.

    Every fill brings its own Decimals (104 bytes each), and a row and its window keep the
    fill's quantity, price and commission for the day: with quantities, commissions and
    prices repeating (round lots, a fee schedule, a tick grid), most are equal to one kept
    already. Equal means the same text: Decimal("100") and Decimal("100.0") are equal
    numbers but not the same figure, so the key is the text, not the number. The table
    starts over once it holds `limit` texts, so it stays small whatever the book holds."""

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int = SHARED_BOOKED) -> None:
        self.limit = limit
        self._held: dict[str, Decimal] = {}

    def shared(self, amount: Decimal) -> Decimal:
        """`amount`, or a Decimal of the same text kept before."""
        text = str(amount)
        held = self._held.get(text)
        if held is not None:
            return held
        if len(self._held) >= self.limit:
            self._held.clear()
        self._held[text] = amount
        return amount

    def __len__(self) -> int:
        return len(self._held)


class Booker:
    """What booking needs besides the row: the precision of divisions and conversions, the
    FX history (realized P&L in base converts at the rate in force when realized), and the
    amounts its bookings share."""

    __slots__ = ("amounts", "precision", "rate_at")

    def __init__(self, precision: Decimal, rate_at: RateAt = _no_rates) -> None:
        self.precision = precision
        self.rate_at = rate_at
        self.amounts = SharedAmounts()


def _key(booking: Booking) -> BookingKey:
    return (booking.time_ns, booking.fill_id)


_sort_key: Callable[[Booking], BookingKey] = attrgetter("time_ns", "fill_id")  # _key, in C


_NO_SNAPSHOTS: dict[Booking, Position] = {}
"""Shared by the windows with no snapshot (most: fewer than SNAPSHOT_EVERY bookings), never
written to: a window gets a dict of its own with its first snapshot (64 bytes a row saved)."""


class RowWindow:
    """A row's bookings inside the window, in execution-time order (never empty), the row's
    figures before the first of them (`anchor`; None while they are a new row's: nothing, as
    for most rows opened inside the window, without a copy of 180 bytes each), and after every
    SNAPSHOT_EVERY-th (`snapshots`, by booking). `queued_ns`: the earliest booking time the
    book's eviction queue holds for it.

    After a restart, `deferred` (see Deferred) may hold the window's earliest bookings, not
    read back yet: `bookings` are then those booked since (all after them) and `anchor` the
    row's figures after the deferred ones.

    A new row's window of one booking is that Booking alone (`Window`), until the row's next
    change: most rows of a large book trade once or twice a day, and this object and its list
    took 136 bytes a row. It becomes a RowWindow (`_widened`) before anything else is done to
    it, with `queued_ns` its booking's time (the book queues a window when it is made)."""

    __slots__ = ("anchor", "bookings", "deferred", "queued_ns", "snapshots")

    def __init__(self, anchor: Position | None, bookings: list[Booking]) -> None:
        self.anchor = anchor
        self.bookings = bookings
        self.snapshots: dict[Booking, Position] = _NO_SNAPSHOTS  # its own once it has one
        self.queued_ns: int | None = None
        self.deferred: Deferred | None = None


_NOTHING = Position(key=PositionKey("", "", ""), multiplier=Decimal(1))
"""The figures of a new row (take_figures copies figures only, never identity)."""


def _pristine(row: Position) -> bool:
    """Whether a row's figures are a new row's: its anchor need not be kept."""
    return not (
        row.trade_count or row.quantity or row.cost_basis or row.realized_pnl or row.fees
        or row.other_fees or row.opened_at_ns or row.updated_at_ns or row.booked_through_ns
        or row.realized_pnl_base is None or row.realized_pnl_base
    )  # fmt: skip


Window: TypeAlias = "RowWindow | Booking | Deferred"
"""What a row keeps of its window: a lone Booking for a new row's first (see RowWindow); after
a restart, the window's fills as the journal holds them until first needed (Deferred)."""


def bookings_of(window: Window) -> Sequence[Booking]:
    """A window's bookings, in execution-time order (none deferred: see materialize)."""
    if isinstance(window, Booking):
        return (window,)
    assert deferred_of(window) is None, "the window's deferred bookings are read back first"
    assert isinstance(window, RowWindow)
    return window.bookings


def _widened(row: Position) -> RowWindow:
    """The row's window as a RowWindow (made from a lone Booking if it is one)."""
    window = row.window
    assert window is not None and not isinstance(window, Deferred)
    if isinstance(window, Booking):
        widened = row.window = RowWindow(None, [window])
        widened.queued_ns = window.time_ns  # queued when it was made
        return widened
    assert isinstance(window, RowWindow)
    return window


def anchor_of(row: Position, window: Window) -> Position:
    """The row's figures before its window, as a row of its own (a new one if it had none)."""
    if isinstance(window, RowWindow) and window.anchor is not None:
        return window.anchor
    return Position(
        key=row.key, multiplier=row.multiplier, currency=row.currency,
        base_currency=row.base_currency,
    )  # fmt: skip


# -- windows rebuilt when first needed (a restart) -------------------------------------------
# A restart gets each row's figures from the checkpoint; its window's fills (inside the window,
# journaled before the checkpoint) are needed only when a fill lands before one of them, a
# correction looks one up, or the window's start passes some of them. Reading them back for
# every row at the start cost about 17 us a fill (parsing the texts, building the Bookings,
# applying them again only to find the checkpoint's figures). So a row keeps them as the
# journal holds them (Deferred): an in-order fill appends after them (RowWindow.deferred),
# eviction reads back only what leaves the window, and anything else reads them all back
# (`materialize`), comparing what they give with what the row held.


class JournaledFills(NamedTuple):
    """Journaled fills in a row, in sequence order, as columns (a restart reads millions:
    no object per fill), their texts not decoded. Each fill's strategy row is in its own
    columns (the journal's, from layout v3), so that grouping the fills by row reads no text."""

    sequences: npt.NDArray[np.int64]
    account_ids: npt.NDArray[np.object_]
    strategy_ids: npt.NDArray[np.object_]
    instrument_ids: npt.NDArray[np.object_]
    fill_ids: npt.NDArray[np.object_]
    times_ns: npt.NDArray[np.int64]
    texts: npt.NDArray[np.object_]

    def where(self, mask: npt.NDArray[np.bool_]) -> JournaledFills:
        """The fills the mask keeps (these same columns when it keeps all: a restart's
        millions of fills are mostly all inside the window, and each copy took 0.1-0.2 s)."""
        if mask.all():
            return self
        return JournaledFills._make(column[mask] for column in self)

    @staticmethod
    def joined(parts: Sequence[JournaledFills]) -> JournaledFills:
        if not parts:
            empty = np.array([], dtype=object)
            none = np.array([], dtype=np.int64)
            return JournaledFills(none, empty, empty, empty, empty, none, empty)
        if len(parts) == 1:
            return parts[0]
        return JournaledFills._make(np.concatenate(column) for column in zip(*parts, strict=True))


def _codes(column: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """Each value's code among the column's distinct values, and those values (in the order
    first seen: codes in C, a hash table, without a Python call a value)."""
    codes, distinct = pd.factorize(column)
    return codes.astype(np.int64, copy=False), np.asarray(distinct)


class JournalRows(NamedTuple):
    """The journal window's fills with each one's strategy row (`codes` into `keys`) and each
    strategy row's account-level row (`account_codes` into `account_keys`), found without
    decoding the texts."""

    keys: list[PositionKey]
    codes: npt.NDArray[np.int64]
    texts: npt.NDArray[np.object_]
    sequences: npt.NDArray[np.int64]
    times_ns: npt.NDArray[np.int64]
    account_codes: npt.NDArray[np.int64]
    account_keys: list[PositionKey]

    @classmethod
    def of(cls, fills: JournaledFills) -> JournalRows:
        """The fills grouped by their row columns in C (hashing each column, then pairs of
        codes), codes in the order rows are first seen: measured at 1M window fills, under
        load, 0.5-1.2 us a fill against 2.3-4.3 us for a regular expression on each text
        and a dict look-up (the journal's columns, before layout 3). The keys are made from
        the distinct values directly (tuple.__new__, no Python call a key): joined into one
        text and split again they cost about 1 s at a start on a million rows."""
        accounts, account_of = _codes(fills.account_ids)
        strategies, strategy_of = _codes(fills.strategy_ids)
        instruments, instrument_of = _codes(fills.instrument_ids)
        # pairs, then rows: each combined code is below the number of fills squared
        pairs, pair_of = _codes(accounts * len(strategy_of) + strategies)
        codes, row_of = _codes(pairs * len(instrument_of) + instruments)
        pair_of_row = pair_of[row_of // len(instrument_of)]
        account_of_row = pair_of_row // len(strategy_of)
        instrument_of_row = row_of % len(instrument_of)
        new = tuple.__new__
        keys = [
            new(PositionKey, row)
            for row in zip(
                account_of[account_of_row].tolist(),
                strategy_of[pair_of_row % len(strategy_of)].tolist(),
                instrument_of[instrument_of_row].tolist(),
                strict=True,
            )
        ]
        account_codes, account_row_of = _codes(
            account_of_row * len(instrument_of) + instrument_of_row
        )
        account_keys = [
            new(PositionKey, (account, ACCOUNT_LEVEL, instrument))
            for account, instrument in zip(
                account_of[account_row_of // len(instrument_of)].tolist(),
                instrument_of[account_row_of % len(instrument_of)].tolist(),
                strict=True,
            )
        ]
        return cls(
            keys, codes, fills.texts.copy(), fills.sequences, fills.times_ns, account_codes,
            account_keys,
        )  # fmt: skip

    def where(self, mask: npt.NDArray[np.bool_]) -> JournalRows:
        if mask.all():
            return self
        return self._replace(
            codes=self.codes[mask],
            texts=self.texts[mask],
            sequences=self.sequences[mask],
            times_ns=self.times_ns[mask],
        )


class JournalWindow:
    """The journal's fills inside the window at a restart, as read (texts not parsed), shared
    by the rows' Deferred: each is parsed once, when the first of its two rows needs it, and
    its Booking kept for the other row (as live rows share one), its text let go."""

    __slots__ = ("_parsed", "reader", "sequences", "texts")

    def __init__(self, texts: npt.NDArray[np.object_], sequences: npt.NDArray[np.int64]) -> None:
        self.texts = texts
        self.sequences = sequences
        self.reader = WindowReader()
        self._parsed: dict[int, Booking] = {}

    def booking(self, index: int, amounts: SharedAmounts) -> Booking:
        booking = self._parsed.pop(index, None)
        if booking is not None:  # its other row's: both rows have it now
            return booking
        text = self.texts[index]
        self.texts[index] = None
        booking = Booking.of(self.reader.read(text), int(self.sequences[index]), amounts=amounts)
        self._parsed[index] = booking
        return booking


class WindowOrder:
    """The journal window's fills by row, then execution time (`indexes` into the
    JournalWindow), with their times in that order (`times_ns`): each row's are a range."""

    __slots__ = ("indexes", "journal", "times_ns")

    def __init__(
        self,
        journal: JournalWindow,
        indexes: npt.NDArray[np.int64],
        times_ns: npt.NDArray[np.int64],
    ) -> None:
        self.journal = journal
        self.indexes = indexes
        self.times_ns = times_ns


class Deferred:
    """A row's window bookings still in the journal: the range [start, stop) of `order`, the
    row's figures before them (`anchor`, None for a new row's), the latest of their times
    (`last_ns`). As a row's window on its own, the row's figures are those after them."""

    __slots__ = ("anchor", "last_ns", "order", "queued_ns", "start", "stop")

    def __init__(
        self, order: WindowOrder, start: int, stop: int, anchor: Position | None, last_ns: int
    ) -> None:
        self.order = order
        self.start = start
        self.stop = stop
        self.anchor = anchor
        self.last_ns = last_ns  # order.times_ns[stop - 1]
        self.queued_ns: int | None = None

    @property
    def first_ns(self) -> int:
        return int(self.order.times_ns[self.start])

    def bookings(self, stop: int, booker: Booker) -> list[Booking]:
        """Its bookings from `start` up to `stop`, read back, in execution-time order."""
        journal, amounts = self.order.journal, booker.amounts
        made = [journal.booking(i, amounts) for i in self.order.indexes[self.start : stop].tolist()]
        made.sort(key=_sort_key)
        return made


def deferred_of(window: Window | None) -> Deferred | None:
    """The bookings of a row's window still in the journal, if any."""
    if isinstance(window, Deferred):
        return window
    if isinstance(window, RowWindow):
        return window.deferred
    return None


def first_ns(window: Window) -> int:
    """The execution time of a window's first booking."""
    if isinstance(window, Booking):
        return window.time_ns
    if isinstance(window, Deferred):
        return window.first_ns
    if window.deferred is not None:
        return window.deferred.first_ns
    return window.bookings[0].time_ns


def appends(row: Position, booking: Booking, horizon_ns: int) -> bool:
    """Whether `book` would book a fill on a row with deferred bookings after all of them
    (nothing read back): one executed after the latest of them, inside the window."""
    deferred = deferred_of(row.window)
    return deferred is None or (
        booking.time_ns > deferred.last_ns and booking.time_ns >= horizon_ns
    )


def _state(row: Position) -> tuple[object, ...]:
    """What a row's bookings decide (take_figures' fields): equal, the row came out as held."""
    return (
        row.quantity, row.cost_basis, row.realized_pnl, row.realized_pnl_base, row.fees,
        row.other_fee_items(), row.trade_count, row.opened_at_ns, row.updated_at_ns,
    )  # fmt: skip


def materialize(row: Position, booker: Booker) -> bool:
    """Reads back a row's deferred bookings: its window is whole again, its figures
    recomputed from its anchor. Returns whether they gave other figures than the row held
    after them (none, unless a bug: the row then keeps what the journal gives)."""
    window = row.window
    deferred = deferred_of(window)
    if deferred is None:
        return False
    tail: list[Booking] = []
    if isinstance(window, RowWindow):  # bookings since, after the deferred ones
        assert window.anchor is not None
        tail, held = window.bookings, _state(window.anchor)
    else:
        held = _state(row)
    whole = RowWindow(deferred.anchor, deferred.bookings(deferred.stop, booker))
    whole.queued_ns = window.queued_ns if isinstance(window, RowWindow) else deferred.queued_ns
    row.window = whole
    _replay(row, whole, 0, booker)
    differ = _state(row) != held
    if tail:
        start = len(whole.bookings)
        whole.bookings.extend(tail)
        _replay(row, whole, start, booker)
    return differ


def _evict_deferred(row: Position, deferred: Deferred, horizon_ns: int, booker: Booker) -> bool:
    """Folds the deferred bookings executed before `horizon_ns` into their anchor, reading
    back only those; when none is left, the row's window is what was booked since (or none).
    Returns whether the figures after them came out other than the row held (see
    materialize)."""
    times = deferred.order.times_ns[deferred.start : deferred.stop]
    cut = deferred.start + int(np.searchsorted(times, horizon_ns, side="left"))
    if cut == deferred.start:
        return False
    folded = deferred.bookings(cut, booker)
    anchor = deferred.anchor
    if anchor is None:
        anchor = Position(
            key=row.key, multiplier=row.multiplier, currency=row.currency,
            base_currency=row.base_currency,
        )  # fmt: skip
    for booking in folded:
        booking.apply_to(anchor, booker)
    row.booked_through = folded[-1].key
    deferred.start, deferred.anchor = cut, anchor
    if cut < deferred.stop:
        return False
    window = row.window
    if isinstance(window, RowWindow):  # what was booked since stays, on the journal's figures
        assert window.anchor is not None
        differ = _state(anchor) != _state(window.anchor)
        window.deferred, window.anchor = None, anchor
        if differ:
            _replay(row, window, 0, booker)
        return differ
    differ = _state(anchor) != _state(row)
    row.window = None
    row.take_figures(anchor)
    return differ


def defer(
    row: Position,
    order: WindowOrder,
    start: int,
    stop: int,
    anchor: Position | None,
    last_ns: int,
) -> None:
    """Recovery: gives a row the window bookings in `order`'s range [start, stop), left in the
    journal (the row's figures, from the checkpoint, are those after them; `last_ns`, the
    latest of their times), and its `anchor` (None: nothing, a row opened inside the window)."""
    kept = None if anchor is None or _pristine(anchor) else anchor
    row.window = Deferred(order, start, stop, kept, last_ns)


def checkpoint_anchor(window: Window | None) -> Position | None:
    """A row's figures before its window, unless they are a new row's: what a checkpoint
    keeps of the row's window (the journal holds its bookings)."""
    if isinstance(window, Deferred):
        return window.anchor
    if isinstance(window, RowWindow):
        return window.deferred.anchor if window.deferred is not None else window.anchor
    return None


def book(row: Position, booking: Booking, horizon_ns: int, booker: Booker) -> Placement:
    """Books a fill on a row at its place in execution time; inside `EXACT`. `horizon_ns` is
    the window's start: fills before it are folded at once."""
    time_ns, window = booking.time_ns, row.window
    through_ns, through_id = row.booked_through
    if time_ns < through_ns or (time_ns == through_ns and booking.fill_id < through_id):
        _book_at_anchor(row, booking, booker)
        return Placement.OUTSIDE_WINDOW
    if time_ns < horizon_ns:  # its exact place: after the folded, before the window
        _book_at_anchor(row, booking, booker)
        row.booked_through = booking.key
        return Placement.RESTATED if window is not None else Placement.IN_ORDER
    if window is None:
        row.window = booking if _pristine(row) else RowWindow(row.copy(), [booking])
        booking.apply_to(row, booker)
        return Placement.IN_ORDER
    if isinstance(window, Deferred):  # after its deferred bookings (see `appends`)
        since = row.window = RowWindow(row.copy(), [booking])
        since.deferred, since.queued_ns = window, window.queued_ns
        booking.apply_to(row, booker)
        return Placement.IN_ORDER
    window = _widened(row)
    bookings = window.bookings
    last = bookings[-1]
    if time_ns > last.time_ns or (time_ns == last.time_ns and booking.fill_id > last.fill_id):
        booking.apply_to(row, booker)
        bookings.append(booking)
        if len(bookings) % SNAPSHOT_EVERY == 0:
            if window.snapshots is _NO_SNAPSHOTS:
                window.snapshots = {}
            window.snapshots[booking] = row.copy()
        return Placement.IN_ORDER
    index = bisect_right(bookings, booking.key, key=_key)
    bookings.insert(index, booking)
    _replay(row, window, index, booker)
    return Placement.RESTATED


def book_outside_window(row: Position, booking: Booking, booker: Booker) -> Placement:
    """Books a fill at the window's start, whatever its time (a correction's bust and
    replacement when what it corrects is no longer in the window)."""
    _book_at_anchor(row, booking, booker)
    return Placement.OUTSIDE_WINDOW


def visible(window: Window) -> Sequence[Booking]:
    """A window's bookings not deferred, in execution-time order: all of them, unless some
    are deferred (then those booked since, all after them)."""
    if isinstance(window, Booking):
        return (window,)
    if isinstance(window, Deferred):
        return ()
    return window.bookings


def find(row: Position, booked_id: str) -> int | None:
    """The index among the row's window bookings not deferred (see `visible`) of what is
    booked under `booked_id` (latest first: a correction usually follows its fill closely)."""
    window = row.window
    if window is None:
        return None
    bookings = visible(window)
    for index in range(len(bookings) - 1, -1, -1):
        if bookings[index].booked_id == booked_id:
            return index
    return None


def replace(row: Position, index: int, replacement: Booking | None, booker: Booker) -> bool:
    """Puts `replacement` in the place of the booking at `index` (or takes it out, for None)
    and recomputes the row from there; returns whether fills after it were applied again."""
    window = _widened(row)  # `index` among the bookings since the deferred ones, if any
    bookings = window.bookings
    window.snapshots.pop(bookings[index], None)
    if replacement is None:
        del bookings[index]
    else:
        bookings[index] = replacement
    if not bookings and window.deferred is not None:  # the deferred ones alone again
        assert window.anchor is not None
        row.take_figures(window.anchor)
        window.deferred.queued_ns = window.queued_ns
        row.window = window.deferred
        return False
    if not bookings:
        row.take_figures(window.anchor or _NOTHING)
        row.window = None
        return False
    later = index < len(bookings) - (0 if replacement is None else 1)
    _replay(row, window, index, booker)
    return later


def evict(row: Position, horizon_ns: int, booker: Booker) -> bool:
    """Folds the bookings executed before `horizon_ns` into the anchor. Returns whether
    deferred bookings read back for it gave other figures than the row held (see
    materialize)."""
    window = row.window
    differ = False
    deferred = deferred_of(window)
    if deferred is not None:
        differ = _evict_deferred(row, deferred, horizon_ns, booker)
        window = row.window
        if deferred_of(window) is not None:  # some left: what was booked since is after them
            return differ
    if window is None:
        return differ
    if isinstance(window, Booking):
        if window.time_ns < horizon_ns:
            row.booked_through = window.key
            row.window = None
        return differ
    assert isinstance(window, RowWindow)
    bookings = window.bookings
    count = 0
    while count < len(bookings) and bookings[count].time_ns < horizon_ns:
        count += 1
    if not count:
        return differ
    row.booked_through = bookings[count - 1].key
    if count == len(bookings):  # the row's figures are the anchor now
        row.window = None
        return differ
    snapshots = window.snapshots
    start, anchor = 0, anchor_of(row, window)
    for index in range(count - 1, -1, -1):
        snapshot = snapshots.get(bookings[index])
        if snapshot is not None:  # its booking goes: the snapshot becomes the anchor
            start, anchor = index + 1, snapshot
            break
    for booking in bookings[start:count]:
        booking.apply_to(anchor, booker)
    if snapshots:
        for booking in bookings[:count]:
            snapshots.pop(booking, None)
    window.anchor = anchor
    del bookings[:count]
    return differ


def rebuild(row: Position, anchor: Position, bookings: list[Booking], booker: Booker) -> None:
    """Recovery: gives a row its anchor and the bookings of its window (any order) and
    recomputes its figures from them."""
    bookings.sort(key=_sort_key)
    row.window = RowWindow(None if _pristine(anchor) else anchor, bookings)
    _replay(row, row.window, 0, booker)


def _book_at_anchor(row: Position, booking: Booking, booker: Booker) -> None:
    """Applies a fill at the window's start: to the anchor, then the window again."""
    if row.window is None:
        booking.apply_to(row, booker)
        return
    window = _widened(row)
    assert window.deferred is None, "the window's deferred bookings are read back first"
    window.anchor = anchor_of(row, window)
    booking.apply_to(window.anchor, booker)
    _replay(row, window, 0, booker)


def _replay(row: Position, window: RowWindow, start: int, booker: Booker) -> None:
    """Recomputes the row from the booking at `start` on, from the nearest snapshot before."""
    bookings, snapshots = window.bookings, window.snapshots
    base = window.anchor or _NOTHING
    first = 0
    for index in range(start - 1, -1, -1):
        snapshot = snapshots.get(bookings[index])
        if snapshot is not None:
            base, first = snapshot, index + 1
            break
    row.take_figures(base)
    for index in range(first, len(bookings)):
        booking = bookings[index]
        booking.apply_to(row, booker)
        if (index + 1) % SNAPSHOT_EVERY == 0:
            if snapshots is _NO_SNAPSHOTS:
                snapshots = window.snapshots = {}
            snapshots[booking] = row.copy()
        elif snapshots:
            snapshots.pop(booking, None)
