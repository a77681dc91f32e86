"""Conversions between the core's values and the contract's messages."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.sequence import SequenceMode
from peer_grpc.core.session import Session, SessionStats
from peer_grpc.core.task import Task
from peer_grpc.tasks.registry import TaskType

__all__ = [
    "duration",
    "seconds",
    "sequence_mode",
    "session_info",
    "session_stats",
    "task_message",
    "task_type_message",
    "timestamp",
]


def timestamp(seconds: float) -> Timestamp:
    """A Timestamp for seconds since the Unix epoch."""
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def seconds(span: Duration) -> float:
    """The seconds a Duration spans."""
    return span.ToNanoseconds() / 1e9


def duration(seconds: float) -> Duration:
    """A Duration of ``seconds``."""
    span = Duration()
    span.FromNanoseconds(round(seconds * 1e9))
    return span


def session_info(session: Session) -> peer_pb2.SessionInfo:
    """The contract's view of a session."""
    return peer_pb2.SessionInfo(
        session_id=session.session_id,
        peer_id=session.peer_id,
        state=int(session.state),  # type: ignore[arg-type]
        protocol_version=session.protocol_version,
        capabilities=session.capabilities,
        created_at=timestamp(session.created_at),
        last_activity=timestamp(session.last_activity),
        expires_at=timestamp(session.expires_at),
        expected_sequence=session.expected_sequence,
        sequence_num=session.sequence_num,
        sequence_mode=sequence_mode(session),  # type: ignore[arg-type]
        replay_window=session.window,
        highest_accepted=session.highest_accepted,
    )


def sequence_mode(session: Session) -> int:
    """The contract's SequenceMode of a session."""
    return int(SequenceMode.WINDOW if session.window else SequenceMode.STRICT)


def session_stats(stats: SessionStats) -> peer_pb2.SessionStats:
    """The contract's view of session statistics."""
    return peer_pb2.SessionStats(
        handshaking=stats.handshaking,
        established=stats.established,
        terminated=stats.terminated,
        expired=stats.expired,
        created_total=stats.created_total,
        expired_total=stats.expired_total,
        terminated_total=stats.terminated_total,
        sequence_errors_total=stats.sequence_errors_total,
    )


def task_message(task: Task) -> peer_pb2.Task:
    """The contract's view of a task."""
    message = peer_pb2.Task(
        task_id=task.task_id,
        task_type=task.task_type,
        state=int(task.state),  # type: ignore[arg-type]
        created_at=timestamp(task.created_at),
        updated_at=timestamp(task.updated_at),
        owner_peer_id=task.owner_peer_id,
        timeout=duration(task.timeout),
        attempt=task.attempt,
        max_attempts=task.max_attempts,
    )
    if task.result is not None:
        message.result.update(task.result)
    if task.error_code:
        message.error.code = task.error_code
        message.error.message = task.error_message
    if task.progress is not None:
        fraction, text = task.progress
        if fraction is not None:
            message.progress.fraction = fraction
        message.progress.message = text
    if task.partial_result is not None:
        message.partial_result.update(task.partial_result)
    if task.question is not None:
        message.question.update(task.question)
    message.questions_asked = task.questions_asked
    return message


def task_type_message(task_type: TaskType) -> peer_pb2.TaskType:
    """The contract's view of a registered task type."""
    message = peer_pb2.TaskType(
        name=task_type.name,
        description=task_type.description,
        retryable=task_type.retry.max_attempts > 1,
        max_attempts=task_type.retry.max_attempts,
        asks_for_input=task_type.asks_for_input,
    )
    message.input_schema.update(task_type.input_schema)
    message.output_schema.update(task_type.output_schema)
    return message
