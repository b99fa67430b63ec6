"""A restart anywhere in a history changes nothing a client reads.

The same events go through a real server on LMDB twice: straight, and stopped and started
again at random points (checkpoints every few events or only at the stop; a stop may leave no
checkpoint, as a crash does, so the start replays the journal's tail). Every answer a
client reads per account and strategy must be the same (tests.storage.test_restart.everything).
The histories are the awkward ones: fills out of execution order over three days, a EUR
instrument, commissions in EUR and JPY, FX rates and marks, corrections and commission
amendments of earlier fills, order statuses, cash transfers, reservations and releases,
trading days' closes, duplicates and a live trace."""

from __future__ import annotations

import contextlib
import gc
import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application.ports import Checkpoint
from server.domain.events import ClosingMark, DayClose
from server.storage.arctic import ArcticEventStore
from tests.api.protocol import BASE_SECONDS, ingest
from tests.conftest import ServerThread, start_test_server
from tests.storage.test_restart import everything

DAY = 86_400
KINDS = ["fill"] * 6 + [
    "status", "amend", "correct", "cash", "marks", "again", "reserve", "release", "close", "close",
]  # fmt: skip
INSTRUMENTS = {"AAPL": "USD", "SAP": "EUR"}


@dataclass(frozen=True)
class Marks:
    """A batch for StreamMarks (not journaled: the marks' own symbol keeps the latest)."""

    batch: pb.MarkBatch


@dataclass(frozen=True)
class Cash:
    """A reservation or a release of reserved cash (unary calls, journaled)."""

    request: pb.ReserveCashRequest | pb.ReleaseReservationRequest


@dataclass(frozen=True)
class Close:
    """A trading day's close of an account, journaled as the day closer journals it, at
    given marks (a close's own marks: the book's prices, which come back after a crash as
    last saved, would differ between the two runs)."""

    close: DayClose


Step = pb.ExecutionEvent | Marks | Cash | Close


def _stamp(message: object, seconds: int) -> object:
    message.timestamp.FromSeconds(BASE_SECONDS + seconds)  # type: ignore[attr-defined]
    return message


