"""The chat's benchmark suite: the project side by side with three references, in one run.

    python -m bench.run [--quick] [--scenarios fanout,rooms,idle,connect,recovery,compression] [--json out.json]
    python -m bench.run --scenarios idle100k [--idle-connections 100000]

For each scenario it starts, one after the other, a fresh server of each kind
(:mod:`bench.servers`): the project (gunicorn as the README runs it,
persistence on), the ``websockets`` peer, the floor and Node's ``ws``
(:mod:`bench.peers`), each pinned to core 0, and drives it with
``bench/loadgen.js`` (Node, the ``ws`` package) pinned to core 1. It prints
one table with the ratios of the project to each peer, a table of the
project's compression modes, checks the targets of the performance issue,
and writes every figure as JSON with ``--json``. Each case runs ``--repeat``
times (3; 1 with ``--quick``), interleaved, and the tables show medians. The
full run takes about 11 minutes, ``--quick`` about two; everything runs on
loopback only and every step has a time limit. bench/README.md explains
each figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
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

from bench import rolling, sessions
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
SCENARIOS = ("fanout", "rooms", "idle", "connect", "recovery", "compression")
#: Scenarios run only when named in ``--scenarios``.
EXTRA_SCENARIOS = ("idle100k",)
#: The peers, in the table's order, and the ratio columns' short names.
PEERS = tuple(kind for kind in KINDS if kind != "project")
SHORT = {"websockets": "ws"}
#: CHAT_DEFLATE of each run of ``compression``, and the ratios its table shows.
DEFLATE_VARIANTS: dict[str, dict[str, object]] = {mode: {"deflate": mode} for mode in ("off", "shared", "per-client")}
DEFLATE_RATIOS = (("shared", "off"), ("per-client", "shared"))
#: Messages a second in the paced compression case: 8,000 deliveries a second to 1,000 members,
#: which every mode keeps up with (per-client compression peaks at about 11,000 on the 2-core machine).
PACED_RATE = 8
#: Connections per loopback source address in idle100k: Linux has about 28,000 ephemeral
#: ports per (source address, server address, server port).
CONNECTIONS_PER_SOURCE = 20_000

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
    #: The project alone (the peers are skipped).
    project_only: bool = False
    #: The project alone, once per variant: its name and the CHAT_* settings added for it
    #: (the variants take the servers' place in the interleaving and get a table of their own).
    variants: dict[str, dict[str, object]] | None = None
    #: (numerator, denominator) variants whose ratios the variants' table shows.
    ratios: tuple[tuple[str, str], ...] = ()
    #: Open files the server and the load generator each need (checked before starting).
    files: int = 0

    def runs(self, kinds: list[str]) -> list[tuple[str, str]]:
        """(label, kind) of each server this case runs, in order: kinds, or the project's variants."""
        if self.variants is not None:
            return [(name, "project") for name in self.variants] if "project" in kinds else []
        return [(kind, kind) for kind in kinds if kind == "project" or not self.project_only]


