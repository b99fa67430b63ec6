"""A checkpoint's book frame, built column by column, is the frame a tuple per row gave (the
layout of BOOK_VERSION: columns, order, types, texts), and reads back as the rows."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd

from server.domain import decimals
from server.domain.book import NO_PRICE, Price
from server.domain.decimals import CanonicalTexts, canonical
from server.domain.marks import MarkSource
from server.domain.performance import RoundTrips
from server.domain.pnl_history import RowClose
from server.domain.position import Position, PositionKey
from server.storage.frames import (
    CHECKPOINT_COLUMNS,
    checkpoint_frame,
    rows_from_checkpoint,
)

D = Decimal


def by_row(
    rows: list[tuple[Position, Price]],
    anchors: list[Position],
    trips: dict[PositionKey, tuple[PositionKey, int, Decimal, Decimal]],
    closed: dict[PositionKey, RoundTrips],
    closes: dict[PositionKey, RowClose],
) -> pd.DataFrame:
    """The frame as it was built before: one tuple per row."""

    def text(amount: Decimal | None) -> str:
        return "" if amount is None else canonical(amount)

    def record(row: Position, price: Price | None, anchor: bool) -> tuple[object, ...]:
        trip = None if anchor else trips.get(row.key)
        done = None if anchor else closed.get(row.key)
        last = None if anchor else closes.get(row.key)
        amounts = ("gross_win", "gross_loss", "largest_win", "largest_loss")
        fees = ";".join(f"{c}={canonical(a)}" for c, a in row.other_fee_items())
        return (
            *row.key, canonical(row.multiplier), canonical(row.quantity),
            canonical(row.cost_basis), canonical(row.realized_pnl), canonical(row.fees),
            row.trade_count, row.opened_at_ns, row.updated_at_ns, row.last_sequence,
            row.currency, canonical(price.price) if price else "0",
            price.time_ns if price else 0, price.fill_id if price else "", fees,
            row.booked_through_ns, row.booked_through_id, anchor, row.base_currency,
            "" if row.realized_pnl_base is None else canonical(row.realized_pnl_base),
            trip[1] if trip else 0, format(trip[2], "f") if trip else "",
            format(trip[3], "f") if trip else "",
            done.count if done else 0, done.wins if done else 0, done.losses if done else 0,
            *(format(getattr(done, name), "f") if done else "" for name in amounts),
            *((text(last.quantity), text(last.mark), text(last.realized_pnl),
               text(last.realized_pnl_base), text(last.fees),
               ";".join(f"{c}={canonical(a)}" for c, a in last.other_fees),
               text(last.unrealized_pnl)) if last else [""] * 7),
        )  # fmt: skip

    frame = pd.DataFrame(
        [record(row, price, False) for row, price in rows]
        + [record(anchor, None, True) for anchor in anchors],
        columns=CHECKPOINT_COLUMNS,
    )
    for name in ("trade_count", "opened_at_ns", "updated_at_ns", "last_sequence",
                 "fill_price_time_ns", "booked_through_ns", "open_trip_sign", "trips_count",
                 "trips_wins", "trips_losses"):  # fmt: skip
        frame[name] = frame[name].astype("int64")
    frame["anchor"] = frame["anchor"].astype(bool)
    return frame


def row(n: int, **figures: object) -> Position:
    return Position(
        key=PositionKey("A", f"S{n}" if n % 3 else "", f"I{n}"), multiplier=D(50),
        quantity=D(f"-{n}.50"), cost_basis=D("-1E+3"), realized_pnl=D("-0.00"),
        realized_pnl_base=None if n % 2 else D("12.340"), base_currency="USD",
        fees=D("0.35"), trade_count=n, opened_at_ns=10 * n, updated_at_ns=20 * n,
        last_sequence=n, currency="EUR", booked_through_ns=n, booked_through_id=f"f{n}",
        **figures,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_frame_is_the_one_a_tuple_per_row_made() -> None:
    price = Price(D("101.250"), MarkSource.LAST_FILL, 5, "fill-5")
    rows = [(row(n, other_fees={"JPY": D(n), "GBP": D(0)} if n == 2 else None), price)
            for n in range(1, 6)]  # fmt: skip
    anchors = [row(7), row(8, other_fees={"CHF": D("1.5")})]
    # Round trips in progress: exponents kept ("-0.00", "1.50"); one for a key with no row
    # (the book leaves it to the state half).
    trips = {
        key: (key, sign, realized, fees)
        for key, sign, realized, fees in (
            (rows[0][0].key, 1, D("-0.00"), D("0.35")),
            (rows[3][0].key, -1, D("12.5"), D("1.50")),
            (PositionKey("A", "S9", "I9"), 1, D(0), D(0)),
        )
    }
    # Closed trips, exponents kept; one of a key with no row (an evicted row's).
    closed = {
        rows[3][0].key: RoundTrips(3, 2, 1, D("10.50"), D("-0.5"), D("8"), D("-0.5")),
        rows[4][0].key: RoundTrips(1, 0, 0),
        PositionKey("A", "S9", "I9"): RoundTrips(1, 1, 0, D(1), D(0), D(1)),
    }
    # Last closes: exponents dropped (canonical, as the state's JSON record had them), a mark
    # and a base figure missing, fees in other currencies; one of a key with no row.
    closes = {
        rows[0][0].key: RowClose(D("-1.50"), D("101.250"), D("12.5"), D("12.5"), D("0.35"),
                                 (("JPY", D("30")), ("GBP", D("0.10"))), D("-7.25")),
        rows[2][0].key: RowClose(D(0), None, D("-3"), None),
        PositionKey("A", "S9", "I9"): RowClose(D(1)),
    }  # fmt: skip
    for held, kept in ((rows, anchors), (rows, []), ([], anchors), ([], [])):
        for open_trips, closed_trips, last in ((trips, closed, closes), ({}, {}, {})):
            frame = checkpoint_frame(held, kept, open_trips, closed_trips, last)
            pd.testing.assert_frame_equal(frame, by_row(held, kept, open_trips, closed_trips, last))
    back, back_anchors, back_trips, back_closed, back_closes = rows_from_checkpoint(
        checkpoint_frame(rows, anchors, trips, closed, closes)
    )
    rows[1][0].other_fees = {"JPY": D(2)}  # a fee come to zero is not kept
    assert [r for r, _ in back] == [r for r, _ in rows] and back_anchors == anchors
    # Each trip comes back with its exact texts, keyed by its row's key.
    assert [(k, s, str(r), str(f)) for k, s, r, f in back_trips] == [
        (rows[0][0].key, 1, "-0.00", "0.35"), (rows[3][0].key, -1, "12.5", "1.50")
    ]  # fmt: skip
    assert back_trips[0][0] is back[0][0].key
    assert repr(back_closed) == repr([(key, closed[key]) for key in (rows[3][0].key,
                                                                     rows[4][0].key)])  # fmt: skip
    # Each last close comes back as its canonical texts read, keyed by its row's key.
    assert repr(back_closes) == repr([
        (rows[0][0].key, RowClose(D("-1.5"), D("101.25"), D("12.5"), D("12.5"), D("0.35"),
                                  (("JPY", D("30")), ("GBP", D("0.1"))), D("-7.25"))),
        (rows[2][0].key, RowClose(D(0), None, D("-3"), None)),
    ])  # fmt: skip
    assert back_closes[0][0] is back[0][0].key


def test_trips_and_closes_are_read_from_their_own_lines_whatever_the_anchors_between() -> None:
    """A frame whose anchors are not all last (none written so, but nothing relies on it)."""
    price = Price(D("1"), MarkSource.LAST_FILL, 5, "fill-5")
    rows = [(row(n), price) for n in range(1, 4)]
    closed = {held.key: RoundTrips(n, n, 0, D(n)) for n, (held, _) in enumerate(rows, 1)}
    closes = {held.key: RowClose(D(n), D(n + 1)) for n, (held, _) in enumerate(rows, 1)}
    frame = checkpoint_frame(rows, [row(7), row(8)], {}, closed, closes)
    mixed = frame.iloc[[3, 0, 4, 1, 2]].reset_index(drop=True)  # anchor, row, anchor, rows
    _, anchors, _, back_closed, back_closes = rows_from_checkpoint(mixed)
    assert len(anchors) == 2 and back_closed == list(closed.items())
    assert back_closes == list(closes.items())


def test_a_row_whose_instrument_has_no_fill_price_reads_back_without_one() -> None:
    """Not as a last fill price of 0 (which values a position at nothing): an instrument
    whose only fill was corrected to another has rows and no price."""
    priced = Price(D("101.25"), MarkSource.LAST_FILL, 5, "fill-5")
    back, _, _, _, _ = rows_from_checkpoint(
        checkpoint_frame([(row(1), NO_PRICE), (row(2), priced)])
    )
    assert [price for _, price in back] == [NO_PRICE, priced]


def test_amount_texts_are_canonical_whatever_the_value_seen_first(monkeypatch) -> None:
    """One text per distinct value: equal values of other exponents (and -0) get the text
    `canonical` gives each, whichever came first; past the cap, texts are made, not kept."""
    values = [D("1.50"), D("1.5"), D("-0"), D("0.000"), D("1E+2"), D("100"), D("-2.250")]
    for order in (values, values[::-1]):
        texts = CanonicalTexts()
        assert [texts[value] for value in order] == [canonical(value) for value in order]
        assert len(texts) == 4
    monkeypatch.setattr(decimals, "MAX_CANONICAL_TEXTS", 2)
    capped = CanonicalTexts()
    assert [capped[D(n)] for n in range(5)] == ["0", "1", "2", "3", "4"]
    assert len(capped) == 2