@st.composite
def histories(draw: st.DrawFn) -> list[Step]:
    """Steps of a history; later steps may name earlier fills (corrections, amendments)."""
    steps: list[Step] = []
    fills: list[pb.Fill] = []
    numbers = itertools.count(1)
    for _ in range(draw(st.integers(8, 30))):
        kind = draw(st.sampled_from(KINDS))
        n = next(numbers)
        seconds = draw(st.integers(0, 3 * DAY))  # execution order is not arrival order
        if kind in ("correct", "amend", "again") and not fills:
            kind = "fill"
        if kind in ("fill", "correct"):
            instrument = draw(st.sampled_from(sorted(INSTRUMENTS)))
            fee_currency = draw(st.sampled_from(["", "EUR", "JPY"]))
            fill = pb.Fill(
                fill_id=f"f{n}", account_id=draw(st.sampled_from(["A1", "A2"])),
                strategy_id=draw(st.sampled_from(["S1", "S2"])), instrument_id=instrument,
                side=draw(st.sampled_from([pb.SIDE_BUY, pb.SIDE_SELL])),
                quantity=str(draw(st.integers(1, 30))),
                price=draw(st.sampled_from(["99.5", "100", "101.25", "0.50"])),
                commission=draw(st.sampled_from(["", "0.35", "1.00"])) if not fee_currency
                else draw(st.sampled_from(["0.5", "120"])),
                commission_currency=fee_currency, venue=draw(st.sampled_from(["ARCA", "XETR"])),
                trace_id="t" if draw(st.booleans()) and n % 3 == 0 else "",
            )  # fmt: skip
            if kind == "correct":
                corrected = draw(st.sampled_from(fills))
                fill.corrects = corrected.fill_id
                fill.account_id = corrected.account_id
            _stamp(fill, seconds)
            fills.append(fill)
            steps.append(pb.ExecutionEvent(fill=fill))
        elif kind == "again":  # a duplicate the relay resends
            steps.append(pb.ExecutionEvent(fill=draw(st.sampled_from(fills))))
        elif kind == "amend":
            amended = draw(st.sampled_from(fills))
            amendment = pb.CommissionAmendment(
                amendment_id=f"c{n}", account_id=amended.account_id, fill_id=amended.fill_id,
                commission=draw(st.sampled_from(["0", "2.5"])),
                commission_currency=draw(st.sampled_from(["USD", "EUR"])),
            )  # fmt: skip
            steps.append(pb.ExecutionEvent(commission=_stamp(amendment, seconds)))
        elif kind == "status":
            status = pb.OrderStatusUpdate(
                update_id=f"u{n}", account_id="A1", order_ref=f"ord-{n % 3}", order_id=str(n % 3),
                strategy_id="S1", instrument_id="AAPL",
                status=draw(st.sampled_from([pb.ORDER_STATUS_SUBMITTED, pb.ORDER_STATUS_FILLED,
                                             pb.ORDER_STATUS_CANCELLED])),
            )  # fmt: skip
            steps.append(pb.ExecutionEvent(status=_stamp(status, seconds)))
        elif kind == "reserve":
            steps.append(Cash(pb.ReserveCashRequest(
                reservation_id=f"r{n}", account_id=draw(st.sampled_from(["A1", "A2"])),
                currency=draw(st.sampled_from(["USD", "EUR"])), strategy_id="S1",
                amount=draw(st.sampled_from(["100", "2500.5"])),
            )))  # fmt: skip
        elif kind == "release":
            reserved = [step.request for step in steps if isinstance(step, Cash)
                        and isinstance(step.request, pb.ReserveCashRequest)]  # fmt: skip
            if reserved:
                reservation = draw(st.sampled_from(reserved))
                steps.append(Cash(pb.ReleaseReservationRequest(
                    release_id=f"x{n}", account_id=reservation.account_id,
                    reservation_id=reservation.reservation_id,
                    amount=draw(st.sampled_from(["", "40"])),
                )))  # fmt: skip
        elif kind == "close":
            account = draw(st.sampled_from(["A1", "A2"]))
            closed = sum(
                1 for step in steps if isinstance(step, Close) and step.close.account_id == account
            )
            marks = tuple(
                ClosingMark(instrument_id=i, price=Decimal(draw(st.sampled_from(["97", "103.5"]))))
                for i in sorted(INSTRUMENTS)
            )
            steps.append(Close(DayClose(
                account_id=account, trading_date=f"2026-01-{10 + closed:02d}",
                timestamp_ns=(BASE_SECONDS + seconds) * 10**9, marks=marks, late=False,
            )))  # fmt: skip
        elif kind == "cash":
            transfer = pb.CashTransfer(
                transfer_id=f"t{n}", account_id=draw(st.sampled_from(["A1", "A2"])),
                currency=draw(st.sampled_from(["USD", "EUR"])), amount="1000",
            )  # fmt: skip
            steps.append(pb.ExecutionEvent(transfer=_stamp(transfer, seconds)))
        else:
            rates = [
                _stamp(pb.FxRate(base_currency=c, quote_currency="USD", rate=r), seconds)
                for c, r in (("EUR", draw(st.sampled_from(["1.08", "1.1"]))), ("JPY", "0.0067"))
            ]
            marks = [
                pb.MarkPrice(instrument_id=i, mark=draw(st.sampled_from(["98", "102.5"])))
                for i in sorted(INSTRUMENTS)
            ]
            steps.append(Marks(pb.MarkBatch(batch_id=f"m{n}", marks=marks, fx_rates=rates)))
    return steps


def _define(stub: pb_grpc.PortfolioManagerStub) -> None:
    for instrument_id, currency in INSTRUMENTS.items():
        stub.DefineInstrument(pb.DefineInstrumentRequest(instrument=pb.Instrument(
            instrument_id=instrument_id, asset_class=pb.ASSET_CLASS_EQUITY, currency=currency,
        )), timeout=10)  # fmt: skip


def _send(server: ServerThread, steps: list[Step]) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.PortfolioManagerStub(channel)
        for batch in _batches(steps):
            if isinstance(batch, Marks):
                list(stub.StreamMarks(iter([batch.batch]), timeout=10))
            elif isinstance(batch, Close):
                server.call(server.running.service.writes.ingest([batch.close]))
            elif isinstance(batch, Cash):
                call = (
                    stub.ReserveCash
                    if isinstance(batch.request, pb.ReserveCashRequest)
                    else stub.ReleaseReservation
                )
                with contextlib.suppress(grpc.RpcError):  # refused alike both ways
                    call(batch.request, timeout=10)
            else:
                ingest(stub, batch)


