"""The long fuzzing run of the handshake reader and the frame parser.

::

    python -m tests.ws.fuzz_long [--seconds 300] [--target handshake|frames|deflate|all]

runs the checks of ``tests/ws/test_fuzz.py`` (its :data:`CHECKS`) for that
long, stops by itself, and exits 0 if nothing was found, 1 after printing a
reproducer for the first finding: Python that replays it through the oracle
that failed. ``all`` splits the time between the three targets.

With atheris installed (``requirements-dev.txt`` pins it where PyPI has a
wheel: Linux x86-64, Python 3.11 to 3.13) the run is coverage-guided: app.ws
is instrumented and libFuzzer mutates inputs whose first byte picks one of
the target's checks. Raw checks get the remaining bytes as the client's bytes,
starting from valid traffic (their seeds); the others draw their structured
value from them through Hypothesis (``fuzz_one_input``). Each target runs in
a child process; ``--corpus DIR`` keeps what libFuzzer learns between runs,
and a finding's input is also written under ``--artifacts DIR`` (a temporary
directory by default), where ``--replay FILE --target T`` replays it.
Without atheris, or with ``--engine hypothesis``, Hypothesis draws from the
same strategies in batches until the time is up, and shrinks what it finds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("handshake", "frames", "deflate")
#: Examples per Hypothesis batch: a second or two, so the run stops close to its deadline.
BATCH = 200
#: Seconds one input may take before it counts as a finding (quadratic parsing, a bomb).
SLOW_INPUT = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ws.fuzz_long", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300, help="how long to run in all (default 300)")
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument(
        "--corpus", type=Path, metavar="DIR", help="atheris: keep the corpus of each target under DIR/TARGET"
    )
    parser.add_argument("--artifacts", type=Path, metavar="DIR", help="atheris: write findings under DIR")
    parser.add_argument("--replay", type=Path, metavar="FILE", help="run one atheris input through --target")
    args = parser.parse_args(argv)
    targets = list(TARGETS) if args.target == "all" else [args.target]
    if args.replay is not None:
        if len(targets) != 1:
            parser.error("--replay needs one --target")
        return replay(targets[0], args.replay.read_bytes())
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if has_atheris() else "hypothesis"
    elif engine == "atheris" and not has_atheris():
        parser.error("atheris is not installed (pip install -r requirements-dev.txt, on Linux x86-64)")
    seconds = max(args.seconds / len(targets), 1.0)
    print(f"fuzzing {', '.join(targets)} with {engine}, {seconds:.0f} s each", flush=True)
    for target in targets:
        if engine == "atheris":
            status = run_atheris_child(target, seconds, args.corpus, args.artifacts)
        else:
            status = run_hypothesis(target, seconds)
        if status != 0:
            print(f"\nFINDING in target {target!r} (see above)", flush=True)
            return 1
    print("no finding", flush=True)
    return 0


def has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def hypothesis_test(check: Any, drawn: list[object], **options: Any) -> Any:
    """A Hypothesis test of ``check`` that keeps the value it last drew in ``drawn[0]``."""
    from hypothesis import HealthCheck, given, settings

    @settings(database=None, suppress_health_check=list(HealthCheck), **options)
    @given(check.strategy)
    def run(value: object) -> None:
        drawn[0] = value
        check.oracle(value)

    return run


def report(check: Any, value: object, error: BaseException) -> None:
    """Print what failed and the Python that replays it."""
    print(f"\n=== {check.name}: {type(error).__name__}: {error}", file=sys.stderr)
    traceback.print_exception(error, file=sys.stderr)
    print(f"--- reproducer (from {ROOT}):\n{check.reproducer(value)}\n---", file=sys.stderr, flush=True)


# -- Hypothesis ----------------------------------------------------------------


def run_hypothesis(target: str, seconds: float) -> int:
    """Batches of every check of ``target`` in turn, fresh random seeds each, until time is up."""
    from datetime import timedelta

    from hypothesis import Phase

    from tests.ws.test_fuzz import CHECKS

    deadline = time.monotonic() + seconds
    examples = 0
    while time.monotonic() < deadline:
        for check in CHECKS[target]:
            drawn: list[object] = [None]
            run = hypothesis_test(
                check,
                drawn,
                max_examples=BATCH,
                deadline=timedelta(seconds=SLOW_INPUT),
                phases=[Phase.generate, Phase.target, Phase.shrink],
                print_blob=True,
            )
            try:
                run()
            except Exception as error:  # the last value drawn is the shrunk one, replayed last
                report(check, drawn[0], error)
                return 1
            examples += BATCH
            if time.monotonic() >= deadline:
                break
    print(f"{target}: {examples} examples, no finding", flush=True)
    return 0


# -- atheris ---------------------------------------------------------------------


def one_input(target: str) -> Callable[[bytes], None]:
    """The libFuzzer target: byte 0 picks a check, the rest is its input.

    Imports app.ws (through test_fuzz): under atheris, call it inside
    ``instrument_imports`` so that the protocol core is what gets instrumented.
    """
    from tests.ws.test_fuzz import CHECKS

    checks = CHECKS[target]
    drawn: list[object] = [None]
    runners: list[Callable[[bytes], object]] = [
        check.oracle if check.raw else hypothesis_test(check, drawn, deadline=None).hypothesis.fuzz_one_input
        for check in checks
    ]

    def test_one_input(data: bytes) -> None:
        if not data:
            return
        index = data[0] % len(checks)
        drawn[0] = data[1:]
        try:
            runners[index](data[1:])
        except Exception as error:
            report(checks[index], drawn[0], error)
            raise

    return test_one_input


def seed_inputs(target: str) -> list[bytes]:
    """Starting inputs: each raw check's seeds, and something to draw from for the others."""
    from tests.ws.test_fuzz import CHECKS

    inputs = []
    for index, check in enumerate(CHECKS[target]):
        seeds = check.seeds if check.raw else (bytes(range(64)), bytes(512))
        inputs.extend(bytes([index]) + seed for seed in seeds)
    return inputs


