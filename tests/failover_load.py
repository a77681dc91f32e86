"""Peers sending continuously through a Redis failover, counting what they saw: answers
by code, and any sequence accepted twice (the failure the product exists to prevent)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from itertools import count

import grpc
import grpc.aio

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from tests.conftest import open_session, resume_request, session_metadata
from tests.rpc_details import details_of

__all__ = ["Load", "send_continuously"]

#: Codes after which a careful peer sends the same call again.
_RESEND = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Load:
    """What peers sending continuously through a failover saw."""

    #: Answers by status code (a resend after UNAVAILABLE counts again), and fences
    #: as SESSION_FENCED.
    codes: Counter[str] = field(default_factory=Counter)
    #: Calls answered OK under a sequence that had already answered OK to another call.
    accepted_twice: int = 0
    #: Calls answered OK after the failover.
    ok_after: int = 0


async def send_continuously(
    stub: peer_pb2_grpc.PeerServiceStub,
    peer: str,
    load: Load,
    stop: asyncio.Event,
    failed_over: asyncio.Event,
) -> None:
    """Ping under strict sequences as a careful client does: a call that got UNAVAILABLE is
    resent with its sequence and bytes; a fenced session is resumed with the highest
    sequence acknowledged and the call resent; a SEQUENCE_ERROR moves on to the expected
    number; a lost session starts a new one."""
    opened = await open_session(stub, peer)
    session_id, sequence = opened.session_id, 1
    answered: dict[int, bytes] = {}  # sequence -> the payload it answered OK
    calls = count()
    while not stop.is_set():
        payload = f"{peer}:{next(calls)}".encode()
        while not stop.is_set():
            try:
                await stub.Ping(
                    peer_pb2.PingRequest(payload=payload),
                    metadata=session_metadata(session_id, sequence),
                    timeout=3,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in _RESEND:
                    load.codes[error.code().name] += 1
                    await asyncio.sleep(0.05)
                    continue  # the same call again
                details = details_of(error)
                reason = details.error_info.reason if details.error_info else ""
                load.codes[reason if reason == "SESSION_FENCED" else error.code().name] += 1
                if reason == "SESSION_FENCED":
                    if await _resumed(stub, peer, opened, max(answered, default=0)):
                        continue  # the same call again, on the resumed session
                    opened = await open_session(stub, peer)
                    session_id, sequence, answered = opened.session_id, 1, {}
                elif details.sequence_error is not None:
                    sequence = details.sequence_error.expected_sequence
                else:  # the session is gone: a new one
                    opened = await open_session(stub, peer)
                    session_id, sequence, answered = opened.session_id, 1, {}
                break
            load.codes["OK"] += 1
            if answered.get(sequence, payload) != payload:
                load.accepted_twice += 1
            answered[sequence] = payload
            load.ok_after += failed_over.is_set()
            sequence += 1
            break


async def _resumed(
    stub: peer_pb2_grpc.PeerServiceStub,
    peer: str,
    opened: peer_pb2.HandshakeResponse,
    last_acknowledged: int,
) -> bool:
    """Resume a fenced session; False if the server no longer has it."""
    request = resume_request(peer, opened, last_acknowledged)
    while True:
        try:
            await stub.Handshake(request, timeout=3)
            return True
        except grpc.aio.AioRpcError as error:
            if error.code() not in _RESEND:
                return False
            await asyncio.sleep(0.05)
