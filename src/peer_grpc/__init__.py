"""peer-grpc: gRPC peer sessions with ordered, replay-protected messages."""

from peer_grpc._version import __version__
from peer_grpc.client.peer_client import PeerClient, SessionTicket
from peer_grpc.core.clock import Clock, ManualClock, SystemClock
from peer_grpc.core.errors import (
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
    TaskNotWaitingForInput,
)
from peer_grpc.core.identity import PeerIdPolicy
from peer_grpc.core.sequence import SequenceMode
from peer_grpc.core.session import Session, SessionState, SessionStats
from peer_grpc.core.task import Task, TaskState
from peer_grpc.server.call_context import current_session, current_session_or_none
from peer_grpc.server.config import ServerConfig
from peer_grpc.server.peer_server import PeerServer, ServerBindError, serve
from peer_grpc.sessions.manager import SessionManager
from peer_grpc.stores import MemorySessionStore, MemoryTaskStore, SessionStore, TaskStore
from peer_grpc.tasks.manager import TaskLimits, TaskManager
from peer_grpc.tasks.registry import (
    Retry,
    TaskContext,
    TaskRegistry,
    TaskRejected,
    current_task,
    default_registry,
)
from peer_grpc.wire.tls import channel_credentials

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
    "Retry",
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
    "TaskNotWaitingForInput",
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
