"""The `Broker` of paper accounts: there is no broker, the service's own book is the record.

Reconciling a paper account against itself always agrees; having a broker for it anyway keeps
reconciliation free of special cases for account kinds.
"""

from __future__ import annotations

from collections.abc import Callable

from server.domain.events import BrokerPosition

__all__ = ["PaperBroker"]


class PaperBroker:
    """Always connected; its positions are whatever `positions_of` says the book holds."""

    name = "paper"

    def __init__(
        self,
        positions_of: Callable[[str], list[BrokerPosition]],
        accounts_of: Callable[[], list[str]] = list,
    ) -> None:
        self._positions_of = positions_of
        self._accounts_of = accounts_of

    @property
    def connected(self) -> bool:
        return True

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Nothing to disconnect."""

    def accounts(self) -> list[str]:
        return list(self._accounts_of())

    async def positions(self, account_id: str) -> list[BrokerPosition]:
        return list(self._positions_of(account_id))
