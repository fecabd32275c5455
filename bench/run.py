"""The chat's benchmark suite: the project side by side with two references, in one run.

    python -m bench.run [--quick] [--scenarios fanout,rooms,idle,connect,recovery] [--json out.json]

For each scenario it starts, one after the other, a fresh server of each kind
(:mod:`bench.servers`): the project (gunicorn as the README runs it,
persistence on), the ``websockets`` peer and the floor (:mod:`bench.peers`),
each pinned to core 0, and drives it with ``bench/loadgen.js`` (Node, the
``ws`` package) pinned to core 1. It prints one table with the ratios
project/websockets and project/floor, checks the targets of the performance
issue, and writes every figure as JSON with ``--json``. Each case runs
``--repeat`` times (3; 1 with ``--quick``), interleaved, and the table shows
medians. The full run takes about 8 minutes, ``--quick`` about one;
everything runs on 127.0.0.1 only and every step has a time limit.
bench/README.md explains each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import rolling
from bench.servers import KINDS, REPO_ROOT, StartError, can_pin, pinned, raise_nofile, serving

BENCH = REPO_ROOT / "bench"
LOADGEN = BENCH / "loadgen.js"
#: The load generator's own pauses must not pass for the server's latency. V8's
#: mark-compact stops it for 5 to 25 ms, and with the default heuristics it ran every
#: 2 s or so in rooms: here a young generation large enough that a message's garbage
#: dies there (scavenges take under a millisecond), an old generation allowed to grow
#: 5× before it is collected, no collections for being idle, and one full collection
#: before each measured phase (``collectGarbage`` in loadgen.js).
NODE_FLAGS = (
    "--min-semi-space-size=16",
    "--max-semi-space-size=32",
    "--heap-growing-percent=400",
    "--no-memory-reducer",
    "--expose-gc",
)
SERVER_CPU, LOADGEN_CPU = 0, 1
SCENARIOS = ("fanout", "rooms", "idle", "connect", "recovery")

Result = dict[str, Any]


# -- what each scenario runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One measurement: a scenario with its parameters, run against every kind of server."""

    key: str  # "fanout N=1000"
    scenario: str
    params: dict[str, Any]
    #: CHAT_* settings for the project in this case
    settings: dict[str, object]
    deadline: float


def cases(scenarios: list[str], quick: bool) -> list[Case]:
    """The measurements of a run: short ones with ``quick``."""
    out: list[Case] = []
    if "fanout" in scenarios:
        for members in [1000] if quick else [100, 1000, 5000]:
            out.append(
                Case(
                    f"fanout N={members}",
                    "fanout",
                    {"members": members, "warmup": 0.5 if quick else 1.0, "seconds": 2.0 if quick else 5.0},
                    # the bench client must not be cut off as a slow reader (1008)
                    {"send_buffer": 64 * 1024 * 1024},
                    deadline=120,
                )
            )
    if "rooms" in scenarios:
        params = {
            "clients": 2000,
            "roomSize": 10,
            "rate": 2,
            "warmup": 0.5 if quick else 1.0,
            "seconds": 4.0 if quick else 10.0,
            "drain": 3.0,
        }
        out.append(Case("rooms", "rooms", params, {}, deadline=120))
    if "idle" in scenarios:
        clients = 2000 if quick else 10_000
        out.append(
            Case(
                f"idle {clients:,}",
                "idle",
                {"clients": clients, "roomSize": 10, "hold": 1.0 if quick else 2.0},
                {"max_connections": max(10_000, clients + 100)},
                deadline=240,
            )
        )
    if "connect" in scenarios:
        clients = 500 if quick else 2000
        out.append(Case("connect", "connect", {"clients": clients, "concurrency": 10}, {}, deadline=180))
    if "recovery" in scenarios:
        params = {"messages": 1000, "trials": 50 if quick else 200}
        out.append(Case("recovery", "recovery", params, {}, deadline=120))
    return out


# -- running ----------------------------------------------------------------------------------------------------------


def ensure_loadgen() -> None:
    """Node and the pinned ``ws`` package (``npm ci`` in bench/ when node_modules is missing)."""
    if shutil.which("node") is None:
        sys.exit("bench: node is required for the load generator (bench/loadgen.js)")
    if not (BENCH / "node_modules" / "ws" / "package.json").exists():
        print("bench: installing the load generator's packages (npm ci in bench/)", file=sys.stderr)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True, timeout=300)


