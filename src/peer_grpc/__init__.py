"""peer-grpc: gRPC peer sessions with ordered, replay-protected messages."""

from peer_grpc._version import __version__
from peer_grpc.call_context import current_session, current_session_or_none
from peer_grpc.client import PeerClient, SessionTicket
from peer_grpc.clock import Clock, ManualClock, SystemClock
from peer_grpc.errors import (
    FieldViolation,
    HandshakeRateLimited,
    InternalError,
    InvalidArgument,
    InvalidSessionState,
    InvalidTransition,
    NoCommonProtocolVersion,
    PeerError,
    PeerIdNotAllowed,
    PermissionDenied,
    RemoteError,
    SequenceError,
    SequenceErrorKind,
    SequenceExhausted,
    SessionError,
    SessionExpired,
    SessionIdentityMismatch,
    SessionLimitReached,
    SessionNotFound,
    SessionRequired,
    SessionTerminated,
    SessionTokenInvalid,
    ShuttingDown,
    TaskError,
    TaskLimitReached,
    TaskNotCancelable,
    TaskNotFound,
)
from peer_grpc.identity import PeerIdPolicy
from peer_grpc.manager import SessionManager
from peer_grpc.sequence import SequenceMode
from peer_grpc.server import PeerServer, ServerBindError, ServerConfig, serve
from peer_grpc.session import Session, SessionStats
from peer_grpc.state import SessionState
from peer_grpc.stores import MemorySessionStore, MemoryTaskStore, SessionStore, TaskStore
from peer_grpc.task import Task
from peer_grpc.task_manager import TaskLimits, TaskManager
from peer_grpc.task_state import TaskState
from peer_grpc.tasks import TaskContext, TaskRegistry, TaskRejected, current_task, default_registry
from peer_grpc.tls import channel_credentials

__all__ = [
    "Clock",
    "FieldViolation",
    "HandshakeRateLimited",
    "InternalError",
    "InvalidArgument",
    "InvalidSessionState",
    "InvalidTransition",
    "ManualClock",
    "MemorySessionStore",
    "MemoryTaskStore",
    "NoCommonProtocolVersion",
    "PeerClient",
    "PeerError",
    "PeerIdNotAllowed",
    "PeerIdPolicy",
    "PeerServer",
    "PermissionDenied",
    "RemoteError",
    "SequenceError",
    "SequenceErrorKind",
    "SequenceExhausted",
    "SequenceMode",
    "ServerBindError",
    "ServerConfig",
    "Session",
    "SessionError",
    "SessionExpired",
    "SessionIdentityMismatch",
    "SessionLimitReached",
    "SessionManager",
    "SessionNotFound",
    "SessionRequired",
    "SessionState",
    "SessionStats",
    "SessionStore",
    "SessionTerminated",
    "SessionTicket",
    "SessionTokenInvalid",
    "ShuttingDown",
    "SystemClock",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskLimitReached",
    "TaskLimits",
    "TaskManager",
    "TaskNotCancelable",
    "TaskNotFound",
    "TaskRegistry",
    "TaskRejected",
    "TaskState",
    "TaskStore",
    "__version__",
    "channel_credentials",
    "current_session",
    "current_session_or_none",
    "current_task",
    "default_registry",
    "serve",
]
