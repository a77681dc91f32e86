"""Fixtures of the command-line tests: a real ``peer-grpc serve`` process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli.test_cli import ServeProcess, start_serve


@pytest.fixture
def serve_process() -> Iterator[ServeProcess]:
    served = start_serve("--host", "127.0.0.1", "--port", "0")
    try:
        yield served
    finally:
        if served.process.poll() is None:
            served.process.kill()
            served.process.communicate(timeout=15)
