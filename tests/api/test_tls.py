"""TLS and mutual TLS on the service, with certificates generated here (`cryptography`), and the
start refusing to expose plaintext or an unguarded service beyond loopback."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.errors import PortfolioError
from client.sync import PortfolioClient
from portfolio.v1 import portfolio_pb2 as pb
from portfolio.v1 import portfolio_pb2_grpc as pb_grpc
from server.auth_config import AuthConfigError, transport_of
from tests.conftest import ServerThread, start_test_server


@dataclass(frozen=True)
class Issued:
    key: bytes
    certificate: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    common_name: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A CA (no issuer: self-signed) or a certificate it signs, valid for an hour, for
    127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    signer_key, signer = issuer if issuer else (key, None)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(signer.subject if signer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(signer_key, hashes.SHA256())


def pem(pair: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]) -> Issued:
    key, certificate = pair
    return Issued(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate.public_bytes(serialization.Encoding.PEM),
    )


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Issued
    server: Issued
    client: Issued  # CN=risk.desk, signed by the CA
    stranger: Issued  # signed by another CA

    def file(self, name: str, content: bytes) -> str:
        path = self.folder / name
        path.write_bytes(content)
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = issue("test CA")
    other_ca = issue("another CA")
    return Pki(
        tmp_path_factory.mktemp("pki"),
        pem(ca),
        pem(issue("localhost", ca)),
        pem(issue("risk.desk", ca)),
        pem(issue("risk.desk", other_ca)),
    )


def tls_server(pki: Pki, *, mutual: bool = False, **overrides: object) -> ServerThread:
    options: dict[str, object] = {
        "tls_cert": pki.file("server.pem", pki.server.certificate),
        "tls_key": pki.file("server.key", pki.server.key),
    }
    if mutual:
        options["tls_client_ca"] = pki.file("ca.pem", pki.ca.certificate)
    return start_test_server(**options, **overrides)


@pytest.fixture(scope="module")
def tls(pki: Pki) -> Iterator[ServerThread]:
    running = tls_server(pki)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def mtls(pki: Pki) -> Iterator[ServerThread]:
    running = tls_server(pki, mutual=True)
    try:
        yield running
    finally:
        running.stop()


def health_over(channel: grpc.Channel) -> int:
    answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return answer.status  # type: ignore[no-any-return]


SERVING = health_pb2.HealthCheckResponse.SERVING


def test_a_client_trusting_the_ca_completes_the_tls_handshake(pki: Pki, tls: ServerThread) -> None:
    credentials = grpc.ssl_channel_credentials(pki.ca.certificate)
    with grpc.secure_channel(tls.address, credentials) as channel:
        assert health_over(channel) == SERVING
    with PortfolioClient(tls.address, root_certificates=pki.ca.certificate) as client:
        assert client.get_portfolio_summary() is not None


def test_plaintext_and_an_untrusting_client_cannot_talk_to_a_tls_service(
    pki: Pki, tls: ServerThread
) -> None:
    with grpc.insecure_channel(tls.address) as channel, pytest.raises(grpc.RpcError) as plain:
        health_over(channel)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    untrusting = grpc.ssl_channel_credentials(pki.stranger.certificate)  # not our CA
    with (
        grpc.secure_channel(tls.address, untrusting) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        health_over(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_client_without_a_certificate_of_its_ca(
    pki: Pki, mtls: ServerThread
) -> None:
    no_certificate = grpc.ssl_channel_credentials(pki.ca.certificate)
    with (
        grpc.secure_channel(mtls.address, no_certificate) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        health_over(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    stranger = grpc.ssl_channel_credentials(
        pki.ca.certificate, pki.stranger.key, pki.stranger.certificate
    )
    with (
        grpc.secure_channel(mtls.address, stranger) as channel,
        pytest.raises(grpc.RpcError) as unknown_ca,
    ):
        health_over(channel)
    assert unknown_ca.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_accepts_a_client_certificate_of_its_ca(pki: Pki, mtls: ServerThread) -> None:
    credentials = grpc.ssl_channel_credentials(
        pki.ca.certificate, pki.client.key, pki.client.certificate
    )
    with grpc.secure_channel(mtls.address, credentials) as channel:
        assert health_over(channel) == SERVING
    with PortfolioClient(
        mtls.address,
        root_certificates=pki.ca.certificate,
        private_key=pki.client.key,
        certificate_chain=pki.client.certificate,
    ) as client:
        assert client.get_portfolio_summary() is not None


def test_the_certificate_cn_is_the_principal(pki: Pki, tmp_path: Path) -> None:
    auth_file = tmp_path / "principals.json"
    auth_file.write_text(
        json.dumps(
            {
                "principals": [
                    {
                        "name": "risk",
                        "role": "reader",
                        "accounts": ["A1"],
                        "certificate_cn": "risk.desk",
                    }
                ]
            }
        )
    )
    running = tls_server(pki, mutual=True, auth_file=str(auth_file))
    try:
        with PortfolioClient(
            running.address,
            root_certificates=pki.ca.certificate,
            private_key=pki.client.key,
            certificate_chain=pki.client.certificate,
        ) as client:
            with pytest.raises(PortfolioError) as allowed:  # let in, and nothing there yet
                client.get_portfolio_summary("A1")
            assert allowed.value.code == grpc.StatusCode.NOT_FOUND
            with pytest.raises(PortfolioError) as denied:
                client.get_portfolio_summary("A2")
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "'risk'" in str(denied.value)
        credentials = grpc.ssl_channel_credentials(
            pki.ca.certificate, pki.client.key, pki.client.certificate
        )
        with grpc.secure_channel(running.address, credentials) as channel:
            stub = pb_grpc.PortfolioManagerStub(channel)
            with pytest.raises(grpc.RpcError) as not_operator:
                stub.DefineAccount(
                    pb.DefineAccountRequest(account=pb.Account(account_id="A1")), timeout=5
                )
            assert not_operator.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        running.stop()


def test_a_token_without_tls_travels_to_loopback_only() -> None:
    """The SDK's token without TLS rides gRPC's local credentials, which refuse a target that
    is not loopback (tests reach 127.0.0.1 only, so that refusal is not exercised here; the
    token over loopback is, in test_roles)."""
    from client.channel import channel_credentials

    assert channel_credentials() is None
    assert channel_credentials(token="t") is not None
    with pytest.raises(ValueError, match="go together"):
        channel_credentials(root_certificates=b"x", private_key=b"k")


EXPOSED = {"host": "0.0.0.0", "tls_cert": "", "tls_key": "", "tls_client_ca": ""}


def test_plaintext_beyond_loopback_needs_insecure_and_an_auth_file(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match=r"without TLS.*--insecure"):
        transport_of(**EXPOSED, insecure=False, auth_file="")  # type: ignore[arg-type]
    with pytest.raises(AuthConfigError, match="without --auth-file"):
        transport_of(**EXPOSED, insecure=True, auth_file="")  # type: ignore[arg-type]
    auth_file = tmp_path / "principals.toml"
    auth_file.write_text(
        '[[principals]]\nname = "ops"\nrole = "operator"\naccounts = "*"\n'
        f'token_sha256 = "{"a" * 64}"\n'
    )
    chosen = transport_of(**EXPOSED, insecure=True, auth_file=str(auth_file))  # type: ignore[arg-type]
    assert chosen.principals is not None
    assert chosen.principals.by_token["a" * 64].role == "operator"
    assert any("WITHOUT TLS" in warning for warning in chosen.warnings)


def test_no_auth_file_on_loopback_says_so_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="portfolio"):
        running = start_test_server()
        running.stop()
    assert any("no --auth-file" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"principals": []}', "non-empty list"),
        ('{"principals": [{"name": "x", "role": "admin", "token_sha256": "' + "a" * 64 + '"}]}',
         "role 'admin'"),
        ('{"principals": [{"name": "x", "role": "reader", "token_sha256": "plain"}]}',
         "64 hex digits"),
        ('{"principals": [{"name": "x", "role": "reader"}]}', "needs token_sha256"),
        ('{"principals": [{"name": "x", "role": "reader", "accounts": "A1", '
         '"certificate_cn": "c"}]}', "accounts must be"),
        ("not json", "cannot be read"),
    ],
)  # fmt: skip
def test_a_bad_auth_file_stops_the_start_saying_why(tmp_path: Path, content: str, why: str) -> None:
    auth_file = tmp_path / "principals.json"
    auth_file.write_text(content)
    opened: list[str] = []
    with pytest.raises(AuthConfigError, match=why):
        start_test_server(opened.append, auth_file=str(auth_file))
    assert opened == []  # refused before the store is opened (and recovered)


def test_insecure_is_a_bare_flag_and_the_tls_settings_are_flags() -> None:
    from server.config import parse_args

    assert parse_args(["--insecure"]).insecure is True
    assert parse_args(["--insecure", "false"]).insecure is False
    assert parse_args([]).insecure is False
    chosen = parse_args(["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"])
    assert (chosen.tls_cert, chosen.tls_key, chosen.tls_client_ca) == ("c.pem", "k.pem", "ca.pem")
