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


@pytest.mark.timeout(300)
def test_tracing_is_an_extra_that_the_package_does_not_need(wheel: zipfile.ZipFile):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    metadata = wheel.read(f"peer_grpc-{version}.dist-info/METADATA").decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]

    assert "Provides-Extra: otel" in metadata
    assert any(line.startswith("Requires-Dist: prometheus-client") for line in requires)
    telemetry = [line for line in requires if "opentelemetry" in line]
    assert telemetry
    assert all('extra == "otel"' in line for line in telemetry)


def test_serving_without_tracing_loads_no_tracer_or_exporter():
    # The extra is installed in the test environment; without --otel nothing of the
    # tracing loads. (redis-py imports OpenTelemetry's API and metrics SDK when they
    # are installed, for instrumentation of its own that it leaves off.)
    check = (
        "import sys, peer_grpc.cli, peer_grpc.server\n"
        "peer_grpc.server.PeerServer(peer_grpc.server.ServerConfig(port=0, metrics_port=0,"
        " log_calls=True))\n"
        "tracing = ('opentelemetry.propagate', 'opentelemetry.sdk.trace',"
        " 'opentelemetry.exporter')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(tracing))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True, timeout=60)
