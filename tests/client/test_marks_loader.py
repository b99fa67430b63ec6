"""The marks loader: CSV, Parquet and pandas frames through the SDK into a real service, and
its errors (each names the row and the column)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from client import AsyncPortfolioClient, Fill, PortfolioClient, Position, Side
from client.marks_loader import MarksLoadError, load_marks, load_marks_async, read_marks

ACCOUNT, STRATEGY = "A1", "S1"
T0 = datetime(2026, 1, 2, 21, 0, tzinfo=UTC)


@pytest.fixture
def client(server_address: str) -> Iterator[PortfolioClient]:
    with PortfolioClient(server_address) as client:
        for number, instrument in enumerate(("AAPL", "MSFT")):
            fill = Fill(
                fill_id=f"F{number}",
                account_id=ACCOUNT,
                strategy_id=STRATEGY,
                instrument_id=instrument,
                side=Side.BUY,
                quantity=Decimal(10),
                price=Decimal(100),
                timestamp=T0 - timedelta(hours=1),
            )
            (ack,) = client.ingest([fill])
            assert ack.applied
        yield client


def position(client: PortfolioClient, instrument: str) -> Position:
    return client.get_position(ACCOUNT, instrument, strategy_id=STRATEGY)


def write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Files and frames into the service


def test_a_csv_of_marks_and_fx_rates_values_the_book(
    client: PortfolioClient, tmp_path: Path
) -> None:
    csv = write(
        tmp_path / "marks.csv",
        """
