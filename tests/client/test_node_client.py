"""The Node.js example client (examples/node) against a real server, on every store.

The client is documentation for Node users; this test keeps it true. It needs
Node.js and the example's node_modules, which ``make test`` installs (npm ci): when
either is missing the test fails rather than skips, so that CI cannot pass without it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from peer_grpc import PeerServer, TaskState

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
CLIENT = EXAMPLE / "client.js"
PEER_ID = "node-example-test"
#: Every kind of JSON value, nested: the echo task must return it unchanged.
PAYLOAD: dict[str, Any] = {
    "text": "from node",
    "number": 1.5,
    "integer": 42,
    "flag": True,
    "nothing": None,
    "list": [1, "two", False, None, {"inner": []}],
    "object": {"deep": {"x": -3}},
}
#: The sequenced calls the client makes before its replay, in order.
CALLS_BEFORE_REPLAY = ["Describe", "Ping", "Ping", "Ping", "Heartbeat", "Status", "DelegateTask"]
#: The sequence the client replays on purpose (that of its first Ping).
REPLAYED = 2


def node_example() -> str:
    """The node executable, after checking that the example's dependencies are installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js 18 or newer, then run `make test`")
    manifest = json.loads((EXAMPLE / "package.json").read_text())
    missing = [
        name
        for name in manifest["dependencies"]
        if not (EXAMPLE / "node_modules" / name / "package.json").is_file()
    ]
    if missing:
        pytest.fail(
            f"examples/node/node_modules lacks {', '.join(missing)}: run `make test`, "
            "which runs npm ci in examples/node (or npm ci --prefix examples/node)"
        )
    return node


async def run_client(node: str, *args: str) -> tuple[int, str, str]:
    """Run client.js to completion; its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_node_client_speaks_the_protocol(server: PeerServer):
    node = node_example()
    code, out, err = await run_client(
        node,
        "--target",
        server.address,
        "--peer-id",
        PEER_ID,
        "--payload",
        json.dumps(PAYLOAD),
    )
    assert code == 0, f"client.js exited {code}:\n{err}"
    lines = out.splitlines()
    assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{out}"
    summary = json.loads(lines[0])

    # Sequenced calls numbered 1, 2, 3, ... and the server's numbers in step,
    # read from each unary response's trailers; Terminate comes after the replay.
    calls = len(CALLS_BEFORE_REPLAY) + 1
    assert summary["pings"] == 3
    assert summary["client_sequences"] == list(range(1, calls + 1))
    assert summary["server_sequences"] == list(range(1, calls + 1))
    assert summary["protocol_version"] == "1.0"
    assert summary["sequence_mode"] == "SEQUENCE_MODE_STRICT"
    assert {"echo", "sleep"} <= set(summary["task_types"])  # Describe told it
    # Status was the sixth call: the session was confirmed and expected the seventh.
    assert summary["status"] == {
        "session_state": "SESSION_STATE_ESTABLISHED",
        "expected_sequence": CALLS_BEFORE_REPLAY.index("Status") + 2,
    }

    task = summary["task"]
    assert task["task_type"] == "echo"
    assert task["state"] == "TASK_STATE_COMPLETED"
    assert task["result"] == PAYLOAD

    # The replay was refused, and the next call's number was still the one to send.
    assert summary["sequence_error"] == {
        "expected": len(CALLS_BEFORE_REPLAY) + 1,
        "received": REPLAYED,
        "kind": "SEQUENCE_ERROR_KIND_REPLAY",
        "reason": "SEQUENCE_ERROR",
        "domain": "peer.v1",
    }
    assert summary["terminated"] is True

    # The server saw it the same way: one session, terminated, one sequence error,
    # and the peer's task completed with the payload.
    assert await server.manager.get_session_by_peer(PEER_ID) is None
    stats = await server.manager.get_session_stats()
    assert (stats.created_total, stats.terminated_total, stats.terminated) == (1, 1, 1)
    assert (stats.handshaking, stats.established, stats.expired) == (0, 0, 0)
    assert stats.sequence_errors_total == 1
    stored = await server.tasks.get(PEER_ID, task["task_id"])
    assert stored.state is TaskState.COMPLETED
    assert dict(stored.result or {}) == PAYLOAD
    assert summary["session_id_prefix"]
    assert summary["session_id_prefix"] in err  # the human-readable lines went to stderr


async def test_the_node_client_fails_when_there_is_no_server(unused_tcp_port: int):
    node = node_example()
    code, out, err = await run_client(
        node, "--target", f"127.0.0.1:{unused_tcp_port}", "--timeout", "2"
    )
    assert code == 1
    assert out == ""
    assert "UNAVAILABLE" in err
