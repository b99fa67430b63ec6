"""The event store in ArcticDB.

Libraries (analysts read the first four; see the README):
- `journal`, symbol `events`: every accepted event, one row each, index = sequence. On a local
  store a group is durable once in the write-ahead log (wal.py) and the journal follows on the
  copier's thread (journal_copier.py); elsewhere one append per group commit. Either way a
  group is durable as a whole or not at all, and the sequence stays gap-free: ArcticDB refuses
  an append whose RangeIndex does not continue the symbol's, which guards it a second time.
- `checkpoints`, symbols `book` (every position row) and `state` (orders, balances,
  reservations, instruments, accounts, rates, marks) at one sequence, replaced each time: a
  checkpoint is a whole-state snapshot by nature. `state` is written first; recovery uses the
  pair only when both name the same sequence (a crash between the two writes costs a longer
  replay, never a wrong state).
- `marks`, symbol `latest`: the latest market marks and FX rates, replaced at most every
  second or so while they move (marks are market data, not journaled).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import arcticdb as adb
import numpy as np
import pandas as pd
from arcticdb.exceptions import ArcticException

from server.application.ports import (
    Checkpoint,
    OrderTransition,
    ReconciliationRun,
    SeenEvents,
    Sequenced,
    StorageUnavailable,
    ViewsIncomplete,
)
from server.domain.balances import Balance
from server.domain.book import PositionView
from server.domain.events import CommissionAmendment, ExecutionEvent, Fill, FillCorrection
from server.domain.marks import FxRate, Mark
from server.domain.orders import Order
from server.domain.pnl_history import DailyPnl
from server.domain.restatement import JournaledFills
from server.storage.disk import DiskGuard, StoreUnusable
from server.storage.frames import (
    checkpoint_frame,
    events_from_journal,
    journal_frame,
    rows_from_checkpoint,
)
from server.storage.gate import gate_writes
from server.storage.journal_copier import JournalCopier
from server.storage.lock import WriterLease, WriterLock, lease_seconds
from server.storage.pnl_views import PnlViews
from server.storage.receipts import Receipts
from server.storage.state_frames import marks_frame, state_frame, state_from_frame
from server.storage.stored_orders import stored_order
from server.storage.upcasters import (
    check_checkpoint,
    checkpoint_versions,
    current_journal,
    empty_anchors_left_out,
)
from server.storage.views import ArcticViews
from server.storage.wal import WriteAheadLog

log = logging.getLogger("portfolio.storage")

JOURNAL, EVENTS = "journal", "events"
CHECKPOINTS, BOOK, STATE = "checkpoints", "book", "state"
MARKS, LATEST = "marks", "latest"
COMPACT_EVERY = 1000  # appends between compactions of the journal
WAL_FOLDER = "portfolio-wal"  # in the store's folder, beside ArcticDB's libraries
CATCH_UP_ROWS = 50_000  # events per journal append when a start copies the log's tail
# A disk check before a log write stands this long: a full disk fails the log's write safely
# (cut back, not acknowledged), and ArcticDB's own appends still check every time.
WAL_DISK_CHECK_SECONDS = 0.1
# How long closing waits for the journal to take the log's tail: inside the 5 s a stop has past
# its grace (app.STOP_MARGIN_SECONDS); what is left stays in the log for the next start.
CLOSE_COPY_SECONDS = 3.0
EVENT_AT_ROWS = 64  # rows read around a sequence's expected position to find its event
# What a replay reads of the journal: the event (a read of every column took ~1.8x as long).
EVENT_COLUMNS = ["sequence", "kind", "text"]
REPLAY_CHUNK = 200_000  # journal rows read at once when replaying a range (point in time)
# A fill's text ends with its trace id (codec field order): one with a trace does not end with
# the field separator. Read in the store, so a restart decodes traced fills only (was: every
# fill received within a TTL, 12 s a million); each is still checked once decoded. Anchored
# and possessive, one pass over a text: "[^\x1f]$" was tried at every offset (measured 2.3
# against 0.6 us a journal row, 0.2 of which is reading the text at all).
TRACED_FILL = "^(?:[^\x1f]*+\x1f)*+[^\x1f]++$"
TRACE_IDS_PER_QUERY = 100  # trace ids per regex when a restart looks for a trace's older legs


def _distinct_pairs(firsts: pd.Series, seconds: pd.Series) -> set[tuple[str, str]]:
    """The distinct (first, second) of two columns of strings: each column's values numbered
    in C, then the distinct pairs of numbers (a tuple per row into a set took 0.3 us a row,
    1.4 s of a restart on five million events)."""
    first_codes, first_values = pd.factorize(firsts, use_na_sentinel=False)
    second_codes, second_values = pd.factorize(seconds, use_na_sentinel=False)
    width = max(len(second_values), 1)
    pairs = np.unique(first_codes.astype(np.int64) * width + second_codes).tolist()
    return {(first_values[pair // width], second_values[pair % width]) for pair in pairs}


def resolve_uri(uri: str) -> str:
    """An LMDB URI with an absolute folder, so the lock and the store name the same place."""
    if not uri.startswith("lmdb://"):
        return uri
    parts = urlsplit(uri)
    folder = Path(parts.netloc + parts.path).expanduser().resolve()
    return f"lmdb://{folder}" + (f"?{parts.query}" if parts.query else "")


def _lmdb_folder(uri: str) -> Path | None:
    if not uri.startswith("lmdb://"):
        return None
    return Path(urlsplit(uri).path)


class ArcticEventStore:
    # When journaled events had been received (for the traces' TTL), loaded on first use.
    _receipts: Receipts | None = None
    # A local store acknowledges after its write-ahead log (wal.py); None elsewhere.
    _wal: WriteAheadLog | None = None
    _copier: JournalCopier | None = None
    _log_receipts: tuple[tuple[int, int], ...] = ()  # what the log's files say, at open

    def __init__(self, uri: str) -> None:
        """Raises StoreLocked when another service writes to the store, StoreUnusable when it
        cannot be written (full, read-only, not permitted, unreachable)."""
        self.uri = resolve_uri(uri)
        folder = _lmdb_folder(self.uri)
        where = str(folder) if folder else self.uri.split("?")[0]  # no credentials in logs
        # LMDB must never see a failed commit (see server/storage/disk.py): check first.
        self._disk = DiskGuard(folder) if folder else None
        problem = self._disk.problem() if self._disk else None
        if problem:
            raise StoreUnusable(f"cannot open store {where}: {problem}")
        self._lock: WriterLock | WriterLease | None = None
        try:
            self._lock = WriterLock(folder) if folder else None
            self.arctic = adb.Arctic(self.uri)
            if self._disk:
                gate_writes(self.arctic, self._disk.check, self._disk.failed)
            self.journal = self.arctic.get_library(JOURNAL, create_if_missing=True)
            self.checkpoints = self.arctic.get_library(CHECKPOINTS, create_if_missing=True)
            self.marks = self.arctic.get_library(MARKS, create_if_missing=True)
            if not folder and not self.uri.startswith("mem://"):
                # Its own handle: the lease renews itself from another thread.
                lease_library = adb.Arctic(self.uri).get_library(CHECKPOINTS)
                self._lock = WriterLease(lease_library, lease_seconds())
                # A writer that lost its lease writes nothing more: no view, mark, checkpoint.
                gate_writes(self.arctic, self._lock.check_held)
                self.journal = self.arctic.get_library(JOURNAL)
                self.checkpoints = self.arctic.get_library(CHECKPOINTS)
                self.marks = self.arctic.get_library(MARKS)
        except (OSError, ArcticException) as error:
            self.close()
            cause = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise StoreUnusable(f"cannot open store {where}: {cause}") from error
        except Exception:
            self.close()
            raise
        self.views = ArcticViews(self.arctic)
        self.pnl = PnlViews(self.arctic)
        try:
            current_journal(self.journal, EVENTS)  # a journal of before the audit trail
        except Exception:
            self.close()
            raise
        self._journal_exists = self.journal.has_symbol(EVENTS)
        self._appends = 0
        self._view_symbols: set[tuple[str, str]] | None = None
        self._first_sequence: int | None = None  # the journal's first row's (it never changes)
        if folder:
            try:
                self._open_log(folder)
            except Exception:
                self.close()
                raise

    def close(self) -> None:
        """Lets go of the store (LMDB allows one open instance per path and process), once
        the journal holds what the log does (if it cannot, the log keeps it for the next
        start)."""
        views = getattr(self, "views", None)  # not yet there if opening failed
        if views is not None:  # a stop's pending history snapshot (when written by a thread)
            views.flush_history()
        if self._copier is not None:
            if not self._copier.stop(CLOSE_COPY_SECONDS):
                behind = self._copier.backlog
                log.warning("closing with %d events in the write-ahead log only (the next "
                            "start copies them into the journal)", behind)  # fmt: skip
            self._copier = None
        if self._wal is not None:
            self._wal.close()
            self._wal = None
        if self._lock:
            self._lock.release()
            self._lock = None
        if self._disk:
            self._disk.close()
        for name in ("views", "marks", "checkpoints", "journal", "arctic"):
            self.__dict__.pop(name, None)

    # -- the journal -----------------------------------------------------------------------

    def append(self, group: Sequence[Sequenced]) -> None:
        """Makes a group durable: on a local store in the write-ahead log (the journal
        follows on the copier's thread), elsewhere straight in the journal."""
        if self._wal is None or self._copier is None:
            self._append_journal(group)
            self._known_receipts().note(group[-1][0], time.time_ns())
            return
        if self._disk:  # the log takes from the same room the store keeps free
            self._disk.check(max_age=WAL_DISK_CHECK_SECONDS)
        self._copier.check_room()
        try:
            self._wal.write(
                [(sequence, event.kind, event.text(), event.booker) for sequence, event in group]
            )
        except OSError as error:
            raise StorageUnavailable(f"write-ahead log write failed: {error}") from error
        self._known_receipts().note(group[-1][0], time.time_ns())
        self._copier.put(group)

    def _append_journal(self, group: Sequence[Sequenced]) -> None:
        frame = journal_frame(group)
        if self._disk:  # refused before ArcticDB is called: retrying stays safe (disk.py)
            self._disk.check()
        if isinstance(self._lock, WriterLease):  # a writer that lost its lease never appends
            self._lock.check()
        try:
            if self._journal_exists:
                # Pruning every time keeps disk use growing with the data only (measured:
                # pruning every 50th append stored a third more and grew faster).
                self.journal.append(EVENTS, frame, prune_previous_versions=True)
            else:
                self.journal.write(EVENTS, frame, prune_previous_versions=True)
                self._journal_exists = True
        except Exception as error:  # ArcticDB, the OS and the network all raise their own
            if self._landed(group[-1][0]):
                log.warning("append reported %s but the group is stored", error)
                return
            raise StorageUnavailable(f"journal append failed: {error}") from error
        self._appends += 1
        if self._appends % COMPACT_EVERY == 0:
            self._compact()

    def _open_log(self, folder: Path) -> None:
        """Opens the write-ahead log and copies into the journal what it holds beyond it
        (acknowledged before a stop the journal did not follow), before anything reads."""
        self._wal = WriteAheadLog(folder / WAL_FOLDER)
        last = self._journal_last()
        behind = self._wal.open(after=last)
        self._log_receipts = tuple(self._wal.receipts)
        if behind and behind[0].sequence != last + 1:
            raise StoreUnusable(
                f"write-ahead log {self._wal.folder} continues at sequence "
                f"{behind[0].sequence} but the journal ends at {last}: events are missing"
            )
        for start in range(0, len(behind), CATCH_UP_ROWS):
            chunk = pd.DataFrame(
                [
                    (r.sequence, r.kind, r.text, *r.booker)
                    for r in behind[start : start + CATCH_UP_ROWS]
                ],
                columns=["sequence", "kind", "text", "principal", "role"],
            )
            self._append_journal(list(events_from_journal(chunk, booked=True)))
        if behind:
            log.info("copied %d events from the write-ahead log into the journal", len(behind))
        self._wal.release_through(max(last, behind[-1].sequence if behind else 0))
        self._copier = JournalCopier(self._append_journal, self._wal.release_through)

    @property
    def journal_current(self) -> bool:
        """Whether the journal's appends work (the log holds what they have not taken)."""
        return self._copier is None or not self._copier.fault

    def watch_journal(self, on_health: Callable[[bool], None]) -> None:
        """`on_health` hears, from the copier's thread, when journal appends start failing
        and when they work again."""
        if self._copier is not None:
            self._copier.on_health = on_health

    def _journal_last(self) -> int:
        if not self.journal.has_symbol(EVENTS):
            return 0
        tail = self.journal.tail(EVENTS, 1, columns=["sequence"]).data
        return int(tail["sequence"].iloc[-1]) if len(tail) else 0

    def _current_journal(self) -> contextlib.AbstractContextManager[None]:
        """Holds the journal complete (nothing acknowledged missing) while it is read."""
        return self._copier.quiet() if self._copier else contextlib.nullcontext()

    def _landed(self, sequence: int) -> bool:
        """Whether the journal holds `sequence` (an error may come after the write landed)."""
        try:
            if not self.journal.has_symbol(EVENTS):
                return False
            self._journal_exists = True
            tail = self.journal.tail(EVENTS, 1, columns=["sequence"]).data
            return bool(len(tail)) and int(tail["sequence"].iloc[-1]) >= sequence
        except Exception:
            return False

    def _compact(self) -> None:
        try:
            # Segments of COMPACT_EVERY rows: each compaction merges only the latest appends,
            # so its cost, and what it frees, stays the same however long the journal grows
            # (the default 100,000-row segments made every compaction rewrite a growing tail).
            self.journal.compact_data(
                EVENTS, rows_per_segment=COMPACT_EVERY, prune_previous_versions=True
            )
        except ArcticException as error:  # compaction is an optimisation: log and go on
            log.warning("journal compaction failed: %s", error)

    def _read(self, **kwargs: object) -> pd.DataFrame:
        with self._current_journal():
            if not self.journal.has_symbol(EVENTS):
                return pd.DataFrame()
            return self.journal.read(EVENTS, **kwargs).data

    def seen_events(self) -> SeenEvents:
        # Not the accounts: only a store from before the views' watermark needs them (read
        # then by views_recorded_through; here they cost 0.15 us an event of every start).
        frame = self._read(columns=["kind", "event_id", "sequence", "digest"])
        if frame.empty:
            return SeenEvents([], [], np.empty(0, np.int64), np.empty(0, np.int64))
        return SeenEvents(  # the numbers as numpy columns: no Python int per value
            frame["kind"].tolist(), frame["event_id"].tolist(),
            frame["sequence"].to_numpy(np.int64), frame["digest"].to_numpy(np.int64),
        )  # fmt: skip

    def events_after(self, sequence: int) -> Iterator[Sequenced]:
        query = adb.QueryBuilder()
        query = query[query["sequence"] > sequence]
        frame = self._read(query_builder=query, columns=EVENT_COLUMNS)
        if not frame.empty:
            yield from events_from_journal(frame.sort_values("sequence", kind="stable"))

    def events_through(self, after: int, through: int) -> Iterator[Sequenced]:
        lower = after
        while lower < through:  # in chunks: a long journal is never in memory at once
            upper = min(lower + REPLAY_CHUNK, through)
            query = adb.QueryBuilder()
            query = query[(query["sequence"] > lower) & (query["sequence"] <= upper)]
            frame = self._read(query_builder=query, columns=EVENT_COLUMNS)
            if not frame.empty:
                yield from events_from_journal(frame.sort_values("sequence", kind="stable"))
            lower = upper

    def sequence_received_by(self, time_ns: int) -> int:
        return self._known_receipts().received_before(time_ns)

    def event_at(self, sequence: int) -> ExecutionEvent | None:
        # Rows hold sequences 1, 2, ... in order; a row journaled twice only moves the later
        # ones further, so the row is at position sequence - 1 or a little after: a read of
        # a few rows there (about 3 ms), a scan of the sequence column only if not found.
        columns = ["sequence", "kind", "text"]
        frame = pd.DataFrame(columns=columns)
        for attempt in range(3):  # a read racing the append's pruning of the old version
            try:
                with self._current_journal():
                    frame = self._rows_at(sequence, columns)
                break
            except StorageUnavailable:
                raise
            except Exception as error:
                if attempt == 2:
                    raise StorageUnavailable(f"journal read failed: {error}") from error
        for _, event in events_from_journal(frame.head(1)):
            return event
        return None

    def _rows_at(self, sequence: int, columns: list[str]) -> pd.DataFrame:
        if not self.journal.has_symbol(EVENTS):
            return pd.DataFrame(columns=columns)
        start = max(sequence - 1, 0)
        frame = self.journal.read(
            EVENTS, row_range=(start, start + EVENT_AT_ROWS), columns=columns
        ).data
        frame = frame[frame["sequence"] == sequence]
        if frame.empty:
            query = adb.QueryBuilder()
            query = query[query["sequence"] == sequence]
            frame = self.journal.read(EVENTS, query_builder=query, columns=columns).data
        return frame

    def traced_fills_received_since(
        self, time_ns: int, up_to_sequence: int
    ) -> Iterator[tuple[int, Fill, int]]:
        receipts = self._known_receipts()
        after = receipts.received_before(time_ns)  # received before `time_ns`: expired
        query = adb.QueryBuilder()
        wanted = query["sequence"] > after
        if after == 0 and receipts.floor:  # a journal from before receipts were noted
            since = pd.Timestamp(time_ns, unit="ns", tz="UTC")
            wanted = (query["sequence"] > receipts.floor) | (query["event_time"] >= since)
        query = query[
            (query["kind"] == "fill")
            & wanted
            & (query["sequence"] <= up_to_sequence)
            & query["text"].regex_match(TRACED_FILL)
        ]
        legs = list(self._traced_fills(query, first_row=self._row_at_or_before(after + 1)))
        if legs and after:  # a live trace's legs received earlier belong to it all the same
            legs[:0] = self._earlier_legs({fill.trace_id for _, fill, _ in legs}, after)
        yield from legs

    def _row_at_or_before(self, sequence: int) -> int:
        """A row no later than the first holding `sequence` or a later one: the rows hold
        consecutive sequences from the first row's (ArcticDB refuses an append that leaves a
        gap: the RangeIndex is the sequence), a row journaled twice only moving later ones
        further. So a read of the rows from there misses none after `sequence`."""
        if self._first_sequence is None:
            with self._current_journal():
                if not self.journal.has_symbol(EVENTS):
                    return 0
                head = self.journal.head(EVENTS, 1, columns=["sequence"]).data
            if not len(head):
                return 0
            self._first_sequence = int(head["sequence"].iloc[0])
        return max(sequence - self._first_sequence, 0)

    def _traced_fills(
        self, query: adb.QueryBuilder, trace_ids: set[str] | None = None, first_row: int = 0
    ) -> Iterator[tuple[int, Fill, int]]:
        """`first_row`: no row before it holds a fill the query wants (_row_at_or_before)."""
        frame = self._read(query_builder=query, columns=EVENT_COLUMNS, row_range=(first_row, None))
        if frame.empty:
            return
        for sequence, event in events_from_journal(frame.sort_values("sequence")):
            if not isinstance(event, Fill) or not event.trace_id:
                continue
            if trace_ids is None or event.trace_id in trace_ids:
                yield sequence, event, self.received_by(sequence)

    def _earlier_legs(
        self, trace_ids: set[str], up_to_sequence: int
    ) -> list[tuple[int, Fill, int]]:
        """The legs of these traces up to a sequence: the journal's text holds each fill's
        fields separated by US (0x1f), so a regex finds the candidates, checked exactly."""
        ordered = sorted(trace_ids)
        legs: list[tuple[int, Fill, int]] = []
        for start in range(0, len(ordered), TRACE_IDS_PER_QUERY):
            chunk = ordered[start : start + TRACE_IDS_PER_QUERY]
            pattern = "\x1f(" + "|".join(re.escape(trace_id) for trace_id in chunk) + ")(\x1f|$)"
            query = adb.QueryBuilder()
            query = query[
                (query["kind"] == "fill")
                & (query["sequence"] <= up_to_sequence)
                & query["text"].regex_match(pattern)
            ]
            legs.extend(self._traced_fills(query, trace_ids))
        return sorted(legs, key=lambda leg: leg[0])

    def received_by(self, sequence: int) -> int:
        bound = self._known_receipts().received_by(sequence)
        return bound if bound is not None else time.time_ns()

    def _known_receipts(self) -> Receipts:
        """The anchors the latest checkpoint carried, with the checkpoint's own write and the
        journal's last write (the time a version was written bounds what it holds)."""
        if self._receipts is not None:
            return self._receipts
        known: list[tuple[int, int]] = list(self._log_receipts)
        saved: object = None
        if self.checkpoints.has_symbol(STATE):
            state = self.checkpoints.read_metadata(STATE)
            known.append((int(state.metadata["sequence"]), int(state.timestamp)))
            saved = state.metadata.get("receipts", {})  # {}: written before receipts
        with self._current_journal():
            if self.journal.has_symbol(EVENTS):
                tail = self.journal.tail(EVENTS, 1, columns=["sequence"]).data
                if len(tail):
                    written = int(self.journal.read_metadata(EVENTS).timestamp)
                    known.append((int(tail["sequence"].iloc[-1]), written))
        self._receipts = Receipts.decoded(saved, known)
        return self._receipts

    def correctable_fills(
        self, time_ns: int, up_to_sequence: int
    ) -> Iterator[tuple[int, JournaledFills | FillCorrection | CommissionAmendment]]:
        query = adb.QueryBuilder()
        query = query[
            (
                (
                    (query["kind"] == "fill")
                    & (query["event_time"] >= pd.Timestamp(time_ns, unit="ns", tz="UTC"))
                )
                | (query["kind"] == "correction")
                | (query["kind"] == "commission")
            )
            & (query["sequence"] <= up_to_sequence)
        ]
        columns = [
            "sequence", "kind", "event_id", "account_id", "strategy_id", "instrument_id",
            "event_time", "text",
        ]  # fmt: skip
        frame = self._read(query_builder=query, columns=columns)
        if frame.empty:
            return
        if not frame["sequence"].is_monotonic_increasing:  # as appended: a copy saved
            frame = frame.sort_values("sequence", kind="stable")
        kinds = frame["kind"].to_numpy()
        sequences = frame["sequence"].to_numpy(dtype=np.int64)
        fills = JournaledFills(
            sequences, frame["account_id"].to_numpy(dtype=object),
            frame["strategy_id"].to_numpy(dtype=object),
            frame["instrument_id"].to_numpy(dtype=object),
            frame["event_id"].to_numpy(dtype=object),
            frame["event_time"].astype("int64").to_numpy(dtype=np.int64),
            frame["text"].to_numpy(dtype=object),
        )  # fmt: skip
        others = np.flatnonzero(kinds != "fill").tolist()  # fills come in runs between them
        start = 0
        for stop in [*others, len(kinds)]:
            if stop > start:  # a run of fills, as columns (no object per fill)
                yield int(sequences[start]), JournaledFills._make(c[start:stop] for c in fills)
            if stop < len(kinds):
                text = fills.texts[stop]
                event = (
                    FillCorrection.from_text(text)
                    if kinds[stop] == "correction"
                    else CommissionAmendment.from_text(text)
                )
                yield int(sequences[stop]), event
            start = stop + 1

    # -- the analysts' views ---------------------------------------------------------------

    def record_views(
        self,
        events: Sequence[Sequenced],
        positions: Iterable[PositionView],
        transitions: Sequence[OrderTransition] = (),
        runs: Sequence[ReconciliationRun] = (),
        balances: Sequence[Balance] = (),
    ) -> None:
        try:
            self.views.record(events, positions, transitions, runs, balances)
        except ViewsIncomplete:
            raise  # each symbol on its own: the others were written
        except Exception as error:
            raise StorageUnavailable(f"views update failed: {error}") from error

    def record_close(
        self, close_ns: int, positions: Iterable[PositionView], balances: Iterable[Balance]
    ) -> None:
        try:
            self.views.record_close(close_ns, positions, balances)
        except Exception as error:
            raise StorageUnavailable(f"close snapshot failed: {error}") from error

    def record_pnl(self, days: Iterable[DailyPnl], late: bool) -> list[str]:
        try:
            return self.pnl.record(days, late)
        except Exception as error:
            raise StorageUnavailable(f"pnl write failed: {error}") from error

    def pnl_written_through(self, account_id: str) -> str:
        try:
            return self.pnl.written_through(account_id)
        except Exception as error:
            raise StorageUnavailable(f"pnl read failed: {error}") from error

    def order_from_views(self, account_id: str, order_id: str, order_ref: str) -> Order | None:
        try:
            return stored_order(self.views, account_id, order_id, order_ref)
        except Exception as error:
            raise StorageUnavailable(f"orders view read failed: {error}") from error

    def record_marks(self, marks: Sequence[Mark], rates: Sequence[FxRate]) -> None:
        try:
            self.marks.write(LATEST, marks_frame(list(marks), list(rates)),
                             prune_previous_versions=True)  # fmt: skip
        except Exception as error:
            raise StorageUnavailable(f"marks write failed: {error}") from error

    def latest_marks(self) -> tuple[list[Mark], list[FxRate]]:
        if not self.marks.has_symbol(LATEST):
            return [], []
        state = state_from_frame(self.marks.read(LATEST).data)
        return state.marks, state.fx_rates

    def views_recorded_through(self) -> int:
        saved = self.views.saved_through()
        if saved is not None:
            return saved
        # A store from before the watermark: the least any fills/orders view holds.
        if self._view_symbols is None:
            frame = self._read(columns=["kind", "account_id"])
            self._view_symbols = (
                _distinct_pairs(frame["kind"], frame["account_id"]) if len(frame) else set()
            )
        return self.views.last_recorded(self._view_symbols)

    # -- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        metadata: dict[str, object] = {"sequence": checkpoint.sequence, "format": 2}
        metadata["versions"] = checkpoint_versions()  # what each half is written in
        metadata["receipts"] = self._known_receipts().encoded()
        try:
            book, state = self._checkpoint_frames(checkpoint)
            # The pair before goes only once both halves are in: a process that dies between
            # them (a crash; a stop's time limit, which a large book's checkpoint can pass)
            # leaves that pair whole, which latest_checkpoint finds.
            self.checkpoints.write(STATE, state, metadata=metadata)
            self.checkpoints.write(BOOK, book, metadata=metadata)
        except Exception as error:
            raise StorageUnavailable(f"checkpoint write failed: {error}") from error
        try:
            for half in (STATE, BOOK):
                self.checkpoints.prune_previous_versions(half)
        except Exception as error:  # saved: the earlier pair goes at the next checkpoint
            log.warning("earlier checkpoint not pruned: %s", error)

    @staticmethod
    def _checkpoint_frames(checkpoint: Checkpoint) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The book and the state half. Each row's round trips, in progress and closed, and
        its last close go in the book beside the row (columns: a JSON record a row in the
        state cost a restart about 2 us a row, a last close about 9); those of rows no longer
        in the book stay in the state."""
        state = checkpoint.state
        opened = {trip[0]: trip for trip in state.perf_open}
        closed = dict(state.perf_trips)
        closes = dict(state.pnl_last_closes)
        book = checkpoint_frame(checkpoint.rows, checkpoint.anchors, opened, closed, closes)
        in_book = (
            int(np.count_nonzero(book["open_trip_sign"].to_numpy())),
            int(np.count_nonzero(book["trips_count"].to_numpy())),
            int(np.count_nonzero(book["close_quantity"].to_numpy() != "")),
        )
        if in_book == (len(opened), len(closed), len(closes)):
            left = replace(state, perf_open=[], perf_trips=[], pnl_last_closes=[])
            return book, state_frame(left)
        keys = {row.key for row, _ in checkpoint.rows}  # rows evicted, what they had is kept
        left = replace(
            state,
            perf_open=[trip for trip in state.perf_open if trip[0] not in keys],
            perf_trips=[item for item in state.perf_trips if item[0] not in keys],
            pnl_last_closes=[item for item in state.pnl_last_closes if item[0] not in keys],
        )
        return book, state_frame(left)

    def _latest_pair(self) -> tuple[int, int, int] | None:
        """The latest sequence both halves hold, with each half's version of it: the latest
        versions, or, after a write cut off between the halves, the pair before (see
        save_checkpoint). None when the halves share none."""
        held: list[dict[int, int]] = []
        for half in (BOOK, STATE):
            listed = self.checkpoints.list_versions(half)
            versions = sorted(
                (found.version for found, info in listed.items() if not info.deleted),
                reverse=True,
            )
            held.append({})
            for version in versions:
                metadata = self.checkpoints.read_metadata(half, as_of=version).metadata or {}
                if "sequence" in metadata:  # a version without one pairs with nothing
                    held[-1].setdefault(int(metadata["sequence"]), version)
        common = held[0].keys() & held[1].keys()
        if not common:
            return None
        sequence = max(common)
        return sequence, held[0][sequence], held[1][sequence]

    def latest_checkpoint(self) -> Checkpoint | None:
        if not (self.checkpoints.has_symbol(BOOK) and self.checkpoints.has_symbol(STATE)):
            return None
        pair = self._latest_pair()
        if pair is None:
            log.warning("checkpoint halves disagree; replaying the whole journal instead")
            return None
        sequence, book_version, state_version = pair
        book = self.checkpoints.read(BOOK, as_of=book_version)
        state = self.checkpoints.read(STATE, as_of=state_version)
        # A later release's checkpoint is refused (NewerFormat); an earlier one is upcast.
        usable = check_checkpoint(f"{CHECKPOINTS}/{BOOK}", book.metadata)
        usable = check_checkpoint(f"{CHECKPOINTS}/{STATE}", state.metadata) and usable
        if not usable:
            log.warning("checkpoint of an early layout; replaying the whole journal instead")
            return None
        rows, anchors, opened, closed, closes = rows_from_checkpoint(book.data, book.metadata)
        ledger_state = state_from_frame(state.data, state.metadata)
        if opened or closed or closes:  # the book's (versions 6 and 7 on), and the state's
            ledger_state = replace(
                ledger_state,
                perf_open=opened + ledger_state.perf_open,
                perf_trips=closed + ledger_state.perf_trips,
                pnl_last_closes=closes + ledger_state.pnl_last_closes,
            )
        return Checkpoint(
            sequence, rows, ledger_state, anchors,
            empty_anchors_left_out=empty_anchors_left_out(book.metadata),
        )  # fmt: skip
