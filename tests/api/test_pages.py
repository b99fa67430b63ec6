"""Every List method pages the same way: a token is only taken back by the listing, and under the
filters, that gave it, and anything else is INVALID_ARGUMENT naming `page_token`."""

from __future__ import annotations

import base64
import json

import grpc
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from server.api import pages
from server.api.wire import FieldViolation
from server.domain.position import PositionKey
from tests.api.protocol import acks, field_violations, pb_fill


def token_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def refused_for_page_token(call) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["page_token"]
    return raised.value.details()


LISTINGS = {
    "ListPositions": lambda token: pb.ListPositionsRequest(page_token=token),
    "ListOpenOrders": lambda token: pb.ListOpenOrdersRequest(page_token=token),
    "ListInstruments": lambda token: pb.ListInstrumentsRequest(page_token=token),
    "ListReconciliations": lambda token: pb.ListReconciliationsRequest(
        account_id="A1", page_token=token
    ),
}

NOT_TOKENS = {
    "not base64 JSON": "garbage",
    "no base64 letters": "%%%",
    "not an array": token_of({"a": 1}),
    "a positions key one part short": token_of(["positions", [], ["A1", "S1"]]),
    "an empty instruments key": token_of(["instruments", [], []]),
    "a digit that is no sequence": token_of(["reconciliations", ["A1"], ["\u00b2"]]),
    # The earlier format, with keys that it did not check.
    "an empty orders key (earlier format)": token_of([[], "orders||"]),
    "an empty instruments key (earlier format)": token_of([[], "instruments"]),
    "a digit that is no sequence (earlier format)": token_of([["\u00b2"], "reconciliations|A1"]),
    "nested deeper than the parser goes": base64.urlsafe_b64encode(b"[" * 5000).decode(),
}


@pytest.mark.parametrize("method", LISTINGS)
@pytest.mark.parametrize("token", NOT_TOKENS)
def test_a_token_this_service_did_not_give_is_refused_naming_it(stub, method, token):
    request = LISTINGS[method](NOT_TOKENS[token])
    details = refused_for_page_token(lambda: getattr(stub, method)(request))
    assert "is not a token this service gave" in details


def test_a_token_of_one_listing_is_refused_by_another(stub):
    acks(stub, *(pb_fill("BUY", 1, 10, instrument=f"I{n}") for n in range(3)))
    positions = stub.ListPositions(pb.ListPositionsRequest(page_size=1))
    instruments = stub.ListInstruments(pb.ListInstrumentsRequest(page_size=1))
    assert positions.next_page_token and instruments.next_page_token
    refused_for_page_token(
        lambda: stub.ListInstruments(
            pb.ListInstrumentsRequest(page_size=1, page_token=positions.next_page_token)
        )
    )
    refused_for_page_token(
        lambda: stub.ListPositions(
            pb.ListPositionsRequest(page_size=1, page_token=instruments.next_page_token)
        )
    )


def test_instruments_page_through_every_one_once(stub):
    acks(stub, *(pb_fill("BUY", 1, 10, instrument=f"I{n}") for n in range(5)))
    seen, token = [], ""
    while True:
        page = stub.ListInstruments(pb.ListInstrumentsRequest(page_size=2, page_token=token))
        seen += [instrument.instrument_id for instrument in page.instruments]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"I{n}" for n in range(5)]


# -- the codec itself -------------------------------------------------------------------------


def test_a_token_gives_back_its_key_under_its_filters_only():
    key = PositionKey("A|1", "S1", "AAPL")
    token = pages.POSITIONS.encode(key, ["A|1", "", "", "0", "0"])
    assert pages.POSITIONS.decode(token, ["A|1", "", "", "0", "0"]) == key
    assert pages.POSITIONS.decode("", ["A|1", "", "", "0", "0"]) is None
    # Filters are kept apart, so ids holding a separator cannot pass for other filters.
    with pytest.raises(FieldViolation, match="different filters"):
        pages.POSITIONS.decode(token, ["A", "1", "", "0", "0"])


def test_a_sequence_key_round_trips():
    token = pages.RECONCILIATIONS.encode(42, ["A1"])
    assert pages.RECONCILIATIONS.decode(token, ["A1"]) == 42


def test_a_page_size_out_of_bounds_names_page_size():
    assert pages.page_size(0, maximum=100, default=7) == 7
    assert pages.page_size(100, maximum=100, default=7) == 100
    for size in (-1, 101):
        with pytest.raises(FieldViolation) as raised:
            pages.page_size(size, maximum=100, default=7)
        assert (raised.value.field, raised.value.description) == (
            "page_size",
            "must be between 0 and 100",
        )