def cases(scenarios: list[str], quick: bool, idle_connections: int = 100_000) -> list[Case]:
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
    if "compression" in scenarios:
        # fanout N=1000, the clients offering permessage-deflate, with ~400-byte texts of chat
        # words (the server compresses messages of 256 bytes and more): CHAT_DEFLATE off, shared
        # (compressed once per broadcast) and per-client (once per member)
        compression: dict[str, Any] = {
            "members": 1000,
            "warmup": 0.5 if quick else 1.0,
            "seconds": 2.0 if quick else 5.0,
            "deflate": True,
            "text": "prose",
            "textBytes": 400,
        }
        settings: dict[str, object] = {"send_buffer": 64 * 1024 * 1024}
        out.append(
            Case(
                "compression N=1000",
                "compression",
                compression,
                settings,
                deadline=120,
                variants=DEFLATE_VARIANTS,
                ratios=DEFLATE_RATIOS,
            )
        )
        # the same, paced at PACED_RATE messages a second: as fast as the sender goes, the members'
        # inflating saturates the load generator with shared compression (so the server idles and its
        # CPU per delivery rises), and the server itself with per-client; paced, the three modes
        # deliver the same per second, and their CPU per delivery compares at equal load
        out.append(
            Case(
                f"compression N=1000, {PACED_RATE} msg/s",
                "compression",
                {**compression, "rate": PACED_RATE},
                settings,
                deadline=120,
                variants=DEFLATE_VARIANTS,
                ratios=DEFLATE_RATIOS,
            )
        )
    if "idle100k" in scenarios:
        clients = idle_connections
        sources = [f"127.0.0.{2 + i}" for i in range(math.ceil(clients / CONNECTIONS_PER_SOURCE))]
        idle100k: dict[str, Any] = {
            "clients": clients,
            "roomSize": 10,
            "hold": 2.0,
            "sourceAddresses": sources,
            "tolerant": True,
        }
        # the project's cap on connections (CHAT_MAX_CONNECTIONS, 10,000 by default) lifted for this run only
        settings = {"max_connections": clients + 100}
        out.append(
            Case(
                f"idle100k {clients:,}",
                "idle100k",
                idle100k,
                settings,
                deadline=120 + clients / 200,
                project_only=True,
                files=clients + 1024,
            )
        )
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


def measure(case: Case, kind: str, workdir: Path, pin: bool, variant: str = "") -> Result:
    """One case against one fresh server of ``kind`` (the project: in ``variant``, if the case has them)."""
    server_cpu = SERVER_CPU if pin else None
    settings = {**case.settings, **(case.variants or {}).get(variant, {})} if kind == "project" else {}
    files, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files < case.files:
        return {
            "error": f"the open-file limit is {files:,} (hard limit {hard:,}): "
            f"{case.key} needs about {case.files:,} descriptors in the server and as many in the load generator; "
            "raise the hard limit (ulimit -Hn, LimitNOFILE=, or root with CAP_SYS_RESOURCE) or pass a smaller "
            "--idle-connections"
        }
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
    "compression": [
        Metric("deliveries/s", _path("deliveriesPerSecond"), "{:,.0f}", "higher"),
        Metric("server CPU µs/delivery", _path("serverCpuUsPerDelivery"), "{:.2f}", "lower"),
        Metric("latency p99 ms", _path("latencyMs", "p99"), "{:.1f}", "lower"),
        Metric("bytes read/delivery", _path("wireBytesPerDelivery"), "{:,.0f}", "lower"),
        Metric("server CPU %", _path("serverCpuPercent"), "{:.0f}", ""),
        Metric("loadgen CPU %", _path("loadgenCpuPercent"), "{:.0f}", ""),
    ],
    "idle100k": [
        Metric("RSS bytes/connection", _path("rssBytesPerConnection"), "{:,.0f}", "lower"),
        Metric("server RSS MB, all connected", lambda r: _mb(r, "rssAfter"), "{:,.0f}", "lower"),
        Metric("connections/s", _path("connectionsPerSecond"), "{:,.0f}", "higher"),
        Metric("connections open", _path("open"), "{:,.0f}", ""),
        Metric("connections failed", _path("failed"), "{:,.0f}", ""),
        Metric("loadgen RSS MB", lambda r: _mb(r, "loadgenRss"), "{:,.0f}", ""),
    ],
    "recovery": [
        Metric("join→joined p50 ms", _path("latencyMs", "p50"), "{:.2f}", "lower"),
        Metric("join→joined p99 ms", _path("latencyMs", "p99"), "{:.2f}", "lower"),
        Metric("server CPU ms/replay", _path("serverCpuMsPerReplay"), "{:.2f}", "lower"),
        Metric("joined bytes", _path("joinedBytes"), "{:,.0f}", ""),
    ],
}


def _mb(result: Result, key: str) -> float | None:
    value = _path(key)(result)
    return None if value is None else value / 1e6


