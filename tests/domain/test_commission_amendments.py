"""A commission reported after its fill (IB reports some late, partial fills' often at the
order's completion) sets that fill's commission: fees and cash end as if the fill had carried it
from the start, and nothing else moves (quantity, average cost, realized P&L), whatever arrives
in between (late fills restating the row, corrections) and across a restart."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.events import CommissionAmendment, ExecutionEvent, Fill, InvalidEvent
from server.domain.ledger import Ledger, Result
from server.domain.position import PositionKey
from server.domain.refusals import RefusalKind
from tests.domain.builders import BASE_NS, fill
from tests.domain.event_builders import correction
from tests.domain.restart import record, restore_checkpoint
from tests.domain.test_execution_order import (
    DEFINITIONS,
    FILL,
    SECOND,
    book_state,
    make_fill,
    new_ledger,
)

D = Decimal
DAY = 86_400 * 10**9


def amendment(
    fill_id: str, commission: object, currency: str = "", *, account: str = "A1", at: int = 0
) -> CommissionAmendment:
    return CommissionAmendment(
        amendment_id=f"{fill_id}/commission",
        account_id=account,
        fill_id=fill_id,
        commission=D(str(commission)),
        commission_currency=currency,
        timestamp_ns=BASE_NS + 3600 * SECOND + at,
    )


def cash(ledger: Ledger, account: str = "A1") -> dict[str, Decimal]:
    return {b.key.currency: b.cash for b in ledger.balances.of_account(account)}


def test_a_late_commission_sets_fees_and_cash_and_nothing_else():
    ledger = Ledger()
    record(ledger, fill("BUY", 100, 10, fill_id="x.01"), fill("SELL", 40, 12, fill_id="y.01"))
    row = ledger.book.get(PositionKey("A1", "S1", "AAPL"))
    assert row is not None
    before = (row.quantity, row.cost_basis, row.realized_pnl, row.trade_count)
    outcome = ledger.record(amendment("x.01", "1.25"))
    assert outcome.result is Result.ACCEPTED and outcome.applied.refusal is None
    row = ledger.book.get(PositionKey("A1", "S1", "AAPL"))
    assert row is not None
    assert (row.quantity, row.cost_basis, row.realized_pnl, row.trade_count) == before
    assert row.fees == D("1.25")
    assert ledger.book.get(PositionKey("A1", "", "AAPL")).fees == D("1.25")
    assert cash(ledger) == {"USD": D(-1000 + 480) - D("1.25")}
    # Amended again (the broker reported a new figure): replaces, never adds.
    again = dataclasses.replace(amendment("x.01", "1.5"), amendment_id="x.01/commission-2")
    assert ledger.record(again).result is Result.ACCEPTED
    assert ledger.book.get(PositionKey("A1", "S1", "AAPL")).fees == D("1.5")
    assert cash(ledger) == {"USD": D(-520) - D("1.5")}


def test_a_commission_in_another_currency_counts_in_that_currency():
    ledger = Ledger()
    record(ledger, fill("BUY", 10, 10, fill_id="x.01", commission=2))
    record(ledger, amendment("x.01", 3, "EUR"))
    row = ledger.book.get(PositionKey("A1", "S1", "AAPL"))
    assert row is not None and row.fees == 0 and row.other_fee_items() == (("EUR", D(3)),)
    assert cash(ledger) == {"USD": D(-100), "EUR": D(-3)}


def test_resent_it_is_a_duplicate_and_another_content_under_its_id_is_refused():
    ledger = Ledger()
    record(ledger, fill("BUY", 1, 10, fill_id="x.01"), amendment("x.01", 1))
    assert ledger.record(amendment("x.01", 1)).result is Result.DUPLICATE
    reused = ledger.record(amendment("x.01", 2))
    assert reused.result is Result.REJECTED and reused.refused is RefusalKind.ID_REUSED
    assert ledger.book.get(PositionKey("A1", "S1", "AAPL")).fees == 1


def test_an_unknown_fill_is_refused_at_the_door_and_changes_nothing():
    ledger = Ledger()
    record(ledger, fill("BUY", 1, 10, fill_id="x.01"))
    outcome = ledger.record(amendment("nope.01", 1))
    assert outcome.result is Result.REJECTED and outcome.refused is RefusalKind.NOT_FOUND
    assert "fill_id" in outcome.reason and "nope.01" in outcome.reason
    assert cash(ledger) == {"USD": D(-10)}
    assert ledger.sequence == 1


def test_a_fill_admitted_before_it_that_moves_the_window_past_its_fill_refuses_it_at_the_door():
    """The same batch: fill `old`, fill `new` three days later, an amendment of `old`. `new`
    applies first and moves the window past `old`, so the amendment is refused at the door, as
    in a later batch, and not acked to be refused when applied."""
    ledger = Ledger(correction_window_ns=DAY)
    old = fill("BUY", 1, 10, fill_id="old", at_ns=BASE_NS)
    new = fill("BUY", 1, 10, fill_id="new", at_ns=BASE_NS + 3 * DAY)
    late = dataclasses.replace(amendment("old", 1), timestamp_ns=BASE_NS + 3 * DAY)
    outcomes = [ledger.admit(event) for event in (old, new, late)]
    assert [o.result for o in outcomes] == [Result.ACCEPTED, Result.ACCEPTED, Result.REJECTED]
    assert outcomes[2].refused is RefusalKind.NOT_FOUND and "'old'" in outcomes[2].reason
    # Sent before `new`, it applies while `old` is still in the window.
    ledger = Ledger(correction_window_ns=DAY)
    outcomes = [ledger.admit(event) for event in (old, late, new)]
    assert all(o.result is Result.ACCEPTED for o in outcomes)
    for event, outcome in zip((old, late, new), outcomes, strict=True):
        assert ledger.apply(event, outcome.sequence).refusal is None
    assert cash(ledger) == {"USD": D(-21)}


def test_a_fill_booked_earlier_is_refused_at_the_door_once_an_admitted_fill_moves_past_it():
    ledger = Ledger(correction_window_ns=DAY)
    record(ledger, fill("BUY", 1, 10, fill_id="old", at_ns=BASE_NS))
    assert ledger.admit(fill("BUY", 1, 10, fill_id="new", at_ns=BASE_NS + 3 * DAY)).sequence
    refused = ledger.admit(amendment("old", 1))
    assert refused.result is Result.REJECTED and refused.refused is RefusalKind.NOT_FOUND


def test_an_amendment_the_window_moved_past_before_it_applied_is_refused_when_replayed():
    """A journal written by an earlier release may hold one: refused when applied, changing
    nothing, the same on every replay."""
    ledger = Ledger(correction_window_ns=DAY)
    record(ledger, fill("BUY", 1, 10, fill_id="old", at_ns=BASE_NS))
    new = fill("BUY", 1, 10, fill_id="new", at_ns=BASE_NS + 3 * DAY)
    assert ledger.apply(new, 2).refusal is None
    refusal = ledger.apply(amendment("old", 1), 3).refusal
    assert refusal is not None and refusal.kind is RefusalKind.NOT_FOUND
    assert refusal.field == "fill_id"
    assert cash(ledger) == {"USD": D(-20)}


def test_a_fill_replaced_by_a_correction_is_amended_under_the_correction_id():
    ledger = Ledger()
    record(
        ledger,
        fill("BUY", 10, 10, fill_id="x.01", commission=1),
        correction("x.01", "BUY", 10, 11, correction_id="x.02"),
    )
    stale = ledger.record(amendment("x.01", 5))
    assert stale.result is Result.REJECTED and stale.refused is RefusalKind.CONFLICT
    assert "x.02" in stale.reason
    record(ledger, amendment("x.02", 2))
    row = ledger.book.get(PositionKey("A1", "S1", "AAPL"))
    assert row is not None and (row.quantity, row.cost_basis, row.fees) == (10, 110, 2)
    assert cash(ledger) == {"USD": D(-112)}
    # A later correction replaces the amended fill whole: its own commission counts.
    record(ledger, correction("x.01", "BUY", 10, 12, correction_id="x.03", commission=3))
    row = ledger.book.get(PositionKey("A1", "S1", "AAPL"))
    assert row is not None and (row.cost_basis, row.fees) == (120, 3)
    assert cash(ledger) == {"USD": D(-123)}


def test_the_amendment_survives_a_late_fill_that_restates_the_row():
    ledger = Ledger()
    record(
        ledger,
        fill("BUY", 10, 100, fill_id="a", at_ns=BASE_NS + 10 * SECOND),
        fill("SELL", 10, 95, fill_id="b", at_ns=BASE_NS + 30 * SECOND),
        amendment("a", 4),
        fill("BUY", 10, 80, fill_id="late", at_ns=BASE_NS + 20 * SECOND),
    )
    row = ledger.book.get(PositionKey("A1", "S1", "AAPL"))
    assert row is not None
    # bought 10 @100 and 10 @80, sold 10 @95: avg 90, realized 50; a's commission 4 kept
    assert (row.quantity, row.realized_pnl, row.cost_basis, row.fees) == (10, 50, 900, 4)


@pytest.mark.parametrize(
    ("field", "value"), [("fill_id", ""), ("amendment_id", "a" * 200), ("account_id", "a\tb")]
)
def test_an_amendment_needs_its_ids(field, value):
    with pytest.raises(InvalidEvent) as raised:
        dataclasses.replace(amendment("x", 1), **{field: value})
    assert raised.value.field == field


@st.composite
def amended_histories(draw: st.DrawFn) -> tuple[list[ExecutionEvent], list[Fill]]:
    """Fills in any arrival order, some sent without their commission and amended later (at
    any place after the fill), and the reference: every fill with its final commission from
    the start, in execution order."""
    specs = draw(st.lists(FILL, min_size=1, max_size=12))
    final = [make_fill(n, spec) for n, spec in enumerate(specs)]
    amended = set(draw(st.lists(st.integers(0, len(final) - 1), max_size=4, unique=True)))
    sent = [
        dataclasses.replace(f, commission=D(0), commission_currency="") if n in amended else f
        for n, f in enumerate(final)
    ]
    arrival: list[ExecutionEvent] = list(draw(st.permutations(sent)))
    for n in sorted(amended):
        target = final[n]
        after = arrival.index(sent[n]) + 1
        report = CommissionAmendment(
            amendment_id=f"{target.fill_id}/commission", account_id=target.account_id,
            fill_id=target.fill_id, commission=target.commission,
            commission_currency=target.commission_currency,
            timestamp_ns=target.timestamp_ns + 5 * SECOND,
        )  # fmt: skip
        arrival.insert(draw(st.integers(after, len(arrival))), report)
    return arrival, sorted(final, key=lambda f: (f.timestamp_ns, f.fill_id))


def all_cash(ledger: Ledger) -> dict[tuple[str, str], Decimal]:
    return {
        (b.key.account_id, b.key.currency): b.cash
        for account in ("A1", "A2")
        for b in ledger.balances.of_account(account)
    }


@settings(max_examples=150, deadline=None)
@given(amended_histories(), st.data())
def test_any_arrival_with_late_commissions_and_a_restart_gives_the_reference_book(history, data):
    arrival, in_order = history
    reference = new_ledger()
    record(reference, *in_order)
    cut = data.draw(st.integers(0, len(arrival)))
    before = new_ledger()
    journal: list[tuple[int, ExecutionEvent]] = [(n + 1, d) for n, d in enumerate(DEFINITIONS)]
    journal += record(before, *arrival[:cut])
    after = Ledger()  # empty, as a process that starts
    restore_checkpoint(after, before, journal)
    for sequence, event in journal:
        after.remember(event.kind, event.event_id, sequence, event.fingerprint())
    journal += record(after, *arrival[cut:])
    assert book_state(after) == book_state(reference)
    assert all_cash(after) == all_cash(reference)
    replayed = Ledger()  # a start with no checkpoint: the whole journal again
    for sequence, event in journal:
        assert replayed.admit(event).sequence == sequence
        replayed.apply(event, sequence)
    assert book_state(replayed) == book_state(reference)
    assert all_cash(replayed) == all_cash(reference)


def test_an_amendment_of_a_fill_an_admitted_correction_replaces_is_refused_at_the_door():
    """Where a batch ends changes nothing: an amendment of a fill that a correction admitted
    before it replaces is refused at the door, as once the correction has applied. (It was
    acked, journaled, and refused only when applied; a restart between the two, which applies
    the correction first, refused it at the door: the two journals differed.) An amendment of
    the correction itself is taken."""
    first = fill("BUY", 1, 10, fill_id="x.01")
    second = correction("x.01", "BUY", 1, 10, correction_id="x.02")
    third = correction("x.02", "BUY", 2, 10, correction_id="x.03")

    booked = Ledger()  # the correction applied before the amendment arrives
    record(booked, first, second)
    split = booked.admit(amendment("x.01", 1))
    assert split.result is Result.REJECTED and split.refused is RefusalKind.CONFLICT

    same_batch = Ledger()
    assert [same_batch.admit(e).result for e in (first, second)] == [Result.ACCEPTED] * 2
    refused = same_batch.admit(amendment("x.01", 1))
    assert (refused.result, refused.refused, refused.reason) == (
        Result.REJECTED, RefusalKind.CONFLICT, split.reason,
    )  # fmt: skip
    of_the_correction = dataclasses.replace(amendment("x.02", 1), amendment_id="x.02/c")
    taken = same_batch.admit(of_the_correction)
    assert taken.result is Result.ACCEPTED
    for event, sequence in ((first, 1), (second, 2), (of_the_correction, taken.sequence)):
        assert same_batch.apply(event, sequence).refusal is None
    assert cash(same_batch) == {"USD": D(-11)}

    # A correction of a correction booked before, admitted: the booked one is replaced.
    assert booked.admit(third).result is Result.ACCEPTED
    refused = booked.admit(dataclasses.replace(amendment("x.02", 1), amendment_id="x.02/c"))
    assert refused.result is Result.REJECTED and refused.refused is RefusalKind.CONFLICT
    assert "'x.03'" in refused.reason
