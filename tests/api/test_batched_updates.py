"""Subscribers that ask for batches (SubscribeUpdatesRequest.batch) get the very updates, in the
very order, an unbatched one gets, in fewer messages; a cut-off and a resume work as before; and
the client library unpacks batches so that its users see one update at a time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator

import grpc
import pytest

from client import AsyncPortfolioClient, PortfolioClient, PortfolioUpdate
from client import wire as client_wire
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application.subscriptions import WriteBudget
from tests.api.protocol import acks, ingest, pb_fill, pb_status
from tests.conftest import start_test_server
from tests.polling import wait_for

Stub = pb_grpc.PortfolioManagerStub


def unpacked(messages: Iterable[pb.PortfolioUpdate]) -> Iterator[pb.PortfolioUpdate]:
    for message in messages:
        if message.kind == pb.UPDATE_KIND_BATCH:
            assert message.batch, "an empty batch"
            assert message.sequence == message.batch[-1].sequence
            assert all(u.kind not in (pb.UPDATE_KIND_BATCH, pb.UPDATE_KIND_HEARTBEAT)
                       for u in message.batch)  # fmt: skip
            yield from message.batch
        else:
            yield message


def read_through(call: Iterator[pb.PortfolioUpdate], last: int) -> tuple[list[bytes], int]:
    """Reads until a heartbeat says everything through `last` was sent: the updates (encoded,
    heartbeats left out) and how many messages carried them."""
    updates, messages = [], 0
    for message in call:
        if message.kind == pb.UPDATE_KIND_HEARTBEAT:
            if message.sequence >= last:
                return updates, messages
            continue
        messages += 1
        updates.extend(update.SerializeToString() for update in unpacked([message]))
    raise AssertionError("the stream ended")


def burst(stub: Stub, batches: int, size: int) -> int:
    """Fills (two rows each) and order statuses, `batches` requests of `size`; the last sequence."""
    last = 0
    for n in range(batches):
        events = [pb_fill("BUY", 1, 100 + i, strategy=f"S{i % 3}") for i in range(size - 1)]
        events.append(pb_status(f"st-{n}-{time.monotonic_ns()}", order_ref=f"ord-{n}"))
        last = max(a.sequence for a in acks(stub, *events))
    return last


def test_a_batching_subscriber_gets_the_same_updates_in_the_same_order_in_fewer_messages():
    """Over a replay and then bursts of live ingests."""
    server = start_test_server(heartbeat_seconds=0.3)
    hub = server.running.service.hub
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = Stub(channel)
            burst(stub, 5, 40)  # replayed
            streams = {
                batch: stub.SubscribeUpdates(
                    pb.SubscribeUpdatesRequest(from_sequence=1, batch=batch), timeout=60
                )
                for batch in (False, True)
            }
            assert wait_for(lambda: hub.subscriber_count == 2)
            last = burst(stub, 5, 40)  # live
            got = {batch: read_through(call, last) for batch, call in streams.items()}
            for call in streams.values():
                call.cancel()
        (plain, plain_messages), (batched, batched_messages) = got[False], got[True]
        assert batched == plain
        assert len(plain) == plain_messages == 2 * 5 * (2 * 39 + 1)  # two rows a fill, a status
        assert batched_messages < len(batched) / 10
    finally:
        server.stop()


def test_a_stuck_batching_subscriber_is_cut_off_and_resumes_without_a_gap():
    server = start_test_server(subscriber_queue=50, heartbeat_seconds=30)
    hub = server.running.service.hub
    try:
        options = [("grpc.http2.bdp_probe", 0)]  # no window growth: a stuck reader blocks writes
        with (
            grpc.insecure_channel(server.address, options=options) as stuck_channel,
            grpc.insecure_channel(server.address) as channel,
        ):
            stub = Stub(channel)
            first = acks(stub, pb_fill("BUY", 1, 1))[0].sequence
            stuck = Stub(stuck_channel).SubscribeUpdates(
                pb.SubscribeUpdatesRequest(from_sequence=first, batch=True), timeout=60
            )
            assert next(stuck).sequence == first  # subscribed and reading
            for _ in range(300):  # then it stops reading
                answers = acks(stub, *[pb_fill("BUY", 1, 1) for _ in range(10)])
                assert {a.result for a in answers} == {pb.EVENT_RESULT_ACCEPTED}
            assert hub.subscriber_count == 0
            assert wait_for(lambda: hub.open_streams == 0), "the stuck stream stayed open"
            seen: list[pb.PortfolioUpdate] = []
            with pytest.raises(grpc.RpcError) as raised:
                seen.extend(unpacked(stuck))
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = raised.value.details()
            resume_from = int(details.split("from_sequence ")[1].split()[0])
            sequences = [first] + [u.sequence for u in seen]
            assert sequences == sorted(sequences)
            assert first <= resume_from <= sequences[-1] + 1
            last = marker(stub)
            # Resumed (batched): from the resume point on, exactly what an unbatched replay gives.
            resumed = stub.SubscribeUpdates(
                pb.SubscribeUpdatesRequest(from_sequence=resume_from, batch=True), timeout=30
            )
            plain = stub.SubscribeUpdates(
                pb.SubscribeUpdatesRequest(from_sequence=resume_from), timeout=30
            )
            expected = [u.SerializeToString() for u in _through(plain, last)]
            got = [u.SerializeToString() for u in _through(unpacked(resumed), last)]
            assert got == expected
            assert pb.PortfolioUpdate.FromString(got[0]).sequence == resume_from
            # Nothing between what the cut-off stream delivered and where the resume starts.
            assert {u.sequence for u in seen} | {first} >= set(range(first, resume_from))
            resumed.cancel()
            plain.cancel()
    finally:
        server.stop()


def marker(stub: Stub) -> int:
    """Ingests an order status (one update) after the rest; its sequence."""
    return acks(stub, pb_status(f"marker-{time.monotonic_ns()}", order_ref="marker"))[0].sequence


def _through(updates: Iterable[pb.PortfolioUpdate], last: int) -> Iterator[pb.PortfolioUpdate]:
    """Updates up to and including the one of sequence `last` (a marker: one update)."""
    for update in updates:
        yield update
        if update.sequence >= last:
            return


# -- the client library ---------------------------------------------------------------------


def test_the_client_library_asks_for_batches_and_yields_each_update_once_in_order():
    server = start_test_server(subscriber_queue=50, heartbeat_seconds=30)
    hub = server.running.service.hub
    try:
        with (
            grpc.insecure_channel(server.address) as channel,
            PortfolioClient(
                server.address, channel_options=[("grpc.http2.bdp_probe", 0)]
            ) as client,
        ):
            stub = Stub(channel)
            first = acks(stub, pb_fill("BUY", 1, 1))[0].sequence
            updates = client.subscribe(from_sequence=first)
            assert next(updates).sequence == first
            assert wait_for(lambda: hub.subscriber_count == 1)
            # The library's user stops consuming: its stream falls behind and is cut off.
            for _ in range(300):
                ingest(stub, [pb_fill("BUY", 1, 1) for _ in range(10)])
            last = marker(stub)
            assert wait_for(lambda: hub.subscriber_count == 0), "never cut off"
            # Consuming again: the library resumes, and every update comes exactly once.
            got: list[PortfolioUpdate] = []
            for update in updates:
                got.append(update)
                if update.sequence >= last:
                    break
            updates.close()
            plain = stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=first))
            expected = [client_wire.update_from_proto(u) for u in _through(plain, last)]
            plain.cancel()
        assert got == expected[1:]
        assert len(got) == 2 * 3001 - 1 + 1  # two rows a fill, the first one taken, the marker
    finally:
        server.stop()


async def test_the_async_client_library_yields_a_batched_stream_one_update_at_a_time():
    server = start_test_server()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = Stub(channel)
            burst(stub, 5, 40)
            last = marker(stub)
            plain = stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=1))
            expected = [client_wire.update_from_proto(u) for u in _through(plain, last)]
            plain.cancel()
        got: list[PortfolioUpdate] = []
        async with AsyncPortfolioClient(server.address) as client:
            updates = client.subscribe(from_sequence=1)
            async with contextlib.aclosing(updates):
                async for update in updates:
                    got.append(update)
                    if update.sequence >= last:
                        break
        assert got == expected
        assert len(got) == 5 * (2 * 39 + 1) + 1
    finally:
        server.stop()


async def test_a_large_write_takes_its_cost_from_the_write_budget():
    """A batch worth five writes leaves a debt: the next write waits for it to be paid."""
    budget = WriteBudget(100)  # a burst of one token, one every 10 ms
    loop = asyncio.get_running_loop()
    began = loop.time()
    await budget.take(5.0)  # a token is there: it goes at once, without waiting
    assert loop.time() - began < 0.005
    await budget.take()  # waits out the debt of 4 tokens, then one more
    assert loop.time() - began >= 0.045
