"""A store written by an earlier release opens with this one as it is (no `delete_library`),
with the same state; one written by a later release is refused at start, naming the symbol and
the version. Real ArcticDB on LMDB; the old layouts are built here as those releases wrote
them (their columns, their metadata, their event texts)."""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import arcticdb as adb
import pandas as pd
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from server.application.ports import ViewsIncomplete
from server.domain import codec
from server.domain.codec import FIELD_SEPARATOR, VERSION_MARK, NewerTextVersion, TextCodec
from server.domain.events import (
    AccountDefinition,
    AccountKind,
    BrokerCash,
    BrokerPosition,
    BrokerPositions,
    DayClose,
    Fill,
    FxFixing,
    OrderStatus,
    OrderStatusUpdate,
    Side,
)
from server.domain.state import LedgerState
from server.storage.arctic import BOOK, CHECKPOINTS, EVENTS, JOURNAL, STATE, ArcticEventStore
from server.storage.disk import StoreUnusable
from server.storage.frames import journal_frame, rows_from_checkpoint
from server.storage.state_frames import state_frame
from server.storage.upcasters import (
    BOOK_COLUMNS,
    BOOK_VERSION,
    JOURNAL_LAYOUTS,
    JOURNAL_VERSION,
    ORDERS_VIEW_BEFORE_KEYS,
    NewerFormat,
    current_journal,
)
from server.storage.views import (
    ORDER_COLUMNS,
    POSITION_COLUMNS,
    POSITION_COLUMNS_BEFORE_CURRENCY,
    ArcticViews,
)
from tests.api.protocol import acks, ingest, pb_fill, pb_status
from tests.conftest import start_test_server
from tests.storage.test_audit_trail import upgrade_killed_at_its_second_append
from tests.storage.test_restart import everything, mixed_history, open_stub

T0 = 1_700_000_000 * 10**9


def _fill(fill_id: str, *, quantity: str = "10", price: str = "100") -> Fill:
    return Fill(
        fill_id=fill_id, account_id="LIVE1", strategy_id="S1", instrument_id="AAPL",
        side=Side.BUY, quantity=Decimal(quantity), price=Decimal(price), timestamp_ns=T0,
    )  # fmt: skip


def _write_journal(uri: str, events: list[object], texts: dict[int, str] | None = None) -> None:
    """A journal as written by a release whose texts for some sequences were `texts`."""
    frame = journal_frame(list(enumerate(events, start=1)))  # type: ignore[arg-type]
    for sequence, text in (texts or {}).items():
        frame.loc[sequence, "text"] = text
        frame.loc[sequence, "digest"] = codec.fingerprint_of(text)
    adb.Arctic(uri).get_library(JOURNAL, create_if_missing=True).write(EVENTS, frame)
    gc.collect()  # LMDB: one open instance per path and process


# -- event texts --------------------------------------------------------------------------


def test_version_1_texts_are_unchanged_so_digests_and_definition_ids_stay():
    """Every text written before versions is version 1 and carries no mark: the same event
    gives the same text, digest and (for definitions) id as before."""
    fill = _fill("F1")
    assert fill.text() == FIELD_SEPARATOR.join(
        ["F1", "LIVE1", "S1", "AAPL", "BUY", "10", "100", str(T0), "0", "", "", "", "", ""]
    )
    assert Fill.from_text(fill.text()) == fill


def test_a_broker_positions_text_of_the_reconciliation_release_reads_with_no_currency():
    """That release's broker positions had 5 fields (no contract currency): this text made
    every start fail ('BrokerPosition: 5 fields, expected 6') before the upcaster."""
    snapshot = BrokerPositions(
        snapshot_id="snap1", account_id="LIVE1", timestamp_ns=T0,
        positions=(BrokerPosition(instrument_id="AAPL", quantity=Decimal(10),
                                  avg_cost=Decimal(100), currency="USD"),),
    )  # fmt: skip
    old = _without_position_currency(snapshot.text())
    read = BrokerPositions.from_text(old)
    assert read.positions[0].currency == ""
    assert read == BrokerPositions(
        snapshot_id="snap1", account_id="LIVE1", timestamp_ns=T0,
        positions=(BrokerPosition(instrument_id="AAPL", quantity=Decimal(10),
                                  avg_cost=Decimal(100)),),
    )  # fmt: skip


