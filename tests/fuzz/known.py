"""What the fuzzer knows of the server (live sessions, their next numbers, tasks), and the
strategies built against it, once per Known."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from google.protobuf import descriptor, duration_pb2
from google.protobuf.message import Message
from hypothesis import strategies as st

from peer_grpc import (
    Session,
)
from tests.fuzz.metadata import _metadata_entry, _session_metadata
from tests.fuzz.requests import (
    _HEX32,
    _ID_CHARS,
    _REQUIRED,
    METHODS,
    _json_objects,
    _mangle,
    _mangling,
    _message,
    _one_of_current,
    _random_bytes,
    _struct,
    _tame_delegation,
    _task_ids,
    _valid_json_objects,
    ascii_text,
)

_T2 = TypeVar("_T2")


class Known:
    """What a test knows of the server's state, for strategies to draw from.

    Its strategies read it when they draw, so that the test can update it between
    examples (sessions end, tasks are created) without building strategies anew.
    """

    def __init__(self, peer_ids: Sequence[str] = ()) -> None:
        #: Live sessions: calls made on them can be admitted.
        self.live: list[Session] = []
        #: Sessions that ended.
        self.ended: list[Session] = []
        self.peer_ids: list[str] = list(peer_ids)
        #: Tasks the test created.
        self.task_ids: list[str] = []
        #: Tasks that end soon: the ones WatchTask may name (a watch lasts as its task does).
        self.watchable_task_ids: list[str] = []
        self._strategies: dict[tuple[str, str], st.SearchStrategy[Any]] = {}

    @property
    def session_ids(self) -> list[str]:
        return [s.session_id for s in (*self.live, *self.ended)]

    def _cached(
        self, key: tuple[str, str], build: Callable[[], st.SearchStrategy[_T2]]
    ) -> st.SearchStrategy[_T2]:
        if key not in self._strategies:
            self._strategies[key] = build()
        return self._strategies[key]

    # -- requests --

    def requests(
        self, method: descriptor.MethodDescriptor, *, valid: bool = False
    ) -> st.SearchStrategy[Message]:
        """Well-formed requests of ``method``'s type: with random (often invalid)
        contents, or with ``valid`` ones that pass the server's request validation."""

        def build() -> st.SearchStrategy[Message]:
            hints = self._valid_hints() if valid else self._hints()
            required = _REQUIRED if valid else frozenset()
            return _message(method.input_type, hints, 0, required).map(_tame_delegation)

        return self._cached((method.full_name, "valid" if valid else "any"), build)

    def request_bytes(self, method: descriptor.MethodDescriptor) -> st.SearchStrategy[bytes]:
        """Bytes for ``method``: random, a well-formed request, one mangled, or a request
        of another method."""

        def build() -> st.SearchStrategy[bytes]:
            wellformed = self.requests(method).map(lambda r: r.SerializeToString())
            another = st.sampled_from(METHODS).flatmap(
                lambda other: self.requests(other).map(lambda r: r.SerializeToString())
            )
            return st.one_of(
                _random_bytes,
                wellformed,
                st.tuples(wellformed, _mangling).map(lambda pair: _mangle(*pair)),
                another,
            )

        return self._cached((method.full_name, "bytes"), build)

    def _known(
        self, items: Callable[[], Sequence[str]], other: st.SearchStrategy[str]
    ) -> st.SearchStrategy[str]:
        """One of the values the test knows (often right), or an ``other`` one."""
        return st.one_of(_one_of_current(items, "0" * 32), other)

    def _valid_hints(self) -> dict[str, st.SearchStrategy[Any]]:
        """Field values that pass the server's request validation."""
        task_id = self._known(lambda: self.task_ids, _HEX32)
        return {
            "peer.v1.DelegateTaskRequest.task_type": st.sampled_from(["echo", "sleep"]),
            "peer.v1.DelegateTaskRequest.payload": st.one_of(
                st.fixed_dictionaries({"seconds": st.floats(0, 0.02)}),
                _valid_json_objects,
            ).map(_struct),
            "peer.v1.DelegateTaskRequest.timeout": st.builds(
                duration_pb2.Duration,
                seconds=st.integers(1, 30),
                nanos=st.integers(0, 999_999_999),
            ),
            "peer.v1.GetTaskRequest.task_id": task_id,
            "peer.v1.CancelTaskRequest.task_id": task_id,
            "peer.v1.WatchTaskRequest.task_id": self._known(
                lambda: self.watchable_task_ids, _HEX32
            ),
            "peer.v1.ListTasksRequest.page_size": st.integers(0, 1000),
            "peer.v1.ListTasksRequest.page_token": st.just(""),
            "peer.v1.ListTasksRequest.state": st.integers(0, 7),
            "peer.v1.ProvideInputRequest.task_id": task_id,
            "peer.v1.ProvideInputRequest.input": _valid_json_objects.map(_struct),
        }

    def _hints(self) -> dict[str, st.SearchStrategy[Any]]:
        """Values for fields by full name, beside the generic ones of their type:
        sometimes right, often near misses, so that requests reach past validation."""
        # Only tasks that end soon: the bytes of a GetTask are a valid WatchTask too.
        task_id = self._known(lambda: self.watchable_task_ids, _task_ids)
        return {
            "peer.v1.HandshakeRequest.peer_id": self._known(
                lambda: self.peer_ids,
                st.one_of(st.text(_ID_CHARS + ".:", min_size=1, max_size=12), ascii_text),
            ),
            "peer.v1.HandshakeRequest.protocol_versions": st.lists(
                st.one_of(
                    st.just("1.0"),
                    st.sampled_from(["1", "2.0", "1.0 ", ""]),
                    st.text(max_size=70),
                ),
                max_size=4,
            ),
            "peer.v1.ResumeSession.session_id": self._known(
                lambda: self.session_ids, st.text(max_size=130)
            ),
            "peer.v1.DelegateTaskRequest.task_type": st.one_of(
                st.sampled_from(["echo", "sleep", "nope", "", "ECHO"]), st.text(max_size=70)
            ),
            "peer.v1.DelegateTaskRequest.payload": _json_objects.map(_struct),
            "peer.v1.GetTaskRequest.task_id": task_id,
            "peer.v1.CancelTaskRequest.task_id": task_id,
            "peer.v1.WatchTaskRequest.task_id": task_id,
            "peer.v1.ProvideInputRequest.task_id": task_id,
            "peer.v1.ProvideInputRequest.input": _json_objects.map(_struct),
            "peer.v1.ListTasksRequest.page_size": st.one_of(
                st.integers(-2, 1002), st.integers(-(2**31), 2**31 - 1)
            ),
            "peer.v1.ListTasksRequest.page_token": st.one_of(
                st.just(""), st.text(max_size=70), st.binary(max_size=20).map(bytes.hex)
            ),
        }

    # -- metadata --

    def session_metadata(self) -> st.SearchStrategy[list[tuple[str, str | bytes]]]:
        """Session metadata of every kind: none, right, a wrong sequence, another
        session's id, an ended session's, an unknown one, half of it, a malformed id,
        repeated keys."""
        return self._cached(("metadata", "session"), lambda: _session_metadata(self))

    def metadata_entries(self) -> st.SearchStrategy[tuple[str, str | bytes]]:
        """One metadata entry that a client can legally send, about a live session:
        our keys with near-miss values, near-miss keys, ``-bin`` keys with any bytes
        (the UTF-8 of any unicode text among them), transport keys, or random keys;
        values are sometimes huge (some KiB, within the server's metadata limit)."""
        return self._cached(("metadata", "entry"), lambda: _metadata_entry(self))


#: Fields a valid request must set.
