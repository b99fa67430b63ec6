"""The door's rules and the store's limits agree: whatever an event may hold, the journal and
every view symbol can take, so an admitted event can never poison the commit path; and what
the store refuses, the door refuses first."""

from __future__ import annotations

import string
from decimal import Decimal

import arcticdb as adb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.domain.events import (
    LATEST_TIME_NS,
    MAX_ID_LENGTH,
    Fill,
    InvalidEvent,
    Side,
    require_id,
)
from server.storage.frames import journal_frame

ALLOWED = "".join(c for c in map(chr, range(0x20, 0x7F)) if c not in "*<>")
ids = st.text(alphabet=ALLOWED, min_size=1, max_size=MAX_ID_LENGTH).filter(
    lambda value: value[0] != " " and value[-1] != " "
)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    arctic = adb.Arctic(f"lmdb://{tmp_path_factory.mktemp('limits')}")
    return arctic.get_library("limits", create_if_missing=True)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    account=ids,
    strategy=ids,
    fill_id=ids,
    time_ns=st.integers(min_value=1, max_value=LATEST_TIME_NS - 1),
)
def test_any_event_the_door_admits_fits_the_journal_and_the_view_symbols(
    library, account, strategy, fill_id, time_ns
):
    event = Fill(
        fill_id=fill_id, account_id=account, strategy_id=strategy, instrument_id=fill_id,
        side=Side.BUY, quantity=Decimal(1), price=Decimal(1), timestamp_ns=time_ns,
    )  # fmt: skip
    frame = journal_frame([(1, event)])
    library.write("events", frame)
    assert library.read("events").data["event_id"].iloc[0] == fill_id
    row = pd.DataFrame({"sequence": [1]}, index=pd.DatetimeIndex([frame["event_time"].iloc[0]]))
    for symbol in (account, strategy):  # fills/orders/portfolio and positions symbols
        library.write(symbol, row, prune_previous_versions=True)
        assert library.has_symbol(symbol)


@pytest.mark.parametrize("symbol", ["a*b", "a<b", "a>b", "caf\u00e9", "a\tb", "x" * 255], ids=repr)
def test_what_the_store_refuses_as_a_symbol_the_door_refuses_first(library, symbol):
    row = pd.DataFrame({"a": [1]})
    with pytest.raises(adb.exceptions.ArcticException):
        library.write(symbol, row)
    with pytest.raises(InvalidEvent):
        require_id("account_id", symbol)


def test_every_printable_ascii_id_but_three_is_accepted():
    for character in string.printable:
        value = f"a{character}b"
        if character in ALLOWED:
            require_id("id", value)
        else:
            with pytest.raises(InvalidEvent):
                require_id("id", value)