def run_loadgen(config: dict[str, Any], cpu: int | None, log_path: Path, timeout: float) -> Result:
    """Run bench/loadgen.js with ``config``; its JSON result (``error`` set if it failed)."""
    command = pinned(["node", *NODE_FLAGS, str(LOADGEN), json.dumps(config)], cpu)
    with log_path.open("wb") as log:
        try:
            done = subprocess.run(
                command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, timeout=timeout, preexec_fn=raise_nofile
            )
        except subprocess.TimeoutExpired:
            return {"error": f"the load generator ran over {timeout:.0f} s and was killed"}
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"error": f"no result from the load generator (exit status {done.returncode})"}
    if done.returncode != 0 and "error" not in result:
        result["error"] = f"exit status {done.returncode}"
    return result


def measure(case: Case, kind: str, workdir: Path, pin: bool) -> Result:
    """One case against one fresh server of ``kind``."""
    server_cpu = SERVER_CPU if pin else None
    settings = case.settings if kind == "project" else {}
    try:
        with serving(kind, workdir, server_cpu, **settings) as server:
            config = {
                "scenario": case.scenario,
                "target": server.loadgen_target(),
                "serverPid": server.pid,
                "clkTck": os.sysconf("SC_CLK_TCK"),
                "deadline": case.deadline,
                **case.params,
            }
            result = run_loadgen(config, LOADGEN_CPU if pin else None, workdir / "loadgen.log", case.deadline + 30)
            result["serverAffinity"] = server.affinity()
            if "error" in result:
                result["serverLog"] = server.logs()[-2000:]
            return result
    except StartError as error:
        return {"error": str(error)}


# -- the table ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    label: str
    get: Callable[[Result], float | None]
    fmt: str
    #: "higher" or "lower" is better; "" for context figures
    better: str


def _path(*keys: str) -> Callable[[Result], float | None]:
    def get(result: Result) -> float | None:
        value: Any = result
        for key in keys:
            if not isinstance(value, dict) or value.get(key) is None:
                return None
            value = value[key]
        return float(value)

    return get


METRICS: dict[str, list[Metric]] = {
    "fanout": [
        Metric("deliveries/s", _path("deliveriesPerSecond"), "{:,.0f}", "higher"),
        Metric("server CPU µs/delivery", _path("serverCpuUsPerDelivery"), "{:.2f}", "lower"),
        Metric("latency p50 ms", _path("latencyMs", "p50"), "{:.1f}", "lower"),
        Metric("latency p99 ms", _path("latencyMs", "p99"), "{:.1f}", "lower"),
        Metric("server CPU %", _path("serverCpuPercent"), "{:.0f}", ""),
        Metric("loadgen CPU %", _path("loadgenCpuPercent"), "{:.0f}", ""),
    ],
    "rooms": [
        Metric("delivered/expected", _path("deliveredRatio"), "{:.4f}", "higher"),
        Metric("latency p50 ms", _path("latencyMs", "p50"), "{:.2f}", "lower"),
        Metric("latency p99 ms", _path("latencyMs", "p99"), "{:.2f}", "lower"),
        Metric("p99 of a typical second ms", _path("secondP99Ms"), "{:.2f}", "lower"),
        Metric("server CPU µs/delivery", _path("serverCpuUsPerDelivery"), "{:.2f}", "lower"),
        Metric("server CPU %", _path("serverCpuPercent"), "{:.0f}", ""),
        Metric("loadgen CPU %", _path("loadgenCpuPercent"), "{:.0f}", ""),
        Metric("loadgen stalled, max ms", _path("loadgenLoopDelayMs", "max"), "{:.1f}", ""),
    ],
    "idle": [
        Metric("RSS bytes/connection", _path("rssBytesPerConnection"), "{:,.0f}", "lower"),
        Metric("connections open", _path("open"), "{:,.0f}", ""),
        Metric("seconds to connect all", _path("connectSeconds"), "{:.1f}", ""),
    ],
    "connect": [
        Metric("server CPU µs/connection", _path("serverCpuUsPerConnection"), "{:,.0f}", "lower"),
        Metric("connections/s", _path("connectionsPerSecond"), "{:,.0f}", "higher"),
        Metric("open→joined p99 ms", _path("latencyMs", "p99"), "{:.2f}", "lower"),
        Metric("server CPU µs/session (POST)", _path("serverCpuUsPerSession"), "{:,.0f}", ""),
    ],
    "recovery": [
        Metric("join→joined p50 ms", _path("latencyMs", "p50"), "{:.2f}", "lower"),
        Metric("join→joined p99 ms", _path("latencyMs", "p99"), "{:.2f}", "lower"),
        Metric("server CPU ms/replay", _path("serverCpuMsPerReplay"), "{:.2f}", "lower"),
        Metric("joined bytes", _path("joinedBytes"), "{:,.0f}", ""),
    ],
}


