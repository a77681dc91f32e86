"""Strategies for request bytes: valid, almost valid and mangled messages of every method."""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf import descriptor, message_factory, struct_pb2
from google.protobuf.message import Message
from hypothesis import strategies as st

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.tasks import MAX_JSON_DEPTH

_T = TypeVar("_T")

#: The service under test, straight from the generated descriptor.
SERVICE = peer_pb2.DESCRIPTOR.services_by_name["PeerService"]
#: Every method of the service, in the order of the contract.
METHODS: tuple[descriptor.MethodDescriptor, ...] = tuple(SERVICE.methods)
METHODS_BY_NAME: Mapping[str, descriptor.MethodDescriptor] = {m.name: m for m in METHODS}


# --- strategies ----------------------------------------------------------------------------
#
# Hypothesis requires data generation not to depend on outside state, and the server's
# state (which sessions live, their next numbers, the tasks there are) varies from run
# to run. So every strategy here draws the same way whatever that state: it draws
# indices and forms, and resolves them against :class:`Known` only afterwards. The
# strategies are built once per Known, which also keeps generation fast.

_HEX32 = st.text("0123456789abcdef", min_size=32, max_size=32)
_ID_CHARS = string.ascii_letters + string.digits + "_-"
_INDEX = st.integers(0, 255)
_printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
#: Text that any metadata value may be: printable ASCII.
ascii_text = st.text(_printable, max_size=40)


def _json_values(*, finite: bool) -> st.SearchStrategy[Any]:
    """Small JSON-like values; with ``finite``, no NaN, no infinity and no huge ints
    (what a Struct carries faithfully)."""
    numbers: st.SearchStrategy[Any] = (
        st.floats(allow_nan=False, allow_infinity=False)
        if finite
        else st.integers(-(2**60), 2**60) | st.floats(allow_nan=True, allow_infinity=True)
    )
    scalars: st.SearchStrategy[Any] = st.one_of(
        st.none(), st.booleans(), numbers, st.text(max_size=10)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=5), inner, max_size=2)
        ),
        max_leaves=3,
    )


_json = _json_values(finite=False)
_finite_json = _json_values(finite=True)


def _seeded_json(rng: random.Random, depth: int, finite: bool) -> Any:
    """A random JSON value with containers nested at most ``depth`` levels; NaN and
    infinities too unless ``finite``."""
    kind = rng.randrange(8 if depth > 0 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0.0, -0.0, 1e308, 2.0**53 + 1, -(2.0**63), rng.uniform(-1e9, 1e9)])
    if kind == 3:
        return "" if finite else rng.choice([math.nan, math.inf, -math.inf])
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(12)))
    if kind in (5, 6):
        return _seeded_object(rng, depth - 1, finite)
    return [_seeded_json(rng, depth - 1, finite) for _ in range(rng.randrange(4))]


def _seeded_object(rng: random.Random, depth: int, finite: bool) -> dict[str, Any]:
    """A random JSON object, as :func:`_seeded_json` makes values."""
    size = rng.randrange(4) if depth > 0 else 0
    if depth > 0 and rng.random() < 0.3:  # a deep chain rather than a wide tree
        return {"d": _seeded_object(rng, depth - 1, finite)}
    return {f"k{i}": _seeded_json(rng, depth, finite) for i in range(size)}


