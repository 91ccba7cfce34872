"""
DAG-parse import overhead: what importing the operator module adds on top of ``airflow.sdk``.

Each sample is a fresh interpreter (``python -I benchmarks/import_probe.py MODULE``) that imports
``airflow.sdk``, touches ``airflow.sdk.BaseOperator``, then times the import of the module under test
with ``time.perf_counter``. The provider's operator module and the HTTP provider's operator module (the
reference) alternate which goes first in each round; one unrecorded warm-up round first fills the
bytecode caches. Reported: medians, and which heavy modules the import brought in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.report import BenchResult, Figure, median, verdict

SUBJECT = "airflow_provider_atscale.operators.atscale"
REFERENCE = "airflow.providers.http.operators.http"
PROBE = Path(__file__).with_name("import_probe.py")
SECTION = "1. DAG-parse import"
TARGET_MS = 15.0
REFERENCE_SHARE = 0.5
""""Well under the reference": at most this share of the reference's overhead."""
HEAVY = (
    "requests",
    "httpx",
    "aiohttp",
    "urllib3",
    "fastapi",
    "starlette",
    "uvicorn",
    "airflow_provider_atscale.emulator",
)
FORBIDDEN = ("httpx", "fastapi", "uvicorn", "airflow_provider_atscale.emulator")


def probe(modules: str, environment: dict[str, str]) -> tuple[float, list[str]]:
    """
    Time the import of ``modules`` in a fresh interpreter: the milliseconds, and the modules it added.

    :param modules: the modules to import, separated by spaces: imported in turn and timed together.
    :param environment: the child's environment (see :func:`probe_environment`).
    """
    completed = subprocess.run(
        [sys.executable, "-I", str(PROBE), *modules.split()],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"Importing {modules} failed:\n{completed.stderr[-3000:]}")
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    return data["import_seconds"] * 1000, data["added_modules"]


def probe_environment() -> dict[str, str]:
    """The probes' environment: a throwaway Airflow home, no examples, no connection."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    environment["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="atscale-bench-import-home-")
    environment["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return environment


def run(rounds: int) -> BenchResult:
    """
    Measure the import overhead of the operator module and of the reference.

    :param rounds: fresh processes per module (at least 10 for the target).
    """
    environment = probe_environment()
    subjects = (SUBJECT, REFERENCE)
    for module in subjects:
        probe(module, environment)
    samples: dict[str, list[float]] = {module: [] for module in subjects}
    added: set[str] = set()
    for index in range(rounds):
        for module in subjects if index % 2 == 0 else reversed(subjects):
            milliseconds, modules = probe(module, environment)
            samples[module].append(milliseconds)
            if module == SUBJECT:
                added.update(modules)
    ours, reference = median(samples[SUBJECT]) or 0.0, median(samples[REFERENCE]) or 0.0
    share = ours / reference if reference > 0 else float("inf")
    heavy = sorted({h for h in HEAVY for name in added if name == h or name.startswith(h + ".")})
    figures = [
        Figure(
            SECTION,
            f"operator module import on top of airflow.sdk (median, {rounds} processes)",
            f"{ours:.1f} ms",
            f"<= {TARGET_MS:.0f} ms",
            verdict(ours <= TARGET_MS),
            ours,
        ),
        Figure(
            SECTION,
            f"reference: {REFERENCE} (median, {rounds} processes)",
            f"{reference:.1f} ms",
            raw=reference,
        ),
        Figure(
            SECTION,
            "operator module / reference",
            f"{share:.2f}",
            f"<= {REFERENCE_SHARE:.2f} (well under)",
            verdict(share <= REFERENCE_SHARE),
            share,
        ),
        Figure(
            SECTION,
            "HTTP clients, web frameworks or the emulator the operator import adds",
            ", ".join(heavy) or "none",
            "none of " + ", ".join(name.rsplit(".", 1)[-1] for name in FORBIDDEN),
            verdict(not set(heavy) & set(FORBIDDEN)),
            heavy,
        ),
    ]
    return BenchResult(figures, {"rounds": rounds, "samples_ms": samples, "modules_added": sorted(added)})
