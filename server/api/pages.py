"""Paging for every List method: one page-token format, one check of it, one page-size rule.

A token is opaque to clients, who only echo `next_page_token` back. It is the url-safe base64 of
a JSON array `[listing, filters, key]`: which listing gave it, the filters it was given under,
and the key of the last item sent. Naming the listing keeps a token from one method from being
read as another's; carrying the filters as a list (not joined into one text) keeps two sets of
filters from ever looking alike. A token that is not one of these, or names another listing or
other filters, is refused with INVALID_ARGUMENT naming `page_token`, so a client learns to start
over rather than getting a page of something else.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from server.api.wire import FieldViolation
from server.application.service import PositionQuery
from server.domain.position import PositionKey

Key = TypeVar("Key")

_NOT_OURS = "is not a token this service gave"
_OTHER_FILTERS = "was given for different filters; start over without it"


class PageTokens(Generic[Key]):
    """The tokens of one listing, whose items are ordered by a `Key` written as text parts."""

    def __init__(
        self,
        listing: str,
        to_parts: Callable[[Key], Sequence[str]],
        from_parts: Callable[[list[str]], Key],
    ) -> None:
        """`from_parts` raises ValueError or TypeError for parts that are not a key."""
        self.listing = listing
        self._to_parts = to_parts
        self._from_parts = from_parts

    def encode(self, key: Key, filters: Sequence[str] = ()) -> str:
        """The token that resumes just after `key`, under these filters."""
        text = json.dumps(
            [self.listing, list(filters), list(self._to_parts(key))], separators=(",", ":")
        )
        return base64.urlsafe_b64encode(text.encode()).decode()

    def decode(self, token: str, filters: Sequence[str] = ()) -> Key | None:
        """The key a request's `page_token` resumes after; None for the first page."""
        if not token:
            return None
        try:
            listing, token_filters, parts = json.loads(base64.urlsafe_b64decode(token.encode()))
        except (ValueError, TypeError, RecursionError) as error:
            raise FieldViolation("page_token", _NOT_OURS) from error
        if listing != self.listing or not _texts(token_filters) or not _texts(parts):
            raise FieldViolation("page_token", _NOT_OURS)
        try:
            key = self._from_parts(parts)
        except (ValueError, TypeError) as error:
            raise FieldViolation("page_token", _NOT_OURS) from error
        if token_filters != list(filters):
            raise FieldViolation("page_token", _OTHER_FILTERS)
        return key


def page_size(requested: int, *, maximum: int, default: int) -> int:
    """How many items a page holds: `requested`, or `default` for 0."""
    if not 0 <= requested <= maximum:
        raise FieldViolation("page_size", f"must be between 0 and {maximum}")
    return requested or default


def _texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(part, str) for part in value)


def _three(parts: list[str]) -> tuple[str, str, str]:
    first, second, third = parts
    return first, second, third


def _one(parts: list[str]) -> str:
    (only,) = parts
    return only


def _sequence(parts: list[str]) -> int:
    (text,) = parts
    if not (text.isascii() and text.isdigit()):
        raise ValueError("not a sequence")
    return int(text)


# -- the listings -----------------------------------------------------------------------------

POSITIONS = PageTokens[PositionKey]("positions", list, lambda parts: PositionKey(*_three(parts)))
OPEN_ORDERS = PageTokens[tuple[str, str, str]]("open_orders", list, _three)
INSTRUMENTS = PageTokens[str]("instruments", lambda instrument_id: [instrument_id], _one)
RECONCILIATIONS = PageTokens[int]("reconciliations", lambda sequence: [str(sequence)], _sequence)


def position_filters(query: PositionQuery) -> list[str]:
    """What a positions token is bound to: every filter of the listing."""
    return [
        query.account_id,
        query.strategy_id,
        query.instrument_id,
        str(int(query.account_level)),
        str(int(query.include_flat)),
    ]