def median_of(metric: Metric, runs: list[Result]) -> float | None:
    """The median of a figure over the runs that have it (the lower middle of an even count)."""
    values = sorted(v for v in (metric.get(run) for run in runs if "error" not in run) if v is not None)
    return values[(len(values) - 1) // 2] if values else None


def table_rows(results: dict[str, dict[str, list[Result]]], case_list: list[Case]) -> list[dict[str, Any]]:
    """One row per figure: each server's median over the repetitions, and the two ratios."""
    rows = []
    for case in case_list:
        for metric in METRICS[case.scenario]:
            values = {kind: median_of(metric, results[case.key].get(kind, [])) for kind in KINDS}
            project = values["project"]

            def ratio(peer: float | None, project: float | None = project) -> float | None:
                return project / peer if project is not None and peer else None

            rows.append(
                {
                    "case": case.key,
                    "metric": metric.label,
                    "better": metric.better,
                    "format": metric.fmt,
                    **values,
                    "project/websockets": ratio(values["websockets"]),
                    "project/floor": ratio(values["floor"]),
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table (also valid Markdown)."""
    header = ["case", "figure", "better", "project", "websockets", "floor", "proj/ws", "proj/floor"]
    lines = []
    for row in rows:
        cells = [row["case"], row["metric"], row["better"]]
        for kind in KINDS:
            cells.append("—" if row[kind] is None else row["format"].format(row[kind]))
        for key in ("project/websockets", "project/floor"):
            cells.append("—" if row[key] is None or not row["better"] else f"{row[key]:.2f}×")
        lines.append(cells)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join("-" * (w + 2) if i < 3 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(cells) for cells in lines)])


# -- the targets of the issue ---------------------------------------------------------------------------------------


def targets(rows: list[dict[str, Any]], case_list: list[Case]) -> list[dict[str, Any]]:
    """Each target of the performance issue that this run measured: met or not, and the figure."""

    def row(case_prefix: str, metric: str) -> dict[str, Any] | None:
        for r in rows:
            if r["case"].startswith(case_prefix) and r["metric"] == metric:
                return r
        return None

    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: float | None, op: str, shown: str) -> None:
        met = None if value is None or limit is None else (value >= limit if op == ">=" else value <= limit)
        checks.append({"target": name, "met": met, "measured": shown})

    fanout = row("fanout N=1000", "deliveries/s")
    if fanout:
        ratio = fanout["project/websockets"]
        check("fanout N=1000: ≥ 1.5× websockets deliveries/s", ratio, 1.5, ">=", _times(ratio))
        ratio = fanout["project/floor"]
        check("fanout N=1000: ≥ 1.0× the floor's deliveries/s", ratio, 1.0, ">=", _times(ratio))
    idle = row("idle", "RSS bytes/connection")
    if idle:
        clients = next(c.params["clients"] for c in case_list if c.scenario == "idle")
        value = idle["project"] if clients >= 10_000 else None
        shown = "—" if idle["project"] is None else f"{idle['project'] / 1024:.1f} KiB at {clients:,} connections"
        check("idle: ≤ 10 KiB per connection at 10,000 connections", value, 10 * 1024, "<=", shown)
    connect = row("connect", "server CPU µs/connection")
    if connect:
        ratio = connect["project/websockets"]
        check("connect: server CPU per connection ≤ websockets'", ratio, 1.0, "<=", _times(ratio))
    p99 = row("rooms", "latency p99 ms")
    if p99:
        shown = "—" if p99["project"] is None else f"{p99['project']:.2f} ms"
        check("rooms: p99 ≤ 5 ms", p99["project"], 5.0, "<=", shown)
    cpu = row("rooms", "server CPU µs/delivery")
    if cpu:
        ratio = cpu["project/websockets"]
        check("rooms: CPU per delivery ≤ websockets'", ratio, 1.0, "<=", _times(ratio))
    return checks


def _times(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}×"


# -- the machine ----------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    ws_package = json.loads((BENCH / "node_modules" / "ws" / "package.json").read_text())["version"]
    versions = {name: metadata.version(name) for name in ("gevent", "greenlet", "gunicorn", "flask", "websockets")}
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **versions,
        "node": node,
        "ws": ws_package,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def noise(results: dict[str, dict[str, list[Result]]]) -> list[str]:
    """Warnings about figures that other processes, the machine or a saturated client may have skewed."""
    notes = []
    for key, by_kind in results.items():
        for kind, runs in by_kind.items():
            where = f"{key} / {kind}"
            for number, result in enumerate(runs, 1):
                if "error" in result:
                    notes.append(f"{where} (run {number}): FAILED: {result['error'].splitlines()[0]}")
                closed = result.get("errors", {}).get("closed")
                if closed:
                    codes = result["errors"]["closeCodes"]
                    notes.append(f"{where} (run {number}): {closed} connections closed early {codes}")
            done = [result for result in runs if "error" not in result]
            noisy = [r for r in done if r.get("otherCpuPercent", 0) > 15]
            busiest = sorted({r["otherBusiest"][0]["name"] for r in noisy if r.get("otherBusiest")})
            checks = [
                (_all(done, "loadgenCpuPercent"), 90, "the load generator was saturated", "% of its core"),
                (_all(done, "otherCpuPercent"), 15, f"other processes ({', '.join(busiest)}) ran", "% of a core"),
                (_all(done, "stealCpuPercent"), 5, "the host stole CPU time", "% of a core"),
            ]
            if done and done[0].get("scenario") == "rooms":
                stalls = [float(r["loadgenLoopDelayMs"]["max"]) for r in done if r.get("loadgenLoopDelayMs")]
                checks.append((stalls, 20, "the load generator stood still once (see latency p99)", " ms"))
            for values, limit, text, unit in checks:
                over = [v for v in values if v > limit]
                if over:
                    notes.append(f"{where}: {text} in {len(over)} of {len(done)} runs (up to {max(over):.0f}{unit})")
    return notes


def _all(runs: list[Result], key: str) -> list[float]:
    return [float(run[key]) for run in runs if run.get(key) is not None]


# -- main -----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fanout N=1000 only, shorter phases, one run each")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated, from: %(default)s (default: all)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON to PATH")
    parser.add_argument("--servers", default=",".join(KINDS), help="comma-separated, from: %(default)s")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the servers' and loadgen's logs in DIR")
    parser.add_argument(
        "--repeat", type=int, metavar="R", help="measure each case R times, interleaved; medians (default 3, quick 1)"
    )
    args = parser.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    if "rolling" in scenarios:  # the project alone, two workers and Redis, through a restart: bench/rolling.py
        return rolling.main(["--json", str(args.json)] if args.json else [], quick=args.quick)
    if unknown := set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    repeat = args.repeat or (1 if args.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")

    raise_nofile()
    ensure_loadgen()
    pin = can_pin()
    if not pin:
        print("bench: no taskset or fewer than 2 cores: server and load generator are NOT pinned", file=sys.stderr)
    case_list = cases(scenarios, args.quick)
    info = machine()
    print(
        f"bench: {info['nproc']} cores ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}, "
        f"gevent {info['gevent']}, node {info['node']}; load average {' '.join(info['loadavg'])}",
        file=sys.stderr,
    )
    started = time.monotonic()
    results: dict[str, dict[str, list[Result]]] = {}
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as scratch:
        root = args.keep or Path(scratch)
        for number, case in enumerate(case_list):
            results[case.key] = {kind: [] for kind in kinds}
            for run in range(1, repeat + 1):
                for kind in kinds:
                    print(f"bench: {case.key} — {kind}, run {run} of {repeat} …", file=sys.stderr, flush=True)
                    workdir = root / f"{number:02d}-{case.scenario}-{kind}-{run}"
                    result = measure(case, kind, workdir, pin)
                    results[case.key][kind].append(result)
                    if "error" in result:
                        print(f"bench: {case.key} — {kind} FAILED: {result['error'][:2000]}", file=sys.stderr)
    elapsed = time.monotonic() - started

    rows = table_rows(results, case_list)
    checks = targets(rows, case_list)
    notes = noise(results)
    pinning = f"servers on core {SERVER_CPU}, load generator on core {LOADGEN_CPU}" if pin else "not pinned"
    runs = f"median of {repeat} runs each" if repeat > 1 else "one run each"
    print(f"\nchat benchmark — {'quick' if args.quick else 'full'} run, {runs}, {elapsed:.0f} s, {pinning}")
    print(
        f"{info['nproc']} × {info['cpu']}, Linux {info['kernel']}, Python {info['python']}, gevent {info['gevent']}\n"
    )
    print(format_table(rows))
    print("\ntargets (docs/performance.md):")
    for item in checks:
        state = {True: "met", False: "NOT met", None: "not measured"}[item["met"]]
        print(f"  [{state:^12}] {item['target']}: {item['measured']}")
    if notes:
        print("\nnotes:")
        for note in notes:
            print(f"  - {note}")
    if args.json:
        report = {
            "quick": args.quick,
            "seconds": elapsed,
            "pinned": pin,
            "repeat": repeat,
            "machine": info,
            "cases": [case.__dict__ for case in case_list],
            "results": results,
            "table": rows,
            "targets": checks,
            "notes": notes,
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"\nbench: figures written to {args.json}", file=sys.stderr)
    failed = any("error" in run for by_kind in results.values() for runs in by_kind.values() for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
