"""BENCHMARKS.md, its chart, and the README's headline, from the measured results.

Every ratio is paired: a configuration's figure divided by the bare grpc.aio
servicer's in the same round (the rounds alternate configurations), then the
median over rounds, with the range beside it.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BARE = "bare-aio"
#: The suffix of a server that runs the code before a change (benchmarks.rpc.BASELINE).
BASELINE = "@baseline"
CHART = Path("docs") / "benchmarks.png"
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"

Result = dict[str, Any]


@dataclass(frozen=True)
class Figure:
    """A median over rounds, with the smallest and largest round."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Figure:
        values = list(values)
        return cls(statistics.median(values), min(values), max(values))

    def ratio(self) -> str:
        return f"{self.median:.2f}x ({self.low:.2f}-{self.high:.2f})"


@dataclass(frozen=True)
class Target:
    """One target of the issue, and whether the measured figure meets it."""

    name: str
    limit: str
    measured: str
    met: bool


class Results:
    """The runs of one benchmark, by configuration."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.raw = results
        self.runs: dict[tuple[str, str, int, str], list[Result]] = defaultdict(list)
        for run in results["calls"]:
            key = (run["server"], run["method"], run["sessions"], run["reject"])
            self.runs[key].append(run)
        self.sessions: list[int] = results["plan"]["sessions"]
        self.servers = sorted({key[0] for key in self.runs}, key=_server_order)

    def has(self, server: str, method: str = "ping", sessions: int = 0, reject: str = "") -> bool:
        return (server, method, sessions or self.sessions[-1], reject) in self.runs

    def figure(
        self, metric: str, server: str, method: str, sessions: int, reject: str = ""
    ) -> Figure:
        return Figure.of(run[metric] for run in self.runs[(server, method, sessions, reject)])

    def paired(
        self,
        metric: str,
        server: str,
        method: str,
        sessions: int,
        against: tuple[str, str, int, str] | None = None,
        reject: str = "",
    ) -> Figure:
        """``metric`` of a configuration over that of ``against`` (the bare servicer of the
        same method and sessions by default), round by round."""
        against = against or (BARE, method, sessions, "")
        base = {run["round"]: run[metric] for run in self.runs[against]}
        return Figure.of(
            run[metric] / base[run["round"]]
            for run in self.runs[(server, method, sessions, reject)]
            if base.get(run["round"])
        )

    def flood_sessions(self) -> int | None:
        """The sessions of the rejected-call floods, if any ran."""
        return next((key[2] for key in self.runs if key[0] == "memory-strict" and key[3]), None)

    def rejected_cpu(self, sessions: int, reject: str) -> Figure:
        """CPU per rejected call over CPU per accepted call, memory store, same sessions."""
        return self.paired(
            "server_cpu_us_per_call",
            "memory-strict",
            "ping",
            sessions,
            against=("memory-strict", "ping", sessions, ""),
            reject=reject,
        )

    def redis_rate(self, sessions: int, method: str = "ping") -> Figure:
        """Calls/s on Redis over calls/s on the memory store, same method and sessions."""
        return self.paired(
            "calls_per_second",
            "redis-strict",
            method,
            sessions,
            against=("memory-strict", method, sessions, ""),
        )


def _server_order(name: str) -> int:
    order = [
        "bare-aio",
        "bare-sync",
        "memory-strict",
        "memory-strict-metrics",
        "memory-window",
        "redis-strict",
        "redis-strict-wait",
        "redis-cluster-strict",
    ]
    return order.index(name) if name in order else len(order)


def targets(results: Results) -> list[Target]:
    """Each target of the issues against what was measured."""
    found: list[Target] = []
    middle = results.sessions[len(results.sessions) // 2]
    if results.has("memory-strict") and results.has(BARE):
        for sessions in results.sessions[1:] or results.sessions:
            cpu = results.paired("server_cpu_us_per_call", "memory-strict", "ping", sessions)
            found.append(_at_most("server CPU per sequenced Ping", 1.10, cpu, f"x{sessions}"))
        for sessions in results.sessions:
            rate = results.paired("calls_per_second", "memory-strict", "ping", sessions)
            found.append(
                Target(
                    f"calls/s vs bare, Ping x{sessions}",
                    ">= 0.90x",
                    rate.ratio(),
                    rate.median >= 0.9,
                )
            )
        p99 = results.paired("p99_us", "memory-strict", "ping", middle)
        found.append(_at_most("p99 latency vs bare, Ping", 1.2, p99, f"x{middle}"))
        flood = results.flood_sessions()
        for reject in ("unknown", "gap", "replay"):
            if flood and results.has("memory-strict", "ping", flood, reject):
                ratio = results.rejected_cpu(flood, reject)
                found.append(_at_most(f"CPU per rejected call ({reject}) vs accepted", 1.1, ratio))
    if results.has("memory-strict-metrics") and results.has("memory-strict"):
        metered = results.paired(
            "server_cpu_us_per_call",
            "memory-strict-metrics",
            "ping",
            middle,
            against=("memory-strict", "ping", middle, ""),
        )
        found.append(
            _at_most("server CPU per Ping, metrics on vs off", 1.10, metered, f"x{middle}")
        )
    if results.has("redis-strict") and results.has("memory-strict"):
        for sessions in results.sessions[1:] or results.sessions:
            rate = results.redis_rate(sessions)
            found.append(
                Target(
                    f"Redis calls/s vs memory, Ping x{sessions}",
                    ">= 0.70x",
                    rate.ratio(),
                    rate.median >= 0.7,
                )
            )
        first = results.sessions[0]
        trips = results.figure("redis_round_trips_per_call", "redis-strict", "ping", first)
        found.append(
            Target(
                f"Redis round trips per call, x{first} (health checks and sweeps included)",
                "1.00",
                f"{trips.median:.3f}",
                trips.median < 1.005,
            )
        )
    found += _task_targets(results, middle)
    found += _store_targets(results.raw["stores"])
    return found


def _task_targets(results: Results, sessions: int) -> list[Target]:
    """Issue 16's: a delegated echo task on the memory store against the bare servicer,
    and on Redis against the memory store."""
    found: list[Target] = []
    if results.has("memory-strict", "delegate", sessions) and results.has(
        BARE, "delegate", sessions
    ):
        cpu = results.paired("server_cpu_us_per_call", "memory-strict", "delegate", sessions)
        found.append(
            _at_most("server CPU per DelegateTask(echo), memory", 1.30, cpu, f"x{sessions}")
        )
    if results.has("redis-strict", "delegate", sessions) and results.has(
        "memory-strict", "delegate", sessions
    ):
        rate = results.redis_rate(sessions, "delegate")
        found.append(
            Target(
                f"Redis calls/s vs memory, DelegateTask(echo) x{sessions}",
                ">= 0.50x",
                rate.ratio(),
                rate.median >= 0.5,
            )
        )
        first = results.sessions[0]
        trips = results.figure("redis_round_trips_per_call", "redis-strict", "delegate", first)
        found.append(
            Target(
                f"Redis round trips per DelegateTask(echo), x{first} "
                "(health checks and sweeps included)",
                "<= 3",
                f"{trips.median:.2f}",
                trips.median <= 3.1,
            )
        )
    return found


def _at_most(name: str, limit: float, figure: Figure, where: str = "") -> Target:
    label = f"{name} {where}".strip()
    return Target(label, f"<= {limit:.2f}x", figure.ratio(), figure.median <= limit)


def _store_targets(stores: list[Result]) -> list[Target]:
    strict = sorted((s for s in stores if not s["window"]), key=lambda s: s["sessions"])
    if not strict:
        return []
    small, large = strict[0], strict[-1]
    found = [
        Target(
            f"bytes per session at {large['sessions']:,} ({mode})",
            "<= 512",
            f"{store['bytes_per_session']:.0f}",
            store["bytes_per_session"] <= 512,
        )
        for store, mode in [(large, "strict")]
        + [(s, f"window {s['window']}") for s in stores if s["window"]]
    ]
    growth = large["admit_us"] / small["admit_us"]
    found.append(
        Target(
            f"admit time at {large['sessions']:,} vs {small['sessions']:,}",
            "<= 1.30x",
            f"{growth:.2f}x ({small['admit_us']:.1f} -> {large['admit_us']:.1f} us)",
            growth <= 1.3,
        )
    )
    found.append(
        Target(
            f"idle sweep at {large['sessions']:,}",
            "<= 50 us",
            f"{large['idle_sweep_us']:.1f} us",
            large["idle_sweep_us"] <= 50,
        )
    )
    found.append(
        Target(
            "sweep cost per expired session",
            "a few us",
            f"{large['sweep_us_per_expired']:.1f} us",
            large["sweep_us_per_expired"] <= 5,
        )
    )
    found.append(
        Target(
            "longest sweep batch",
            "<= 5 ms",
            f"{max(s['sweep_max_batch_ms'] for s in stores):.2f} ms",
            max(s["sweep_max_batch_ms"] for s in stores) <= 5,
        )
    )
    return found


def _call_table(results: Results, method: str) -> list[str]:
    rows = [
        "| server | sessions | calls/s | p50 | p99 | server CPU/call | calls/s vs bare | "
        "CPU/call vs bare | p99 vs bare |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sessions in results.sessions:
        for server in results.servers:
            if server.endswith("workers") or not results.has(server, method, sessions):
                continue
            rate = results.figure("calls_per_second", server, method, sessions)
            p50 = results.figure("p50_us", server, method, sessions)
            p99 = results.figure("p99_us", server, method, sessions)
            cpu = results.figure("server_cpu_us_per_call", server, method, sessions)
            ratios = ["", "", ""]
            if server != BARE and results.has(BARE, method, sessions):
                ratios = [
                    results.paired(metric, server, method, sessions).ratio()
                    for metric in ("calls_per_second", "server_cpu_us_per_call", "p99_us")
                ]
            rows.append(
                f"| {server} | {sessions} | {rate.median:,.0f} | {p50.median / 1000:.2f} ms | "
                f"{p99.median / 1000:.2f} ms | {cpu.median:.0f} us | " + " | ".join(ratios) + " |"
            )
    return rows


def _baseline_table(results: Results) -> list[str]:
    """The code before a change against this code, served in the same run (``--baseline``)."""
    rows = []
    for server in ("memory-strict", "redis-strict"):
        old = server + BASELINE
        for sessions in results.sessions:
            if not (results.has(old, "ping", sessions) and results.has(server, "ping", sessions)):
                continue
            against = (old, "ping", sessions, "")
            ratios = [
                results.paired(metric, server, "ping", sessions, against=against)
                for metric in ("server_cpu_us_per_call", "calls_per_second", "p99_us")
            ]
            before = results.figure("server_cpu_us_per_call", old, "ping", sessions)
            after = results.figure("server_cpu_us_per_call", server, "ping", sessions)
            rows.append(
                f"| {server} | {sessions} | {before.median:.0f} us | {after.median:.0f} us | "
                + " | ".join(ratio.ratio() for ratio in ratios)
                + " |"
            )
    if not rows:
        return []
    return [
        "## This code against the code before it",
        "",
        f"`{results.raw.get('baseline', '')}` served as `*{BASELINE}`, taking turns with this "
        "code in the same run. Ratios are this code's over the baseline's, round by round.",
        "",
        "| Ping | sessions | CPU/call before | CPU/call now | CPU now/before | "
        "calls/s now/before | p99 now/before |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def _rejection_table(results: Results) -> list[str]:
    sessions = results.flood_sessions()
    if sessions is None:
        return []
    floods = sorted({key for key in results.runs if key[3]})
    accepted = results.figure("server_cpu_us_per_call", "memory-strict", "ping", sessions)
    rows = [
        f"| Ping x{sessions}, memory, strict | server CPU/call | vs an accepted call | calls/s |",
        "|---|---:|---:|---:|",
        f"| accepted | {accepted.median:.0f} us | 1.00x | "
        f"{results.figure('calls_per_second', 'memory-strict', 'ping', sessions).median:,.0f} |",
    ]
    for _, _, _, reject in floods:
        cpu = results.figure("server_cpu_us_per_call", "memory-strict", "ping", sessions, reject)
        ratio = results.rejected_cpu(sessions, reject)
        rate = results.figure("calls_per_second", "memory-strict", "ping", sessions, reject)
        rows.append(
            f"| rejected: {reject} | {cpu.median:.0f} us | {ratio.ratio()} | {rate.median:,.0f} |"
        )
    return rows


def _redis_table(results: Results, method: str = "ping") -> list[str]:
    if not results.has("redis-strict", method):
        return []
    title = {"ping": "Ping", "delegate": "DelegateTask(echo)"}[method]
    rows = [
        f"| {title}, Redis, strict | sessions | round trips/call | commands/call (inside "
        "scripts too) | Redis CPU/call | calls/s vs memory |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for sessions in results.sessions:
        if not results.has("redis-strict", method, sessions):
            continue
        trips = results.figure("redis_round_trips_per_call", "redis-strict", method, sessions)
        commands = results.figure("redis_commands_per_call", "redis-strict", method, sessions)
        redis_cpu = results.figure("redis_cpu_us_per_call", "redis-strict", method, sessions)
        versus = (
            results.redis_rate(sessions, method).ratio()
            if results.has("memory-strict", method, sessions)
            else "-"
        )
        rows.append(
            f"| | {sessions} | {trips.median:.2f} | {commands.median:.2f} | "
            f"{redis_cpu.median:.0f} us | {versus} |"
        )
    return rows


def _wait_table(results: Results) -> list[str]:
    """What ``--redis-wait-replicas 1`` costs a Ping, against the same server without it."""
    if not (results.has("redis-strict-wait") and results.has("redis-strict")):
        return []
    rows = [
        "| Ping, Redis, --redis-wait-replicas 1 | sessions | calls/s | vs without | "
        "server CPU/call vs without | p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for sessions in results.sessions:
        if not results.has("redis-strict-wait", "ping", sessions):
            continue
        against = ("redis-strict", "ping", sessions, "")
        rate = results.figure("calls_per_second", "redis-strict-wait", "ping", sessions)
        p99 = results.figure("p99_us", "redis-strict-wait", "ping", sessions).median / 1000
        versus = results.paired(
            "calls_per_second", "redis-strict-wait", "ping", sessions, against=against
        )
        cpu = results.paired(
            "server_cpu_us_per_call", "redis-strict-wait", "ping", sessions, against=against
        )
        rows.append(
            f"| | {sessions} | {rate.median:,.0f} | {versus.ratio()} | {cpu.ratio()} | "
            f"{p99:.2f} ms |"
        )
    return rows


def _cluster_table(results: Results) -> list[str]:
    """Ping on a local Redis Cluster against the same server on one Redis."""
    if not (results.has("redis-cluster-strict") and results.has("redis-strict")):
        return []
    rows = [
        "| Ping, Redis Cluster (3 primaries) | sessions | calls/s | vs one Redis | "
        "server CPU/call vs one Redis | round trips/call (one Redis) | Redis CPU/call "
        "(all primaries; one Redis) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for sessions in results.sessions:
        if not results.has("redis-cluster-strict", "ping", sessions):
            continue
        against = ("redis-strict", "ping", sessions, "")

        def median(figure: str, server: str, sessions: int = sessions) -> float:
            return results.figure(figure, server, "ping", sessions).median

        rate = median("calls_per_second", "redis-cluster-strict")
        versus = results.paired(
            "calls_per_second", "redis-cluster-strict", "ping", sessions, against=against
        )
        cpu = results.paired(
            "server_cpu_us_per_call", "redis-cluster-strict", "ping", sessions, against=against
        )
        trips = median("redis_round_trips_per_call", "redis-cluster-strict")
        single_trips = median("redis_round_trips_per_call", "redis-strict")
        redis_cpu = median("redis_cpu_us_per_call", "redis-cluster-strict")
        single_cpu = median("redis_cpu_us_per_call", "redis-strict")
        rows.append(
            f"| | {sessions} | {rate:,.0f} | {versus.ratio()} | {cpu.ratio()} | "
            f"{trips:.2f} ({single_trips:.2f}) | {redis_cpu:.0f} us ({single_cpu:.0f} us) |"
        )
    return rows


def _workers_table(results: Results) -> list[str]:
    workers = [key for key in results.runs if key[0].endswith("workers")]
    if not workers:
        return []
    server, method, sessions, _ = workers[0]
    one = results.figure("calls_per_second", "redis-strict", method, sessions)
    two = results.figure("calls_per_second", server, method, sessions)
    one_p99 = results.figure("p99_us", "redis-strict", method, sessions).median / 1000
    two_p99 = results.figure("p99_us", server, method, sessions).median / 1000
    scaling = results.paired(
        "calls_per_second", server, method, sessions, against=("redis-strict", method, sessions, "")
    )
    return [
        f"| Ping x{sessions}, Redis | calls/s | p99 | vs 1 worker |",
        "|---|---:|---:|---:|",
        f"| 1 worker | {one.median:,.0f} | {one_p99:.2f} ms | 1.00x |",
        f"| 2 workers | {two.median:,.0f} | {two_p99:.2f} ms | {scaling.ratio()} |",
    ]


def _store_table(stores: list[Result]) -> list[str]:
    rows = [
        "| sessions | mode | bytes/session | + retry cache (1 outcome) | admit | admit with retry "
        "cache | idle sweep | sweep per expired | longest sweep batch | full GC pass |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for store in stores:
        mode = f"window {store['window']}" if store["window"] else "strict"
        rows.append(
            f"| {store['sessions']:,} | {mode} | {store['bytes_per_session']:.0f} | "
            f"{store['retry_bytes_per_session']:.0f} | {store['admit_us']:.1f} us | "
            f"{store['cached_admit_us']:.1f} us | {store['idle_sweep_us']:.1f} us | "
            f"{store['sweep_us_per_expired']:.1f} us | {store['sweep_max_batch_ms']:.2f} ms | "
            f"{store['full_gc_ms']:.0f} ms |"
        )
    return rows


def _sync_line(results: Results) -> str:
    if not (results.has("bare-sync") and results.has("memory-strict")):
        return ""
    parts = []
    for sessions in results.sessions:
        ratio = results.paired(
            "calls_per_second",
            "memory-strict",
            "ping",
            sessions,
            against=("bare-sync", "ping", sessions, ""),
        )
        parts.append(f"x{sessions}: {ratio.ratio()}")
    return (
        "The shipped server's Ping calls/s as a ratio to the bare **synchronous** grpcio "
        "server (thread pool of 16): " + "; ".join(parts) + "."
    )


def write(raw: dict[str, Any], out: Path) -> None:
    """Write BENCHMARKS.md and the chart under ``out``, and the README's headline."""
    results = Results(raw)
    found = targets(results)
    _chart(results, out / CHART)
    (out / "BENCHMARKS.md").write_text(_markdown(results, found))
    readme = out / "README.md"
    if readme.exists():
        _update_readme(readme, results, found)


