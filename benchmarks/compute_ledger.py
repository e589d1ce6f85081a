"""What the studies took (issue 27: "State what it took"): the training wall-clock of every run
in the study folders given, summed per folder and method, from each run's ``time.csv`` (the
seconds of training after each epoch, evaluations excluded, summed over sessions, work that a
restart lost and did again included) and its ``starts.log`` (the date of its first session).

    python benchmarks/compute_ledger.py benchmarks/results/lr_search \\
        benchmarks/results/equal_compute [--since 2026-12-04] [--out ledger.md]

The hours are raw wall-clock: two jobs side by side on 2 cores each run slower, so they count
more than the same work alone (the step-cost budgets of the protocols do not depend on them).
Evaluations, final measures and linear probes are not counted. With ``--since``, a run counts
when its first session started on or after that date.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path

START = re.compile(r"^(\d{4}-\d{2}-\d{2}) \d{2}:\d{2}:\d{2} ")


@dataclass(frozen=True)
class RunCost:
    """One run's training: its folder, method, epochs trained, seconds and first start date."""

    study: str
    method: str
    epochs: int
    seconds: float
    first_start: str


def trained(rows: list[list[str]]) -> tuple[int, float]:
    """``(epochs, seconds)`` trained from a run's ``time.csv`` rows ``[epoch, cumulative
    seconds]``. A session that resumes from an earlier checkpoint (epoch ``c``) writes epoch
    ``c + 1`` again, counting on from the seconds recorded at ``c``; the work after ``c`` that
    the earlier session did was lost and done again, so it counts too:
    ``seconds = last + sum over restarts (seconds before the restart - seconds at c)``, and
    the epochs likewise."""
    epochs, seconds = 0, 0.0
    at: dict[int, float] = {0: 0.0}  # the seconds recorded at each epoch, latest session
    last = (0, 0.0)
    for row in rows:
        epoch, cumulative = int(row[0]), float(row[1])
        if epoch <= last[0]:  # a restart from the checkpoint of epoch - 1
            epochs += last[0] - (epoch - 1)
            seconds += last[1] - at.get(epoch - 1, 0.0)
        at[epoch] = cumulative
        last = (epoch, cumulative)
    return epochs + last[0], seconds + last[1]


def run_cost(run_dir: Path) -> RunCost | None:
    """A run's training cost, or ``None`` for a run with no epoch recorded."""
    path = run_dir / "time.csv"
    if not path.exists():
        return None
    with path.open() as f:
        rows = [r for r in csv.reader(f) if r and r[0] != "epoch"]
    if not rows:
        return None
    epoch, seconds = trained(rows)
    starts_log = run_dir / "starts.log"
    log = starts_log.read_text().splitlines() if starts_log.exists() else []
    dates = sorted(m.group(1) for m in map(START.match, log) if m)
    method = run_dir.name.split("__", 1)[0]
    return RunCost(run_dir.parent.parent.name, method, epoch, seconds, dates[0] if dates else "")


def ledger(folders: list[Path], since: str = "") -> list[RunCost]:
    """Every run of ``folders`` (``<folder>/runs/<run>``) that trained, first started on or
    after ``since`` (``""``: all)."""
    costs = []
    for folder in folders:
        for run_dir in sorted(p for p in (folder / "runs").glob("*") if p.is_dir()):
            cost = run_cost(run_dir)
            if cost is not None and (not since or cost.first_start >= since):
                costs.append(cost)
    return costs


def report(costs: list[RunCost]) -> list[str]:
    """A Markdown table per study folder and method, and the total."""
    lines = [
        "| study folder | method | runs | epochs | training hours (raw) |",
        "|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[RunCost]] = {}
    for cost in costs:
        groups.setdefault((cost.study, cost.method), []).append(cost)
    for (study, method), group in sorted(groups.items()):
        hours = sum(c.seconds for c in group) / 3600
        epochs = sum(c.epochs for c in group)
        lines.append(f"| {study} | {method} | {len(group)} | {epochs} | {hours:.2f} |")
    total = sum(c.seconds for c in costs) / 3600
    lines.append(f"| **all** | | {len(costs)} | {sum(c.epochs for c in costs)} | **{total:.2f}** |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", type=Path, nargs="+", help="study folders (each with runs/)")
    p.add_argument("--since", default="", help="YYYY-MM-DD: runs first started on or after it")
    p.add_argument("--out", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    lines = report(ledger(args.folders, args.since))
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        command = " ".join(["python benchmarks/compute_ledger.py", *(argv or sys.argv[1:])])
        args.out.write_text(f"Training compute, raw wall-clock (`{command}`):\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
