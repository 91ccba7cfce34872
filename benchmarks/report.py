"""Figures, their targets, and the table and JSON file that ``make bench`` writes."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASS, FAIL, INFO = "PASS", "FAIL", "info"


def verdict(passed: bool) -> str:
    """
    ``PASS`` or ``FAIL``.

    :param passed: whether the target was met.
    """
    return PASS if passed else FAIL


@dataclass(frozen=True)
class Figure:
    """
    One measured figure.

    :param section: the benchmark it belongs to, e.g. ``2. Triggerer capacity``.
    :param name: what was measured.
    :param value: the figure, formatted for the table (units included).
    :param target: the target, as a reader would say it; empty for a figure reported for information.
    :param verdict: ``PASS``, ``FAIL`` or ``info``.
    :param raw: the unformatted value(s), for the JSON file.
    """

    section: str
    name: str
    value: str
    target: str = ""
    verdict: str = INFO
    raw: Any = None


@dataclass
class BenchResult:
    """
    What one benchmark found: its figures, and details for the JSON file.

    :param figures: the figures, in table order.
    :param details: anything else worth keeping (raw samples, parameters).
    """

    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        """
        Write the result as JSON, for the process that runs the benchmarks.

        :param path: the file.
        """
        payload = {"figures": [asdict(f) for f in self.figures], "details": self.details}
        path.write_text(json.dumps(payload, indent=2, default=str))

    @classmethod
    def read(cls, path: Path) -> BenchResult:
        """
        Read a result written by :meth:`write`.

        :param path: the file.
        """
        payload = json.loads(path.read_text())
        return cls([Figure(**f) for f in payload["figures"]], payload["details"])


def median(values: Sequence[float]) -> float | None:
    """
    The median, or ``None`` for no values.

    :param values: the samples.
    """
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The nearest-rank percentile, or NaN for no values.

    :param values: the samples.
    :param fraction: e.g. ``0.99``.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def render_table(figures: Sequence[Figure]) -> str:
    """
    The figures as a Markdown table, one row each.

    :param figures: the figures.
    """
    rows = [("Benchmark", "Figure", "Value", "Target", "Result")]
    rows += [(f.section, f.name, f.value, f.target or "-", f.verdict) for f in figures]
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def summary_line(figures: Sequence[Figure]) -> str:
    """
    One line counting targets met and missed, naming the missed ones.

    :param figures: the figures.
    """
    judged = [f for f in figures if f.verdict != INFO]
    missed = [f for f in judged if f.verdict == FAIL]
    text = f"{len(judged) - len(missed)} of {len(judged)} targets met"
    if missed:
        text += "; MISSED: " + "; ".join(
            f"{f.section} / {f.name} = {f.value} (target {f.target})" for f in missed
        )
    return text
