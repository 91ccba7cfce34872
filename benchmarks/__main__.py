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
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from benchmarks import compare, imports
from benchmarks.report import FAIL, BenchResult, Figure, render_table, summary_line

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ("imports", "builds", "compare")
PACKAGES = (
    "airflow-provider-atscale",
    "apache-airflow",
    "apache-airflow-providers-http",
    "apache-airflow-providers-dbt-cloud",
    "apache-airflow-providers-databricks",
    "httpx",
    "aiohttp",
)


def run_builds(args: argparse.Namespace) -> BenchResult:
    """
    Run ``python -m benchmarks.builds`` in a fresh process (its log to ``results/builds.log``).

    :param args: the command line.
    """
    output, log = args.results / "builds.json", args.results / "builds.log"
    output.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.builds", "--output", str(output)]
    with log.open("w") as log_file:
        command += ["--poll-interval", str(args.build_poll_interval)]
        completed = subprocess.run(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0 or not output.exists():
        raise RuntimeError(f"exit status {completed.returncode}; see {log}")
    return BenchResult.read(output)


def version(package: str) -> str | None:
    """
    An installed package's version, or ``None``.

    :param package: the distribution's name.
    """
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def parse_only(value: str) -> list[str]:
    """
    ``--only``'s benchmarks, checked.

    :param value: comma-separated names among :data:`BENCHMARKS`.
    """
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names or any(name not in BENCHMARKS for name in names):
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
        "--triggers", type=int, default=1000, help="comparison: triggers per family and round"
    )
    parser.add_argument("--rounds", type=int, default=3, help="comparison: rounds of every family")
    parser.add_argument(
        "--import-rounds", type=int, default=12, help="DAG-parse import: fresh processes per module"
    )
    parser.add_argument(
        "--compare-import-rounds",
        type=int,
        default=compare.DEFAULT_IMPORT_ROUNDS,
        help="comparison: fresh processes per family for the trigger + hook import",
    )
    parser.add_argument("--trigger-poll-interval", type=float, default=5.0, help="comparison: seconds")
    parser.add_argument(
        "--job-seconds",
        type=float,
        nargs=2,
        default=compare.DEFAULT_JOB_SECONDS,
        metavar=("LO", "HI"),
        help="comparison: each job's length is drawn from this range",
    )
    parser.add_argument("--tls", action="store_true", help="comparison: every family over HTTPS")
    parser.add_argument("--build-poll-interval", type=float, default=2.0, help="builds: seconds")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    return parser


def main() -> None:
    """Run the benchmarks, print the table, write ``latest.json``."""
    args = build_parser().parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps: dict[str, tuple[str, Callable[[], BenchResult]]] = {
        "imports": (imports.SECTION, lambda: imports.run(args.import_rounds)),
        "builds": ("3./4. Builds", lambda: run_builds(args)),
        "compare": ("2./5. Triggerer capacity and trigger comparison", lambda: compare.run(args)),
    }
    results: dict[str, BenchResult] = {}
    for name in (name for name in BENCHMARKS if name in args.only):
        section, step = steps[name]
        print(f"bench: {section} ...", flush=True)
        step_started = time.perf_counter()
        try:
            results[name] = step()
        except Exception as error:
            results[name] = BenchResult([Figure(section, "benchmark ran", f"no: {error}", "runs", FAIL)])
        print(f"bench: {section} done in {time.perf_counter() - step_started:.0f} s", flush=True)
    figures = sorted((f for r in results.values() for f in r.figures), key=lambda f: f.section)
    elapsed = time.perf_counter() - started
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    report = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(elapsed, 1),
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": len(os.sched_getaffinity(0)),
            "commit": commit or None,
            "packages": {package: version(package) for package in PACKAGES},
        },
        "figures": [asdict(f) for f in figures],
        "details": {name: result.details for name, result in results.items()},
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
