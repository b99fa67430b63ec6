"""What a restart reads of the journal on a real ArcticDB in LMDB: the traced fills received
within a TTL, found by a regex in the store and read only from the rows that can hold them;
the ids seen as numpy columns."""

from __future__ import annotations

import random
import time

import arcticdb as adb
import numpy as np
import pandas as pd

from server.storage.arctic import EVENTS, TRACED_FILL, ArcticEventStore, _distinct_pairs
from server.storage.frames import journal_frame
from server.storage.receipts import Receipts
from tests.domain.builders import fill

US = "\x1f"


def test_the_traced_fill_pattern_matches_exactly_the_texts_not_ending_with_the_separator(
    tmp_path,
):
    """ArcticDB's regex (PCRE) is searched, not anchored: the anchored, possessive pattern
    matches the same texts as "[^\\x1f]$" did, in one pass over each."""
    chosen = ["", US, "a", f"a{US}", f"{US}a", f"a{US}{US}", f"a{US}b", f"a{US}b\n", "\n",
              f"a{US}\n", f"{US}\n", "é", f"x{US}é", f"{US * 3}z", "z" * 300 + US]  # fmt: skip
    generated = random.Random(12)
    texts = chosen + [
        "".join(generated.choice(["a", US, "\n", "é", "0"]) for _ in range(generated.randint(0, 9)))
        for _ in range(2000)
    ]
    library = adb.Arctic(f"lmdb://{tmp_path}/regex").get_library("texts", create_if_missing=True)
    library.write("t", pd.DataFrame({"n": np.arange(len(texts)), "text": texts}))
    query = adb.QueryBuilder()
    query = query[query["text"].regex_match(TRACED_FILL)]
    matched = set(library.read("t", query_builder=query).data["n"].tolist())
    assert matched == {n for n, text in enumerate(texts) if text and not text.endswith(US)}


def test_traced_fills_are_read_from_a_journal_that_starts_at_a_later_sequence(tmp_path):
    """The rows holding the traced fills received since a time are read from the first that
    can hold them, counted from the journal's first sequence (here 100 at row 0): none is
    missed, and the legs of a live trace received earlier come with it."""
    store = ArcticEventStore(f"lmdb://{tmp_path}/store")
    try:
        events = [
            fill("BUY", 1, 10, fill_id=f"f{n}", trace_id=f"T{n % 4}" if n % 3 else "")
            for n in range(30)
        ]
        group = [(100 + n, event) for n, event in enumerate(events)]
        store.journal.write(EVENTS, journal_frame(group))
        now = time.time_ns()
        store._receipts = Receipts(0, [(109, now - 10**9), (129, now)])  # 100-109: earlier
        legs = list(store.traced_fills_received_since(now - 10**9 // 2, 125))
        later = {f"T{n % 4}" for n in range(10, 26) if n % 3}
        wanted = [
            (100 + n, event)
            for n, event in enumerate(events)
            if event.trace_id and 100 + n <= 125 and (n >= 10 or event.trace_id in later)
        ]
        assert [(sequence, leg) for sequence, leg, _ in legs] == wanted
        assert all(
            received == (now - 10**9 if sequence <= 109 else now) for sequence, _, received in legs
        )
        assert list(store.traced_fills_received_since(now + 1, 129)) == []  # all expired
    finally:
        store.close()


def test_the_ids_seen_come_as_numpy_columns_in_journal_order(tmp_path):
    store = ArcticEventStore(f"lmdb://{tmp_path}/store")
    try:
        empty = store.seen_events()
        assert (empty.kinds, empty.event_ids, len(empty.sequences)) == ([], [], 0)
        events = [fill("BUY", 1, 10, fill_id=f"g{n}", account=f"A{n % 2}") for n in range(6)]
        store.journal.write(EVENTS, journal_frame([(n + 1, e) for n, e in enumerate(events)]))
        seen = store.seen_events()
        assert seen.kinds == ["fill"] * 6
        assert seen.event_ids == [event.event_id for event in events]
        assert seen.sequences.dtype == np.int64 and seen.sequences.tolist() == list(range(1, 7))
        assert seen.fingerprints.dtype == np.int64 and len(seen.fingerprints) == 6
    finally:
        store.close()


def test_the_distinct_pairs_of_two_columns_are_those_of_their_rows():
    kinds = pd.Series(["fill", "order", "fill", "fill", "order", "fill"])
    accounts = pd.Series(["A1", "A1", "A2", "A1", "A1", ""])
    assert _distinct_pairs(kinds, accounts) == set(zip(kinds, accounts, strict=True))
    assert _distinct_pairs(pd.Series([], dtype=object), pd.Series([], dtype=object)) == set()
