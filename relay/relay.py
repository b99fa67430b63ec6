"""The execution relay: streams IB executions and order statuses into the portfolio service.

Run it as its own process (`scripts/relay`, `python -m relay --help`) next to TWS
or IB Gateway. It connects with its own API client id, not read-only: ib_async asks for open
orders only on a read-write connection, and without them it knows no `Trade` for an order, so
its live fill, commission and status events do not fire. TWS reports the orders of *other*
client ids (each strategy's) only to the master client id: set TWS's "Master API client ID"
(Configure > API > Settings) to the relay's `--client-id` (default 900, clear of the small ids
strategies tend to use). Client id 0 would also receive orders entered by hand in TWS, but
ib_async then binds those manual orders to client 0 (`reqAutoOpenOrders`), which a relay that
only listens should not do.

Nothing here needs to survive a restart but the dead letters. Every event's id comes from TWS
(`execId`, `permId`), so after every (re)connect the relay asks TWS for the day's executions
(`reqExecutions`) and resends them all, then brings every order to its TWS state (statuses.py:
completed and open orders of every client, the executions' totals): the service acks what it
already has as DUPLICATE and counts each once. A hook on ib_async's decoding sees every
execution and commission report as it arrives (ib_async's events fire only for orders it has a
Trade for, and it drops a report that precedes its execution); a sweep of `reqExecutions` every
`--sweep-seconds` catches executions TWS did not push.

Fills: in execution order per account and instrument (`relay.pending`); a commission reported
after its fill went without one is sent as a `CommissionAmendment` once the fill is acked; an
unmapped derivative is defined from its execution's contract before its first fill
(`relay.instruments`); what the service refuses for good, and executions the relay cannot map,
go to the dead-letter file (`relay.dead_letters`, `--replay-dead-letters`).

Traces: with `OTEL_TRACES_EXPORTER=otlp` (and `OTEL_EXPORTER_OTLP_ENDPOINT`, e.g.
http://127.0.0.1:4317) or `console`, each ingest call is a span whose context goes to the
service in the call's metadata, so a fill can be followed from here to the service's journal.
Unset or `none`: no tracer, nothing built.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import grpc
from ib_async import CommissionReport, Contract, Execution, Trade
from ib_async import Fill as IbFill
from ib_async.util import dataclassUpdate
from opentelemetry.trace import Tracer

from client import (
    AsyncPortfolioClient,
    CommissionAmendment,
    EventAck,
    EventResult,
    ExecutionEvent,
    Fill,
    OrderStatusUpdate,
    PortfolioError,
    RejectCode,
)
from relay.dead_letters import DeadLetters, event_kind, replay
from relay.executions import (
    DEFAULT_STRATEGY,
    Attribution,
    UnmappableEvent,
    commission_reported,
    fill_event,
    reserved_order_ref,
    status_update,
)
from relay.health import AUTHORIZATION, DEAD_LETTERS, TWS, VISIBILITY, RelayHealth
from relay.instruments import (
    TRANSIENT,
    InstrumentCatalog,
    InstrumentUndefinable,
    ServiceInstruments,
    multiplier_of,
    needs_definition,
)
from relay.outbox import Outbox
from relay.pending import CommissionWait
from relay.relay_config import RelayConfig, parse_args
from relay.statuses import OrderStates, executed_totals, unseen_orders
from tws.amounts import amount
from tws.connection import IbConnection, ReconnectPolicy, quiet_ib_async
from tws.contracts import ContractMap, ContractMapError
from tws.tasks import cancel_and_wait

__all__ = ["PORTFOLIO_CHANNEL_OPTIONS", "ExecutionRelay", "RelayStats", "main", "run"]

log = logging.getLogger("portfolio.relay")

_T = TypeVar("_T")

_MICROSECOND = timedelta(microseconds=1)
# What the relay remembers of what it sent (TWS lists a day's executions, or up to 7 days').
_RETENTION = timedelta(days=8)
# Seconds before an event the service could not take now (RETRY_LATER) is sent again.
_RETRY_LATER_SECONDS = 1.0
# The reqId of a live execution (others answer a request).
_LIVE = -1
# A commission amendment's id is its fill's execId and this.
_AMENDMENT = "commission"
# The dead-letter code of a fill whose instrument the relay could not define.
_UNDEFINED_INSTRUMENT = "UNDEFINED_INSTRUMENT"
#: The portfolio channel retries its connection at least this often while the service is down.
PORTFOLIO_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
)


@dataclass(slots=True)
class RelayStats:
    """What the relay has done since it started (for logs and tests)."""

    fills_sent: int = 0
    statuses_sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    #: Fills sent without a commission report, after --commission-wait.
    without_commission: int = 0
    #: Events written to the dead-letter file (refused by the service or unmappable).
    dead_lettered: int = 0
    #: Commission amendments sent (a commission reported after its fill went without one).
    commissions_amended: int = 0
    #: Ingest calls the service refused for the relay's credentials (events kept, retried).
    refused_calls: int = 0


class ExecutionRelay:
    """IB events in, SDK events out; `start()` returns at once, `stop()` flushes."""

    def __init__(
        self,
        connection: IbConnection,
        client: AsyncPortfolioClient,
        contract_map: ContractMap | None = None,
        *,
        default_strategy: str = DEFAULT_STRATEGY,
        commission_wait: float = 10.0,
        sweep_seconds: float = 60.0,
        request_timeout: float = 30.0,
        batch_size: int = 500,
        tick_seconds: float = 0.2,
        flush_seconds: float = 5.0,
        send_retry: ReconnectPolicy | None = None,
        dead_letters: DeadLetters | None = None,
        instruments: InstrumentCatalog | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._connection = connection
        self._attribution = Attribution(contract_map or ContractMap(), default_strategy)
        self._sweep_seconds = sweep_seconds
        self._request_timeout = request_timeout
        self._tick_seconds = tick_seconds
        self._flush_seconds = flush_seconds
        self._waiting = CommissionWait(commission_wait)
        self._outbox = Outbox(
            client,
            batch_size=batch_size,
            retry=send_retry,
            on_ack=self._on_ack,
            tracer=tracer,
            on_refused=self._count_refused,
        )
        self._send_retry = send_retry or ReconnectPolicy(initial=0.5, factor=2.0, maximum=10.0)
        self._dead_letters = dead_letters or DeadLetters()
        self._instruments = instruments
        self.stats = RelayStats()
        self._sent: dict[str, Fill] = {}  # execId -> the fill as sent: resent as it was
        self._sent_at: dict[str, float] = {}  # execId -> when (monotonic), oldest first
        self._sent_bare: set[str] = set()  # sent without a commission report
        self._unacked: set[str] = set()  # fills put in the outbox and not acked yet
        self._amend_on_ack: dict[str, CommissionAmendment] = {}  # execId -> once acked
        self._bare_retries: dict[str, Fill] = {}  # execId -> the fill resent bare instead
        self._early_reports: dict[str, CommissionReport] = {}  # before their execution
        self._early_at: dict[str, float] = {}  # execId -> when (monotonic), oldest first
        self._deferred: deque[tuple[float, ExecutionEvent]] = deque()  # RETRY_LATER: when
        self._requesting = 0  # executions requests in flight
        self._listing_at: float | None = None  # when an executions answer last came in
        self._unmappable: set[str] = set()
        self._reserved_seen: set[str] = set()
        self._defined: set[str] = set()  # instruments defined (or being) by this process
        self._undefinable: dict[str, str] = {}  # instrument -> why it cannot be defined
        self._held: dict[str, list[Fill]] = {}  # instrument being defined -> its fills
        self._definitions: set[asyncio.Task[None]] = set()
        self._statuses: dict[str, float] = {}  # update id sent -> when (monotonic)
        self._orders = OrderStates()  # the last update sent per order
        # Whether TWS reports other clients' executions to the relay (None: not checked yet).
        self._visibility: tuple[bool | None, str] = (None, "not checked since connecting")
        self._status_times: dict[str, datetime] = {}  # order id -> its last update's time
        self._scanned: tuple[Mapping[str, IbFill], int] = ({}, 0)
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        connection.add_on_connected(self.catch_up)

    # -----------------------------------------------------------------------------------------
    # Life cycle

    async def start(self) -> None:
        """Starts sending, listening to ib_async's events and connecting to TWS."""
        if self._running:
            return
        self._running = True
        ib = self._connection.ib
        self._hook_wrapper()
        ib.orderStatusEvent += self._on_order_status
        await self._outbox.start()
        self._tasks = [
            asyncio.create_task(self._tick_forever(), name="relay tick"),
            asyncio.create_task(self._sweep_forever(), name="relay sweep"),
        ]
        await self._connection.start()

    async def stop(self) -> None:
        """Disconnects, sends what it has (fills still waiting go without commission, since
        TWS may no longer list them at the next start) and stops."""
        if not self._running:
            return
        self._running = False
        ib = self._connection.ib
        self._unhook_wrapper()
        ib.orderStatusEvent -= self._on_order_status
        self._scan()
        await self._connection.stop()
        tasks, self._tasks = [*self._tasks, *self._definitions], []
        await cancel_and_wait(tasks)
        self._pump(everything=True)
        left = await self._outbox.stop(self._flush_seconds)
        log.info("relay stopped: %s; %d events unsent", self.stats, left)

    async def drained(self, timeout: float | None = None) -> None:
        """Until everything seen so far is sent and acked (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            while True:
                self._scan()
                self._pump()
                if not self._waiting and not len(self._outbox) and not self._pending:
                    return
                if self._waiting or self._pending:
                    await asyncio.sleep(self._tick_seconds)
                else:
                    await self._outbox.drained()

    @property
    def connection(self) -> IbConnection:
        return self._connection

    @property
    def waiting(self) -> int:
        """Events not acked yet: fills waiting for a commission report, and the outbox."""
        return len(self._waiting) + len(self._outbox) + self._pending

    @property
    def _pending(self) -> int:
        """Fills held until their instrument is defined, events to resend later, amendments
        waiting for their fill's ack."""
        held = sum(len(fills) for fills in self._held.values())
        return held + len(self._deferred) + len(self._amend_on_ack)

    # -----------------------------------------------------------------------------------------
    # Catching up

    async def catch_up(self) -> None:
        """Resends every execution TWS lists (after each (re)connect), then brings every
        order to its broker state: what the service has is acked DUPLICATE."""
        fills = await self._request_executions()
        if fills is None:
            return
        for fill in fills:
            self._observe(fill, resend=True)
        self._pump()
        await self._catch_up_statuses(fills)
        log.info("caught up: %d executions listed, %d events waiting", len(fills), self.waiting)

    async def sweep(self) -> None:
        """Sends executions TWS lists that the relay has not seen."""
        self._forget_before(time.monotonic() - _RETENTION.total_seconds())
        fills = await self._request_executions()
        if fills is not None:
            for fill in fills:
                self._observe(fill)
            self._pump()

    def _forget_before(self, horizon: float) -> None:
        """Lets go of what was sent before `horizon` (monotonic): TWS lists only recent
        executions, so those will not come back (and if one did, it would be a duplicate)."""
        for exec_id in _older(self._sent_at, horizon):
            del self._sent[exec_id]
            self._sent_bare.discard(exec_id)
        for exec_id in _older(self._early_at, horizon):
            self._early_reports.pop(exec_id, None)
        _older(self._statuses, horizon)
        stale = datetime.now(UTC) - _RETENTION  # status times are this clock's
        self._orders.forget_before(stale)
        for order_id in [i for i, moment in self._status_times.items() if moment < stale]:
            del self._status_times[order_id]

    async def _request_executions(self) -> list[IbFill] | None:
        """TWS's executions; meanwhile no fill leaves the commission wait, so that those the
        answer lists take their places in time first (the caller pumps once it observed them).
        The answer to ib_async's own request at connect is held the same way, until the
        catch-up's."""
        self._requesting += 1
        try:
            if not self._connection.connected:
                return None
            return await asyncio.wait_for(
                self._connection.ib.reqExecutionsAsync(), self._request_timeout
            )
        except (ConnectionError, TimeoutError) as error:
            log.warning("executions request failed: %s", error or type(error).__name__)
            return None
        finally:
            self._requesting -= 1
            if not self._requesting:
                self._listing_at = None

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_seconds)
            try:
                self._scan()
                self._pump()
            except Exception:
                log.exception("relay tick failed")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_seconds)
            try:
                await self.sweep()
            except Exception:
                log.exception("executions sweep failed")

    # -----------------------------------------------------------------------------------------
    # ib_async events (eventkit drops a handler's exception silently: each logs its own)

    def _on_order_status(self, trade: Trade) -> None:
        self._guarded(self._observe_status, trade)

    def _guarded(self, handle: Callable[[_T], None], argument: _T) -> None:
        try:
            handle(argument)
            self._pump()
        except Exception:
            log.exception("relay failed to handle %r", argument)

    def _hook_wrapper(self) -> None:
        """Sees every execution and commission report as ib_async decodes it: its events fire
        only for orders it has a Trade for (a fill of an order placed before the relay
        connected would wait for a scan and be overtaken), and it drops a commission report
        that comes before its execution."""
        wrapper = self._connection.ib.wrapper
        decode_execution, decode_report = wrapper.execDetails, wrapper.commissionReport

        def exec_details(req_id: int, contract: Contract, execution: Execution) -> None:
            decode_execution(req_id, contract, execution)
            if req_id != _LIVE:
                # An answer (maybe to ib_async's own request at connect).
                self._listing_at = time.monotonic()
            self._guarded(self._on_execution, execution.execId)

        def commission_report(report: CommissionReport) -> None:
            decode_report(report)
            self._guarded(self._on_report, report)

        setattr(wrapper, "execDetails", exec_details)  # noqa: B010 (an instance's method)
        setattr(wrapper, "commissionReport", commission_report)  # noqa: B010

    def _unhook_wrapper(self) -> None:
        wrapper = vars(self._connection.ib.wrapper)
        for name in ("execDetails", "commissionReport"):
            wrapper.pop(name, None)

    def _on_execution(self, exec_id: str) -> None:
        fill = self._connection.ib.wrapper.fills.get(exec_id)
        if fill is None:
            return
        early = self._early_reports.pop(exec_id, None)
        if early is not None and not commission_reported(fill):
            dataclassUpdate(fill.commissionReport, early)
        self._observe(fill)

    def _on_report(self, report: CommissionReport) -> None:
        fill = self._connection.ib.wrapper.fills.get(report.execId)
        if fill is not None:
            self._observe(fill)  # ib_async filled the report in
        elif report.execId:  # before its execution: kept until the execution comes
            self._early_reports[report.execId] = report
            self._early_at[report.execId] = time.monotonic()

    # -----------------------------------------------------------------------------------------
    # Fills

    def _observe(self, fill: IbFill, *, resend: bool = False) -> None:
        exec_id = fill.execution.execId
        if not exec_id or exec_id in self._unmappable:
            return
        # reqExecutions answers known executions with new objects that commission reports do
        # not update: the one ib_async keeps in its fill store is.
        fill = self._connection.ib.wrapper.fills.get(exec_id, fill)
        sent = self._sent.get(exec_id)
        if sent is None:
            if exec_id not in self._waiting:
                self._prepare_instrument(fill)
            self._waiting.add(fill)
            return
        if resend and sent.instrument_id not in self._held:
            self._put(sent)
        if exec_id in self._sent_bare and commission_reported(fill):
            self._amend(sent, fill.commissionReport)

    def _scan(self) -> None:
        """Observes fills ib_async stored since the last scan (a safety net: the wrapper hook
        sees them as they come). Its store is insertion-ordered and only grows, until a
        disconnect replaces it."""
        store = self._connection.ib.wrapper.fills
        scanned, count = self._scanned
        if store is not scanned:
            count = 0
        if len(store) > count:
            for fill in itertools.islice(store.values(), count, None):
                self._observe(fill)
        self._scanned = (store, len(store))

    def _pump(self, *, everything: bool = False) -> None:
        """Moves fills that may go now from the commission wait into the outbox (not while an
        executions answer is coming in: its fills take their places in time first)."""
        if not everything and (self._requesting or self._answer_coming_in()):
            return
        now = time.monotonic()
        while self._deferred and (everything or self._deferred[0][0] <= now):
            self._outbox.put(self._deferred.popleft()[1])
        for released in self._waiting.release(everything=everything):
            fill = released.fill
            exec_id = fill.execution.execId
            try:
                event = fill_event(fill, self._attribution, with_commission=released.reported)
            except UnmappableEvent as error:
                self._unmappable.add(exec_id)
                self._set_aside_execution(fill, str(error))
                continue
            if reserved_order_ref(fill.execution.orderRef):
                self._warn_reserved(fill.execution.orderRef.strip())
            if not released.reported:
                self._sent_bare.add(exec_id)
                self.stats.without_commission += 1
                log.warning(
                    "fill %s sent without commission: no commission report within %.1f s",
                    exec_id,
                    self._waiting.wait_seconds,
                )
            failed = self._undefinable.get(event.instrument_id)
            if failed is not None:
                self._unmappable.add(exec_id)
                self._dead_letter(event, failed, _UNDEFINED_INSTRUMENT)
                continue
            self._sent[exec_id] = event
            self._sent_at[exec_id] = time.monotonic()
            held = self._held.get(event.instrument_id)
            if held is not None:  # its instrument is being defined
                held.append(event)
            else:
                self._send_fill(event)

    def _answer_coming_in(self) -> bool:
        """An executions answer nobody here awaits (ib_async's at connect) is taken as
        complete at the catch-up's answer, or after the request time-out."""
        if self._listing_at is None:
            return False
        if time.monotonic() - self._listing_at < self._request_timeout:
            return True
        self._listing_at = None
        return False

    def _send_fill(self, fill: Fill) -> None:
        if self._put(fill):
            self.stats.fills_sent += 1

    def _put(self, event: ExecutionEvent) -> bool:
        if isinstance(event, Fill):
            self._unacked.add(event.fill_id)
        return self._outbox.put(event)

    def _warn_reserved(self, order_ref: str) -> None:
        if order_ref not in self._reserved_seen:
            self._reserved_seen.add(order_ref)
            log.warning(
                "orderRef %r is reserved by the service for reconciliation's rows: its fills "
                "are booked under the default strategy %r (the orderRef is kept on each fill)",
                order_ref,
                self._attribution.default_strategy,
            )

    # -----------------------------------------------------------------------------------------
    # Late commission reports

    def _amend(self, fill: Fill, report: CommissionReport) -> None:
        """A commission reported after its fill went without one amends the fill: sent once the
        service acked the fill (before, it would not find it)."""
        self._sent_bare.discard(fill.fill_id)
        try:
            commission = amount(report.commission, "commission")
        except ValueError as error:
            log.error("commission report of fill %s is unusable: %s", fill.fill_id, error)
            return
        log.info(
            "commission report of fill %s (%s %s) came after the fill was sent without one: "
            "sending it as an amendment",
            fill.fill_id,
            commission,
            report.currency,
        )
        self._send_amendment(fill, commission, report.currency)

    def _send_amendment(self, fill: Fill, commission: Decimal, currency: str) -> None:
        # Its content must not depend on when it is made, so that a restarted relay's is the
        # same event (a duplicate): it bears the fill's time.
        amendment = CommissionAmendment(
            amendment_id=f"{fill.fill_id}/{_AMENDMENT}",
            account_id=fill.account_id,
            fill_id=fill.fill_id,
            commission=commission,
            commission_currency=currency,
            timestamp=fill.timestamp,
        )
        if fill.fill_id in self._unacked:
            self._amend_on_ack[fill.fill_id] = amendment
        elif self._put(amendment):
            self.stats.commissions_amended += 1

    # -----------------------------------------------------------------------------------------
    # Unmapped derivatives

    def _prepare_instrument(self, fill: IbFill) -> None:
        """Starts defining an unmapped derivative at its first execution (so that it is done
        by the time the fill may go); its fills are held until then."""
        contract = fill.contract
        if (
            self._instruments is None
            or contract.conId <= 0
            or contract.conId in self._attribution.contracts.ids
            or not needs_definition(contract)
        ):
            return
        instrument_id = str(contract.conId)
        if instrument_id in self._defined:
            return
        self._defined.add(instrument_id)
        self._held[instrument_id] = []
        task = asyncio.create_task(
            self._define(instrument_id, contract), name=f"relay define {instrument_id}"
        )
        self._definitions.add(task)
        task.add_done_callback(self._definitions.discard)

    async def _define(self, instrument_id: str, contract: Contract) -> None:
        """Defines the instrument (retrying while the service or TWS is unreachable), then
        sends its held fills; sets them aside if it cannot be defined. Cancelled (the relay
        stops), it sends nothing: TWS lists the fills again at the next start."""
        assert self._instruments is not None
        failures = 0
        while True:
            try:
                outcome = await self._instruments.ensure(
                    contract, instrument_id, self._contract_multiplier
                )
            except InstrumentUndefinable as error:
                self._undefinable[instrument_id] = str(error)
                log.error("instrument %s cannot be defined: %s", instrument_id, error)
            except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as error:
                if _transient(error):
                    failures += 1
                    delay = self._send_retry.delay(failures)
                    log.warning("defining instrument %s failed (%s); retrying in %.1f s",
                                instrument_id, _describe(error), delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    continue
                why = _describe(error)
                log.error("service refused to define instrument %s (%s): its fills are "
                          "booked as the service holds it", instrument_id, why)  # fmt: skip
            except Exception:
                log.exception("defining instrument %s failed: its fills are booked as the "
                              "service holds it", instrument_id)  # fmt: skip
            else:
                held = outcome.instrument
                log.info("instrument %s %s: %s, multiplier %s, %s", instrument_id,
                         "defined" if outcome.defined else "already defined", held.symbol,
                         held.multiplier or "1", held.currency)  # fmt: skip
            break
        failed = self._undefinable.get(instrument_id)
        for event in self._held.pop(instrument_id, []):
            if failed is None:
                self._send_fill(event)
            else:
                self._unmappable.add(event.fill_id)
                self._sent.pop(event.fill_id, None)
                self._dead_letter(event, failed, _UNDEFINED_INSTRUMENT)

    async def _contract_multiplier(self, contract: Contract) -> Decimal | None:
        """The multiplier in TWS's contract details (for an execution without one); raises
        ConnectionError or TimeoutError when TWS does not answer."""
        if not self._connection.connected:
            raise ConnectionError("not connected to TWS")
        details = await asyncio.wait_for(
            self._connection.ib.reqContractDetailsAsync(Contract(conId=contract.conId)),
            self._request_timeout,
        )
        for detail in details:
            if detail.contract is not None:
                multiplier = multiplier_of(detail.contract)
                if multiplier is not None:
                    return multiplier
        return None

    # -----------------------------------------------------------------------------------------
    # Events the service refused, and executions the relay cannot map

    def _dead_letter(self, event: ExecutionEvent, reason: str, code: str) -> None:
        kind = event_kind(event)
        try:
            self._dead_letters.event(event, reason, code)
        except OSError as error:
            where = self._dead_letters.path
            log.error("%s %s is lost: refused (%s: %s) and it could not be kept in %s: %s",
                      kind, event.event_id, code, reason, where, error)  # fmt: skip
            return
        self.stats.dead_lettered += 1
        log.error("%s %s not booked (%s: %s): kept in %s for a replay",
                  kind, event.event_id, code, reason, self._dead_letters.path)  # fmt: skip

    def _set_aside_execution(self, fill: IbFill, reason: str) -> None:
        exec_id = fill.execution.execId
        try:
            self._dead_letters.execution(fill, reason)
        except OSError as error:
            log.error("execution %s not relayed (%s) and it could not be kept in %s: %s",
                      exec_id, reason, self._dead_letters.path, error)  # fmt: skip
            return
        self.stats.dead_lettered += 1
        log.error("execution %s not relayed (%s): kept in %s for a replay",
                  exec_id, reason, self._dead_letters.path)  # fmt: skip

    # -----------------------------------------------------------------------------------------
    # Order statuses

    def _observe_status(self, trade: Trade) -> None:
        moment = trade.log[-1].time if trade.log else datetime.now(UTC)
        try:
            update = status_update(trade, self._attribution, moment)
        except UnmappableEvent as error:
            log.error("order status not relayed: %s", error)
            return
        if update is not None:
            self._send_status(update)

    def _send_status(self, update: OrderStatusUpdate) -> bool:
        """Sends an update unless it went out already; True if it went out now."""
        if update.update_id in self._statuses:
            return False
        update = self._after_last(update)
        self._statuses[update.update_id] = time.monotonic()
        self._orders.sent(update)
        if self._outbox.put(update):
            self.stats.statuses_sent += 1
        return True

    async def _catch_up_statuses(self, fills: list[IbFill]) -> None:
        """Brings every order the relay has seen, and every order TWS lists (done today or
        working, of any client), to its broker state: an order filled or cancelled while the
        relay was away, or placed and done then, gets its final status."""
        ib = self._connection.ib
        completed = await self._request(ib.reqCompletedOrdersAsync(False), "completed orders")
        working = await self._request(ib.reqAllOpenOrdersAsync(), "open orders")
        if completed is None or working is None:
            return
        updates, errors = self._orders.catch_up(
            completed=completed,
            working=[*working, *ib.openTrades()],
            executed=executed_totals(fills),
            attribution=self._attribution,
            now=datetime.now(UTC),
        )
        for error in errors:
            log.error("order status not relayed: %s", error)
        self._check_visibility(unseen_orders(completed, working, fills, self._connection.client_id))
        sent = sum(self._send_status(update) for update in updates)
        log.info(
            "order statuses caught up: %d completed and %d working orders listed, %d updates sent",
            len(completed),
            len(working),
            sent,
        )

    def _check_visibility(self, unseen: list[int]) -> None:
        """Warns (once per change) when TWS lists filled orders whose executions it does not
        report to the relay: it is then not TWS's master API client."""
        client_id = self._connection.client_id
        if not unseen:
            self._visibility = (True, "every filled order TWS lists has its executions")
            return
        if self._visibility[0] is False:
            return
        shown = ", ".join(map(str, unseen[:5])) + (", ..." if len(unseen) > 5 else "")
        why = (
            f"TWS lists {len(unseen)} filled order{'' if len(unseen) == 1 else 's'} whose "
            f"executions it does not report to "
            f"client {client_id} (permId {shown}): the relay is not TWS's master API client "
            f"and misses other clients' fills; set TWS's Configure > API > Settings > "
            f"Master API client ID to {client_id}"
        )
        log.warning("%s", why)
        self._visibility = (False, why)

    def health(self) -> dict[str, tuple[bool | None, str]]:
        """What the health surface shows: per name, healthy (None: unknown) and why."""
        connection = self._connection
        dead = self.stats.dead_lettered
        return {
            TWS: (connection.seeing, connection.impairment or "connected and seeing"),
            VISIBILITY: self._visibility,
            DEAD_LETTERS: (not dead, f"{dead} events set aside" if dead else "none set aside"),
            AUTHORIZATION: self._outbox.refusals.health(),
        }

    def _count_refused(self, error: PortfolioError) -> None:
        self.stats.refused_calls += 1

    async def _request(self, request: Awaitable[list[_T]], what: str) -> list[_T] | None:
        """A TWS request with the relay's time-out; None (logged) if it fails."""
        try:
            return await asyncio.wait_for(request, self._request_timeout)
        except (ConnectionError, TimeoutError) as error:
            log.warning("%s request failed: %s", what, error or type(error).__name__)
            return None

    def _after_last(self, update: OrderStatusUpdate) -> OrderStatusUpdate:
        """The service takes two updates of one order at the same time for a correction of
        each other: keep each order's times strictly increasing."""
        stamp = update.timestamp or datetime.now(UTC)
        last = self._status_times.get(update.order_id)
        if last is not None and stamp <= last:
            stamp = last + _MICROSECOND
        self._status_times[update.order_id] = stamp
        return update if stamp == update.timestamp else dataclasses.replace(update, timestamp=stamp)

    # -----------------------------------------------------------------------------------------

    def _on_ack(self, event: ExecutionEvent, ack: EventAck) -> None:
        if isinstance(event, Fill):
            self._unacked.discard(event.fill_id)
        if ack.result is EventResult.ACCEPTED:
            self.stats.accepted += 1
        elif ack.result is EventResult.DUPLICATE:
            self.stats.duplicates += 1
        elif isinstance(event, OrderStatusUpdate) and ack.code is RejectCode.ID_REUSED:
            # TWS gives a status no time of its own: one a restarted relay reports again bears
            # the time it arrived, so it differs from the one the service recorded.
            self.stats.duplicates += 1
            log.info("status update %s was recorded earlier: %s", ack.event_id, ack.reason)
            return
        elif ack.code is RejectCode.RETRY_LATER:
            kind, delay = event_kind(event), _RETRY_LATER_SECONDS
            log.warning("service could not take %s %s now (%s): resending it in %.1f s",
                        kind, ack.event_id, ack.reason, delay)  # fmt: skip
            self._deferred.append((time.monotonic() + _RETRY_LATER_SECONDS, event))
            return
        elif ack.code is RejectCode.ID_REUSED and self._resend_bare(event):
            return
        else:
            self.stats.rejected += 1
            self._refused(event, ack)
            return
        if isinstance(event, Fill):
            self._fill_applied(event)

    def _fill_applied(self, fill: Fill) -> None:
        """Sends what waited for the fill's ack: its commission amendment."""
        original = self._bare_retries.pop(fill.fill_id, None)
        if original is not None:  # the service had it without commission: amend it
            self._send_amendment(fill, original.commission, original.commission_currency)
        amendment = self._amend_on_ack.pop(fill.fill_id, None)
        if amendment is not None and self._put(amendment):
            self.stats.commissions_amended += 1

    def _resend_bare(self, fill: ExecutionEvent) -> bool:
        """The service holds this fill with other content. A restarted relay resends with its
        commission a fill an earlier run sent without: try the fill as that run sent it, and
        amend its commission once the service takes it as a duplicate."""
        if not isinstance(fill, Fill) or fill.fill_id in self._bare_retries:
            return False
        if not (fill.commission or fill.commission_currency):
            return False
        bare = dataclasses.replace(fill, commission=Decimal(0), commission_currency="")
        self._bare_retries[fill.fill_id] = fill
        self._sent[fill.fill_id] = bare
        self._put(bare)
        return True

    def _refused(self, event: ExecutionEvent, ack: EventAck) -> None:
        amendment = None
        if isinstance(event, Fill):
            event = self._bare_retries.pop(event.fill_id, event)  # the fill as TWS reported it
            amendment = self._amend_on_ack.pop(event.fill_id, None)
        self._dead_letter(event, ack.reason, ack.code.name)
        if amendment is not None:
            self._dead_letter(amendment, f"its fill {event.event_id} was refused", "FILL_REFUSED")


def _transient(error: Exception) -> bool:
    """TWS or the service unreachable or slow: worth another attempt."""
    return not isinstance(error, grpc.aio.AioRpcError) or error.code() in TRANSIENT


def _describe(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error) or type(error).__name__


def _older(sent_at: dict[str, float], horizon: float) -> list[str]:
    """Removes and returns the ids sent before `horizon` (the dict is in sending order)."""
    old: list[str] = []
    for event_id, moment in sent_at.items():
        if moment >= horizon:
            break
        old.append(event_id)
    for event_id in old:
        del sent_at[event_id]
    return old


# ---------------------------------------------------------------------------------------------
# The process


def tracer_from_environment(
    environ: Mapping[str, str],
) -> tuple[Tracer | None, Callable[[], None]]:
    """The relay's tracer as OpenTelemetry's variables ask (OTEL_TRACES_EXPORTER: otlp,
    console, or none/unset: no tracer), and how to flush it at the end."""
    export = environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if export in ("", "none"):
        return None, lambda: None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "relay")})
    )
    if export == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=5.0)))
    elif export == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    else:
        log.warning("OTEL_TRACES_EXPORTER=%s: not otlp, console or none; no traces", export)
        return None, lambda: None
    return provider.get_tracer("portfolio.relay"), provider.shutdown


