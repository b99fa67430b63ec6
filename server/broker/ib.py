"""Interactive Brokers as the reconciliation's `Broker`: what IB says the account holds.

Read-only: it asks TWS / IB Gateway for positions (a fresh `reqPositions` per call, which,
unlike `IB.positions()`, keeps the flat rows TWS still reports for positions closed today) and
maps them with the same `ContractMap` the relay books fills under.

It answers only from a link that sees (`IbConnection.seeing`): while TWS is blind (IB errors
1100 / 2110 until 1101 / 1102) or hung, and for an answer taken across a reconnect or a
restore, it raises BrokerUnavailable rather than hand reconciliation stale positions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

from ib_async import Contract
from ib_async import Position as IbPosition

from server.application.ports import BrokerUnavailable
from server.domain.events import BrokerPosition, InvalidEvent
from tws.amounts import MissingAmount, amount, amount_from_text, optional_amount
from tws.connection import IbConnection
from tws.contracts import ContractMap

__all__ = ["AccountFigure", "IbBroker", "PortfolioRow", "contract_multiplier"]

_ONE = Decimal(1)
# Account value tags that hold cash per currency, the preferred one last.
_CASH_TAGS = ("TotalCashValue", "CashBalance")


@dataclass(frozen=True, slots=True)
class PortfolioRow:
    """One row of IB's portfolio window (from the account-updates subscription)."""

    instrument_id: str
    quantity: Decimal
    market_price: Decimal | None
    market_value: Decimal | None
    #: IB's figure: commissions included, per contract for derivatives.
    avg_cost: Decimal | None
    unrealized_pnl: Decimal | None
    realized_pnl: Decimal | None
    multiplier: Decimal


@dataclass(frozen=True, slots=True)
class AccountFigure:
    """One numeric account value (`NetLiquidation`, `TotalCashValue`, ...) in a currency."""

    tag: str
    value: Decimal
    currency: str


class IbBroker:
    """Positions of IB accounts through a read-only `IbConnection`."""

    def __init__(
        self,
        connection: IbConnection,
        contract_map: ContractMap | None = None,
        *,
        request_timeout: float = 10.0,
    ) -> None:
        self._connection = connection
        self._contracts = contract_map or ContractMap()
        self._timeout = request_timeout
        # ib_async keeps one pending positions request at a time: a second one replaces it.
        self._positions_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._connection.name

    @property
    def connected(self) -> bool:
        """Connected and seeing (not blind, not hung): what health `broker` shows."""
        return self._connection.seeing

    async def start(self) -> None:
        await self._connection.start()

    async def stop(self) -> None:
        await self._connection.stop()

    def accounts(self) -> list[str]:
        """The login's managed accounts (known once connected, blind or not: a run then
        fails and says why)."""
        if not self._connection.connected:
            return []
        return list(self._connection.ib.managedAccounts())

    async def positions(self, account_id: str) -> list[BrokerPosition]:
        """Every position TWS reports for the account now, flat rows included."""
        self._require_connected()
        epoch = self._connection.epoch
        async with self._positions_lock:
            try:
                rows = await asyncio.wait_for(
                    self._connection.ib.reqPositionsAsync(), self._timeout
                )
            except TimeoutError:
                raise BrokerUnavailable(
                    f"{self.name}: no answer to the positions request within {self._timeout} s"
                ) from None
            except ConnectionError as error:
                raise BrokerUnavailable(f"{self.name}: connection lost ({error})") from error
        self._require_connected()
        if self._connection.epoch != epoch:
            raise BrokerUnavailable(
                f"{self.name}: the positions were asked for before the link last changed "
                "(a reconnect, blindness or a restore): not reconciling from them; retry"
            )
        latest: dict[int, IbPosition] = {}
        for row in rows:  # a live update during the request repeats a row: keep the last
            if row.account == account_id:
                latest[row.contract.conId] = row
        prices = self._market_prices(account_id)
        return [self._position(row, prices.get(con_id)) for con_id, row in latest.items()]

    def portfolio_items(self, account_id: str) -> list[PortfolioRow]:
        """IB's portfolio rows of the account, as last pushed (open positions only)."""
        self._require_connected()  # what a blind TWS pushed is not the account now
        return [
            PortfolioRow(
                instrument_id=self._contracts.instrument_id(item.contract),
                quantity=amount(item.position, "position"),
                market_price=optional_amount(item.marketPrice),
                market_value=optional_amount(item.marketValue),
                avg_cost=optional_amount(item.averageCost),
                unrealized_pnl=optional_amount(item.unrealizedPNL),
                realized_pnl=optional_amount(item.realizedPNL),
                multiplier=contract_multiplier(item.contract),
            )
            for item in self._connection.ib.portfolio(account_id)
        ]

    def cash(self, account_id: str) -> dict[str, Decimal]:
        """The account's cash per currency, as TWS last pushed it: `CashBalance` in each
        currency, else `TotalCashValue` (IB's figures; "BASE", the base-currency total, left
        out). Empty when TWS reported neither."""
        by_tag: dict[str, dict[str, Decimal]] = {}
        for figure in self.account_values(account_id):
            if figure.tag in _CASH_TAGS and figure.currency and figure.currency != "BASE":
                by_tag.setdefault(figure.tag, {})[figure.currency] = figure.value
        cash = dict(by_tag.get("TotalCashValue", {}))
        cash.update(by_tag.get("CashBalance", {}))
        return cash

    def account_values(self, account_id: str) -> list[AccountFigure]:
        """The account's numeric values, as last pushed; text values (`AccountType`) left out."""
        self._require_connected()
        figures = []
        for value in self._connection.ib.accountValues(account_id):
            number = amount_from_text(value.value)
            if number is not None and value.account == account_id:
                figures.append(AccountFigure(value.tag, number, value.currency))
        return figures

    # -----------------------------------------------------------------------------------------

    def _require_connected(self) -> None:
        """Raises BrokerUnavailable unless the link sees (its message says why not)."""
        impairment = self._connection.impairment
        if impairment:
            raise BrokerUnavailable(f"{self.name}: {impairment}")

    def _market_prices(self, account_id: str) -> dict[int, Decimal]:
        prices: dict[int, Decimal] = {}
        for item in self._connection.ib.portfolio(account_id):
            price = optional_amount(item.marketPrice)
            if price is not None:
                prices[item.contract.conId] = price
        return prices

    def _position(self, row: IbPosition, market_price: Decimal | None) -> BrokerPosition:
        instrument_id = str(row.contract.conId)
        try:
            instrument_id = self._contracts.instrument_id(row.contract)
            quantity = amount(row.position, "position")
            avg_cost = optional_amount(row.avgCost)
            if avg_cost is None:
                if quantity:
                    raise MissingAmount("avgCost: not set")
                avg_cost = Decimal(0)
            return BrokerPosition(
                instrument_id=instrument_id,
                quantity=quantity,
                avg_cost=avg_cost,
                multiplier=contract_multiplier(row.contract),
                market_price=market_price,
                currency=row.contract.currency,
            )
        except ValueError as error:  # MissingAmount, InvalidEvent, a contract without conId
            raise BrokerUnavailable(
                f"{self.name}: unusable position of {instrument_id} in {row.account}: {error}"
            ) from error


def contract_multiplier(contract: Contract) -> Decimal:
    """What IB's per-contract figures are per: the contract's multiplier; empty means 1."""
    text = contract.multiplier.strip()
    if not text:
        return _ONE
    value = amount_from_text(text)
    if value is None or value <= 0:
        raise InvalidEvent("multiplier", f"contract {contract.conId}: {text!r} is not > 0")
    return value
