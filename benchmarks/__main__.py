"""``make bench``: measure, then write BENCHMARKS.md and its chart.

    python -m benchmarks                 # the full run (about 15 minutes on 2 cores)
    python -m benchmarks --quick         # a smoke run: every step, tiny and short

The raw results go to ``benchmarks/results.json`` as well, so the report can be
written again without measuring (``--report-only``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report, rpc

ROOT = Path(__file__).resolve().parent.parent


def store_benchmarks(sizes: list[int], window: int) -> list[dict[str, Any]]:
    """The session-store micro-benchmarks, one process per size."""
    results = []
    for size in sizes:
        print(f"  store: {size:,} sessions (window {window})", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.stores", str(size), "--window", str(window)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        results.append(json.loads(done.stdout))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, help="rounds of every configuration")
    parser.add_argument("--seconds", type=float, help="measured seconds per run")
    parser.add_argument("--servers", help="comma-separated, from: " + ", ".join(rpc.SERVERS))
    parser.add_argument("--sessions", help="comma-separated concurrent sessions, e.g. 1,16,64")
    parser.add_argument("--store-sizes", help="comma-separated session counts")
    parser.add_argument("--out", type=Path, default=ROOT, help="where BENCHMARKS.md goes")
    parser.add_argument("--report-only", action="store_true", help="rewrite from results.json")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of older code (e.g. a git worktree) to measure beside this one",
    )
    args = parser.parse_args(argv)

    results_file = args.out / "benchmarks" / "results.json"
    if args.report_only:
        results = json.loads(results_file.read_text())
    else:
        results = measure(args)
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results, indent=1) + "\n")
    report.write(results, args.out)
    print(f"wrote {args.out / 'BENCHMARKS.md'}", file=sys.stderr)
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    servers = _list(args.servers, str) or list(rpc.SERVERS)
    if args.baseline:
        servers += [name for name in rpc.add_baseline(args.baseline) if name not in servers]
    plan = rpc.Plan(
        servers=servers,
        sessions=_list(args.sessions, int) or ([1, 4] if quick else [1, 16, 64]),
        flood_sessions=4 if quick else 16,
        rounds=args.rounds or (1 if quick else 3),
        warmup=0.3 if quick else 1.0,
        seconds=args.seconds or (0.5 if quick else 3.0),
    )
    sizes = _list(args.store_sizes, int) or (
        [1_000, 10_000] if quick else [1_000, 100_000, 1_000_000]
    )
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if args is not None else [])])
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="peer-grpc-bench-") as workdir:
        print(f"rpc: {len(plan.build())} configurations x {plan.rounds} rounds", file=sys.stderr)
        calls = rpc.run(plan, Path(workdir))
    stores = store_benchmarks(sizes, 0) + store_benchmarks(sizes[-1:], 64)
    return {
        "command": command,
        "started": started,
        "seconds": time.time() - started,
        "machine": rpc.machine(),
        "plan": {
            "rounds": plan.rounds,
            "warmup": plan.warmup,
            "seconds": plan.seconds,
            "sessions": list(plan.sessions),
        },
        "baseline": str(args.baseline or ""),
        "calls": calls,
        "stores": stores,
    }


def _list(raw: str | None, kind: type) -> list[Any]:
    return [kind(part) for part in raw.split(",")] if raw else []


if __name__ == "__main__":
    sys.exit(main())
