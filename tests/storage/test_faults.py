"""A store that fails: acks stop, health says NOT_SERVING, unacked events are refused with
UNAVAILABLE, acknowledged state is kept, and the service resumes by itself.

The store is the real ArcticDB on LMDB; its journal appends are made to fail on demand (a
failing disk cannot be summoned and healed on cue on this machine)."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application.ports import Sequenced, StorageUnavailable
from server.storage.arctic import ArcticEventStore
from tests.api.protocol import acks, ingest, pb_fill
from tests.conftest import start_test_server


class FailingDisk(ArcticEventStore):
    broken = threading.Event()

    def append(self, group: list[Sequenced]) -> None:
        if self.broken.is_set():
            raise StorageUnavailable("MDB_MAP_FULL (simulated)")
        super().append(group)


def health(channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def wait_for(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def broken_server(tmp_path):
    FailingDisk.broken.clear()
    server = start_test_server(open_store=FailingDisk, store=f"lmdb://{tmp_path}/store")
    yield server
    FailingDisk.broken.clear()
    server.stop()


def test_a_failing_store_stops_acks_and_the_service_resumes_by_itself(broken_server):
    with grpc.insecure_channel(broken_server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        assert acks(stub, pb_fill("BUY", 10, 5, fill_id="kept"))[0].sequence == 1

        FailingDisk.broken.set()
        in_flight, refused = pb_fill("BUY", 1, 5), pb_fill("BUY", 1, 5)
        with pytest.raises(grpc.RpcError) as raised:
            ingest(stub, [in_flight])
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "store unavailable" in raised.value.details()
        wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING)
        # Nothing new is taken while the store is down, and what was acked is still served.
        with pytest.raises(grpc.RpcError) as raised:
            ingest(stub, [refused])
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        position = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
        assert position.quantity == "10"

        FailingDisk.broken.clear()
        wait_for(lambda: health(channel) == health_pb2.HealthCheckResponse.SERVING)
        # The relay resends what it has no ack for: the in-flight fill kept its sequence.
        again = acks(stub, in_flight, refused)
        assert [(a.result, a.sequence) for a in again] == [
            (pb.EVENT_RESULT_DUPLICATE, 2),
            (pb.EVENT_RESULT_ACCEPTED, 3),
        ]
        position = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
        assert position.quantity == "12"
