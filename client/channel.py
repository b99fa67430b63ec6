"""The credentials a client's channel carries: TLS (the service's CA, and a client certificate
for mutual TLS) and a bearer token. With none of them the channel is plaintext, as the service
listens on loopback by default."""

from __future__ import annotations

import grpc


def channel_credentials(
    *,
    root_certificates: bytes | None = None,
    private_key: bytes | None = None,
    certificate_chain: bytes | None = None,
    token: str | None = None,
) -> grpc.ChannelCredentials | None:
    """None for a plaintext channel without a token. A token without TLS travels only to a
    loopback address (gRPC's local credentials refuse any other): it is never sent in clear
    over a network."""
    if bool(private_key) != bool(certificate_chain):
        raise ValueError("private_key and certificate_chain go together (mutual TLS)")
    tls = root_certificates is not None or private_key is not None
    if not tls and not token:
        return None
    transport = (
        grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
        if tls
        else grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    )
    if not token:
        return transport
    # Sent as `authorization: Bearer <token>` on every call.
    return grpc.composite_channel_credentials(transport, grpc.access_token_call_credentials(token))
