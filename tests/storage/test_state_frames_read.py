"""A state frame is read a few records per parse: what comes back is what was written, record
for record and in order within each section, whatever the sizes and the text inside."""

from __future__ import annotations

import json
from decimal import Decimal

import pandas as pd
import pytest

from server.domain.position import PositionKey
from server.domain.refusals import Refusal, RefusalKind
from server.domain.state import LedgerState
from server.storage.disk import StoreUnusable
from server.storage.state_frames import state_frame, state_from_frame


def test_many_records_of_several_sections_read_back_in_order() -> None:
    opens = [
        (PositionKey("A", f"S{n % 7}", f"I{n}"), 1 - 2 * (n % 2), Decimal(f"{n}.25"), Decimal(n))
        for n in range(1000)
    ]
    refusals = [
        (n, Refusal(RefusalKind.CONFLICT, "fill_id", f'"{n}"], [{n}, "x,y"]\\ é'))
        for n in range(130)
    ]  # text that would end a list were it not escaped
    state = LedgerState(perf_open=opens, refusals=refusals, corrections_latest_ns=[7])
    frame = state_frame(state)
    opened = frame[frame["section"] == "perf_open"]
    others = frame[frame["section"] != "perf_open"]
    interleaved = pd.concat([opened.iloc[:500], others, opened.iloc[500:]])  # sections mixed
    assert state_from_frame(frame) == state_from_frame(interleaved) == state
    reordered = pd.concat([opened.iloc[1::2], opened.iloc[::2], others])
    assert state_from_frame(reordered).perf_open == opens[1::2] + opens[::2]


def test_a_section_this_release_does_not_know_refuses_the_frame() -> None:
    frame = state_frame(LedgerState(corrections_latest_ns=[7]))
    later = pd.concat([frame, pd.DataFrame({"section": ["novel"], "record": ["{}"]})])
    with pytest.raises(StoreUnusable, match="'novel'"):
        state_from_frame(later)


def test_open_trips_are_written_as_json_writes_each_record() -> None:
    # The perf_open records are made from each id's and amount's text found once: the very
    # texts json.dumps gives, whatever the ids hold, the amounts' exponents and zeros' signs.
    from server.storage.state_frames import _trip_open

    shared = Decimal("0.350")
    opens = [
        (PositionKey(account, strategy, f"I{n}"), sign, amount, fee)
        for n, (account, strategy, sign, amount, fee) in enumerate([
            ("A", "S1", 1, Decimal(0), shared), ("A", "S1", -1, Decimal("-0"), shared),
            ('q"uote\\', "é\u2028", 1, Decimal("-0.00"), Decimal("1E+2")),
            ("A", "", -1, Decimal("123456789012345678.123456789012345678"), Decimal("1E-7")),
        ])
    ]  # fmt: skip
    records = state_frame(LedgerState(perf_open=opens))["record"].tolist()
    assert records == [json.dumps(_trip_open(item), separators=(",", ":")) for item in opens]
    assert state_from_frame(state_frame(LedgerState(perf_open=opens))).perf_open == opens
