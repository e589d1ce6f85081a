"""Protocol 03 (``benchmarks/protocols/03_fidelity.md``): the official loop (O), the official
loop with this plugin's calibration of every row and CutMix box (O+), and this plugin's
``ema`` (P), seeds 0-5, kNN top-1 at epoch 50; paired intervals (primary), Welch beside them,
and the protocol's verdicts and explanation rule."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from .plans import OFFICIAL_LIKE_PLUGIN
from .runs import EvalLog, run_name
from .stats import (
    Interval,
    interval_cell,
    mean_sd_cell,
    paired_interval,
    seeds_cell,
    welch_interval,
)

PROTOCOL = "benchmarks/protocols/03_fidelity.md"
ARMS = {
    "O": ("official", "default"),
    "O+": ("official", OFFICIAL_LIKE_PLUGIN),
    "P": ("effssl", "bank_update=ema"),
}
SEEDS = (0, 1, 2, 3, 4, 5)
FINAL_EPOCH = 50
#: "agree": the paired interval inside [-margin, +margin] kNN points (protocol 03)
FIDELITY_MARGIN = 2.0
#: the comparisons, A - B, in the protocol's order
COMPARISONS = (("O", "P"), ("O+", "P"), ("O", "O+"))
COMMIT = re.compile(r"\bcommit ([0-9a-f]{40})\b")


def arm_curves(studies: list[Path], arm: str) -> dict[int, dict[int, float]]:
    """``{seed: {epoch: kNN top-1}}`` of an arm's runs, found in any of ``studies`` (the
    first folder holding a seed's run wins)."""
    method, variant = ARMS[arm]
    curves: dict[int, dict[int, float]] = {}
    for seed in SEEDS:
        for study in studies:
            run_dir = study / "runs" / run_name(method, variant, seed)
            rows = EvalLog(run_dir).rows()
            if rows:
                curves[seed] = {int(r["epoch"]): float(r["knn_top1"]) for r in rows}
                break
    return curves


def at_epoch(curves: dict[int, dict[int, float]], epoch: int) -> dict[int, float]:
    """``{seed: value}`` of the seeds evaluated at ``epoch``."""
    return {s: c[epoch] for s, c in curves.items() if epoch in c}


def fidelity_verdict(paired: Interval | None) -> str:
    """Protocol 03's rule on the paired interval of A - B."""
    if paired is None:
        return "not shown either way (no interval)"
    excludes = paired.low > 0 or paired.high < 0
    inside = -FIDELITY_MARGIN <= paired.low and paired.high <= FIDELITY_MARGIN
    if excludes:
        return f"differ{f' (inside the +-{FIDELITY_MARGIN:g} margin)' if inside else ''}"
    return "agree" if inside else "not shown either way"


def explanation_shown(curves: dict[str, dict[int, dict[int, float]]], verdicts: dict) -> bool:
    """The protocol's rule: O below P (its paired interval differs, or the mean curve lower at
    every epoch both evaluated), while O+ is not shown to differ from P, and O+ differs from
    O."""
    o_lower = verdicts[("O", "P")].startswith("differ") or _mean_curve_lower(
        curves["O"], curves["P"]
    )
    return (
        o_lower
        and not verdicts[("O+", "P")].startswith("differ")
        and verdicts[("O", "O+")].startswith("differ")
    )


def _mean_curve_lower(a: dict[int, dict[int, float]], b: dict[int, dict[int, float]]) -> bool:
    epochs = sorted({e for c in a.values() for e in c} & {e for c in b.values() for e in c})
    means = [
        (statistics.fmean(at_epoch(a, e).values()), statistics.fmean(at_epoch(b, e).values()))
        for e in epochs
    ]
    return bool(means) and all(x < y for x, y in means)


def fidelity_lines(studies: list[Path]) -> list[str]:
    """The report: every seed at epoch 50 per arm, the three comparisons, the explanation,
    per-epoch differences (secondary) and the commits the runs ran."""
    curves = {arm: arm_curves(studies, arm) for arm in ARMS}
    final = {arm: at_epoch(c, FINAL_EPOCH) for arm, c in curves.items()}
    lines = [f"## Fidelity (protocol 03, `{PROTOCOL}`)", ""]
    if missing := {a: sorted(set(SEEDS) - set(v)) for a, v in final.items() if len(v) < len(SEEDS)}:
        todo = "; ".join(f"{a} seeds {', '.join(map(str, s))}" for a, s in missing.items())
        lines += [f"**Interim**: not every run has reached epoch 50 ({todo}).", ""]
    lines += ["kNN top-1 at epoch 50:", ""]
    lines += ["| arm | seeds | mean +- sd (n) |", "|---|---|---|"]
    for arm, values in final.items():
        lines.append(f"| {arm} | {seeds_cell(values)} | {mean_sd_cell(values)} |")
    lines += ["", "| A - B | paired [95%] (primary) | Welch [95%] | verdict |", "|---|---|---|---|"]
    verdicts = {}
    for a, b in COMPARISONS:
        paired = paired_interval(final[a], final[b])
        welch = welch_interval(list(final[a].values()), list(final[b].values()))
        verdicts[(a, b)] = fidelity_verdict(paired)
        lines.append(
            f"| {a} - {b} | {interval_cell(paired)} | {interval_cell(welch)} | {verdicts[(a, b)]} |"
        )
    shown = explanation_shown(curves, verdicts)
    answer = "yes" if shown else "no"
    lines += ["", f"Explanation (the two differences outside the step) shown: **{answer}**."]
    lines += _per_epoch_lines(curves) + _commit_lines(studies)
    return lines


def _per_epoch_lines(curves: dict) -> list[str]:
    epochs = sorted({e for c in curves["P"].values() for e in c})
    lines = ["", "Per evaluated epoch (secondary), paired mean differences:", ""]
    lines += ["| epoch | " + " | ".join(f"{a} - {b}" for a, b in COMPARISONS) + " |"]
    lines += ["|---|" + "---|" * len(COMPARISONS)]
    for epoch in epochs:
        cells = [
            interval_cell(paired_interval(at_epoch(curves[a], epoch), at_epoch(curves[b], epoch)))
            for a, b in COMPARISONS
        ]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return lines


def _commit_lines(studies: list[Path]) -> list[str]:
    found: dict[str, set[str]] = {}
    for arm, (method, variant) in ARMS.items():
        for seed in SEEDS:
            for study in studies:
                log = study / "runs" / run_name(method, variant, seed) / "starts.log"
                if log.exists():
                    found.setdefault(arm, set()).update(COMMIT.findall(log.read_text()))
                    break
    return [
        "",
        "Commits the runs ran: "
        + "; ".join(f"{a}: {', '.join(sorted(c))}" for a, c in found.items()),
    ]
