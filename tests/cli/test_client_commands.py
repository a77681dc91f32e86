"""What a person typing the client commands sees: errors that say what failed, waiting
by default, text or JSON output, and sessions kept across commands."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.client import SessionTicket
from tests.certs import Pki
from tests.cli.test_cli import ServeProcess, run_cli, start_serve
from tests.conftest import session_metadata
from tests.ports import free_port
from tests.rpc_details import details_of


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ServeProcess, Pki]]:
    """A server that requires client certificates (mutual TLS)."""
    pki = Pki(tmp_path)
    cert = pki.issue("127.0.0.1")
    served = start_serve(
        *("--host", "127.0.0.1", "--port", "0", "--tls-cert", cert.cert, "--tls-key", cert.key),
        *("--tls-client-ca", pki.ca_file),
    )
    try:
        yield served, pki
    finally:
        served.stop()


# --- reaching the server ---------------------------------------------------------------------


def test_an_address_nobody_listens_on_fails_within_the_connect_timeout(capsys):
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    code, out, err = run_cli(capsys, "ping", address, "--connect-timeout", "1")
    assert time.monotonic() - started < 5  # not the 30 s of resends it used to take
    assert (code, out) == (2, "")
    assert err == f"peer-grpc: error: cannot reach {address}: connection refused\n"


def test_plaintext_to_a_tls_server_says_so(tls_server, capsys):
    served, _ = tls_server
    code, _, err = run_cli(capsys, "ping", served.address)
    assert code == 2
    assert f"cannot reach {served.address}: the server closed the connection during set-up" in err
    assert "TLS" in err


def test_mutual_tls_without_a_client_certificate_says_one_is_required(tls_server, capsys):
    served, pki = tls_server
    code, _, err = run_cli(capsys, "ping", served.address, "--tls-ca", pki.ca_file)
    assert code == 2
    assert "client certificate" in err
    assert "--tls-cert" in err


def test_tls_to_a_plaintext_server_says_the_handshake_failed(serve_process, capsys, tmp_path):
    code, _, err = run_cli(capsys, "ping", serve_process.address, "--tls-ca", Pki(tmp_path).ca_file)
    assert code == 2
    assert "TLS handshake failed: the server does not speak TLS" in err


def test_timeout_bounds_the_whole_command_and_names_no_status_twice(serve_process, capsys):
    started = time.monotonic()
    code, out, err = run_cli(
        capsys,
        *("delegate", serve_process.address, "sleep", "--payload", '{"seconds": 30}'),
        *("--timeout", "1"),
    )
    assert (code, out) == (4, "")
    assert err == "peer-grpc: error: the command took longer than --timeout 1 s\n"
    assert time.monotonic() - started < 3  # the goodbye does not add its own time


def test_an_option_out_of_range_says_what_it_must_be(capsys):
    with pytest.raises(SystemExit) as exited:
        run_cli(capsys, "delegate", "127.0.0.1:1", "echo", "--task-timeout", "0")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --task-timeout: must be above 0, got 0" in err
    assert "_positive" not in err


# --- delegate ----------------------------------------------------------------------------------


def test_delegate_waits_for_the_end_by_default(serve_process, capsys):
    code, out, _ = run_cli(
        capsys, "delegate", serve_process.address, "sleep", "--payload", '{"seconds": 0.3}'
    )
    assert code == 0
    task = json.loads(out)
    assert task["state"] == "TASK_STATE_COMPLETED"
    assert task["result"] == {"slept": 0.3}


def test_json_output_keeps_whole_numbers_whole(serve_process, capsys):
    code, out, _ = run_cli(
        capsys, "delegate", serve_process.address, "echo", "--payload", '{"a": 1, "b": 2.5}'
    )
    assert code == 0
    task = json.loads(out)
    assert '"a": 1,' in out
    assert task["result"] == {"a": 1, "b": 2.5}
    assert isinstance(task["result"]["a"], int)


def test_delegate_exits_3_when_the_task_fails(serve_process, capsys):
    code, out, _ = run_cli(
        capsys,
        *("delegate", serve_process.address, "sleep", "--payload", '{"seconds": 5}'),
        *("--task-timeout", "0.2"),
    )
    assert code == 3
    assert json.loads(out)["state"] == "TASK_STATE_FAILED"


def test_delegate_watch_as_text_prints_a_line_per_change(serve_process, capsys):
    code, out, _ = run_cli(
        capsys,
        *("delegate", serve_process.address, "sleep", "--payload", '{"seconds": 0.3}'),
        *("--watch", "--output", "text"),
    )
    assert code == 0
    lines = out.splitlines()
    assert "  sleep  " in lines[0]
    assert lines[-1].endswith('sleep  COMPLETED  {"slept": 0.3}')
    assert all(line.startswith("#") for line in lines)


# --- text output ---------------------------------------------------------------------------------


def test_task_list_with_no_tasks(serve_process, capsys):
    code, out, _ = run_cli(capsys, "task", "list", serve_process.address)
    assert code == 0
    assert json.loads(out) == {"tasks": []}
    code, out, _ = run_cli(capsys, "task", "list", serve_process.address, "--output", "text")
    assert (code, out) == (0, "no tasks\n")


def test_task_list_as_text_is_a_table(serve_process, capsys, tmp_path):
    keep = ("--session-file", str(tmp_path / "session"))
    run_cli(capsys, "delegate", serve_process.address, "echo", *keep)
    code, out, _ = run_cli(capsys, "task", "list", serve_process.address, "--output", "text", *keep)
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["TASK", "ID", "TYPE", "STATE", "UPDATED"]
    assert row.split()[1:3] == ["echo", "COMPLETED"]


def test_status_as_text_names_the_server_and_the_session(serve_process, capsys):
    code, out, _ = run_cli(
        capsys, "status", serve_process.address, "--output", "text", "--peer-id", "reader"
    )
    assert code == 0
    server, sessions, session = out.splitlines()
    assert server.startswith("server    ")
    assert "established" in sessions
    assert session.endswith("(ESTABLISHED) of reader")


def test_the_command_line_describes_a_server(serve_process, capsys):
    code, out, _ = run_cli(capsys, "describe", serve_process.address)
    assert code == 0
    described = json.loads(out)
    assert {task_type["name"] for task_type in described["taskTypes"]} >= {"echo", "sleep"}

    code, out, _ = run_cli(capsys, "describe", serve_process.address, "--output", "text")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("server    ")
    assert lines[1].startswith("limits    requests up to ")
    assert any(line.startswith("task      sleep: Waits") for line in lines)


def test_ping_as_text(serve_process, capsys):
    code, out, _ = run_cli(capsys, "ping", serve_process.address, "--output", "text")
    assert code == 0
    assert out.startswith("pong: the server's clock read 20")


# --- sessions across commands --------------------------------------------------------------------


def test_a_session_file_refuses_another_peer_id(serve_process, capsys, tmp_path):
    keep = ("--session-file", str(tmp_path / "session"))
    assert run_cli(capsys, "ping", serve_process.address, "--peer-id", "alice", *keep)[0] == 0
    code, out, err = run_cli(capsys, "ping", serve_process.address, "--peer-id", "bob", *keep)
    assert (code, out) == (2, "")
    assert "holds a session of peer 'alice', not 'bob'" in err
    assert json.loads((tmp_path / "session").read_text())["peer_id"] == "alice"


def test_session_heartbeat_and_end(serve_process, capsys, tmp_path):
    session_file = tmp_path / "session"
    keep = ("--session-file", str(session_file), "--peer-id", "walker")
    code, out, _ = run_cli(
        capsys,
        *("delegate", serve_process.address, "sleep", "--payload", '{"seconds": 30}'),
        *("--no-wait", *keep),
    )
    assert code == 0
    session_id = json.loads(session_file.read_text())["session_id"]

    code, out, _ = run_cli(capsys, "session", "heartbeat", serve_process.address, *keep)
    assert code == 0
    assert "expiresAt" in json.loads(out)
    assert json.loads(session_file.read_text())["session_id"] == session_id  # the same one

    code, out, _ = run_cli(capsys, "session", "end", serve_process.address, *keep)
    assert code == 0
    assert json.loads(out) == {"ended": True, "session_id": session_id}
    assert not session_file.exists()
    # Asked of the server directly, before any new handshake of "walker" could end it.
    assert reason_of_a_call_on(serve_process.address, session_id) == "SESSION_TERMINATED"


def test_session_heartbeat_refuses_a_saved_session_that_has_ended(serve_process, capsys, tmp_path):
    session_file = tmp_path / "session"
    keep = ("--session-file", str(session_file), "--peer-id", "walker")
    assert run_cli(capsys, "ping", serve_process.address, *keep)[0] == 0
    saved = session_file.read_text()
    # A new session of the same peer replaces, and so ends, the saved one.
    assert run_cli(capsys, "ping", serve_process.address, "--peer-id", "walker")[0] == 0

    code, out, err = run_cli(capsys, "session", "heartbeat", serve_process.address, *keep)
    assert (code, out) == (1, "")
    assert f"SESSION_ENDED: the session saved in {session_file} has ended" in err
    assert session_file.read_text() == saved  # not replaced by a new session

    code, out, _ = run_cli(capsys, "session", "end", serve_process.address, *keep)
    assert code == 0
    assert json.loads(out) == {"ended": True}
    assert not session_file.exists()


def reason_of_a_call_on(address: str, session_id: str) -> str | None:
    """The ErrorInfo reason a Ping on ``session_id`` gets (None if it succeeds)."""

    async def ping() -> str | None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = peer_pb2_grpc.PeerServiceStub(channel)
            try:
                await stub.Ping(peer_pb2.PingRequest(), metadata=session_metadata(session_id, 99))
            except grpc.aio.AioRpcError as error:
                return details_of(error).reason
        return None

    return asyncio.run(ping())


def test_session_commands_need_a_session_file(serve_process, capsys):
    code, _, err = run_cli(capsys, "session", "end", serve_process.address)
    assert code == 2
    assert "needs --session-file" in err


def test_a_session_ticket_never_shows_its_token():
    ticket = SessionTicket("session-1", "very-secret-token")
    assert "very-secret-token" not in repr(ticket)
    assert "very-secret-token" not in str(ticket)


# --- tasks that report and ask -------------------------------------------------------------------

ASKING_TASKS = """
import asyncio

