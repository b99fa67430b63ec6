import queue
import threading

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks, pb_fill, pb_status
from tests.conftest import start_test_server

HEARTBEAT = pb.UPDATE_KIND_HEARTBEAT


class Reader:
    """Reads a subscription on a thread, so the test can ingest meanwhile."""

    def __init__(self, stub, **request):
        self.call = stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(**request), timeout=30)
        self.updates: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for update in self.call:
                self.updates.put(update)
        except grpc.RpcError as error:
            self.updates.put(error)

    def take(self, count, *, heartbeats=False):
        taken = []
        while len(taken) < count:
            item = self.updates.get(timeout=10)
            if isinstance(item, grpc.RpcError):
                raise item
            if heartbeats or item.kind != HEARTBEAT:
                taken.append(item)
        return taken

    def close(self):
        self.call.cancel()
        self.thread.join(timeout=5)


@pytest.fixture
def reader(stub):
    readers = []

    def open_reader(**request):
        readers.append(Reader(stub, **request))
        return readers[-1]

    yield open_reader
    for r in readers:
        r.close()


def test_live_updates_carry_sequence_kind_and_position(stub, reader):
    live = reader()
    live.take(1, heartbeats=True)  # subscribed: the idle heartbeat says where we stand
    acks(stub, pb_fill("BUY", 10, 5), pb_fill("SELL", 10, 6), pb_status("u1"))
    updates = live.take(5)
    assert [(u.sequence, u.kind, u.position.level) for u in updates] == [
        (1, pb.UPDATE_KIND_POSITION_OPENED, pb.POSITION_LEVEL_STRATEGY),
        (1, pb.UPDATE_KIND_POSITION_OPENED, pb.POSITION_LEVEL_ACCOUNT),
        (2, pb.UPDATE_KIND_POSITION_CLOSED, pb.POSITION_LEVEL_STRATEGY),
        (2, pb.UPDATE_KIND_POSITION_CLOSED, pb.POSITION_LEVEL_ACCOUNT),
        (3, pb.UPDATE_KIND_ORDER_STATUS, pb.POSITION_LEVEL_UNSPECIFIED),
    ]
    assert updates[2].position.realized_pnl == "10"
    assert updates[2].fill.price == "6"
    assert updates[4].order_status.update_id == "u1"


def test_each_update_shows_the_row_as_its_own_event_left_it(stub, reader):
    live = reader(from_sequence=1, level=pb.POSITION_LEVEL_STRATEGY)
    acks(stub, pb_fill("BUY", 100, 10), pb_fill("BUY", 50, 12), pb_fill("SELL", 150, 11))
    updates = live.take(3)
    assert [(u.position.quantity, u.position.last_sequence) for u in updates] == [
        ("100", 1),
        ("150", 2),
        ("0", 3),
    ]
    assert [u.position.market_price for u in updates] == ["10", "12", "11"]


def test_idle_subscribers_get_heartbeats_with_the_current_sequence(stub, reader):
    acks(stub, pb_fill("BUY", 1, 1), pb_fill("BUY", 1, 1))
    idle = reader(strategy_id="NOBODY")
    beats = idle.take(2, heartbeats=True)
    assert [(b.kind, b.sequence) for b in beats] == [(HEARTBEAT, 2), (HEARTBEAT, 2)]


def test_resume_from_a_sequence_replays_without_gaps_then_goes_live(stub, reader):
    acks(stub, *[pb_fill("BUY", 1, 10 + i) for i in range(5)])
    resumed = reader(from_sequence=3, level=pb.POSITION_LEVEL_STRATEGY)
    acks(stub, pb_fill("SELL", 5, 20))
    updates = resumed.take(4)
    assert [u.sequence for u in updates] == [3, 4, 5, 6]
    assert updates[-1].position.quantity == "0"


def test_filters_select_account_strategy_instrument_and_level(stub, reader):
    only_msft = reader(instrument_id="MSFT", from_sequence=1)
    only_s2 = reader(strategy_id="S2", from_sequence=1)
    only_account_rows = reader(account_id="A2", level=pb.POSITION_LEVEL_ACCOUNT, from_sequence=1)
    acks(
        stub,
        pb_fill("BUY", 1, 1, instrument="MSFT"),
        pb_fill("BUY", 1, 1, strategy="S2"),
        pb_fill("BUY", 1, 1, account="A2"),
    )
    assert [(u.sequence, u.position.strategy_id) for u in only_msft.take(2)] == [(1, "S1"), (1, "")]
    assert [(u.sequence, u.position.strategy_id) for u in only_s2.take(1)] == [(2, "S2")]
    assert [(u.sequence, u.position.account_id) for u in only_account_rows.take(1)] == [(3, "A2")]


def test_a_sequence_older_than_the_replay_buffer_is_out_of_range():
    server = start_test_server(replay_capacity=6)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            acks(stub, *[pb_fill("BUY", 1, 1) for _ in range(5)])  # 15 updates, 6 kept
            with pytest.raises(grpc.RpcError) as raised:
                next(iter(stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=2))))
            assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert "re-read state" in raised.value.details()
            kept = stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=4), timeout=5)
            assert [next(kept).sequence for _ in range(4)] == [4, 4, 5, 5]
            kept.cancel()
            with pytest.raises(grpc.RpcError) as raised:
                next(iter(stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=7))))
            assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
    finally:
        server.stop()


def test_a_slow_subscriber_is_cut_off_and_ingestion_goes_on():
    server = start_test_server(subscriber_queue=50, heartbeat_seconds=30)
    try:
        # No window growth on this channel: what the client does not read backs up in the server.
        options = [("grpc.http2.bdp_probe", 0)]
        with grpc.insecure_channel(server.address, options=options) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            first = acks(stub, pb_fill("BUY", 1, 1))
            slow = stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(from_sequence=1), timeout=30)
            assert next(slow).sequence == first[0].sequence  # subscribed and reading
            # Never read again: the backlog overflows the queue of 50.
            answers = acks(stub, *[pb_fill("BUY", 1, 1) for _ in range(5000)])
            assert {a.result for a in answers} == {pb.EVENT_RESULT_ACCEPTED}
            with pytest.raises(grpc.RpcError) as raised:
                for _ in slow:
                    pass
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "resubscribe with from_sequence" in raised.value.details()
            assert server.running.service.hub.subscriber_count == 0
    finally:
        server.stop()


def test_bad_level_filter_is_invalid(stub):
    with pytest.raises(grpc.RpcError) as raised:
        next(iter(stub.SubscribeUpdates(pb.SubscribeUpdatesRequest(level=9))))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_state_read_after_an_event_that_publishes_nothing_then_subscribed_from_as_of_plus_one(
    stub, reader
):
    """The documented way to start: read state, subscribe from its `as_of_sequence + 1`. The
    last event (an instrument's definition) published no update, yet the stream opens and
    goes on from the next event."""
    acks(stub, pb_fill("BUY", 1, 10))
    stub.DefineInstrument(
        pb.DefineInstrumentRequest(
            instrument=pb.Instrument(
                instrument_id="MSFT", asset_class=pb.ASSET_CLASS_EQUITY, currency="USD"
            )
        ),
        timeout=5,
    )
    as_of = stub.GetPnlHistory(pb.GetPnlHistoryRequest(account_id="A1"), timeout=5).as_of_sequence
    assert as_of == 2
    following = reader(from_sequence=as_of + 1)
    (later,) = acks(stub, pb_fill("BUY", 1, 10))
    assert [u.sequence for u in following.take(2)] == [later.sequence] * 2 == [3, 3]
