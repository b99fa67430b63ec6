"""The service as an operator runs it: health, reflection, one server per port, clean stops."""

import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.app import SERVICE_NAME
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server
from tests.service_process import run_service, start_service

ROOT = Path(__file__).resolve().parents[2]


def test_health_reports_serving(server_address):
    with grpc.insecure_channel(server_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(server_address):
    with grpc.insecure_channel(server_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (answer,) = stub.ServerReflectionInfo(iter([request]), timeout=5)
        names = {s.name for s in answer.list_services_response.service}
    assert {"portfolio.v1.PortfolioManager", "grpc.health.v1.Health"} <= names


def test_a_second_server_on_the_same_port_fails_loudly(server):
    with pytest.raises(RuntimeError, match="Failed to bind"):
        start_test_server(port=server.running.port)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_service_stops_gracefully_on_a_signal(signum, tmp_path):
    process, address = start_service("--store", f"lmdb://{tmp_path}/store")
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            assert acks(stub, pb_fill("BUY", 1, 1))[0].result == pb.EVENT_RESULT_ACCEPTED
        process.send_signal(signum)
        assert process.wait(timeout=20) == 0
        rest = process.stderr.read()
        assert "shutting down" in rest
        assert "stopped at sequence 1" in rest
    finally:
        process.kill()


def test_a_taken_port_makes_the_process_exit_non_zero(server, tmp_path):
    port = str(server.running.port)
    result = run_service("--port", port, "--store", f"lmdb://{tmp_path}/store", timeout=30)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr or "bind" in result.stderr.lower()


def test_a_contract_map_it_cannot_read_makes_the_process_exit_1_with_one_line(tmp_path):
    """ib_async and the contract map are loaded only for --broker ib; a bad map is still
    refused at the start, in one line naming the file."""
    contracts = tmp_path / "contracts.json"
    contracts.write_text("{not json")
    result = run_service(
        "--port", "0", "--store", "mem://", "--broker", "ib", "--contract-map", str(contracts),
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"contract map {contracts}" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
