"""What a person typing the client commands sees: errors that say what failed, waiting
by default, text or JSON output, and sessions kept across commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer_grpc.client import SessionTicket
from tests.certs import Pki
from tests.cli.test_cli import ServeProcess, run_cli, start_serve
from tests.ports import free_port


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


def test_an_address_nobody_listens_on_fails_at_once_with_the_reason(capsys):
    address = f"127.0.0.1:{free_port()}"
    code, out, err = run_cli(capsys, "ping", address, "--connect-timeout", "1")
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
    code, out, err = run_cli(
        capsys,
        *("delegate", serve_process.address, "sleep", "--payload", '{"seconds": 30}'),
        *("--timeout", "1"),
    )
    assert (code, out) == (1, "")
    assert err == "peer-grpc: error: the command took longer than --timeout 1 s\n"


def test_an_option_out_of_range_says_what_it_must_be(capsys):
    with pytest.raises(SystemExit) as exited:
        run_cli(capsys, "delegate", "127.0.0.1:1", "echo", "--task-timeout", "0")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --task-timeout: must be above 0, got 0" in err
    assert "_positive" not in err


# --- delegate ----------------------------------------------------------------------------------


def test_delegate_waits_for_the_end_by_default_and_keeps_whole_numbers(serve_process, capsys):
    code, out, _ = run_cli(
        capsys, "delegate", serve_process.address, "echo", "--payload", '{"a": 1, "b": 2.5}'
    )
    assert code == 0
    task = json.loads(out)
    assert task["state"] == "TASK_STATE_COMPLETED"
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
    assert json.loads(out) == {"nextPageToken": "", "tasks": []}
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
    task_id = json.loads(out)["taskId"]
    session_id = json.loads(session_file.read_text())["session_id"]

    code, out, _ = run_cli(capsys, "session", "heartbeat", serve_process.address, *keep)
    assert code == 0
    assert "expiresAt" in json.loads(out)

    code, out, _ = run_cli(capsys, "session", "end", serve_process.address, *keep)
    assert code == 0
    assert json.loads(out) == {"ended": True, "session_id": session_id}
    assert not session_file.exists()

    # The session's unfinished task ended with it.
    code, out, _ = run_cli(
        capsys, "task", "get", serve_process.address, task_id, "--peer-id", "walker"
    )
    assert code == 0
    assert json.loads(out)["state"] == "TASK_STATE_CANCELED"


def test_session_commands_need_a_session_file(serve_process, capsys):
    code, _, err = run_cli(capsys, "session", "end", serve_process.address)
    assert code == 2
    assert "needs --session-file" in err


def test_a_session_ticket_never_shows_its_token():
    ticket = SessionTicket("session-1", "very-secret-token")
    assert "very-secret-token" not in repr(ticket)
    assert "very-secret-token" not in str(ticket)
