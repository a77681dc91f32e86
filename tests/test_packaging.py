"""What `pip install peer-grpc` gives: the package built the way a release is, and looked inside."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    # Both, as a release builds them: the wheel is built from the sdist, so a file the
    # sdist leaves out is missing from the wheel too.
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (built,) = out.glob("*.whl")
    return zipfile.ZipFile(built)


@pytest.mark.timeout(300)
def test_the_wheel_carries_the_typed_package_and_its_generated_code(wheel: zipfile.ZipFile):
    names = set(wheel.namelist())

    assert "peer_grpc/py.typed" in names
    for generated in ("peer_pb2.py", "peer_pb2.pyi", "peer_pb2_grpc.py"):
        assert f"peer_grpc/_proto/peer/v1/{generated}" in names
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/"))]


@pytest.mark.timeout(300)
def test_the_wheel_carries_the_contract_as_in_protos(wheel: zipfile.ZipFile):
    packaged = wheel.read("peer_grpc/_proto/peer/v1/peer.proto")

    assert packaged == (ROOT / "protos" / "peer" / "v1" / "peer.proto").read_bytes()


@pytest.mark.timeout(300)
def test_the_wheel_installs_the_command_at_the_version_of_pyproject(wheel: zipfile.ZipFile):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    info = f"peer_grpc-{version}.dist-info"

    assert "peer-grpc = peer_grpc.cli:main" in wheel.read(f"{info}/entry_points.txt").decode()
    assert f"\nVersion: {version}\n" in wheel.read(f"{info}/METADATA").decode()
