"""A day's close visits every row of its account (a million on a large book): the service
applies it in steps, answering queries between them while readers see the day before whole,
takes no checkpoint of a group half applied, and loses none of the close's rows to a views
write started between steps. A large group of events is applied in steps too."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application import checkpoints
from server.application import writes as writes_module
from server.domain import steps
from server.domain.events import DayClose
from server.domain.ledger import Ledger
from server.domain.state import capture_rows
from tests.api.protocol import acks, pb_fill
from tests.api.test_reference_and_cash import mark, stream_marks
from tests.conftest import start_test_server
from tests.domain.builders import fill
from tests.polling import wait_for
from tests.storage.test_views_history import closed_in

STEP_SECONDS = 0.15  # each step made slow: a stand-in for thousands of rows
EVENTS = 12  # of the large group: one a step, 1.8 s


def day_close(ledger: Ledger) -> DayClose:
    """Account A1's close of 2026-01-02 at the book's prices, as the day closer makes it."""
    return DayClose(
        account_id="A1", trading_date="2026-01-02", timestamp_ns=ledger.clock_ns + 1,
        marks=ledger.closing_marks("A1"), late=False,
    )  # fmt: skip


def slow_down_closes(ledger: Ledger, stepping: threading.Event, recorded: threading.Event) -> None:
    """Each step of the ledger's closes made slow (a stand-in for thousands of rows):
    `stepping` is set as a close begins, `recorded` once its last step is done."""
    real_closing = ledger.pnl.closing

    def slow(**close):  # type: ignore[no-untyped-def]
        stepping.set()
        closing = real_closing(**close)
        while True:
            time.sleep(STEP_SECONDS)  # this step's work, made slow
            try:
                next(closing)
            except StopIteration as done:
                recorded.set()
                return done.value
            yield

    ledger.pnl.closing = slow  # type: ignore[method-assign]


def test_queries_are_answered_between_the_steps_of_a_close(monkeypatch):
    monkeypatch.setattr(steps, "ROWS_PER_STEP", 1)
    server = start_test_server()
    stepping, recorded = threading.Event(), threading.Event()
    try:
        writes = server.running.service.writes
        ledger = writes.ledger
        slow_down_closes(ledger, stepping, recorded)
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, *[pb_fill("BUY", 10, 100, instrument=f"I{n}") for n in range(8)])
            assert len(ledger.book) == 16  # strategy and account-level rows: 16 steps, 2.4 s
            close = day_close(ledger)
            with ThreadPoolExecutor(1) as pool:
                closing = pool.submit(server.call, writes.ingest([close]))
                assert stepping.wait(10)
                position = stub.GetPosition(
                    pb.GetPositionRequest(account_id="A1", strategy_id="S1", instrument_id="I0"),
                    timeout=10,
                )
                history = stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1"), timeout=10)
                assert not recorded.is_set(), "answered only once the close was done"
                assert position.quantity == "10"
                assert list(history.days) == []  # the day before, whole: no day recorded yet
                (outcome,) = closing.result(timeout=30)
            history = stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1"), timeout=10)
            assert [day.trading_date for day in history.days] == ["2026-01-02"]
            assert outcome.sequence == history.as_of_sequence == 9
    finally:
        server.stop()


async def test_no_checkpoint_is_taken_while_a_group_applies_in_steps(monkeypatch):
    """The timer's snapshot waits for the group (the committer holds its lock through the
    group's steps): the book is half applied between steps."""
    taken: list[int] = []
    snapshotting = checkpoints.snapshotting

    def noted(ledger: Ledger):  # type: ignore[no-untyped-def]
        taken.append(ledger.applied_sequence)
        return (yield from snapshotting(ledger))

    monkeypatch.setattr(checkpoints, "snapshotting", noted)

    class Store:
        def save_checkpoint(self, checkpoint: object) -> None:
            pass

    ledger = Ledger()
    with ThreadPoolExecutor(1) as executor:
        checkpointer = checkpoints.Checkpointer(Store(), executor, every=10**9, seconds=0.01)  # type: ignore[arg-type]
        checkpointer.resume(ledger, 0)
        event = fill("BUY", 1, 10)
        ledger.apply(event, ledger.admit(event).sequence)
        checkpointer.after_apply(ledger)  # arms the timer
        async with checkpointer.book:  # as the committer holds it through a group's steps
            event = fill("BUY", 1, 10)
            ledger.apply(event, ledger.admit(event).sequence)
            await asyncio.sleep(0.1)  # ten ticks
            assert taken == []
        await asyncio.sleep(0.1)
        assert taken == [2]
        assert len(capture_rows(ledger)) == 2


