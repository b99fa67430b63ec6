"""Who booked a journaled event: the audit trail's principal, kept with every journal row.

The service names the principal of each write at its admission (server.application.writes):
the auth file's principal and its role, `anonymous@<client address>` when no auth is
configured, SYSTEM for what the service writes on its own (day closes, scheduled
reconciliations, the reference file at start). One Booker per principal is shared by every
event it books, so naming it costs a reference per event.
"""

from __future__ import annotations

from typing import NamedTuple


class Booker(NamedTuple):
    name: str
    role: str  # the principal's role ("" with no auth configured)


UNKNOWN = Booker("", "")
"""A journal row written before the audit trail (or an event never admitted)."""

SYSTEM = Booker("system", "system")
"""The service itself: writes made by no call."""

_NOT_IN_A_NAME = str.maketrans({"\x00": "?", "\x1e": "?", "\x1f": "?"})


def booker(name: str, role: str) -> Booker:
    """A Booker whose texts can be stored (the write-ahead log separates fields with control
    characters a name cannot then hold)."""
    return Booker(name.translate(_NOT_IN_A_NAME), role.translate(_NOT_IN_A_NAME))
