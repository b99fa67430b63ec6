"""Broker corrections of executions: the corrected execution counts once, never twice."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.book import NO_PRICE
from server.domain.corrections import CorrectableFills, JournaledFill
from server.domain.events import MAX_ID_LENGTH
from server.domain.ledger import Ledger, Result
from server.domain.position import PositionKey
from server.domain.refusals import RefusalKind
from tests.domain.builders import BASE_NS, fill
from tests.domain.event_builders import correction, order_fill, status

D = Decimal
DAY = 86_400 * 10**9


def row(ledger: Ledger, strategy: str = "S1", instrument: str = "AAPL"):
    found = ledger.book.get(PositionKey("A1", strategy, instrument))
    assert found is not None
    return found


def record(ledger: Ledger, *events) -> None:
    for event in events:
        outcome = ledger.record(event)
        assert outcome.result is Result.ACCEPTED, outcome.reason
        assert outcome.applied.refusal is None, outcome.applied.refusal


def test_a_correction_replaces_its_fill_instead_of_adding_to_it():
    ledger = Ledger()
    record(
        ledger,
        fill("BUY", 100, 10, fill_id="x.01", commission=1),
        correction("x.01", "BUY", 100, "10.5", correction_id="x.02", commission=2),
    )
    position = row(ledger)
    assert (position.quantity, position.cost_basis, position.realized_pnl) == (100, 1050, 0)
    assert position.fees == 2
    account = ledger.book.get(PositionKey("A1", "", "AAPL"))
    assert account is not None and account.quantity == 100 and account.cost_basis == 1050
    cash = ledger.balances.of_account("A1")
    assert [b.cash for b in cash] == [-1052]


def test_a_correction_may_move_the_fill_to_another_quantity_and_strategy():
    ledger = Ledger()
    record(
        ledger,
        fill("BUY", 100, 10, fill_id="x.01", strategy="S1"),
        correction("x.01", "BUY", 60, 10, strategy="S2", correction_id="x.02"),
    )
    assert row(ledger, "S1").quantity == 0
    assert row(ledger, "S2").quantity == 60
    assert ledger.book.get(PositionKey("A1", "", "AAPL")).quantity == 60


def test_corrections_chain_whichever_id_they_name():
    ledger = Ledger()
    record(
        ledger,
        fill("SELL", 10, 20, fill_id="x.01"),
        correction("x.01", "SELL", 10, 21, correction_id="x.02"),
        correction("x.01", "SELL", 12, 21, correction_id="x.03"),
        correction("x.03", "SELL", 11, 21, correction_id="x.04"),
    )
    assert row(ledger).quantity == -11
    assert row(ledger).cost_basis == -231


def test_total_pnl_is_as_if_only_the_replacement_had_been_booked():
    """With fills in between, realized and unrealized split differently, but their sum (and
    the quantity, and the cash) is that of a history with the replacement in its place."""
    corrected, direct = Ledger(), Ledger()
    record(
        corrected,
        fill("BUY", 100, 10, fill_id="a.01"),
        fill("BUY", 100, 12, fill_id="b.01"),
        fill("SELL", 50, 13, fill_id="c.01"),
        correction("a.01", "BUY", 100, "10.5", correction_id="a.02"),
    )
    record(
        direct,
        fill("BUY", 100, "10.5", fill_id="a.02"),
        fill("BUY", 100, 12, fill_id="b.01"),
        fill("SELL", 50, 13, fill_id="c.01"),
    )
    mark = D("12.5")
    ours, theirs = row(corrected), row(direct)
    assert ours.quantity == theirs.quantity == 150
    assert ours.realized_pnl + ours.unrealized_pnl(mark) == (
        theirs.realized_pnl + theirs.unrealized_pnl(mark)
    )
    assert [b.cash for b in corrected.balances.of_account("A1")] == [
        b.cash for b in direct.balances.of_account("A1")
    ]


def test_a_correction_of_an_unknown_fill_is_rejected_and_changes_nothing():
    ledger = Ledger()
    record(ledger, fill("BUY", 1, 10, fill_id="y.01"))
    before, sequence = row(ledger).copy(), ledger.sequence
    outcome = ledger.record(correction("nope.01", "BUY", 5, 10, correction_id="nope.02"))
    assert outcome.result is Result.REJECTED
    assert outcome.reason.startswith("corrects: no fill 'nope.01'")
    assert row(ledger) == before and ledger.sequence == sequence


def test_a_correction_names_a_fill_of_its_own_account():
    ledger = Ledger()
    record(ledger, fill("BUY", 1, 10, fill_id="z.01", account="A2"))
    outcome = ledger.record(correction("z.01", "BUY", 2, 10, correction_id="z.02"))
    assert outcome.result is Result.REJECTED


def test_a_correction_may_follow_its_fill_before_either_is_applied():
    ledger = Ledger()
    events = [
        fill("BUY", 3, 10, fill_id="w.01"),
        correction("w.01", "BUY", 4, 10, correction_id="w.02"),
    ]
    outcomes = [ledger.admit(event) for event in events]
    assert [o.result for o in outcomes] == [Result.ACCEPTED, Result.ACCEPTED]
    for event, outcome in zip(events, outcomes, strict=True):
        assert ledger.apply(event, outcome.sequence).refusal is None
    assert row(ledger).quantity == 4


def test_a_fill_admitted_before_a_correction_that_moves_the_window_past_its_fill_refuses_it():
    """Admitted after a later fill that is not applied yet (the same batch, or a group still
    committing): that fill will move the window past the corrected one before the correction
    applies, so the door refuses it, as it would once the later fill is booked."""
    ledger = Ledger(correction_window_ns=DAY)
    record(ledger, fill("BUY", 1, 10, fill_id="v.01", at_ns=BASE_NS))
    later = fill("BUY", 1, 10, fill_id="far.01", at_ns=BASE_NS + 2 * DAY)
    fix = correction("v.01", "BUY", 5, 10, correction_id="v.02", at_ns=BASE_NS + 2 * DAY)
    assert ledger.admit(later).result is Result.ACCEPTED
    refused = ledger.admit(fix)
    assert refused.result is Result.REJECTED and refused.refused is RefusalKind.NOT_FOUND
    assert "corrects" in refused.reason and "v.01" in refused.reason
    assert ledger.sequence == 2  # nothing given to the refused correction


def test_a_fill_sent_earlier_in_the_batch_is_corrected_unless_a_later_fill_moves_it_out():
    ledger = Ledger(correction_window_ns=DAY)
    old = fill("BUY", 1, 10, fill_id="o.01", at_ns=BASE_NS)
    near = fill("BUY", 1, 10, fill_id="n.01", at_ns=BASE_NS + DAY // 2)
    far = fill("BUY", 1, 10, fill_id="f.01", at_ns=BASE_NS + 2 * DAY)
    fix_old = correction("o.01", "BUY", 3, 10, correction_id="o.02", at_ns=BASE_NS + 2 * DAY)
    fix_near = correction("n.01", "BUY", 4, 10, correction_id="n.02", at_ns=BASE_NS + DAY)
    fix_again = correction("n.02", "BUY", 5, 10, correction_id="n.03", at_ns=BASE_NS + DAY)
    events = [old, near, fix_near, far, fix_old, fix_again]
    outcomes = [ledger.admit(event) for event in events]
    assert [o.result for o in outcomes] == [Result.ACCEPTED] * 4 + [Result.REJECTED] * 2
    assert outcomes[4].refused is RefusalKind.NOT_FOUND and "o.01" in outcomes[4].reason
    # n.02 takes n.01's place in time (half a day in): f.01 moves the window past it too
    assert outcomes[5].refused is RefusalKind.NOT_FOUND and "n.02" in outcomes[5].reason
    for event, outcome in zip(events, outcomes, strict=True):
        if outcome.result is Result.ACCEPTED:
            assert ledger.apply(event, outcome.sequence).refusal is None
    assert row(ledger).quantity == 1 + 4 + 1


def test_a_correction_the_window_moved_past_before_it_applied_is_refused_when_replayed():
    """A journal written by an earlier release may hold a correction admitted while its fill
    was correctable and applied after a later fill moved the window on: refused when applied,
    changing nothing, the same on every replay."""
    ledger = Ledger(correction_window_ns=DAY)
    record(ledger, fill("BUY", 1, 10, fill_id="v.01", at_ns=BASE_NS))
    later = fill("BUY", 1, 10, fill_id="far.01", at_ns=BASE_NS + 2 * DAY)
    fix = correction("v.01", "BUY", 5, 10, correction_id="v.02", at_ns=BASE_NS + 2 * DAY)
    assert ledger.apply(later, 2).refusal is None
    refusal = ledger.apply(fix, 3).refusal
    assert refusal is not None and refusal.kind is RefusalKind.NOT_FOUND
    assert refusal.field == "corrects"
    assert row(ledger).quantity == 2


def test_a_fill_older_than_the_window_can_no_longer_be_corrected():
    ledger = Ledger(correction_window_ns=DAY)
    record(
        ledger,
        fill("BUY", 1, 10, fill_id="old.01", at_ns=BASE_NS),
        fill("BUY", 1, 10, fill_id="new.01", at_ns=BASE_NS + 2 * DAY),
    )
    late = correction("old.01", "BUY", 2, 10, correction_id="old.02", at_ns=BASE_NS + 2 * DAY)
    assert ledger.record(late).result is Result.REJECTED
    fresh = correction("new.01", "BUY", 3, 10, correction_id="new.02", at_ns=BASE_NS + 2 * DAY)
    assert ledger.record(fresh).result is Result.ACCEPTED
    assert row(ledger).quantity == 4


def test_the_order_counts_the_corrected_execution_once():
    ledger = Ledger()
    record(
        ledger,
        status("SUBMITTED", 1, order_id="7", strategy="S1", instrument="AAPL", remaining=5),
        order_fill("BUY", 5, 10, order_id="7", fill_id="o.01"),
        correction("o.01", "BUY", 5, 11, correction_id="o.02", order_id="7"),
    )
    order = ledger.orders.find("A1", "7", "")
    assert order is not None and order.booked_quantity == 5 and order.booked_fills == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 50), st.integers(1, 30)),
        min_size=1,
        max_size=8,
    ),
    st.data(),
)
def test_recovery_reloads_the_window_and_corrects_the_same_way(trades, data):
    """A ledger rebuilt from a checkpoint plus the journal's fills in the window (as recovery
    does) holds the same correctable fills as the one that ran: a later correction applies
    the same way in both."""
    window = 5 * 10**9
    events = [
        fill(side, quantity, price, fill_id=f"e{i}.01", at_ns=BASE_NS + i * 10**9)
        for i, (side, quantity, price) in enumerate(trades)
    ]
    index = data.draw(st.integers(0, len(events) - 1))
    live = Ledger(correction_window_ns=window)
    record(live, *events)
    reloaded = CorrectableFills(window)
    horizon = live.corrections.latest_ns - window
    rebuilt = Ledger(correction_window_ns=window)
    rebuilt.corrections = reloaded
    rebuilt.reload_correctable(
        (
            sequence,
            JournaledFill(
                event.account_id,
                event.strategy_id,
                event.instrument_id,
                event.fill_id,
                event.timestamp_ns,
                event.text(),
            ),
        )
        for sequence, event in enumerate(events, 1)
        if event.timestamp_ns >= horizon
    )
    target = events[index]
    late = correction(target.fill_id, "BUY", 1, 1, correction_id="late", at_ns=BASE_NS)
    assert (live.corrections.find("A1", target.fill_id) is None) == (
        rebuilt.corrections.find("A1", target.fill_id) is None
    )
    assert len(live.corrections) == len(rebuilt.corrections)
    found = rebuilt.corrections.find("A1", target.fill_id)
    if found is not None:  # reloaded as text, decoded when asked: the same fill
        assert found[1].fill == target
    assert (live.record(late).result is Result.ACCEPTED) == (
        late.corrects in {e.fill_id for e in events if e.timestamp_ns >= horizon}
    )


def test_ids_of_the_longest_allowed_length_still_correct():
    ledger = Ledger()
    original, fixed = "o" * MAX_ID_LENGTH, "c" * MAX_ID_LENGTH
    record(
        ledger,
        fill("BUY", 2, 10, fill_id=original),
        correction(original, "BUY", 3, 10, correction_id=fixed),
    )
    assert row(ledger).quantity == 3


def test_a_correction_moving_the_latest_fill_away_leaves_its_instrument_the_fill_before():
    """The instrument's last fill price is its latest fill's: once that fill is corrected to
    another instrument, the one before it (not the moved fill's price, which is another
    instrument's, and the same after a restart as before it)."""
    ledger = Ledger()
    record(
        ledger,
        fill("BUY", 10, 100, fill_id="f1", strategy="S1", instrument="SAP", at_ns=BASE_NS),
        fill("BUY", 5, 101, fill_id="f2", strategy="S2", instrument="SAP", at_ns=BASE_NS + 1),
        correction("f2", "BUY", 5, 101, instrument="AAPL", strategy="S2", at_ns=BASE_NS + 1),
    )
    book = ledger.book
    assert book.fill_price("SAP").price == 100 and book.fill_price("SAP").fill_id == "f1"
    assert book.price("SAP").price == 100
    view = book.view(row(ledger, "S1", "SAP"))
    assert view.unrealized_pnl == 0  # 10 bought at 100, valued at 100 (not 101)


def test_a_correction_moving_an_instruments_only_fill_away_leaves_it_no_price():
    ledger = Ledger()
    record(
        ledger,
        fill("BUY", 10, 100, fill_id="f1", instrument="SAP", at_ns=BASE_NS),
        correction("f1", "BUY", 10, 100, instrument="AAPL", at_ns=BASE_NS),
    )
    book = ledger.book
    assert book.fill_price("SAP") == NO_PRICE
    assert book.price("SAP") == NO_PRICE  # not 100 from a fill that was AAPL's
    assert book.price("AAPL").price == 100
