"""The layer contracts of ``make lint`` (import-linter, in pyproject.toml) catch what they forbid.

Each case copies the package, plants one import that a contract forbids, and runs that
contract on the copy: it must fail and name the planted import. The untouched copy
keeps every contract, so a failure here is the planted import's doing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(source_root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """Run import-linter with the project's contracts over the package under ``source_root``."""
    selected = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *selected, str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(source_root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of src/ that a test may break: its root, to put on PYTHONPATH."""
    shutil.copytree(ROOT / "src" / "peer_grpc", tmp_path / "peer_grpc")
    return tmp_path


def test_the_package_keeps_every_contract(package_copy: Path) -> None:
    result = lint_imports(package_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("contract", "module", "planted"),
    [
        pytest.param(
            "layers", "stores/protocols.py", "peer_grpc.tasks.manager", id="store-imports-tasks"
        ),
        pytest.param(
            "layers",
            "client/peer_client.py",
            "peer_grpc.server.servicer",
            id="client-imports-server",
        ),
        pytest.param(
            "layers",
            "sessions/manager.py",
            "peer_grpc.tasks.manager",
            id="sessions-import-tasks",
        ),
        pytest.param("core-without-transport", "core/clock.py", "grpc", id="core-imports-grpc"),
        pytest.param(
            "core-without-transport", "tasks/manager.py", "redis.asyncio", id="tasks-import-redis"
        ),
        pytest.param(
            "stores-without-grpc",
            "stores/memory/sessions.py",
            "peer_grpc.wire.rich_status",
            id="store-imports-rich-status",
        ),
        pytest.param(
            "cli-on-top", "server/peer_server.py", "peer_grpc.cli.main", id="server-imports-cli"
        ),
    ],
)
def test_a_planted_import_breaks_its_contract(
    package_copy: Path, contract: str, module: str, planted: str
) -> None:
    target = package_copy / "peer_grpc" / module
    target.write_text(target.read_text() + f"\nimport {planted}  # planted by the test\n")

    result = lint_imports(package_copy, contract)

    assert result.returncode != 0, result.stdout
    assert "1 broken" in result.stdout
    importer = "peer_grpc." + module.removesuffix(".py").replace("/", ".")
    # import-linter names an outside package by its top level (redis.asyncio as redis).
    imported = planted if planted.startswith("peer_grpc.") else planted.split(".")[0]
    assert f"{importer} -> {imported} (l." in result.stdout
