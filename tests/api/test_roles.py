"""Authorization by role and account (`--auth-file`), through a real gRPC server: every caller
is identified by its bearer token, and each role x RPC x account gets the status it should."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from client.errors import PortfolioError
from client.sync import PortfolioClient
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.auth_config import token_hash
from tests.api.protocol import BASE_SECONDS, pb_fill
from tests.conftest import ServerThread, start_test_server

PRINCIPALS = {
    # name: (role, accounts)
    "relay": ("relay", ["A1"]),
    "reader": ("reader", ["A1"]),
    "risk": ("reader", "*"),
    "marks": ("marks", []),
    "operator": ("operator", ["A1"]),
}


def token_of(name: str) -> str:
    return f"secret-token-of-{name}"


def write_auth_file(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "principals": [
                    {
                        "name": name,
                        "role": role,
                        "accounts": accounts,
                        "token_sha256": token_hash(token_of(name)),
                    }
                    for name, (role, accounts) in PRINCIPALS.items()
                ]
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    auth_file = write_auth_file(tmp_path_factory.mktemp("auth") / "principals.json")
    running = start_test_server(auth_file=str(auth_file))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def channel(guarded: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(guarded.address) as opened:
        yield opened


def metadata(name: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token_of(name)}"),) if name else ()


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def stamped_mark() -> pb.MarkBatch:
    mark = pb.MarkPrice(instrument_id="AAPL", mark="101")
    mark.timestamp.FromSeconds(BASE_SECONDS)
    return pb.MarkBatch(batch_id="m1", marks=[mark])


def call_rpc(stub: pb_grpc.PortfolioManagerStub, rpc: str, account: str, who: str | None):
    """The RPC's status for this caller (OK, or the error's code)."""
    md = metadata(who)
    calls: dict[str, Callable[[], object]] = {
        "Ingest": lambda: list(
            stub.Ingest(iter([_one_fill(account)]), timeout=10, metadata=md)
        ),
        "GetPosition": lambda: stub.GetPosition(
            pb.GetPositionRequest(account_id=account, strategy_id="S1", instrument_id="AAPL"),
            timeout=10, metadata=md,
        ),
        "GetPortfolioSummary": lambda: stub.GetPortfolioSummary(
            pb.GetPortfolioSummaryRequest(account_id=account), timeout=10, metadata=md
        ),
        "Query": lambda: stub.Query(
            pb.PortfolioQuery(get_balances=pb.GetBalancesRequest(account_id=account)),
            timeout=10, metadata=md,
        ),
        "ListAccounts": lambda: stub.ListAccounts(
            pb.ListAccountsRequest(), timeout=10, metadata=md
        ),
        "DefineAccount": lambda: stub.DefineAccount(
            pb.DefineAccountRequest(
                account=pb.Account(account_id=account, kind=pb.ACCOUNT_KIND_PAPER)
            ),
            timeout=10, metadata=md,
        ),
        "ReserveCash": lambda: stub.ReserveCash(
            pb.ReserveCashRequest(
                reservation_id=f"r-{who}-{account}", account_id=account, currency="USD",
                amount="1",
            ),
            timeout=10, metadata=md,
        ),
        "Reconcile": lambda: stub.Reconcile(
            pb.ReconcileRequest(account_id=account), timeout=10, metadata=md
        ),
        "StreamMarks": lambda: list(
            stub.StreamMarks(iter([stamped_mark()]), timeout=10, metadata=md)
        ),
        "SubscribeUpdates": lambda: _first_update(stub, account, md),
    }  # fmt: skip
    return code_of(calls[rpc])


def _one_fill(account: str) -> pb.IngestRequest:
    return pb.IngestRequest(batch_id="b", events=[pb_fill("BUY", 1, 100, account=account)])


def _first_update(stub: pb_grpc.PortfolioManagerStub, account: str, md: object) -> None:
    call = stub.SubscribeUpdates(
        pb.SubscribeUpdatesRequest(account_id=account), timeout=10, metadata=md
    )
    try:
        next(iter(call))  # a snapshot or a heartbeat (0.2 s in tests)
    finally:
        call.cancel()


ALLOWED = "allowed"  # the service's own answer (OK, NOT_FOUND, FAILED_PRECONDITION...)
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
ALL = ("relay", "reader", "risk", "marks", "operator")


def expected(who: str, rpc: str, account: str) -> object:
    role, accounts = PRINCIPALS[who]
    mine = accounts == "*" or account in accounts
    if rpc == "Ingest":
        return ALLOWED if role == "relay" else DENIED  # another account: its ack is REJECTED
    if rpc == "StreamMarks":
        return ALLOWED if role == "marks" else DENIED
    if rpc == "ListAccounts":
        return ALLOWED if role in ("reader", "operator") and accounts == "*" else DENIED
    if rpc in ("DefineAccount", "ReserveCash", "Reconcile"):
        return ALLOWED if role == "operator" and mine else DENIED
    # queries and subscriptions
    return ALLOWED if role in ("reader", "operator") and mine else DENIED


RPCS = (
    "Ingest", "GetPosition", "GetPortfolioSummary", "Query", "ListAccounts", "DefineAccount",
    "ReserveCash", "Reconcile", "StreamMarks", "SubscribeUpdates",
)  # fmt: skip
TABLE = [
    (who, rpc, account, expected(who, rpc, account))
    for rpc in RPCS
    for who in ALL
    for account in ("A1", "A2")
]


@pytest.mark.parametrize(("who", "rpc", "account", "status"), TABLE)
def test_each_role_may_call_what_its_role_and_accounts_allow(
    channel: grpc.Channel, who: str, rpc: str, account: str, status: object
) -> None:
    code = call_rpc(pb_grpc.PortfolioManagerStub(channel), rpc, account, who)
    if status is ALLOWED:
        assert code not in (DENIED, UNAUTHENTICATED), (who, rpc, account)
    else:
        assert code == status, (who, rpc, account)


@pytest.mark.parametrize("rpc", RPCS)
def test_a_call_without_credentials_or_with_an_unknown_token_is_unauthenticated(
    channel: grpc.Channel, rpc: str
) -> None:
    stub = pb_grpc.PortfolioManagerStub(channel)
    assert call_rpc(stub, rpc, "A1", None) == UNAUTHENTICATED
    assert call_rpc(stub, rpc, "A1", "nobody") == UNAUTHENTICATED  # a token nobody holds


def test_the_refusal_names_the_role_or_the_account_missing(channel: grpc.Channel) -> None:
    stub = pb_grpc.PortfolioManagerStub(channel)
    with pytest.raises(grpc.RpcError) as role_missing:
        stub.DefineAccount(
            pb.DefineAccountRequest(account=pb.Account(account_id="A1")),
            timeout=10, metadata=metadata("reader"),
        )  # fmt: skip
    assert role_missing.value.code() == DENIED
    assert "role reader" in role_missing.value.details()
    assert "needs role operator" in role_missing.value.details()
    with pytest.raises(grpc.RpcError) as account_missing:
        stub.GetPortfolioSummary(
            pb.GetPortfolioSummaryRequest(account_id="A2"), timeout=10, metadata=metadata("reader")
        )
    assert account_missing.value.code() == DENIED
    assert "'A2'" in account_missing.value.details()
    assert "its accounts: A1" in account_missing.value.details()
    with pytest.raises(grpc.RpcError) as every_account:
        stub.GetPortfolioSummary(
            pb.GetPortfolioSummaryRequest(), timeout=10, metadata=metadata("reader")
        )
    assert "every account" in every_account.value.details()


def test_a_relay_event_of_another_account_is_rejected_alone(channel: grpc.Channel) -> None:
    stub = pb_grpc.PortfolioManagerStub(channel)
    responses = list(
        stub.Ingest(
            iter(
                [
                    pb.IngestRequest(
                        batch_id="mixed",
                        events=[
                            pb_fill("BUY", 5, 100, account="A1", fill_id="mine"),
                            pb_fill("BUY", 5, 100, account="A2", fill_id="theirs"),
                        ],
                    ),
                    pb.IngestRequest(
                        batch_id="only-theirs",
                        events=[pb_fill("BUY", 1, 100, account="A2", fill_id="theirs-2")],
                    ),
                ]
            ),
            timeout=10,
            metadata=metadata("relay"),
        )
    )
    mine, theirs = responses[0].acks
    assert mine.result == pb.EVENT_RESULT_ACCEPTED
    assert theirs.result == pb.EVENT_RESULT_REJECTED
    assert theirs.code == pb.REJECT_CODE_FAILED_PRECONDITION
    assert theirs.event_id == "theirs"
    assert "events[1].fill.account_id" in theirs.reason
    assert "'relay'" in theirs.reason and "'A2'" in theirs.reason
    (only,) = responses[1].acks
    assert only.result == pb.EVENT_RESULT_REJECTED and not responses[1].batch_rejected_reason
    with pytest.raises(grpc.RpcError) as nothing_booked:
        stub.GetPosition(
            pb.GetPositionRequest(account_id="A2", strategy_id="S1", instrument_id="AAPL"),
            timeout=10, metadata=metadata("risk"),
        )  # fmt: skip
    assert nothing_booked.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_is_open_and_the_sdk_sends_its_token(guarded: ServerThread) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(guarded.address) as opened:
        answer = health_pb2_grpc.HealthStub(opened).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    with PortfolioClient(guarded.address, token=token_of("reader")) as client:
        assert client.get_portfolio_summary("A1") is not None
        with pytest.raises(PortfolioError) as denied:
            client.get_portfolio_summary("A2")
        assert denied.value.code == DENIED
    with PortfolioClient(guarded.address) as anonymous, pytest.raises(PortfolioError) as refused:
        anonymous.get_portfolio_summary("A1")
    assert refused.value.code == UNAUTHENTICATED
    assert "no credentials" in str(refused.value)


def test_a_query_is_checked_as_the_call_it_carries(channel: grpc.Channel) -> None:
    stub = pb_grpc.PortfolioManagerStub(channel)
    reader = metadata("reader")
    instrument = pb.PortfolioQuery(get_instrument=pb.GetInstrumentRequest(instrument_id="AAPL"))
    assert code_of(lambda: stub.Query(instrument, timeout=10, metadata=reader)) not in (
        DENIED,
        UNAUTHENTICATED,
    )
    theirs = pb.PortfolioQuery(
        get_position=pb.GetPositionRequest(account_id="A2", strategy_id="S1", instrument_id="X")
    )
    assert code_of(lambda: stub.Query(theirs, timeout=10, metadata=reader)) == DENIED
    trace = pb.PortfolioQuery(get_trace_position=pb.GetTracePositionRequest(trace_id="t"))
    assert code_of(lambda: stub.Query(trace, timeout=10, metadata=reader)) == DENIED  # needs *


def test_reflection_needs_a_known_principal(channel: grpc.Channel) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    def first(md: tuple[tuple[str, str], ...]) -> object:
        return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10, metadata=md)))

    assert code_of(lambda: first(())) == UNAUTHENTICATED
    assert code_of(lambda: first(metadata("marks"))) == grpc.StatusCode.OK


def test_a_refusal_is_logged_without_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_test_server(auth_file=str(write_auth_file(tmp_path / "principals.json")))
    try:
        with (
            caplog.at_level(logging.WARNING, logger="portfolio.api"),
            grpc.insecure_channel(running.address) as opened,
        ):
            stub = pb_grpc.PortfolioManagerStub(opened)
            forged = (("authorization", "Bearer forged-secret-value"),)
            assert (
                code_of(
                    lambda: stub.ListAccounts(pb.ListAccountsRequest(), timeout=10, metadata=forged)
                )
                == UNAUTHENTICATED
            )
    finally:
        running.stop()
    lines = [record.getMessage() for record in caplog.records if record.name == "portfolio.api"]
    assert any(
        "UNAUTHENTICATED /portfolio.v1.PortfolioManager/ListAccounts" in line for line in lines
    )
    assert not any("forged-secret-value" in line for line in lines)