from peer_grpc import current_task, default_registry

registry = default_registry()


@registry.task("paint", asks_for_input=True, description="Asks for a colour.")
async def paint(payload):
    current_task().progress(0.5, "primed")
    await asyncio.sleep(0.3)
    answer = await current_task().ask({"question": "which colour?"})
    current_task().partial({"coats": 1})
    await asyncio.sleep(0.3)
    return {"painted": answer["colour"]}


@registry.task("prime")
async def prime(payload):
    current_task().progress(0.5, "primed")
    await asyncio.sleep(0.4)
    current_task().partial({"coats": 1})
    await asyncio.sleep(0.4)
    return {"coats": 2}
"""


@pytest.fixture
def asking_server(tmp_path: Path) -> Iterator[ServeProcess]:
    (tmp_path / "asking_tasks.py").write_text(ASKING_TASKS)
    served = start_serve(
        *("--host", "127.0.0.1", "--port", "0", "--tasks", "asking_tasks:registry"), cwd=tmp_path
    )
    try:
        yield served
    finally:
        served.stop()


def test_a_question_is_shown_and_answered_from_the_command_line(asking_server, capsys, tmp_path):
    address = asking_server.address
    keep = ("--session-file", str(tmp_path / "session"))
    code, out, _ = run_cli(capsys, "delegate", address, "paint", "--no-wait", *keep)
    assert code == 0
    task_id = json.loads(out)["taskId"]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code, out, _ = run_cli(capsys, "task", "get", address, task_id, "--output", "text", *keep)
        if "INPUT_REQUIRED" in out:
            break
        time.sleep(0.1)
    assert out.strip() == (
        f'{task_id}  paint  INPUT_REQUIRED  asks #1: {{"question": "which colour?"}}'
    )

    code, out, _ = run_cli(
        capsys, "task", "answer", address, task_id, "--input", '{"colour": "red"}', *keep
    )
    assert code == 0
    assert json.loads(out)["state"] == "TASK_STATE_WORKING"
    code, out, err = run_cli(capsys, "task", "answer", address, task_id, "--input", "[1]", *keep)
    assert (code, err) == (2, "peer-grpc: error: --input must be a JSON object\n")


def test_delegate_watch_shows_progress_and_partial_results(asking_server, capsys):
    code, out, _ = run_cli(
        capsys, "delegate", asking_server.address, "prime", "--watch", "--output", "text"
    )

    assert code == 0
    lines = out.splitlines()
    assert any(line.endswith("prime  WORKING  50% primed") for line in lines), out
    assert any(line.endswith('WORKING  50% primed  so far: {"coats": 1}') for line in lines), out
    assert lines[-1].endswith('prime  COMPLETED  {"coats": 2}')
