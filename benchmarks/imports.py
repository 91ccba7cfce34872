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
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import BenchResult, Figure, Verdict, median, percentile

SUBJECT = "airflow_provider_atscale.operators.atscale"
REFERENCE = "airflow.providers.http.operators.http"
PROBE = Path(__file__).with_name("import_probe.py")
SECTION = "1. DAG-parse import"
TARGET_MS = 15.0
# "Well under the reference": at most this share of the reference's overhead.
REFERENCE_SHARE = 0.5
HEAVY_TOP_LEVEL = ("requests", "httpx", "fastapi", "uvicorn", "starlette", "aiohttp", "urllib3")
FORBIDDEN = ("httpx", "fastapi", "uvicorn", "airflow_provider_atscale.emulator")
PROVIDER_LAZY_MODULES = (
    "airflow_provider_atscale.hooks.atscale",
    "airflow_provider_atscale.triggers.atscale",
    "airflow_provider_atscale.emulator",
)


@dataclass(frozen=True)
class Sample:
    """
    One probe's result.

    :param module: the module imported.
    :param sdk_ms: the time ``airflow.sdk`` and ``BaseOperator`` took.
    :param import_ms: the time the module under test took, on top.
    :param added: modules the import added.
    :param loaded_before: modules loaded before it (``airflow.sdk`` and its dependencies).
    """

    module: str
    sdk_ms: float
    import_ms: float
    added: frozenset[str]
    loaded_before: frozenset[str]


def probe(module: str, environment: dict[str, str]) -> Sample:
    """
    Time ``module``'s import in a fresh interpreter.

    :param module: the module to import; several, separated by spaces, are imported in turn and timed
        together.
    :param environment: the child's environment.
    """
    completed = subprocess.run(
        [sys.executable, "-I", str(PROBE), *module.split()],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"Importing {module} failed:\n{completed.stderr[-3000:]}")
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    return Sample(
        module=module,
        sdk_ms=data["sdk_seconds"] * 1000,
        import_ms=data["import_seconds"] * 1000,
        added=frozenset(data["added_modules"]),
        loaded_before=frozenset(data["loaded_before"]),
    )


def probe_environment() -> dict[str, str]:
    """The probes' environment: a throwaway Airflow home, no examples, no connection."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    environment["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="atscale-bench-import-home-")
    environment["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    return environment


def collect(rounds: int) -> dict[str, list[Sample]]:
    """
    Run one warm-up round, then ``rounds`` rounds alternating which subject goes first.

    :param rounds: the number of recorded samples per subject.
    """
    environment = probe_environment()
    subjects = (SUBJECT, REFERENCE)
    for module in subjects:
        probe(module, environment)
    samples: dict[str, list[Sample]] = {module: [] for module in subjects}
    for index in range(rounds):
        for module in subjects if index % 2 == 0 else reversed(subjects):
            samples[module].append(probe(module, environment))
    return samples


def heavy_modules(modules: frozenset[str]) -> list[str]:
    """
    The heavy modules among ``modules``: HTTP clients and servers, and the provider's lazy modules.

    :param modules: module names.
    """
    names = {name.split(".")[0] for name in modules} & set(HEAVY_TOP_LEVEL)
    names |= {name for name in PROVIDER_LAZY_MODULES if name in modules}
    return sorted(names)


def run(rounds: int) -> BenchResult:
    """
    Measure the import overhead of the operator module and of the reference.

    :param rounds: fresh processes per subject (at least 10 for the target).
    """
    samples = collect(rounds)
    ours, reference = samples[SUBJECT], samples[REFERENCE]
    ours_ms = median([s.import_ms for s in ours])
    reference_ms = median([s.import_ms for s in reference])
    added = frozenset().union(*(s.added for s in ours))
    new_heavy = heavy_modules(added)
    preloaded_heavy = heavy_modules(ours[0].loaded_before)
    forbidden = [name for name in new_heavy if name in FORBIDDEN]
    share = ours_ms / reference_ms if reference_ms > 0 else float("inf")
    figures = [
        Figure(
            SECTION,
            f"operator module import on top of airflow.sdk (median, {len(ours)} processes)",
            f"{ours_ms:.1f} ms",
            f"<= {TARGET_MS:.0f} ms",
            Verdict.of(ours_ms <= TARGET_MS),
            ours_ms,
        ),
        Figure(
            SECTION,
            f"reference: {REFERENCE} (median, {len(reference)} processes)",
            f"{reference_ms:.1f} ms",
            "",
            Verdict.INFO,
            reference_ms,
        ),
        Figure(
            SECTION,
            "operator module / reference",
            f"{share:.2f}",
            f"<= {REFERENCE_SHARE:.2f} (well under)",
            Verdict.of(share <= REFERENCE_SHARE),
            share,
        ),
        Figure(
            SECTION,
            "heavy modules the operator import adds",
            ", ".join(new_heavy) or "none",
            "none of " + ", ".join(name.rsplit(".", 1)[-1] for name in FORBIDDEN),
            Verdict.of(not forbidden),
            new_heavy,
        ),
        Figure(
            SECTION,
            "heavy modules airflow.sdk had already loaded",
            ", ".join(preloaded_heavy) or "none",
            "",
            Verdict.INFO,
            preloaded_heavy,
        ),
    ]
    details = {
        "rounds": rounds,
        "python": sys.version.split()[0],
        "samples_ms": {module: [round(s.import_ms, 3) for s in group] for module, group in samples.items()},
        "p90_ms": {
            module: round(percentile([s.import_ms for s in group], 0.9), 3)
            for module, group in samples.items()
        },
        "sdk_import_median_ms": round(median([s.sdk_ms for group in samples.values() for s in group]), 1),
        "modules_added_by_operator": sorted(added),
        "modules_added_by_reference": len(frozenset().union(*(s.added for s in reference))),
    }
    return BenchResult(figures, details)
