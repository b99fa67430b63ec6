"""The analysts' position rows carry their currency, the account's base currency, the rate used
and the base figures (issue 11), on a real ArcticDB on LMDB; symbols written before them stay
readable and writable."""

from __future__ import annotations

import asyncio
import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import arcticdb as adb
import grpc
import pandas as pd
import pytest

from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.application.ports import ViewsIncomplete
from server.application.projector import ViewProjector
from server.domain.book import position_view
from server.domain.position import Position, PositionKey
from server.storage.arctic import ArcticEventStore
from server.storage.view_layouts import POSITION_AMOUNTS, POSITION_COLUMNS_V2
from server.storage.views import (
    POSITION_COLUMNS,
    POSITION_COLUMNS_BEFORE_CURRENCY,
    ArcticViews,
)
from tests.api.protocol import BASE_SECONDS, acks, pb_fill
from tests.conftest import start_test_server

PRECISION = Decimal("1e-9")
CURRENCY_COLUMNS = POSITION_COLUMNS_V2[len(POSITION_COLUMNS_BEFORE_CURRENCY) :]


def exact(*names: str) -> list[str]:
    """The columns of the exact text of these (amounts are float64, `<name>_exact` beside)."""
    return [f"{name}_exact" if name in POSITION_AMOUNTS else name for name in names]


def fx(base: str, quote: str, rate: str) -> pb.MarkBatch:
    message = pb.FxRate(base_currency=base, quote_currency=quote, rate=rate)
    message.timestamp.FromSeconds(BASE_SECONDS)
    return pb.MarkBatch(fx_rates=[message])


def define_eur(stub: pb_grpc.PortfolioManagerStub, instrument_id: str) -> None:
    instrument = pb.Instrument(instrument_id=instrument_id, currency="EUR")
    stub.DefineInstrument(pb.DefineInstrumentRequest(instrument=instrument), timeout=10)


def account_row(store: str, account_id: str, instrument_id: str = "SAP") -> pd.Series:
    frame = adb.Arctic(store).get_library("portfolio").read(account_id).data
    assert list(frame.columns) == POSITION_COLUMNS
    rows = frame[(frame.level == "ACCOUNT") & (frame.instrument_id == instrument_id)]
    assert len(rows) == 1
    row = rows.iloc[0].copy()
    for name in POSITION_AMOUNTS:  # the exact text, checked to be what the float says
        text = row[f"{name}_exact"]
        assert (pd.isna(row[name]) and text == "") or row[name] == float(text), name
        row[name] = text
    return row


def test_an_eur_row_of_a_usd_account_carries_the_rate_used_and_its_base_figures(tmp_path):
    """Without a rate: currency and base currency, the rate and base figures empty (missing,
    never zero) but realized P&L in base, 0 while nothing was realized. With EUR/USD 1.1
    (before the fills): the rate and each figure x 1.1, exactly as the API's."""
    store = f"lmdb://{tmp_path}/store"
    server = start_test_server(store=store)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            define_eur(stub, "SAP")
            acks(stub, pb_fill("BUY", 10, 100, instrument="SAP", account="NORATE"))
            list(stub.StreamMarks(iter([fx("EUR", "USD", "1.1")]), timeout=10))
            acks(
                stub,
                pb_fill("BUY", 10, 100, instrument="SAP", account="RATED"),
                pb_fill("SELL", 4, 110, instrument="SAP", account="RATED", commission="2"),
            )
            api = stub.GetPosition(pb.GetPositionRequest(account_id="RATED", instrument_id="SAP"))
    finally:
        server.stop()  # waits for the views to catch up

    missing = account_row(store, "NORATE")
    assert (missing.currency, missing.base_currency) == ("EUR", "USD")
    assert missing.realized_pnl_base == "0"
    assert missing[["fx_rate", *CURRENCY_COLUMNS[4:]]].tolist() == [""] * 6

    row = account_row(store, "RATED")
    assert (row.currency, row.base_currency, row.fx_rate) == ("EUR", "USD", "1.1")
    # EUR: realized 4 x 10 = 40, unrealized 6 x 10 = 60, fees 2, net 98, value 660.
    assert row[["realized_pnl", "unrealized_pnl", "fees", "net_pnl", "market_value"]].tolist() == [
        "40",
        "60",
        "2",
        "98",
        "660",
    ]
    base = ["realized_pnl_base", "unrealized_pnl_base", "fees_base", "net_pnl_base"]
    assert [Decimal(row[name]) for name in [*base, "market_value_base"]] == [
        Decimal("44"),
        Decimal("66"),
        Decimal("2.2"),
        Decimal("107.8"),
        Decimal("726"),
    ]
    assert row.other_fees == ""
    # The same figures the API gives for the row (one conversion for both).
    assert (api.currency, api.base_currency, api.fx_rate) == ("EUR", "USD", row.fx_rate)
    for name in ("realized_pnl_base", "unrealized_pnl_base", "net_pnl_base", "market_value_base"):
        assert getattr(api, name) == row[name], name


