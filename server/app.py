"""Wiring: the one place that builds the store, the domain, the application and the gRPC adapter."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.metrics import NoOpHistogram
from opentelemetry.util.types import Attributes

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.api.auth import Authorizer
from server.api.handlers import HandlerRewrite, RewritingRegistry
from server.api.malformed import MalformedRequestGuard
from server.api.metrics_interceptor import RpcMetrics
from server.api.preencoded import PreEncodedResponses
from server.api.reflection_v1 import enable_reflection
from server.api.servicer import PortfolioManagerServicer
from server.api.tracing_interceptor import RpcTraces
from server.api.updates import BATCH_MAX_BYTES, EncodedUpdate, encode_update
from server.application import collector
from server.application.day_close import SessionCalendar, account_sessions
from server.application.ports import Broker
from server.application.projector import rows_of_account
from server.application.publishing import PortfolioChange
from server.application.reconciler import Reconciler
from server.application.service import PortfolioService
from server.application.subscriptions import SubscriptionHub
from server.application.supervision import Supervision
from server.application.thresholds import HealthThresholds
from server.application.writes import RecoveryReport
from server.auth_config import Transport, transport_of
from server.broker.paper import PaperBroker
from server.config import ServiceConfig, parse_args
from server.config_file import mask_secrets
from server.domain.instruments import InstrumentRegistry
from server.domain.ledger import Ledger, Result
from server.domain.reconciliation import ReconcilePolicy
from server.domain.seen import EventAt
from server.domain.time_window import TimeWindow
from server.log_format import configure_logging
from server.reference import ReferenceFileError, load_reference
from server.storage.arctic import CLOSE_COPY_SECONDS, ArcticEventStore
from server.storage.disk import StoreUnusable
from server.storage.lock import StoreLocked
from server.storage.views_process import ViewsProcess, local_folder

if TYPE_CHECKING:  # imported where used: a start that has no IB or telemetry skips them
    from opentelemetry.sdk.trace.export import SpanExporter

    from server.telemetry import Metrics
    from server.tracing import Tracing

log = logging.getLogger("portfolio")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PortfolioManager"].full_name
BROKER_HEALTH = "broker"  # SERVING while the broker connection is up
RECONCILIATION_HEALTH = "reconciliation"  # SERVING while no live account has a discrepancy
VIEWS_HEALTH = "views"  # SERVING while every analysts' view symbol is written
BOOKS_HEALTH = "books"  # NOT_SERVING for a while after a fill was booked outside its place
JOURNAL_HEALTH = "journal"  # SERVING while the journal takes what the write-ahead log holds
EXPORTS_HEALTH = "exports"  # with --otlp-endpoint: SERVING while the collector takes exports
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    service: PortfolioService[EncodedUpdate]
    store: ArcticEventStore
    recovery: RecoveryReport
    health: health.aio.HealthServicer
    reconciler: Reconciler
    supervision: Supervision
    _executors: tuple[ThreadPoolExecutor, ...]
    _background: list[asyncio.Task[None]]  # housekeeping, day closes
    metrics: Metrics | None = None  # with --metrics-port
    thresholds: HealthThresholds | None = None  # their values: thresholds.values()
    servicer: PortfolioManagerServicer | None = None  # its streams end first at a stop
    tracing: Tracing | None = None  # with --trace-export
    views_writer: ViewsProcess | None = None  # the views' own process (LMDB stores)

    async def stop(self, grace: float | None, time_left: Callable[[], float] | None = None) -> None:
        """Stops taking calls, lets running ones finish for `grace` seconds, commits what is
        pending, then releases the store. `time_left`: the seconds left before the stop's
        limit (StopDeadline), which the checkpoint needs to fit in."""
        await self.health.enter_graceful_shutdown()
        if self.views_writer is not None:
            self.views_writer.stopping()
        # Streams end now, UNAVAILABLE (subscriptions with where to resume, ingest streams once
        # what they admitted is durable): a reader never hangs up by itself, and the server's
        # stop would wait its whole grace on it.
        if self.servicer is not None:
            self.servicer.stop_streams()
        closer = self.service.day_closer
        if closer is not None:  # a close just journaled goes to the store before the checkpoint
            try:
                await asyncio.wait_for(closer.record_closes(), _within(5.0, time_left))
            except Exception as error:
                log.error("day closes not recorded in the store at stop: %r", error)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.reconciler.stop()
        if self.reconciler.broker is not None:
            await self.reconciler.broker.stop()
        await self.server.stop(grace)
        self.service.save_marks_now()
        self.service.journal_fx_now()  # before the committer's last commit
        await self.service.committer.stop()
        if self.service.committer.healthy and not self.supervision.failed.is_set():
            # Never a snapshot of a state a failed task may have left half-done.
            # The next start replays less than an interval (if it fits before the limit).
            await self.service.checkpoints.stop(time_left)
        views_written = await self.service.projector.drained(timeout=_within(None, time_left))
        if not views_written:
            log.warning(
                "the views' last write did not finish before the stop's limit: the next start "
                "writes them from the journal"
            )
        if self.views_writer is not None:  # its last write is done, or given up: ended now
            wait = VIEWS_STOP_SECONDS if views_written else 0.0
            await asyncio.to_thread(self.views_writer.stop, wait)
        for executor in self._executors:
            # In a thread: one stuck in a store call must not freeze the loop past the grace.
            await asyncio.to_thread(executor.shutdown, wait=True)
        self.store.close()
        # Both export what is left, at once (each bounded by EXPORT_TIMEOUT_SECONDS).
        traced = None
        if self.tracing is not None:
            traced = asyncio.get_running_loop().run_in_executor(None, self.tracing.close)
        if self.metrics is not None:
            self.metrics.close()
        if traced is not None:
            await traced
        gc.unfreeze()  # a process that starts another server (tests) collects this one's


async def start_server(
    config: ServiceConfig,
    open_store: Callable[[str], ArcticEventStore] = ArcticEventStore,
    broker: Broker | None = None,
    span_exporter: SpanExporter | None = None,
) -> RunningServer:
    """Opens the store, recovers, and starts serving. Raises StoreLocked when another service
    holds the store, RuntimeError when the address cannot be bound. `broker` overrides the
    one `config.broker` names; AuthConfigError (a RuntimeError) before the store is opened when
    the TLS or auth settings are unusable or unsafe. `span_exporter` (tests) turns tracing on,
    each span handed to it as it ends."""
    transport = transport_of(
        host=config.host, tls_cert=config.tls_cert, tls_key=config.tls_key,
        tls_client_ca=config.tls_client_ca, insecure=config.insecure, auth_file=config.auth_file,
    )  # fmt: skip
    for line in transport.warnings:
        log.warning("%s", line)
    store = open_store(config.store)
    # One thread writes checkpoints (the group commit appends on its own), another the
    # analysts' views: each symbol has one writer, and neither ever delays an ack.
    executors = (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="portfolio-journal"),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="portfolio-views"),
    )
    try:
        running = await _start(
            config, store, executors, broker or _broker(config), transport, span_exporter
        )
        for line in transport.notes:  # once started: a start that fails says only why
            log.info("%s", line)
        return running
    except BaseException:
        for executor in executors:
            executor.shutdown(wait=True)
        store.close()
        raise


async def _start(
    config: ServiceConfig,
    store: ArcticEventStore,
    executors: tuple[ThreadPoolExecutor, ThreadPoolExecutor],
    broker: Broker | None,
    transport: Transport,
    span_exporter: SpanExporter | None = None,
) -> RunningServer:
    executor, views_executor = executors
    health_servicer = health.aio.HealthServicer()
    loop = asyncio.get_running_loop()

    health_updates: set[asyncio.Task[None]] = set()

    def set_health(name: str, healthy: bool) -> None:
        task = loop.create_task(health_servicer.set(name, SERVING if healthy else NOT_SERVING))
        health_updates.add(task)
        task.add_done_callback(health_updates.discard)

    def on_health(healthy: bool) -> None:
        for name in ("", SERVICE_NAME):
            set_health(name, healthy)

    definitions = (
        load_reference(config.reference_file, config.base_currency) if config.reference_file else []
    )

    def new_ledger(journal: EventAt | None = None) -> Ledger:
        """A ledger of these settings: the live one reads its journal back; a past point's
        (point_in_time.py) keeps what it needs."""
        instruments = InstrumentRegistry(
            default_currency=config.base_currency, strict=config.strict_instruments
        )
        return Ledger(
            instruments,
            precision=config.precision,
            trace_ttl_ns=int(config.trace_ttl_seconds * 1e9),
            correction_window_ns=int(config.correction_window_days * 86_400 * 10**9),
            restatement_window_ns=(
                int(config.restatement_window_days * 86_400 * 10**9)
                if config.restatement_window_days
                else None
            ),
            reconcile_policy=ReconcilePolicy(
                config.cost_tolerance,
                config.precision,
                config.cost_tolerance_floor,
                config.cash_tolerance,
            ),
            journal=journal,
            retention_ns=(
                int(config.order_retention_days * 86_400 * 10**9)
                if config.order_retention_days
                else None
            ),
        )

    # The live ledger keeps ids seen and correctable fills compact, and reads the journal back.
    ledger = new_ledger(store.event_at)
    hub: SubscriptionHub[PortfolioChange, EncodedUpdate] = SubscriptionHub(
        encode_update,
        config.replay_capacity,
        config.subscriber_queue,
        writes_per_second=config.fanout_writes_per_second,
    )
    service = PortfolioService(
        ledger,
        hub,
        store,
        executor,
        views_executor,
        checkpoint_every=config.checkpoint_every,
        checkpoint_seconds=config.checkpoint_seconds,
        on_health=on_health,
        reporting_currency=config.base_currency,
        mark_publish_seconds=config.mark_publish_seconds,
        fx_journal_seconds=config.fx_journal_seconds,
        on_books=lambda exact: set_health(BOOKS_HEALTH, exact),
        time_window=TimeWindow(
            max_ahead_ns=int(config.max_clock_ahead_seconds * 1e9),
            max_behind_ns=int(config.max_event_age_days * 86_400e9),
        ),
        session=SessionCalendar.parse(
            config.session_close, config.session_timezone, config.session_days
        ),
        account_sessions=account_sessions(config.account_sessions),
        new_ledger=new_ledger,
    )
    gc.collect()  # what starting made: the book is frozen below without a collection
    gc.disable()  # recovery builds the book: millions of objects, none of them garbage
    try:
        report = await loop.run_in_executor(executor, service.recover)
    finally:
        collector.settle(collect=False)  # before enabling: no collection walks it
        gc.enable()
    supervision = Supervision(on_failure=lambda cause: on_health(False))
    views_writer = None
    if config.views_process and local_folder(store.uri) is not None:
        views_writer = ViewsProcess(
            store.uri, log_level=config.log_level, log_format=config.log_format
        )
        views_writer.start()  # it opens the store while this one starts
        store.views.writer = views_writer
    service.projector.on_health = lambda healthy: set_health(VIEWS_HEALTH, healthy)
    service.projector.balances_of = ledger.balances.of_account  # the `balances` view
    service.projector.rows_of = lambda account_id: rows_of_account(ledger.book, account_id)
    store.views.history_seconds = config.position_history_seconds

    def on_journal(healthy: bool) -> None:  # called on the copier's thread
        loop.call_soon_threadsafe(set_health, JOURNAL_HEALTH, healthy)

    store.watch_journal(on_journal)
    # OpenTelemetry's SDK (about 0.2 s of imports) and ib_async (about 0.3 s, `_broker`) are
    # imported only by a service configured to use them: every start pays for an import.
    exports = None
    if config.otlp_endpoint:
        from server.tracing import Exports

        def on_exports(healthy: bool) -> None:  # called on an exporter's thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: the service stopped
                loop.call_soon_threadsafe(set_health, EXPORTS_HEALTH, healthy)

        exports = Exports(config.otlp_endpoint, on_exports)
    tracing = None
    if span_exporter is not None or config.trace_export != "none":
        from server.tracing import Tracing

        tracing = Tracing(config.trace_export, config.otlp_endpoint, span_exporter, exports)
        tracing.install()  # before the first commit: every group's spans
        log.info("traces: %s %s", config.trace_export, config.otlp_endpoint)
    supervision.watch(service.committer.start())
    metrics = None
    if config.metrics_port or config.otlp_endpoint:
        from server.telemetry import Metrics

        metrics = Metrics(config.otlp_endpoint, exports=exports)
    try:
        thresholds = HealthThresholds(
            ack_limit=config.ack_p99_ms / 1e3,
            query_limit=config.query_p99_ms / 1e3,
            window=config.latency_window_seconds,
            max_rows=config.max_rows,
            rows=lambda: len(ledger.book),
        )
        if metrics is not None:  # a limit of 0: nothing recorded for it
            service.committer.on_commit = (
                _both(metrics.committed, thresholds) if config.ack_p99_ms else metrics.committed
            )
        elif config.ack_p99_ms:
            service.committer.on_commit = thresholds.committed
        service.projector.submit(
            report.views_backlog,
            report.rows,
            service.judge(report.views_backlog),
            service.reports_for(report.views_backlog),
        )
        if definitions:
            outcomes = await service.ingest(definitions)
            log.info(
                "reference file %s: %d definitions, %d new",
                config.reference_file,
                len(outcomes),
                sum(outcome.result is Result.ACCEPTED for outcome in outcomes),
            )
            for outcome in outcomes:
                refusal = ledger.refusals.get(outcome.sequence)
                if refusal is not None:
                    log.warning("reference file: %s refused: %s", outcome.event_id, refusal)

        # Each handler rewritten once where it is added (server.api.handlers), not per call:
        # who calls and may they (server.api.auth): before anything reads the request.
        # Bytes that are not the method's request: INVALID_ARGUMENT, a log line per client.
        # Updates are written as their encoded bytes (once per update, not per stream).
        # Metrics first (outermost): they time what the others add.
        rewrites: list[HandlerRewrite] = [
            *(
                [RpcMetrics(QueryLatency(thresholds, metrics))]
                if metrics is not None or config.query_p99_ms
                else []
            ),
            *([RpcTraces(tracing.tracer)] if tracing is not None else []),
            # Without principals it only names who books each write (the audit trail).
            Authorizer(transport.principals),
            MalformedRequestGuard(),
            PreEncodedResponses(),
        ]
        server = grpc.aio.server(
            options=[
                # A second server on the same port must fail, not silently share it.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
            ],
        )

        if broker is None and config.broker == "paper":
            broker = PaperBroker(service.book_positions, service.live_accounts)
        reconciler = Reconciler(
            service.reconciling,
            broker,
            interval=config.reconcile_seconds,
            accounts=[a.strip() for a in config.reconcile_accounts.split(",") if a.strip()],
            confirm_runs=config.reconcile_confirm_runs,
            on_status=lambda clean: set_health(RECONCILIATION_HEALTH, clean),
        )
        servicer = PortfolioManagerServicer(
            service,
            max_batch_events=config.max_batch_events,
            heartbeat_seconds=config.heartbeat_seconds,
            reconciler=reconciler,
            batch_max_bytes=min(BATCH_MAX_BYTES, config.max_message_bytes // 2),
        )
        registry = RewritingRegistry(server, rewrites).as_server()
        pb_grpc.add_PortfolioManagerServicer_to_server(servicer, registry)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registry)
        enable_reflection([SERVICE_NAME, health.SERVICE_NAME], registry)
        port = _listen(server, config.address, transport)
        if not port:
            raise RuntimeError(f"cannot listen on {config.address}")
        if metrics is not None:
            metrics.observe(service, reconciler, broker)
            metrics.serve(config.metrics_host, config.metrics_port)
        await server.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, SERVING)
        await health_servicer.set(BOOKS_HEALTH, SERVING if service.books_exact() else NOT_SERVING)
        await health_servicer.set(
            VIEWS_HEALTH, SERVING if service.projector.healthy else NOT_SERVING
        )
        await health_servicer.set(JOURNAL_HEALTH, SERVING if store.journal_current else NOT_SERVING)
        if exports is not None:
            await health_servicer.set(EXPORTS_HEALTH, SERVING if exports.healthy else NOT_SERVING)
        await health_servicer.set(
            RECONCILIATION_HEALTH, SERVING if reconciler.clean else NOT_SERVING
        )
        if broker is not None:
            await broker.start()
            await health_servicer.set(BROKER_HEALTH, SERVING if broker.connected else NOT_SERVING)
            periodic = reconciler.start()
            if periodic is not None:
                supervision.watch(periodic)
        housekeeping = asyncio.create_task(
            _housekeeping(service, config.trace_ttl_seconds, broker, set_health),
            name="housekeeping",
        )
        supervision.watch(housekeeping)
        thresholds.check(set_health)
        judging = asyncio.create_task(
            thresholds.watch(set_health, min(1.0, config.latency_window_seconds / 12)),
            name="health thresholds",
        )
        supervision.watch(judging)
        background = [housekeeping, judging]
        if views_writer is not None:
            watching = asyncio.create_task(_watch_views(views_writer), name="views writer")
            supervision.watch(watching)
            background.append(watching)
        if service.day_closer is not None:
            closing = asyncio.create_task(service.day_closer.run(), name="day close")
            supervision.watch(closing)
            background.append(closing)
        return RunningServer(
            server, port, service, store, report, health_servicer, reconciler, supervision,
            executors, background, metrics, thresholds, servicer, tracing, views_writer,
        )  # fmt: skip
    except BaseException:
        if views_writer is not None:
            views_writer.stop(VIEWS_STOP_SECONDS)
        if metrics is not None:
            metrics.close()
        if tracing is not None:
            tracing.close()
        await service.committer.stop()  # no commit task outlives a start that failed
        raise


def _listen(server: grpc.aio.Server, address: str, transport: Transport) -> int:
    """Binds `address` with TLS (mutual when a client CA is set) or in plaintext."""
    if not transport.certificate:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(transport.private_key, transport.certificate)],
        root_certificates=transport.client_ca or None,
        require_client_auth=bool(transport.client_ca),
    )
    mutual = " (mutual: client certificates required)" if transport.client_ca else ""
    log.info("TLS on %s%s", address, mutual)
    return server.add_secure_port(address, credentials)


class QueryLatency(NoOpHistogram):
    """What the RPC timing interceptor records: every call to the metrics (when on), the
    queries' (unary reads of the portfolio service) to the query latency threshold."""

    def __init__(self, thresholds: HealthThresholds, metrics: Metrics | None) -> None:
        super().__init__("rpc.server.call.duration")
        self._answered = thresholds.answered if thresholds.query_limit else None
        self._metrics = metrics.rpc_duration if metrics is not None else None
        self._queries: dict[object, bool] = {}

    def record(
        self,
        amount: float,
        attributes: Attributes = None,
        context: object = None,
    ) -> None:
        if self._metrics is not None:
            self._metrics.record(amount, attributes)
        if attributes is None:
            return
        method = attributes.get("rpc.method")
        query = self._queries.get(method)
        if query is None:
            service, _, name = str(method).rpartition("/")
            query = self._queries[method] = service == SERVICE_NAME and name.startswith(
                ("Get", "List", "Query")
            )
        if query and self._answered is not None:
            self._answered(amount)


