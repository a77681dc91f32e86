"""Mutual TLS: who may connect, and sessions bound to the certificate that opened them.

Every test runs a real server with a CA of its own (trustme) on both session stores.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import grpc.aio
import pytest

from peer_grpc import PeerClient
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.core.clock import ManualClock
from peer_grpc.core.errors import PeerIdNotAllowed, SessionIdentityMismatch
from peer_grpc.server import PeerServer, ServerConfig
from tests.certs import CertFiles, Pki
from tests.conftest import StoreFactory, TaskStoreFactory, session_metadata
from tests.rpc_details import details_of

Stub = peer_pb2_grpc.PeerServiceStub

BILLING = "billing.example.org"
BILLING_URI = "spiffe://example.org/billing"
GATEWAY = "gateway.example.org"
ADMIN = "admin.example.org"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def server_config(server_config: ServerConfig, pki: Pki, tmp_path: Path) -> ServerConfig:
    """Mutual TLS with an identity map: the gateway speaks for two peers, the admin for any."""
    server_cert = pki.issue("127.0.0.1", "localhost")
    identity_map = tmp_path / "identities.json"
    identity_map.write_text(json.dumps({GATEWAY: ["orders", "payments"], ADMIN: ["*"]}))
    return replace(
        server_config,
        tls_cert=server_cert.cert,
        tls_key=server_cert.key,
        tls_client_ca=pki.ca_file,
        identity_map=str(identity_map),
    )


@pytest.fixture
def billing(pki: Pki) -> CertFiles:
    return pki.issue(BILLING, common_name="billing")


async def connect(server: PeerServer, pki: Pki, client: CertFiles | None) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(server.address, pki.client_credentials(client))


async def handshake(stub: Stub, peer_id: str) -> peer_pb2.HandshakeResponse:
    response: peer_pb2.HandshakeResponse = await stub.Handshake(
        peer_pb2.HandshakeRequest(peer_id=peer_id, protocol_versions=["1.0"]), timeout=5
    )
    return response


@pytest.fixture
async def billing_stub(server: PeerServer, pki: Pki, billing: CertFiles) -> AsyncIterator[Stub]:
    async with await connect(server, pki, billing) as channel:
        yield peer_pb2_grpc.PeerServiceStub(channel)


# --- who may connect ---------------------------------------------------------------------------


def expired(pki: Pki) -> CertFiles:
    return pki.issue(BILLING, not_after=datetime.datetime(2021, 1, 1))


def from_another_ca(pki: Pki) -> CertFiles:
    return Pki(pki.directory, name="other-ca").issue(BILLING)


@pytest.mark.parametrize(
    "client_cert",
    [
        pytest.param(lambda pki: None, id="no-client-certificate"),
        pytest.param(from_another_ca, id="certificate-from-another-ca"),
        pytest.param(expired, id="expired-certificate"),
    ],
)
async def test_a_client_without_a_valid_certificate_is_refused_before_any_servicer_runs(
    server: PeerServer, pki: Pki, client_cert
):
    async with await connect(server, pki, client_cert(pki)) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await handshake(stub, BILLING)

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE  # the TLS handshake failed
    stats = await server.manager.get_session_stats()
    assert stats.created_total == 0


async def test_a_plaintext_client_is_refused(server: PeerServer):
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await handshake(stub, BILLING)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


# --- which peer ids a certificate may claim ------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "common_name", "identity"),
    [
        pytest.param((BILLING, "other.example.org"), "billing", BILLING, id="first-dns-san"),
        pytest.param((), "ledger", "ledger", id="common-name-without-sans"),
    ],
)
async def test_the_session_is_bound_to_the_certificate_identity(
    server: PeerServer, pki: Pki, names: tuple[str, ...], common_name: str, identity: str
):
    async with await connect(server, pki, pki.issue(*names, common_name=common_name)) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        opened = await handshake(stub, identity)

    session = await server.manager.get_session(opened.session_id)
    assert session is not None
    assert session.identity == identity


async def test_a_uri_san_is_the_identity_before_dns_names(server: PeerServer, pki: Pki):
    async with await connect(server, pki, pki.issue_uri(BILLING_URI, BILLING)) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        opened = await handshake(stub, BILLING_URI)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await handshake(stub, BILLING)

    session = await server.manager.get_session(opened.session_id)
    assert session is not None
    assert session.identity == BILLING_URI
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_claiming_a_peer_id_that_is_not_yours_is_permission_denied(
    server: PeerServer, billing_stub: Stub
):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await handshake(billing_stub, "payments")

    found = details_of(caught.value)
    assert found.code is grpc.StatusCode.PERMISSION_DENIED
    assert found.reason == PeerIdNotAllowed.reason
    assert "payments" in found.message
    assert (await server.manager.get_session_stats()).created_total == 0


@pytest.mark.parametrize(
    ("identity", "peer_id", "allowed"),
    [
        pytest.param(GATEWAY, "orders", True, id="mapped-peer-id"),
        pytest.param(GATEWAY, GATEWAY, True, id="own-identity-beside-the-map"),
        pytest.param(GATEWAY, "ledger", False, id="peer-id-the-map-does-not-give"),
        pytest.param(ADMIN, "anything-at-all", True, id="wildcard"),
    ],
)
async def test_the_identity_map_allows_more_peer_ids(
    server: PeerServer, pki: Pki, identity: str, peer_id: str, allowed: bool
):
    async with await connect(server, pki, pki.issue(identity)) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        if allowed:
            assert (await handshake(stub, peer_id)).session_id
        else:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await handshake(stub, peer_id)
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


# --- a session speaks only for the certificate that opened it -----------------------------------


async def test_another_identity_presenting_a_session_id_is_denied_and_changes_nothing(
    server: PeerServer, pki: Pki, billing_stub: Stub
):
    opened = await handshake(billing_stub, BILLING)
    await billing_stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(opened.session_id, 1))
    before = await server.manager.get_session(opened.session_id)

    async with await connect(server, pki, pki.issue(ADMIN)) as channel:
        thief = peer_pb2_grpc.PeerServiceStub(channel)
        for call, request in (
            (thief.Ping, peer_pb2.PingRequest()),
            (thief.Heartbeat, peer_pb2.HeartbeatRequest()),
            (thief.Terminate, peer_pb2.TerminateRequest()),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request, metadata=session_metadata(opened.session_id, 2))
            found = details_of(caught.value)
            assert found.code is grpc.StatusCode.PERMISSION_DENIED
            assert found.reason == SessionIdentityMismatch.reason
            assert opened.session_id not in found.message  # ids are never echoed in full

    assert await server.manager.get_session(opened.session_id) == before
    # The owner goes on with the very next sequence: the thief used up nothing.
    await billing_stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(opened.session_id, 2))


async def test_a_resend_of_an_accepted_call_is_not_answered_to_another_identity(
    server: PeerServer, pki: Pki, billing_stub: Stub
):
    opened = await handshake(billing_stub, BILLING)
    metadata = session_metadata(opened.session_id, 1)
    await billing_stub.Ping(peer_pb2.PingRequest(payload=b"secret"), metadata=metadata)

    async with await connect(server, pki, pki.issue(ADMIN)) as channel:
        thief = peer_pb2_grpc.PeerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await thief.Ping(peer_pb2.PingRequest(payload=b"secret"), metadata=metadata)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_resuming_another_identitys_session_is_denied(
    server: PeerServer, pki: Pki, billing: CertFiles
):
    async with PeerClient(
        server.address, BILLING, heartbeat=False, credentials=pki.client_credentials(billing)
    ) as owner:
        await owner.ping()
        ticket = owner.ticket
        assert ticket is not None

        async with await connect(server, pki, pki.issue(ADMIN)) as channel:
            thief = peer_pb2_grpc.PeerServiceStub(channel)
            request = peer_pb2.HandshakeRequest(peer_id=BILLING, protocol_versions=["1.0"])
            request.resume.session_id = ticket.session_id
            request.resume.session_token = ticket.session_token
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await thief.Handshake(request, timeout=5)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED

        await owner.ping()  # still the owner's, undisturbed


async def test_the_client_speaks_mutual_tls_end_to_end(
    server: PeerServer, pki: Pki, billing: CertFiles
):
    async with PeerClient(
        server.address, BILLING, heartbeat=False, credentials=pki.client_credentials(billing)
    ) as client:
        for _ in range(3):
            await client.ping()
        task = await client.delegate_task("echo", payload={"hello": "tls"})
        assert client.session_id is not None
        session = await server.manager.get_session(client.session_id)

    assert task.state == peer_pb2.TASK_STATE_COMPLETED
    assert session is not None
    assert (session.identity, session.expected_sequence) == (BILLING, 5)


async def test_a_certificate_that_names_no_identity_may_claim_no_peer_id(
    server: PeerServer, pki: Pki, billing_stub: Stub
):
    opened = await handshake(billing_stub, BILLING)
    nameless = pki.issue("10.9.9.9")  # an IP SAN only: no URI, no DNS name, no CN

    async with await connect(server, pki, nameless) as channel:
        stub = peer_pb2_grpc.PeerServiceStub(channel)
        for peer_id in (BILLING, "anyone"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await handshake(stub, peer_id)
            found = details_of(caught.value)
            assert found.code is grpc.StatusCode.PERMISSION_DENIED
            assert found.reason == PeerIdNotAllowed.reason

    session = await server.manager.get_session(opened.session_id)
    assert session is not None
    assert session.state.name == "HANDSHAKE_SENT"  # billing's session was not replaced


async def test_refused_claims_do_not_spend_the_real_peers_handshakes(
    server_config: ServerConfig,
    store_factory: StoreFactory,
    task_store_factory: TaskStoreFactory,
    clock: ManualClock,
    pki: Pki,
    billing: CertFiles,
):
    config = replace(server_config, peer_handshake_rate=1.0, peer_handshake_burst=2)
    async with PeerServer(
        config, store=store_factory(), task_store=task_store_factory(), clock=clock
    ) as server:
        async with await connect(server, pki, pki.issue("attacker.example.org")) as channel:
            attacker = peer_pb2_grpc.PeerServiceStub(channel)
            for _ in range(10):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await handshake(attacker, BILLING)
                assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED

        async with await connect(server, pki, billing) as channel:
            assert (await handshake(peer_pb2_grpc.PeerServiceStub(channel), BILLING)).session_id