def test_fees_in_other_currencies_are_kept_apart_and_converted_each_at_its_own_rate(tmp_path):
    """Needs the lead's "fees per currency" (the domain filling PositionView.other_fees): until
    it lands the EUR row still counts the USD and GBP in `fees`, and this test fails.
    A1: 5 USD on an EUR row with EUR/USD 1.1; A2: 1.2 GBP with no GBP/USD rate."""
    store = f"lmdb://{tmp_path}/store"
    server = start_test_server(store=store)

    def trade(account: str, currency: str, commission: str) -> list[pb.ExecutionEvent]:
        return [
            pb_fill("BUY", 10, 100, instrument="SAP", account=account, commission="1"),
            pb_fill(
                "SELL", 5, 110, instrument="SAP", account=account, commission=commission,
                commission_currency=currency,
            ),
        ]  # fmt: skip

    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            define_eur(stub, "SAP")
            list(stub.StreamMarks(iter([fx("EUR", "USD", "1.1")]), timeout=10))
            acks(stub, *trade("A1", "USD", "5"), *trade("A2", "GBP", "1.2"))
            api = {
                account: stub.GetPosition(
                    pb.GetPositionRequest(account_id=account, instrument_id="SAP")
                )
                for account in ("A1", "A2")
            }
    finally:
        server.stop()

    usd = account_row(store, "A1")
    assert (usd.currency, usd.fees, usd.other_fees) == ("EUR", "1", "USD=5")
    assert usd.net_pnl == "99"  # 50 realized + 50 unrealized - 1 EUR: the USD is not in it
    # In USD: 1 EUR x 1.1 + 5 USD; net 99 EUR x 1.1 - 5 USD.
    assert (usd.fees_base, usd.net_pnl_base, usd.realized_pnl_base) == ("6.1", "103.9", "55")

    gbp = account_row(store, "A2")
    assert (gbp.fees, gbp.other_fees, gbp.net_pnl) == ("1", "GBP=1.2", "99")
    # No GBP rate: the figures that need it are missing, the others are there.
    assert (gbp.fees_base, gbp.net_pnl_base, gbp.realized_pnl_base) == ("", "", "55")

    for account, row in (("A1", usd), ("A2", gbp)):  # as the API gives them
        for name in ("fx_rate", "fees_base", "net_pnl_base", "market_value_base"):
            assert getattr(api[account], name) == row[name], (account, name)


def _view(account: str, instrument: str, quantity: int, sequence: int, rate: str | None = "1.1"):
    """An EUR row bought at 100, valued at 110, in a USD-base account."""
    row = Position(
        key=PositionKey(account, "", instrument),
        multiplier=Decimal(1),
        quantity=Decimal(quantity),
        cost_basis=Decimal(quantity * 100),
        trade_count=1,
        updated_at_ns=BASE_SECONDS * 10**9 + sequence,
        last_sequence=sequence,
        currency="EUR",
    )
    return position_view(
        row,
        Decimal(110),
        PRECISION,
        base_currency="USD",
        fx_rate=Decimal(rate) if rate else None,
    )


def _old_frame(rows: list[list[object]]) -> pd.DataFrame:
    """A `portfolio` symbol as the version before issue 11 wrote it (its columns, its index)."""
    frame = pd.DataFrame(rows, columns=POSITION_COLUMNS_BEFORE_CURRENCY)
    for name in ("slot", "trade_count", "last_sequence"):
        frame[name] = frame[name].astype("int64")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"].astype("int64"), unit="ns", utc=True)
    frame.index = pd.DatetimeIndex(
        pd.to_datetime(frame["slot"], unit="ns", utc=True), name="slot_index"
    )
    return frame


def _old_row(slot: int, instrument: str, quantity: str) -> list[object]:
    return [
        slot, 10**18 + slot, "A1", "", instrument, "ACCOUNT", quantity, "100", "1000", "0", "0",
        "0", "0", "100", "1000", "1", 1, slot + 1,
    ]  # fmt: skip


