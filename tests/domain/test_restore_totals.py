"""A checkpoint's rows put back into a book (`restore_all`) are counted in their scopes' totals
exactly as adding each row in turn (`Totals.add`) counts them: the same Decimals, to the
exponent and the sign of a zero, whatever the mix of long, short and flat rows, currencies,
fees in other currencies and rows whose realized P&L in base is not known."""

from __future__ import annotations

import random
from decimal import Decimal, localcontext

from server.domain.book import PositionBook, Price
from server.domain.decimals import EXACT
from server.domain.instruments import InstrumentRegistry
from server.domain.marks import MarkSource
from server.domain.position import Position, PositionKey
from server.domain.totals import Totals

D = Decimal
AMOUNTS = (
    "0", "0.00", "-0", "-0.00", "1.10", "-2.5", "100.25", "-100.250", "7",
    "123456789012345678.123456789012345678", "-987654321098765432.987654321098765432",
)  # fmt: skip


def rows(seed: int, count: int) -> list[tuple[Position, Price]]:
    pick = random.Random(seed)
    prices = {f"I{i}": Price(D(pick.choice(AMOUNTS[4:])), MarkSource.LAST_FILL, i, f"f{i}")
              for i in range(6)}  # fmt: skip
    made = []
    for n in range(count):
        instrument = pick.choice(sorted(prices))
        strategy = pick.choice(("", "S1", "S2"))
        key = PositionKey(pick.choice(("A1", "A2")), strategy, instrument)
        quantity = D(pick.choice(("0", "0", "5", "-3", "0.001", "-250000")))
        row = Position(
            key=key, multiplier=D(pick.choice(("1", "50", "0.01"))), quantity=quantity,
            cost_basis=D(pick.choice(AMOUNTS)) if quantity else D(0),
            realized_pnl=D(pick.choice(AMOUNTS)),
            realized_pnl_base=None if n % 7 == 3 else D(pick.choice(AMOUNTS)),
            base_currency="USD", fees=D(pick.choice(AMOUNTS)),
            other_fees={"JPY": D(pick.choice(AMOUNTS[4:]))} if n % 5 == 1 else None,
            trade_count=pick.randrange(1, 9), currency=pick.choice(("USD", "USD", "EUR")),
            last_sequence=n + 1,
        )  # fmt: skip
        made.append((row, prices[instrument]))
    # A checkpoint holds the book's order: rows by key (keys distinct: the last one kept).
    return sorted({row.key: (row, price) for row, price in made}.values(), key=lambda r: r[0].key)


def one_by_one(saved: list[tuple[Position, Price]]) -> dict[tuple[str, str, str], Totals]:
    """Every (account, strategy or "", currency)'s totals, each row added in turn."""
    found: dict[tuple[str, str, str], Totals] = {}
    with localcontext(EXACT):
        for row, price in saved:
            account, strategy, _ = row.key
            scope = (account, strategy, row.currency)
            totals = found.setdefault(scope, Totals(currency=row.currency))
            totals.add(row, price.price)
            for currency, amount in (row.other_fees or {}).items():
                other = found.setdefault((account, strategy, currency), Totals(currency=currency))
                other.fees += amount
                if not other.total_positions and other == Totals(currency=currency):
                    del found[(account, strategy, currency)]  # as the book drops fees come to 0
    return found


def restored(saved: list[tuple[Position, Price]]) -> dict[tuple[str, str, str], Totals]:
    book = PositionBook(InstrumentRegistry(), D("0.01"))
    book.restore_all([(row.copy(), price) for row, price in saved])
    found = {}
    for (account, strategy), scope in book._strategy_totals.items():
        found.update({(account, strategy, c): t for c, t in scope.items()})
    for account, scope in book._account_totals.items():
        found.update({(account, "", c): t for c, t in scope.items()})
    return found


def texts(totals: dict[tuple[str, str, str], Totals]) -> dict[tuple[str, str, str], list[str]]:
    names = [name for name in Totals.__slots__ if name != "currency"]
    return {scope: [str(getattr(t, name)) for name in names] for scope, t in totals.items()}


def test_restored_totals_are_those_of_each_row_added_in_turn() -> None:
    for seed in range(20):
        saved = rows(seed, 60)
        assert texts(restored(saved)) == texts(one_by_one(saved)), seed


def test_add_all_is_add_of_each_row() -> None:
    saved = rows(99, 200)
    one, many = Totals(currency="USD"), Totals(currency="USD")
    positions = []
    with localcontext(EXACT):
        for row, price in saved:
            row.valued_at = price.price
            one.add(row, price.price)
            positions.append(row)
        many.add_all(positions[:50])
        many.add_all(positions[50:])
    assert texts({("", "", ""): many}) == texts({("", "", ""): one})
    assert many.short_exposure and many.long_exposure and many.realized_base_missing
