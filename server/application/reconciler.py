"""Reconciles live accounts against the broker: every `interval` seconds, and on demand.

Each run asks the broker for an account's positions and journals them (`BrokerPositions`);
the ledger compares them with the book at that sequence. A failing broker skips the run and
says so; it never stops the service.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from server.application.ports import Broker, BrokerUnavailable
from server.application.service import NotAllowed, PortfolioService
from server.domain.reconciliation import Reconciliation
from server.domain.refusals import Refusal, RefusalKind

log = logging.getLogger("portfolio.reconciliation")


class NoBroker(Exception):
    """Reconciliation was asked for, but no broker is configured."""


class Reconciler:
    def __init__(
        self,
        service: PortfolioService[Any],
        broker: Broker | None,
        *,
        interval: float = 60.0,
        accounts: Sequence[str] = (),
        confirm_runs: int = 2,
        on_status: Callable[[bool], None] = lambda clean: None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.service = service
        self.broker = broker
        self.interval = interval
        self.accounts = list(accounts)  # empty: every account the broker holds, but paper ones
        # A discrepancy counts (health, warnings) once this many runs in a row show it: a run
        # taken while a fill is on its way from the relay shows a passing residual.
        self.confirm_runs = max(confirm_runs, 1)
        self._on_status = on_status
        self._clock_ns = clock_ns
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one run at a time: runs of one account stay ordered
        self.runs = 0
        self.failures = 0

    @property
    def clean(self) -> bool:
        """No account has a confirmed discrepancy."""
        book = self.service.ledger.reconciliations
        return not any(self.confirmed(account) for account in book.accounts())

    def confirmed(self, account_id: str) -> list[str]:
        """Instruments discrepant in each of the account's last `confirm_runs` runs."""
        runs = list(itertools.islice(self.service.ledger.reconciliations.runs(account_id),
                                     self.confirm_runs))  # fmt: skip
        if len(runs) < self.confirm_runs:
            return []
        common: set[str] | None = None
        for run in runs:
            discrepant = {line.instrument_id for line in run.lines if line.status.is_discrepancy}
            common = discrepant if common is None else common & discrepant
        return sorted(common or ())

    def start(self) -> asyncio.Task[None] | None:
        """Starts periodic runs, if any; returns their task, for supervision."""
        if self.broker is not None and self.interval > 0:
            self._task = asyncio.create_task(self._periodically(), name="reconciliation")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def reconcile(self, account_id: str) -> Reconciliation:
        """One run for one account. Raises NoBroker, BrokerUnavailable, or the service's
        NotAllowed (a paper account)."""
        if self.broker is None:
            raise NoBroker("no broker is configured (see --broker)")
        async with self._lock:
            self.service.require_reconcilable(account_id)
            held = self.broker.accounts()
            if held and account_id not in held:
                raise NotAllowed(
                    Refusal(
                        RefusalKind.PRECONDITION,
                        "account_id",
                        f"{account_id!r} is not an account of {self.broker.name} "
                        f"(it holds {', '.join(held)})",
                    )
                )
            positions = await self.broker.positions(account_id)
            run = await self.service.reconcile(account_id, positions, self._clock_ns())
        self.runs += 1
        confirmed = set(self.confirmed(account_id))
        log.log(
            logging.WARNING if confirmed else logging.INFO,
            "reconciled %s against %s: %d broker positions, %d matched, %d discrepancies%s",
            account_id,
            self.broker.name,
            run.broker_positions,
            run.matched,
            run.discrepancies,
            "".join(
                f"; {line.instrument_id} {line.status.name}"
                f"{' (again)' if line.instrument_id in confirmed else ''}: {line.note}"
                for line in run.lines
                if line.status.is_discrepancy
            ),
        )
        self._on_status(self.clean)
        return run

    async def reconcile_all(self) -> list[Reconciliation]:
        """A run for every account the broker holds that is not paper (or the configured
        ones); a failed one is logged."""
        runs = []
        accounts = self.accounts or [
            account
            for account in (self.broker.accounts() if self.broker else [])
            if not self.service.is_paper(account)
        ]
        for account_id in accounts:
            try:
                runs.append(await self.reconcile(account_id))
            except (BrokerUnavailable, NotAllowed) as error:
                self.failures += 1
                log.warning("reconciliation of %s skipped: %s", account_id, error)
            except Exception:
                self.failures += 1
                log.exception("reconciliation of %s failed", account_id)
        return runs

    async def _periodically(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.reconcile_all()