async def run(config: RelayConfig) -> None:
    """Runs the relay until SIGTERM or SIGINT, then stops it gracefully."""
    tracer, flush_traces = tracer_from_environment(os.environ)
    try:
        await _run(config, tracer)
    finally:
        await asyncio.to_thread(flush_traces)


async def _run(config: RelayConfig, tracer: Tracer | None) -> None:
    contracts = ContractMap.load(config.contract_map) if config.contract_map else ContractMap()
    connection = IbConnection(
        config.tws_host,
        config.tws_port,
        config.client_id,
        readonly=False,
        connect_timeout=config.connect_timeout,
    )
    credentials = config.credentials  # relay/credentials.py: TLS, mTLS, token
    client = AsyncPortfolioClient(
        config.service, channel_options=PORTFOLIO_CHANNEL_OPTIONS, **credentials.client_options()
    )
    instruments = ServiceInstruments(config.service, credentials=credentials.channel_credentials())
    async with client:
        relay = ExecutionRelay(
            connection,
            client,
            contracts,
            default_strategy=config.default_strategy,
            commission_wait=config.commission_wait,
            sweep_seconds=config.sweep_seconds,
            dead_letters=DeadLetters(config.dead_letters),
            instruments=instruments,
            tracer=tracer,
        )
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        log.info(
            "relaying %s to the portfolio service at %s, %s (%d contracts mapped)",
            connection.name,
            config.service,
            credentials.describe(),
            len(contracts),
        )
        health = RelayHealth(relay, config.health_port) if config.health_port else None
        if health is not None:
            await health.start()
        await relay.start()
        try:
            await stopping.wait()
        finally:
            log.info("stopping")
            await relay.stop()
            await instruments.close()
            if health is not None:
                await health.stop()


async def replay_dead_letters(config: RelayConfig) -> int:
    """Resends the dead-letter file's events; those refused again stay in it. 0 when none
    is left, 1 otherwise."""
    contracts = ContractMap.load(config.contract_map) if config.contract_map else ContractMap()
    attribution = Attribution(contracts, config.default_strategy)
    credentials = config.credentials.client_options()
    async with AsyncPortfolioClient(config.service, **credentials) as client:
        result = await replay(config.dead_letters, client, attribution)
    log.info(
        "replayed %s: %d events resent, %d accepted, %d already booked, %d kept (refused again)",
        config.dead_letters,
        result.resent,
        result.accepted,
        result.duplicates,
        result.kept,
    )
    return 1 if result.kept else 0


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    level = logging.getLevelName(config.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_ib_async(level)
    try:
        if config.replay_dead_letters:
            return asyncio.run(replay_dead_letters(config))
        asyncio.run(run(config))
    except ContractMapError as error:
        log.error("%s", error)
        return 1
    return 0
