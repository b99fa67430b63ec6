"""Where a broken subscription picks up again, so the caller sees every update exactly once.

The service numbers events with a gap-free sequence and replays every update with sequence >= N
on request. Several updates can share a sequence (one fill changes the strategy's row and the
account-level row), and a stream can break between them. Because the caller cannot know how many
updates a sequence has until a later one (or a heartbeat) arrives, the cursor resumes from the
last sequence seen, and drops the updates of that sequence it has already delivered.
"""

from __future__ import annotations


class ResumeCursor:
    """Tracks what a subscription has delivered; `from_sequence` is where to resubscribe."""

    __slots__ = ("_complete_through", "_delivered", "_group", "_resume_from", "_seen_on_stream")

    def __init__(self, from_sequence: int = 0) -> None:
        if from_sequence < 0:
            raise ValueError(f"from_sequence must be >= 0, got {from_sequence}")
        # 0 keeps meaning "live only" until something arrives that says where the stream is.
        self._resume_from = from_sequence
        # Every update with a sequence up to here has been delivered (or was not asked for).
        self._complete_through = max(from_sequence - 1, 0)
        # The newest sequence delivered, possibly only in part, and how many of its updates.
        self._group = 0
        self._delivered = 0
        # Updates of `_group` seen on the current stream, replayed ones included.
        self._seen_on_stream = 0

    @property
    def from_sequence(self) -> int:
        """The `from_sequence` for the next subscribe call."""
        return self._resume_from

    def new_stream(self) -> None:
        """Call when a (re)subscription starts, before its first update."""
        self._seen_on_stream = 0

    def admit(self, sequence: int, *, heartbeat: bool) -> bool:
        """Records one received update; False when the caller has already seen it."""
        if heartbeat:
            # Everything up to `sequence` that matches the filters has been sent.
            if sequence >= self._group:
                self._complete_through = max(self._complete_through, sequence)
                self._resume_from = self._complete_through + 1
            return True
        if sequence <= self._complete_through or sequence < self._group:
            return False
        if sequence == self._group:
            self._seen_on_stream += 1
            if self._seen_on_stream <= self._delivered:
                return False
            self._delivered += 1
            return True
        # A newer sequence: the stream is in order, so everything below it has been sent.
        self._complete_through = sequence - 1
        self._group = sequence
        self._delivered = 1
        self._seen_on_stream = 1
        self._resume_from = sequence
        return True
