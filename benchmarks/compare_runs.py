"""Issue 27, point 8: does the same seed with the same code give the same curve? Compares
every run of a rerun study folder with the run of the same name in a reference folder: the
kNN top-1 and top-5 at every epoch both evaluated, and the commit each ran (``starts.log``).
Then, where it can tell, where two runs part: the epoch-mean training losses that Lightning
logged (``train_*_epoch`` in each session's ``logs/version_N/metrics.csv``), epoch by epoch,
with the epochs each session trained (a new session is a resume).

    python benchmarks/compare_runs.py REFERENCE_OUT RERUN_OUT [--tol 0]

Prints Markdown tables and exits 1 when a value differs by more than ``--tol`` points or the
commits differ (0: bit-identical evaluations expected on one machine and software stack).
The training losses inform and decide nothing.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

COMMIT = re.compile(r"\bcommit ([0-9a-f]{40})\b")


def evals(run_dir: Path) -> dict[int, tuple[float, float]]:
    """``{epoch: (kNN top-1, top-5)}`` of a run's ``evals.csv``."""
    path = run_dir / "evals.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {
            int(r["epoch"]): (float(r["knn_top1"]), float(r["knn_top5"])) for r in csv.DictReader(f)
        }


def commits(run_dir: Path) -> set[str]:
    """The commits a run's sessions ran (``starts.log``)."""
    path = run_dir / "starts.log"
    return set(COMMIT.findall(path.read_text())) if path.exists() else set()


def epoch_losses(run_dir: Path) -> tuple[dict[int, tuple[str, ...]], list[list[int]]]:
    """``{epoch: its train_*_epoch values as logged}`` over every session of a run, and the
    epochs each session trained (sessions in ``version_N`` order)."""
    losses: dict[int, tuple[str, ...]] = {}
    sessions = []
    logs = sorted(
        run_dir.glob("ckpt/*/*/logs/version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.rsplit("_", 1)[1]),
    )
    for path in logs:
        with path.open() as f:
            rows = list(csv.DictReader(f))
        keys = sorted(k for k in (rows[0] if rows else {}) if re.fullmatch(r"train_\w+_epoch", k))
        epochs = []
        for row in rows:
            if keys and row.get(keys[0]):
                epoch = int(row["epoch"])
                losses[epoch] = tuple(row[k] for k in keys)
                epochs.append(epoch)
        sessions.append(sorted(set(epochs)))
    return losses, sessions


def _ranges(epochs: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2, 5"``."""
    runs: list[list[int]] = []
    for e in sorted(epochs):
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def _spans(sessions: list[list[int]]) -> str:
    """``"0-6; 7-8"``: the epochs (0-based) each session trained."""
    return "; ".join(_ranges(s) for s in sessions if s)


def loss_lines(reference: Path, rerun: Path) -> list[str]:
    """Where each rerun run's training losses part from the reference's (informative)."""
    lines = [
        "| run | epochs with identical training losses | first differing epoch "
        "| reference sessions (epochs) | rerun sessions (epochs) |",
        "|---|---|---|---|---|",
    ]
    for run_dir in sorted(p for p in (rerun / "runs").iterdir() if p.is_dir()):
        (a, s_ref), (b, s_new) = (
            epoch_losses(reference / "runs" / run_dir.name),
            epoch_losses(run_dir),
        )
        shared = sorted(a.keys() & b.keys())
        if not shared:
            continue
        differ = [e for e in shared if a[e] != b[e]]
        same = [e for e in shared if e not in differ]
        lines.append(
            f"| {run_dir.name} | {_ranges(same) or '-'} | {differ[0] if differ else '-'} "
            f"| {_spans(s_ref)} | {_spans(s_new)} |"
        )
    return lines if len(lines) > 2 else []


def compare(reference: Path, rerun: Path, tol: float) -> tuple[list[str], bool]:
    """The table's lines and whether every shared evaluation and commit agrees."""
    lines = [
        "| run | epoch | reference top-1 / top-5 | rerun top-1 / top-5 | difference | commits |",
        "|---|---|---|---|---|---|",
    ]
    same = True
    for run_dir in sorted(p for p in (rerun / "runs").iterdir() if p.is_dir()):
        ref_dir = reference / "runs" / run_dir.name
        a, b = evals(ref_dir), evals(run_dir)
        shared = sorted(a.keys() & b.keys())
        c_ref, c_new = commits(ref_dir), commits(run_dir)
        commit_note = "same" if c_ref == c_new and c_ref else f"{sorted(c_ref)} vs {sorted(c_new)}"
        same &= commit_note == "same" and bool(shared)
        if not shared:
            lines.append(f"| {run_dir.name} | - | - | - | no shared epoch | {commit_note} |")
        for epoch in shared:
            diff = max(abs(x - y) for x, y in zip(a[epoch], b[epoch], strict=True))
            same &= diff <= tol
            lines.append(
                f"| {run_dir.name} | {epoch} | {a[epoch][0]:.2f} / {a[epoch][1]:.2f} | "
                f"{b[epoch][0]:.2f} / {b[epoch][1]:.2f} | {diff:.2f} | {commit_note} |"
            )
    return lines, same


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reference", type=Path)
    p.add_argument("rerun", type=Path)
    p.add_argument("--tol", type=float, default=0.0, help="points of top-1/top-5 allowed")
    args = p.parse_args(argv)
    lines, same = compare(args.reference, args.rerun, args.tol)
    print("\n".join(lines))
    print(f"\n{'identical' if same else 'DIFFERENT'} (tolerance {args.tol:g} points)")
    losses = loss_lines(args.reference, args.rerun)
    if losses:
        print("\nTraining losses by epoch (0-based; informative):\n\n" + "\n".join(losses))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
