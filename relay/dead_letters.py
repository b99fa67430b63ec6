"""Events the relay could not get booked, kept for a replay after a fix.

An event the service refused for good (anything but RETRY_LATER) and an execution the relay
could not turn into a fill would otherwise be lost with a log line. Each is appended to a
JSON-lines file, one object a line: `time` (when it was set aside, UTC), `kind` (`fill`,
`order_status`, `commission_amendment`, or `execution` for what IB reported and the relay could
not map), `event` (the SDK event's fields, or IB's execution, contract and commission report),
`reason` and `code` (the service's RejectCode name, or `UNMAPPABLE`).

The file is opened for each append (dead letters are rare): a replay can move it away while a
relay runs, and the relay then starts a new one. `replay` resends what the file holds: what the
service takes leaves the file, what it refuses again stays (with the new reason).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ib_async import CommissionReport, Contract, Execution
from ib_async import Fill as IbFill

from client import (
    AsyncPortfolioClient,
    CommissionAmendment,
    EventResult,
    ExecutionEvent,
    Fill,
    OrderStatusUpdate,
)
from relay.executions import Attribution, UnmappableEvent, commission_reported, fill_event
from relay.relay_config import DEAD_LETTERS

__all__ = [
    "DEFAULT_PATH",
    "UNMAPPABLE",
    "DeadLetter",
    "DeadLetters",
    "ReplayResult",
    "event_kind",
    "replay",
]

log = logging.getLogger("portfolio.relay")

DEFAULT_PATH = DEAD_LETTERS
#: The code of an execution the relay could not turn into an event.
UNMAPPABLE = "UNMAPPABLE"

_KINDS: dict[str, type[Any]] = {
    "fill": Fill,
    "order_status": OrderStatusUpdate,
    "commission_amendment": CommissionAmendment,
}
_CONTRACT_FIELDS = (
    "conId", "symbol", "secType", "lastTradeDateOrContractMonth", "strike", "right",
    "multiplier", "exchange", "primaryExchange", "currency", "localSymbol", "tradingClass",
)  # fmt: skip


def event_kind(event: ExecutionEvent) -> str:
    for kind, cls in _KINDS.items():
        if isinstance(event, cls):
            return kind
    raise TypeError(f"not an execution event: {event!r}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One line of the file."""

    kind: str
    event: Mapping[str, Any]
    reason: str
    code: str
    time: datetime

    def to_json(self) -> str:
        record = {
            "time": self.time.isoformat(),
            "kind": self.kind,
            "event": self.event,
            "reason": self.reason,
            "code": self.code,
        }
        return json.dumps(record, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> DeadLetter:
        record = json.loads(line)
        return cls(
            kind=record["kind"],
            event=record["event"],
            reason=record.get("reason", ""),
            code=record.get("code", ""),
            time=datetime.fromisoformat(record["time"]),
        )

    def restored(self, attribution: Attribution) -> ExecutionEvent:
        """The event to send again; an execution is mapped anew (raises UnmappableEvent)."""
        if self.kind == "execution":
            fill = _ib_fill(self.event)
            return fill_event(fill, attribution, with_commission=commission_reported(fill))
        cls = _KINDS.get(self.kind)
        if cls is None:
            raise UnmappableEvent(f"unknown dead letter kind {self.kind!r}")
        event: ExecutionEvent = _decode_dataclass(cls, self.event)
        return event


class DeadLetters:
    """Appends to the dead-letter file; `count` is what this process set aside."""

    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = Path(path)
        self.count = 0

    def event(self, event: ExecutionEvent, reason: str, code: str) -> None:
        self._append(DeadLetter(event_kind(event), _encode(event), reason, code, _now()))

    def execution(self, fill: IbFill, reason: str) -> None:
        self._append(DeadLetter("execution", _ib_record(fill), reason, UNMAPPABLE, _now()))

    def _append(self, letter: DeadLetter) -> None:
        append_lines(self.path, [letter.to_json()])
        self.count += 1


def append_lines(path: Path, lines: Iterable[str]) -> None:
    """Appends whole lines and syncs them (a dead letter is the only copy of its event)."""
    text = "".join(f"{line}\n" for line in lines)
    if not text:
        return
    with path.open("a", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


# ---------------------------------------------------------------------------------------------
# Replay


@dataclass(frozen=True, slots=True)
class ReplayResult:
    resent: int
    accepted: int
    duplicates: int
    kept: int


async def replay(
    path: str | Path,
    client: AsyncPortfolioClient,
    attribution: Attribution,
    *,
    timeout: float = 30.0,
) -> ReplayResult:
    """Resends the file's events (fills and statuses before commission amendments, which need
    their fill); keeps in it those refused or unmappable again. The file is first moved aside,
    so a relay running meanwhile appends to a new one; a replay that fails puts it all back."""
    path = Path(path)
    taking = path.with_name(path.name + ".replaying")
    if path.exists():
        if taking.exists():  # an earlier replay died: take both
            append_lines(taking, path.read_text(encoding="utf-8").splitlines())
            path.unlink()
        else:
            os.replace(path, taking)
    if not taking.exists():
        return ReplayResult(0, 0, 0, 0)
    letters = [
        DeadLetter.from_json(line)
        for line in taking.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    kept: list[DeadLetter] = []
    ready: list[tuple[DeadLetter, ExecutionEvent]] = []
    for letter in letters:
        try:
            ready.append((letter, letter.restored(attribution)))
        except (UnmappableEvent, ValueError, TypeError, KeyError) as error:
            kept.append(dataclasses.replace(letter, reason=str(error), time=_now()))
    first = [(letter, event) for letter, event in ready if letter.kind != "commission_amendment"]
    then = [(letter, event) for letter, event in ready if letter.kind == "commission_amendment"]
    accepted = duplicates = 0
    try:
        for batch in (first, then):
            if not batch:
                continue
            acks = await client.ingest([event for _, event in batch], timeout=timeout)
            for (_, event), ack in zip(batch, acks, strict=True):
                if ack.result is EventResult.ACCEPTED:
                    accepted += 1
                elif ack.result is EventResult.DUPLICATE:
                    duplicates += 1
                else:
                    again = DeadLetter(event_kind(event), _encode(event), ack.reason,
                                       ack.code.name, _now())  # fmt: skip
                    kept.append(again)
    except BaseException:
        append_lines(path, taking.read_text(encoding="utf-8").splitlines())
        taking.unlink()
        raise
    append_lines(path, [letter.to_json() for letter in kept])
    taking.unlink()
    return ReplayResult(len(ready), accepted, duplicates, len(kept))


# ---------------------------------------------------------------------------------------------
# Encoding


def _now() -> datetime:
    return datetime.now(UTC)


def _encode(event: ExecutionEvent) -> dict[str, Any]:
    return {f.name: _plain(getattr(event, f.name)) for f in dataclasses.fields(event)}


def _plain(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.name
    return value


def _decode_dataclass(cls: type[Any], record: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {name: _decoded(hints[name], value) for name, value in record.items() if name in names}
    return cls(**values)


def _decoded(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    parse: Callable[[Any], Any] | None = None
    if hint is Decimal:
        parse = Decimal
    elif hint is datetime:
        parse = datetime.fromisoformat
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        parse = hint.__getitem__
    return parse(value) if parse is not None else value


def _ib_record(fill: IbFill) -> dict[str, Any]:
    execution = {name: _plain(value) for name, value in dataclasses.asdict(fill.execution).items()}
    contract = {name: getattr(fill.contract, name) for name in _CONTRACT_FIELDS}
    report = dataclasses.asdict(fill.commissionReport)
    return {"execution": execution, "contract": contract, "commission_report": report}


def _ib_fill(record: Mapping[str, Any]) -> IbFill:
    execution = dict(record["execution"])
    execution["time"] = datetime.fromisoformat(execution["time"])
    return IbFill(
        Contract(**record["contract"]),
        Execution(**execution),
        CommissionReport(**record["commission_report"]),
        execution["time"],
    )
