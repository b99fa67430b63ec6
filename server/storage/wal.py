"""The write-ahead log: where a group of events becomes durable before it is acknowledged.

Measured on this machine kind (docs/benchmarks.md): an ArcticDB append costs a fixed 3-5 ms
even on `mem://` and about four `fdatasync` calls on LMDB, while one `fdatasync` of a plain file
costs about 0.1-3 ms depending on the disk. Acknowledging after an ArcticDB append made the
append most of a fill's latency. So on a local (LMDB) store a group is first written to this
log, one `write` that returns once the data is on disk (`O_DSYNC`), and acknowledged; the
journal in ArcticDB follows in the background in larger groups (storage/journal_copier.py),
and a segment of this log is deleted only once the journal holds all of it. At start, whatever
the log holds beyond the journal is copied into the journal before anything reads it, so the
journal analysts read is never short of an acknowledged event for longer than the copy takes.

A record: a 16-byte header (payload length, sequence, CRC-32 of sequence and payload) and the
payload (the time its group was written, in ns, the event's kind and its canonical text,
NUL-separated, UTF-8). Who booked the event (the audit trail: its principal's name and role)
follows the time, after a 0x1E and separated by a 0x1F; a record of a release before them has
none, and reads as booked by UNKNOWN. The time bounds when the event had been received, for a
restart after a crash the journal did not follow (storage/receipts.py); a file's own
modification time cannot, as it comes from a coarse clock and may read earlier than the write.
A crash can leave only the last record torn (a write that never completed was never
acknowledged): it is cut off at open. A bad record followed by good ones is not a torn tail
but damage, and the store refuses to open rather than drop acknowledged events silently.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from server.domain.booker import UNKNOWN, Booker
from server.storage.disk import StoreUnusable
from server.tracing import WAL_WRITE, traced

log = logging.getLogger("portfolio.storage")

HEADER = struct.Struct("<IQI")  # payload length, sequence, crc32(sequence bytes + payload)
SEGMENT_BYTES = 16 * 1024 * 1024  # a new segment once the current one holds this much
SUFFIX = ".wal"
RECEIPT_ANCHORS = 4096  # receipt bounds a start takes from the log, at most
# A write returns once its data is on disk, as a write and an fdatasync would, in one system
# call: the committer's thread gives the GIL away once per write instead of twice, and each
# time it takes it back it may wait for the busy event loop (up to the switch interval).
WRITE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_DSYNC


@dataclass(frozen=True, slots=True)
class Record:
    sequence: int
    kind: str
    text: str
    written_ns: int  # when its group was written: it had been received by then
    booker: Booker = UNKNOWN


@dataclass(slots=True)
class _Segment:
    path: Path
    first: int  # the first sequence it holds (its name)
    last: int  # the last sequence it holds (0 while empty)


LogRecord = tuple[int, str, str, Booker]
"""What is written of an event: its sequence, kind, canonical text and who booked it."""


def encode(records: Sequence[LogRecord], written_ns: int) -> bytes:
    """Records as one write, at `written_ns`. Events of one call share their Booker: its
    stamp is encoded once per run of them."""
    parts = []
    time_part = str(written_ns).encode()
    last: Booker | None = None
    stamp = b""
    for sequence, kind, text, booker in records:
        if booker is not last:
            last, stamp = booker, _stamp(time_part, booker)
        payload = stamp + kind.encode() + b"\x00" + text.encode()
        parts.append(HEADER.pack(len(payload), sequence, _crc(sequence, payload)))
        parts.append(payload)
    return b"".join(parts)


def _stamp(time_part: bytes, booker: Booker) -> bytes:
    name, role = booker
    return b"%s\x1e%s\x1f%s\x00" % (time_part, name.encode(), role.encode())


def _fields(who: bytes) -> tuple[str, str]:
    name, _, role = who.decode().partition("\x1f")
    return name, role


def _crc(sequence: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(sequence.to_bytes(8, "little")))


def _decode(
    data: bytes, where: Path, after: int
) -> tuple[list[Record], list[tuple[int, int]], int]:
    """The good records from the start of `data` beyond sequence `after`, every good record's
    (sequence, time written), and the offset where the good records end. Those at or before
    `after` (the journal holds them) are checked but not decoded: a start reads the whole
    segment being written, up to 16 MB, and decoding its 100,000 records took 0.75 s."""
    records: list[Record] = []
    stamps: list[tuple[int, int]] = []
    bookers: dict[bytes, Booker] = {}  # one per principal, as when written
    view = memoryview(data)
    unpack, size, offset = HEADER.unpack_from, len(data), 0
    while offset + HEADER.size <= size:
        length, sequence, crc = unpack(data, offset)
        start = offset + HEADER.size
        end = start + length
        if end > size or _crc(sequence, view[start:end]) != crc:
            break
        stamp_end = data.find(b"\x00", start, end)
        if stamp_end < 0:
            stamp_end = end
        mark = data.find(b"\x1e", start, stamp_end)
        written_ns = int(data[start : stamp_end if mark < 0 else mark])
        stamps.append((sequence, written_ns))
        if sequence > after:
            booker = UNKNOWN
            if mark >= 0:
                who = data[mark + 1 : stamp_end]
                booker = bookers.get(who) or bookers.setdefault(who, Booker(*_fields(who)))
            kind, _, text = data[stamp_end + 1 : end].partition(b"\x00")
            records.append(Record(sequence, kind.decode(), text.decode(), written_ns, booker))
        offset = end
    if offset < len(data) and _good_record_after(data, offset + 1):
        raise StoreUnusable(
            f"write-ahead log {where} is damaged at byte {offset}: a bad record is followed "
            "by good ones (not a torn last write); restore the folder from a backup or ask "
            "for help before starting: acknowledged events may be in it"
        )
    return records, stamps, offset


def _good_record_after(data: bytes, start: int) -> bool:
    """Whether a well-formed record starts anywhere at or after `start` (damage, not a tear)."""
    for offset in range(start, len(data) - HEADER.size + 1):
        length, sequence, crc = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if length and end <= len(data):
            payload = data[offset + HEADER.size : end]
            if _crc(sequence, payload) == crc:
                return True
    return False


def written_by(stamps: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(sequence, time): every event up to the sequence had been received by the time, one
    per write (at most RECEIPT_ANCHORS, the last kept: a bound dropped only gets later), from
    each record's (sequence, time written) in order."""
    last = len(stamps) - 1
    anchors = [
        stamp
        for index, stamp in enumerate(stamps)
        if index == last or stamps[index + 1][1] != stamp[1]
    ]
    step = -(-len(anchors) // RECEIPT_ANCHORS)  # ceiling
    return anchors[::-1][::step][::-1] if step > 1 else anchors


class WriteAheadLog:
    """Segments `<first sequence>.wal` in one folder, written by one process (the store's
    writer lock guards the folder)."""

    def __init__(self, folder: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = folder
        self._segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._size = 0  # bytes of good records in the current segment
        self._broken = ""  # why no write can be trusted any more (a failed write not cut back)
        self.receipts: list[tuple[int, int]] = []  # written_by of every record, from open
        self._lock = threading.Lock()  # written by the committer, released by the copier

    def open(self, after: int = 0) -> list[Record]:
        """The records the log holds beyond sequence `after`, in order; cuts a torn last
        record off. Every record is checked, and `receipts` set from all of them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        records: list[Record] = []
        stamps: list[tuple[int, int]] = []
        paths = sorted(self.folder.glob(f"*{SUFFIX}"), key=lambda path: int(path.stem))
        for index, path in enumerate(paths):
            data = path.read_bytes()
            found, found_stamps, good = _decode(data, path, after)
            if good < len(data):
                if index != len(paths) - 1:
                    raise StoreUnusable(
                        f"write-ahead log {path} ends in a torn record but is not the last "
                        "segment; restore the folder from a backup or ask for help"
                    )
                log.warning("write-ahead log %s: cut a torn last write (%d bytes)", path,
                            len(data) - good)  # fmt: skip
                with open(path, "r+b") as torn:
                    torn.truncate(good)
                    os.fsync(torn.fileno())
            if stamps and found_stamps and found_stamps[0][0] != stamps[-1][0] + 1:
                raise StoreUnusable(
                    f"write-ahead log {path} starts at sequence {found_stamps[0][0]} after "
                    f"{stamps[-1][0]}: a segment is missing"
                )
            records.extend(found)
            stamps.extend(found_stamps)
            last = found_stamps[-1][0] if found_stamps else 0
            self._segments.append(_Segment(path, int(path.stem), last))
            self._size = good
        self.receipts = written_by(stamps)
        if self._segments:
            self._fd = os.open(self._segments[-1].path, WRITE_FLAGS)
        return records

    @traced(WAL_WRITE)
    def write(self, records: Sequence[LogRecord]) -> None:
        """Appends the records and returns once they are on disk. On an error nothing of
        them stays (the file is cut back), so the same records can be written again."""
        if not records:
            return
        data = encode(records, time.time_ns())
        with self._lock:
            self._write(data, records[0][0], records[-1][0])

    def _write(self, data: bytes, first: int, last: int) -> None:
        if self._broken:
            raise OSError(self._broken)
        if self._fd is None or self._size >= self._segment_bytes:
            self._rotate(first)
        assert self._fd is not None
        try:
            written = os.write(self._fd, data)  # on disk when it returns (O_DSYNC)
            if written != len(data):
                raise OSError(f"short write: {written} of {len(data)} bytes")
        except OSError:
            self._cut_back()
            raise
        self._size += len(data)
        self._segments[-1].last = last

    def release_through(self, sequence: int) -> None:
        """Deletes the segments the journal now holds entirely (never the one being written)."""
        with self._lock:
            while len(self._segments) > 1 and self._segments[0].last <= sequence:
                segment = self._segments.pop(0)
                segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _rotate(self, first: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self.folder / f"{first:020d}{SUFFIX}"
        self._fd = os.open(path, WRITE_FLAGS | os.O_CREAT, 0o644)
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new file's name is durable before anything in it counts
        finally:
            os.close(directory)
        self._segments.append(_Segment(path, first, 0))
        self._size = 0

    def _cut_back(self) -> None:
        """Removes a partial write (a full disk can take part of it)."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as error:  # what follows would sit behind garbage: write nothing more
            self._broken = f"write-ahead log: a failed write could not be cut back: {error}"
            log.error("%s; the service must restart", self._broken)
