"""The journal's texts are byte-for-byte what they were: the digest that tells a resent event
from an id reused for another one is taken over them, so an encoder change that moved one
byte would make every resend of an older event a refusal. The codec reads all of a record's
fields in one call (operator.attrgetter); these tests hold it to the plain definition, one
field at a time, for every kind and for records of one field and of none."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from server.domain.codec import FIELD_SEPARATOR, VERSION_MARK, TextCodec, fingerprint_of
from server.domain.events import BrokerCash, BrokerPosition, Fill, JournaledEvent, Side
from tests.domain.builders import BASE_NS
from tests.domain.event_builders import (
    broker_positions,
    correction,
    deposit,
    instrument,
    order_fill,
    paper_account,
    release,
    reservation,
    status,
)


def _one_field_at_a_time(codec: TextCodec, value: object) -> str:
    """The definition: each field's text in declaration order, looked up by name."""
    parts = [
        encode(getattr(value, name))
        for name, encode in zip(codec.names, codec._encoders, strict=True)
    ]
    mark = [f"{VERSION_MARK}{codec.version}"] if codec.version > 1 else []
    return FIELD_SEPARATOR.join(mark + parts)


def _events() -> list[JournaledEvent]:
    return [
        order_fill("BUY", 10, "100.50", order_id="O1", order_ref="R1", commission_currency="EUR"),
        Fill(
            fill_id="F9",
            account_id="A1",
            strategy_id="S1",
            instrument_id="AAPL",
            side=Side.SELL,
            quantity=Decimal("0.5"),
            price=Decimal("1E+2"),
            timestamp_ns=BASE_NS,
            commission=Decimal("0.350"),
            venue="SMART",
            trace_id="T1",
        ),
        status("FILLED", BASE_NS, order_id="O1", side="BUY", filled=10, avg_price="100.5"),
        status("SUBMITTED", BASE_NS, order_ref="R2"),
        deposit("1000.00", chain="C1"),
        reservation("R1", 250),
        release("R1"),
        instrument("AAPL", multiplier=100),
        paper_account("P1", initial_cash=5000),
        correction("F9", "SELL", "0.25", "101"),
        broker_positions(("AAPL", 10, 100), ("ES", -1, "5000.25", 50), account="LIVE1"),
    ]


def test_every_kind_encodes_as_its_fields_one_by_one() -> None:
    for event in _events():
        codec = type(event).codec()
        assert codec.encode(event) == _one_field_at_a_time(codec, event), type(event).__name__
        assert type(event).from_text(event.text()) == event


def test_a_fill_text_and_its_digest_are_pinned() -> None:
    fill = Fill(
        fill_id="F1", account_id="A1", strategy_id="S1", instrument_id="AAPL", side=Side.BUY,
        quantity=Decimal("10.0"), price=Decimal("100.50"), timestamp_ns=7,
        commission=Decimal("0.35"), commission_currency="USD", order_ref="R", order_id="O",
        venue="V", trace_id="T",
    )  # fmt: skip
    text = FIELD_SEPARATOR.join(
        ["F1", "A1", "S1", "AAPL", "BUY", "10", "100.5", "7", "0.35", "USD", "R", "O", "V", "T"]
    )
    assert fill.text() == text
    assert fill.fingerprint() == fingerprint_of(text)


def test_records_inside_an_event_and_records_of_one_field_or_none() -> None:
    position = BrokerPosition(
        instrument_id="AAPL", quantity=Decimal(3), avg_cost=Decimal("1.5"), currency="USD"
    )  # fmt: skip
    cash = BrokerCash(currency="USD", amount=Decimal("12.00"))
    for record in (position, cash):
        codec = TextCodec(type(record))
        assert codec.encode(record) == _one_field_at_a_time(codec, record)
        assert codec.decode(codec.encode(record)) == record

    @dataclasses.dataclass(frozen=True)
    class One:
        amount: Decimal

    @dataclasses.dataclass(frozen=True)
    class Empty:
        pass

    assert TextCodec(One).encode(One(Decimal("2.50"))) == "2.5"
    assert TextCodec(One).decode("2.5") == One(Decimal("2.5"))
    assert TextCodec(Empty).encode(Empty()) == ""
