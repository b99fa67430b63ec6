"""The relay and the marks feed show the service their credentials (relay/credentials.py):
TLS trusting its CA, a client certificate for mutual TLS, a bearer token from a file or the
environment. Against a real service started with TLS and `--auth-file` (certificates made here,
as tests/api/test_tls.py makes them) and the fake TWS: with the right role what they send is
booked; with the wrong one, or none, it is refused (PERMISSION_DENIED / UNAUTHENTICATED), said
in the log, and nothing is booked."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from client import AsyncPortfolioClient, PositionLevel, Side
from relay import marks_config, relay_config
from relay.credentials import ServiceCredentials
from relay.health import AUTHORIZATION, RelayHealth
from relay.instruments import ServiceInstruments
from server.auth_config import token_hash
from tests.api.test_tls import issue, pem
from tests.broker.fake_tws import FakeTws
from tests.broker.test_broker_visibility import wait_health
from tests.broker.test_marks_feed import AAPL, book, new_feed
from tests.broker.test_relay import Exec, all_sent, eventually, new_relay
from tests.broker.test_relay_derivatives import ES_UNMAPPED, round_trip
from tests.conftest import ServerThread, start_test_server
from tws.connection import ReconnectPolicy

pytestmark = pytest.mark.timeout(60)

ACCOUNT = "U123"
RELAY_LOGGERS = ("portfolio.broker", "portfolio.marks")
TOKENS = {"relay-ny": "t-relay", "feed": "t-feed", "risk": "t-risk"}
SERVING, NOT_SERVING, UNKNOWN = (
    health_pb2.HealthCheckResponse.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING,
    health_pb2.HealthCheckResponse.UNKNOWN,
)


@dataclass(frozen=True)
class Files:
    folder: Path
    ca: str
    server_cert: str
    server_key: str
    relay_cert: str  # CN=relay.desk: the relay's principal by its certificate
    relay_key: str
    auth: str

    def token(self, principal: str) -> str:
        path = self.folder / f"{principal}.token"
        path.write_text(TOKENS[principal] + "\n")
        return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("credentials")
    ca = issue("test CA")
    server, relay = pem(issue("localhost", ca)), pem(issue("relay.desk", ca))

    def write(name: str, content: bytes | str) -> str:
        path = folder / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    roles = {"relay-ny": "relay", "feed": "marks", "risk": "reader"}
    principals = [
        {"name": name, "role": roles[name], "accounts": "*", "token_sha256": token_hash(token)}
        for name, token in TOKENS.items()
    ]
    principals[0]["certificate_cn"] = "relay.desk"
    return Files(
        folder,
        write("ca.pem", pem(ca).certificate),
        write("server.pem", server.certificate),
        write("server.key", server.key),
        write("relay.pem", relay.certificate),
        write("relay.key", relay.key),
        write("auth.json", json.dumps({"principals": principals})),
    )


def _guarded(
    files: Files, *, mutual: bool = False, auth: str | None = None, port: int = 0
) -> ServerThread:
    options: dict[str, object] = {"tls_cert": files.server_cert, "tls_key": files.server_key}
    if mutual:
        options["tls_client_ca"] = files.ca
    return start_test_server(auth_file=auth or files.auth, port=port, **options)


@pytest.fixture
async def service(files: Files) -> AsyncIterator[ServerThread]:
    running = await asyncio.to_thread(_guarded, files)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    fake = FakeTws(accounts=(ACCOUNT,))
    await fake.start()
    fake.add_contract_details(AAPL)
    try:
        yield fake
    finally:
        await fake.stop()


def _client(address: str, credentials: ServiceCredentials) -> AsyncPortfolioClient:
    """As relay.relay and relay.marks_feed build theirs."""
    return AsyncPortfolioClient(address, **credentials.client_options())


async def _booked(address: str, files: Files) -> list[tuple[str, Decimal, Decimal | None]]:
    """Every row the service holds, read as the risk manager."""
    reader = ServiceCredentials(ca_cert=files.ca, token=TOKENS["risk"])
    async with _client(address, reader) as client:
        rows = client.iter_positions(level=PositionLevel.ACCOUNT, include_flat=True)
        return [(row.instrument_id, row.quantity, row.market_price) async for row in rows]


async def _relay_one_fill(tws: FakeTws, credentials: ServiceCredentials, address: str) -> int:
    """Relays one fill; returns how many events the service accepted."""
    async with _client(address, credentials) as client:
        relay = new_relay(tws, client, flush_seconds=0.5)
        await relay.start()
        try:
            await relay.connection.wait_connected(5)
            Exec("0001f4e8.01", AAPL, "BOT", "10", "150", "1").report(tws)
            await all_sent(relay, 1)
        finally:
            await relay.stop()
    return relay.stats.accepted


def _relay_credentials(*flags: str) -> ServiceCredentials:
    return relay_config.parse_args(["--service", "127.0.0.1:1", *flags]).credentials


async def test_the_relay_books_with_its_token_over_tls(
    files: Files, service: ServerThread, tws: FakeTws
) -> None:
    credentials = _relay_credentials("--ca-cert", files.ca, "--token-file", files.token("relay-ny"))
    assert await _relay_one_fill(tws, credentials, service.address) == 1
    assert await _booked(service.address, files) == [("AAPL", Decimal(10), Decimal(150))]


async def test_the_relay_books_with_its_client_certificate_over_mutual_tls(
    files: Files, tws: FakeTws
) -> None:
    service = await asyncio.to_thread(_guarded, files, mutual=True)
    try:
        flags = ("--ca-cert", files.ca, "--client-cert", files.relay_cert,
                 "--client-key", files.relay_key)  # fmt: skip
        assert await _relay_one_fill(tws, _relay_credentials(*flags), service.address) == 1
    finally:
        await asyncio.to_thread(service.stop)


@pytest.mark.parametrize(
    ("principal", "refusal"),
    [("risk", "PERMISSION_DENIED"), (None, "UNAUTHENTICATED")],
)
async def test_the_relay_with_the_wrong_role_or_none_is_refused_logged_and_books_nothing(
    files: Files,
    service: ServerThread,
    tws: FakeTws,
    caplog: pytest.LogCaptureFixture,
    principal: str | None,
    refusal: str,
) -> None:
    flags = ["--ca-cert", files.ca]
    if principal is not None:
        flags += ["--token-file", files.token(principal)]
    credentials = _relay_credentials(*flags)
    caplog.set_level(logging.WARNING)

    def relay_said() -> list[str]:  # the relay's own lines (the service logs the refusal too)
        found = (r for r in caplog.records if r.name.startswith(RELAY_LOGGERS))
        return [r.getMessage() for r in found if refusal in r.getMessage()]

    async with _client(service.address, credentials) as client:
        relay = new_relay(tws, client, flush_seconds=0.2)
        await relay.start()
        try:
            await relay.connection.wait_connected(5)
            Exec("0001f4e8.01", AAPL, "BOT", "10", "150", "1").report(tws)
            await eventually(lambda: bool(relay_said()))
        finally:
            await relay.stop()
    assert relay.stats.accepted == 0
    assert "refuses the relay's events" in relay_said()[0]  # kept and retried: nothing lost
    assert TOKENS["risk"] not in caplog.text and TOKENS["relay-ny"] not in caplog.text
    assert await _booked(service.address, files) == []


async def test_the_marks_feed_marks_with_its_token_and_is_refused_with_a_readers(
    files: Files, service: ServerThread, tws: FakeTws, caplog: pytest.LogCaptureFixture
) -> None:
    relay = ServiceCredentials(ca_cert=files.ca, token=TOKENS["relay-ny"])
    async with _client(service.address, relay) as booking:
        await book(booking, "f1", "AAPL", Side.BUY, "10", "100")
    tws.set_tick(AAPL.con_id, 4, "101.5")  # LAST

    def feed_credentials(principal: str) -> ServiceCredentials:
        flags = ["--service", service.address, "--ca-cert", files.ca, "--price", "last"]
        return marks_config.parse_args([*flags, "--token-file", files.token(principal)]).credentials

    # A reader may read the book but not stream marks: refused, said, nothing marked.
    caplog.set_level(logging.WARNING)

    def feed_said() -> bool:
        return any(
            r.name.startswith(RELAY_LOGGERS) and "PERMISSION_DENIED" in r.getMessage()
            for r in caplog.records
        )

    async with _client(service.address, feed_credentials("risk")) as client:
        feed = new_feed(tws, client, price=marks_config.PriceChoice.LAST)
        await feed.start()
        try:
            await eventually(feed_said)
        finally:
            await feed.stop()
    assert await _booked(service.address, files) == [("AAPL", Decimal(10), Decimal(100))]

    async with _client(service.address, feed_credentials("feed")) as client:
        feed = new_feed(tws, client, price=marks_config.PriceChoice.LAST)
        await feed.start()
        try:
            marked = [("AAPL", Decimal(10), Decimal("101.5"))]
            async with asyncio.timeout(8):
                while await _booked(service.address, files) != marked:
                    await asyncio.sleep(0.05)
        finally:
            await feed.stop()
    assert feed.stats.refused == 0


def test_the_token_comes_from_a_file_or_the_environment_never_a_flag_and_is_never_shown(
    files: Files, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RELAY_TOKEN", "from-the-environment")
    from_env = relay_config.parse_args([]).credentials
    assert from_env.token == "from-the-environment"
    assert "from-the-environment" not in repr(relay_config.parse_args([]))
    assert from_env.describe() == "plaintext, bearer token from $RELAY_TOKEN"
    from_file = _relay_credentials("--token-file", files.token("relay-ny"), "--ca-cert", files.ca)
    assert from_file.token == TOKENS["relay-ny"]  # the file wins
    assert from_file.describe() == (
        f"TLS (CA {files.ca}), bearer token from {files.token('relay-ny')}"
    )
    monkeypatch.setenv("MARKS_CA_CERT", files.ca)
    monkeypatch.setenv("MARKS_TOKEN", "t")
    marks = marks_config.parse_args([]).credentials
    assert (marks.ca_cert, marks.token) == (files.ca, "t")
    with pytest.raises(SystemExit):
        relay_config.parse_args(["--token", "x"])  # no such flag


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--client-cert", "c.pem"], "--client-cert and --client-key go together"),
        (["--ca-cert", "/nonexistent/ca.pem"], "--ca-cert /nonexistent/ca.pem: cannot be read"),
    ],
)
def test_bad_credential_flags_stop_the_start_naming_the_flag(
    flags: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        relay_config.parse_args(flags)
    assert stopped.value.code == 2
    assert said in capsys.readouterr().err


async def test_the_relay_defines_an_unmapped_future_under_auth_never_booking_it_at_1(
    files: Files, service: ServerThread, tws: FakeTws
) -> None:
    """The relay defines a derivative from its contract before its first fill (issue 13):
    with auth on it may, with its own token, on its instruments channel."""
    credentials = _relay_credentials("--ca-cert", files.ca, "--token-file", files.token("relay-ny"))
    instruments = ServiceInstruments(service.address, credentials=credentials.channel_credentials())
    async with _client(service.address, credentials) as client:
        relay = new_relay(tws, client, instruments=instruments, flush_seconds=0.5)
        await relay.start()
        try:
            await relay.connection.wait_connected(5)
            round_trip(tws, ES_UNMAPPED, "0000e501", "5000", "5010")
            await all_sent(relay, 2)
        finally:
            await relay.stop()
            await instruments.close()
    reader = ServiceCredentials(ca_cert=files.ca, token=TOKENS["risk"])
    async with _client(service.address, reader) as client:
        row = await client.get_position(ACCOUNT, "551601561", strategy_id="UNASSIGNED")
    assert (row.quantity, row.realized_pnl) == (0, Decimal(500))  # 10 points x 50


# ---------------------------------------------------------------------------------------------
# A refusal is not an outage: said once, shown on health, retried until the auth file is fixed


def _auth_file(files: Files, name: str, **roles: str) -> str:
    """The auth file of `files` with some principals' roles changed."""
    principals = json.loads(Path(files.auth).read_text())["principals"]
    for principal in principals:
        principal["role"] = roles.get(principal["name"], principal["role"])
    path = files.folder / name
    path.write_text(json.dumps({"principals": principals}))
    return str(path)


