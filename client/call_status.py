"""The status a stream call really ended with, when a failed write hides it.

grpc.aio answers a write to a call the service has just ended with a locally made INTERNAL
status, which may replace the service's own (PERMISSION_DENIED, say): shared by every client
stream that writes while it reads (ingest, marks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import grpc

from client.errors import _FAILED_SEND_DETAILS, _is_failed_send

_STATUS_WAIT_SECONDS = 1.0
_STATUS_POLL_SECONDS = 0.002

T = TypeVar("T")


class EndedWith:
    """The status a call ended with, kept as it ends.

    A service that refuses the stream (PERMISSION_DENIED, UNAUTHENTICATED) ends it while batches
    are still being written. A write that fails because the call has ended makes grpc.aio put a
    locally made INTERNAL status on the call, over the service's (measured: about half the
    refusals of a 200-batch stream) or before it. Reported as is, a refusal would read as an outage
    (UNAVAILABLE): so the first real status is kept when the call ends, and a failed write is
    answered with it (or with the one that replaces the stand-in a moment later).
    """

    def __init__(self, call: grpc.aio.StreamStreamCall[Any, Any]) -> None:
        self._call = call
        self._status: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._ended)

    def _ended(self, call: grpc.aio.Call) -> None:
        if self._status is None:
            status = _settled_status(call)
            stand_in = (grpc.StatusCode.INTERNAL, _FAILED_SEND_DETAILS)
            if status is not None and (status.code(), status.details()) != stand_in:
                self._status = status

    async def instead_of(self, error: grpc.RpcError) -> grpc.RpcError:
        """`error`, or the service's status if `error` is the stand-in for a failed write."""
        if not isinstance(error, grpc.aio.AioRpcError) or not _is_failed_send(error):
            return error
        loop = asyncio.get_running_loop()
        remaining = self._call.time_remaining()
        wait = _STATUS_WAIT_SECONDS if remaining is None else min(_STATUS_WAIT_SECONDS, remaining)
        until = loop.time() + wait
        while self._status is None and loop.time() < until:
            await asyncio.sleep(_STATUS_POLL_SECONDS)
            self._ended(self._call)
        return error if self._status is None else self._status


def _settled_status(call: grpc.aio.Call) -> grpc.aio.AioRpcError | None:
    """The status of an ended call as an error, read at once (None if it has not ended)."""
    code = _settled(call.code())
    if code is None or code == grpc.StatusCode.OK:
        return None
    initial, trailing = _settled(call.initial_metadata()), _settled(call.trailing_metadata())
    details = _settled(call.details())
    return grpc.aio.AioRpcError(code, initial or grpc.aio.Metadata(), trailing, details)


def _settled(awaitable: Awaitable[T]) -> T | None:
    """The result of an awaitable that needs no waiting (an ended call's parts), else None.

    Run outside the event loop: a done-callback may not await, and the stand-in may replace
    the status before any task of ours could read it.
    """
    steps = awaitable.__await__()
    try:
        steps.send(None)
    except StopIteration as finished:
        return cast(T, finished.value)
    except Exception:
        return None
    steps.close()
    return None
