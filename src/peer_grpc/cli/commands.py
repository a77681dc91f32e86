"""The client commands: ping, status, describe, delegate, task get|cancel|answer|list,
session heartbeat|end.

Each opens a session (or resumes the one in ``--session-file``), makes its calls and
prints the answers. ``--timeout`` bounds the whole command; ``--connect-timeout``
bounds reaching the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from peer_grpc._proto.peer.v1 import peer_pb2
from peer_grpc.cli.options import env_default, typed
from peer_grpc.cli.output import OUTPUT_FORMATS, Output
from peer_grpc.cli.session_file import SessionFile
from peer_grpc.client import PeerClient, ServerUnreachable
from peer_grpc.core.errors import PeerError
from peer_grpc.core.settings import ENV_PREFIX, parse_positive
from peer_grpc.core.task import TaskState
from peer_grpc.wire.tls import channel_credentials

__all__ = [
    "EXIT_REFUSED",
    "EXIT_TASK_NOT_COMPLETED",
    "EXIT_TIMED_OUT",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "add_client_commands",
    "run_client",
]

#: Exit status when the server refused a call (the reason is printed).
EXIT_REFUSED = 1
#: Exit status of a wrong command line, and of a server that cannot be reached.
EXIT_USAGE = 2
EXIT_UNREACHABLE = EXIT_USAGE
#: Exit status of ``delegate`` (without ``--no-wait``) when the task ended other than COMPLETED.
EXIT_TASK_NOT_COMPLETED = 3
#: Exit status of a command that did not finish within ``--timeout``.
EXIT_TIMED_OUT = 4

#: Seconds a command may take when it waits for nothing longer than a call.
DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds saying goodbye (ending the session) may take, within the command's bound.
_CLOSE_TIMEOUT = 2.0

_COMPLETED = peer_pb2.TASK_STATE_COMPLETED


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the commands that call a server."""
    common = _common_options()
    commands.add_parser("ping", parents=[common], help="ping a server")
    commands.add_parser("status", parents=[common], help="print a server's status")
    commands.add_parser(
        "describe",
        parents=[common],
        help="print what a server is and can do: limits, and task types with their schemas",
    )
    _add_delegate(commands, common)
    task = commands.add_parser("task", help="look at, answer or cancel your tasks on a server")
    task_commands = task.add_subparsers(dest="task_command", required=True, metavar="COMMAND")
    for name, text in (("get", "print a task"), ("cancel", "cancel a task that is running")):
        command = task_commands.add_parser(name, parents=[common], help=text)
        command.add_argument("task_id", metavar="TASK_ID")
    answer = task_commands.add_parser(
        "answer",
        parents=[common],
        help="answer the question of a task that waits for input (INPUT_REQUIRED)",
    )
    answer.add_argument("task_id", metavar="TASK_ID")
    answer.add_argument("--input", required=True, help="the answer, as a JSON object")
    answer.add_argument(
        "--question",
        type=int,
        default=0,
        help="answer only this question (the task's questionsAsked); default: whichever waits",
    )
    listing = task_commands.add_parser(
        "list", parents=[common], help="print a page of your tasks, oldest first"
    )
    listing.add_argument(
        "--state",
        type=str.upper,
        choices=[state.name for state in TaskState],
        help="only tasks in this state",
    )
    listing.add_argument("--page-size", type=int, default=0, help="tasks per page (default: 50)")
    listing.add_argument("--page-token", default="", help="the nextPageToken of the last page")
    session = commands.add_parser(
        "session", help="keep alive or end the session saved in --session-file"
    )
    session_commands = session.add_subparsers(
        dest="session_command", required=True, metavar="COMMAND"
    )
    session_commands.add_parser(
        "heartbeat",
        parents=[common],
        help="keep the saved session alive for another idle timeout (its tasks with it)",
    )
    session_commands.add_parser(
        "end", parents=[common], help="end the saved session (canceling its tasks)"
    )


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("address", help="the server's host:port")
    common.add_argument(
        "--peer-id",
        help="the peer id to handshake as (default: the one in --session-file, else cli-HOST-PID)",
    )
    common.add_argument(
        "--timeout",
        type=typed(parse_positive),
        help=f"seconds the whole command may take (default: {DEFAULT_TIMEOUT:g}; delegate, "
        "which waits for its task, has no bound but the task's own timeout)",
    )
    common.add_argument(
        "--connect-timeout",
        type=typed(parse_positive),
        default=DEFAULT_CONNECT_TIMEOUT,
        help="seconds to reach the server (default: %(default)s)",
    )
    common.add_argument(
        "--output",
        choices=OUTPUT_FORMATS,
        default="json",
        help="json for scripts, text for people (default: %(default)s)",
    )
    common.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="speak TLS, trusting this CA for the server's certificate (with --tls-cert "
        "or --tls-key alone: the system's CAs)",
    )
    common.add_argument("--tls-cert", metavar="PEM", help="client certificate, for mutual TLS")
    common.add_argument("--tls-key", metavar="PEM", help="the client certificate's key")
    common.add_argument(
        "--session-file",
        metavar="FILE",
        default=env_default(f"{ENV_PREFIX}SESSION_FILE", str, None),
        help="keep the session across commands: resume the one saved in FILE (or open one "
        "and save it there), and leave it open on exit. FILE holds a secret; it is "
        "written readable by you alone (default: a new session, terminated on exit)",
    )
    return common


def _add_delegate(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    delegate = commands.add_parser(
        "delegate",
        parents=[common],
        help="hand a task to a server and wait for its end",
        description="Hand a task to a server, wait for its end and print it. Exit status: "
        f"0 the task COMPLETED, {EXIT_REFUSED} the server refused the call, {EXIT_USAGE} a "
        f"wrong command line or an unreachable server, {EXIT_TASK_NOT_COMPLETED} the task "
        f"ended otherwise, {EXIT_TIMED_OUT} --timeout passed first.",
    )
    delegate.add_argument("task_type", metavar="TYPE", help="a registered task type, e.g. echo")
    delegate.add_argument("--payload", default="{}", help="the task's input as a JSON object")
    delegate.add_argument(
        "--task-timeout",
        type=typed(parse_positive),
        help="seconds the task may run (default: the server's)",
    )
    until = delegate.add_mutually_exclusive_group()
    until.add_argument("--wait", action="store_true", help=argparse.SUPPRESS)  # the default now
    until.add_argument(
        "--no-wait",
        action="store_true",
        help="print the task as soon as it exists; needs --session-file, since a task is "
        "canceled when its session ends",
    )
    until.add_argument(
        "--watch", action="store_true", help="print every change of the task, one per line"
    )


def run_client(args: argparse.Namespace) -> int:
    """Run a client command; returns the exit status."""
    output = Output(args.output)
    bound = _command_bound(args)
    try:
        return asyncio.run(_bounded(_COMMANDS[args.command], args, output, bound))
    except ValueError as error:
        return _fail(str(error), EXIT_USAGE)
    except ServerUnreachable as error:
        return _fail(error.message, EXIT_UNREACHABLE)
    except TimeoutError:
        return _fail(f"the command took longer than --timeout {bound:g} s", EXIT_TIMED_OUT)
    except (PeerError, SavedSessionEnded) as error:
        return _fail(_describe(error), EXIT_REFUSED)


def _fail(message: str, status: int) -> int:
    print(f"peer-grpc: error: {message}", file=sys.stderr)
    return status


class SavedSessionEnded(Exception):
    """The session saved in ``--session-file`` has ended: it cannot be kept alive."""

    reason = "SESSION_ENDED"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _describe(error: PeerError | SavedSessionEnded) -> str:
    """``REASON: message``, the reason once even where the message starts with it."""
    if error.message.startswith(f"{error.reason}:"):
        return error.message
    return f"{error.reason}: {error.message}"


Command = Callable[[argparse.Namespace, Output], Coroutine[Any, Any, int]]


def _command_bound(args: argparse.Namespace) -> float | None:
    """Seconds the whole command may take: ``--timeout``, else the default for commands
    that wait for nothing longer than a call (none for a delegate that waits)."""
    if args.timeout is not None:
        return float(args.timeout)
    waits = args.command == "delegate" and not args.no_wait
    return None if waits else DEFAULT_TIMEOUT


async def _bounded(
    command: Command, args: argparse.Namespace, output: Output, bound: float | None
) -> int:
    """Run ``command``, its goodbye included, within ``bound`` seconds."""
    async with asyncio.timeout(bound):
        return await command(args, output)


@contextlib.asynccontextmanager
async def _connected(
    args: argparse.Namespace, *, saved_only: bool = False
) -> AsyncIterator[PeerClient]:
    """A client on a new session (terminated on exit) or on the one in ``--session-file``.

    With ``saved_only``, only the saved session will do: if it has ended, the command
    fails with :class:`SavedSessionEnded` instead of going on with a new one.
    """
    session_file = SessionFile(Path(args.session_file)) if args.session_file else None
    saved = session_file.load() if session_file else None
    if saved_only and saved is None:
        raise ValueError(f"--session-file {args.session_file}: no session is saved there")
    if saved and args.peer_id and args.peer_id != saved[0]:
        raise ValueError(
            f"--session-file {args.session_file} holds a session of peer {saved[0]!r}, "
            f"not {args.peer_id!r}: leave out --peer-id, or use another file"
        )
    peer_id = args.peer_id or (saved[0] if saved else _default_peer_id())
    client = PeerClient(
        args.address,
        peer_id,
        timeout=_command_bound(args) or DEFAULT_TIMEOUT,
        connect_timeout=args.connect_timeout,
        ticket=saved[1] if saved else None,
        credentials=_client_credentials(args),
    )
    keep_session = False
    try:
        await client.connect()
        if saved_only and saved is not None and client.session_id != saved[1].session_id:
            raise SavedSessionEnded(
                f"the session saved in {args.session_file} has ended (it expired or was "
                "terminated; its unfinished tasks were canceled)"
            )
        if session_file is not None and client.ticket is not None:
            session_file.save(peer_id, client.ticket)  # a session nobody can resume is ended
            keep_session = True
        yield client
    finally:
        await _goodbye(client, terminate=not keep_session)


async def _goodbye(client: PeerClient, *, terminate: bool) -> None:
    """End the session (unless kept) and close the channel, briefly: a command whose time
    is up, or that was interrupted, leaves at once and lets the session idle out."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        await client.close(terminate=False)
        return
    try:
        await asyncio.wait_for(client.close(terminate=terminate), _CLOSE_TIMEOUT)
    except TimeoutError:
        await client.close(terminate=False)


def _client_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from --tls-ca/--tls-cert/--tls-key, or None for plaintext."""
    if args.tls_ca is None and args.tls_cert is None and args.tls_key is None:
        return None
    return channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)


