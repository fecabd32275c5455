"""Where the chat's worker spends its time under load: py-spy on the gunicorn worker.

    python -m bench.profile [--scenario fanout] [--members 1000] [--clients N] [--seconds 5] [--native]
                            [--out DIR]

Starts the project as ``python -m bench.run`` does (gunicorn pinned to core 0,
the load generator to core 1), runs one scenario with the full run's
parameters (fanout: ``--members``; ``--clients`` overrides the others'
client count, to make a short phase last), and from the start of its measured
phase records the worker with ``py-spy record --format raw`` (sampling,
250 Hz, for ``--seconds``; ``pip install py-spy``). It prints the functions
that were on the CPU most often — by *self* time (the innermost Python
frame, or native frame with ``--native``) and by *total* time (anywhere on
the stack) — and keeps the raw stacks in ``DIR/SCENARIO-….txt`` for a flame
graph tool.

A profile perturbs what it measures (py-spy stops the process for every
sample): read it for proportions, and take throughput from ``bench.run``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.run import LOADGEN, LOADGEN_CPU, NODE_FLAGS, SCENARIOS, SERVER_CPU, cases, ensure_loadgen
from bench.servers import REPO_ROOT, can_pin, pinned, raise_nofile, serving

#: A thread of gevent's thread pool waiting for work: not CPU time (py-spy cannot tell).
IDLE_FRAMES = {"_Condition.wait (gevent/_threading.py)", "acquire_with_timeout (gevent/_threading.py)"}
#: The load generator's figures printed above the profile, when the scenario has them.
HEADLINE = (
    "deliveriesPerSecond",
    "serverCpuUsPerDelivery",
    "serverCpuUsPerConnection",
    "serverCpuMsPerReplay",
    "serverCpuPercent",
    "loadgenCpuPercent",
)
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    """``function (file:line)`` as ``function (short/file.py)``: lines of one function add up."""
    found = _FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    path = found["file"]
    for marker in ("site-packages/", "lib/python3.11/", str(REPO_ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{found['function']} ({path})"


@dataclass
class Summary:
    """Samples of the worker, and the functions seen most: (name, samples, percent)."""

    samples: int
    #: samples of pool threads waiting for work, left out
    idle: int
    self: list[tuple[str, int, float]]
    total: list[tuple[str, int, float]]


def summarize(raw: str, top: int = 20) -> Summary:
    """Self and total sample counts per function, from py-spy's raw (collapsed) stacks."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = idle = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        if IDLE_FRAMES.intersection(frames):
            idle += n
            continue
        samples += n
        self_counts[frames[-1]] += n
        for name in set(frames):
            total_counts[name] += n

    def ranked(counts: Counter[str]) -> list[tuple[str, int, float]]:
        return [(name, n, 100 * n / samples) for name, n in counts.most_common(top)]

    return Summary(samples, idle, ranked(self_counts), ranked(total_counts))


def print_summary(summary: Summary) -> None:
    print(
        f"{summary.samples} samples of the worker's threads on the CPU "
        f"({summary.idle} of idle pool threads left out; an idle hub is not sampled)"
    )
    for kind, ranking in (("self", summary.self), ("total", summary.total)):
        print(f"\nby {kind} time:")
        for name, n, percent in ranking:
            print(f"  {percent:5.1f}%  {n:6d}  {name}")


def wait_for(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="fanout", help="(default %(default)s)")
    parser.add_argument("--members", type=int, default=1000, help="fanout members (default %(default)s)")
    parser.add_argument("--clients", type=int, help="clients of the other scenarios (default: as bench.run)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of sampling (default %(default)s)")
    parser.add_argument("--native", action="store_true", help="native frames too (C code of CPython, gevent)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="where the raw stacks go")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        sys.exit("bench.profile: py-spy is needed: pip install py-spy")
    raise_nofile()
    ensure_loadgen()
    pin = can_pin()
    args.out.mkdir(parents=True, exist_ok=True)
    case = cases([args.scenario], quick=False)[0]  # fanout: its N is --members
    params = dict(case.params)
    if args.scenario == "fanout":
        params.update(members=args.members, seconds=args.seconds + 2.0)
    elif args.clients:
        params["clients"] = args.clients
    label = f"fanout-{args.members}" if args.scenario == "fanout" else args.scenario
    raw_path = args.out / f"{label}.txt"
    with tempfile.TemporaryDirectory(prefix="chat-profile-") as scratch:
        workdir = Path(scratch)
        with serving("project", workdir / "project", SERVER_CPU if pin else None, **case.settings) as server:
            config = {
                "scenario": args.scenario,
                "target": server.loadgen_target(),
                "serverPid": server.pid,
                "clkTck": os.sysconf("SC_CLK_TCK"),
                "deadline": case.deadline + args.seconds,
                **params,
            }
            loadgen_log = workdir / "loadgen.log"
            command = pinned(["node", *NODE_FLAGS, str(LOADGEN), json.dumps(config)], LOADGEN_CPU if pin else None)
            with loadgen_log.open("wb") as log:
                loadgen = subprocess.Popen(
                    command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, preexec_fn=raise_nofile
                )
            try:
                if not wait_for(loadgen_log, ": measuring", case.deadline):
                    print(loadgen_log.read_text(), file=sys.stderr)
                    return 1
                record = [py_spy, "record", "--pid", str(server.pid), "--rate", "250", "--format", "raw"]
                record += ["--duration", str(int(args.seconds)), "-o", str(raw_path)]
                if args.native:
                    record.append("--native")
                spy = subprocess.run(record, capture_output=True, text=True, timeout=args.seconds + 60)
                if spy.returncode != 0:
                    print(spy.stdout + spy.stderr, file=sys.stderr)
                    return 1
                out, _ = loadgen.communicate(timeout=case.deadline + 30)
            finally:
                if loadgen.poll() is None:
                    loadgen.kill()
                    loadgen.wait()
    summary = summarize(raw_path.read_text())
    result = json.loads(out.decode().strip().splitlines()[-1])
    if args.json:
        print(json.dumps({"loadgen": result, "profile": asdict(summary)}, indent=2))
    else:
        shown = ", ".join(f"{key} {result[key]:,.4g}" for key in HEADLINE if result.get(key) is not None)
        print(f"{label} under py-spy: {shown}\nraw stacks in {raw_path}\n")
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
