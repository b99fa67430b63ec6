"""The journal records who booked every write (issue 15: the audit trail): the principal's
name and role of the call that made it, `anonymous@<client>` with no auth configured, `system`
for what the service writes itself. A journal of the release before opens (its rows with an
empty principal), a write-ahead log's tail keeps its principals into the journal, and replays
give the same figures. Real gRPC server, real ArcticDB on LMDB."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import time
from pathlib import Path

import arcticdb as adb
import grpc
import pandas as pd
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.api.auth import RULES, WRITES
from server.application import writes
from server.application.writes import booking_as
from server.auth_config import token_hash
from server.domain.booker import SYSTEM, UNKNOWN, Booker
from server.storage.arctic import EVENTS, JOURNAL, WAL_FOLDER, ArcticEventStore
from server.storage.disk import StoreUnusable
from server.storage.frames import journal_frame
from server.storage.upcasters import JOURNAL_LAYOUTS, JOURNAL_VERSION, current_journal
from server.storage.wal import HEADER, WriteAheadLog, _crc
from tests.api.protocol import acks, pb_fill
from tests.api.test_reference_and_cash import fx, stream_marks, transfer
from tests.conftest import ServerThread, start_test_server
from tests.polling import wait_for
from tests.storage.test_restart import everything, mixed_history, open_stub
from tests.storage.test_wal import fill

WHO = ["principal", "role"]


def journal(uri: str) -> pd.DataFrame:
    gc.collect()  # LMDB: one open instance per path and process
    frame = adb.Arctic(uri).get_library(JOURNAL).read(EVENTS).data
    gc.collect()
    return frame


def _account(account_id: str) -> pb.DefineAccountRequest:
    return pb.DefineAccountRequest(
        account=pb.Account(account_id=account_id, kind=pb.ACCOUNT_KIND_PAPER, base_currency="USD")
    )


def test_with_no_auth_each_write_is_booked_by_its_client_and_the_services_own_by_system(
    tmp_path: Path,
) -> None:
    uri = f"lmdb://{tmp_path}"
    server = start_test_server(store=uri, fx_journal_seconds=0)  # every FX rate journaled
    try:
        channel, stub = open_stub(server)
        with channel:
            assert {a.result for a in acks(stub, *mixed_history()[:5])} == {
                pb.EVENT_RESULT_ACCEPTED
            }
            stub.DefineAccount(_account("P1"))
            # The FX rate of a marks stream is journaled in the stream's name.
            stream_marks(stub, pb.MarkBatch(batch_id="m1", fx_rates=[fx("EUR", "USD", "1.1")]))
            assert wait_for(lambda: server.running.service.writes.sequence == 7)
        # The service's own write (as a day close or a scheduled reconciliation): no call.
        service = server.running.service
        (outcome,) = server.call(service.ingest([fill(900)]))
        assert outcome.sequence == 8
    finally:
        server.stop()
    rows = journal(uri)
    assert list(rows["kind"])[5:] == ["account", "fx", "fill"]
    anonymous = ("anonymous@127.0.0.1", "")
    assert [tuple(r) for r in rows[WHO].itertuples(index=False)] == [anonymous] * 7 + [SYSTEM]


def _auth_file(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                "principals": [
                    {
                        "name": "relay-ny",
                        "role": "relay",
                        "accounts": "*",
                        "token_sha256": token_hash("t-relay"),
                    },
                    {
                        "name": "relay-ld",
                        "role": "relay",
                        "accounts": "*",
                        "token_sha256": token_hash("t-relay-2"),
                    },
                    {
                        "name": "ops-anna",
                        "role": "operator",
                        "accounts": "*",
                        "token_sha256": token_hash("t-ops"),
                    },
                ]
            }
        )
    )
    return path


def _as(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_with_auth_each_write_is_booked_by_its_principal_and_role(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path / 'store'}"
    server = start_test_server(store=uri, auth_file=str(_auth_file(tmp_path / "auth.json")))
    try:
        _book_as_principals(server)
    finally:
        server.stop()
    rows = journal(uri)
    assert list(rows["kind"]) == ["fill", "status", "transfer", "account", "reserve"]
    assert [tuple(r) for r in rows[WHO].itertuples(index=False)] == [("relay-ny", "relay")] * 3 + [
        ("ops-anna", "operator")
    ] * 2


def _book_as_principals(server: ServerThread) -> None:
    cash = transfer("t1", "100", account="P1")  # a cash transfer: booked by the relay too
    history = mixed_history()[:2]
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        (answer,) = stub.Ingest(
            iter([pb.IngestRequest(batch_id="b1", events=[*history, cash])]),
            metadata=_as("t-relay"),
        )
        assert {a.result for a in answer.acks} == {pb.EVENT_RESULT_ACCEPTED}
        stub.DefineAccount(_account("P1"), metadata=_as("t-ops"))
        stub.ReserveCash(
            pb.ReserveCashRequest(reservation_id="r1", account_id="P1", currency="USD", amount="5"),
            metadata=_as("t-ops"),
        )
        # A resend by another principal is the same event (a duplicate, journaled once, as
        # its first booker booked it): who booked it is not part of the event's text.
        (again,) = stub.Ingest(
            iter([pb.IngestRequest(batch_id="b2", events=history[:1])]),
            metadata=_as("t-relay-2"),
        )
        assert again.acks[0].result == pb.EVENT_RESULT_DUPLICATE


def _journal_of_the_release_before(uri: str, events: list[tuple[int, object]]) -> None:
    """The journal as the release before the audit trail wrote it (its seven columns)."""
    frame = journal_frame(events)  # type: ignore[arg-type]
    frame = frame[JOURNAL_LAYOUTS[1]]
    adb.Arctic(uri).get_library(JOURNAL, create_if_missing=True).write(EVENTS, frame)
    gc.collect()


def test_a_journal_of_the_release_before_opens_with_an_empty_principal_and_the_same_figures(
    tmp_path: Path,
) -> None:
    uri = f"lmdb://{tmp_path}"
    history = mixed_history()
    server = start_test_server(store=uri)
    try:
        channel, stub = open_stub(server)
        with channel:
            acks(stub, *history)
            before = everything(stub)
    finally:
        server.stop()
    # Rewrite it as the release before wrote it, and drop the checkpoint: a start replays it.
    gc.collect()
    arctic = adb.Arctic(uri)
    library = arctic.get_library(JOURNAL)
    library.write(EVENTS, library.read(EVENTS).data[JOURNAL_LAYOUTS[1]])
    arctic.delete_library("checkpoints")
    del arctic, library
    gc.collect()

    server = start_test_server(store=uri)
    try:
        channel, stub = open_stub(server)
        with channel:
            assert everything(stub) == before  # replayed to the same figures
            more = pb_fill("BUY", 1, 10, fill_id="after-upgrade")
            assert acks(stub, more)[0].result == pb.EVENT_RESULT_ACCEPTED
    finally:
        server.stop()
    rows = journal(uri)
    assert list(rows.columns) == JOURNAL_LAYOUTS[JOURNAL_VERSION]  # through every layout
    assert len(rows) == len(history) + 1
    assert set(rows[WHO][:-1].itertuples(index=False)) == {("", "")}  # never recorded
    assert tuple(rows[WHO].iloc[-1]) == ("anonymous@127.0.0.1", "")


def test_a_journal_of_unknown_columns_is_refused_not_rewritten(tmp_path: Path) -> None:
    uri = f"lmdb://{tmp_path}"
    frame = journal_frame([(1, fill(1))]).assign(signed_by="x")  # a later release's?
    adb.Arctic(uri).get_library(JOURNAL, create_if_missing=True).write(EVENTS, frame)
    gc.collect()
    with pytest.raises(StoreUnusable, match="journal/events: columns of no layout"):
        ArcticEventStore(uri)
    gc.collect()
    assert list(journal(uri).columns) == [*JOURNAL_LAYOUTS[JOURNAL_VERSION], "signed_by"]


def test_the_write_ahead_logs_tail_keeps_its_principals_into_the_journal(tmp_path: Path) -> None:
    """Acknowledged before a crash the journal did not follow: a start copies the log's tail
    into the journal with who booked each event; a record of the release before (no booker)
    is copied with an empty one."""
    uri = f"lmdb://{tmp_path}"
    _journal_of_the_release_before(uri, [(1, fill(1))])
    folder = tmp_path / WAL_FOLDER
    folder.mkdir()
    # Sequence 2 in the bytes of the release before: no booker after the time.
    payload = b"%d\x00fill\x00%s" % (time.time_ns(), fill(2).text().encode())
    old = HEADER.pack(len(payload), 2, _crc(2, payload)) + payload
    (folder / f"{2:020d}.wal").write_bytes(old)
    log = WriteAheadLog(folder)
    assert [(r.sequence, r.booker) for r in log.open()] == [(2, UNKNOWN)]
    relay, ops = Booker("relay-ny", "relay"), Booker("ops-anna", "operator")
    log.write([(3, "fill", fill(3).text(), relay), (4, "fill", fill(4).text(), ops)])
    log.write([(5, "fill", fill(5).text(), SYSTEM)])
    log.close()
    store = ArcticEventStore(uri)
    store.close()
    rows = journal(uri)
    assert list(rows["sequence"]) == [1, 2, 3, 4, 5]
    assert [tuple(r) for r in rows[WHO].itertuples(index=False)] == [
        ("", ""), ("", ""), relay, ops, SYSTEM,
    ]  # fmt: skip


def test_a_write_made_in_no_calls_name_is_the_services_own() -> None:
    """The booker of a call is that call's (a context variable: its task and the tasks it
    starts); outside any call it is SYSTEM."""
    seen: list[Booker] = []

    async def call(booker: Booker | None) -> None:
        if booker is not None:
            booking_as(booker)
        await asyncio.sleep(0)
        seen.append(writes._booker.get())

    async def main() -> None:
        relay = Booker("relay-ny", "relay")
        await asyncio.gather(
            asyncio.create_task(call(relay)), asyncio.create_task(call(None)),
        )  # fmt: skip

    contextvars.copy_context().run(asyncio.run, main())
    assert seen == [Booker("relay-ny", "relay"), SYSTEM]


def test_the_rpcs_booked_in_their_callers_name_are_rpcs_of_the_service() -> None:
    assert RULES.keys() >= WRITES
    assert "ListPositions" not in WRITES  # the marks feed reads the book: not a write


def _old_journal(tmp_path: Path, count: int) -> tuple[adb.library.Library, pd.DataFrame]:
    uri = f"lmdb://{tmp_path}"
    _journal_of_the_release_before(uri, [(n, fill(n)) for n in range(1, count + 1)])
    library = adb.Arctic(uri).get_library(JOURNAL)
    return library, library.read(EVENTS).data


def _upgraded(before: pd.DataFrame) -> pd.DataFrame:
    """Through every layout since: no principal, and each fill's row from its text."""
    return before.assign(principal="", role="", strategy_id="S1", instrument_id="AAPL")


