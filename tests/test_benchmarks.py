"""The benchmark harness measures what it says: a tiny run of every step, no timing asserted.

Speed targets live in ``make bench``, never here: these tests only prove that the
harness drives real servers with the calls it claims (accepted, or rejected for
the reason named) and writes its report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)),
            *("--servers", "bare-aio,memory-strict", "--sessions", "2"),
            *("--store-sizes", "1000", "--seconds", "0.3"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=240,
    )
    return out


@pytest.mark.timeout(300)
def test_every_configuration_is_measured_with_the_answers_it_names(smoke_run: Path):
    results = json.loads((smoke_run / "benchmarks" / "results.json").read_text())
    codes = {
        (run["server"], run["method"], run["reject"]): run["codes"] for run in results["calls"]
    }

    expected_rejection = {"unknown": "UNAUTHENTICATED", "gap": "ABORTED", "replay": "ABORTED"}
    assert set(codes) == {
        (server, method, "")
        for server in ("bare-aio", "memory-strict")
        for method in ("ping", "delegate")
    } | {("memory-strict", "ping", reject) for reject in expected_rejection}
    for (_, _, reject), answered in codes.items():
        assert list(answered) == [expected_rejection.get(reject, "OK")]
    for run in results["calls"]:
        assert run["calls"] > 0
        assert run["server_cpu_us_per_call"] > 0


@pytest.mark.timeout(300)
def test_the_store_benchmarks_cover_both_sequence_modes(smoke_run: Path):
    results = json.loads((smoke_run / "benchmarks" / "results.json").read_text())
    stores = {(store["sessions"], store["window"]): store for store in results["stores"]}

    assert set(stores) == {(1000, 0), (1000, 64)}
    for store in stores.values():
        assert store["expired"] == 10  # 1% of the sessions, all found by the sweep
        assert 0 < store["bytes_per_session"] < 10_000


@pytest.mark.timeout(300)
def test_the_report_and_its_chart_are_written(smoke_run: Path):
    report = (smoke_run / "BENCHMARKS.md").read_text()

    for section in ("## Targets", "## Sequenced Ping", "## Rejected calls", "## Session store"):
        assert section in report
    assert "| memory-strict | 2 |" in report
    assert (smoke_run / "docs" / "benchmarks.png").read_bytes().startswith(b"\x89PNG")


def test_the_progress_benchmark_counts_reports_made_and_stored():
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.progress", "--seconds", "0.3", "--interval", "0.1"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["memory", "redis"]
    assert all(" reports in 0.3s, " in line and " stored (" in line for line in lines)