def _version_1(text: str) -> str:
    """A snapshot's text as releases before the broker's cash wrote it (no mark, no cash)."""
    fields = text.split(FIELD_SEPARATOR)
    assert fields[0] == f"{VERSION_MARK}2" and fields[-1] == "[]"
    return FIELD_SEPARATOR.join(fields[1:-1])


def _without_position_currency(text: str) -> str:
    fields = _version_1(text).split(FIELD_SEPARATOR)
    fields[3] = json.dumps([record[:5] for record in json.loads(fields[3])], separators=(",", ":"))
    return FIELD_SEPARATOR.join(fields)


def test_a_broker_positions_text_from_before_the_brokers_cash_reads_with_none():
    snapshot = BrokerPositions(
        snapshot_id="snap1", account_id="LIVE1", timestamp_ns=T0,
        positions=(BrokerPosition(instrument_id="AAPL", quantity=Decimal(10),
                                  avg_cost=Decimal(100), currency="USD"),),
    )  # fmt: skip
    old = _version_1(snapshot.text())
    assert not old.startswith(VERSION_MARK)
    assert BrokerPositions.from_text(old) == snapshot
    with_cash = dataclasses.replace(
        snapshot, cash=(BrokerCash(currency="USD", amount=Decimal("990.5")),)
    )
    assert BrokerPositions.from_text(with_cash.text()) == with_cash


def test_a_bumped_version_is_marked_upcast_from_the_old_one_and_a_newer_one_refused(
    monkeypatch,
):
    """What bumping a kind's version does, on a codec built with a registry entry: new texts
    carry the mark, old texts are raised through the upcaster, a newer version is refused."""
    fixing = FxFixing(base="EUR", quote="USD", rate=Decimal("1.1"), timestamp_ns=T0)
    v1_text = fixing.text()
    monkeypatch.setitem(codec.TEXT_VERSIONS, "FxFixing", 2)
    # This test's version 2: times a second later than version 1 said.
    monkeypatch.setitem(
        codec.TEXT_UPCASTERS, ("FxFixing", 1), lambda f: [*f[:3], str(int(f[3]) + 10**9)]
    )
    versioned = TextCodec(FxFixing)

    assert not v1_text.startswith(VERSION_MARK)
    v2_text = versioned.encode(fixing)
    assert v2_text == f"{VERSION_MARK}2{FIELD_SEPARATOR}{v1_text}"
    assert versioned.decode(v2_text) == fixing
    assert versioned.decode(v1_text).timestamp_ns == T0 + 10**9  # through the upcaster
    with pytest.raises(NewerTextVersion, match=r"FxFixing text of version 3.*up to 2"):
        versioned.decode(f"{VERSION_MARK}3{FIELD_SEPARATOR}{v1_text}")


# -- the journal, end to end ---------------------------------------------------------------


def test_a_journal_with_an_old_broker_positions_event_opens_and_replays_it(tmp_path):
    uri = f"lmdb://{tmp_path}/store"
    account = AccountDefinition(
        account_id="LIVE1", account_kind=AccountKind.LIVE, base_currency="USD"
    )
    snapshot = BrokerPositions(
        snapshot_id="snap1", account_id="LIVE1", timestamp_ns=T0 + 1,
        positions=(BrokerPosition(instrument_id="AAPL", quantity=Decimal(10),
                                  avg_cost=Decimal(100), currency="USD"),),
    )  # fmt: skip
    _write_journal(
        uri, [account, _fill("F1"), snapshot], {3: _without_position_currency(snapshot.text())}
    )

    server = start_test_server(store=uri)
    try:
        assert server.running.recovery.sequence == 3
        channel, stub = open_stub(server)
        with channel:
            run = stub.GetReconciliation(pb.GetReconciliationRequest(account_id="LIVE1"))
            assert run.snapshot_id == "snap1"
            assert [(line.instrument_id, line.broker_quantity) for line in run.lines] == [
                ("AAPL", "10")
            ]
            assert acks(stub, pb_fill("BUY", 1, 1))[0].sequence == 4  # and it goes on
    finally:
        server.stop()


def test_a_journal_text_of_a_later_release_is_refused_at_start_naming_it(tmp_path):
    uri = f"lmdb://{tmp_path}/store"
    fill = _fill("F1")
    _write_journal(uri, [fill], {1: f"{VERSION_MARK}7{FIELD_SEPARATOR}{fill.text()}"})
    with pytest.raises(NewerFormat, match=r"journal/events sequence 1: fill event text version 7"):
        start_test_server(store=uri)
    # Refused, not changed: the store reads as it was.
    store = ArcticEventStore(uri)
    try:
        assert len(store.journal.read(EVENTS).data) == 1
    finally:
        store.close()