def _markdown(results: Results, found: list[Target]) -> str:
    machine = results.raw["machine"]
    plan = results.raw["plan"]
    when = datetime.fromtimestamp(results.raw["started"], UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        "What peer-grpc's session and sequence checks cost, against a bare grpcio servicer of "
        "the same proto measured in the same run. Written by `make bench` "
        f"(`{results.raw['command']}`); do not edit by hand.",
        "",
        f"- Measured {when}, {results.raw['seconds'] / 60:.0f} minutes.",
        f"- Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['platform']}, "
        f"Python {machine['python']}, grpcio {machine['grpcio']}. Shared and noisy: read the "
        "ranges.",
        f"- Each configuration ran {plan['rounds']} times, configurations taking turns; each run "
        f"warmed up for {plan['warmup']} s and measured {plan['seconds']} s. Figures are medians "
        "of the runs; ratios are paired with the bare servicer's run of the same round, then the "
        "median, with the range of rounds in brackets.",
        "- Servers and the load generator are separate processes on 127.0.0.1. The load is closed "
        "loop: each session sends its next call when the last one is answered. Server CPU is the "
        "server process's own user+system time over the measured window, divided by the calls "
        "answered in it.",
        "- `bare-aio`: a grpc.aio servicer of PeerService, no interceptors, answering with "
        "responses of the same shape. `bare-sync`: the same on grpcio's synchronous server. "
        "`memory-*` and `redis-*`: `peer-grpc serve` as shipped, strict or window sequencing.",
        "",
        f"![ratios to the bare servicer, and store cost against session count]({CHART.as_posix()})",
        "",
        "Where the time goes, the profiles behind each target that is not met, and how to "
        "profile: [docs/performance.md](docs/performance.md).",
        "",
        "## Targets",
        "",
        "| target | limit | measured | met |",
        "|---|---|---|---|",
        *[
            f"| {t.name} | {t.limit} | {t.measured} | {'yes' if t.met else '**no**'} |"
            for t in found
        ],
        "",
        "## Sequenced Ping",
        "",
        *_call_table(results, "ping"),
        "",
        _sync_line(results),
        "",
        *_baseline_table(results),
        "## Sequenced DelegateTask(echo)",
        "",
        "The bare servicer answers with a completed task at once; the shipped server creates "
        "the task, runs the handler and waits for it, so this ratio prices the task machinery "
        "as well as the checks.",
        "",
        *_call_table(results, "delegate"),
        "",
        "## Rejected calls",
        "",
        "A flood of calls the server turns away before any servicer runs: an unknown session, "
        "a sequence gap, a replay of an accepted sequence with other bytes.",
        "",
        *_rejection_table(results),
        "",
        "## Redis store",
        "",
        "Round trips are Redis's own count of the reads it served (`total_reads_processed`), "
        "per call, the server's health checks (one a second) and sweeps included; "
        "commands likewise (`total_commands_processed`, which counts each `redis.call` of a "
        "Lua script too). `tests/server/test_redis_round_trips.py` counts them on the wire: "
        "exactly one per call. The admission is one "
        "round trip on the call's path; the outcome kept for resends is written after the "
        "answer, riding on the session's next admission when one comes soon.",
        "",
        *_redis_table(results),
        "",
        "A DelegateTask(echo) on Redis: the admission, then one script that stores, queues "
        "and claims the task (the replica that took the call has room), then one that "
        "records its end, fenced by its claim: three round trips on the call's path, "
        "which the same test file counts on the wire. The idle runners are not woken by a "
        "task claimed as it was queued.",
        "",
        *_redis_table(results, "delegate"),
        "",
        "With `--redis-wait-replicas 1` (a Redis of its own with one replica, on this "
        "machine): every admission is followed, in the same round trip, by Redis `WAIT` for "
        "the replica to have it.",
        "",
        *_wait_table(results),
        "",
        "On a local Redis Cluster (three primaries with a replica each, on this machine), "
        "against one Redis in the same run: every session's keys and its index shard share "
        "a slot, so the admission is still one round trip, to the primary of that slot. "
        "Round trips and Redis CPU are summed over the primaries.",
        "",
        *_cluster_table(results),
        "",
        "## Two workers on one port",
        "",
        "`peer-grpc serve --workers 2` (SO_REUSEPORT) on the Redis store, against one worker. "
        "On a 2-core machine the load generator and Redis compete with the workers for the "
        "same two cores, so this shows the ceiling of this machine more than the scaling.",
        "",
        *_workers_table(results),
        "",
        "## Session store",
        "",
        "`python -m benchmarks.stores N`: a memory store of N established sessions, each 1,000 "
        "calls into its life. Bytes are what the store allocated (tracemalloc), everything "
        "included (snapshot fields, ids, peer id, token hash, indexes, expiry buckets, window), "
        "the retry cache aside (its column: one cached outcome). Times are per operation, with "
        "the cyclic garbage collector paused; a full collection pass, which CPython starts on "
        "its own from time to time, is in the last column. Every timed admission is its "
        "session's first in a new second (its deadline moves in the expiry wheel), whatever "
        "the size, so that the sizes differ in size alone.",
        "",
        *_store_table(results.raw["stores"]),
        "",
    ]
    return "\n".join(lines)