def test_a_symbol_written_without_the_currency_columns_takes_updates_and_new_rows(tmp_path):
    """The libraries have a static schema: the first write to an old symbol rewrites it once
    with the new columns (empty in the rows it had), then updates and appends go on."""
    arctic = adb.Arctic(f"lmdb://{tmp_path}/store")
    views = ArcticViews(arctic)
    old = _old_frame([_old_row(0, "SAP", "10"), _old_row(1, "BMW", "5")])
    views.portfolio.write("A1", old)
    with pytest.raises(Exception, match=r"(?i)descriptor|schema|column"):
        # What a plain append of the new columns does: why the symbol is rewritten first.
        views.portfolio.append("A1", old.assign(currency="EUR"))

    views.record([], [_view("A1", "SAP", 12, 5), _view("A1", "VOW", 3, 6, rate=None)])
    frame = views.portfolio.read("A1").data.set_index("instrument_id")
    assert list(frame.reset_index().columns) == [
        "instrument_id",
        *[c for c in POSITION_COLUMNS if c != "instrument_id"],
    ]
    assert list(frame.index) == ["SAP", "BMW", "VOW"]  # slots kept, the new row appended
    assert frame.loc[
        "SAP", exact("quantity", "currency", "fx_rate", "market_value_base")
    ].tolist() == [
        "12",
        "EUR",
        "1.1",
        "1452",
    ]
    assert frame.loc["BMW", exact(*CURRENCY_COLUMNS)].tolist() == [""] * len(CURRENCY_COLUMNS)
    assert frame.loc["BMW", ["fx_rate", "net_pnl_base"]].isna().all()  # unknown: NaN
    assert frame.loc["BMW", "quantity"] == "5"  # untouched, as the old version wrote it
    assert frame.loc[
        "VOW", exact("currency", "base_currency", "fx_rate", "net_pnl_base")
    ].tolist() == [
        "EUR",
        "USD",
        "",
        "",
    ]

    # A later start reads the rewritten symbol as it is (no second rewrite) and goes on.
    again = ArcticViews(arctic)
    again.record([], [_view("A1", "BMW", 7, 7)])
    frame = again.portfolio.read("A1").data.set_index("instrument_id")
    assert frame.loc["BMW", exact("quantity", "currency", "fx_rate")].tolist() == [
        "7",
        "EUR",
        "1.1",
    ]
    assert frame.loc["SAP", "quantity"] == "12"


def test_a_symbol_with_columns_this_version_does_not_know_fails_and_is_not_dropped(tmp_path):
    views = ArcticViews(adb.Arctic(f"lmdb://{tmp_path}/store"))
    newer = _old_frame([_old_row(0, "SAP", "10")]).assign(from_a_newer_version="x")
    views.portfolio.write("A1", newer)
    with pytest.raises(ViewsIncomplete) as raised:
        views.record([], [_view("A1", "SAP", 12, 5)])
    assert "does not know" in raised.value.failing["portfolio/A1"]
    assert list(views.portfolio.read("A1").data.columns) == list(newer.columns)


def test_the_projector_takes_the_base_currency_and_rate_when_a_row_is_submitted(tmp_path):
    """The rate a row is stored with is the one in force when it changed (taken on the event
    loop), not whatever the views thread would find later."""
    store = ArcticEventStore(f"lmdb://{tmp_path}/store")
    rates = {"EUR": Decimal("1.1")}
    release = threading.Event()

    async def scenario(store: ArcticEventStore) -> None:
        with ThreadPoolExecutor(1) as executor:
            executor.submit(release.wait)  # the views thread is busy until released
            try:
                projector = ViewProjector(
                    store,
                    executor,
                    PRECISION,
                    min_interval=0,
                    base_of=lambda account, currency: ("USD", rates.get(currency)),
                )
                row = Position(
                    key=PositionKey("A1", "", "SAP"), multiplier=Decimal(1),
                    quantity=Decimal(2), cost_basis=Decimal(200), trade_count=1,
                    updated_at_ns=BASE_SECONDS * 10**9, last_sequence=1, currency="EUR",
                )  # fmt: skip
                projector.submit([], [(row, Decimal(100))])
                rates["EUR"] = Decimal("1.2")  # a newer rate, after the row changed
                del rates["EUR"]  # or none at all
            finally:
                release.set()
            await projector.drained()
            assert projector.healthy

    try:
        asyncio.run(scenario(store))
        frame = store.views.portfolio.read("A1").data
        assert frame[exact("base_currency", "fx_rate", "market_value_base")].values.tolist() == [
            ["USD", "1.1", "220"]
        ]
    finally:
        store.close()
        del store
        gc.collect()
