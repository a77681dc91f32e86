"""The ``peer-grpc`` command: a real ``serve`` process, and client commands printing JSON."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import struct_pb2

from peer_grpc import PeerClient, __version__
from peer_grpc._proto.peer.v1 import peer_pb2, peer_pb2_grpc
from peer_grpc.cli import main
from tests.certs import Pki
from tests.conftest import open_session, session_metadata, shared_redis

SERVING = re.compile(r"serving on (\S+)")


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    address: str
    log: list[str]

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signum)
        return self.wait()

    def wait(self) -> tuple[int, str]:
        """Wait for the process to exit; its exit status and everything it logged."""
        _, rest = self.process.communicate(timeout=15)
        return self.process.returncode, "".join(self.log) + rest


def start_serve(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> ServeProcess:
    """Run ``python -m peer_grpc serve`` and wait until it says where it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "peer_grpc", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    assert process.stderr is not None
    log: list[str] = []
    for line in process.stderr:
        log.append(line)
        if match := SERVING.search(line):
            return ServeProcess(process, match.group(1), log)
    process.wait(timeout=15)
    raise AssertionError(f"serve exited {process.returncode} without serving:\n{''.join(log)}")


def run_serve(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m peer_grpc serve`` to completion (for settings it must refuse)."""
    return subprocess.run(
        [sys.executable, "-m", "peer_grpc", "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_ping_prints_the_response_as_json(serve_process: ServeProcess, capsys):
    code, out, _ = run_cli(capsys, "ping", serve_process.address)
    assert code == 0
    response = json.loads(out)
    assert "serverReceivedAt" in response
    assert "serverSentAt" in response


def test_status_prints_the_server_and_its_own_session(serve_process: ServeProcess, capsys):
    code, out, _ = run_cli(capsys, "status", serve_process.address, "--peer-id", "cli-test")
    assert code == 0
    status = json.loads(out)
    assert status["serverVersion"] == __version__
    assert status["session"]["peerId"] == "cli-test"
    assert status["session"]["state"] == "SESSION_STATE_ESTABLISHED"


def test_delegate_wait_prints_the_finished_task(serve_process: ServeProcess, capsys):
    code, out, _ = run_cli(
        capsys, "delegate", serve_process.address, "echo", "--payload", '{"n": 3}', "--wait"
    )
    assert code == 0
    task = json.loads(out)
    assert task["state"] == "TASK_STATE_COMPLETED"
    assert task["result"] == {"n": 3}


def test_delegate_of_an_unknown_type_fails_with_the_reason(serve_process: ServeProcess, capsys):
    code, out, err = run_cli(capsys, "delegate", serve_process.address, "nope", "--wait")
    assert code == 1
    assert out == ""
    assert "INVALID_ARGUMENT" in err
    assert "unknown task type 'nope'" in err


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]"])
def test_delegate_refuses_a_payload_that_is_not_a_json_object(
    serve_process: ServeProcess, capsys, payload: str
):
    code, _, err = run_cli(capsys, "delegate", serve_process.address, "echo", "--payload", payload)
    assert code == 2
    assert "--payload" in err


def test_serve_refuses_a_port_that_is_taken(serve_process: ServeProcess):
    port = serve_process.address.rsplit(":", 1)[1]
    second = run_serve("--host", "127.0.0.1", "--port", port)
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in second.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_gracefully_on_a_signal(serve_process: ServeProcess, signum: int):
    code, log = serve_process.stop(signum)
    assert code == 0
    assert "shutting down" in log
    assert "peer-grpc stopped" in log
    assert "Traceback" not in log


def test_serve_takes_its_settings_from_the_environment():
    served = start_serve(
        env={
            "PEER_GRPC_HOST": "127.0.0.1",
            "PEER_GRPC_PORT": "0",
            "PEER_GRPC_IDLE_TIMEOUT": "7",
            "PEER_GRPC_PEER_ID": "env-server",
            "PEER_GRPC_ALLOW_SESSIONLESS": "true",
        }
    )
    try:

        async def handshake() -> tuple[float, str]:
            async with PeerClient(served.address, "env-check", heartbeat=False) as client:
                response = client.handshake_response
                assert response is not None
                return response.idle_timeout.ToTimedelta().total_seconds(), response.server_peer_id

        assert asyncio.run(handshake()) == (7.0, "env-server")
    finally:
        code, _ = served.stop()
    assert code == 0


def test_serve_rejects_a_malformed_environment_value():
    result = run_serve(env={"PEER_GRPC_PORT": "eighty"})
    assert result.returncode != 0
    assert "PEER_GRPC_PORT='eighty'" in result.stderr


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"peer-grpc {__version__}"


def test_serve_runs_window_mode_with_the_window_asked_for():
    served = start_serve(
        "--host", "127.0.0.1", "--port", "0", "--sequence-mode", "window", "--replay-window", "16"
    )
    try:

        async def handshake() -> tuple[int, int]:
            async with PeerClient(served.address, "windowed", heartbeat=False) as client:
                response = client.handshake_response
                assert response is not None
                await asyncio.gather(*(client.ping() for _ in range(16)))
                return response.sequence_mode, response.replay_window

        assert asyncio.run(handshake()) == (peer_pb2.SEQUENCE_MODE_WINDOW, 16)
    finally:
        code, _ = served.stop()
    assert code == 0


@pytest.mark.parametrize("width", ["0", "5000"])
def test_serve_refuses_a_window_out_of_range(width: str):
    result = run_serve("--replay-window", width)
    assert result.returncode == 2
    assert "window width must be 1-4096" in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PEER_GRPC_LOG_LEVEL", "verbose"), ("PEER_GRPC_SEQUENCE_MODE", "loose")],
)
def test_serve_rejects_an_environment_value_outside_its_choices(variable: str, value: str):
    result = run_serve(env={variable: value})
    assert result.returncode != 0
    assert f"{variable}={value!r}" in result.stderr
    assert "Traceback" not in result.stderr


# --- tasks -----------------------------------------------------------------------------------


def test_delegate_watch_prints_every_change_as_a_json_line(serve_process: ServeProcess, capsys):
    code, out, _ = run_cli(
        capsys,
        "delegate",
        serve_process.address,
        "sleep",
        "--payload",
        '{"seconds": 0.2}',
        "--watch",
    )
    assert code == 0
    updates = [json.loads(line) for line in out.splitlines()]
    assert updates[-1]["task"]["state"] == "TASK_STATE_COMPLETED"
    assert updates[-1]["task"]["result"] == {"slept": 0.2}
    numbers = [int(update["sequenceNum"]) for update in updates]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_delegate_wait_exits_3_when_the_task_does_not_complete(serve_process: ServeProcess, capsys):
    code, out, _ = run_cli(
        capsys, "delegate", serve_process.address, "sleep", "--payload", '{"seconds": -1}', "--wait"
    )
    assert code == 3
    assert json.loads(out)["state"] == "TASK_STATE_REJECTED"


def test_delegate_without_waiting_needs_a_session_file(serve_process: ServeProcess, capsys):
    code, out, err = run_cli(capsys, "delegate", serve_process.address, "sleep", "--no-wait")
    assert code == 2
    assert out == ""
    assert "--session-file" in err


def test_a_session_file_carries_tasks_across_commands(
    serve_process: ServeProcess, capsys, tmp_path: Path
):
    session_file = tmp_path / "session.json"
    keep = ("--session-file", str(session_file))
    address = serve_process.address

    code, out, _ = run_cli(
        capsys, "delegate", address, "sleep", "--payload", '{"seconds": 60}', "--no-wait", *keep
    )
    assert code == 0
    task_id = json.loads(out)["taskId"]
    assert session_file.stat().st_mode & 0o777 == 0o600  # it holds the session token
    saved = json.loads(session_file.read_text())
    assert set(saved) == {"peer_id", "session_id", "session_token"}

    code, out, _ = run_cli(capsys, "task", "list", address, "--state", "working", *keep)
    assert code == 0
    assert [task["taskId"] for task in json.loads(out)["tasks"]] == [task_id]

    code, out, _ = run_cli(capsys, "task", "cancel", address, task_id, *keep)
    assert code == 0
    assert json.loads(out)["state"] == "TASK_STATE_CANCELED"

    code, out, _ = run_cli(capsys, "task", "get", address, task_id, *keep)
    assert code == 0
    assert json.loads(out)["error"]["code"] == "CANCELED"
    assert json.loads(session_file.read_text())["session_id"] == saved["session_id"]

    code, _, err = run_cli(capsys, "task", "cancel", address, task_id, *keep)
    assert code == 1
    assert "TASK_NOT_CANCELABLE" in err


def test_another_peer_does_not_see_the_task(serve_process: ServeProcess, capsys, tmp_path: Path):
    keep = ("--session-file", str(tmp_path / "session.json"))
    _, out, _ = run_cli(capsys, "delegate", serve_process.address, "echo", "--wait", *keep)
    task_id = json.loads(out)["taskId"]

    code, _, err = run_cli(
        capsys, "task", "get", serve_process.address, task_id, "--peer-id", "somebody-else"
    )
    assert code == 1
    assert "TASK_NOT_FOUND" in err


def test_serve_loads_the_task_handlers_named_by_tasks(tmp_path: Path, capsys):
    (tmp_path / "my_tasks.py").write_text(
        "from peer_grpc import TaskRegistry\n"
        "registry = TaskRegistry()\n"
        "@registry.task('shout')\n"
        "def shout(payload):\n"
        "    return {'text': payload['text'].upper()}\n"
    )
    served = start_serve("--port", "0", "--tasks", "my_tasks:registry", cwd=tmp_path)
    try:
        code, out, _ = run_cli(
            capsys, "delegate", served.address, "shout", "--payload", '{"text": "hi"}', "--wait"
        )
        assert code == 0
        assert json.loads(out)["result"] == {"text": "HI"}
        code, _, err = run_cli(capsys, "delegate", served.address, "echo", "--wait")
        assert code == 1
        assert "registered: shout" in err
    finally:
        code, _ = served.stop()
    assert code == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("my_tasks", "expected MODULE:ATTRIBUTE"),
        ("no_such_module:registry", "cannot import 'no_such_module'"),
        ("my_tasks:missing", "has no 'missing'"),
        ("my_tasks:not_a_registry", "is a dict, not a TaskRegistry"),
    ],
)
def test_serve_refuses_tasks_that_do_not_name_a_registry(tmp_path: Path, spec: str, message: str):
    (tmp_path / "my_tasks.py").write_text("not_a_registry = {}\n")
    result = run_serve("--tasks", spec, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_task_limits_out_of_range():
    result = run_serve("--max-tasks", "0")
    assert result.returncode == 2
    assert "task limits must be at least 1" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "cannot write it", id="directory-missing"),
        pytest.param(
            '{"peer_id": 5, "session_id": "s", "session_token": "t"}',
            "not a saved",
            id="not-strings",
        ),
        pytest.param("[1, 2]", "not a saved session", id="not-an-object"),
        pytest.param("{oops", "cannot read it", id="not-json"),
    ],
)
def test_a_bad_session_file_is_a_clear_error(
    serve_process: ServeProcess, capsys, tmp_path: Path, content: str | None, message: str
):
    session_file = tmp_path / "missing-dir" / "s.json"
    if content is not None:
        session_file = tmp_path / "s.json"
        session_file.write_text(content)

    code, out, err = run_cli(
        capsys, "ping", serve_process.address, "--session-file", str(session_file)
    )

    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_serve_refuses_a_tasks_module_that_fails_to_import(tmp_path: Path):
    (tmp_path / "broken_tasks.py").write_text("def broken(:\n")
    result = run_serve("--tasks", "broken_tasks:registry", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot import 'broken_tasks': SyntaxError" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_drains_a_call_in_flight_on_sigterm_and_exits_0(serve_process: ServeProcess):
    async def delegate_then_stop() -> int:
        async with PeerClient(serve_process.address, "draining", heartbeat=False) as client:
            call = asyncio.create_task(client.delegate_task("sleep", {"seconds": 1.0}))
            await asyncio.sleep(0.3)  # the task is running
            serve_process.process.send_signal(signal.SIGTERM)
            task = await call
            await client.close(terminate=False)
            return task.state

    state = asyncio.run(delegate_then_stop())

    code, log = serve_process.wait()
    assert state == peer_pb2.TASK_STATE_COMPLETED
    assert code == 0
    assert "shutting down" in log


def test_sigterm_under_load_answers_no_call_cancelled(serve_process: ServeProcess):
    """Calls that reach a stopping server are served, or refused UNAVAILABLE so that
    the caller sends them elsewhere: never CANCELLED, which no client resends."""

    async def caller(name: str, codes: Counter[str]) -> None:
        # Like a client behind a balancer: after the first refusal it goes elsewhere.
        async with grpc.aio.insecure_channel(serve_process.address) as channel:
            stub = peer_pb2_grpc.PeerServiceStub(channel)
            session_id = (await open_session(stub, name)).session_id
            for sequence in itertools.count(1):
                try:
                    await stub.Ping(
                        peer_pb2.PingRequest(),
                        metadata=session_metadata(session_id, sequence),
                        timeout=5,
                    )
                except grpc.aio.AioRpcError as error:
                    codes[error.code().name] += 1
                    return
                codes["OK"] += 1

    async def load_then_stop() -> Counter[str]:
        codes: Counter[str] = Counter()
        callers = [asyncio.create_task(caller(f"peer-{n}", codes)) for n in range(8)]
        await asyncio.sleep(1.0)
        serve_process.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*callers), 15)
        return codes

    codes = asyncio.run(load_then_stop())

    assert serve_process.wait()[0] == 0
    assert codes["OK"] > 0
    assert set(codes) == {"OK", "UNAVAILABLE"}, codes
    assert codes["UNAVAILABLE"] == 8


def test_serve_and_the_client_commands_speak_mutual_tls(tmp_path: Path, capsys):
    pki = Pki(tmp_path)
    server_cert = pki.issue("127.0.0.1")
    client_cert = pki.issue("cli.example.org")
    served = start_serve(
        *("--host", "127.0.0.1", "--port", "0"),
        *("--tls-cert", server_cert.cert, "--tls-key", server_cert.key),
        *("--tls-client-ca", pki.ca_file),
    )
    try:
        tls = (
            "--tls-ca",
            pki.ca_file,
            "--tls-cert",
            client_cert.cert,
            "--tls-key",
            client_cert.key,
        )
        code, out, _ = run_cli(
            capsys, "status", served.address, "--peer-id", "cli.example.org", *tls
        )
        assert code == 0
        assert json.loads(out)["session"]["peerId"] == "cli.example.org"

        code, _, err = run_cli(capsys, "ping", served.address, "--peer-id", "someone-else", *tls)
        assert code != 0
        assert "PERMISSION_DENIED" in err or "may not claim" in err
    finally:
        code, log = served.stop()
    assert code == 0
    assert "(mutual TLS)" in log


def test_serve_in_plaintext_warns_that_it_is_for_loopback_development(
    serve_process: ServeProcess,
):
    _, log = serve_process.stop()
    assert "PLAINTEXT" in log
    assert "loopback development only" in log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("--tls-cert", "cert.pem"), "tls_cert and tls_key", id="cert-without-key"),
        pytest.param(("--tls-client-ca", "ca.pem"), "needs tls_cert", id="client-ca-without-cert"),
        pytest.param(
            ("--tls-cert", "missing.pem", "--tls-key", "missing.key"),
            "cannot read the TLS certificate",
            id="missing-files",
        ),
    ],
)
def test_serve_refuses_tls_settings_it_cannot_use(args: tuple[str, ...], message: str):
    result = run_serve("--port", "0", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_an_identity_map_that_is_not_an_object_of_lists(tmp_path: Path):
    pki = Pki(tmp_path)
    server_cert = pki.issue("127.0.0.1")
    identity_map = tmp_path / "identities.json"
    identity_map.write_text('{"gateway": "orders"}')
    result = run_serve(
        *("--port", "0", "--tls-cert", server_cert.cert, "--tls-key", server_cert.key),
        *("--tls-client-ca", pki.ca_file, "--identity-map", str(identity_map)),
    )
    assert result.returncode == 2
    assert "must map to a list of strings" in result.stderr


def test_a_resend_to_a_survivor_of_a_killed_replica_gets_an_answer():
    """kill -9 of the replica that admitted a call, before it recorded how the call ended:
    a resend to another replica is answered (the outcome, or NOT_RUN: send it again)
    within the replica liveness time, not left waiting until its deadline."""
    prefix = ("--redis-key-prefix", f"killed-{os.getpid()}-{time.monotonic_ns()}")
    store = ("--store", shared_redis().url, *prefix)
    doomed = start_serve("--host", "127.0.0.1", "--port", "0", *store)
    survivor = start_serve("--host", "127.0.0.1", "--port", "0", *store)

    async def resend_after_the_kill() -> tuple[grpc.StatusCode, str, float]:
        request = peer_pb2.DelegateTaskRequest(
            task_type="sleep", payload=struct_of({"seconds": 0.5}), return_immediately=True
        )
        async with grpc.aio.insecure_channel(doomed.address) as channel:
            stub = peer_pb2_grpc.PeerServiceStub(channel)
            session_id = (await open_session(stub, "orphan")).session_id
            call = stub.DelegateTask(request, metadata=session_metadata(session_id, 1))
            await call.initial_metadata()  # admitted
            doomed.process.kill()
        started = time.monotonic()
        async with grpc.aio.insecure_channel(survivor.address) as channel:
            stub = peer_pb2_grpc.PeerServiceStub(channel)
            try:
                await stub.DelegateTask(
                    request, metadata=session_metadata(session_id, 1), timeout=30
                )
                code, details = grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as error:
                code, details = error.code(), error.details() or ""
        return code, details, time.monotonic() - started

    try:
        code, details, took = asyncio.run(resend_after_the_kill())
    finally:
        doomed.wait()  # killed: collect its pipes
        survivor.stop()

    assert took < 10, f"{code} after {took:.1f}s"
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE), (code, details)
    if code is grpc.StatusCode.UNAVAILABLE:
        assert "did not run; send it again" in details


def struct_of(value: dict[str, float]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct
