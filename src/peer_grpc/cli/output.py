"""How client commands print what the server answered: JSON for scripts, text for people."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.core.session import SessionState
from peer_grpc.core.task import TaskState

__all__ = ["OUTPUT_FORMATS", "Output", "as_json"]

#: The values of ``--output``.
OUTPUT_FORMATS = ("json", "text")


def as_json(message: Message) -> dict[str, Any]:
    """A message as JSON, as protobuf's JSON mapping gives it, with two changes for
    scripts: whole numbers print as integers, and a page of no tasks as ``"tasks": []``.

    A google.protobuf.Struct holds every number as a double, so a payload's ``1``
    would otherwise come back as ``1.0`` (and ``1.0`` comes back as ``1``: the same
    JSON number).
    """
    as_dict: dict[str, Any] = _whole_numbers(json_format.MessageToDict(message))
    if isinstance(message, peer_pb2.ListTasksResponse):
        as_dict.setdefault("tasks", [])
    return as_dict


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    return value


class Output:
    """Prints responses in one format: ``json`` (indented; one line each for a stream)
    or ``text``."""

    def __init__(self, output_format: str) -> None:
        self.text = output_format == "text"

    def response(self, message: Message) -> None:
        """Print one response."""
        if not self.text:
            print(json.dumps(as_json(message), indent=2, sort_keys=True))
            return
        render = _TEXT.get(type(message).__name__)
        print(render(message) if render else json_format.MessageToJson(message))

    def change(self, update: peer_pb2.WatchTaskResponse) -> None:
        """Print one change of a watched task, on one line."""
        if self.text:
            print(f"#{update.sequence_num}  {_task_line(update.task)}", flush=True)
        else:
            print(json.dumps(as_json(update), sort_keys=True), flush=True)

    def note(self, words: str, **fields: Any) -> None:
        """Print what a command did that no response describes (``session end``)."""
        print(words if self.text else json.dumps(fields, indent=2, sort_keys=True))


def _time(stamp: timestamp_pb2.Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=UTC).isoformat(timespec="milliseconds")


def _task_line(task: peer_pb2.Task) -> str:
    line = f"{task.task_id}  {task.task_type}  {TaskState(task.state).name}"
    if task.HasField("question"):
        line += f"  asks #{task.questions_asked}: " + json.dumps(as_json(task.question))
    elif task.HasField("progress") and not TaskState(task.state).is_final:
        line += "  " + _progress(task.progress)
    if task.HasField("partial_result") and not task.HasField("result"):
        line += "  so far: " + json.dumps(as_json(task.partial_result))
    if task.HasField("result"):
        line += "  " + json.dumps(as_json(task.result))
    if task.HasField("error"):
        line += f"  {task.error.code}: {task.error.message}"
    return line


def _progress(progress: peer_pb2.TaskProgress) -> str:
    share = f"{progress.fraction:.0%}" if progress.HasField("fraction") else ""
    return " ".join(part for part in (share, progress.message) if part)


def _list(response: peer_pb2.ListTasksResponse) -> str:
    rows = [("TASK ID", "TYPE", "STATE", "UPDATED")]
    for task in response.tasks:
        rows.append(
            (task.task_id, task.task_type, TaskState(task.state).name, _time(task.updated_at))
        )
    if len(rows) == 1:
        return "no tasks"
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    # The last column needs no padding; the three before it are padded to line up.
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[3]])
        for row in rows
    ]
    if response.next_page_token:
        lines.append(f"more: --page-token {response.next_page_token}")
    return "\n".join(line.rstrip() for line in lines)


def _ping(response: peer_pb2.PingResponse) -> str:
    return f"pong: the server's clock read {_time(response.server_sent_at)}"


def _status(response: peer_pb2.StatusResponse) -> str:
    stats = response.session_stats
    lines = [
        f"server    {response.server_peer_id} (peer-grpc {response.server_version}), "
        f"up {response.uptime.ToTimedelta()}",
        f"sessions  {stats.established} established, {stats.handshaking} handshaking; "
        f"{stats.created_total} created, {stats.expired_total} expired, "
        f"{stats.terminated_total} terminated in all",
    ]
    if response.HasField("session"):
        session = response.session
        state = SessionState(session.state).name
        lines.append(f"session   {session.session_id} ({state}) of {session.peer_id}")
    return "\n".join(lines)


def _describe(response: peer_pb2.DescribeResponse) -> str:
    limits = response.limits
    longest = limits.max_task_timeout.ToTimedelta()
    default = limits.default_task_timeout.ToTimedelta()
    lines = [
        f"server    {response.server_peer_id} (peer-grpc {response.server_version}), "
        f"protocol {', '.join(response.supported_protocol_versions)}",
        f"limits    requests up to {limits.max_request_bytes} bytes; tasks up to {longest} "
        f"(default {default}), {limits.max_tasks_per_session} per session, "
        f"{limits.max_running_tasks} running, {limits.max_queued_tasks} queued",
    ]
    for task_type in response.task_types:
        retry = f", up to {task_type.max_attempts} attempts" if task_type.retryable else ""
        retry += ", asks for input" if task_type.asks_for_input else ""
        described = f": {task_type.description}" if task_type.description else ""
        fields = ", ".join(sorted(as_json(task_type.input_schema).get("properties", {}))) or "any"
        lines.append(f"task      {task_type.name}{described} (payload: {fields}{retry})")
    return "\n".join(lines)


def _heartbeat(response: peer_pb2.HeartbeatResponse) -> str:
    return f"session alive until {_time(response.expires_at)} unless used again"


_TEXT: dict[str, Any] = {
    "Task": _task_line,
    "ListTasksResponse": _list,
    "PingResponse": _ping,
    "StatusResponse": _status,
    "DescribeResponse": _describe,
    "HeartbeatResponse": _heartbeat,
}
