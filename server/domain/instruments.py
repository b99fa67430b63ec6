"""The instrument registry: what each instrument is, and the two facts P&L depends on, its
contract multiplier and its currency.

A fill may name an instrument nobody defined: a lenient registry registers it provisionally
(multiplier 1, the default currency) and says so; a strict one refuses the fill.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from sortedcontainers import SortedDict

from server.domain.decimals import ONE
from server.domain.events import InstrumentDefinition
from server.domain.refusals import Refusal, RefusalKind


class InstrumentRegistry:
    def __init__(
        self,
        instruments: list[InstrumentDefinition] | None = None,
        *,
        default_currency: str = "USD",
        strict: bool = False,
    ) -> None:
        self.default_currency = default_currency
        self.strict = strict
        self._by_id: SortedDict = SortedDict()  # instrument_id -> InstrumentDefinition
        for instrument in instruments or ():
            self._by_id[instrument.instrument_id] = instrument

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, instrument_id: str) -> InstrumentDefinition | None:
        instrument: InstrumentDefinition | None = self._by_id.get(instrument_id)
        return instrument

    def __iter__(self) -> Iterator[InstrumentDefinition]:
        return iter(self._by_id.values())

    def page(self, after: str, limit: int) -> list[InstrumentDefinition]:
        keys = self._by_id.irange(minimum=after, inclusive=(False, True)) if after else self._by_id
        page: list[InstrumentDefinition] = []
        for key in keys:
            if len(page) == limit:
                break
            page.append(self._by_id[key])
        return page

    def multiplier(self, instrument_id: str) -> Decimal:
        instrument = self._by_id.get(instrument_id)
        return instrument.multiplier if instrument else ONE

    def currency(self, instrument_id: str) -> str:
        instrument = self._by_id.get(instrument_id)
        return instrument.currency if instrument else self.default_currency

    def ensure(self, instrument_id: str) -> InstrumentDefinition:
        """The instrument, registered provisionally with defaults if unknown."""
        instrument = self.get(instrument_id)
        if instrument is None:
            instrument = InstrumentDefinition(
                instrument_id=instrument_id, currency=self.default_currency, provisional=True
            )
            self._by_id[instrument_id] = instrument
        return instrument

    def define(self, definition: InstrumentDefinition, has_positions: bool) -> Refusal | None:
        """Registers or redefines an instrument. Descriptive fields may change at any time;
        the multiplier and currency only while no position row uses the instrument (its rows
        were booked with the old ones)."""
        current = self.get(definition.instrument_id)
        if current is not None and has_positions:
            for name in ("multiplier", "currency"):
                old, new = getattr(current, name), getattr(definition, name)
                if old != new:
                    return Refusal(
                        RefusalKind.CONFLICT,
                        name,
                        f"instrument {definition.instrument_id!r} has positions booked with "
                        f"{name} {old}; it cannot become {new}",
                    )
        self._by_id[definition.instrument_id] = definition
        return None
