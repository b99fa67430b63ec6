"""Market prices: the latest mark per instrument and the latest rate per currency pair.

Marks are market data, not events of record: they are not journaled (a burst of ticks must
not slow the fills' write path), only kept latest-first and saved now and then. A mark older
than the one held is ignored, so ticks may arrive out of order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal, localcontext

from server.domain.decimals import EXACT, MAX_FRACTION_DIGITS, ONE, divide_half_even
from server.domain.events import (
    InvalidEvent,
    require_amount,
    require_fx_rate,
    require_id,
    require_time,
)

INVERSE_RATE_QUANTUM = Decimal(1).scaleb(-MAX_FRACTION_DIGITS)
"""An inverted FX rate (USD->EUR from a EUR/USD quote) is rounded half-even to this."""


class MarkSource(enum.Enum):
    NONE = 0  # no price at all yet
    MARKET = 1  # a mark from the mark stream
    LAST_FILL = 2  # no market mark: the last fill's price


@dataclass(frozen=True, slots=True)
class Mark:
    """One instrument's market price: `price` is the mark given, else the bid/ask mid, else
    the last trade."""

    instrument_id: str
    price: Decimal
    time_ns: int
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal | None = None

    @classmethod
    def from_quote(
        cls,
        instrument_id: str,
        time_ns: int,
        *,
        mark: Decimal | None = None,
        bid: Decimal | None = None,
        ask: Decimal | None = None,
        last: Decimal | None = None,
    ) -> Mark:
        require_id("instrument_id", instrument_id)
        require_time(time_ns)
        for name, value in (("mark", mark), ("bid", bid), ("ask", ask), ("last", last)):
            if value is not None:
                require_amount(name, value)
        if bid is not None and ask is not None and bid > ask:
            raise InvalidEvent("bid", f"is above the ask ({bid} > {ask})")
        if mark is not None:
            price = mark
        elif bid is not None and ask is not None:
            with localcontext(EXACT):
                price = (bid + ask) / 2  # exact: halving a decimal adds one digit at most
        elif last is not None:
            price = last
        else:
            raise InvalidEvent("mark", "a mark, both bid and ask, or last is required")
        return cls(instrument_id, price, time_ns, bid, ask, last)


@dataclass(frozen=True, slots=True)
class FxRate:
    """1 unit of `base` is worth `rate` units of `quote` (EUR/USD 1.08: base EUR, quote USD)."""

    base: str
    quote: str
    rate: Decimal
    time_ns: int

    def __post_init__(self) -> None:
        require_fx_rate(self.base, self.quote, self.rate, self.time_ns)


def inverse_rate(rate: Decimal) -> Decimal:
    """What 1 `quote` is worth in `base`, rounded as every inverted rate is."""
    return divide_half_even(ONE, rate, INVERSE_RATE_QUANTUM)


class FxTable:
    """The latest rate per pair, either way round."""

    def __init__(self) -> None:
        self._rates: dict[tuple[str, str], FxRate] = {}
        self.version = 0  # counts the rates kept: what read from the table may have changed

    def set(self, rate: FxRate, latest_plausible_ns: int | None = None) -> bool:
        """Keeps a rate unless a newer one of the same pair is held; True if kept. A held
        rate stamped after `latest_plausible_ns` does not count as newer (see set_mark)."""
        key = (rate.base, rate.quote)
        held = self._rates.get(key) or self._rates.get((rate.quote, rate.base))
        if (
            held is not None
            and held.time_ns > rate.time_ns
            and (latest_plausible_ns is None or held.time_ns <= latest_plausible_ns)
        ):
            return False
        self._rates.pop((rate.quote, rate.base), None)
        self._rates[key] = rate
        self.version += 1
        return True

    def rates(self) -> list[FxRate]:
        return list(self._rates.values())

    def rate(self, from_currency: str, to_currency: str) -> Decimal | None:
        """How many `to_currency` one `from_currency` is worth; None when no quote says."""
        if from_currency == to_currency:
            return ONE
        direct = self._rates.get((from_currency, to_currency))
        if direct is not None:
            return direct.rate
        inverse = self._rates.get((to_currency, from_currency))
        if inverse is not None:
            return inverse_rate(inverse.rate)
        return None
