"""Where a server's time goes under load: py-spy samples, summed by who owns the frame.

    python -m benchmarks.profile memory-strict ping 16 [--seconds 8]

Starts the named server (see :data:`benchmarks.rpc.SERVERS`), drives it with the
load generator, samples it with py-spy (``pip install -e '.[profile]'``; it needs
ptrace permission), and prints the share of samples by owner: peer-grpc's own
code (by function), redis-py, and the rest (grpc's Cython layer and the asyncio
loop, which py-spy sees as the frames that call into them). ``--raw FILE`` keeps
py-spy's collapsed stacks for a flame graph.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks import rpc

#: Frames that belong to each owner, by where their file lives.
OWNERS = {"peer_grpc": "peer-grpc", "redis/": "redis-py", "grpc/": "grpc (Python layer)"}


def summarize(raw: Path, top: int) -> str:
    """The shares of samples: by owner of the innermost frame, and peer-grpc's functions
    by inclusive time."""
    owners: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples = int(count)
        total += samples
        innermost = frames[-1]
        owners[
            next((o for key, o in OWNERS.items() if key in innermost), "grpc core / asyncio")
        ] += samples
        ours = {f for f in frames if "peer_grpc/" in f and not f.startswith(("process", "<"))}
        for frame in ours - {f for f in ours if "cli.py" in f}:
            functions[frame.split(" (")[0]] += samples
    lines = [f"{total} samples", "", "innermost frame's owner:"]
    lines += [f"  {count / total:6.1%}  {owner}" for owner, count in owners.most_common()]
    lines += ["", f"peer-grpc functions, inclusive (top {top}):"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in functions.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("server", choices=sorted(rpc.SERVERS))
    parser.add_argument("method", choices=["ping", "delegate"])
    parser.add_argument("sessions", type=int)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    config = rpc.Config(args.server, args.method, args.sessions)
    plan = rpc.Plan(servers=[args.server], warmup=1.0, seconds=args.seconds)
    with tempfile.TemporaryDirectory() as workdir:
        raw = args.raw or Path(workdir) / "stacks.txt"
        with rpc.running_servers([args.server], Path(workdir)) as servers:
            server = servers[args.server]
            sampler = subprocess.Popen(
                [
                    *(py_spy, "record", "--pid", str(server.process.pid), "--format", "raw"),
                    *("--output", str(raw), "--rate", "250", "--nonblocking", "--subprocesses"),
                    *("--duration", str(int(args.seconds))),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            result = rpc.measure(config, server, plan, rpc.redis_url_of(server))
            sampler.wait(timeout=args.seconds + 30)
        print(
            f"{config.label}: {result['calls_per_second']:.0f} calls/s, "
            f"{result['server_cpu_us_per_call']:.0f} us server CPU per call\n"
        )
        print(summarize(raw, args.top))


if __name__ == "__main__":
    main()