def _json_objects_of(
    small: st.SearchStrategy[Any], valid: bool
) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects: small ones from Hypothesis, bigger ones from a seed (cheaper to
    draw than Hypothesis's own), and deep ones: up to the server's depth limit if
    ``valid`` (and then without NaN or infinities), else well past it."""
    depth = MAX_JSON_DEPTH if valid else 70
    return st.one_of(
        st.dictionaries(st.text(max_size=8), small, max_size=3),
        st.tuples(st.integers(0, 2**32 - 1), st.integers(1, depth // 2)).map(
            lambda seed_depth: _seeded_object(random.Random(seed_depth[0]), seed_depth[1], valid)
        ),
        st.tuples(st.integers(1, depth), st.booleans()).map(lambda chain: _nested(*chain)),
    )


def _nested(depth: int, in_lists: bool) -> dict[str, Any]:
    """An object ``depth`` levels deep: around the server's depth limit (32 levels), or
    past what protobuf decodes (100 nested messages)."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value] if in_lists else {"d": value}
    return {"d": value}


_json_objects = _json_objects_of(_json, valid=False)
_valid_json_objects = _json_objects_of(_finite_json, valid=True)
#: Random bytes, long ones from a seed: Hypothesis draws long byte strings slowly.
_random_bytes = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(100, 3000)).map(
        lambda seed_size: random.Random(seed_size[0]).randbytes(seed_size[1])
    ),
)
_task_ids = st.one_of(
    st.text(max_size=140),
    _HEX32,
    st.text(_ID_CHARS, min_size=1, max_size=129),
)
_INT_RANGES = {
    descriptor.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    descriptor.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    descriptor.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    descriptor.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    descriptor.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    descriptor.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def one_of_these(items: Sequence[_T], fallback: _T) -> st.SearchStrategy[_T]:
    """One of ``items``, or ``fallback`` when there are none, drawn the same way however
    many items there are."""
    return _INDEX.map(lambda i: items[i % len(items)] if items else fallback)


def _one_of_current(items: Callable[[], Sequence[_T]], fallback: _T) -> st.SearchStrategy[_T]:
    """Like :func:`one_of_these`, but of the items ``items()`` returns when drawn."""

    def resolve(index: int) -> _T:
        current = items()
        return current[index % len(current)] if current else fallback

    return _INDEX.map(resolve)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _tame_delegation(request: Message) -> Message:
    """Make a sleep of more than 50 ms (or of the default 1 s, when the payload names no
    ``seconds``) one of 10 ms: DelegateTask and WatchTask calls wait for their task, and
    waiting is not what is fuzzed. (``seconds`` that are no number stay: the task refuses
    them at once. The state machine delegates long sleeps on purpose, to reach the task
    limits.)"""
    if isinstance(request, peer_pb2.DelegateTaskRequest) and request.task_type == "sleep":
        seconds = request.payload.fields.get("seconds")
        if seconds is None or (
            seconds.HasField("number_value") and not seconds.number_value <= 0.05
        ):
            request.payload["seconds"] = 0.01
    return request


#: How a well-formed request is mangled: cut at, or a byte changed at, a position
#: (modulo its length), or bytes appended.
_mangling = st.tuples(
    st.sampled_from(["truncate", "change", "append"]),
    st.integers(0, 4095),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=16),
)


def _mangle(data: bytes, how: tuple[str, int, int, bytes]) -> bytes:
    kind, position, byte, tail = how
    if kind == "append" or not data:
        return data + tail
    position %= len(data)
    if kind == "truncate":
        return data[:position]
    return data[:position] + bytes([byte]) + data[position + 1 :]


_REQUIRED = frozenset(
    {
        "peer.v1.DelegateTaskRequest.task_type",
        "peer.v1.GetTaskRequest.task_id",
        "peer.v1.CancelTaskRequest.task_id",
        "peer.v1.WatchTaskRequest.task_id",
        "peer.v1.ProvideInputRequest.task_id",
    }
)


def _message(
    message: descriptor.Descriptor,
    hints: Mapping[str, st.SearchStrategy[Any]],
    depth: int,
    required: frozenset[str] = frozenset(),
) -> st.SearchStrategy[Message]:
    """Messages of type ``message`` with any subset of their fields (and all the
    ``required`` ones) set to random values."""
    message_class = message_factory.GetMessageClass(message)
    if message.full_name == "google.protobuf.Struct":
        return _json_objects.map(_struct)
    fields = {
        field.name: _field(field, hints, depth)
        for field in message.fields
        if field.message_type is None or depth < 3
    }
    always = {
        name: fields.pop(name) for name in list(fields) if f"{message.full_name}.{name}" in required
    }

    def build(values: dict[str, Any]) -> Message:
        built = message_class()
        for name, value in values.items():
            target = getattr(built, name)
            if message.fields_by_name[name].is_repeated:
                if message.fields_by_name[name].message_type is not None:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif isinstance(value, Message):
                target.CopyFrom(value)
            else:
                setattr(built, name, value)
        return built

    return st.fixed_dictionaries(always, optional=fields).map(build)


def _field(
    field: descriptor.FieldDescriptor, hints: Mapping[str, st.SearchStrategy[Any]], depth: int
) -> st.SearchStrategy[Any]:
    hint = hints.get(field.full_name)
    if hint is not None:
        return hint
    kind = field.type
    single: st.SearchStrategy[Any]
    if field.message_type is not None:
        single = _message(field.message_type, hints, depth + 1)
    elif field.enum_type is not None:
        numbers = [value.number for value in field.enum_type.values]
        single = st.integers(min(numbers) - 2, max(numbers) + 3)
    elif kind == descriptor.FieldDescriptor.TYPE_STRING:
        single = st.text(max_size=70)
    elif kind == descriptor.FieldDescriptor.TYPE_BYTES:
        single = st.binary(max_size=64)
    elif kind == descriptor.FieldDescriptor.TYPE_BOOL:
        single = st.booleans()
    elif kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        single = st.one_of(st.integers(max(low, -3), 3), st.integers(low, high))
    elif kind == descriptor.FieldDescriptor.TYPE_FLOAT:
        single = st.floats(width=32)
    else:
        single = st.floats()
    return st.lists(single, max_size=4) if field.is_repeated else single


#: ``peer-sequence`` values near the expected one ``e``: right, off by some, malformed.