def _update_readme(readme: Path, results: Results, found: list[Target]) -> None:
    text = readme.read_text()
    if README_START not in text:
        return
    headline = _headline(results, found)
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    readme.write_text(pattern.sub(lambda _: f"{README_START}\n{headline}\n{README_END}", text))


def _headline(results: Results, found: list[Target]) -> str:
    rows = ["| | measured | target |", "|---|---|---|"]
    wanted = (
        "server CPU per sequenced Ping",
        "calls/s vs bare, Ping",
        "p99 latency vs bare, Ping",
        "bytes per session",
        "Redis round trips",
        "Redis calls/s",
    )
    for target in found:
        if target.name.startswith(wanted):
            rows.append(f"| {target.name} | {target.measured} | {target.limit} |")
    met = sum(t.met for t in found)
    return "\n".join(
        [
            f"Measured by `make bench` against a bare grpc.aio servicer in the same run "
            f"({met} of {len(found)} targets met; all figures, the machine and the method in "
            "[BENCHMARKS.md](BENCHMARKS.md)):",
            "",
            *rows,
        ]
    )


def _chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (calls, stores) = plt.subplots(1, 2, figsize=(13, 4.8))
    servers = [s for s in results.servers if s != BARE and not s.endswith("workers")]
    width = 0.8 / max(len(servers), 1)
    for index, server in enumerate(servers):
        xs, rates, cpus = [], [], []
        for position, sessions in enumerate(results.sessions):
            if results.has(server, "ping", sessions) and results.has(BARE, "ping", sessions):
                xs.append(position + index * width)
                rates.append(results.paired("calls_per_second", server, "ping", sessions).median)
                cpus.append(
                    results.paired("server_cpu_us_per_call", server, "ping", sessions).median
                )
        calls.bar(xs, rates, width, label=f"{server} calls/s")
        calls.plot(xs, cpus, "k_", markersize=14, markeredgewidth=2)
    calls.axhline(1.0, color="grey", linewidth=0.8)
    calls.set_xticks(
        [p + width * (len(servers) - 1) / 2 for p in range(len(results.sessions))],
        [f"{s} sessions" for s in results.sessions],
    )
    calls.set_ylabel("ratio to bare grpc.aio (bars: calls/s; dashes: CPU/call)")
    calls.set_title("Sequenced Ping")
    calls.legend(fontsize=8)

    stores_by_mode = [s for s in results.raw["stores"] if not s["window"]]
    sizes = [s["sessions"] for s in stores_by_mode]
    stores.plot(sizes, [s["admit_us"] for s in stores_by_mode], "o-", label="admit (us)")
    stores.plot(
        sizes,
        [s["sweep_us_per_expired"] for s in stores_by_mode],
        "s-",
        label="sweep per expired (us)",
    )
    stores.set_xscale("log")
    stores.set_ylim(bottom=0)
    stores.set_xlabel("sessions in the memory store")
    stores.set_ylabel("microseconds")
    bytes_axis = stores.twinx()
    bytes_axis.plot(
        sizes, [s["bytes_per_session"] for s in stores_by_mode], "^--", color="tab:green"
    )
    bytes_axis.set_ylabel("bytes per session (dashed)")
    bytes_axis.set_ylim(0, 600)
    stores.set_title("Memory store against session count")
    stores.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
