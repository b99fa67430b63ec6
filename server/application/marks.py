"""The mark feed: instruments valued at new marks, FX rates kept, subscribers told coalesced.

Marks and rates never wait for the store. The marks go to the store's views at most every
`marks_save_seconds`; the FX rates the valuation table took are journaled (rates of record, see
FxHistory) at most every `fx_journal_seconds`, through the write path without awaiting it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Generic

from server.application.ports import StorageUnavailable
from server.application.publishing import MarkChanged, PortfolioChange
from server.application.subscriptions import Payload, SubscriptionHub, Topic
from server.application.writes import WritePath
from server.domain.fx_history import fx_fixing
from server.domain.ledger import Result
from server.domain.marks import FxRate, Mark
from server.log_limit import LogLimiter

log = logging.getLogger("portfolio.service")
_fx_conflict_log = LogLimiter(log, 60.0)

FX_RETRY_SECONDS = 1.0
"""While the store is down, pending FX rates are offered to the journal again this often (at
least)."""


class MarkFeed(Generic[Payload]):
    def __init__(
        self,
        writes: WritePath[Payload],
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        mark_publish_seconds: float = 0.1,
        marks_save_seconds: float = 1.0,
        fx_journal_seconds: float = 1.0,
    ) -> None:
        self.ledger = writes.ledger
        self.hub: SubscriptionHub[PortfolioChange, Payload] = writes.hub
        self.projector = writes.projector
        self._writes = writes  # FX rates are journaled through it
        self._clock_ns = clock_ns
        self.time_window = writes.time_window
        self.mark_publish_seconds = mark_publish_seconds
        self.marks_save_seconds = marks_save_seconds
        self._pending_marks: dict[str, Mark] = {}
        self._marks_flush: asyncio.TimerHandle | None = None
        self._marks_saved_at = 0.0
        self._marks_unsaved = False
        # FX rates the valuation table took, waiting for the journal: the latest per pair
        # (key: the pair sorted, time 0), or every one (key with its time) when
        # fx_journal_seconds is 0. Journaled at most every fx_journal_seconds.
        self.fx_journal_seconds = fx_journal_seconds
        self._fx_pending: dict[tuple[str, str, int], FxRate] = {}
        self._fx_flush: asyncio.TimerHandle | None = None
        self._fx_journaled_at = float("-inf")
        self._fx_outage = False  # the store refused the last flush: logged once, retried

    def apply_marks(self, marks: Sequence[Mark], rates: Sequence[FxRate]) -> tuple[int, int]:
        """Values instruments at new marks and keeps new FX rates; returns how many of each
        were older than what is held (ignored). Subscribers hear of it coalesced."""
        stale_marks = stale_rates = 0
        plausible = self._clock_ns() + self.time_window.max_ahead_ns
        for mark in marks:
            if self.ledger.book.set_mark(mark, plausible):
                self._pending_marks[mark.instrument_id] = mark
            else:
                stale_marks += 1
        for rate in rates:
            if self.ledger.fx.set(rate, plausible):
                self._queue_fx(rate)
            else:
                stale_rates += 1
        if len(marks) + len(rates) > stale_marks + stale_rates:
            self._marks_unsaved = True
            if self._marks_flush is None:
                self._marks_flush = asyncio.get_running_loop().call_later(
                    self.mark_publish_seconds, self._flush_marks
                )
        return stale_marks, stale_rates

    def _flush_marks(self) -> None:
        """Publishes the latest mark of each instrument that moved since the last flush, and
        hands marks to the store at most every `marks_save_seconds`."""
        self._marks_flush = None
        pending, self._pending_marks = self._pending_marks, {}
        sequence = self.hub.latest_sequence
        self.hub.publish_ephemeral(
            [
                (Topic("", "", instrument_id, is_position=False, is_market=True),
                 MarkChanged(sequence, mark))
                for instrument_id, mark in pending.items()
            ]
        )  # fmt: skip
        now = asyncio.get_running_loop().time()
        if self._marks_unsaved and now - self._marks_saved_at >= self.marks_save_seconds:
            self._marks_unsaved = False
            self._marks_saved_at = now
            self.projector.submit_marks(self.ledger.book.market_marks(), self.ledger.fx.rates())
        elif self._marks_unsaved:
            self._marks_flush = asyncio.get_running_loop().call_later(
                self.marks_save_seconds, self._flush_marks
            )

    def save_marks_now(self) -> None:
        """On shutdown: the latest marks go to the store with the last views write."""
        if self._marks_flush is not None:
            self._marks_flush.cancel()
            self._marks_flush = None
        if self._marks_unsaved:
            self._marks_unsaved = False
            self.projector.submit_marks(self.ledger.book.market_marks(), self.ledger.fx.rates())

    # -- FX rates of record -----------------------------------------------------------------

    def _queue_fx(self, rate: FxRate) -> None:
        """Queues a rate the valuation table took for the journal (see FxHistory): coalesced
        per pair, the latest wins, unless every rate is journaled (fx_journal_seconds 0 and
        the store working)."""
        self._fx_pending[self._fx_key(rate)] = rate
        if self._fx_flush is None:
            loop = asyncio.get_running_loop()
            wait = self._fx_journaled_at + self.fx_journal_seconds - loop.time()
            self._fx_flush = loop.call_later(max(wait, 0.0), self._journal_fx)

    def _fx_key(self, rate: FxRate) -> tuple[str, str, int]:
        low, high = sorted((rate.base, rate.quote))
        every = self.fx_journal_seconds <= 0 and not self._fx_outage
        return low, high, rate.time_ns if every else 0

    def _journal_fx(self) -> None:
        """Admits the pending rates to the journal, in time order; their durability is not
        awaited (the mark stream's acks never wait for the store). A store that refuses them
        keeps them pending (the latest per pair) for the next flush; logged once per outage."""
        self._fx_flush = None
        if not self._fx_pending:
            return
        rates = sorted(self._fx_pending.values(), key=lambda r: (r.time_ns, r.base, r.quote))
        loop = asyncio.get_running_loop()
        self._fx_journaled_at = loop.time()
        try:
            outcomes, _ = self._writes.admit([fx_fixing(rate) for rate in rates])
        except StorageUnavailable as error:
            if not self._fx_outage:
                self._fx_outage = True
                log.error(
                    "FX rates not journaled, the store is unavailable (%s): the latest rate of "
                    "each pair is kept and journaled once it works",
                    error,
                )
            self._fx_pending = {self._fx_key(rate): rate for rate in rates}  # latest wins
            self._fx_flush = loop.call_later(
                max(self.fx_journal_seconds, FX_RETRY_SECONDS), self._journal_fx
            )
            return
        self._fx_pending = {}
        if self._fx_outage:
            self._fx_outage = False
            log.info("FX rates journaled again (%d held while the store was down)", len(rates))
        for rate, outcome in zip(rates, outcomes, strict=True):
            if outcome.result is Result.REJECTED:  # another rate of the same pair and time
                _fx_conflict_log.log(
                    logging.WARNING,
                    "fx",
                    "FX rate %s/%s %s not journaled: %s",
                    rate.base,
                    rate.quote,
                    rate.rate,
                    outcome.reason,
                )

    def journal_fx_now(self) -> None:
        """On shutdown, before the last commit: the pending FX rates go to the journal."""
        if self._fx_flush is not None:
            self._fx_flush.cancel()
            self._fx_flush = None
        self._journal_fx()
        if self._fx_flush is not None:  # the store is down: nothing more can be done
            self._fx_flush.cancel()
            self._fx_flush = None
            log.error("%d FX rates not journaled at stop: store down", len(self._fx_pending))
