import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_INITIAL: _ClassVar[SessionState]
    SESSION_STATE_HANDSHAKE_SENT: _ClassVar[SessionState]
    SESSION_STATE_ESTABLISHED: _ClassVar[SessionState]
    SESSION_STATE_TERMINATED: _ClassVar[SessionState]
    SESSION_STATE_EXPIRED: _ClassVar[SessionState]

class SequenceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEQUENCE_MODE_UNSPECIFIED: _ClassVar[SequenceMode]
    SEQUENCE_MODE_STRICT: _ClassVar[SequenceMode]
    SEQUENCE_MODE_WINDOW: _ClassVar[SequenceMode]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_SUBMITTED: _ClassVar[TaskState]
    TASK_STATE_WORKING: _ClassVar[TaskState]
    TASK_STATE_COMPLETED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELED: _ClassVar[TaskState]
    TASK_STATE_REJECTED: _ClassVar[TaskState]
    TASK_STATE_INPUT_REQUIRED: _ClassVar[TaskState]

class SequenceErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEQUENCE_ERROR_KIND_UNSPECIFIED: _ClassVar[SequenceErrorKind]
    SEQUENCE_ERROR_KIND_GAP: _ClassVar[SequenceErrorKind]
    SEQUENCE_ERROR_KIND_REPLAY: _ClassVar[SequenceErrorKind]
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_INITIAL: SessionState
SESSION_STATE_HANDSHAKE_SENT: SessionState
SESSION_STATE_ESTABLISHED: SessionState
SESSION_STATE_TERMINATED: SessionState
SESSION_STATE_EXPIRED: SessionState
SEQUENCE_MODE_UNSPECIFIED: SequenceMode
SEQUENCE_MODE_STRICT: SequenceMode
SEQUENCE_MODE_WINDOW: SequenceMode
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_SUBMITTED: TaskState
TASK_STATE_WORKING: TaskState
TASK_STATE_COMPLETED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELED: TaskState
TASK_STATE_REJECTED: TaskState
TASK_STATE_INPUT_REQUIRED: TaskState
SEQUENCE_ERROR_KIND_UNSPECIFIED: SequenceErrorKind
SEQUENCE_ERROR_KIND_GAP: SequenceErrorKind
SEQUENCE_ERROR_KIND_REPLAY: SequenceErrorKind

class HandshakeRequest(_message.Message):
    __slots__ = ("peer_id", "protocol_versions", "capabilities", "resume")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    protocol_versions: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    resume: ResumeSession
    def __init__(self, peer_id: _Optional[str] = ..., protocol_versions: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., resume: _Optional[_Union[ResumeSession, _Mapping]] = ...) -> None: ...

class ResumeSession(_message.Message):
    __slots__ = ("session_id", "session_token", "last_acknowledged")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LAST_ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    session_token: str
    last_acknowledged: int
    def __init__(self, session_id: _Optional[str] = ..., session_token: _Optional[str] = ..., last_acknowledged: _Optional[int] = ...) -> None: ...

class WindowState(_message.Message):
    __slots__ = ("highest_accepted", "accepted")
    HIGHEST_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    highest_accepted: int
    accepted: bytes
    def __init__(self, highest_accepted: _Optional[int] = ..., accepted: _Optional[bytes] = ...) -> None: ...

