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

Nothing here needs to survive a restart. Every event's id comes from TWS (`execId`, `permId`),
so after every (re)connect the relay asks TWS for the day's executions (`reqExecutions`) and
resends them all, with the open orders' statuses: the service acks what it already has as
DUPLICATE and counts each once. A sweep of `reqExecutions` every `--sweep-seconds`, and a scan
of ib_async's own fill store, catch executions whose live events did not fire (orders ib_async
has no Trade for).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from ib_async import CommissionReport, Trade
from ib_async import Fill as IbFill

from client import (
    AsyncPortfolioClient,
    EventAck,
    EventResult,
    ExecutionEvent,
    Fill,
    OrderStatusUpdate,
)
from relay.executions import (
    DEFAULT_STRATEGY,
    Attribution,
    UnmappableEvent,
    commission_reported,
    fill_event,
    status_update,
)
from relay.outbox import Outbox
from relay.pending import CommissionWait
from relay.relay_config import RelayConfig, parse_args
from relay.statuses import OrderStates, executed_totals
from tws.connection import IbConnection, ReconnectPolicy, quiet_ib_async
from tws.contracts import ContractMap, ContractMapError

__all__ = ["PORTFOLIO_CHANNEL_OPTIONS", "ExecutionRelay", "RelayStats", "main", "run"]

log = logging.getLogger("portfolio.relay")

_T = TypeVar("_T")