def _default_peer_id() -> str:
    return f"cli-{socket.gethostname()}-{os.getpid()}"[:128]


def _json_object(text: str, option: str = "--payload") -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{option} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object")
    return value


async def _delegate(args: argparse.Namespace, output: Output) -> int:
    payload = _json_object(args.payload)
    if args.no_wait and not args.session_file:
        raise ValueError(
            "--no-wait needs --session-file FILE: the task is canceled when this command's "
            "session ends, which without a session file is as the command exits"
        )
    async with _connected(args) as client:
        task = await client.delegate_task(
            args.task_type,
            payload,
            wait=not (args.no_wait or args.watch),
            timeout=args.task_timeout,
        )
        if args.watch:
            async for update in client.watch_task(task.task_id):
                output.change(update)
                task = update.task
        else:
            output.response(task)
    if args.no_wait:
        return 0
    return 0 if task.state == _COMPLETED else EXIT_TASK_NOT_COMPLETED


async def _task(args: argparse.Namespace, output: Output) -> int:
    async with _connected(args) as client:
        if args.task_command == "get":
            output.response(await client.get_task(args.task_id))
        elif args.task_command == "cancel":
            output.response(await client.cancel_task(args.task_id))
        elif args.task_command == "answer":
            answer = _json_object(args.input, "--input")
            output.response(
                await client.provide_input(args.task_id, answer, question=args.question)
            )
        else:
            state = peer_pb2.TaskState.Value(f"TASK_STATE_{args.state}") if args.state else 0
            output.response(
                await client.list_tasks(
                    page_size=args.page_size, page_token=args.page_token, state=state
                )
            )
    return 0


async def _ask_server(args: argparse.Namespace, output: Output) -> int:
    """ping, status and describe: one call, its response printed."""
    async with _connected(args) as client:
        calls: dict[str, Callable[[], Awaitable[Message]]] = {
            "ping": client.ping,
            "status": client.status,
            "describe": client.describe,
        }
        output.response(await calls[args.command]())
    return 0


async def _session(args: argparse.Namespace, output: Output) -> int:
    if not args.session_file:
        raise ValueError(f"session {args.session_command} needs --session-file FILE")
    session_file = SessionFile(Path(args.session_file))
    try:
        async with _connected(args, saved_only=True) as client:
            session_id = client.session_id
            if args.session_command == "heartbeat":
                output.response(await client.heartbeat())
                return 0
            await client.terminate("ended from the command line")
    except SavedSessionEnded:
        if args.session_command == "heartbeat":
            raise
        session_file.forget()  # ending a session that already ended: nothing left to do
        output.note("the saved session had already ended", ended=True)
        return 0
    session_file.forget()
    output.note(f"session {session_id} ended", session_id=session_id, ended=True)
    return 0


_COMMANDS: dict[str, Command] = {
    "ping": _ask_server,
    "status": _ask_server,
    "describe": _ask_server,
    "delegate": _delegate,
    "task": _task,
    "session": _session,
}