def _said(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    """The relay's and marks feed's lines at `level` holding `text` (not the service's)."""
    loggers = (*RELAY_LOGGERS, "portfolio.relay")
    found = (r for r in caplog.records if r.name.startswith(loggers) and r.levelno == level)
    return [r.getMessage() for r in found if text in r.getMessage()]


async def test_a_refused_relay_says_so_once_shows_it_on_health_and_books_once_allowed(
    files: Files, tws: FakeTws, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    wrong = _auth_file(files, "relay-as-reader.json", **{"relay-ny": "reader"})
    service = await asyncio.to_thread(_guarded, files, auth=wrong)
    port = service.running.port
    credentials = _relay_credentials("--ca-cert", files.ca, "--token-file", files.token("relay-ny"))
    fast = ReconnectPolicy(initial=0.02, factor=2.0, maximum=0.1)
    try:
        async with _client(service.address, credentials) as client:
            relay = new_relay(tws, client, flush_seconds=0.5, send_retry=fast)
            health = RelayHealth(relay, 0, period=0.05)
            await health.start()
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{health.port}")
            await relay.start()
            try:
                await wait_health(channel, AUTHORIZATION, UNKNOWN)  # nothing sent yet
                await relay.connection.wait_connected(5)
                Exec("0001f4e8.01", AAPL, "BOT", "10", "150", "1").report(tws)
                await eventually(lambda: relay.stats.refused_calls >= 10)
                await wait_health(channel, AUTHORIZATION, NOT_SERVING)
                assert relay.stats.accepted == 0 and relay.waiting == 1  # kept: nothing lost
                errors = _said(caplog, logging.ERROR, "")
                assert len(errors) == 1, errors  # ten refusals and more, one line
                assert "refuses the relay's events: PERMISSION_DENIED" in errors[0]

                # The operator gives relay-ny the relay role: the same relay books, unrestarted.
                await asyncio.to_thread(service.stop)
                right = _auth_file(files, "relay-as-relay.json")
                service = await asyncio.to_thread(_guarded, files, auth=right, port=port)
                await all_sent(relay, 1)
                await wait_health(channel, AUTHORIZATION, SERVING)
            finally:
                await channel.close()
                await relay.stop()
                await health.stop()
        assert relay.stats.accepted == 1
        assert await _booked(service.address, files) == [("AAPL", Decimal(10), Decimal(150))]
        assert len(_said(caplog, logging.ERROR, "")) == 1
        cleared = _said(caplog, logging.INFO, "accepts the relay's events again")
        assert len(cleared) == 1, cleared
        assert len(_said(caplog, logging.INFO, "health authorization: SERVING")) == 1
    finally:
        await asyncio.to_thread(service.stop)


async def test_a_refused_marks_feed_says_so_once_and_marks_once_allowed(
    files: Files, tws: FakeTws, caplog: pytest.LogCaptureFixture
) -> None:
    """The feed may read the book (as a reader) but not stream marks: one ERROR line, not a
    line per refresh; with the marks role given, the same feed marks the book."""
    caplog.set_level(logging.INFO)
    wrong = _auth_file(files, "feed-as-reader.json", feed="reader")
    service = await asyncio.to_thread(_guarded, files, auth=wrong)
    port = service.running.port
    relay = ServiceCredentials(ca_cert=files.ca, token=TOKENS["relay-ny"])

    async def book_a_position() -> None:
        async with _client(service.address, relay) as booking:
            await book(booking, "f1", "AAPL", Side.BUY, "10", "100")

    await book_a_position()
    tws.set_tick(AAPL.con_id, 4, "101.5")  # LAST
    flags = ["--service", service.address, "--ca-cert", files.ca, "--price", "last"]
    credentials = marks_config.parse_args([*flags, "--token-file", files.token("feed")])
    try:
        async with _client(service.address, credentials.credentials) as client:
            feed = new_feed(tws, client, price=marks_config.PriceChoice.LAST)
            await feed.start()
            try:
                await eventually(lambda: feed.stats.refusals >= 4)
                errors = _said(caplog, logging.ERROR, "")
                assert len(errors) == 1, errors  # four refusals and many refreshes, one line
                assert "refuses the marks feed's marks: PERMISSION_DENIED" in errors[0]
                assert _said(caplog, logging.INFO, "answers again") == []
                assert _said(caplog, logging.WARNING, "unreachable") == []

                await asyncio.to_thread(service.stop)
                right = _auth_file(files, "feed-as-marks.json")
                service = await asyncio.to_thread(_guarded, files, auth=right, port=port)
                await book_a_position()  # the test service keeps its book in memory
                marked = [("AAPL", Decimal(10), Decimal("101.5"))]
                async with asyncio.timeout(15):
                    while await _booked(service.address, files) != marked:
                        await asyncio.sleep(0.05)
            finally:
                await feed.stop()
        assert len(_said(caplog, logging.ERROR, "")) == 1
        cleared = _said(caplog, logging.INFO, "accepts the marks feed's marks again")
        assert len(cleared) == 1, cleared
    finally:
        await asyncio.to_thread(service.stop)
