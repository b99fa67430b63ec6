"""A journaled event the domain would not apply: it stays in the journal (replaying it refuses
it again, the same way) and changes nothing."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RefusalKind(enum.Enum):
    # The state does not allow it now (too little cash available).
    PRECONDITION = 1
    # It contradicts what is already there (an instrument's multiplier under open positions).
    CONFLICT = 2
    # It names something that does not exist (an unknown reservation).
    NOT_FOUND = 3
    # Its id was already used by a different event (admission only: never journaled).
    ID_REUSED = 4
    # It could not be decided now (the journal could not be read): the same event may pass
    # later (admission only).
    RETRY = 5


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: RefusalKind
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"
