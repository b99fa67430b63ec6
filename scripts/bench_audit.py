"""What the audit trail (who booked each event, server/domain/booker.py) costs per fill, against
the same steps without it, in the same run: the stamp at admission, the write-ahead log's
encoding of a group, the journal frame of a group (two more columns), and, with no auth
configured, the Authorizer now installed to name anonymous callers (a read pays its interceptor
hop only). Groups of 100 fills. Prints median and p99 per fill (per call for the interceptor)
and the ratio to the baseline.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from decimal import Decimal

import numpy as np
import pandas as pd

from server.api.auth import Authorizer
from server.domain.booker import UNKNOWN, Booker
from server.domain.codec import fingerprint_of
from server.domain.events import Fill, Side
from server.storage import wal
from server.storage.frames import journal_frame

GROUP = 100
ROUNDS = 2000


def fills(first: int) -> list[Fill]:
    return [
        Fill(
            fill_id=f"f{n}",
            account_id="A1",
            strategy_id="S1",
            instrument_id="AAPL",
            side=Side.BUY,
            quantity=Decimal(n),
            price=Decimal("100.25"),
            timestamp_ns=1_767_225_600 * 10**9 + n,
        )
        for n in range(first, first + GROUP)
    ]


def _old_encode(records: list[tuple[int, str, str]], written_ns: int) -> bytes:
    parts = []
    stamp = str(written_ns).encode() + b"\x00"
    for sequence, kind, text in records:
        payload = stamp + kind.encode() + b"\x00" + text.encode()
        parts.append(wal.HEADER.pack(len(payload), sequence, wal._crc(sequence, payload)))
        parts.append(payload)
    return b"".join(parts)


def _old_journal_frame(group: list[tuple[int, Fill]]) -> pd.DataFrame:
    texts = [event.text() for _, event in group]
    return pd.DataFrame(
        {
            "sequence": np.fromiter((s for s, _ in group), "int64", len(group)),
            "kind": [event.kind for _, event in group],
            "event_id": [event.event_id for _, event in group],
            "account_id": [event.account_id for _, event in group],
            "event_time": pd.to_datetime(
                np.fromiter((e.timestamp_ns for _, e in group), "int64", len(group)), utc=True
            ),
            "digest": np.fromiter((fingerprint_of(t) for t in texts), "int64", len(group)),
            "text": texts,
        },
        index=pd.RangeIndex(group[0][0], group[-1][0] + 1),
    )


def compare(name: str, before: Callable[[], object], after: Callable[[], object]) -> None:
    """One of each in turn (the machine's load hits both alike), per fill."""
    base: list[float] = []
    new: list[float] = []
    for _ in range(ROUNDS):
        for work, found in ((before, base), (after, new)):
            began = time.perf_counter()
            work()
            found.append((time.perf_counter() - began) / GROUP)
    report(name, base, new)


def report(name: str, base: list[float], new: list[float]) -> None:
    def us(values: list[float]) -> str:
        ordered = sorted(values)
        p99 = ordered[int(len(ordered) * 0.99)]
        return f"median {statistics.median(values) * 1e6:7.3f} us  p99 {p99 * 1e6:7.3f} us"

    ratio = statistics.median(new) / statistics.median(base)
    print(f"{name:<34} before {us(base)} | after {us(new)} | ratio {ratio:5.2f}")
    print(f"{'':<34} cost {(statistics.median(new) - statistics.median(base)) * 1e9:+.0f} ns")


def main() -> None:
    relay = Booker("relay-ny", "relay")
    events = fills(1)
    group = list(enumerate(events, start=1))
    for event in events:
        event.text()  # cached at admission (its digest) in the service

    def admit_old() -> object:
        return [(n, e) for n, e in group if True]

    def admit_new() -> object:
        found = []
        for n, e in group:
            e.booked_by(relay)
            found.append((n, e))
        return found

    compare("admission (stamp), per fill", admit_old, admit_new)
    old_records = [(n, e.kind, e.text()) for n, e in group]
    new_records = [(n, e.kind, e.text(), e.booker) for n, e in group]
    compare(
        "write-ahead log encode, per fill",
        lambda: _old_encode(old_records, time.time_ns()),
        lambda: wal.encode(new_records, time.time_ns()),
    )
    compare(
        "journal frame (copier), per fill",
        lambda: _old_journal_frame(group),
        lambda: journal_frame(group),
    )
    print(f"(a journal row of the release before reads as {UNKNOWN})")

    async def interceptor() -> tuple[list[float], list[float]]:
        handler = object()

        async def continuation(_: object) -> object:
            return handler

        class Details:
            method = "/portfolio.v1.PortfolioManager/GetPosition"

        authorizer, details = Authorizer(None), Details()
        authorizer._rewritten[details.method] = (handler, handler)  # type: ignore[assignment]
        base, new = [], []
        for _ in range(ROUNDS * 5):
            began = time.perf_counter()
            await continuation(details)
            base.append(time.perf_counter() - began)
            began = time.perf_counter()
            await authorizer.intercept_service(continuation, details)  # type: ignore[arg-type]
            new.append(time.perf_counter() - began)
        return base, new

    base, new = asyncio.run(interceptor())
    report("read call: the Authorizer's hop", base, new)


if __name__ == "__main__":
    main()
