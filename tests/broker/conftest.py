"""The broker tests' counterparts: a real service on 127.0.0.1, the SDK's client of it, and the
protocol-level fake TWS (with one account) that the real ib_async client talks to."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from client import AsyncPortfolioClient
from tests.broker.fake_tws import FakeTws
from tests.conftest import ServerThread, start_test_server

ACCOUNT = "U123"


@pytest.fixture
async def service() -> AsyncIterator[ServerThread]:
    running = await asyncio.to_thread(start_test_server)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


@pytest.fixture
async def portfolio(service: ServerThread) -> AsyncIterator[AsyncPortfolioClient]:
    async with AsyncPortfolioClient(service.address) as client:
        yield client


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws(accounts=(ACCOUNT,))
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