# -- checkpoints -----------------------------------------------------------------------------


def _history_with_a_checkpoint(uri: str) -> tuple[Any, int]:
    """Runs the service over a mixed history with a day's close of account A0 in its middle,
    checkpointed every 7 events: what it showed, and the latest checkpoint's sequence."""
    events = [*mixed_history(), pb_status("late", "FILLED", order_id="0")]
    server = start_test_server(store=uri, checkpoint_every=7)
    writes = server.running.service.writes
    channel, stub = open_stub(server)
    with channel:
        for start in range(0, len(events), 9):
            ingest(stub, events[start : start + 9])
            if start == 27:  # as the day closer makes it
                close = DayClose(
                    account_id="A0", trading_date="2026-01-02",
                    timestamp_ns=writes.ledger.clock_ns + 1,
                    marks=writes.ledger.closing_marks("A0"), late=False,
                )  # fmt: skip
                server.call(writes.ingest([close]))
        before = everything(stub)
    server.stop()
    gc.collect()  # LMDB: one open instance per path and process
    sequence = int(_checkpoints(uri).read_metadata(BOOK).metadata["sequence"])
    assert 0 < sequence < before[1].as_of_sequence  # a tail to replay after it, too
    gc.collect()
    return before, sequence


def _checkpoints(uri: str) -> adb.library.Library:
    return adb.Arctic(uri).get_library(CHECKPOINTS)


Edit = Callable[[pd.DataFrame, dict[str, Any]], tuple[pd.DataFrame, dict[str, Any]] | None]


def _rewrite(uri: str, symbol: str, edit: Edit) -> None:
    """Rewrites one checkpoint half as `edit` returns it (None: deletes it); the store is let
    go of before the service opens it (LMDB: one instance per path and process)."""

    def rewrite() -> None:
        library = _checkpoints(uri)
        item = library.read(symbol)
        edited = edit(item.data, dict(item.metadata))
        if edited is None:
            library.delete(symbol)
        else:
            library.write(symbol, edited[0], metadata=edited[1], prune_previous_versions=True)

    rewrite()
    gc.collect()


