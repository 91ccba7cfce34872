"""Figures, their targets, and the table and JSON file that ``make bench`` writes."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any


class Verdict(str, Enum):
    """How a figure compares with its target."""

    PASS = "PASS"
    FAIL = "FAIL"
    INFO = "info"

    @classmethod
    def of(cls, passed: bool) -> Verdict:
        """
        ``PASS`` or ``FAIL``.

        :param passed: whether the target was met.
        """
        return cls.PASS if passed else cls.FAIL


@dataclass(frozen=True)
class Figure:
    """
    One measured figure.

    :param section: the benchmark it belongs to, e.g. ``Triggerer capacity``.
    :param name: what was measured.
    :param value: the figure, formatted for the table (units included).
    :param target: the target, as a reader would say it; empty for a figure reported for information.
    :param verdict: how the figure compares with the target.
    :param raw: the unformatted value(s), for the JSON file.
    """

    section: str
    name: str
    value: str
    target: str = ""
    verdict: Verdict = Verdict.INFO
    raw: Any = None

    def to_json(self) -> dict[str, Any]:
        """The figure as a JSON object."""
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Figure:
        """
        Read a figure written by :meth:`to_json`.

        :param data: the JSON object.
        """
        return cls(**{**data, "verdict": Verdict(data["verdict"])})


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
        payload = {"figures": [f.to_json() for f in self.figures], "details": self.details}
        path.write_text(json.dumps(payload, indent=2, default=str))

    @classmethod
    def read(cls, path: Path) -> BenchResult:
        """
        Read a result written by :meth:`write`.

        :param path: the file.
        """
        payload = json.loads(path.read_text())
        return cls([Figure.from_json(f) for f in payload["figures"]], payload["details"])


def median(values: Sequence[float]) -> float:
    """
    The median, or NaN for no values.

    :param values: the samples.
    """
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    The nearest-rank percentile, or NaN for no values.

    :param values: the samples.
    :param fraction: e.g. ``0.99``.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def render_table(figures: Iterable[Figure]) -> str:
    """
    The figures as a Markdown table, one row each, grouped by section in the order given.

    :param figures: the figures.
    """
    rows = [("Benchmark", "Figure", "Value", "Target", "Result")]
    rows += [(f.section, f.name, f.value, f.target or "-", f.verdict.value) for f in figures]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(rows[0]), separator, *(line(row) for row in rows[1:])])


def summary_line(figures: Sequence[Figure]) -> str:
    """
    One line counting targets met and missed, naming the missed ones.

    :param figures: the figures.
    """
    judged = [f for f in figures if f.verdict is not Verdict.INFO]
    missed = [f for f in judged if f.verdict is Verdict.FAIL]
    text = f"{len(judged) - len(missed)} of {len(judged)} targets met"
    if missed:
        text += "; MISSED: " + "; ".join(
            f"{f.section} / {f.name} = {f.value} (target {f.target})" for f in missed
        )
    return text
