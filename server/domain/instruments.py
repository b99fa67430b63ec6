"""What the engine needs to know about an instrument: for now, its contract multiplier."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from server.domain.decimals import ONE


@dataclass(frozen=True, slots=True)
class Instrument:
    instrument_id: str
    multiplier: Decimal = ONE


class InstrumentRegistry:
    """Known instruments; an instrument nobody registered has multiplier 1."""

    def __init__(self, instruments: list[Instrument] | None = None) -> None:
        self._by_id: dict[str, Instrument] = {}
        for instrument in instruments or ():
            self.register(instrument)

    def register(self, instrument: Instrument) -> None:
        if not instrument.multiplier > 0:
            raise ValueError(f"{instrument.instrument_id}: multiplier must be > 0")
        self._by_id[instrument.instrument_id] = instrument

    def multiplier(self, instrument_id: str) -> Decimal:
        instrument = self._by_id.get(instrument_id)
        return instrument.multiplier if instrument else ONE
