"""Requests that are not the message their method expects: answered INVALID_ARGUMENT saying what
was wrong, and logged at most once per client per interval.

grpc parses a request before any servicer code runs. When the parser raises, a unary call ends
UNKNOWN with "Unexpected <class 'DecodeError'>" and grpc logs a traceback; in a stream the
servicer meets the parser's exception in its read loop. Either way the client learns nothing it
can fix and one client can fill the log. The guard here wraps every method's deserializer, so
that a parse failure becomes a `MalformedRequest` value instead of an exception inside grpc, and
every method's behaviour, so that the value becomes the status: before the behaviour runs for a
unary request; for a stream, raised from the request iterator at the first bad message, so what
the servicer answered before it stands.

The parser (upb) says only "Error parsing message"; to say what was wrong, the bytes of a
refused request are walked once more here (bounded), naming the field and the fault.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from server.api.errors import ApiError
from server.api.handlers import HandlerRewrite, behaviour_of, rebuilt
from server.api.wire import FieldViolation
from server.log_limit import LogLimiter

if TYPE_CHECKING:
    from server.api.handlers import Handler

    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger("portfolio.api")

LOG_INTERVAL_SECONDS = 10.0
MAX_DEPTH = 100  # upb's own limit on nested messages
MAX_FIELDS_WALKED = 10_000  # beyond this the reason is the parser's own words


class MalformedRequest(ApiError):
    """A request (or one message of a request stream) that is not the message its method
    takes. Returned, not raised, by a guarded deserializer; raised into a stream's reader."""

    answered_by_guard = True  # the servicer lets it through, to be logged (limited) here

    def __init__(
        self,
        type_name: str,
        fault: str,
        violation: FieldViolation | None = None,
        position: int = 0,
    ) -> None:
        what = f"message {position} of the stream" if position else "request"
        super().__init__(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{what} is not a valid {type_name}: {fault}",
            [violation] if violation else [],
        )
        self.type_name = type_name
        self.fault = fault
        self.violation = violation

    def in_stream(self, position: int) -> MalformedRequest:
        """The same fault, said of the `position`-th message of a request stream."""
        return MalformedRequest(self.type_name, self.fault, self.violation, position)


class MalformedRequestGuard(HandlerRewrite):
    """Installed once on the server, it guards every method of every service on it."""

    def __init__(self, log_interval: float = LOG_INTERVAL_SECONDS) -> None:
        super().__init__()
        self.limiter = LogLimiter(log, log_interval)

    def rewrite(self, method: str, handler: Handler) -> Handler:
        """`handler` with a deserializer that does not raise and a behaviour that answers its
        `MalformedRequest`; unchanged if it has no deserializer or runs synchronously."""
        parse = handler.request_deserializer
        behaviour = behaviour_of(handler)
        if parse is None or behaviour is None:
            return handler
        guard = self._guard_stream if handler.request_streaming else self._guard_unary
        wrapped = guard(method, behaviour)
        if wrapped is None:
            return handler
        tolerant = _tolerant(parse, _input_type(parse, method))
        return rebuilt(handler, wrapped, tolerant, handler.response_serializer)

    def _guard_unary(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any] | None:
        """Answers a malformed request before `behaviour` sees it."""
        if inspect.isasyncgenfunction(behaviour):

            async def streaming(request: Any, context: Context) -> AsyncIterator[Any]:
                if isinstance(request, MalformedRequest):
                    await self.refuse(request, method, context)
                async for response in behaviour(request, context):
                    yield response

            return streaming
        if inspect.iscoroutinefunction(behaviour):

            async def unary(request: Any, context: Context) -> Any:
                if isinstance(request, MalformedRequest):
                    await self.refuse(request, method, context)
                return await behaviour(request, context)

            return unary
        return None

    def _guard_stream(
        self, method: str, behaviour: Callable[..., Any]
    ) -> Callable[..., Any] | None:
        """Ends the stream at its first malformed message: the request iterator raises it, and
        it is answered when it comes out of `behaviour` (or when `behaviour` ends, if it swallowed
        the error)."""
        if inspect.isasyncgenfunction(behaviour):

            async def streaming(
                requests: AsyncIterator[Any], context: Context
            ) -> AsyncIterator[Any]:
                reader = _Reader(requests)
                try:
                    async for response in behaviour(reader.messages(), context):
                        yield response
                except MalformedRequest as malformed:
                    await self.refuse(malformed, method, context)
                if reader.malformed is not None:
                    await self.refuse(reader.malformed, method, context)

            return streaming
        if inspect.iscoroutinefunction(behaviour):

            async def unary(requests: AsyncIterator[Any], context: Context) -> Any:
                reader = _Reader(requests)
                try:
                    response = await behaviour(reader.messages(), context)
                except MalformedRequest as malformed:
                    await self.refuse(malformed, method, context)
                if reader.malformed is not None:
                    await self.refuse(reader.malformed, method, context)
                return response

            return unary
        return None

    async def refuse(self, malformed: MalformedRequest, method: str, context: Context) -> NoReturn:
        """Logs (limited per client) and ends the call with INVALID_ARGUMENT."""
        peer = context.peer()
        self.limiter.log(
            logging.WARNING,
            _client_of(peer),
            "malformed request from %s to %s: %s",
            peer,
            method,
            malformed.message,
        )
        await context.abort_with_status(malformed.to_status())


