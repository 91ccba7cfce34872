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

from benchmarks import compare, imports
from benchmarks.report import BenchResult, Figure, Verdict, render_table, summary_line

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS = ("imports", "builds", "triggerer", "compare")


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
        shown = log.relative_to(ROOT) if log.is_relative_to(ROOT) else log
        raise RuntimeError(f"exit status {completed.returncode}; see {shown}")
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
    packages = (
        "airflow-provider-atscale",
        "apache-airflow",
        "apache-airflow-providers-http",
        "apache-airflow-providers-dbt-cloud",
        "apache-airflow-providers-databricks",
        "httpx",
        "aiohttp",
    )
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "commit": commit or None,
        "packages": {package: version(package) for package in packages},
    }


def parse_only(value: str) -> list[str]:
    """
    ``--only``'s benchmarks, checked.

    :param value: comma-separated names among :data:`BENCHMARKS`.
    """
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(BENCHMARKS)}; got {value!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The command line parser."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        type=parse_only,
        default=list(BENCHMARKS),
        help=f"run only these benchmarks, comma-separated: {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument(
        "--triggers", type=int, default=1000, help="triggers of the capacity run, and per family and round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="trigger comparison: rounds of every family")
    parser.add_argument(
        "--import-rounds", type=int, default=12, help="DAG-parse import: fresh processes per module"
    )
    parser.add_argument(
        "--compare-import-rounds",
        type=int,
        default=compare.DEFAULT_IMPORT_ROUNDS,
        help="trigger comparison: fresh processes per family for the trigger + hook import",
    )
    parser.add_argument(
        "--trigger-poll-interval", type=float, default=5.0, help="capacity run and comparison"
    )
    parser.add_argument(
        "--job-seconds",
        type=float,
        nargs=2,
        default=compare.DEFAULT_JOB_SECONDS,
        metavar=("LO", "HI"),
        help="trigger comparison: each job's length is drawn from this range",
    )
    parser.add_argument("--tls", action="store_true", help="trigger comparison: every family over HTTPS")
    parser.add_argument("--build-poll-interval", type=float, default=2.0)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    return parser


def main() -> None:
    """Run the benchmarks, print the table, write ``latest.json``."""
    args = build_parser().parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    compare_options = [
        "--triggers",
        str(args.triggers),
        "--rounds",
        str(args.rounds),
        "--poll-interval",
        str(args.trigger_poll_interval),
        "--job-seconds",
        *(str(seconds) for seconds in args.job_seconds),
        "--import-rounds",
        str(args.compare_import_rounds),
        *(["--tls"] if args.tls else []),
    ]
    all_steps: dict[str, tuple[str, Callable[[], BenchResult]]] = {
        "imports": (imports.SECTION, lambda: imports.run(args.import_rounds)),
        "builds": (
            "3./4. Builds",
            lambda: run_module(
                "benchmarks.builds",
                ["--poll-interval", str(args.build_poll_interval)],
                args.results,
                "builds",
            ),
        ),
        "triggerer": (
            "2. Triggerer capacity",
            lambda: run_module(
                "benchmarks.triggerer",
                ["--triggers", str(args.triggers), "--poll-interval", str(args.trigger_poll_interval)],
                args.results,
                "triggerer",
            ),
        ),
        "compare": (
            compare.SECTION,
            lambda: run_module("benchmarks.compare", compare_options, args.results, "compare"),
        ),
    }
    steps = [all_steps[name] for name in BENCHMARKS if name in args.only]
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
    comparison = results.get(compare.SECTION)
    if comparison is not None and "table" in comparison.details:
        print()
        print(f"{compare.SECTION}, medians over {comparison.details['scenario']['rounds']} round(s):")
        print(comparison.details["table"])
    print()
    print(f"bench: {summary_line(figures)}")
    print(f"bench: {elapsed:.0f} s; table and details in {latest}")


if __name__ == "__main__":
    main()