def _both(
    metrics: Callable[[int, float, Sequence[float]], None], thresholds: HealthThresholds
) -> Callable[[int, float, Sequence[float]], None]:
    def committed(size: int, append_seconds: float, admitted_at: Sequence[float]) -> None:
        metrics(size, append_seconds, admitted_at)
        thresholds.committed(size, append_seconds, admitted_at)

    return committed


def _broker(config: ServiceConfig) -> Broker | None:
    """The broker `config.broker` names, not connected yet."""
    if config.broker != "ib":
        return None  # "paper" needs the service: built with it
    from server.broker.ib import IbBroker
    from tws.connection import IbConnection, quiet_ib_async
    from tws.contracts import ContractMap, ContractMapError

    quiet_ib_async(logging.getLevelName(config.log_level.upper()))
    connection = IbConnection(
        config.ib_host,
        config.ib_port,
        config.ib_client_id,
        readonly=True,
        connect_timeout=config.ib_connect_timeout,
    )
    try:
        contracts = ContractMap.load(config.contract_map) if config.contract_map else None
    except ContractMapError as error:  # main's one clear line and exit 1
        raise RuntimeError(str(error)) from None
    return IbBroker(connection, contracts)


async def _housekeeping(
    service: PortfolioService[EncodedUpdate],
    trace_ttl: float,
    broker: Broker | None,
    set_health: Callable[[str, bool], None],
) -> None:
    """Expires traces and reports the broker connection on health (checked every half
    second; the adapter logs the transitions). An object store's writer lease renews itself
    from a thread of its own."""
    period = min(max(trace_ttl / 10, 0.1), 60.0)
    loop = asyncio.get_running_loop()
    next_expiry = loop.time() + period
    broker_up: bool | None = None
    while True:
        await asyncio.sleep(min(period, 0.5) if broker is not None else period)
        if broker is not None and broker.connected != broker_up:
            broker_up = broker.connected
            set_health(BROKER_HEALTH, broker_up)
        if service.end_books_alert():  # the alert has run its time
            set_health(BOOKS_HEALTH, True)
        if loop.time() < next_expiry:
            continue
        next_expiry = loop.time() + period
        service.expire_traces()


