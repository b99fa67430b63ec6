"""Bytes that are not the request a method expects: every RPC answers INVALID_ARGUMENT saying
what was wrong, the service goes on serving, and a flood of them from one client costs the log
a line or two, not one traceback each."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2

from portfolio.v1 import portfolio_pb2 as pb
from server.api.malformed import MalformedRequestGuard, describe_malformed
from server.log_limit import LogLimiter
from tests.api.protocol import acks, field_violations, pb_fill

SERVICE = pb.DESCRIPTOR.services_by_name["PortfolioManager"]
GARBAGE = b"GET / HTTP/1.1\r\nHost: portfolio\r\n\r\n"


def _key(tag: int) -> bytes:
    """A varint; every tag and length used here is below 2^14."""
    return bytes([tag | 0x80, tag >> 7]) if tag >= 0x80 else bytes([tag])


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number << 3 | 2) + _key(len(payload)) + payload


def _string_path(message: Descriptor, seen: tuple[str, ...] = ()) -> list[FieldDescriptor]:
    """The first string field of a request, reached through message fields if need be."""
    for field in message.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return [field]
        if field.type == FieldDescriptor.TYPE_MESSAGE and message.full_name not in seen:
            inner = _string_path(field.message_type, (*seen, message.full_name))
            if inner:
                return [field, *inner]
    return []


def _with_string(path: list[FieldDescriptor], value: bytes) -> bytes:
    """A request whose string field at `path` holds `value` as raw bytes on the wire."""
    payload = value
    for field in reversed(path):
        payload = _length_delimited(field.number, payload)
    return payload


def _cases() -> Iterator[object]:
    for method in SERVICE.methods:
        path = _string_path(method.input_type)
        if path:
            whole = _with_string(path, b"A1-account-and-more")
            truncated = whole[:-6]
            yield pytest.param(
                method,
                "invalid UTF-8",
                _with_string(path, b"A1\xc3\x28"),
                "UTF-8",
                id=f"{method.name}-utf8",
            )
        else:
            truncated = _length_delimited(1, b"twenty bytes of data")[:-6]
        yield pytest.param(method, "garbage", GARBAGE, "wire type", id=f"{method.name}-garbage")
        yield pytest.param(method, "truncated", truncated, "end", id=f"{method.name}-truncated")


def _call_raw(channel: grpc.Channel, method: MethodDescriptor, payload: bytes) -> None:
    """Sends `payload` as the request bytes of `method` (identity serializers), reads the whole
    answer."""
    name = f"/{method.containing_service.full_name}/{method.name}"
    if method.client_streaming and method.server_streaming:
        list(channel.stream_stream(name)(iter([payload]), timeout=10))
    elif method.client_streaming:
        channel.stream_unary(name)(iter([payload]), timeout=10)
    elif method.server_streaming:
        list(channel.unary_stream(name)(payload, timeout=10))
    else:
        channel.unary_unary(name)(payload, timeout=10)


def test_every_rpc_has_malformed_cases():
    names = {case.values[0].name for case in _cases()}  # type: ignore[attr-defined]
    assert names == {method.name for method in SERVICE.methods}


@pytest.mark.parametrize(("method", "kind", "payload", "says"), list(_cases()))
def test_a_malformed_request_is_invalid_argument_and_says_what_was_wrong(
    server_address, stub, method, kind, payload, says
):
    with grpc.insecure_channel(server_address) as channel, pytest.raises(grpc.RpcError) as raised:
        _call_raw(channel, method, payload)
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (kind, error.details())
    details = error.details()
    assert f"not a valid {method.input_type.full_name}" in details
    assert says in details
    if kind == "invalid UTF-8":
        assert _string_path(method.input_type)[-1].name in details
        assert field_violations(error)  # a google.rpc.BadRequest names the field
    # the service goes on serving
    assert acks(stub, pb_fill("BUY", 1, 10))[0].result == pb.EVENT_RESULT_ACCEPTED


def test_a_malformed_message_ends_an_ingest_stream_after_the_acks_before_it(server_address, stub):
    good = pb.IngestRequest(batch_id="good", events=[pb_fill("BUY", 5, 10)])
    bad = pb.IngestRequest(batch_id="bad", events=[pb_fill("BUY", 7, 10)]).SerializeToString()
    with grpc.insecure_channel(server_address) as channel:
        call = channel.stream_stream("/portfolio.v1.PortfolioManager/Ingest")(
            iter([good.SerializeToString(), bad[:-3], good.SerializeToString()]), timeout=10
        )
        answers = []
        with pytest.raises(grpc.RpcError) as raised:
            answers.extend(pb.IngestResponse.FromString(raw) for raw in call)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "message 2 of the stream" in raised.value.details()
    assert [(a.batch_id, a.acks[0].result) for a in answers] == [("good", pb.EVENT_RESULT_ACCEPTED)]
    position = stub.GetPosition(pb.GetPositionRequest(account_id="A1", instrument_id="AAPL"))
    assert (
        position.quantity == "5"
    )  # the acked fill stands, the one after the bad message never came


def test_other_services_are_guarded_too(server_address):
    with grpc.insecure_channel(server_address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        with pytest.raises(grpc.RpcError) as raised:
            check(GARBAGE, timeout=5)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "grpc.health.v1.HealthCheckRequest" in raised.value.details()
        answer = health_pb2.HealthCheckResponse.FromString(
            check(health_pb2.HealthCheckRequest().SerializeToString(), timeout=5)
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_flood_of_malformed_requests_from_one_client_logs_a_line_not_a_flood(
    server_address, stub, caplog
):
    caplog.set_level(logging.INFO)
    by_name = {method.name: method for method in SERVICE.methods}
    with grpc.insecure_channel(server_address) as channel:
        for number in range(1000):
            method = by_name["Ingest" if number % 10 == 0 else "GetPosition"]
            with pytest.raises(grpc.RpcError) as raised:
                _call_raw(channel, method, GARBAGE)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert acks(stub, pb_fill("BUY", 1, 10))[0].result == pb.EVENT_RESULT_ACCEPTED
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(noisy) <= 3, [r.getMessage() for r in noisy]
    assert not any(r.exc_info for r in caplog.records)
    first = noisy[0].getMessage()
    assert "127.0.0.1" in first
    assert "malformed" in first


def test_a_fault_deep_in_a_large_batch_is_found_and_named():
    events = [pb_fill("BUY", 1, 10, account="A1") for _ in range(1000)]
    events[700].fill.account_id = "ZZBADZZ"
    raw = pb.IngestRequest(batch_id="big", events=events).SerializeToString()
    raw = raw.replace(b"ZZBADZZ", b"ZZ\xc3ZZZZ")
    assert describe_malformed(pb.IngestRequest.DESCRIPTOR, raw).startswith(
        "events[700].fill.account_id (field 2): invalid UTF-8 (0xc3 at byte 2 of the string)"
    )


@pytest.mark.parametrize(
    ("message", "raw", "says"),
    [
        (pb.IngestRequest, b"\x0a\x05ab", "batch_id (field 1): 5 bytes announced, 2 left"),
        (pb.IngestRequest, b"\x0a\x02\xff\xfe", "batch_id (field 1): invalid UTF-8"),
        (pb.IngestRequest, b"\x00", "field number 0"),
        (pb.IngestRequest, b"\x0f", "wire type 7"),
        (pb.IngestRequest, b"\x10\xff\xff", "ends inside a varint"),
        (
            pb.IngestRequest,
            _length_delimited(2, b"")
            + _length_delimited(2, _length_delimited(1, _length_delimited(1, b"\xc3"))),
            "events[1].fill.fill_id (field 1): invalid UTF-8",
        ),
    ],
)
def test_the_reason_names_the_field_and_what_is_wrong_with_it(message, raw, says):
    with pytest.raises(Exception):  # noqa: B017, PT011 - the parser refuses it
        message.FromString(raw)
    assert says in describe_malformed(message.DESCRIPTOR, raw)


# -- the limiter behind those lines ------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limiter(caplog, **options) -> tuple[LogLimiter, _Clock]:
    caplog.set_level(logging.INFO, logger="test.limited")
    clock = _Clock()
    return LogLimiter(logging.getLogger("test.limited"), 10.0, clock=clock, **options), clock


def test_one_line_per_key_per_interval_and_the_next_says_how_many_were_held(caplog):
    limiter, clock = _limiter(caplog)
    assert limiter.log(logging.WARNING, "a", "bad %d", 1)
    assert not any(limiter.log(logging.WARNING, "a", "bad %d", n) for n in range(2, 40))
    assert limiter.log(logging.WARNING, "b", "bad from b")  # another key has its own window
    clock.now += 10
    assert limiter.log(logging.WARNING, "a", "bad %d", 40)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1",
        "bad from b",
        "bad 40 (38 more from a not logged since the last line)",
    ]


def test_lines_held_back_are_reported_when_their_window_is_swept(caplog):
    limiter, clock = _limiter(caplog)
    for n in range(5):
        limiter.log(logging.WARNING, "a", "bad %d", n)
    clock.now += 11
    limiter.log(logging.WARNING, "b", "bad from b")  # any line sweeps closed windows
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, "bad 0"),
        (logging.WARNING, "bad 4 (the last of 4 from a not logged since the line before)"),
        (logging.WARNING, "bad from b"),
    ]


def test_many_keys_at_once_share_one_window_past_the_limit(caplog):
    limiter, _ = _limiter(caplog, max_keys=3)
    logged = [limiter.log(logging.WARNING, f"client-{n}", "bad from %d", n) for n in range(100)]
    assert logged.count(True) == 4  # three clients and "other sources"
    assert len(limiter._windows) == 4


# -- the guard on shapes of method the service does not use (yet) ----------------------------


async def _count_batches(requests, context):
    """Client-streaming: answers once, after the whole stream."""
    count = 0
    async for _ in requests:
        count += 1
    return pb.IngestResponse(batch_id=str(count))


async def _swallowing_echo(requests, context):
    """Bidi, and careless: it ends quietly on any error from its request stream."""
    try:
        async for request in requests:
            yield pb.IngestResponse(batch_id=request.batch_id)
    except Exception:  # what the guard must survive
        pass


async def _collect(call, into: list) -> None:
    async for answer in call:
        into.append(answer)


async def test_client_streaming_and_a_handler_that_swallows_the_error_are_answered_too():
    parse, serialize = pb.IngestRequest.FromString, pb.IngestResponse.SerializeToString
    handlers = {
        "Count": grpc.stream_unary_rpc_method_handler(_count_batches, parse, serialize),
        "Echo": grpc.stream_stream_rpc_method_handler(_swallowing_echo, parse, serialize),
    }
    server = grpc.aio.server(interceptors=[MalformedRequestGuard()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Shapes", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    good = pb.IngestRequest(batch_id="one").SerializeToString()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            count = channel.stream_unary("/test.Shapes/Count")
            assert (
                await count(iter([good, good]), timeout=5)
                == pb.IngestResponse(batch_id="2").SerializeToString()
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await count(iter([good, GARBAGE]), timeout=5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "message 2 of the stream" in raised.value.details()

            echo = channel.stream_stream("/test.Shapes/Echo")(iter([good, GARBAGE]), timeout=5)
            answers = []
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _collect(echo, answers)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert len(answers) == 1
    finally:
        await server.stop(None)
