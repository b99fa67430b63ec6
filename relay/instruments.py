"""Defining the derivatives the relay books under their conId, before their first fill.

The service books a fill of an instrument nobody defined with multiplier 1 and its default
currency, and once rows exist it refuses to change either. A future or option missing from the
contract map would so realize a fiftieth of its P&L. Every execution carries its contract, with
multiplier and currency: the relay defines such an instrument from it (asset class, multiplier,
currency, expiry, strike and right), asking TWS for the contract's details only when the
execution has no multiplier, once per instrument per process, and holds the instrument's fills
until it is defined. A definition the service already holds (not provisional) is left as it is:
whoever wrote it knew more than an execution says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

import grpc
from ib_async import Contract

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tws.amounts import amount_from_text, optional_amount

__all__ = [
    "InstrumentCatalog",
    "InstrumentUndefinable",
    "ServiceInstruments",
    "instrument_definition",
    "needs_definition",
]

_FUTURES = frozenset({"FUT", "CONTFUT"})
_OPTIONS = frozenset({"OPT", "FOP", "WAR", "IOPT"})
#: Contract types whose price is per unit of a multiplier that must not be guessed.
_NEED_MULTIPLIER = _FUTURES | _OPTIONS
_ASSET_CLASSES = {"CASH": pb.ASSET_CLASS_FX, "CRYPTO": pb.ASSET_CLASS_CRYPTO}
_RIGHTS = {"C": pb.OPTION_RIGHT_CALL, "CALL": pb.OPTION_RIGHT_CALL,
           "P": pb.OPTION_RIGHT_PUT, "PUT": pb.OPTION_RIGHT_PUT}  # fmt: skip
#: Failures worth trying again (the service restarting, overloaded, or slow).
TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
     grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)  # fmt: skip


class InstrumentUndefinable(ValueError):
    """The relay cannot tell what the instrument is (a future without a multiplier)."""


def needs_definition(contract: Contract) -> bool:
    """Stocks are booked per share (multiplier 1): everything else is defined first."""
    return bool(contract.secType) and contract.secType != "STK"


def multiplier_of(contract: Contract) -> Decimal | None:
    value = amount_from_text(str(contract.multiplier or "").strip())
    return value if value is not None and value > 0 else None


def instrument_definition(
    contract: Contract, instrument_id: str, multiplier: Decimal | None
) -> pb.Instrument:
    """The service's instrument for an execution's contract (raises InstrumentUndefinable)."""
    sec_type = contract.secType
    if multiplier is None and sec_type in _NEED_MULTIPLIER:
        raise InstrumentUndefinable(
            f"{sec_type} {contract.localSymbol or contract.symbol} (conId {contract.conId}) "
            "has no multiplier, in its execution or its contract details"
        )
    if not contract.currency:
        raise InstrumentUndefinable(f"conId {contract.conId} has no currency")
    instrument = pb.Instrument(
        instrument_id=instrument_id,
        symbol=(contract.localSymbol or contract.symbol).strip(),
        asset_class=_ASSET_CLASSES.get(sec_type, pb.ASSET_CLASS_UNSPECIFIED),
        currency=contract.currency,
        multiplier=format(multiplier, "f") if multiplier is not None else "",
    )
    expiry = _expiry(contract.lastTradeDateOrContractMonth)
    if sec_type in _FUTURES and expiry:
        instrument.asset_class = pb.ASSET_CLASS_FUTURE
        instrument.expiry = expiry
        instrument.underlying = contract.symbol
    strike = optional_amount(contract.strike)
    right = _RIGHTS.get(contract.right.upper())
    if sec_type in _OPTIONS and expiry and strike and right and contract.symbol:
        instrument.asset_class = pb.ASSET_CLASS_OPTION
        instrument.expiry = expiry
        instrument.underlying = contract.symbol
        instrument.strike = format(strike, "f")
        instrument.right = right
    return instrument


def _expiry(text: str) -> str:
    """IB's `20261218` (or `20261218 15:00 US/Central`) -> `2026-12-18`; `202612` -> `2026-12`."""
    digits = text.strip()[:8]
    if len(digits) == 8 and digits.isdigit():
        return f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    if len(digits) >= 6 and digits[:6].isdigit():
        return f"{digits[:4]}-{digits[4:6]}"
    return ""


@dataclass(frozen=True, slots=True)
class Defined:
    """What became of a definition: `defined` False when the service kept its own."""

    instrument: pb.Instrument
    defined: bool


class InstrumentCatalog:
    """Looks up and defines instruments in the service (a port: tests may pass their own)."""

    async def get(self, instrument_id: str) -> pb.Instrument | None:
        raise NotImplementedError

    async def define(self, instrument: pb.Instrument) -> pb.Instrument:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    async def ensure(
        self,
        contract: Contract,
        instrument_id: str,
        details: Callable[[Contract], Awaitable[Decimal | None]],
    ) -> Defined:
        """Defines the instrument unless the service holds a real definition (raises
        InstrumentUndefinable, or grpc.aio.AioRpcError from the service)."""
        held = await self.get(instrument_id)
        if held is not None and not held.provisional:
            return Defined(held, defined=False)
        multiplier = multiplier_of(contract)
        if multiplier is None:
            multiplier = await details(contract)
        instrument = instrument_definition(contract, instrument_id, multiplier)
        return Defined(await self.define(instrument), defined=True)


class ServiceInstruments(InstrumentCatalog):
    """The service's DefineInstrument and GetInstrument, on a channel of their own (with the
    relay's credentials: None is plaintext)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._channel = (
            grpc.aio.secure_channel(target, credentials)
            if credentials is not None
            else grpc.aio.insecure_channel(target)
        )
        self._stub = pb_grpc.PortfolioManagerStub(self._channel)
        self._timeout = timeout

    async def get(self, instrument_id: str) -> pb.Instrument | None:
        request = pb.GetInstrumentRequest(instrument_id=instrument_id)
        try:
            found: pb.Instrument = await self._stub.GetInstrument(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return found

    async def define(self, instrument: pb.Instrument) -> pb.Instrument:
        request = pb.DefineInstrumentRequest(instrument=instrument)
        defined: pb.Instrument = await self._stub.DefineInstrument(request, timeout=self._timeout)
        return defined

    async def close(self) -> None:
        await self._channel.close()
