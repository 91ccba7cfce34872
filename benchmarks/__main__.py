"""
``python -m benchmarks`` (what ``make bench`` runs): every benchmark, one table, one JSON file.

The figures and how each is measured are described in ``benchmarks/README.md``. A missed target is
printed as FAIL and counted in the last line; the exit status is 0 all the same (a benchmark that could not
run at all is reported as a FAIL row, with the log to read).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import imports
from benchmarks.report import BenchResult, Figure, Verdict, render_table, summary_line

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results"


def run_module(module: str, options: list[str], results: Path, name: str) -> BenchResult:
    """
    Run ``python -m MODULE --output FILE OPTIONS`` in a fresh process (its logs to ``results/NAME.log``).

    :param module: the benchmark module.
    :param options: its command line options.
    :param results: the results directory.
    :param name: the base name of its output and log files.
    """
    output, log = results / f"{name}.json", results / f"{name}.log"
    output.unlink(missing_ok=True)
    with log.open("w") as log_file:
        completed = subprocess.run(
            [sys.executable, "-m", module, "--output", str(output), *options],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if completed.returncode != 0 or not output.exists():
        raise RuntimeError(f"exit status {completed.returncode}; see {log.relative_to(ROOT)}")
    return BenchResult.read(output)


def guarded(section: str, step: Callable[[], BenchResult]) -> BenchResult:
    """
    Run one benchmark; if it breaks, a FAIL row saying so instead of its figures.

    :param section: the benchmark's section name, for the row.
    :param step: runs the benchmark.
    """
    try:
        return step()
    except Exception as error:
        return BenchResult([Figure(section, "benchmark ran", f"no: {error}", "runs", Verdict.FAIL)])


def environment() -> dict[str, Any]:
    """Versions and machine facts, for the JSON file."""

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    packages = ("airflow-provider-atscale", "apache-airflow", "apache-airflow-providers-http", "httpx")
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "commit": commit or None,
        "packages": {package: version(package) for package in packages},
    }


def main() -> None:
    """Run the benchmarks, print the table, write ``latest.json``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--rounds", type=int, default=12, help="fresh processes per module (import time)")
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--trigger-poll-interval", type=float, default=5.0)
    parser.add_argument("--build-poll-interval", type=float, default=2.0)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps: list[tuple[str, Callable[[], BenchResult]]] = [
        (imports.SECTION, lambda: imports.run(args.rounds)),
        (
            "3./4. Builds",
            lambda: run_module(
                "benchmarks.builds",
                ["--poll-interval", str(args.build_poll_interval)],
                args.results,
                "builds",
            ),
        ),
        (
            "2. Triggerer capacity",
            lambda: run_module(
                "benchmarks.triggerer",
                ["--triggers", str(args.triggers), "--poll-interval", str(args.trigger_poll_interval)],
                args.results,
                "triggerer",
            ),
        ),
    ]
    results: dict[str, BenchResult] = {}
    for section, step in steps:
        print(f"bench: {section} ...", flush=True)
        step_started = time.perf_counter()
        results[section] = guarded(section, step)
        print(f"bench: {section} done in {time.perf_counter() - step_started:.0f} s", flush=True)
    figures = sorted((f for r in results.values() for f in r.figures), key=lambda f: f.section)
    elapsed = time.perf_counter() - started
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(elapsed, 1),
        "environment": environment(),
        "figures": [f.to_json() for f in figures],
        "details": {section: result.details for section, result in results.items()},
    }
    latest = args.results / "latest.json"
    latest.write_text(json.dumps(report, indent=2, default=str))
    print()
    print(render_table(figures))
    print()
    print(f"bench: {summary_line(figures)}")
    print(f"bench: {elapsed:.0f} s; table and details in {latest}")


if __name__ == "__main__":
    main()
