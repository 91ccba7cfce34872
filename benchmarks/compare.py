"""
Trigger comparison: our trigger beside dbt Cloud's and Databricks', against one fake server.

``python -m benchmarks.compare --output FILE [--triggers 1000 --rounds 3 --import-rounds 5 ...]``

Starts the fake server (:mod:`benchmarks.fake_server`, one process answering all three APIs), then runs the
rounds: in each, every family in turn (ours, dbt Cloud, Databricks, then ours again in the next round) runs
its triggers in a fresh process (:mod:`benchmarks.compare_run`), on jobs drawn with the round's seed, so the
three families of a round wait on jobs of the same lengths. The import cost of each
family's trigger and hook on top of ``airflow.sdk`` is timed in fresh interpreters, the families' order
rotating round by round. Every figure is the median over rounds; the table gives each family's figure and
the ratio ours / peer, and the targets for our trigger.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import imports
from benchmarks.fake_server import FakeServerInfo, running_fake_server
from benchmarks.families import FAMILIES, OURS, PEERS, Family
from benchmarks.report import BenchResult, Figure, Verdict, median

SECTION = "5. Trigger comparison"
DEFAULT_SEED = 20250227
DEFAULT_JOB_SECONDS = (20.0, 60.0)
DEFAULT_IMPORT_ROUNDS = 5
# Our trigger's figures in the comparison this work began with (the baseline): the rows without a
# peer-relative target must not get worse than these.
BASELINE_BYTES_PER_POLL = 9563
BASELINE_CONNECTIONS_PER_TRIGGER = 1.0
BASELINE_RSS_KIB = 32.0
BASELINE_IMPORT_RATIO = 17.0 / 136.0
"""Our trigger and hook's import cost over the lighter peer's when this work began (17 ms against dbt Cloud's
136 ms): import times depend on the machine, so the target is this ratio, measured beside the peers."""


@dataclass(frozen=True)
class Row:
    """
    One figure of the comparison, per family.

    :param key: its name in the JSON file.
    :param name: its name in the table.
    :param unit: its unit, after the value.
    :param digits: decimals shown.
    :param read: reads it from one family's round (``None`` where it cannot be read).
    """

    key: str
    name: str
    unit: str
    digits: int
    read: Callable[[dict[str, Any]], float | None]

    def format(self, value: float | None) -> str:
        """
        The value as shown in the table.

        :param value: the value.
        """
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value:,.{self.digits}f}{self.unit}"


def _per(numerator: str, denominator: str) -> Callable[[dict[str, Any]], float | None]:
    def read(run: dict[str, Any]) -> float | None:
        top = _dig(run, numerator)
        bottom = _dig(run, denominator)
        return top / bottom if top is not None and bottom else None

    return read


def _dig(run: dict[str, Any], path: str) -> float | None:
    value: Any = run
    for part in path.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return None
        value = value[part]
    return float(value)


def _rss_kib(run: dict[str, Any]) -> float | None:
    waiting, baseline = _dig(run, "rss.waiting_bytes"), _dig(run, "rss.baseline_bytes")
    if waiting is None or baseline is None:
        return None
    return (waiting - baseline) / float(run["triggers"]) / 1024


def _triggers_cpu_seconds(run: dict[str, Any]) -> float:
    """The process's CPU over the run less the harness's own (its rate measured alone, over the same time)."""
    return float(run["cpu_seconds"]) - float(run.get("harness_cpu_seconds") or 0.0)


def _cpu_ms_per_poll(run: dict[str, Any]) -> float | None:
    requests = _dig(run, "server.requests")
    return _triggers_cpu_seconds(run) * 1000 / requests if requests else None


def _process_cpu_ms_per_poll(run: dict[str, Any]) -> float | None:
    requests = _dig(run, "server.requests")
    return run["cpu_seconds"] * 1000 / requests if requests else None


def _cpu_ms_per_trigger(run: dict[str, Any]) -> float | None:
    return _triggers_cpu_seconds(run) * 1000 / run["triggers"] if run.get("triggers") else None


ROWS = (
    Row(
        "cpu_ms_per_poll", "CPU per poll (the triggers' CPU / requests answered)", " ms", 2, _cpu_ms_per_poll
    ),
    Row(
        "process_cpu_ms_per_poll",
        "process CPU per poll, the harness's own included",
        " ms",
        2,
        _process_cpu_ms_per_poll,
    ),
    Row(
        "cpu_ms_per_trigger", "CPU per trigger (the triggers' CPU / triggers)", " ms", 1, _cpu_ms_per_trigger
    ),
    Row("lag_p99_ms", "event-loop lag p99 (10 ms sleeper)", " ms", 1, lambda run: _dig(run, "lag_ms.p99")),
    Row("lag_max_ms", "event-loop lag max", " ms", 0, lambda run: _dig(run, "lag_ms.max")),
    Row("bytes_per_poll", "response bytes per poll", " B", 0, _per("server.wire_bytes", "server.requests")),
    Row(
        "connections_per_trigger", "new TCP connections per trigger", "", 2, _per("server.ports", "triggers")
    ),
    Row("rss_kib_per_trigger", "RSS per waiting trigger", " KiB", 1, _rss_kib),
    Row("requests_per_trigger", "requests per trigger", "", 2, _per("server.requests", "triggers")),
)
IMPORT_ROW = Row("import_ms", "trigger + hook import on top of airflow.sdk", " ms", 1, lambda run: None)
# Not a row of the table: what the requests per trigger are held to (the same jobs for every family).
NEEDED_ROW = Row(
    "polls_needed_per_trigger",
    "polls needed per trigger",
    "",
    2,
    lambda run: _dig(run, "polls_needed_per_trigger"),
)


def run_family(
    family: Family,
    server: FakeServerInfo,
    round_index: int,
    options: argparse.Namespace,
    logs: Path,
) -> dict[str, Any]:
    """
    One family's round in a fresh process; its result, or ``{"error": ...}`` if it broke.

    :param family: the family.
    :param server: the fake server.
    :param round_index: the round (0-based).
    :param options: the command line.
    :param logs: the directory for its log and result files.
    """
    output = logs / f"compare-{family.key}-{round_index + 1}.json"
    log = logs / f"compare-{family.key}-{round_index + 1}.log"
    output.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "benchmarks.compare_run",
        "--family",
        family.key,
        "--server",
        json.dumps(server.to_json()),
        "--output",
        str(output),
        "--triggers",
        str(options.triggers),
        "--poll-interval",
        str(options.poll_interval),
        "--job-seconds",
        *(str(s) for s in options.job_seconds),
        "--seed",
        str(options.seed + round_index),
        *(["--tls"] if options.tls else []),
    ]
    started = time.perf_counter()
    with log.open("w") as log_file:
        completed = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, check=False)
    print(
        f"compare: round {round_index + 1} {family.key}: exit {completed.returncode} "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    if completed.returncode != 0 or not output.exists():
        return {"family": family.key, "error": f"exit status {completed.returncode}; see {log.name}"}
    result: dict[str, Any] = json.loads(output.read_text())
    return result


def time_imports(families: Sequence[Family], rounds: int) -> dict[str, list[float]]:
    """
    Each family's trigger + hook import on top of ``airflow.sdk``, in fresh interpreters, in ms.

    One unrecorded warm-up round, then ``rounds`` rounds, the families' order rotating.

    :param families: the families.
    :param rounds: recorded samples per family.
    """
    environment = imports.probe_environment()
    subjects = {family.key: " ".join(family.modules) for family in families}
    for subject in subjects.values():
        imports.probe(subject, environment)
    samples: dict[str, list[float]] = {key: [] for key in subjects}
    keys = list(subjects)
    for index in range(rounds):
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            samples[key].append(imports.probe(subjects[key], environment).import_ms)
    return samples


def _version(family: Family) -> str:
    try:
        return metadata.version(family.distribution)
    except metadata.PackageNotFoundError:
        return "?"


def _ratio(ours: float | None, peer: float | None) -> float | None:
    if ours is None or peer is None or peer == 0 or math.isnan(ours) or math.isnan(peer):
        return None
    return ours / peer


def _format_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def medians(
    runs: dict[str, list[dict[str, Any]]], import_ms: dict[str, list[float]]
) -> dict[str, dict[str, Any]]:
    """
    Each family's figures: the median over its rounds that ran (and the per-round values).

    :param runs: each family's round results.
    :param import_ms: each family's import samples.
    """
    figures: dict[str, dict[str, Any]] = {}
    for key, family_runs in runs.items():
        ran = [run for run in family_runs if "error" not in run]
        figures[key] = {}
        for row in (*ROWS, NEEDED_ROW):
            values = [v for v in (row.read(run) for run in ran) if v is not None]
            figures[key][row.key] = {"median": median(values) if values else None, "rounds": values}
        samples = import_ms.get(key, [])
        figures[key][IMPORT_ROW.key] = {"median": median(samples) if samples else None, "rounds": samples}
    return figures


def _events(family_runs: Sequence[dict[str, Any]]) -> tuple[int, int]:
    right = sum(run.get("events_right", 0) for run in family_runs if "error" not in run)
    expected = sum(run.get("triggers", 0) for run in family_runs if "error" not in run)
    return right, expected


@dataclass(frozen=True)
class Target:
    """
    A target for our trigger, read against the peers' figures of the same run.

    :param row: the figure.
    :param limit: the largest value that meets it, given every family's medians.
    :param text: the target as the table says it, given the limit.
    """

    row: Row
    limit: Callable[[dict[str, dict[str, Any]]], float | None]
    text: Callable[[float | None], str]


def _peer_median(key: str, row: Row) -> Callable[[dict[str, dict[str, Any]]], float | None]:
    return lambda figures: figures[key][row.key]["median"]


def _best_peer(row: Row) -> Callable[[dict[str, dict[str, Any]]], float | None]:
    def limit(figures: dict[str, dict[str, Any]]) -> float | None:
        values = [figures[peer.key][row.key]["median"] for peer in PEERS]
        known = [v for v in values if v is not None]
        return min(known) if known else None

    return limit


def _fixed(value: float) -> Callable[[dict[str, dict[str, Any]]], float | None]:
    return lambda figures: value


def _needed_plus_one(figures: dict[str, dict[str, Any]]) -> float | None:
    needed = figures[OURS.key][NEEDED_ROW.key]["median"]
    return needed + 1 if needed is not None else None


_ROW = {row.key: row for row in (*ROWS, IMPORT_ROW)}
TARGETS = (
    Target(
        _ROW["cpu_ms_per_poll"],
        _peer_median("databricks", _ROW["cpu_ms_per_poll"]),
        lambda limit: f"<= Databricks' ({_ROW['cpu_ms_per_poll'].format(limit)})",
    ),
    Target(
        _ROW["lag_p99_ms"],
        _best_peer(_ROW["lag_p99_ms"]),
        lambda limit: f"<= best peer's ({_ROW['lag_p99_ms'].format(limit)})",
    ),
    Target(
        _ROW["bytes_per_poll"],
        _fixed(BASELINE_BYTES_PER_POLL),
        lambda limit: f"<= {BASELINE_BYTES_PER_POLL:,} B (baseline)",
    ),
    Target(
        _ROW["connections_per_trigger"],
        _fixed(BASELINE_CONNECTIONS_PER_TRIGGER),
        lambda limit: "<= 1",
    ),
    Target(
        _ROW["rss_kib_per_trigger"],
        _fixed(BASELINE_RSS_KIB),
        lambda limit: f"<= {BASELINE_RSS_KIB:.0f} KiB (baseline)",
    ),
    Target(
        _ROW["requests_per_trigger"],
        _needed_plus_one,
        lambda limit: f"<= polls needed + 1 ({_ROW['requests_per_trigger'].format(limit)})",
    ),
    Target(
        IMPORT_ROW,
        lambda figures: (
            None if (best := _best_peer(IMPORT_ROW)(figures)) is None else best * BASELINE_IMPORT_RATIO
        ),
        lambda limit: f"<= {BASELINE_IMPORT_RATIO:.3f} x the lighter peer's ({IMPORT_ROW.format(limit)})",
    ),
)
_TARGET = {target.row.key: target for target in TARGETS}


def verdict(target: Target, figures: dict[str, dict[str, Any]]) -> tuple[Verdict, float | None]:
    """
    Whether our trigger meets a target, and the limit it was held to.

    :param target: the target.
    :param figures: every family's medians.
    """
    ours = figures[OURS.key][target.row.key]["median"]
    limit = target.limit(figures)
    if ours is None or limit is None:
        return Verdict.FAIL, limit
    return Verdict.of(ours <= limit), limit


def comparison_table(
    figures: dict[str, dict[str, Any]], titles: dict[str, str], events: dict[str, tuple[int, int]]
) -> str:
    """
    The comparison as a Markdown table: a column per family, the ratios ours / peer, our target.

    :param figures: every family's medians.
    :param titles: each family's column title.
    :param events: each family's events right and expected, all rounds together.
    """
    header = ["median over rounds", *titles.values()]
    header += [f"ours / {peer.title}" for peer in PEERS] + ["target (ours)", "result"]
    rows = [header]
    for row in (*ROWS, IMPORT_ROW):
        values = {key: figures[key][row.key]["median"] for key in titles}
        target = _TARGET.get(row.key)
        if target is not None:
            outcome, limit = verdict(target, figures)
            target_text, result = target.text(limit), outcome.value
        else:
            target_text, result = "-", Verdict.INFO.value
        rows.append(
            [
                row.name,
                *(row.format(values[key]) for key in titles),
                *(_format_ratio(_ratio(values[OURS.key], values[peer.key])) for peer in PEERS),
                target_text,
                result,
            ]
        )
    all_right = all(right == expected and expected > 0 for right, expected in events.values())
    rows.append(
        [
            "events right (all rounds)",
            *(f"{events[key][0]:,} / {events[key][1]:,}" for key in titles),
            *(["-"] * len(PEERS)),
            "all, every family",
            Verdict.of(all_right).value,
        ]
    )
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(rows[0]), separator, *(line(r) for r in rows[1:])])


def judge(
    runs: dict[str, list[dict[str, Any]]],
    import_ms: dict[str, list[float]],
    options: argparse.Namespace,
    wall_seconds: float,
) -> BenchResult:
    """
    The comparison's figures for the ``make bench`` table, and its own table and numbers for the JSON file.

    :param runs: each family's round results.
    :param import_ms: each family's import samples.
    :param options: the command line.
    :param wall_seconds: how long the comparison took.
    """
    figures = medians(runs, import_ms)
    events = {key: _events(family_runs) for key, family_runs in runs.items()}
    titles = {
        family.key: (
            f"{family.title} {_version(family)}" + (" (TLS)" if family.uses_tls(options.tls) else "")
            if family is not OURS
            else f"ours {_version(family)}" + (" (TLS)" if options.tls else "")
        )
        for family in FAMILIES.values()
    }
    table = comparison_table(figures, titles, events)
    right = sum(r for r, _ in events.values())
    expected = sum(e for _, e in events.values())
    broken = [
        f"{run['family']} round {index + 1}: {run['error']}"
        for family_runs in runs.values()
        for index, run in enumerate(family_runs)
        if "error" in run
    ]
    result_figures = [
        Figure(
            SECTION,
            f"events right, every family and round ({options.rounds} x {options.triggers:,} triggers each)",
            f"{right:,} / {expected:,}" + (f"; broken: {'; '.join(broken)}" if broken else ""),
            f"all {len(FAMILIES) * options.rounds * options.triggers:,}",
            Verdict.of(not broken and right == expected == len(FAMILIES) * options.rounds * options.triggers),
            right,
        )
    ]
    for target in TARGETS:
        outcome, limit = verdict(target, figures)
        ours = figures[OURS.key][target.row.key]["median"]
        ratios = ", ".join(
            f"x{_format_ratio(_ratio(ours, figures[peer.key][target.row.key]['median']))} {peer.title}"
            for peer in PEERS
        )
        result_figures.append(
            Figure(
                SECTION,
                f"ours: {target.row.name}",
                f"{target.row.format(ours)} ({ratios})",
                target.text(limit),
                outcome,
                ours,
            )
        )
    lag_max = _ROW["lag_max_ms"]
    result_figures.append(
        Figure(
            SECTION,
            f"ours: {lag_max.name}",
            f"{lag_max.format(figures[OURS.key][lag_max.key]['median'])} ("
            + ", ".join(
                f"{peer.title} {lag_max.format(figures[peer.key][lag_max.key]['median'])}" for peer in PEERS
            )
            + ")",
            raw=figures[OURS.key][lag_max.key]["median"],
        )
    )
    details = {
        "table": table,
        "titles": titles,
        "figures": figures,
        "events": {key: {"right": r, "expected": e} for key, (r, e) in events.items()},
        "scenario": {
            "triggers": options.triggers,
            "rounds": options.rounds,
            "poll_interval": options.poll_interval,
            "job_seconds": list(options.job_seconds),
            "seed": options.seed,
            "tls_for_all": options.tls,
            "import_rounds": options.import_rounds,
        },
        "wall_seconds": wall_seconds,
        "runs": runs,
    }
    return BenchResult(result_figures, details)


def run(options: argparse.Namespace) -> BenchResult:
    """
    Time the imports, start the fake server, run the rounds, and judge.

    :param options: the command line.
    """
    started = time.perf_counter()
    families = list(FAMILIES.values())
    import_ms = time_imports(families, options.import_rounds) if options.import_rounds > 0 else {}
    runs: dict[str, list[dict[str, Any]]] = {family.key: [] for family in families}
    logs = options.output.parent
    with running_fake_server() as server:
        for round_index in range(options.rounds):
            for family in families:
                runs[family.key].append(run_family(family, server, round_index, options, logs))
    return judge(runs, import_ms, options, time.perf_counter() - started)


def build_parser() -> argparse.ArgumentParser:
    """The command line parser."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__)
    parser.add_argument("--output", type=Path, required=True, help="where to write the JSON result")
    parser.add_argument("--triggers", type=int, default=1000, help="triggers per family and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every family once")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument(
        "--job-seconds", type=float, nargs=2, default=DEFAULT_JOB_SECONDS, metavar=("LO", "HI")
    )
    parser.add_argument("--import-rounds", type=int, default=DEFAULT_IMPORT_ROUNDS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--tls", action="store_true", help="every family over HTTPS (dbt Cloud always is)")
    return parser


def main() -> None:
    """Parse the command line, run, print the table, and write the result."""
    options = build_parser().parse_args()
    result = run(options)
    print(result.details["table"], flush=True)
    result.write(options.output)


if __name__ == "__main__":
    main()
