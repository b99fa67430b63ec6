"""A subscriber that stops reading: its stream ends when the service cuts it off, although the
service's write to it waits on HTTP/2 flow control, and the status says where to resume."""

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from tests.api.protocol import acks, pb_fill
from tests.conftest import start_test_server
from tests.polling import wait_for


def test_a_stuck_subscribers_stream_ends_and_says_where_to_resume():
    server = start_test_server(subscriber_queue=50, heartbeat_seconds=30)
    hub = server.running.service.hub
    try:
        # No window growth: what the client does not read soon blocks the service's writes.
        options = [("grpc.http2.bdp_probe", 0)]
        with (
            grpc.insecure_channel(server.address, options=options) as stuck_channel,
            grpc.insecure_channel(server.address) as channel,
        ):
            stub = pb_grpc.PortfolioManagerStub(channel)
            first = acks(stub, pb_fill("BUY", 1, 1))
            stuck = pb_grpc.PortfolioManagerStub(stuck_channel).SubscribeUpdates(
                pb.SubscribeUpdatesRequest(from_sequence=1), timeout=60
            )
            assert next(stuck).sequence == first[0].sequence  # subscribed and reading
            assert hub.open_streams == 1
            # It stops reading. Small batches, one after the other, so that the service keeps
            # up until the flow-control window is full and its write blocks; then the queue of
            # 50 overflows and the subscriber is cut off.
            for _ in range(300):
                answers = acks(stub, *[pb_fill("BUY", 1, 1) for _ in range(10)])
                assert {a.result for a in answers} == {pb.EVENT_RESULT_ACCEPTED}
            assert hub.subscriber_count == 0
            # The handler ends although the client still reads nothing.
            assert wait_for(lambda: hub.open_streams == 0), "the stuck stream stayed open"
            # Reading again: what was already sent, then the status with the resume point.
            seen = [first[0].sequence]
            with pytest.raises(grpc.RpcError) as raised:
                seen.extend(update.sequence for update in stuck)
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = raised.value.details()
            assert "resubscribe with from_sequence" in details
            resume_from = int(details.split("from_sequence ")[1].split()[0])
            # Nothing is skipped: the resume point is at most one past what was received.
            assert seen == sorted(seen)
            assert first[0].sequence <= resume_from <= seen[-1] + 1
            # Resuming from it goes on without a gap.
            resumed = stub.SubscribeUpdates(
                pb.SubscribeUpdatesRequest(from_sequence=resume_from), timeout=10
            )
            assert next(resumed).sequence == resume_from
            resumed.cancel()
    finally:
        server.stop()