instrument_id,price,bid,ask,timestamp,base,quote,rate,note
AAPL,100.10,100.05,100.15,2026-01-02T21:00:00Z,,,,exact as written
MSFT,99.5,,,2026-01-02T16:00:00-05:00,,,,
,,,,2026-01-02T21:00:00Z,EUR,USD,1.0842,
""",
    )
    loaded = load_marks(client, csv)
    assert (loaded.marks_applied, loaded.fx_rates_applied, loaded.marks_stale) == (2, 1, 0)
    aapl = position(client, "AAPL")
    assert (aapl.market_price, aapl.unrealized_pnl) == (Decimal("100.10"), Decimal("1.00"))
    assert position(client, "MSFT").unrealized_pnl == Decimal("-5.0")
    again = load_marks(client, csv)  # the same times again: nothing newer, nothing changes
    assert position(client, "AAPL").market_price == Decimal("100.10")
    assert again.marks_applied + again.marks_stale == 2


def test_a_parquet_file_with_decimal_and_float_columns(
    client: PortfolioClient, tmp_path: Path
) -> None:
    frame = pd.DataFrame(
        {
            "instrument_id": ["AAPL", "MSFT"],
            "price": [Decimal("101.123456789"), Decimal("98.7")],  # a decimal column
            "last": [100.1, 98.65],  # a float64 column: read through repr
            "timestamp": pd.to_datetime([T0, T0], utc=True),
        }
    )
    path = tmp_path / "marks.parquet"
    frame.to_parquet(path)
    table = read_marks(path)
    assert [m.last for m in table.marks] == [Decimal("100.1"), Decimal("98.65")]
    loaded = load_marks(client, path)
    assert loaded.marks_applied == 2
    assert position(client, "AAPL").market_price == Decimal("101.123456789")
    assert position(client, "MSFT").market_price == Decimal("98.7")


async def test_a_pandas_frame_through_the_asyncio_client(
    client: PortfolioClient, server_address: str
) -> None:
    frame = pd.DataFrame(
        {
            "base": ["EUR", "GBP"],
            "quote": ["USD", "USD"],
            "rate": [1.0842, 1.2651],  # floats, as a frame usually has them
            "timestamp": [T0, T0],
        }
    )
    async with AsyncPortfolioClient(server_address) as aio:
        loaded = await load_marks_async(aio, frame)
    assert (loaded.fx_rates_applied, loaded.marks_applied) == (2, 0)
    assert [r.rate for r in read_marks(frame).fx_rates] == [Decimal("1.0842"), Decimal("1.2651")]


def test_naive_times_are_taken_in_the_zone_given(client: PortfolioClient, tmp_path: Path) -> None:
    csv = write(tmp_path / "m.csv", "instrument_id,price,timestamp\nAAPL,105,2026-01-02 16:00:00")
    with pytest.raises(MarksLoadError, match=r"row 1, column 'timestamp': .* has no time zone"):
        load_marks(client, csv)
    new_york = timezone(timedelta(hours=-5))
    assert read_marks(csv, timezone=new_york).marks[0].timestamp == T0
    load_marks(client, csv, timezone=new_york)
    assert position(client, "AAPL").market_price == 105


# ---------------------------------------------------------------------------------------------
# Errors: each names the row and the column, and nothing is sent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("symbol,close\nAAPL,1", "expected columns instrument_id, price, timestamp"),
        ("instrument_id,timestamp\nAAPL,2026-01-02T21:00:00Z", "missing column 'price'"),
        ("base,rate,timestamp\nEUR,1.1,2026-01-02T21:00:00Z", "missing column 'quote'"),
        (
            "instrument_id,price,timestamp\nAAPL,1,2026-01-02T21:00:00Z\nMSFT,1.2.3,"
            "2026-01-02T21:00:00Z",
            "row 2, column 'price': '1.2.3' is not a decimal number",
        ),
        (
            "instrument_id,price,timestamp\nAAPL,NaN,2026-01-02T21:00:00Z",
            "row 1, column 'price': must be a finite number",
        ),
        ("instrument_id,price,timestamp\nAAPL,1,", "row 1, column 'timestamp': is empty"),
        (
            "instrument_id,price,timestamp\nAAPL,1,yesterday",
            "row 1, column 'timestamp': 'yesterday' is not an ISO 8601 time",
        ),
        (
            "instrument_id,price,bid,ask,timestamp\nAAPL,1,2,1,2026-01-02T21:00:00Z",
            r"row 1, column 'bid': is above the ask \(2 > 1\)",
        ),
        (
            "instrument_id,price,timestamp\n,1,2026-01-02T21:00:00Z",
            "row 1, column 'instrument_id': is empty",
        ),
        (
            "base,quote,rate,timestamp\nEUR,USD,0,2026-01-02T21:00:00Z",
            "row 1, column 'rate': must be > 0",
        ),
        (
            "base,quote,rate,timestamp\nEUR,EUR,1,2026-01-02T21:00:00Z",
            "row 1, column 'quote': must differ from base",
        ),
        (
            "instrument_id,base,quote,rate,price,timestamp\nAAPL,EUR,USD,1,1,2026-01-02T21:00:00Z",
            "row 1, column 'instrument_id': fills both instrument_id and base",
        ),
    ],
)
def test_a_bad_row_is_named_and_nothing_is_sent(
    client: PortfolioClient, tmp_path: Path, text: str, message: str
) -> None:
    csv = write(tmp_path / "bad.csv", text)
    with pytest.raises(MarksLoadError, match=message):
        load_marks(client, csv)
    assert position(client, "AAPL").market_price == 100  # still the fill's price


def test_a_file_that_is_not_csv_or_parquet(tmp_path: Path) -> None:
    with pytest.raises(MarksLoadError, match=r"not a \.csv or \.parquet file"):
        read_marks(write(tmp_path / "marks.txt", "instrument_id,price,timestamp"))
    with pytest.raises(MarksLoadError, match="No such file"):
        read_marks(tmp_path / "missing.csv")


def test_a_refusal_by_the_service_is_told_in_rows_and_columns(
    client: PortfolioClient, tmp_path: Path
) -> None:
    rows = [f"AAPL,{101 + n},2026-01-02T21:00:0{n}Z" for n in range(3)]
    rows.append("MSFT,1.0000000000000000001,2026-01-02T21:00:00Z")  # 19 places: too many
    csv = write(tmp_path / "m.csv", "instrument_id,price,timestamp\n" + "\n".join(rows))
    with pytest.raises(MarksLoadError) as refused:
        load_marks(client, csv, batch_size=2)
    text = str(refused.value)
    assert text.startswith("row 4, column 'price': has more than 18 decimal places"), text
    assert "the 1 batches before it were: 2 applied" in text
    assert position(client, "AAPL").market_price == 102  # the first batch went
    assert position(client, "MSFT").market_price == 100
