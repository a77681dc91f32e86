"""The invariants every fuzzed call must keep, whatever it sent: a clear status, never
UNKNOWN or INTERNAL, and no change to a session that refused the call."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from tests.fuzz.known import Known

if TYPE_CHECKING:
    from tests.fuzz.harness import FuzzServer
from google.protobuf import descriptor, message_factory

from peer_grpc import (
    ServerConfig,
    Session,
    SessionState,
)
from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.metadata import SESSION_ID_KEY

#: Statuses no input may ever produce from a method that exists.
FORBIDDEN = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


@dataclass(frozen=True)
class Outcome:
    """How a call ended, as the client saw it."""

    code: grpc.StatusCode
    details: str
    #: The server's ``peer-sequence`` for the response: the call was admitted on its session.
    server_sequence: str | None
    #: The response messages (one for a unary call), as bytes.
    responses: tuple[bytes, ...]

    @property
    def admitted(self) -> bool:
        """Whether the server admitted the call on a session (and so spent its number)."""
        return self.server_sequence is not None


# --- the invariants ----------------------------------------------------------------------


#: What a call admitted on a session may change of it: its numbers, activity and state.
_MOVING_PARTS = frozenset(
    {
        "state",
        "last_activity",
        "expires_at",
        "sequence_num",
        "expected_sequence",
        "highest_accepted",
        "ended_at",
    }
)


def _fixed_part(session: Session) -> dict[str, Any]:
    """Everything of a session that no call admitted on it may change."""
    return {
        field.name: getattr(session, field.name)
        for field in dataclasses.fields(session)
        if field.name not in _MOVING_PARTS
    }


def sent_session_id(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The session id a call carried, if it carried exactly one as text."""
    values = [value for key, value in metadata if key == SESSION_ID_KEY]
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


def check_outcome(
    config: ServerConfig,
    method: descriptor.MethodDescriptor,
    body: bytes,
    metadata: Sequence[tuple[str, str | bytes]],
    outcome: Outcome,
    before: Mapping[str, Session | None],
    after: Mapping[str, Session | None],
) -> None:
    """Assert the properties every call keeps, whatever was sent:

    - its status is never UNKNOWN, INTERNAL, DATA_LOSS or UNIMPLEMENTED;
    - an OK answer decodes as the method's response type;
    - a call refused before admission (non-OK, no ``peer-sequence`` in the response)
      changes no session at all;
    - an admitted call changes no session but its own, and of its own only the
      numbers, activity and state (to ESTABLISHED, or TERMINATED by Terminate); never
      moving its expected sequence back (nor, in strict mode, by more than one);
    - only Handshake, and Ping and Status where sessionless calls are allowed,
      succeed without admission; a Handshake changes no session but its peer's.
    """
    where = f"{method.name} with body {body!r} and metadata {list(metadata)!r}"
    assert outcome.code not in FORBIDDEN, f"{where}: {outcome.code} {outcome.details!r}"
    if outcome.code is grpc.StatusCode.OK:
        response_type = message_factory.GetMessageClass(method.output_type)
        for response in outcome.responses:
            response_type.FromString(response)
    changed = {sid for sid, session in before.items() if after.get(sid) != session}
    if outcome.admitted:
        own = sent_session_id(metadata)
        assert own is not None, f"{where}: admitted without one session id"
        assert changed <= {own}, f"{where}: admitted on {own}, but changed {changed}"
        old, new = before.get(own), after.get(own)
        if old is not None and new is not None:
            step = new.expected_sequence - old.expected_sequence
            assert step >= 0, f"{where}: the expected sequence went back: {old} -> {new}"
            if not old.window:
                assert step <= 1, f"{where}: the expected sequence jumped: {old} -> {new}"
            assert _fixed_part(new) == _fixed_part(old), f"{where}: changed {old} -> {new}"
            states = {old.state, SessionState.ESTABLISHED}
            if method.name == "Terminate":
                states.add(SessionState.TERMINATED)
            assert new.state in states, f"{where}: moved {old.state} -> {new.state}"
        return
    if outcome.code is not grpc.StatusCode.OK:
        assert not changed, (
            f"{where}: rejected with {outcome.code} {outcome.details!r}, but changed "
            + "; ".join(f"{before[sid]} -> {after.get(sid)}" for sid in sorted(changed))
        )
        return
    if method.name == "Handshake":
        peer_id = peer_pb2.HandshakeRequest.FromString(body).peer_id
        peers = {sid: (before[sid] or after[sid]) for sid in changed}
        others = {sid for sid, session in peers.items() if session and session.peer_id != peer_id}
        assert not others, f"{where}: a handshake of {peer_id!r} changed {others}"
        return
    assert config.allow_sessionless, f"{where}: OK without admission"
    assert method.name in ("Ping", "Status", "Describe"), f"{where}: OK without admission"
    assert sent_session_id(metadata) is None, f"{where}: a session was sent but not admitted"
    assert not changed, f"{where}: a sessionless call changed {changed}"


class SessionPool:
    """The sessions a stateless fuzz test calls on: a few live ones, kept live by opening
    a new one when one ends, and the last few that ended."""

    def __init__(self, fuzz: FuzzServer, size: int = 3, ended: int = 3) -> None:
        self._fuzz = fuzz
        self._keep_ended = ended
        self.peers = [f"fuzz-peer-{i}" for i in range(size)]
        self.live = [fuzz.handshake(peer).session_id for peer in self.peers]
        self.ended: list[str] = []
        #: What strategies draw from; :meth:`refresh` keeps it up to date.
        self.known = Known(peer_ids=self.peers)
        self._now: dict[str, Session | None] | None = None

    @property
    def session_ids(self) -> list[str]:
        """Every session the test checks after each call."""
        return [*self.live, *self.ended]

    def send(
        self,
        method: descriptor.MethodDescriptor,
        body: bytes,
        metadata: Sequence[tuple[str, str | bytes]],
    ) -> Outcome:
        """Send one call and check :func:`check_outcome` over every session of the pool."""
        before = self._now if self._now is not None else self.refresh()
        outcome, _, after = self._fuzz.send(method, body, metadata, self.session_ids, before)
        # The next call's "before": nothing changes a session between calls here (none
        # expires), so anything that did would be caught as the next call's doing.
        self._now = after
        return outcome

    def refresh(self) -> dict[str, Session | None]:
        """Replace the sessions that ended; return every session of the pool as it is now."""
        now = self._now if self._now is not None else self._fuzz.snapshots(self.session_ids)
        replaced = False
        for index, session_id in enumerate(self.live):
            session = now[session_id]
            if session is None or session.state.is_final:
                self.ended = [session_id, *self.ended][: self._keep_ended]
                self.live[index] = self._fuzz.handshake(self.peers[index]).session_id
                replaced = True
        if replaced:
            now = self._fuzz.snapshots(self.session_ids)
        self._now = now
        self.known.live = [s for s in (now[i] for i in self.live) if s is not None]
        self.known.ended = [s for s in (now[i] for i in self.ended) if s is not None]
        return now
