"""The wire conversions: exact decimals, explicit time zones, enums that mirror the proto."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from client import wire
from client.errors import ProtocolViolation
from client.models import (
    EventResult,
    Fill,
    OrderStatus,
    OrderStatusUpdate,
    PositionLevel,
    Side,
    UpdateKind,
)
from client.queries import (
    PortfolioSummaryQuery,
    PositionQuery,
    PositionsQuery,
    StrategyPortfolioQuery,
    TracePositionQuery,
)
from portfolio.v1 import portfolio_pb2 as pb

T0 = datetime(2024, 3, 1, 14, 30, 0, 123456, tzinfo=UTC)


def make_fill(**overrides: object) -> Fill:
    fields: dict[str, object] = {
        "fill_id": "F1",
        "account_id": "A1",
        "strategy_id": "S1",
        "instrument_id": "AAPL",
        "side": Side.BUY,
        "quantity": Decimal("100"),
        "price": Decimal("10"),
        "timestamp": T0,
    }
    fields.update(overrides)
    return Fill(**fields)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Decimals


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("10.666666667"), "10.666666667"),
        (Decimal("-30"), "-30"),
        (Decimal("0.01"), "0.01"),
        (Decimal("10.50"), "10.50"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("-2.5E-3"), "-0.0025"),
        (Decimal("-0"), "0"),
        (Decimal("-0.00"), "0.00"),
        (
            Decimal("123456789012345678901234567890.123456789012345678"),
            "123456789012345678901234567890.123456789012345678",
        ),
    ],
)
def test_decimals_go_out_in_plain_notation(value: Decimal, text: str) -> None:
    assert wire.format_decimal(value) == text
    assert wire.parse_decimal(text) == value


@pytest.mark.parametrize(
    "value", [Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity")]
)
def test_non_finite_decimals_are_refused(value: Decimal) -> None:
    with pytest.raises(ValueError, match="finite"):
        wire.format_decimal(value)


@pytest.mark.parametrize("value", [10.5, 10, "10", True])
def test_only_decimals_are_accepted(value: object) -> None:
    with pytest.raises(TypeError, match="Decimal"):
        wire.format_decimal(value)  # type: ignore[arg-type]


def test_a_float_in_a_fill_never_reaches_the_wire() -> None:
    with pytest.raises(TypeError):
        wire.fill_to_proto(make_fill(price=10.1))


@pytest.mark.parametrize("text", ["abc", "1,000", "NaN", "Infinity", "-inf", " "])
def test_bad_incoming_decimal_strings_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"decimal|finite"):
        wire.parse_decimal(text)


def test_empty_decimal_string_means_zero_except_avg_fill_price() -> None:
    assert wire.parse_decimal("") == Decimal(0)
    assert wire.parse_optional_decimal("") is None
    assert wire.parse_optional_decimal("12.5") == Decimal("12.5")
    status = wire.order_status_from_proto(pb.OrderStatusUpdate(update_id="U1"))
    assert status.avg_fill_price is None
    assert status.filled_quantity == Decimal(0)
    assert status.remaining_quantity == Decimal(0)


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: abs(d.adjusted()) < 60
    )
)
def test_every_finite_decimal_survives_the_round_trip(value: Decimal) -> None:
    text = wire.format_decimal(value)
    assert "E" not in text.upper()
    assert "NAN" not in text.upper()
    assert wire.parse_decimal(text) == value


# ---------------------------------------------------------------------------------------------
# Timestamps


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        wire.to_timestamp(datetime(2024, 3, 1, 14, 30))
    with pytest.raises(ValueError, match="naive"):
        wire.fill_to_proto(make_fill(timestamp=datetime(2024, 3, 1, 14, 30)))


def test_aware_datetimes_are_converted_to_the_same_instant_in_utc() -> None:
    paris = timezone(timedelta(hours=2))
    local = datetime(2024, 6, 3, 16, 30, 0, 250000, tzinfo=paris)
    stamp = wire.to_timestamp(local)
    assert stamp.seconds == int(datetime(2024, 6, 3, 14, 30, tzinfo=UTC).timestamp())
    assert stamp.nanos == 250_000_000
    back = wire.from_timestamp(stamp)
    assert back == local
    assert back.utcoffset() == timedelta(0)
    assert back.hour == 14


@pytest.mark.parametrize(
    "moment",
    [
        T0,
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_timestamps_round_trip_to_the_microsecond(moment: datetime) -> None:
    stamp = wire.to_timestamp(moment)
    assert 0 <= stamp.nanos < 1_000_000_000
    assert wire.from_timestamp(stamp) == moment
    assert wire.from_timestamp(stamp).tzinfo is not None


def test_sub_microsecond_nanos_are_truncated() -> None:
    assert wire.from_timestamp(Timestamp(seconds=0, nanos=1_999)) == datetime(
        1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC
    )


def test_unset_timestamps_become_none() -> None:
    position = wire.position_from_proto(pb.Position(account_id="A1", quantity="0"))
    assert position.opened_at is None
    assert position.updated_at is None
    fill = wire.fill_from_proto(pb.Fill(fill_id="F1"))
    assert fill.timestamp is None
    trace = wire.trace_from_proto(pb.TracePosition(trace_id="T1"))
    assert (trace.first_fill_at, trace.last_fill_at, trace.expires_at) == (None, None, None)


def test_a_fill_without_timestamp_leaves_the_field_unset() -> None:
    assert not wire.fill_to_proto(make_fill(timestamp=None)).HasField("timestamp")


def test_epoch_timestamp_is_not_mistaken_for_unset() -> None:
    message = pb.Position(opened_at=Timestamp(seconds=0, nanos=0))
    assert message.HasField("opened_at")
    assert wire.position_from_proto(message).opened_at == datetime(1970, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Events


def test_fill_round_trips_exactly() -> None:
    fill = make_fill(
        quantity=Decimal("10.666666667"),
        price=Decimal("-30"),
        commission=Decimal("-0.35"),
        commission_currency="USD",
        side=Side.SELL,
        order_ref="S1-42",
        venue="ARCA",
        trace_id="T1",
        order_id="9001",
    )
    message = wire.fill_to_proto(fill)
    assert message.quantity == "10.666666667"
    assert message.price == "-30"
    assert message.commission == "-0.35"
    assert message.side == pb.SIDE_SELL
    back = wire.fill_from_proto(pb.Fill.FromString(message.SerializeToString()))
    assert back == fill
    assert str(back.quantity) == "10.666666667"
    assert str(back.price) == "-30"


def test_fill_commission_defaults_to_zero_on_the_wire() -> None:
    assert wire.fill_to_proto(make_fill()).commission == "0"
    assert wire.fill_from_proto(pb.Fill(fill_id="F1", commission="")).commission == Decimal(0)


def test_order_status_round_trips_exactly() -> None:
    update = OrderStatusUpdate(
        update_id="U1",
        account_id="A1",
        instrument_id="AAPL",
        status=OrderStatus.PARTIALLY_FILLED,
        strategy_id="S1",
        order_ref="S1-42",
        order_id="9001",
        filled_quantity=Decimal("40"),
        remaining_quantity=Decimal("60.5"),
        avg_fill_price=Decimal("10.125"),
        timestamp=T0,
        side=Side.BUY,
        perm_id="77",
    )
    message = wire.order_status_to_proto(update)
    assert message.avg_fill_price == "10.125"
    assert message.status == pb.ORDER_STATUS_PARTIALLY_FILLED
    assert wire.order_status_from_proto(message) == update


def test_order_status_without_fills_sends_empty_avg_fill_price() -> None:
    update = OrderStatusUpdate(
        update_id="U1", account_id="A1", instrument_id="AAPL", status=OrderStatus.SUBMITTED
    )
    message = wire.order_status_to_proto(update)
    assert message.avg_fill_price == ""
    assert message.filled_quantity == "0"
    assert wire.order_status_from_proto(message).avg_fill_price is None


def test_events_are_wrapped_in_the_right_oneof_branch() -> None:
    assert wire.event_to_proto(make_fill()).WhichOneof("event") == "fill"
    status = OrderStatusUpdate(
        update_id="U1", account_id="A1", instrument_id="AAPL", status=OrderStatus.FILLED
    )
    assert wire.event_to_proto(status).WhichOneof("event") == "status"
    with pytest.raises(TypeError):
        wire.event_to_proto("F1")  # type: ignore[arg-type]


def test_event_ids_are_the_idempotency_keys() -> None:
    assert make_fill(fill_id="F9").event_id == "F9"
    status = OrderStatusUpdate(
        update_id="U9", account_id="A1", instrument_id="AAPL", status=OrderStatus.FILLED
    )
    assert status.event_id == "U9"


def test_ack_conversion() -> None:
    ack = wire.ack_from_proto(
        pb.EventAck(event_id="F1", sequence=7, result=pb.EVENT_RESULT_DUPLICATE, reason="seen")
    )
    assert (ack.event_id, ack.sequence, ack.result, ack.reason) == (
        "F1",
        7,
        EventResult.DUPLICATE,
        "seen",
    )
    assert ack.applied
    rejected = wire.ack_from_proto(pb.EventAck(event_id="F2", result=pb.EVENT_RESULT_REJECTED))
    assert not rejected.applied
    assert rejected.sequence == 0


# ---------------------------------------------------------------------------------------------
# Enums


@pytest.mark.parametrize(
    ("sdk_enum", "proto_enum", "prefix"),
    [
        (Side, pb.Side, "SIDE"),
        (OrderStatus, pb.OrderStatus, "ORDER_STATUS"),
        (EventResult, pb.EventResult, "EVENT_RESULT"),
        (PositionLevel, pb.PositionLevel, "POSITION_LEVEL"),
        (UpdateKind, pb.UpdateKind, "UPDATE_KIND"),
    ],
)
def test_enums_mirror_the_proto(sdk_enum: type[enum.Enum], proto_enum: object, prefix: str) -> None:
    proto_names = {f"{prefix}_{m.name}": m.value for m in sdk_enum}
    assert proto_names == dict(proto_enum.items())  # type: ignore[attr-defined]


def test_an_enum_value_newer_than_the_sdk_reads_as_unspecified() -> None:
    fill = wire.fill_from_proto(pb.Fill(fill_id="F1", side=pb.Side.ValueType(42)))
    assert fill.side is Side.UNSPECIFIED
    update = wire.update_from_proto(pb.PortfolioUpdate(kind=pb.UpdateKind.ValueType(99)))
    assert update.kind is UpdateKind.UNSPECIFIED


# ---------------------------------------------------------------------------------------------
# Reads


def proto_position(**overrides: object) -> pb.Position:
    fields: dict[str, object] = {
        "account_id": "A1",
        "strategy_id": "S1",
        "instrument_id": "AAPL",
        "level": pb.POSITION_LEVEL_STRATEGY,
        "quantity": "-30",
        "avg_cost": "9",
        "realized_pnl": "-10",
        "unrealized_pnl": "0",
        "fees": "3.30",
        "net_pnl": "-13.30",
        "market_price": "9",
        "market_value": "-270",
        "cost_basis": "-270",
        "multiplier": "1",
        "trade_count": 4,
        "opened_at": wire.to_timestamp(T0),
        "updated_at": wire.to_timestamp(T0 + timedelta(seconds=3)),
        "last_sequence": 4,
    }
    fields.update(overrides)
    return pb.Position(**fields)  # type: ignore[arg-type]


def test_position_conversion_is_exact() -> None:
    position = wire.position_from_proto(proto_position())
    assert position.level is PositionLevel.STRATEGY
    assert position.quantity == Decimal("-30")
    assert position.avg_cost == Decimal("9")
    assert position.fees == Decimal("3.30")
    assert str(position.net_pnl) == "-13.30"
    assert position.cost_basis == Decimal("-270")
    assert position.trade_count == 4
    assert position.last_sequence == 4
    assert position.opened_at == T0
    assert position.updated_at == T0 + timedelta(seconds=3)


def test_strategy_portfolio_and_summary_conversion() -> None:
    totals = pb.PortfolioTotals(
        realized_pnl="20",
        fees="3.60",
        net_pnl="16.40",
        long_exposure="100.5",
        short_exposure="40",
        gross_exposure="140.5",
        net_exposure="60.5",
        open_positions=2,
        total_positions=3,
        trade_count=5,
    )
    portfolio = wire.strategy_portfolio_from_proto(
        pb.StrategyPortfolio(
            strategy_id="S1", positions=[proto_position()], totals=totals, as_of_sequence=9
        )
    )
    assert portfolio.account_id == ""
    assert len(portfolio.positions) == 1
    assert portfolio.totals.net_pnl == Decimal("16.40")
    assert portfolio.totals.unrealized_pnl == Decimal(0)
    assert portfolio.totals.short_exposure == Decimal("40")
    assert portfolio.totals.open_positions == 2
    assert portfolio.as_of_sequence == 9

    summary = wire.summary_from_proto(
        pb.PortfolioSummary(
            account_id="A1",
            account_totals=totals,
            strategies=[pb.StrategyTotals(strategy_id="S1", totals=totals)],
            as_of_sequence=9,
        )
    )
    assert summary.account_totals.gross_exposure == Decimal("140.5")
    assert [s.strategy_id for s in summary.strategies] == ["S1"]
    assert summary.strategies[0].totals.trade_count == 5


def test_unset_totals_read_as_none_not_zeros() -> None:
    # The service leaves totals unset where more than one currency is involved (issue 11).
    portfolio = wire.strategy_portfolio_from_proto(pb.StrategyPortfolio(strategy_id="S1"))
    assert portfolio.totals is None
    assert portfolio.base_totals is None
    summary = wire.summary_from_proto(pb.PortfolioSummary(account_id="A1"))
    assert summary.account_totals is None


def test_trace_conversion() -> None:
    message = pb.TracePosition(
        trace_id="T1",
        legs=[
            pb.TraceLeg(
                step=1,
                sequence=3,
                fill_id="F3",
                instrument_id="ES",
                side=pb.SIDE_SELL,
                quantity="2",
                price="-0.25",
                timestamp=wire.to_timestamp(T0),
            )
        ],
        net=[pb.TraceNet(instrument_id="ES", quantity="-2", cash_flow="25.00")],
        first_fill_at=wire.to_timestamp(T0),
        expires_at=wire.to_timestamp(T0 + timedelta(hours=1)),
    )
    trace = wire.trace_from_proto(message)
    assert trace.legs[0].side is Side.SELL
    assert trace.legs[0].price == Decimal("-0.25")
    assert trace.legs[0].timestamp == T0
    assert trace.net[0].cash_flow == Decimal("25.00")
    assert trace.first_fill_at == T0
    assert trace.last_fill_at is None
    assert trace.expires_at == T0 + timedelta(hours=1)


def test_position_request_distinguishes_absent_strategy() -> None:
    account_row = wire.position_request(PositionQuery(account_id="A1", instrument_id="AAPL"))
    assert not account_row.HasField("strategy_id")
    strategy_row = wire.position_request(
        PositionQuery(account_id="A1", instrument_id="AAPL", strategy_id="S1")
    )
    assert strategy_row.HasField("strategy_id")
    assert strategy_row.strategy_id == "S1"


def test_list_positions_request_carries_every_filter() -> None:
    request = wire.positions_request(
        PositionsQuery(
            account_id="A1",
            strategy_id="S1",
            instrument_id="AAPL",
            level=PositionLevel.ACCOUNT,
            include_flat=True,
            page_size=50,
            page_token="tok",
        )
    )
    assert request == pb.ListPositionsRequest(
        account_id="A1",
        strategy_id="S1",
        instrument_id="AAPL",
        level=pb.POSITION_LEVEL_ACCOUNT,
        include_flat=True,
        page_size=50,
        page_token="tok",
    )
    assert wire.positions_request(PositionsQuery()).level == pb.POSITION_LEVEL_STRATEGY


@pytest.mark.parametrize(
    ("query", "branch"),
    [
        (PositionQuery(account_id="A1", instrument_id="AAPL"), "get_position"),
        (StrategyPortfolioQuery(strategy_id="S1"), "get_strategy_portfolio"),
        (PortfolioSummaryQuery(), "get_portfolio_summary"),
        (PositionsQuery(), "list_positions"),
        (TracePositionQuery(trace_id="T1"), "get_trace_position"),
    ],
)
def test_query_requests_use_the_matching_branch(query: object, branch: str) -> None:
    assert wire.query_to_proto(query).WhichOneof("query") == branch  # type: ignore[arg-type]


def test_query_results_are_typed_by_the_request() -> None:
    response = pb.PortfolioResponse(position=proto_position())
    position = wire.query_result(PositionQuery(account_id="A1", instrument_id="AAPL"), response)
    assert position.quantity == Decimal("-30")
    page = wire.query_result(
        PositionsQuery(),
        pb.PortfolioResponse(
            list_positions=pb.ListPositionsResponse(
                positions=[proto_position()], next_page_token="n", as_of_sequence=4
            )
        ),
    )
    assert (len(page.positions), page.next_page_token, page.as_of_sequence) == (1, "n", 4)


def test_query_answered_in_another_branch_is_a_protocol_violation() -> None:
    response = pb.PortfolioResponse(position=proto_position())
    with pytest.raises(ProtocolViolation):
        wire.query_result(StrategyPortfolioQuery(strategy_id="S1"), response)
    with pytest.raises(ProtocolViolation):
        wire.query_result(TracePositionQuery(trace_id="T1"), pb.PortfolioResponse())


# ---------------------------------------------------------------------------------------------
# Live updates


def test_subscribe_request() -> None:
    request = wire.subscribe_request(
        account_id="A1",
        strategy_id="",
        instrument_id="AAPL",
        level=PositionLevel.UNSPECIFIED,
        from_sequence=17,
    )
    # Batches are asked for by default (a service that predates them ignores the flag).
    assert request == pb.SubscribeUpdatesRequest(
        account_id="A1", instrument_id="AAPL", from_sequence=17, batch=True
    )
    with pytest.raises(ValueError, match="from_sequence"):
        wire.subscribe_request(
            account_id="",
            strategy_id="",
            instrument_id="",
            level=PositionLevel.UNSPECIFIED,
            from_sequence=-1,
        )


def test_position_update_conversion() -> None:
    message = pb.PortfolioUpdate(
        sequence=4,
        kind=pb.UPDATE_KIND_POSITION_MODIFIED,
        event_id="F4",
        position=proto_position(),
        fill=wire.fill_to_proto(make_fill(fill_id="F4", side=Side.SELL, quantity=Decimal(60))),
    )
    update = wire.update_from_proto(message)
    assert update.sequence == 4
    assert update.kind is UpdateKind.POSITION_MODIFIED
    assert update.position is not None
    assert update.position.quantity == Decimal("-30")
    assert update.fill is not None
    assert update.fill.quantity == Decimal(60)
    assert update.order_status is None
    assert not update.is_heartbeat


def test_heartbeat_conversion() -> None:
    update = wire.update_from_proto(pb.PortfolioUpdate(sequence=12, kind=pb.UPDATE_KIND_HEARTBEAT))
    assert update.is_heartbeat
    assert update.sequence == 12
    assert (update.position, update.fill, update.order_status) == (None, None, None)


def test_a_batch_reads_as_its_updates_in_order() -> None:
    carried = [
        pb.PortfolioUpdate(
            sequence=sequence,
            kind=pb.UPDATE_KIND_POSITION_MODIFIED,
            event_id=f"F{sequence}",
            position=proto_position(),
        )
        for sequence in (4, 4, 5)
    ]
    message = pb.PortfolioUpdate(sequence=5, kind=pb.UPDATE_KIND_BATCH, batch=carried)
    updates = wire.updates_from_proto(message)
    assert [(u.sequence, u.event_id) for u in updates] == [(4, "F4"), (4, "F4"), (5, "F5")]
    assert all(u.kind is UpdateKind.POSITION_MODIFIED for u in updates)
    # Anything else is one update, as before.
    (alone,) = wire.updates_from_proto(carried[2])
    assert alone == wire.update_from_proto(carried[2])