async def _watch_views(writer: ViewsProcess) -> None:
    """Restarts the views writer if it ended between writes (a write finds it too)."""
    while True:
        await asyncio.sleep(VIEWS_CHECK_SECONDS)
        await asyncio.to_thread(writer.check)


VIEWS_CHECK_SECONDS = 1.0
VIEWS_STOP_SECONDS = 2.0  # the views writer's own stop, once the last write is done
STOP_MARGIN_SECONDS = 5.0  # beyond the grace: committing what is pending, the last views
# Kept at a stop for what follows the views' last write (the writer's stop, the executors,
# the journal's last copy when the store closes): a write still under way then is given up.
STOP_RESERVE_SECONDS = VIEWS_STOP_SECONDS + CLOSE_COPY_SECONDS


def _within(seconds: float | None, time_left: Callable[[], float] | None) -> float | None:
    """`seconds` (None: no limit), no more than what the stop's limit leaves after its
    reserve (none without a limit)."""
    if time_left is None:
        return seconds
    left = max(0.0, time_left() - STOP_RESERVE_SECONDS)
    return left if seconds is None else min(seconds, left)


class StopDeadline:
    """The stop's time limit, kept by a thread, not by the event loop: a limit the loop keeps
    waits with it when something holds the loop (a trading day's close of a million rows held
    it for about a minute; stops took 273-321 s against a limit of 10 s). Started by the first
    signal, from the Python signal handler, which the main thread runs between bytecodes even
    while the loop is busy in one callback, or when the stop begins (a failed task); past the
    limit the process exits non-zero at once: everything acknowledged is in the journal, and
    the next start recovers it. A second signal a moment after the first exits at once too."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._started = threading.Lock()  # taken once, never waited on: safe in a handler
        self._timer: threading.Timer | None = None
        self._ends_at: float | None = None  # time.monotonic()
        self.first_signal_at: float | None = None

    def time_left(self) -> float:
        """Seconds before the process exits at the limit (the whole limit before it starts)."""
        if self._ends_at is None:
            return self.limit
        return max(0.0, self._ends_at - time.monotonic())

    def start(self) -> None:
        if not self._started.acquire(blocking=False):
            return
        self._ends_at = time.monotonic() + self.limit
        timer = threading.Timer(self.limit, self._expired)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _expired(self) -> None:
        _exit_now(f"shutdown did not finish within {self.limit:.1f}s", 1)

    def on_signal(self, signum: int, frame: object) -> None:
        """The Python-level handler (asyncio's own is told through its wakeup fd as before).
        A signal sent to the process group and to the process arrives twice at once: only a
        second one a moment later is someone insisting."""
        now = time.monotonic()
        if self.first_signal_at is None:
            self.first_signal_at = now
        elif now - self.first_signal_at > 1.0:
            _exit_now("second signal while stopping", 1)
        self.start()


async def serve(config: ServiceConfig) -> int:
    """Runs until SIGTERM or SIGINT (exit code 0), or until a background task fails (1); then
    shuts down gracefully, within the grace period plus a margin. Past that, or at a second
    signal, the process exits at once: the journal holds everything acknowledged."""
    running = await start_server(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = StopDeadline(config.grace_seconds + STOP_MARGIN_SECONDS)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
        # After asyncio's: its C-level handler still writes the wakeup fd the loop reads.
        signal.signal(signum, deadline.on_signal)
    # Said once a stop is handled: a supervisor may send SIGTERM the moment it reads this.
    log.info(
        "portfolio manager listening on %s:%d (store %s)",
        config.host,
        running.port,
        mask_secrets(running.store.uri),
    )
    signalled = asyncio.create_task(stopping.wait())
    failed = asyncio.create_task(running.supervision.failed.wait())
    await asyncio.wait((signalled, failed), return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    failed.cancel()
    code = 1 if running.supervision.failed.is_set() else 0
    stopping.set()
    deadline.start()
    log.info("shutting down (grace %.1fs)", config.grace_seconds)
    try:
        await running.stop(config.grace_seconds, deadline.time_left)
    finally:
        deadline.cancel()
    log.info("stopped at sequence %d", running.service.sequence)
    if code:
        log.critical("exiting non-zero: %s", running.supervision.cause)
    return code


def _exit_now(why: str, code: int) -> None:
    """Leaves without waiting for threads that may be stuck in a store call."""
    log.critical("%s: exiting now (exit code %d)", why, code)
    logging.shutdown()
    os._exit(code)


class SecretsMasked(logging.Filter):
    """Credentials in any line or traceback (an error text may quote the store URI) as `***`,
    whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
        return True


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    configure_logging(config.log_level, config.log_format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(SecretsMasked())
    try:
        return asyncio.run(serve(config))
    except (
        RuntimeError,
        StoreLocked,
        StoreUnusable,
        ReferenceFileError,
    ) as error:
        log.error("%s", mask_secrets(str(error)))
        return 1
