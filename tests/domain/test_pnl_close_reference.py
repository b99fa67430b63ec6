"""The close's per-row day against a copy of the code it replaced (the plain, slow one: a
RowClose and a DailyPnl built by keyword per row, the rates looked up per row and figure):
every figure equal with the same exponent (compared by repr), over random books with FX
rates, fees in other currencies, flat and short rows, missing rates and rows whose realized
P&L in base currency is unknown, through several closes in a row."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from decimal import Decimal, localcontext

import pytest

from server.domain import steps
from server.domain.decimals import EXACT, ZERO
from server.domain.events import DayClose
from server.domain.ledger import Ledger
from server.domain.pnl_history import (  # helpers the close's rewrite left as they were
    NEW_DAY,
    CurrencyDay,
    DailyPnl,
    PnlHistory,
    RowClose,
    ScopeDay,
    _convert,
    _minus_fees,
    _plus,
)
from server.domain.position import Position, PositionKey
from server.domain.steps import at_once
from tests.domain.builders import fill
from tests.stepped import counted


def _scope_add(scope: ScopeDay, day: DailyPnl, rate_of: Callable[[str], Decimal | None]) -> None:
    figures = scope.by_currency.setdefault(day.currency, CurrencyDay())
    figures.realized_pnl += day.realized_pnl
    figures.unrealized_pnl += day.unrealized_pnl
    figures.unrealized_change += day.unrealized_change
    figures.fees += day.fees
    figures.exposure += day.exposure
    figures.gross_exposure += abs(day.exposure)
    for currency, amount in day.other_fees:
        scope.by_currency.setdefault(currency, CurrencyDay()).fees += amount
        if rate_of(currency) is None:
            scope.missing_fx_rates.add(currency)
    if day.net_pnl_base is None:
        scope.missing_fx_rates.add(day.currency)
    scope.realized_pnl_base = _plus(scope.realized_pnl_base, day.realized_pnl_base)
    scope.unrealized_pnl_base = _plus(scope.unrealized_pnl_base, day.unrealized_pnl_base)
    scope.fees_base = _plus(scope.fees_base, day.fees_base)
    scope.net_pnl_base = _plus(scope.net_pnl_base, day.net_pnl_base)
    scope.exposure_base = _plus(scope.exposure_base, day.exposure_base)
    gross = None if day.exposure_base is None else abs(day.exposure_base)
    scope.gross_exposure_base = _plus(scope.gross_exposure_base, gross)


class ReferenceHistory:
    """The close as it was (server/domain/pnl_history.py before the per-row day was made
    cheaper), kept verbatim in substance."""

    def __init__(self) -> None:
        self.last: dict[PositionKey, RowClose] = {}
        self.days: dict[tuple[str, str], list[ScopeDay]] = {}

    def close(
        self,
        *,
        account_id: str,
        trading_date: str,
        close_ns: int,
        sequence: int,
        late: bool,
        rows: Iterable[Position],
        mark_of: Callable[[str], Decimal | None],
        base_currency: str,
        rate_of: Callable[[str], Decimal | None],
        precision: Decimal,
    ) -> list[DailyPnl]:
        scopes: dict[str, ScopeDay] = {}
        days: list[DailyPnl] = []
        with localcontext(EXACT):
            for row in rows:
                day = self._row_day(
                    row, trading_date, close_ns, sequence, mark_of, base_currency, rate_of,
                    precision,
                )  # fmt: skip
                if day is None:
                    continue
                days.append(day)
                scope = scopes.get(row.key.strategy_id)
                if scope is None:
                    scope = scopes[row.key.strategy_id] = ScopeDay(
                        trading_date=trading_date, close_ns=close_ns, sequence=sequence,
                        late=late, base_currency=base_currency,
                    )  # fmt: skip
                _scope_add(scope, day, rate_of)
        for strategy_id, scope in scopes.items():
            self.days.setdefault((account_id, strategy_id), []).append(scope)
        return days

    def _row_day(
        self,
        row: Position,
        trading_date: str,
        close_ns: int,
        sequence: int,
        mark_of: Callable[[str], Decimal | None],
        base_currency: str,
        rate_of: Callable[[str], Decimal | None],
        precision: Decimal,
    ) -> DailyPnl | None:
        before = self.last.get(row.key, NEW_DAY)
        mark = mark_of(row.key.instrument_id) if row.quantity else None
        unrealized = row.unrealized_pnl(mark) if mark is not None else ZERO
        other = row.other_fee_items()
        now = RowClose(
            quantity=row.quantity, mark=mark, realized_pnl=row.realized_pnl,
            realized_pnl_base=row.realized_pnl_base, fees=row.fees, other_fees=other,
            unrealized_pnl=unrealized,
        )  # fmt: skip
        if not row.quantity and now == before:
            return None
        self.last[row.key] = now
        realized = row.realized_pnl - before.realized_pnl
        change = unrealized - before.unrealized_pnl
        fees = row.fees - before.fees
        other_fees = _minus_fees(other, before.other_fees)
        rate = rate_of(row.currency)
        exposure = row.market_value(mark) if mark is not None else ZERO
        realized_base: Decimal | None
        if row.base_currency == base_currency and before.realized_pnl_base is not None:
            realized_base = (
                None
                if row.realized_pnl_base is None
                else row.realized_pnl_base - before.realized_pnl_base
            )
        else:
            realized_base = _convert(realized, rate, precision)
        fees_base = _convert(fees, rate, precision)
        for currency, amount in other_fees:
            fees_base = _plus(fees_base, _convert(amount, rate_of(currency), precision))
        change_base = _convert(change, rate, precision)
        net_base = (
            None
            if realized_base is None or change_base is None or fees_base is None
            else realized_base + change_base - fees_base
        )
        return DailyPnl(
            trading_date=trading_date, close_ns=close_ns, sequence=sequence, key=row.key,
            currency=row.currency, start_quantity=before.quantity, start_mark=before.mark,
            end_quantity=row.quantity, end_mark=mark, realized_pnl=realized,
            unrealized_pnl=unrealized, unrealized_change=change, fees=fees,
            other_fees=other_fees, net_pnl=realized + change - fees, exposure=exposure,
            base_currency=base_currency, realized_pnl_base=realized_base,
            unrealized_pnl_base=_convert(unrealized, rate, precision), fees_base=fees_base,
            net_pnl_base=net_base, exposure_base=_convert(exposure, rate, precision),
        )  # fmt: skip


CURRENCIES = ("USD", "EUR", "JPY", "GBP")
AMOUNTS = ("0", "0.00", "1", "-1", "2.5", "-3.75", "100.25", "0.0001", "-12345.678", "7E+2")


def _amount(rng: random.Random) -> Decimal:
    return Decimal(rng.choice(AMOUNTS)) * rng.choice((1, 3, -7))


def _row(rng: random.Random, key: PositionKey) -> Position:
    flat = rng.random() < 0.3
    other = None
    if rng.random() < 0.3:
        other = {rng.choice(CURRENCIES): _amount(rng) for _ in range(rng.randint(1, 3))}
    return Position(
        key=key,
        multiplier=Decimal(rng.choice(("1", "50", "0.1"))),
        quantity=ZERO if flat else Decimal(rng.choice(("100", "-40", "0.5", "-3"))),
        cost_basis=_amount(rng),
        realized_pnl=_amount(rng),
        realized_pnl_base=None if rng.random() < 0.1 else _amount(rng),
        base_currency=rng.choice(("USD", "USD", "USD", "EUR")),
        fees=_amount(rng).copy_abs(),
        other_fees=other,
        currency=rng.choice(CURRENCIES),
    )


def _moved(rng: random.Random, row: Position) -> Position:
    """The row at the next close: unchanged, or some of its figures moved."""
    if rng.random() < 0.4:
        return row
    copy = row.copy()
    if rng.random() < 0.5:
        copy.quantity = ZERO if rng.random() < 0.4 else _amount(rng)
    if rng.random() < 0.5:
        copy.realized_pnl += _amount(rng)
    if rng.random() < 0.3:
        copy.fees += _amount(rng).copy_abs()
    if rng.random() < 0.3:
        copy.other_fees = {**(copy.other_fees or {}), rng.choice(CURRENCIES): _amount(rng)}
    if rng.random() < 0.2:
        copy.realized_pnl_base = None if rng.random() < 0.3 else _amount(rng)
    return copy


@pytest.mark.parametrize("step_rows", [1, 7, steps.ROWS_PER_STEP])
@pytest.mark.parametrize("seed", range(40))
def test_the_close_records_what_the_old_code_recorded_figure_for_figure(
    seed: int, step_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the rows of a step (a close runs in steps of steps.ROWS_PER_STEP rows)."""
    monkeypatch.setattr(steps, "ROWS_PER_STEP", step_rows)
    rng = random.Random(seed)
    keys = [
        PositionKey("A1", rng.choice(("", "S1", "S2", "S3")), f"I{n}")
        for n in range(rng.randint(1, 40))
    ]
    rows = {key: _row(rng, key) for key in keys}
    new, old = PnlHistory(), ReferenceHistory()
    for day in range(1, 5):
        base = rng.choice(("USD", "USD", "EUR"))
        rates = {c: None if rng.random() < 0.15 else Decimal(rng.choice(("1", "1.00", "0.9",
                 "1.2345", "150.5"))) for c in CURRENCIES}  # fmt: skip
        rates[base] = Decimal(1)
        marks = {key.instrument_id: None if rng.random() < 0.1 else _amount(rng).copy_abs()
                 for key in keys}  # fmt: skip
        arguments = dict(
            account_id="A1", trading_date=f"2026-01-0{day}", close_ns=day * 10**9,
            sequence=day * 10, late=day == 3, mark_of=marks.get, base_currency=base,
            rate_of=rates.get, precision=Decimal("0.01"),
        )  # fmt: skip
        expected = old.close(rows=list(rows.values()), **arguments)  # type: ignore[arg-type]
        got = at_once(new.closing(rows=list(rows.values()), **arguments))  # type: ignore[arg-type]
        assert repr(got) == repr(expected)
        assert repr(
            new.days("A1") + [d for s in ("S1", "S2", "S3") for d in new.days("A1", s)]
        ) == repr([d for s in ("", "S1", "S2", "S3") for d in old.days.get(("A1", s), [])])
        assert repr(sorted(new.last_closes())) == repr(sorted(old.last.items()))
        rows = {key: _moved(rng, row) for key, row in rows.items()}


