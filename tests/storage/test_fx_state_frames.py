"""The FX history's part of a checkpoint: written exactly, and missing from a checkpoint written
before it existed (read as an empty history: the journal after it refills what it can)."""

from __future__ import annotations

from decimal import Decimal

from server.domain.marks import FxRate
from server.domain.state import LedgerState
from server.storage.state_frames import state_frame, state_from_frame


def test_the_fx_history_round_trips_exactly_with_its_sequences():
    rates = [
        (3, FxRate("EUR", "USD", Decimal("1.0800"), 10)),
        (9, FxRate("USD", "EUR", Decimal("0.925925925925925926"), 20)),
        (4, FxRate("USD", "JPY", Decimal("150.5"), 5)),
    ]
    state = LedgerState(fx_history=rates)
    read = state_from_frame(state_frame(state))
    assert read == state
    assert [str(rate.rate) for _, rate in read.fx_history] == [
        "1.08", "0.925925925925925926", "150.5",
    ]  # fmt: skip


def test_a_checkpoint_from_before_the_fx_history_reads_as_an_empty_history():
    frame = state_frame(LedgerState(fx_rates=[FxRate("EUR", "USD", Decimal("1.08"), 10)]))
    old = frame[frame["section"] != "fx_history"]
    assert "fx_history" not in set(old["section"])
    read = state_from_frame(old)
    assert read.fx_history == []
    assert read.fx_rates == [FxRate("EUR", "USD", Decimal("1.08"), 10)]
