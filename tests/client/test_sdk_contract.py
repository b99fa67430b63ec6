"""The SDK against the contract itself: every RPC and Query branch of the service descriptor has
an SDK method on both clients (so a new RPC without one fails CI), the generated methods are
current, amounts that are not Decimals are refused naming the field, and retries happen for
the calls safe to send twice, and only for them."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
import pytest

from client import (
    Account,
    AccountKind,
    AsyncPortfolioClient,
    CashTransfer,
    CommissionAmendment,
    EventResult,
    Fill,
    FxRate,
    IngestIncomplete,
    Instrument,
    MarkPrice,
    OrderStatus,
    OrderStatusUpdate,
    PortfolioClient,
    PortfolioError,
    PositionQuery,
    ReleaseReservation,
    ReserveCash,
    RiskMetricsQuery,
    Side,
    codegen,
    retry,
    rpcs,
)
from client.retry import Backoff
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc

T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
SERVICE = pb.DESCRIPTOR.services_by_name["PortfolioManager"]


# ---------------------------------------------------------------------------------------------
# Coverage of the contract


def sdk_method(rpc: str) -> str | None:
    row = rpcs.BY_RPC.get(rpc)
    return row.method if row is not None else rpcs.HAND_WRITTEN.get(rpc)


def test_every_rpc_has_a_method_on_both_clients() -> None:
    missing = []
    for method in SERVICE.methods:
        name = sdk_method(method.name)
        blocking = getattr(PortfolioClient, name or "", None)
        asynchronous = getattr(AsyncPortfolioClient, name or "", None)
        if blocking is None or asynchronous is None:
            missing.append(method.name)
            continue
        assert inspect.iscoroutinefunction(asynchronous) or inspect.isasyncgenfunction(
            asynchronous
        ), f"AsyncPortfolioClient.{name} does not await"
    assert missing == [], f"RPCs without an SDK method: {missing}"


def paged_rpcs() -> set[str]:
    """The RPCs whose request takes a page token and whose answer gives the next one."""
    return {
        method.name
        for method in SERVICE.methods
        if "page_token" in method.input_type.fields_by_name
        and "next_page_token" in method.output_type.fields_by_name
    }


def test_every_paged_listing_has_an_iterator_on_both_clients() -> None:
    assert "ListPositions" in paged_rpcs()  # the descriptor is read as meant
    paged_rows = {row.rpc for row in rpcs.UNARY if row.paged is not None}
    assert paged_rows == paged_rpcs(), "a paged RPC without an iterator (rpcs.Paged)"
    for name in sorted(paged_rpcs()):
        row = rpcs.BY_RPC[name]
        assert row.paged is not None
        items = SERVICE.methods_by_name[name].output_type.fields_by_name.get(row.paged.items)
        assert items is not None and items.is_repeated, name
        one_page = inspect.signature(getattr(PortfolioClient, row.method)).parameters
        # The same arguments as the one-page method but the token, on both clients; an
        # iterator on the blocking client, an async one on the asyncio client.
        for client, kind in (
            (PortfolioClient, "Iterator"),
            (AsyncPortfolioClient, "AsyncIterator"),
        ):
            walker = getattr(client, row.paged.iterator, None)
            assert walker is not None, f"{client.__name__} has no {row.paged.iterator}"
            signature = inspect.signature(walker)
            assert list(signature.parameters) == [p for p in one_page if p != "page_token"]
            assert str(signature.return_annotation).startswith(f"{kind}["), name


def test_the_table_names_only_rpcs_the_service_has() -> None:
    rpcs_of_service = {method.name for method in SERVICE.methods}
    assert set(rpcs.BY_RPC) | set(rpcs.HAND_WRITTEN) == rpcs_of_service
    for row in rpcs.UNARY:
        method = SERVICE.methods_by_name[row.rpc]
        assert not (method.client_streaming or method.server_streaming), row.rpc


def test_every_query_branch_has_a_request_type() -> None:
    asked = {f.name for f in pb.PortfolioQuery.DESCRIPTOR.oneofs_by_name["query"].fields}
    answered = {f.name for f in pb.PortfolioResponse.DESCRIPTOR.oneofs_by_name["response"].fields}
    assert {row.query_branch for row in rpcs.UNARY if row.query_branch} == asked
    assert {row.answer_branch for row in rpcs.UNARY if row.answer_branch} == answered
    for row in rpcs.UNARY:
        if row.query_branch:
            # The branch carries the same request message as the RPC.
            branch = pb.PortfolioQuery.DESCRIPTOR.fields_by_name[row.query_branch]
            answer = pb.PortfolioResponse.DESCRIPTOR.fields_by_name[row.answer_branch]
            method = SERVICE.methods_by_name[row.rpc]
            assert branch.message_type is method.input_type, row.rpc
            assert answer.message_type in (method.output_type,), row.rpc


def test_generated_calls_are_current() -> None:
    assert codegen.TARGET.read_text() == codegen.render(), "run: python -m client.codegen"


def test_the_retry_policy_names_exactly_the_idempotent_calls() -> None:
    config = json.loads(retry.retry_service_config(rpcs.SERVICE, rpcs.IDEMPOTENT_RPCS))
    (method_config,) = config["methodConfig"]
    retried = {name["method"] for name in method_config["name"]}
    assert "Query" in retried and "GetPosition" in retried and "DefineAccount" in retried
    assert not retried & {"Ingest", "ReserveCash", "ReleaseReservation", "Reconcile"}
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


def test_a_callers_own_service_config_is_kept() -> None:
    own = ("grpc.service_config", "{}")
    options = retry.retry_channel_options([own], rpcs.SERVICE, rpcs.IDEMPOTENT_RPCS)
    assert [value for name, value in options if name == "grpc.service_config"] == ["{}"]


# ---------------------------------------------------------------------------------------------
# Floats refused


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Fill(fill_id="F1", account_id="A1", strategy_id="S1", instrument_id="AAPL",
                      side=Side.BUY, quantity=Decimal(1), price=0.1), "Fill.price"),
        (lambda: Fill(fill_id="F1", account_id="A1", strategy_id="S1", instrument_id="AAPL",
                      side=Side.BUY, quantity=1.0, price=Decimal(1)), "Fill.quantity"),
        (lambda: CashTransfer(transfer_id="T1", account_id="A1", currency="USD", amount=0.3),
         "CashTransfer.amount"),
        (lambda: CommissionAmendment(amendment_id="C1", account_id="A1", fill_id="F1",
                                     commission=1.5), "CommissionAmendment.commission"),
        (lambda: OrderStatusUpdate(update_id="U1", account_id="A1", instrument_id="AAPL",
                                   status=OrderStatus.FILLED, avg_fill_price=10.5),
         "OrderStatusUpdate.avg_fill_price"),
        (lambda: Instrument(instrument_id="ES", currency="USD", multiplier=50.0),
         "Instrument.multiplier"),
        (lambda: Account(account_id="P1", kind=AccountKind.PAPER, base_currency="USD",
                         initial_cash=1000.0), "Account.initial_cash"),
        (lambda: MarkPrice(instrument_id="AAPL", timestamp=T0, mark=190.1), "MarkPrice.mark"),
        (lambda: FxRate(base="EUR", quote="USD", rate=1.08, timestamp=T0), "FxRate.rate"),
        (lambda: ReserveCash(reservation_id="R1", account_id="A1", currency="USD", amount=1.5),
         "ReserveCash.amount"),
        (lambda: ReleaseReservation(release_id="L1", account_id="A1", reservation_id="R1",
                                    amount=0.5), "ReleaseReservation.amount"),
        (lambda: RiskMetricsQuery(account_id="A1", confidence_levels=[0.95]),
         "RiskMetricsQuery.confidence_levels"),
    ],
)  # fmt: skip
def test_a_float_amount_is_refused_naming_the_field(build: Any, field: str) -> None:
    with pytest.raises(TypeError, match=field.replace(".", r"\.")) as caught:
        build()
    assert "float" in str(caught.value)


def test_a_float_never_leaves_the_client() -> None:
    # Nothing listens on this address: the TypeError comes before any call is attempted.
    with (
        PortfolioClient("127.0.0.1:9", timeout=0.5) as pm,
        pytest.raises(TypeError, match="amount"),
    ):
        pm.reserve_cash(
            reservation_id="R1",
            account_id="A1",
            currency="USD",
            amount=2.5,  # type: ignore[arg-type]
        )


# ---------------------------------------------------------------------------------------------
# Retries: a scripted service answers UNAVAILABLE to the first call of each RPC


class FirstCallUnavailable(portfolio_pb2_grpc.PortfolioManagerServicer):
    """Fails each RPC's first call with UNAVAILABLE (as a restarting service does), then
    answers; counts the calls that reached it."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.applied: dict[str, int] = {}
        self._lock = threading.Lock()

    def _arrive(self, rpc: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[rpc] = self.calls.get(rpc, 0) + 1
            first = self.calls[rpc] == 1
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    def GetPosition(self, request: Any, context: grpc.ServicerContext) -> pb.Position:
        self._arrive("GetPosition", context)
        return pb.Position(account_id=request.account_id, instrument_id="AAPL", quantity="7")

    def Query(self, request: Any, context: grpc.ServicerContext) -> pb.PortfolioResponse:
        self._arrive("Query", context)
        return pb.PortfolioResponse(position=pb.Position(account_id="A1", quantity="7"))

    def DefineInstrument(self, request: Any, context: grpc.ServicerContext) -> pb.Instrument:
        self._arrive("DefineInstrument", context)
        return request.instrument

    def ReserveCash(self, request: Any, context: grpc.ServicerContext) -> pb.Reservation:
        self._arrive("ReserveCash", context)
        return pb.Reservation(reservation_id=request.reservation_id, amount=request.amount)

    def ReleaseReservation(self, request: Any, context: grpc.ServicerContext) -> pb.Reservation:
        self._arrive("ReleaseReservation", context)
        return pb.Reservation(reservation_id=request.reservation_id)

    def Reconcile(self, request: Any, context: grpc.ServicerContext) -> pb.Reconciliation:
        self._arrive("Reconcile", context)
        return pb.Reconciliation(account_id=request.account_id)

    def Ingest(
        self, request_iterator: Iterator[pb.IngestRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.IngestResponse]:
        self._arrive("Ingest", context)
        for request in request_iterator:
            acks = []
            for event in request.events:
                event_id = event.fill.fill_id
                with self._lock:
                    result = (
                        pb.EVENT_RESULT_DUPLICATE
                        if event_id in self.applied
                        else (pb.EVENT_RESULT_ACCEPTED)
                    )
                    self.applied.setdefault(event_id, len(self.applied) + 1)
                acks.append(pb.EventAck(event_id=event_id, sequence=self.applied[event_id],
                                        result=result))  # fmt: skip
            yield pb.IngestResponse(batch_id=request.batch_id, acks=acks)


@pytest.fixture
def flaky() -> Iterator[tuple[FirstCallUnavailable, str]]:
    service = FirstCallUnavailable()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    portfolio_pb2_grpc.add_PortfolioManagerServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        server.stop(0)


def call(kind: str, address: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """One call through a new client of `kind`."""
    if kind == "sync":
        with PortfolioClient(address, backoff=Backoff(initial=0.01)) as pm:
            return getattr(pm, method)(*args, **kwargs)

    async def run() -> Any:
        async with AsyncPortfolioClient(address, backoff=Backoff(initial=0.01)) as pm:
            return await getattr(pm, method)(*args, **kwargs)

    return asyncio.run(run())


KINDS = ["sync", "aio"]
FILL = Fill(
    fill_id="F1", account_id="A1", strategy_id="S1", instrument_id="AAPL", side=Side.BUY,
    quantity=Decimal(1), price=Decimal(10), timestamp=T0,
)  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("rpc", "method", "args"),
    [
        ("GetPosition", "get_position", ("A1", "AAPL")),
        ("Query", "query", (PositionQuery(account_id="A1", instrument_id="AAPL"),)),
        ("DefineInstrument", "define_instrument", (Instrument(instrument_id="X", currency="USD"),)),
    ],
)
def test_an_idempotent_call_is_retried_on_unavailable(
    flaky: tuple[FirstCallUnavailable, str], kind: str, rpc: str, method: str, args: tuple[Any]
) -> None:
    service, address = flaky
    answer = call(kind, address, method, *args)
    assert answer is not None
    assert service.calls[rpc] == 2  # the first failed, the retry answered


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("rpc", "method", "kwargs"),
    [
        ("ReserveCash", "reserve_cash",
         {"reservation_id": "R1", "account_id": "A1", "currency": "USD", "amount": Decimal(5)}),
        ("ReleaseReservation", "release_reservation",
         {"release_id": "L1", "account_id": "A1", "reservation_id": "R1"}),
        ("Reconcile", "reconcile", {"account_id": "A1"}),
    ],
)  # fmt: skip
def test_a_call_that_changes_state_is_not_retried(
    flaky: tuple[FirstCallUnavailable, str], kind: str, rpc: str, method: str, kwargs: Any
) -> None:
    service, address = flaky
    with pytest.raises(PortfolioError) as caught:
        call(kind, address, method, **kwargs)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert service.calls[rpc] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_ingest_is_not_retried_by_the_channel(
    flaky: tuple[FirstCallUnavailable, str], kind: str
) -> None:
    service, address = flaky
    with pytest.raises(IngestIncomplete) as caught:
        call(kind, address, "ingest", [FILL], max_attempts=1)
    assert caught.value.unacked == [FILL]
    assert service.calls["Ingest"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_ingest_resumes_once_and_books_the_event_once(
    flaky: tuple[FirstCallUnavailable, str], kind: str
) -> None:
    service, address = flaky
    (ack,) = call(kind, address, "ingest", [FILL])
    assert (ack.event_id, ack.result, ack.sequence) == ("F1", EventResult.ACCEPTED, 1)
    assert service.calls["Ingest"] == 2  # its own resume, not a channel retry on top
    assert service.applied == {"F1": 1}