class _Reader:
    """A request stream that raises its first malformed message, and remembers it."""

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self._requests = requests
        self.malformed: MalformedRequest | None = None

    async def messages(self) -> AsyncIterator[Any]:
        number = 0
        async for request in self._requests:
            number += 1
            if isinstance(request, MalformedRequest):
                self.malformed = request.in_stream(number)
                raise self.malformed
            yield request


def _client_of(peer: str) -> str:
    """The client's address without its port: a client opening a connection per request is
    still one client."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return f"{kind}:{address.rpartition(':')[0]}"
    return peer


def _input_type(parse: Callable[[bytes], Any], method: str) -> Descriptor | None:
    """The message type a deserializer parses: the class of a generated `FromString`, else
    the method's input type in the default descriptor pool."""
    owner = getattr(parse, "__self__", None)
    found = getattr(owner, "DESCRIPTOR", None)
    if isinstance(found, Descriptor):
        return found
    service, _, name = method.strip("/").rpartition("/")
    try:
        pool = descriptor_pool.Default()  # type: ignore[no-untyped-call]
        input_type: Descriptor = pool.FindServiceByName(service).FindMethodByName(name).input_type
    except (KeyError, AttributeError):
        return None
    return input_type


def _tolerant(
    parse: Callable[[bytes], Any], message_type: Descriptor | None
) -> Callable[[bytes], Any]:
    type_name = message_type.full_name if message_type is not None else "request message"

    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except Exception as error:  # any parse failure is the client's; it is answered
            fault = _problem(message_type, raw) if message_type is not None else None
            if fault is None:
                return MalformedRequest(type_name, str(error) or type(error).__name__)
            violation = FieldViolation(fault.field, fault.reason) if fault.field else None
            return MalformedRequest(type_name, _say(fault), violation)

    return deserialize


def describe_malformed(message_type: Descriptor, raw: bytes) -> str:
    """What is wrong with `raw` as a `message_type`, as a client is told it ("" if the walk
    finds nothing wrong)."""
    fault = _problem(message_type, raw)
    return _say(fault) if fault is not None else ""


def _say(fault: _Fault) -> str:
    if not fault.field:
        return fault.reason
    if fault.number and not fault.field.rpartition(".")[2].startswith("field "):
        return f"{fault.field} (field {fault.number}): {fault.reason}"
    return f"{fault.field}: {fault.reason}"


# -- the wire format, walked to name the first fault ------------------------------------------

_VARINT, _FIXED64, _LENGTH_DELIMITED, _START_GROUP, _END_GROUP, _FIXED32 = range(6)


class _Fault(Exception):
    def __init__(self, field: str, reason: str, number: int = 0) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.number = number


class _TooLong(Exception):
    """The walk gave up: the request is too long to be worth finishing it."""