def _batches(steps: list[Step]) -> Iterator[Marks | Cash | Close | list[pb.ExecutionEvent]]:
    """Runs of events in one Ingest call each, the marks, cash calls and closes between."""
    run: list[pb.ExecutionEvent] = []
    for step in steps:
        if isinstance(step, Marks | Cash | Close):
            if run:
                yield run
                run = []
            yield step
        else:
            run.append(step)
    if run:
        yield run


def _read(server: ServerThread) -> tuple:
    with grpc.insecure_channel(server.address) as channel:
        return everything(pb_grpc.PortfolioManagerStub(channel))


class CrashableStore(ArcticEventStore):
    """The real store, whose checkpoints can be dropped: a stop then leaves the store as a
    crash would (the last periodic checkpoint and the journal after it), so the start
    replays a tail instead of reading a checkpoint of the very end."""

    crashing = False

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        if not CrashableStore.crashing:
            super().save_checkpoint(checkpoint)


def _run(
    uri: str,
    steps: list[Step],
    cuts: list[int],
    checkpoint_every: int,
    *,
    restart: bool,
    crashes: frozenset[int] = frozenset(),
) -> tuple:
    """The history sent in parts split at `cuts` (an Ingest call ends at each), with a stop
    and a start at each cut if `restart` (those in `crashes` leaving no checkpoint at the
    stop); what a client reads at the end."""

    def started() -> ServerThread:
        CrashableStore.crashing = False
        return start_test_server(
            open_store=CrashableStore, store=uri, checkpoint_every=checkpoint_every,
            views_process=False,
        )  # fmt: skip

    server = started()
    try:
        with grpc.insecure_channel(server.address) as channel:
            _define(pb_grpc.PortfolioManagerStub(channel))
        for start, stop in itertools.pairwise([0, *cuts, len(steps)]):
            if start and restart:
                CrashableStore.crashing = start in crashes
                server.stop()
                gc.collect()  # LMDB: one open instance per path and process
                server = started()
            _send(server, steps[start:stop])
        return _read(server)
    finally:
        server.stop()
        gc.collect()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(histories(), st.data())
def test_a_restart_anywhere_changes_no_answer(steps, data):
    cuts = sorted(data.draw(st.sets(st.integers(1, len(steps) - 1), min_size=1, max_size=2)))
    crashes = frozenset(data.draw(st.sets(st.sampled_from(cuts))))
    checkpoint_every = data.draw(st.sampled_from([2, 5, 10_000]))
    with tempfile.TemporaryDirectory() as tmp:
        # Sent without a cut: where a batch ends changes nothing either (a correction or an
        # amendment is judged at the door against the fills admitted before it, booked or not).
        straight = _run(f"lmdb://{tmp}/straight", steps, [], checkpoint_every, restart=False)
        restarted = _run(
            f"lmdb://{tmp}/restarted", steps, cuts, checkpoint_every, restart=True,
            crashes=crashes,
        )  # fmt: skip
    assert restarted == straight


def test_an_amendment_after_its_fills_correction_in_one_batch_journals_alike_split():
    """Found by the property above: fill f1, its correction f2 and an amendment of f1 in one
    Ingest call journaled the amendment (refused only when applied); split by a restart
    after the correction, the door refused it, and every later sequence differed by one."""

    def fill(n: int, corrects: str = "") -> pb.ExecutionEvent:
        event = pb.Fill(
            fill_id=f"f{n}", account_id="A1", strategy_id="S1", instrument_id="AAPL",
            side=pb.SIDE_BUY, quantity="1", price="99.5", venue="ARCA", corrects=corrects,
        )  # fmt: skip
        return pb.ExecutionEvent(fill=_stamp(event, 0))

    amendment = pb.CommissionAmendment(
        amendment_id="c3", account_id="A1", fill_id="f1", commission="0",
        commission_currency="USD",
    )  # fmt: skip
    steps: list[Step] = [
        fill(1), fill(2, corrects="f1"), pb.ExecutionEvent(commission=_stamp(amendment, 0)),
        fill(4),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        straight = _run(f"lmdb://{tmp}/straight", steps, [], 2, restart=False)
        restarted = _run(f"lmdb://{tmp}/restarted", steps, [2], 2, restart=True)
    assert restarted == straight
