"""A service that refuses `StreamMarks` (PERMISSION_DENIED / UNAUTHENTICATED) is reported with
its own status by `send_marks`, every time. The refusal arrives while the SDK is still writing
batches; grpc.aio then may put a locally made INTERNAL status on the call in place of the
service's, which the SDK used to report as UNAVAILABLE ("the stream failed while sending"):
an outage, where the service had said who may not do this."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from client import AsyncPortfolioClient, PortfolioError, Side
from client.marks import MarkPrice
from tests.api.test_roles import token_of, write_auth_file
from tests.client.conftest import FillFactory
from tests.conftest import ServerThread, start_test_server

pytestmark = pytest.mark.timeout(60)

#: Refusals in a row: the stand-in status showed in about one in ten before the fix.
ATTEMPTS = 60


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    auth_file: Path = write_auth_file(tmp_path_factory.mktemp("auth") / "principals.json")
    running = start_test_server(auth_file=str(auth_file))
    try:
        yield running
    finally:
        running.stop()


def _marks(count: int) -> list[MarkPrice]:
    now = datetime.now(UTC)
    return [
        MarkPrice(instrument_id=f"I{n}", mark=Decimal("100.25"), timestamp=now)
        for n in range(count)
    ]


@pytest.mark.parametrize(
    ("principal", "refusal"),
    [
        ("reader", grpc.StatusCode.PERMISSION_DENIED),
        (None, grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_a_refused_marks_stream_reports_the_services_status_every_time(
    guarded: ServerThread, principal: str | None, refusal: grpc.StatusCode
) -> None:
    marks = _marks(200)  # many small batches: writes still going when the refusal comes
    token = token_of(principal) if principal else None
    seen: list[grpc.StatusCode] = []
    async with AsyncPortfolioClient(guarded.address, token=token) as client:
        for _ in range(ATTEMPTS):
            with pytest.raises(PortfolioError) as refused:
                await client.send_marks(marks, batch_size=1)
            seen.append(refused.value.code)
    assert set(seen) == {refusal}, [code.name for code in seen if code != refusal][:3]
    if refusal == grpc.StatusCode.PERMISSION_DENIED:  # the service's own words
        assert "StreamMarks needs role marks" in refused.value.message


async def test_a_refused_ingest_reports_the_services_status_every_time(
    guarded: ServerThread, make_fill: FillFactory
) -> None:
    fills = [make_fill(n, Side.BUY, 1, 10) for n in range(200)]
    seen: list[grpc.StatusCode] = []
    async with AsyncPortfolioClient(guarded.address, token=token_of("reader")) as client:
        for _ in range(ATTEMPTS // 2):
            with pytest.raises(PortfolioError) as refused:
                await client.ingest(fills, batch_size=1, max_attempts=1)
            seen.append(refused.value.code)
    assert set(seen) == {grpc.StatusCode.PERMISSION_DENIED}, [c.name for c in seen][:5]