def test_a_large_group_is_applied_in_steps_and_acked_whole(monkeypatch):
    """A group of more than `EVENTS_PER_STEP` events (a batch of 10,000, or what gathered
    while the store was down): queries are answered between its steps, each seeing the book
    at an event's end; the acks come after the last."""
    monkeypatch.setattr(writes_module, "EVENTS_PER_STEP", 1)
    server = start_test_server()
    seen: list[int] = []  # the sequence each query saw
    try:
        writes = server.running.service.writes
        ledger = writes.ledger
        apply = ledger.apply

        def slow(event, sequence):  # type: ignore[no-untyped-def]
            time.sleep(STEP_SECONDS)  # this event's work, made slow
            return apply(event, sequence)

        ledger.apply = slow  # type: ignore[method-assign]
        events = [fill("BUY", 1, 10, instrument="I0") for _ in range(EVENTS)]
        with grpc.insecure_channel(server.address) as channel, ThreadPoolExecutor(1) as pool:
            stub = pb_grpc.PortfolioManagerStub(channel)
            ingesting = pool.submit(server.call, writes.ingest(events))
            deadline = time.monotonic() + 10
            request = pb.GetPositionRequest(account_id="A1", strategy_id="S1", instrument_id="I0")
            refused: set[grpc.StatusCode] = set()
            history = pb.GetPnlHistoryRequest(account_id="A1")
            subscribed = None
            while not ingesting.done() and time.monotonic() < deadline:
                try:
                    answer = stub.GetPosition(request, timeout=10)
                except grpc.RpcError as error:  # no row before the first event applied
                    refused.add(error.code())
                    continue
                if not ingesting.done():
                    seen.append(int(answer.quantity))
                if subscribed is None and 0 < int(answer.quantity) < EVENTS - 1:
                    # The documented start, between steps: read, then subscribe from
                    # as_of_sequence + 1 (everything up to it is published, nothing after).
                    as_of = stub.GetPnlHistory(history, timeout=10).as_of_sequence
                    subscribed = (
                        as_of,
                        stub.SubscribeUpdates(
                            pb.SubscribeUpdatesRequest(from_sequence=as_of + 1), timeout=10
                        ),
                    )
            outcomes = ingesting.result(timeout=30)
            assert subscribed is not None
            as_of, updates = subscribed
            got = [next(updates).sequence for _ in range(2 * (EVENTS - as_of))]  # 2 rows a fill
            updates.cancel()
            assert got == [n for n in range(as_of + 1, EVENTS + 1) for _ in range(2)]
        assert [outcome.sequence for outcome in outcomes] == list(range(1, EVENTS + 1))
        assert any(0 < quantity < EVENTS for quantity in seen), seen  # between steps
        assert seen == sorted(seen)
        assert refused <= {grpc.StatusCode.NOT_FOUND}
    finally:
        server.stop()


def test_marks_streamed_while_a_close_copies_its_rows_leave_the_close_whole_in_the_views(
    tmp_path, monkeypatch
):
    """The mark feed's views write may start between the steps of a close: the close's rows
    still reach `position_history`, every one, once."""
    monkeypatch.setattr(steps, "ROWS_PER_STEP", 1)
    server = start_test_server(store=f"lmdb://{tmp_path}/store")
    copying = threading.Event()
    try:
        writes = server.running.service.writes
        ledger = writes.ledger
        projector = server.running.service.projector
        rows_of = projector.rows_of

        def slow(account_id):  # type: ignore[no-untyped-def]
            for row in rows_of(account_id):
                copying.set()
                time.sleep(STEP_SECONDS)  # this row's copy, made slow
                yield row

        projector.rows_of = slow
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, *[pb_fill("BUY", 10, 100, instrument=f"I{n}") for n in range(8)])
            close = day_close(ledger)
            with ThreadPoolExecutor(1) as pool:
                closing = pool.submit(server.call, writes.ingest([close]))
                assert copying.wait(10)
                stream_marks(stub, pb.MarkBatch(marks=[mark("I0", 10, mark="101")]))
                closing.result(timeout=60)
        views = server.running.store.views
        assert wait_for(lambda: closed_in(views.position_history), 20)
        history = views.position_history.read("A1").data
        assert (history.reason == "close").sum() == 16  # every row of the account, once
    finally:
        server.stop()


def test_a_stop_during_the_steps_of_a_close_lets_it_finish_and_a_restart_keeps_it_once(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(steps, "ROWS_PER_STEP", 1)
    store = f"lmdb://{tmp_path}/store"
    server = start_test_server(store=store)
    stepping, stopped = threading.Event(), False
    try:
        writes = server.running.service.writes
        ledger = writes.ledger
        slow_down_closes(ledger, stepping, threading.Event())
        with grpc.insecure_channel(server.address) as channel:
            acks(
                pb_grpc.PortfolioManagerStub(channel),
                *[pb_fill("BUY", 10, 100, instrument=f"I{n}") for n in range(4)],
            )
        close = day_close(ledger)
        with ThreadPoolExecutor(1) as pool:
            closing = pool.submit(server.call, writes.ingest([close]))
            assert stepping.wait(10)
            server.stop()  # a graceful stop, the close in its steps (8 rows, 1.2 s)
            stopped = True
            (outcome,) = closing.result(timeout=30)
        assert outcome.sequence == 5
    finally:
        if not stopped:
            server.stop()
    gc.collect()  # LMDB: one open instance per path and process
    server = start_test_server(store=store)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            history = stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1"), timeout=10)
        assert [day.trading_date for day in history.days] == ["2026-01-02"]
        assert history.as_of_sequence == 5
    finally:
        server.stop()