def run_atheris_child(target: str, seconds: float, corpus: Path | None, artifacts: Path | None) -> int:
    """libFuzzer on ``target`` in a child process (it ends the process it runs in)."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as scratch:
        corpus_dir = (corpus / target) if corpus is not None else Path(scratch) / "corpus"
        artifact_dir = artifacts or Path(tempfile.mkdtemp(prefix="fuzz-findings-"))
        corpus_dir.mkdir(parents=True, exist_ok=True)
        artifact_dir.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(seed_inputs(target)):
            (corpus_dir / f"seed-{i}").write_bytes(data)
        command = [
            sys.executable,
            "-c",
            "import sys; from tests.ws.fuzz_long import atheris_main; atheris_main(sys.argv[1:])",
            target,
            str(corpus_dir),
            f"-max_total_time={int(seconds)}",
            f"-timeout={SLOW_INPUT}",
            "-rss_limit_mb=2048",
            "-max_len=4096",
            "-error_exitcode=1",
            "-timeout_exitcode=1",
            f"-artifact_prefix={artifact_dir}/{target}-",
            "-print_final_stats=1",
        ]
        try:
            status = subprocess.run(command, cwd=ROOT, timeout=seconds + 120).returncode
        except subprocess.TimeoutExpired:
            print(f"{target}: libFuzzer did not stop in time", file=sys.stderr)
            return 1
        found = sorted(artifact_dir.glob(f"{target}-*"), key=lambda path: path.stat().st_mtime)
        if status != 0:
            for path in found[-1:]:
                print(f"replay: python -m tests.ws.fuzz_long --target {target} --replay {path}", flush=True)
        elif artifacts is None and not found:
            artifact_dir.rmdir()
        return status


def atheris_main(argv: list[str]) -> None:
    """In the child: instrument app.ws, then hand the target to libFuzzer (which exits)."""
    import atheris

    target, *libfuzzer_args = argv
    with atheris.instrument_imports(include=["app.ws"]):
        import app.ws  # noqa: F401

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input(target))
    atheris.Fuzz()


def replay(target: str, data: bytes) -> int:
    """Run one input (a libFuzzer artifact) through ``target``'s checks, without atheris."""
    try:
        one_input(target)(data)
    except Exception:
        return 1
    print("passes")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
