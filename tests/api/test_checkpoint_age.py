"""The checkpoint's age in seconds (`portfolio.checkpoint.age`): scraped over HTTP, and the
clock behind it with a clock the test moves."""

from __future__ import annotations

import grpc

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.telemetry import CheckpointAge
from tests.api.protocol import acks, pb_fill
from tests.api.test_metrics import _free_port, scrape, value
from tests.conftest import start_test_server
from tests.polling import wait_for

AGE = "portfolio_checkpoint_age_seconds"
BEHIND = "portfolio_checkpoint_behind"


def _book_three(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        found = acks(stub, *(pb_fill("BUY", 1, 10 + i) for i in range(3)))
        assert [a.result for a in found] == [pb.EVENT_RESULT_ACCEPTED] * 3


def test_the_age_is_zero_until_an_event_is_not_checkpointed_then_grows() -> None:
    port = _free_port()
    running = start_test_server(metrics_port=port, checkpoint_seconds=0)  # by count only
    try:
        assert value(scrape(port), AGE) == 0  # nothing applied: nothing a crash would replay
        _book_three(running.address)
        first = scrape(port)
        assert value(first, BEHIND) == 3
        assert value(first, AGE) > 0
        assert wait_for(lambda: value(scrape(port), AGE) > value(first, AGE) + 0.1)
    finally:
        running.stop()


def test_the_age_is_zero_again_once_the_checkpoint_holds_every_event() -> None:
    port = _free_port()
    running = start_test_server(metrics_port=port, checkpoint_seconds=0.2)
    try:
        _book_three(running.address)
        # The timer writes the snapshot it holds one turn later: then nothing is left behind.
        assert wait_for(lambda: value(scrape(port), BEHIND) == 0)
        assert value(scrape(port), AGE) == 0
    finally:
        running.stop()


class _Ledger:
    def __init__(self) -> None:
        self.applied = self.saved = 0
        self.now = 1000.0


def _age(state: _Ledger) -> CheckpointAge:
    return CheckpointAge(lambda: state.applied, lambda: state.saved, lambda: state.now)


def test_the_age_counts_from_when_the_oldest_unsaved_event_was_applied() -> None:
    state = _Ledger()
    age = _age(state)
    state.now += 5
    state.applied = 10  # a group of 10 at t=1005
    age.committed(10)
    state.now += 0.5
    state.applied = 12  # within the same mark: counted from 1005
    age.committed(2)
    state.now += 3
    state.applied = 20  # a new mark at t=1008.5
    age.committed(8)
    state.now += 2  # t=1010.5
    assert age.seconds() == 5.5  # event 1 was applied at 1005
    state.saved = 12  # the checkpoint holds 1..12: the oldest unsaved (13) came at 1008.5
    assert age.seconds() == 2.0
    state.saved = 11  # 12 is in the mark of t=1005: never counted younger than it is
    assert age.seconds() == 5.5
    state.saved = 20
    assert age.seconds() == 0.0


def test_events_replayed_at_start_count_from_the_start() -> None:
    state = _Ledger()
    state.applied, state.saved = 50, 40  # recovered: 41..50 replayed from the journal
    age = _age(state)
    state.now += 7
    assert age.seconds() == 7.0
    state.applied = 51
    age.committed(1)
    state.now += 1
    assert age.seconds() == 8.0  # still 41, replayed at the start
    state.saved = 50
    assert age.seconds() == 1.0  # 51, applied a second ago


def test_marks_the_checkpoint_passed_are_dropped() -> None:
    state = _Ledger()
    age = _age(state)
    for _ in range(100):
        state.now += 2
        state.applied += 1
        age.committed(1)
        state.saved = state.applied - 1
    assert len(age._marks) <= 2