def test_a_close_gathers_its_accounts_rows_in_steps_too(monkeypatch):
    """Before its rows' days, a close gathers the account's rows (a million at once held the
    event loop about 0.4 s): one step a row here, and the same days as at once."""
    ledger = Ledger()
    for n in range(3):
        event = fill("BUY", 10, 100 + n, instrument=f"I{n}", strategy=f"S{n}")
        ledger.apply(event, ledger.admit(event).sequence)
    close = DayClose(
        account_id="A1", trading_date="2026-01-02", timestamp_ns=ledger.clock_ns + 1,
        marks=ledger.closing_marks("A1"), late=False,
    )  # fmt: skip
    monkeypatch.setattr(steps, "ROWS_PER_STEP", 10**6)  # the days at once: the gathering only
    monkeypatch.setattr(steps, "COPIES_PER_STEP", 1)
    taken, applied = counted(ledger.apply_in_steps(close, ledger.admit(close).sequence))
    assert taken >= len(ledger.book)  # 6 rows: 3 account-level, 3 strategy rows
    assert [day.key.instrument_id for day in applied.days] == ["I0", "I0", "I1", "I1", "I2", "I2"]


def test_a_closes_marks_are_taken_in_steps_and_are_the_books_prices(monkeypatch):
    """The day closer takes a close's marks in steps (the account's rows gathered a step at
    a time): the same marks as at once, the instruments with a position only."""
    ledger = Ledger()
    for event in [
        fill("BUY", 10, 100, instrument="I0"), fill("SELL", 10, 100, instrument="I0"),  # flat
        fill("BUY", 10, 101, instrument="I1"), fill("BUY", 10, 102, instrument="I2"),
    ]:  # fmt: skip
        ledger.apply(event, ledger.admit(event).sequence)
    monkeypatch.setattr(steps, "COPIES_PER_STEP", 1)
    taken, marks = counted(ledger.pricing_close("A1"))
    assert taken >= len(ledger.book)
    assert marks == ledger.closing_marks("A1")
    assert [(m.instrument_id, m.price) for m in marks] == [("I1", 101), ("I2", 102)]
