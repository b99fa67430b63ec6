"""Handler rewrites applied where services are added (server.api.handlers.RewritingRegistry):
a call goes through the same rewrites, in the same order, as with grpc interceptors, with no
interceptor run per call and no handler left to grpc's per-method registered calls."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from server.api.handlers import HandlerRewrite, RewritingRegistry, behaviour_of, rebuilt


class Recording(HandlerRewrite):
    """Notes `name>` before the behaviour and `<name` after it, for every call."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log, self.rewritten = name, log, 0

    def rewrite(self, method: str, handler: Any) -> Any:
        self.rewritten += 1
        behaviour = behaviour_of(handler)
        name, log = self.name, self.log

        async def unary(request: Any, context: Any) -> Any:
            log.append(f"{name}>{method.rsplit('/', 1)[-1]}")
            try:
                return await behaviour(request, context)  # type: ignore[misc]
            finally:
                log.append(f"<{name}")

        return rebuilt(handler, unary, handler.request_deserializer, handler.response_serializer)


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def _handlers() -> dict[str, Any]:
    return {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}


async def _calls(server: grpc.aio.Server) -> list[bytes]:
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            answers = [await channel.unary_unary(f"/test.{name}/Echo")(b"x") for name in "AB"]
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary("/test.A/Missing")(b"x")
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
            return answers
    finally:
        await server.stop(None)


async def test_a_call_goes_through_the_rewrites_as_through_interceptors_in_that_order() -> None:
    by_interceptors: list[str] = []
    server = grpc.aio.server(
        interceptors=[Recording("outer", by_interceptors), Recording("inner", by_interceptors)]
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.A", _handlers())])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.B", _handlers())])
    assert await _calls(server) == [b"x", b"x"]

    by_registry: list[str] = []
    rewrites = [Recording("outer", by_registry), Recording("inner", by_registry)]
    server = grpc.aio.server()
    registry = RewritingRegistry(server, rewrites).as_server()
    registry.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.A", _handlers())])
    registry.add_registered_method_handlers("test.B", _handlers())  # as generated code does
    assert await _calls(server) == [b"x", b"x"]

    assert by_registry == by_interceptors == [
        "outer>Echo", "inner>Echo", "<inner", "<outer",
        "outer>Echo", "inner>Echo", "<inner", "<outer",
    ]  # fmt: skip
    assert [rewrite.rewritten for rewrite in rewrites] == [2, 2]  # once per method


class Recorder:
    """What a registry hands the server."""

    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered.append(service)


def test_registered_methods_reach_the_server_as_generic_handlers() -> None:
    # grpc.aio hands every call over through an asyncio.wait on one task per registered
    # method: with none registered, a call does not pay for the service's 30 methods.
    recorder = Recorder()
    registry = RewritingRegistry(recorder, [])  # type: ignore[arg-type]
    registry.add_registered_method_handlers("test.B", _handlers())
    assert recorder.registered == []
    assert len(recorder.generic) == 1


def test_the_service_runs_no_interceptor_per_call(server_address, monkeypatch) -> None:
    calls: list[str] = []
    intercept = HandlerRewrite.intercept_service

    async def counted(self: HandlerRewrite, continuation: Any, details: Any) -> Any:
        calls.append(details.method)
        return await intercept(self, continuation, details)

    monkeypatch.setattr(HandlerRewrite, "intercept_service", counted)
    request = pb.GetPositionRequest(account_id="A1", instrument_id="AAPL")
    with grpc.insecure_channel(server_address) as channel:
        get = channel.unary_unary("/portfolio.v1.PortfolioManager/GetPosition")
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as raised:
                get(request.SerializeToString(), timeout=10)
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as raised:  # the guard still answers bad bytes
            get(b"\xff\xff", timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "is not a valid portfolio.v1.GetPositionRequest" in raised.value.details()
    assert calls == []