_MICROSECOND = timedelta(microseconds=1)
# What the relay remembers of what it sent (TWS lists a day's executions, or up to 7 days').
_RETENTION = timedelta(days=8)
# How the service words the rejection of an id it recorded for a different event.
_REUSED_ID = "already used by a different event"
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
    ) -> None:
        self._connection = connection
        self._attribution = Attribution(contract_map or ContractMap(), default_strategy)
        self._sweep_seconds = sweep_seconds
        self._request_timeout = request_timeout
        self._tick_seconds = tick_seconds
        self._flush_seconds = flush_seconds
        self._waiting = CommissionWait(commission_wait)
        self._outbox = Outbox(client, batch_size=batch_size, retry=send_retry, on_ack=self._on_ack)
        self.stats = RelayStats()
        self._sent: dict[str, Fill] = {}  # execId -> the fill as sent: resent as it was
        self._sent_at: dict[str, float] = {}  # execId -> when (monotonic), oldest first
        self._sent_bare: set[str] = set()  # sent without a commission report
        self._late_reported: set[str] = set()
        self._unmappable: set[str] = set()
        self._statuses: dict[str, float] = {}  # update id sent -> when (monotonic)
        self._orders = OrderStates()  # the last update sent per order
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
        ib.execDetailsEvent += self._on_exec_details
        ib.commissionReportEvent += self._on_commission_report
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
        ib.execDetailsEvent -= self._on_exec_details
        ib.commissionReportEvent -= self._on_commission_report
        ib.orderStatusEvent -= self._on_order_status
        self._scan()
        await self._connection.stop()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pump(everything=True)
        left = await self._outbox.stop(self._flush_seconds)
        log.info("relay stopped: %s; %d events unsent", self.stats, left)

    async def drained(self, timeout: float | None = None) -> None:
        """Until everything seen so far is sent and acked (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            while True:
                self._scan()
                self._pump()
                if not self._waiting and not len(self._outbox):
                    return
                if self._waiting:
                    await asyncio.sleep(self._tick_seconds)
                else:
                    await self._outbox.drained()

    @property
    def connection(self) -> IbConnection:
        return self._connection

    @property
    def waiting(self) -> int:
        """Events not acked yet: fills waiting for a commission report, and the outbox."""
        return len(self._waiting) + len(self._outbox)

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
            self._late_reported.discard(exec_id)
        _older(self._statuses, horizon)
        stale = datetime.now(UTC) - _RETENTION  # status times are this clock's
        self._orders.forget_before(stale)
        for order_id in [i for i, moment in self._status_times.items() if moment < stale]:
            del self._status_times[order_id]

    async def _request_executions(self) -> list[IbFill] | None:
        if not self._connection.connected:
            return None
        try:
            return await asyncio.wait_for(
                self._connection.ib.reqExecutionsAsync(), self._request_timeout
            )
        except (ConnectionError, TimeoutError) as error:
            log.warning("executions request failed: %s", error or type(error).__name__)
            return None

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

    def _on_exec_details(self, trade: Trade, fill: IbFill) -> None:
        self._guarded(self._observe, fill)

    def _on_commission_report(self, trade: Trade, fill: IbFill, report: CommissionReport) -> None:
        self._guarded(self._observe, fill)

    def _on_order_status(self, trade: Trade) -> None:
        self._guarded(self._observe_status, trade)

    def _guarded(self, handle: Callable[[_T], None], argument: _T) -> None:
        try:
            handle(argument)
            self._pump()
        except Exception:
            log.exception("relay failed to handle %r", argument)

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
            self._waiting.add(fill)
            return
        if resend:
            self._outbox.put(sent)
        late = exec_id in self._sent_bare and exec_id not in self._late_reported
        if late and commission_reported(fill):
            self._late_reported.add(exec_id)
            report = fill.commissionReport
            log.warning(
                "commission report of fill %s (%s %s) came after the fill was sent without "
                "one; the service keeps the first content",
                exec_id,
                report.commission,
                report.currency,
            )

    def _scan(self) -> None:
        """Observes fills ib_async stored since the last scan, including those no event
        announced (orders without a Trade). Its store is insertion-ordered and only grows,
        until a disconnect replaces it."""
        store = self._connection.ib.wrapper.fills
        scanned, count = self._scanned
        if store is not scanned:
            count = 0
        if len(store) > count:
            for fill in itertools.islice(store.values(), count, None):
                self._observe(fill)
        self._scanned = (store, len(store))

    def _pump(self, *, everything: bool = False) -> None:
        """Moves fills that may go now from the commission wait into the outbox."""
        for released in self._waiting.release(everything=everything):
            fill = released.fill
            exec_id = fill.execution.execId
            try:
                event = fill_event(fill, self._attribution, with_commission=released.reported)
            except UnmappableEvent as error:
                self._unmappable.add(exec_id)
                log.error("execution not relayed: %s", error)
                continue
            if not released.reported:
                self._sent_bare.add(exec_id)
                self.stats.without_commission += 1
                log.warning(
                    "fill %s sent without commission: no commission report within %.1f s",
                    exec_id,
                    self._waiting.wait_seconds,
                )
            self._sent[exec_id] = event
            self._sent_at[exec_id] = time.monotonic()
            if self._outbox.put(event):
                self.stats.fills_sent += 1

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
        sent = sum(self._send_status(update) for update in updates)
        log.info(
            "order statuses caught up: %d completed and %d working orders listed, %d updates sent",
            len(completed),
            len(working),
            sent,
        )

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
        if ack.result is EventResult.ACCEPTED:
            self.stats.accepted += 1
        elif ack.result is EventResult.DUPLICATE:
            self.stats.duplicates += 1
        elif isinstance(event, OrderStatusUpdate) and _REUSED_ID in ack.reason:
            # TWS gives a status no time of its own: one a restarted relay reports again bears
            # the time it arrived, so it differs from the one the service recorded.
            self.stats.duplicates += 1
            log.info("status update %s was recorded earlier: %s", ack.event_id, ack.reason)
        else:
            self.stats.rejected += 1
            kind = "fill" if isinstance(event, Fill) else "status update"
            log.warning("service rejected %s %s: %s", kind, ack.event_id, ack.reason)


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


async def run(config: RelayConfig) -> None:
    """Runs the relay until SIGTERM or SIGINT, then stops it gracefully."""
    contracts = ContractMap.load(config.contract_map) if config.contract_map else ContractMap()
    connection = IbConnection(
        config.tws_host,
        config.tws_port,
        config.client_id,
        readonly=False,
        connect_timeout=config.connect_timeout,
    )
    client = AsyncPortfolioClient(config.service, channel_options=PORTFOLIO_CHANNEL_OPTIONS)
    async with client:
        relay = ExecutionRelay(
            connection,
            client,
            contracts,
            default_strategy=config.default_strategy,
            commission_wait=config.commission_wait,
            sweep_seconds=config.sweep_seconds,
        )
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        log.info(
            "relaying %s to the portfolio service at %s (%d contracts mapped)",
            connection.name,
            config.service,
            len(contracts),
        )
        await relay.start()
        try:
            await stopping.wait()
        finally:
            log.info("stopping")
            await relay.stop()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    level = logging.getLevelName(config.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_ib_async(level)
    try:
        asyncio.run(run(config))
    except ContractMapError as error:
        log.error("%s", error)
        return 1
    return 0