class HandshakeResponse(_message.Message):
    __slots__ = ("session_id", "protocol_version", "next_sequence", "heartbeat_interval", "idle_timeout", "server_peer_id", "server_capabilities", "expires_at", "session_token", "resumed", "sequence_mode", "replay_window", "window")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SERVER_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_MODE_FIELD_NUMBER: _ClassVar[int]
    REPLAY_WINDOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    protocol_version: str
    next_sequence: int
    heartbeat_interval: _duration_pb2.Duration
    idle_timeout: _duration_pb2.Duration
    server_peer_id: str
    server_capabilities: _containers.RepeatedScalarFieldContainer[str]
    expires_at: _timestamp_pb2.Timestamp
    session_token: str
    resumed: bool
    sequence_mode: SequenceMode
    replay_window: int
    window: WindowState
    def __init__(self, session_id: _Optional[str] = ..., protocol_version: _Optional[str] = ..., next_sequence: _Optional[int] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., server_peer_id: _Optional[str] = ..., server_capabilities: _Optional[_Iterable[str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_token: _Optional[str] = ..., resumed: _Optional[bool] = ..., sequence_mode: _Optional[_Union[SequenceMode, str]] = ..., replay_window: _Optional[int] = ..., window: _Optional[_Union[WindowState, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("expires_at",)
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("payload", "server_received_at", "server_sent_at")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SERVER_RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    SERVER_SENT_AT_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    server_received_at: _timestamp_pb2.Timestamp
    server_sent_at: _timestamp_pb2.Timestamp
    def __init__(self, payload: _Optional[bytes] = ..., server_received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., server_sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("server_peer_id", "server_version", "uptime", "session_stats", "session", "supported_protocol_versions")
    SERVER_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_FIELD_NUMBER: _ClassVar[int]
    SESSION_STATS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_PROTOCOL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    server_peer_id: str
    server_version: str
    uptime: _duration_pb2.Duration
    session_stats: SessionStats
    session: SessionInfo
    supported_protocol_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, server_peer_id: _Optional[str] = ..., server_version: _Optional[str] = ..., uptime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., session_stats: _Optional[_Union[SessionStats, _Mapping]] = ..., session: _Optional[_Union[SessionInfo, _Mapping]] = ..., supported_protocol_versions: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("server_peer_id", "server_version", "supported_protocol_versions", "limits", "task_types")
    SERVER_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_PROTOCOL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPES_FIELD_NUMBER: _ClassVar[int]
    server_peer_id: str
    server_version: str
    supported_protocol_versions: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    task_types: _containers.RepeatedCompositeFieldContainer[TaskType]
    def __init__(self, server_peer_id: _Optional[str] = ..., server_version: _Optional[str] = ..., supported_protocol_versions: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., task_types: _Optional[_Iterable[_Union[TaskType, _Mapping]]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_request_bytes", "max_task_timeout", "default_task_timeout", "max_tasks_per_session", "max_running_tasks", "max_queued_tasks", "progress_interval")
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TASK_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_TASK_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_PER_SESSION_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_TASKS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    max_request_bytes: int
    max_task_timeout: _duration_pb2.Duration
    default_task_timeout: _duration_pb2.Duration
    max_tasks_per_session: int
    max_running_tasks: int
    max_queued_tasks: int
    progress_interval: _duration_pb2.Duration
    def __init__(self, max_request_bytes: _Optional[int] = ..., max_task_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., default_task_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_tasks_per_session: _Optional[int] = ..., max_running_tasks: _Optional[int] = ..., max_queued_tasks: _Optional[int] = ..., progress_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TaskType(_message.Message):
    __slots__ = ("name", "description", "input_schema", "output_schema", "retryable", "max_attempts", "asks_for_input")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ASKS_FOR_INPUT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    input_schema: _struct_pb2.Struct
    output_schema: _struct_pb2.Struct
    retryable: bool
    max_attempts: int
    asks_for_input: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., retryable: _Optional[bool] = ..., max_attempts: _Optional[int] = ..., asks_for_input: _Optional[bool] = ...) -> None: ...

class SessionStats(_message.Message):
    __slots__ = ("handshaking", "established", "terminated", "expired", "created_total", "expired_total", "terminated_total", "sequence_errors_total")
    HANDSHAKING_FIELD_NUMBER: _ClassVar[int]
    ESTABLISHED_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    CREATED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    handshaking: int
    established: int
    terminated: int
    expired: int
    created_total: int
    expired_total: int
    terminated_total: int
    sequence_errors_total: int
    def __init__(self, handshaking: _Optional[int] = ..., established: _Optional[int] = ..., terminated: _Optional[int] = ..., expired: _Optional[int] = ..., created_total: _Optional[int] = ..., expired_total: _Optional[int] = ..., terminated_total: _Optional[int] = ..., sequence_errors_total: _Optional[int] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "peer_id", "state", "protocol_version", "capabilities", "created_at", "last_activity", "expires_at", "expected_sequence", "sequence_num", "sequence_mode", "replay_window", "highest_accepted")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_MODE_FIELD_NUMBER: _ClassVar[int]
    REPLAY_WINDOW_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    peer_id: str
    state: SessionState
    protocol_version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    last_activity: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    expected_sequence: int
    sequence_num: int
    sequence_mode: SequenceMode
    replay_window: int
    highest_accepted: int
    def __init__(self, session_id: _Optional[str] = ..., peer_id: _Optional[str] = ..., state: _Optional[_Union[SessionState, str]] = ..., protocol_version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_activity: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expected_sequence: _Optional[int] = ..., sequence_num: _Optional[int] = ..., sequence_mode: _Optional[_Union[SequenceMode, str]] = ..., replay_window: _Optional[int] = ..., highest_accepted: _Optional[int] = ...) -> None: ...

class TaskError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "task_type", "state", "result", "error", "created_at", "updated_at", "owner_peer_id", "timeout", "attempt", "max_attempts", "progress", "partial_result", "question", "questions_asked")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    OWNER_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    QUESTIONS_ASKED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_type: str
    state: TaskState
    result: _struct_pb2.Struct
    error: TaskError
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    owner_peer_id: str
    timeout: _duration_pb2.Duration
    attempt: int
    max_attempts: int
    progress: TaskProgress
    partial_result: _struct_pb2.Struct
    question: _struct_pb2.Struct
    questions_asked: int
    def __init__(self, task_id: _Optional[str] = ..., task_type: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., owner_peer_id: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., attempt: _Optional[int] = ..., max_attempts: _Optional[int] = ..., progress: _Optional[_Union[TaskProgress, _Mapping]] = ..., partial_result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., question: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., questions_asked: _Optional[int] = ...) -> None: ...

class TaskProgress(_message.Message):
    __slots__ = ("fraction", "message")
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    message: str
    def __init__(self, fraction: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class DelegateTaskRequest(_message.Message):
    __slots__ = ("task_type", "payload", "timeout", "return_immediately")
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    RETURN_IMMEDIATELY_FIELD_NUMBER: _ClassVar[int]
    task_type: str
    payload: _struct_pb2.Struct
    timeout: _duration_pb2.Duration
    return_immediately: bool
    def __init__(self, task_type: _Optional[str] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., return_immediately: _Optional[bool] = ...) -> None: ...

class DelegateTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "state")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    state: TaskState
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class WatchTaskResponse(_message.Message):
    __slots__ = ("task", "sequence_num")
    TASK_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUM_FIELD_NUMBER: _ClassVar[int]
    task: Task
    sequence_num: int
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ..., sequence_num: _Optional[int] = ...) -> None: ...

class ProvideInputRequest(_message.Message):
    __slots__ = ("task_id", "input", "question")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    input: _struct_pb2.Struct
    question: int
    def __init__(self, task_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., question: _Optional[int] = ...) -> None: ...

class ProvideInputResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class TerminateRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class TerminateResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: SessionState
    def __init__(self, state: _Optional[_Union[SessionState, str]] = ...) -> None: ...

class SequenceError(_message.Message):
    __slots__ = ("session_id", "expected_sequence", "received_sequence", "kind", "outside_window", "replay_window")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OUTSIDE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    REPLAY_WINDOW_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    expected_sequence: int
    received_sequence: int
    kind: SequenceErrorKind
    outside_window: bool
    replay_window: int
    def __init__(self, session_id: _Optional[str] = ..., expected_sequence: _Optional[int] = ..., received_sequence: _Optional[int] = ..., kind: _Optional[_Union[SequenceErrorKind, str]] = ..., outside_window: _Optional[bool] = ..., replay_window: _Optional[int] = ...) -> None: ...
