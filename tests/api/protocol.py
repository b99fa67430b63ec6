"""Builders for raw portfolio.v1 messages, so API tests read as trades."""

from __future__ import annotations

import itertools

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc

_ids = itertools.count(1)
BASE_SECONDS = 1_767_225_600  # 2026-01-01T00:00:00Z


def pb_fill(
    side: str,
    quantity: object,
    price: object,
    *,
    account: str = "A1",
    strategy: str = "S1",
    instrument: str = "AAPL",
    commission: object = "",
    fill_id: str | None = None,
    trace_id: str = "",
    **fields: object,
) -> pb.ExecutionEvent:
    number = next(_ids)
    message = pb.Fill(
        fill_id=fill_id if fill_id is not None else f"api-fill-{number}",
        account_id=account,
        strategy_id=strategy,
        instrument_id=instrument,
        side=pb.Side.Value(f"SIDE_{side}") if side else pb.SIDE_UNSPECIFIED,
        quantity=str(quantity),
        price=str(price),
        commission=str(commission),
        trace_id=trace_id,
        **fields,  # type: ignore[arg-type]
    )
    if "timestamp" not in fields:
        message.timestamp.FromSeconds(BASE_SECONDS + number)
    return pb.ExecutionEvent(fill=message)


def pb_status(update_id: str, status: str = "SUBMITTED", **fields: object) -> pb.ExecutionEvent:
    message = pb.OrderStatusUpdate(
        update_id=update_id,
        account_id=str(fields.pop("account_id", "A1")),
        order_ref=str(fields.pop("order_ref", "ord-1")),
        status=pb.OrderStatus.Value(f"ORDER_STATUS_{status}"),
        **fields,  # type: ignore[arg-type]
    )
    message.timestamp.FromSeconds(BASE_SECONDS)
    return pb.ExecutionEvent(status=message)


def ingest(
    stub: pb_grpc.PortfolioManagerStub, *batches: list[pb.ExecutionEvent]
) -> list[pb.IngestResponse]:
    requests = [pb.IngestRequest(batch_id=f"b{i}", events=b) for i, b in enumerate(batches)]
    return list(stub.Ingest(iter(requests), timeout=10))


def acks(stub: pb_grpc.PortfolioManagerStub, *events: pb.ExecutionEvent) -> list[pb.EventAck]:
    (response,) = ingest(stub, list(events))
    return list(response.acks)


def field_violations(error: grpc.RpcError) -> list[str]:
    """The fields named by a google.rpc.BadRequest in an error's rich status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields.extend(v.field for v in bad_request.field_violations)
    return fields