def _unversioned(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata as releases before versions wrote it."""
    return {k: v for k, v in metadata.items() if k != "versions"}


def rewrite_as_release(uri: str, book_version: int) -> int:
    """The checkpoint as the release writing book `book_version` wrote it: its columns (no
    anchor rows before version 3), its metadata (no versions), before version 6 the rows'
    round trips, in progress and closed, as the state half's `perf_open` and `perf_trips`
    records, and before version 7 their last closes as its `pnl_last_closes` (how many of
    these the book held: returned)."""
    _, _, trips, closed, closes = rows_from_checkpoint(_checkpoints(uri).read(BOOK).data)
    gc.collect()

    def state(frame: pd.DataFrame, metadata: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        moved = LedgerState(
            perf_open=trips if book_version < 6 else [],
            perf_trips=closed if book_version < 6 else [],
            pnl_last_closes=closes if book_version < 7 else [],
        )
        frame = pd.concat([frame, state_frame(moved)], ignore_index=True)
        return frame, _unversioned(metadata)

    def book(frame: pd.DataFrame, metadata: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
        if book_version < 3:
            frame = frame[~frame["anchor"]]
        return frame[BOOK_COLUMNS[book_version]].reset_index(drop=True), _unversioned(metadata)

    _rewrite(uri, STATE, state)
    _rewrite(uri, BOOK, book)
    return len(trips) + len(closed)


# Book version 3 (restatement windows, before realized P&L in base): its anchors carry no base
# currency, and the book's reload_windows (server/domain/book.py) does not take the account's
# as restore() does for rows, so a windowed row's realized_pnl_base/net_pnl_base come out
# missing even in the account's own currency. The same on the release before this change (the
# frame reads the same); left to the book's owner.
@pytest.mark.parametrize(
    "book_version",
    sorted(BOOK_COLUMNS),
)
def test_a_checkpoint_of_an_earlier_release_is_used_and_gives_the_same_state(
    tmp_path, book_version
):
    uri = f"lmdb://{tmp_path}/store"
    before, sequence = _history_with_a_checkpoint(uri)
    # What the next close of A0 takes differences against: each of its rows' last close.
    closes = rows_from_checkpoint(_checkpoints(uri).read(BOOK).data).last_closes
    assert len(closes) == 8  # 4 instruments: 3 strategy rows and the account's row each
    assert rewrite_as_release(uri, book_version) > 0  # round trips left open to carry over

    server = start_test_server(store=uri, checkpoint_every=7)
    try:
        assert repr(sorted(server.running.service.writes.ledger.pnl.last_closes())) == repr(
            sorted(closes)
        )
        # The checkpoint was used (not a replay of the whole journal), and nothing differs.
        assert server.running.recovery.checkpoint_sequence == sequence
        assert server.running.recovery.replayed == before[1].as_of_sequence - sequence
        channel, stub = open_stub(server)
        with channel:
            assert everything(stub) == before
            assert acks(stub, pb_fill("BUY", 1, 1))[0].sequence == before[1].as_of_sequence + 1
    finally:
        server.stop()
    # The next checkpoint is written at the current version, with its versions.
    book = _checkpoints(uri).read(BOOK)
    assert list(book.data.columns) == BOOK_COLUMNS[BOOK_VERSION]
    assert book.metadata["versions"]["book"] == BOOK_VERSION


@pytest.mark.parametrize(
    ("symbol", "versions", "named"),
    [
        (BOOK, {"book": 99}, "checkpoints/book: book frame version 99"),
        (STATE, {"state": 2}, "checkpoints/state: state frame version 2"),
        (STATE, {"texts": {"Fill": 2}}, "checkpoints/state: Fill text version 2"),
    ],
)  # fmt: skip
def test_a_checkpoint_of_a_later_release_is_refused_at_start_naming_it(
    tmp_path, symbol, versions, named
):
    uri = f"lmdb://{tmp_path}/store"
    _history_with_a_checkpoint(uri)
    _rewrite(
        uri,
        symbol,
        lambda frame, metadata: (
            frame,
            {**metadata, "versions": {**metadata["versions"], **versions}},
        ),
    )
    with pytest.raises(NewerFormat, match=named):
        start_test_server(store=uri)


def test_a_book_of_no_known_layout_is_refused_not_misread(tmp_path):
    uri = f"lmdb://{tmp_path}/store"
    _history_with_a_checkpoint(uri)
    _rewrite(
        uri,
        BOOK,
        lambda frame, metadata: (frame.assign(from_a_later_release="x"), _unversioned(metadata)),
    )
    with pytest.raises(StoreUnusable, match="checkpoints/book: columns of no known version"):
        start_test_server(store=uri)


def test_a_checkpoint_with_a_book_only_is_replayed_as_before(tmp_path):
    """The first releases wrote a book only (format 1): not used, the journal is replayed."""
    uri = f"lmdb://{tmp_path}/store"
    before, sequence = _history_with_a_checkpoint(uri)
    _rewrite(
        uri,
        BOOK,
        lambda frame, _: (
            frame[~frame["anchor"]][BOOK_COLUMNS[2][:12]].reset_index(drop=True),
            {"sequence": sequence, "format": 1},
        ),
    )
    _rewrite(uri, STATE, lambda frame, metadata: None)
    server = start_test_server(store=uri)
    try:
        assert server.running.recovery.checkpoint_sequence == 0
        channel, stub = open_stub(server)
        with channel:
            assert everything(stub) == before
    finally:
        server.stop()


def test_a_state_without_the_sections_added_since_reads_as_before(tmp_path):
    """Guard: the state half of every release so far is version 1 (a section added since
    reads as empty), so a state without versions in its metadata reads as it did."""
    uri = f"lmdb://{tmp_path}/store"
    before, _ = _history_with_a_checkpoint(uri)
    _rewrite(
        uri,
        STATE,
        lambda frame, metadata: (
            frame[~frame["section"].isin(["fx_history", "ended_orders"])].reset_index(drop=True),
            _unversioned(metadata),
        ),
    )
    server = start_test_server(store=uri)
    try:
        channel, stub = open_stub(server)
        with channel:
            assert everything(stub) == before
    finally:
        server.stop()


def test_a_journal_frame_has_the_columns_of_the_current_layout():
    """The columns every release since the text journal wrote, and who booked each event (the
    audit trail): a journal of the release before is given them once at start
    (tests/storage/test_audit_trail.py), as the static schema refuses an append of others."""
    status = OrderStatusUpdate(
        update_id="U1", account_id="LIVE1", strategy_id="S1", order_ref="o1",
        instrument_id="AAPL", status=OrderStatus.SUBMITTED, timestamp_ns=T0,
    )  # fmt: skip
    frame = journal_frame([(1, _fill("F1")), (2, status)])
    assert list(frame.columns) == [
        "sequence", "kind", "event_id", "account_id", "event_time", "digest", "text",
        "principal", "role", "strategy_id", "instrument_id",
    ]  # fmt: skip
    assert frame["event_time"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    # a fill's row (a restart groups the window's fills by it); other kinds have none
    assert frame[["strategy_id", "instrument_id"]].values.tolist() == [["S1", "AAPL"], ["", ""]]


def _journal_before_rows(library: adb.library.Library) -> pd.DataFrame:
    """Rewrites the journal as the release before fills' rows wrote it (layout 2); returns
    the journal as it was."""
    current = library.read(EVENTS).data
    library.write(EVENTS, current[JOURNAL_LAYOUTS[2]], prune_previous_versions=True)
    return current


def test_a_journal_of_the_release_before_fills_rows_is_given_them_and_restarts_the_same(
    tmp_path,
):
    uri = f"lmdb://{tmp_path}"
    server = start_test_server(store=uri)
    try:
        channel, stub = open_stub(server)
        with channel:
            acks(stub, *mixed_history())
            before = everything(stub)
    finally:
        server.stop()
    gc.collect()
    current = _journal_before_rows(adb.Arctic(uri).get_library(JOURNAL))
    assert (current["kind"] == "fill").any() and (current["kind"] != "fill").any()
    gc.collect()
    server = start_test_server(store=uri)  # the checkpoint and the window's fills
    try:
        channel, stub = open_stub(server)
        with channel:
            assert everything(stub) == before
    finally:
        server.stop()
    gc.collect()
    upgraded = adb.Arctic(uri).get_library(JOURNAL).read(EVENTS).data
    assert list(upgraded.columns) == JOURNAL_LAYOUTS[JOURNAL_VERSION]
    # each row as this release writes it: a fill's ids from its text, "" for other kinds
    pd.testing.assert_frame_equal(upgraded.iloc[: len(current)], current)


def test_a_crash_in_the_middle_of_giving_fills_their_rows_begins_again(tmp_path):
    uri = f"lmdb://{tmp_path}"
    fills = [
        dataclasses.replace(_fill(f"F{n}"), strategy_id=f"S{n % 3}", instrument_id=f"I{n % 4}")
        for n in range(1, 26)
    ]
    marked = f"{VERSION_MARK}1{FIELD_SEPARATOR}{fills[4].text()}"  # version 1, marked
    _write_journal(uri, list(fills), {5: marked})
    library = adb.Arctic(uri).get_library(JOURNAL)
    current = _journal_before_rows(library)
    upgrade_killed_at_its_second_append(library, chunk_rows=10)
    current_journal(library, EVENTS, chunk_rows=7)  # the next start
    pd.testing.assert_frame_equal(library.read(EVENTS).data, current)
    assert library.list_symbols() == [EVENTS]


# -- the analysts' views -------------------------------------------------------------------


def _old_orders_frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    """An `orders` symbol as the release before order keys wrote it (its columns, its index)."""
    return ArcticViews._frame_of(
        rows, [int(row[2]) for row in rows], ORDERS_VIEW_BEFORE_KEYS, "status_time"
    )  # type: ignore[arg-type]


def test_an_orders_symbol_of_the_release_before_order_keys_takes_new_rows(tmp_path):
    """That release's symbols needed `delete_library("orders")` by hand: the first write now
    rewrites the symbol once with the new columns (empty in its rows), then appends go on."""
    uri = f"lmdb://{tmp_path}/store"
    arctic = adb.Arctic(uri)
    views = ArcticViews(arctic)
    old_row = ("u1", 1, T0, "S1", "ord-1", "1", "", "AAPL", "BUY", "SUBMITTED", "0", "10", "")
    old = _old_orders_frame([old_row])
    views.orders.write("A1", old)
    with pytest.raises(Exception, match=r"(?i)descriptor|schema|column"):
        views.orders.append("A1", old.assign(order_key="k"))  # why the symbol is rewritten

    update = OrderStatusUpdate(
        update_id="u2", account_id="A1", status=OrderStatus.FILLED, timestamp_ns=T0 + 5,
        order_ref="ord-1", order_id="1", filled_quantity=Decimal(10),
    )  # fmt: skip
    views.record([(2, update)], [])
    frame = views.orders.read("A1").data
    assert list(frame.columns) == ORDER_COLUMNS
    assert list(frame["update_id"]) == ["u1", "u2"]
    assert frame.iloc[0][["status", "order_key", "flag", "replaced", "corrects"]].tolist() == [
        "SUBMITTED", "", "", False, "",
    ]  # fmt: skip
    assert frame.iloc[1][["status", "filled_quantity"]].tolist() == ["FILLED", "10"]

    # A later start reads the rewritten symbol as it is and goes on appending.
    again = ArcticViews(arctic)
    later = OrderStatusUpdate(
        update_id="u3", account_id="A1", status=OrderStatus.FILLED, timestamp_ns=T0 + 9,
        order_ref="ord-2", order_id="2",
    )  # fmt: skip
    again.record([(3, later)], [])
    assert list(again.orders.read("A1").data["update_id"]) == ["u1", "u2", "u3"]


def test_an_orders_symbol_of_unknown_columns_is_refused_not_dropped(tmp_path):
    views = ArcticViews(adb.Arctic(f"lmdb://{tmp_path}/store"))
    row = ("u1", 1, T0, "S1", "ord-1", "1", "", "AAPL", "BUY", "SUBMITTED", "0", "10", "")
    newer = _old_orders_frame([row]).assign(from_a_later_release="x")
    views.orders.write("A1", newer)
    update = OrderStatusUpdate(
        update_id="u2", account_id="A1", status=OrderStatus.FILLED, timestamp_ns=T0 + 5,
        order_id="1",
    )  # fmt: skip
    with pytest.raises(ViewsIncomplete) as raised:
        views.record([(2, update)], [])
    assert "does not know" in raised.value.failing["orders/A1"]
    assert list(views.orders.read("A1").data.columns) == list(newer.columns)


def _as_release_before_orders(uri: str, sequence: int) -> None:
    """The whole store as the release before orders left it: a book-only checkpoint (format
    1), no views watermark, `orders` symbols without keys, rows without currencies."""
    _rewrite(
        uri,
        BOOK,
        lambda frame, _: (
            frame[~frame["anchor"]][BOOK_COLUMNS[2][:12]].reset_index(drop=True),
            {"sequence": sequence, "format": 1},
        ),
    )

    def rewrite() -> None:
        arctic = adb.Arctic(uri)
        checkpoints = arctic.get_library(CHECKPOINTS)
        for symbol in (STATE, "views_through"):
            checkpoints.delete(symbol)
        for name, columns in (
            ("orders", ORDERS_VIEW_BEFORE_KEYS),
            ("positions", POSITION_COLUMNS_BEFORE_CURRENCY),
            ("portfolio", POSITION_COLUMNS_BEFORE_CURRENCY),
        ):
            library = arctic.get_library(name)
            for symbol in library.list_symbols():
                frame = library.read(symbol).data[columns]
                library.write(symbol, frame, prune_previous_versions=True)

    rewrite()
    gc.collect()


def test_a_store_of_the_release_before_orders_opens_and_goes_on(tmp_path):
    """End to end: no `delete_library`, the same state, and new statuses and fills are written
    to the views it left (each old symbol rewritten once in the current columns)."""
    uri = f"lmdb://{tmp_path}/store"
    before, sequence = _history_with_a_checkpoint(uri)
    _as_release_before_orders(uri, sequence)

    server = start_test_server(store=uri)
    try:
        assert server.running.recovery.checkpoint_sequence == 0  # a book only: replayed
        channel, stub = open_stub(server)
        with channel:
            assert everything(stub) == before
            new = acks(stub, pb_status("after", "FILLED", order_id="15"), pb_fill("BUY", 1, 1))
            assert [a.result for a in new] == [pb.EVENT_RESULT_ACCEPTED] * 2
    finally:
        server.stop()  # waits for the views
    gc.collect()

    arctic = adb.Arctic(uri)
    orders = arctic.get_library("orders").read("A1").data
    assert list(orders.columns) == ORDER_COLUMNS
    assert orders["update_id"].iloc[-1] == "after"
    portfolio = arctic.get_library("portfolio").read("A1").data
    assert list(portfolio.columns) == POSITION_COLUMNS