class _Walk:
    """Reads the wire format in Python only where the parser failed: each sub-message is first
    given to the parser (C), and walked only if it fails there, so a refused request costs
    about one more parse plus a Python step per field of the messages on the faulty path."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.fields_left = MAX_FIELDS_WALKED

    def message(
        self, message_type: Descriptor | None, at: int, end: int, path: str, depth: int
    ) -> tuple[int, int]:
        """Walks fields from `at` up to `end`; returns where it stopped and the field number
        of the end-group tag that stopped it (0 when it reached `end`). Raises _Fault at the
        first fault."""
        if depth > MAX_DEPTH:
            raise _Fault(path, f"messages nested deeper than {MAX_DEPTH} levels")
        fields = _fields(message_type) if message_type is not None else {}
        raw = self.raw
        seen: dict[int, int] = {}
        while at < end:
            self.fields_left -= 1
            if self.fields_left < 0:
                raise _TooLong
            tag_at = at
            if raw[at] < 0x80:
                tag, at = raw[at], at + 1
            else:
                tag, at = self._varint(at, end, path, 0, "a field tag")
            number, wire_type = tag >> 3, tag & 7
            if number == 0:
                raise _Fault(path, f"field number 0 at byte {tag_at} (not protobuf data?)")
            if wire_type > _FIXED32:
                raise _Fault(
                    path,
                    f"wire type {wire_type} at byte {tag_at} is not a protobuf wire type "
                    "(not protobuf data?)",
                )
            if wire_type == _END_GROUP:
                return at, number
            field = fields.get(number)
            index = seen[number] = seen.get(number, -1) + 1
            if wire_type == _VARINT:
                if at < end and raw[at] < 0x80:
                    at += 1
                else:
                    _, at = self._varint(
                        at, end, _where(path, field, number, index), number, "a value"
                    )
            elif wire_type in (_FIXED64, _FIXED32):
                size = 8 if wire_type == _FIXED64 else 4
                if end - at < size:
                    left = f"{end - at} left before the end of the message"
                    where = _where(path, field, number, index)
                    raise _Fault(where, f"{size} bytes needed, {left}", number)
                at += size
            elif wire_type == _LENGTH_DELIMITED:
                length, at = self._varint(
                    at, end, _where(path, field, number, index), number, "a length"
                )
                if length > end - at:
                    left = f"{end - at} left before the end of the message"
                    where = _where(path, field, number, index)
                    raise _Fault(where, f"{length} bytes announced, {left}", number)
                if field is not None:
                    self._value(field, at, at + length, path, index, depth)
                at += length
            else:  # a group: only unknown fields can be groups in proto3
                where = _where(path, field, number, index)
                at, stopped_by = self.message(None, at, end, where, depth + 1)
                if stopped_by != number:
                    raise _Fault(where, "a group without its end", number)
        return at, 0

    def _varint(self, at: int, end: int, field: str, number: int, what: str) -> tuple[int, int]:
        value = shift = 0
        for position in range(at, min(end, at + 10)):
            byte = self.raw[position]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, position + 1
        if end - at >= 10:
            raise _Fault(field, f"{what} at byte {at} is longer than 10 bytes", number)
        raise _Fault(field, f"the message ends inside a varint ({what} at byte {at})", number)

    def _value(self, field: _Field, at: int, end: int, path: str, index: int, depth: int) -> None:
        if field.is_string:
            try:
                self.raw[at:end].decode("utf-8")
            except UnicodeDecodeError as bad:
                reason = (
                    f"invalid UTF-8 (0x{self.raw[at + bad.start]:02x} at byte {bad.start} of "
                    "the string); string fields hold UTF-8 text"
                )
                raise _Fault(
                    _where(path, field, field.number, index), reason, field.number
                ) from None
        elif field.message_type is not None:
            try:
                field.parse(self.raw[at:end])
                return
            except Exception:  # walked below to say why
                pass
            where = _where(path, field, field.number, index)
            _, stopped_by = self.message(field.message_type, at, end, where, depth + 1)
            if stopped_by:
                raise _Fault(where, f"an end-group tag (field {stopped_by}) without its group")


@dataclass(frozen=True, slots=True)
class _Field:
    number: int
    name: str
    is_repeated: bool
    is_string: bool
    message_type: Descriptor | None
    parse: Callable[[bytes], object]


@functools.cache
def _fields(message_type: Descriptor) -> dict[int, _Field]:
    """A message type's fields as the walk needs them, read from the descriptor once."""
    fields = {}
    for field in message_type.fields:
        inner = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
        parse = message_factory.GetMessageClass(inner).FromString if inner else bytes
        fields[field.number] = _Field(
            field.number,
            field.name,
            field.is_repeated,
            field.type == FieldDescriptor.TYPE_STRING,
            inner,
            parse,
        )
    return fields


def _where(path: str, field: _Field | None, number: int, index: int) -> str:
    if field is None:
        name = f"field {number}"
    else:
        name = f"{field.name}[{index}]" if field.is_repeated else field.name
    return f"{path}.{name}" if path else name


def _problem(message_type: Descriptor | None, raw: bytes) -> _Fault | None:
    """The first fault in `raw` as a `message_type`, if the walk finds one."""
    try:
        _, stopped_by = _Walk(raw).message(message_type, 0, len(raw), "", 0)
    except _Fault as fault:
        return fault
    except _TooLong:
        return None
    if stopped_by:
        return _Fault("", f"an end-group tag (field {stopped_by}) without its group")
    return None
