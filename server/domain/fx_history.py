"""The FX rates of record, by their own time: which rate was in force when.

Realized P&L in base currency converts at the rate in force when it was realized, and a replay
of the journal must find the same rate: the history holds the journaled rates (FxFixing), per
currency pair either way round, placed by `time_ns` whatever order they were journaled in, each
with the sequence that journaled it (a booking asks only for rates journaled before it, so its
figure does not depend on when it is recomputed).

Memory: the rates of the book's restatement window (and a margin, FX_HORIZON_MARGIN_NS) and, per
pair, the one in force at its start (`evict`). A rate costs about 130 bytes (measured), about 36
when it repeats the rate before (its time and sequence are packed in arrays; its Decimal is
shared with the rate before when equal).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable
from decimal import Decimal

from server.domain.decimals import ONE
from server.domain.events import FxFixing
from server.domain.marks import FxRate, inverse_rate

Pair = tuple[str, str]

FX_HORIZON_MARGIN_NS = 15 * 60 * 10**9
"""How much older than the book's window the ledger keeps rates. A booking asks for rates
journaled before it; a fill at the window's start may have been journaled before the rate in
force at its time (clock skew, up to 5 minutes by default, and the coalescing of the journal),
so the rates of a margin before the window stay, and the one in force at its start."""

_COMPACT_AT = 1024  # evicted slots a pair gathers before its arrays are cut


def fx_fixing(rate: FxRate) -> FxFixing:
    """The journaled event of a mark stream's rate."""
    return FxFixing(base=rate.base, quote=rate.quote, rate=rate.rate, timestamp_ns=rate.time_ns)


def fixed_rate(event: FxFixing) -> FxRate:
    """The rate a journaled FX event gives."""
    return FxRate(event.base, event.quote, event.rate, event.timestamp_ns)


class _PairRates:
    """One pair's rates in time order, then sequence order. `pair` is in sorted order;
    `inverted[i]` says that rate i was quoted the other way round (1 pair[1] = rates[i]
    pair[0]). Slots before `start` are evicted (cut off in bulk, so that evicting one rate
    costs no copy of the rest)."""

    __slots__ = ("inverted", "pair", "rates", "sequences", "start", "times")

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.times = array("q")
        self.sequences = array("q")
        self.rates: list[Decimal] = []
        self.inverted = bytearray()
        self.start = 0

    def __len__(self) -> int:
        return len(self.times) - self.start

    def record(self, time_ns: int, sequence: int, rate: Decimal, inverted: bool) -> None:
        times = self.times
        if len(times) > self.start and time_ns < times[-1]:
            index = bisect_right(times, time_ns, lo=self.start)  # after those of its time
        else:
            index = len(times)
        rate = self._shared(rate, inverted, index - 1)
        times.insert(index, time_ns)
        self.sequences.insert(index, sequence)
        self.rates.insert(index, rate)
        self.inverted.insert(index, inverted)

    def _shared(self, rate: Decimal, inverted: bool, before: int) -> Decimal:
        """The rate before's Decimal when it is the same number written the same way: most
        ticks repeat the rate, and a Decimal is most of what a rate costs."""
        if before >= self.start and self.inverted[before] == inverted:
            held = self.rates[before]
            if held == rate and held.as_tuple() == rate.as_tuple():
                return held
        return rate

    def at(self, time_ns: int, sequence: int | None) -> int | None:
        """The slot in force at `time_ns` among rates journaled before `sequence`."""
        index = bisect_right(self.times, time_ns, lo=self.start) - 1
        if sequence is not None:
            sequences = self.sequences
            while index >= self.start and sequences[index] >= sequence:
                index -= 1
        return index if index >= self.start else None

    def evict(self, horizon_ns: int) -> None:
        """Forgets the rates stamped before `horizon_ns` but the latest of them."""
        keep_from = bisect_right(self.times, horizon_ns - 1, lo=self.start) - 1
        if keep_from <= self.start:
            return
        self.start = keep_from
        if self.start >= _COMPACT_AT and self.start * 2 >= len(self.times):
            del self.times[: self.start]
            del self.sequences[: self.start]
            del self.rates[: self.start]
            del self.inverted[: self.start]
            self.start = 0

    def entries(self) -> Iterable[tuple[int, FxRate]]:
        low, high = self.pair
        for index in range(self.start, len(self.times)):
            base, quote = (high, low) if self.inverted[index] else (low, high)
            yield self.sequences[index], FxRate(base, quote, self.rates[index], self.times[index])

    def second_time(self) -> int | None:
        """The time of the second rate kept: until the horizon passes it, nothing can go."""
        return self.times[self.start + 1] if len(self) > 1 else None


class FxHistory:
    """Per currency pair, the journaled rates by their own time. Pure: fed by the ledger."""

    def __init__(self) -> None:
        self._pairs: dict[Pair, _PairRates] = {}
        # Nothing is evictable while the horizon is at or before this (see evict).
        self._evictable_after: int | None = None

    def __len__(self) -> int:
        return sum(len(rates) for rates in self._pairs.values())

    def record(self, rate: FxRate, sequence: int = 0) -> None:
        """Places a rate journaled at `sequence` at its time: a late one takes its place; one
        of a time already held (the other way round: the same way round is another rate for
        the same event id, which the journal refuses) goes after it, so it answers from then
        on and a booking journaled between the two still finds the first. Rates come in
        sequence order (the journal's)."""
        inverted = rate.base > rate.quote
        pair = (rate.quote, rate.base) if inverted else (rate.base, rate.quote)
        rates = self._pairs.get(pair)
        if rates is None:
            rates = self._pairs[pair] = _PairRates(pair)
        rates.record(rate.time_ns, sequence, rate.rate, inverted)
        second = rates.second_time()
        if second is not None and (self._evictable_after is None or second < self._evictable_after):
            self._evictable_after = second

    def rate_at(
        self, from_currency: str, to_currency: str, time_ns: int, sequence: int | None = None
    ) -> Decimal | None:
        """How many `to_currency` one `from_currency` was worth at `time_ns`: the latest rate
        stamped at or before it (among those journaled before `sequence`, when given), either
        way round (an inverse rounded as FxTable rounds it); None when no such rate is held."""
        if from_currency == to_currency:
            return ONE
        inverted = from_currency > to_currency
        pair = (to_currency, from_currency) if inverted else (from_currency, to_currency)
        rates = self._pairs.get(pair)
        if rates is None:
            return None
        index = rates.at(time_ns, sequence)
        if index is None:
            return None
        rate = rates.rates[index]
        return rate if rates.inverted[index] == inverted else inverse_rate(rate)

    def evict(self, horizon_ns: int) -> None:
        """Forgets the rates stamped before `horizon_ns`, but per pair the latest of them (the
        rate in force at the horizon). O(1) while nothing can go, else O(pairs)."""
        if self._evictable_after is None or horizon_ns <= self._evictable_after:
            return
        seconds: list[int] = []
        for rates in self._pairs.values():
            rates.evict(horizon_ns)
            second = rates.second_time()
            if second is not None:
                seconds.append(second)
        self._evictable_after = min(seconds, default=None)

    def rates(self) -> list[tuple[int, FxRate]]:
        """Every rate held with the sequence that journaled it, by pair then time: what a
        checkpoint saves."""
        return [entry for pair in sorted(self._pairs) for entry in self._pairs[pair].entries()]

    def restore(self, rates: Iterable[tuple[int, FxRate]]) -> None:
        for sequence, rate in rates:
            self.record(rate, sequence)
