"""Wiring: the one place that builds the domain, the application and the gRPC adapter."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.api.servicer import PortfolioManagerServicer
from server.api.wire import update_to_proto
from server.application.service import PortfolioChange, PortfolioService
from server.application.subscriptions import SubscriptionHub
from server.config import ServiceConfig, parse_args
from server.domain.ledger import Ledger

log = logging.getLogger("portfolio")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PortfolioManager"].full_name


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    service: PortfolioService[pb.PortfolioUpdate]
    health: health.aio.HealthServicer
    _housekeeping: asyncio.Task[None]

    async def stop(self, grace: float | None) -> None:
        """Stops taking calls, lets running ones finish for `grace` seconds, then ends."""
        await self.health.enter_graceful_shutdown()
        self._housekeeping.cancel()
        await self.server.stop(grace)


def build_service(config: ServiceConfig) -> PortfolioService[pb.PortfolioUpdate]:
    ledger = Ledger(precision=config.precision, trace_ttl_ns=int(config.trace_ttl_seconds * 1e9))
    hub: SubscriptionHub[PortfolioChange, pb.PortfolioUpdate] = SubscriptionHub(
        update_to_proto, config.replay_capacity, config.subscriber_queue, ledger.sequence
    )
    return PortfolioService(ledger, hub)


async def start_server(config: ServiceConfig) -> RunningServer:
    """Builds and starts the service; raises RuntimeError if the address cannot be bound."""
    service = build_service(config)
    server = grpc.aio.server(
        options=[
            # A second server on the same port must fail, not silently share it.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
        ]
    )
    servicer = PortfolioManagerServicer(
        service,
        max_batch_events=config.max_batch_events,
        heartbeat_seconds=config.heartbeat_seconds,
    )
    pb_grpc.add_PortfolioManagerServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(config.address)
    if not port:
        raise RuntimeError(f"cannot listen on {config.address}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    housekeeping = asyncio.create_task(_expire_traces(service, config.trace_ttl_seconds))
    return RunningServer(server, port, service, health_servicer, housekeeping)


async def _expire_traces(service: PortfolioService[pb.PortfolioUpdate], ttl: float) -> None:
    while True:
        await asyncio.sleep(min(max(ttl / 10, 0.1), 60.0))
        service.expire_traces()


async def serve(config: ServiceConfig) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    running = await start_server(config)
    log.info("portfolio manager listening on %s:%d", config.host, running.port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("shutting down (grace %.1fs)", config.grace_seconds)
    await running.stop(config.grace_seconds)
    log.info("stopped at sequence %d", running.service.sequence)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(config))
    except RuntimeError as error:
        log.error("%s", error)
        return 1
    return 0
