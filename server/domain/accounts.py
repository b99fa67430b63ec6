"""Accounts: paper or live, each with a base currency that P&L is also reported in.

An account nobody defined (a fill names it first) is live, in the default base currency: a
live account is reconciled against the broker, so a surprise there shows up.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedDict

from server.domain.decimals import ZERO
from server.domain.events import AccountDefinition, AccountKind


class AccountRegistry:
    def __init__(self, default_base_currency: str = "USD") -> None:
        self.default_base_currency = default_base_currency
        self._by_id: SortedDict = SortedDict()  # account_id -> AccountDefinition
        self._funded: set[str] = set()  # paper accounts whose initial cash was paid in

    def get(self, account_id: str) -> AccountDefinition:
        account: AccountDefinition | None = self._by_id.get(account_id)
        if account is None:
            return AccountDefinition(
                account_id=account_id,
                account_kind=AccountKind.LIVE,
                base_currency=self.default_base_currency,
            )
        return account

    def base_currency(self, account_id: str) -> str:
        """Cheap enough for every fill: builds no definition for an undefined account."""
        account: AccountDefinition | None = self._by_id.get(account_id)
        return account.base_currency if account else self.default_base_currency

    def is_defined(self, account_id: str) -> bool:
        return account_id in self._by_id

    def __iter__(self) -> Iterator[AccountDefinition]:
        return iter(self._by_id.values())

    def define(self, definition: AccountDefinition) -> bool:
        """Registers or redefines an account; True when a paper account's initial cash is due
        (the first definition that carries any)."""
        self._by_id[definition.account_id] = definition
        if definition.initial_cash == ZERO or definition.account_id in self._funded:
            return False
        self._funded.add(definition.account_id)
        return True

    def funded(self) -> set[str]:
        return set(self._funded)

    def restore(self, definitions: list[AccountDefinition], funded: set[str]) -> None:
        for definition in definitions:
            self._by_id[definition.account_id] = definition
        self._funded = set(funded)