def test_the_journal_is_upgraded_by_chunks_to_the_same_rows(tmp_path: Path) -> None:
    library, before = _old_journal(tmp_path, 25)
    current_journal(library, EVENTS, chunk_rows=10)
    after = library.read(EVENTS).data
    pd.testing.assert_frame_equal(after, _upgraded(before))
    assert len(library.list_versions(EVENTS)) == 1  # the old one pruned once whole
    assert library.list_symbols() == [EVENTS]  # no marker left
    library.append(EVENTS, journal_frame([(26, fill(26))]))  # takes this release's rows


def upgrade_killed_at_its_second_append(library: adb.library.Library, chunk_rows: int) -> None:
    """Runs the journal's upgrade (current_journal) as a process killed during its second
    append of a chunk would: the first chunk written, the rest not."""
    append, calls = library.append, []

    def crash_on_the_second(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("killed")
        return append(*args, **kwargs)  # type: ignore[arg-type]

    library.append = crash_on_the_second  # type: ignore[method-assign]
    try:
        with pytest.raises(OSError, match="killed"):
            current_journal(library, EVENTS, chunk_rows=chunk_rows)
    finally:
        library.append = append  # type: ignore[method-assign]


def test_a_crash_in_the_middle_of_the_upgrade_begins_again_from_the_old_version(
    tmp_path: Path,
) -> None:
    library, before = _old_journal(tmp_path, 25)
    upgrade_killed_at_its_second_append(library, chunk_rows=10)
    assert library.get_description(EVENTS).row_count == 20  # partial, the old one kept
    current_journal(library, EVENTS, chunk_rows=7)  # the next start
    pd.testing.assert_frame_equal(library.read(EVENTS).data, _upgraded(before))
    assert library.list_symbols() == [EVENTS]
    current_journal(library, EVENTS)  # and then nothing more to do
    assert len(library.list_versions(EVENTS)) == 1


def test_a_crash_after_the_new_journal_was_whole_only_removes_the_marker(tmp_path: Path) -> None:
    library, before = _old_journal(tmp_path, 5)
    current_journal(library, EVENTS)
    library.write(f"{EVENTS}-upgrading", pd.DataFrame({"rows": [5]}),
                  metadata={"version": 0, "rows": 5})  # fmt: skip  # left by a crash
    current_journal(library, EVENTS)
    pd.testing.assert_frame_equal(library.read(EVENTS).data, _upgraded(before))
    assert library.list_symbols() == [EVENTS]
