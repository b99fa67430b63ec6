"""A trace back-filled hours after its legs were filled, through the gRPC API: it lives a TTL
from when the service received its latest leg, and expires then."""

from __future__ import annotations

import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server
from tests.polling import wait_for

HOUR = 3600


def backfilled_legs(trace_id: str = "arb-1") -> list[pb.ExecutionEvent]:
    """Two legs filled three hours ago, heard of only now (a relay catching up)."""
    filled = Timestamp()
    filled.FromSeconds(int(time.time()) - 3 * HOUR)
    return [
        pb_fill("BUY", 2, 100, instrument="BTC-USD", trace_id=trace_id, timestamp=filled),
        pb_fill("SELL", 2, 101, instrument="BTC-EUR", trace_id=trace_id, timestamp=filled),
    ]


def trace(stub: pb_grpc.PortfolioManagerStub, trace_id: str = "arb-1") -> pb.TracePosition:
    return stub.GetTracePosition(pb.GetTracePositionRequest(trace_id=trace_id))


def test_legs_back_filled_hours_later_do_not_expire_on_arrival(stub):
    received = time.time_ns()
    acks(stub, *backfilled_legs())
    found = trace(stub)
    assert [leg.instrument_id for leg in found.legs] == ["BTC-USD", "BTC-EUR"]
    expires = found.expires_at.ToNanoseconds()
    assert received + 300 * 10**9 <= expires <= time.time_ns() + 300 * 10**9  # the default TTL
    assert found.last_fill_at.ToSeconds() < time.time() - 2 * HOUR  # fill times unchanged


def test_a_back_filled_trace_expires_a_ttl_after_its_receipt():
    server = start_test_server(trace_ttl_seconds=1.0)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, *backfilled_legs())
            assert trace(stub).legs  # alive on arrival
            expires = trace(stub).expires_at.ToNanoseconds()

            def gone() -> bool:
                try:
                    trace(stub)
                except grpc.RpcError as error:
                    return error.code() == grpc.StatusCode.NOT_FOUND
                return False

            assert wait_for(gone, seconds=10)
            assert time.time_ns() >= expires
            traces = server.running.service.ledger.traces
            assert wait_for(lambda: len(traces) == 0, seconds=10)  # housekeeping dropped it
    finally:
        server.stop()


def test_a_new_leg_received_later_extends_the_trace_from_its_receipt(stub):
    trace_id = "arb-2"
    acks(stub, backfilled_legs(trace_id)[0])
    first = trace(stub, trace_id).expires_at.ToNanoseconds()
    time.sleep(0.05)
    acks(stub, backfilled_legs(trace_id)[1])  # filled at the same time, received later
    assert trace(stub, trace_id).expires_at.ToNanoseconds() > first