def median_of(metric: Metric, runs: list[Result]) -> float | None:
    """The median of a figure over the runs that have it (the lower middle of an even count)."""
    values = sorted(v for v in (metric.get(run) for run in runs if "error" not in run) if v is not None)
    return values[(len(values) - 1) // 2] if values else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def table_rows(results: dict[str, dict[str, list[Result]]], case_list: list[Case]) -> list[dict[str, Any]]:
    """One row per figure of the cases with no variants: each server's median, and project/peer for each peer."""
    rows = []
    for case in case_list:
        if case.variants is not None:
            continue
        for metric in METRICS[case.scenario]:
            values = {kind: median_of(metric, results[case.key].get(kind, [])) for kind in KINDS}
            rows.append(
                {
                    "case": case.key,
                    "metric": metric.label,
                    "better": metric.better,
                    "format": metric.fmt,
                    **values,
                    **{f"project/{peer}": _ratio(values["project"], values[peer]) for peer in PEERS},
                }
            )
    return rows


def _short(ratio: str) -> str:
    """A ratio's column name: ``project/websockets`` as ``proj/ws``."""
    numerator, _, denominator = ratio.partition("/")
    return f"{'proj' if numerator == 'project' else numerator}/{SHORT.get(denominator, denominator)}"


def variant_rows(results: dict[str, dict[str, list[Result]]], case: Case) -> list[dict[str, Any]]:
    """One row per figure of a case with variants: each variant's median, and the case's ratios."""
    rows = []
    for metric in METRICS[case.scenario]:
        values = {name: median_of(metric, results[case.key].get(name, [])) for name in case.variants or {}}
        ratios = {f"{a}/{b}": _ratio(values[a], values[b]) for a, b in case.ratios}
        rows.append(
            {
                "case": case.key,
                "metric": metric.label,
                "better": metric.better,
                "format": metric.fmt,
                **values,
                **ratios,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None, ratios: list[str] | None = None) -> str:
    """The rows as a fixed-width text table (also valid Markdown): a column per server and per ratio.

    By default the servers are :data:`KINDS` and the ratios project/peer; a
    variants' table names its own (:func:`variant_rows`).
    """
    columns = list(KINDS) if columns is None else columns
    ratios = [f"project/{peer}" for peer in PEERS] if ratios is None else ratios
    header = ["case", "figure", "better", *columns, *(_short(ratio) for ratio in ratios)]
    lines = []
    for row in rows:
        cells = [row["case"], row["metric"], row["better"]]
        for column in columns:
            cells.append("—" if row[column] is None else row["format"].format(row[column]))
        for key in ratios:
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
    for members in (1000, 5000):  # issue 17
        fanout = row(f"fanout N={members}", "deliveries/s")
        p99 = row(f"fanout N={members}", "latency p99 ms")
        if fanout:
            ratio = fanout.get("project/nodews")
            shown = (
                _times(ratio)
                if p99 is None or p99["project"] is None
                else f"{_times(ratio)}, p99 {p99['project']:.1f} ms"
            )
            check(f"fanout N={members}: ≥ 1.5× Node ws deliveries/s", ratio, 1.5, ">=", shown)
            ratio = fanout.get("project/floor")
            check(f"fanout N={members}: ≥ 1.3× the floor's deliveries/s", ratio, 1.3, ">=", _times(ratio))
    idle = row("idle ", "RSS bytes/connection")
    if idle:
        clients = next(c.params["clients"] for c in case_list if c.scenario == "idle")
        value = idle["project"] if clients >= 10_000 else None
        shown = "—" if idle["project"] is None else f"{idle['project']:,.0f} B at {clients:,} connections"
        check("idle: ≤ 7 KB per connection at 10,000 connections", value, 7000, "<=", shown)
    for metric in ("server CPU ms/replay", "join→joined p99 ms"):  # issue 17
        recovery = row("recovery", metric)
        if recovery:
            ratio = recovery["project/websockets"]
            check(f"recovery: {metric} ≤ websockets'", ratio, 1.0, "<=", _times(ratio))
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
    rss = row("idle100k", "server RSS MB, all connected")
    opened = row("idle100k", "connections open")
    if rss and opened:
        clients = next(c.params["clients"] for c in case_list if c.scenario == "idle100k")
        full = clients >= 100_000
        shown = "—" if rss["project"] is None else f"{rss['project']:,.0f} MB at {clients:,} connections"
        check("idle100k: server RSS < 1 GB at 100,000 connections", rss["project"] if full else None, 1000, "<=", shown)
        shown = "—" if opened["project"] is None else f"{opened['project']:,.0f} of {clients:,}"
        check(
            "idle100k: all 100,000 connections open at once", opened["project"] if full else None, 100_000, ">=", shown
        )
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
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from: %(default)s (the default), and {', '.join(EXTRA_SCENARIOS)}",
    )
    parser.add_argument(
        "--idle-connections",
        type=int,
        default=100_000,
        metavar="N",
        help="connections idle100k holds (default %(default)s)",
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
    if "sessions" in scenarios:  # the project alone, directly and behind nginx: bench/sessions.py
        return sessions.main(["--json", str(args.json)] if args.json else [], quick=args.quick)
    if unknown := set(scenarios) - set(SCENARIOS) - set(EXTRA_SCENARIOS):
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if unknown := set(kinds) - set(KINDS):
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    repeat = args.repeat or (1 if args.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.idle_connections < 1:
        parser.error("--idle-connections must be at least 1")

    raise_nofile()
    ensure_loadgen()
    pin = can_pin()
    if not pin:
        print("bench: no taskset or fewer than 2 cores: server and load generator are NOT pinned", file=sys.stderr)
    case_list = cases(scenarios, args.quick, args.idle_connections)
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
            runs_of_case = case.runs(kinds)
            if not runs_of_case:
                print(f"bench: {case.key} is for the project alone: skipped", file=sys.stderr)
            results[case.key] = {label: [] for label, _ in runs_of_case}
            for run in range(1, repeat + 1):
                for label, kind in runs_of_case:
                    print(f"bench: {case.key} — {label}, run {run} of {repeat} …", file=sys.stderr, flush=True)
                    workdir = root / f"{number:02d}-{case.scenario}-{label}-{run}"
                    result = measure(case, kind, workdir, pin, label if case.variants else "")
                    results[case.key][label].append(result)
                    if "error" in result:
                        print(f"bench: {case.key} — {label} FAILED: {result['error'][:2000]}", file=sys.stderr)
    elapsed = time.monotonic() - started

    rows = table_rows(results, case_list)
    variant_tables = {
        case.key: variant_rows(results, case) for case in case_list if case.variants and results[case.key]
    }
    checks = targets(rows, case_list)
    notes = noise(results)
    pinning = f"servers on core {SERVER_CPU}, load generator on core {LOADGEN_CPU}" if pin else "not pinned"
    runs = f"median of {repeat} runs each" if repeat > 1 else "one run each"
    print(f"\nchat benchmark — {'quick' if args.quick else 'full'} run, {runs}, {elapsed:.0f} s, {pinning}")
    print(
        f"{info['nproc']} × {info['cpu']}, Linux {info['kernel']}, Python {info['python']}, gevent {info['gevent']}\n"
    )
    if rows:
        print(format_table(rows))
    for case in case_list:
        if case.key in variant_tables:
            print(
                f"\n{case.key}, the project alone: {', '.join(f'CHAT_DEFLATE={name}' for name in case.variants or {})}"
            )
            print(
                format_table(variant_tables[case.key], list(case.variants or {}), [f"{a}/{b}" for a, b in case.ratios])
            )
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
            "variantTables": variant_tables,
            "targets": checks,
            "notes": notes,
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"\nbench: figures written to {args.json}", file=sys.stderr)
    failed = any("error" in run for by_kind in results.values() for runs in by_kind.values() for run in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
