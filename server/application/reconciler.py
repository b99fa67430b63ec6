"""Reconciliation's use cases: live accounts against the broker, every `interval` seconds
and on demand, and the runs kept.

Each run asks the broker for an account's positions and journals them (`BrokerPositions`)
through the write path; the ledger compares them with the book at that sequence. A failing
broker skips the run and says so; it never stops the service.

A broker that reports cash (`CashReporting`: IB's account values) has its cash journaled with
the positions, and the run compares it per currency with the service's balances.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from server.application.ports import Broker, BrokerUnavailable, ReconciliationRun
from server.application.reads import NotFound, ReadModel
from server.application.writes import WritePath
from server.domain.events import AccountKind, BrokerCash, BrokerPosition, BrokerPositions
from server.domain.ledger import Result
from server.domain.reconciliation import Reconciliation
from server.domain.refusals import Refusal, RefusalKind

log = logging.getLogger("portfolio.reconciliation")


@runtime_checkable
class CashReporting(Protocol):
    """A broker that also says how much cash an account holds."""

    def cash(self, account_id: str) -> dict[str, Decimal]:
        """Currency -> the broker's cash in it now (empty: none reported); raises
        BrokerUnavailable."""


class NoBroker(Exception):
    """Reconciliation was asked for, but no broker is configured."""


class NotAllowed(Exception):
    """The request is valid but the state does not allow it; `refusal` says why."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


class Reconciliations:
    """Runs journaled and read back: what a broker holds against the book."""

    def __init__(self, writes: WritePath[Any], reads: ReadModel) -> None:
        self.ledger = writes.ledger
        self._writes, self._reads = writes, reads

    async def reconcile(
        self,
        account_id: str,
        positions: Sequence[BrokerPosition],
        time_ns: int,
        cash: Mapping[str, Decimal] | None = None,
    ) -> Reconciliation:
        """Journals what the broker holds (and its cash per currency, if it reports it) and
        returns the run it made. Raises NotAllowed for a paper account."""
        self.require_reconcilable(account_id)
        snapshot = BrokerPositions(
            snapshot_id=f"reconcile:{account_id}:{time_ns}",
            account_id=account_id,
            timestamp_ns=time_ns,
            positions=tuple(positions),
            cash=tuple(
                BrokerCash(currency=currency, amount=amount)
                for currency, amount in sorted((cash or {}).items())
            ),
        )
        outcome, refusal = await self._writes.execute(snapshot)
        if refusal is not None:
            raise NotAllowed(refusal)
        if outcome.result is Result.REJECTED:
            raise NotAllowed(Refusal(RefusalKind.CONFLICT, "account_id", outcome.reason))
        run = self.ledger.reconciliations.latest(account_id)
        assert run is not None and run.sequence == outcome.sequence
        return run

    def runs(self, account_id: str) -> Iterator[Reconciliation]:
        """The account's runs, newest first."""
        return self.ledger.reconciliations.runs(account_id)

    def book_positions(self, account_id: str) -> list[BrokerPosition]:
        """The account-level book as a broker would report it (the paper broker's view)."""
        precision = self.ledger.book.precision
        return [
            BrokerPosition(
                instrument_id=row.key.instrument_id,
                quantity=row.quantity,
                avg_cost=row.avg_cost(precision),
            )
            for rows in self.ledger.account_instrument_rows(account_id).values()
            for row in rows[:1]
        ]

    def is_paper(self, account_id: str) -> bool:
        return self.ledger.accounts.get(account_id).account_kind is AccountKind.PAPER

    def require_reconcilable(self, account_id: str) -> None:
        """Raises NotAllowed for a paper account before anything is journaled (the ledger
        refuses it the same way if it is)."""
        refusal = self.ledger.unreconcilable(account_id)
        if refusal is not None:
            raise NotAllowed(refusal)

    def live_accounts(self) -> list[str]:
        """Accounts reconciliation covers: every account known that is not paper."""
        return [
            account.account_id
            for account, _ in self._reads.accounts()
            if account.account_kind is AccountKind.LIVE
        ]

    def reconciliation(self, account_id: str) -> ReconciliationRun:
        run = self.ledger.reconciliations.latest(account_id)
        if run is None:
            raise NotFound(f"account {account_id!r} has not been reconciled yet")
        return self.valued(run)

    def reconciliations(
        self, account_id: str, before_sequence: int, limit: int
    ) -> list[ReconciliationRun]:
        """Runs newest first, older than `before_sequence` (0: from the latest); one more
        than `limit` says more follow."""
        runs = self.runs(account_id)
        if before_sequence:
            runs = itertools.dropwhile(lambda run: run.sequence >= before_sequence, runs)
        return [self.valued(run) for run in itertools.islice(runs, limit + 1)]

    def valued(self, run: Reconciliation) -> ReconciliationRun:
        """A run as queries show it, complete: its residual rows valued now."""
        residuals = [self._reads.residual_view(row) for row in run.residuals]
        return ReconciliationRun(run, residuals)


class Reconciler:
    def __init__(
        self,
        cases: Reconciliations,
        broker: Broker | None,
        *,
        interval: float = 60.0,
        accounts: Sequence[str] = (),
        confirm_runs: int = 2,
        on_status: Callable[[bool], None] = lambda clean: None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.cases = cases
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
        book = self.cases.ledger.reconciliations
        return not any(self.confirmed(account) for account in book.accounts())

    def confirmed(self, account_id: str) -> list[str]:
        """Instruments discrepant in each of the account's last `confirm_runs` runs."""
        runs = list(itertools.islice(self.cases.runs(account_id), self.confirm_runs))
        if len(runs) < self.confirm_runs:
            return []
        common: set[str] | None = None
        for run in runs:
            discrepant = run.discrepant()
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
        """One run for one account. Raises NoBroker, BrokerUnavailable, or
        NotAllowed (a paper account)."""
        if self.broker is None:
            raise NoBroker("no broker is configured (see --broker)")
        async with self._lock:
            self.cases.require_reconcilable(account_id)
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
            broker_cash = None
            if isinstance(self.broker, CashReporting):
                broker_cash = self.broker.cash(account_id)
            run = await self.cases.reconcile(account_id, positions, self._clock_ns(), broker_cash)
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
            )
            + "".join(
                f"; {line.status.name}{' (again)' if f'cash:{line.currency}' in confirmed else ''}"
                f": {line.note}"
                for line in run.cash
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
            if not self.cases.is_paper(account)
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
