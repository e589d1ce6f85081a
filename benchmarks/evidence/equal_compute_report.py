"""Protocol 02's report, ``<out>/equal_compute.md``, rebuilt from whatever has finished: every
comparison (equal compute and equal epochs, each budget) by each final measure with every
seed's value, the arms' means and spreads, the Welch and paired intervals and the verdict;
every run; the step costs and the epochs they gave; the learning rates; the compute spent;
the commits the runs ran and the protocol's own; its deviations."""

from __future__ import annotations

import json
import math
import re
import statistics
import subprocess
from pathlib import Path

from .equal_compute import (
    BUDGET_EPOCHS,
    EFFSSL,
    FINAL_FILE,
    PROTOCOL,
    SIMCLR,
    STEPS_PER_EPOCH,
    read_arms,
)
from .runs import DIVERGED, REPO, EvalLog, parse_run_name, run_dirs
from .stats import AGREE_MARGIN, LEVEL, Interval, mean_std, paired_interval, verdict, welch_interval

REPORT_FILE = "equal_compute.md"
#: the protocol's seeds, all planned; fewer finished is an interim report
SEEDS = (0, 1, 2, 3, 4)
#: (comparison, budget, EffSSL arm, SimCLR arm), the protocol's order
COMPARISONS = [
    ("equal compute", "short", "E-short", "S-short"),
    ("equal compute", "long", "E-long", "S-long"),
    ("equal epochs", "short", "E-short-eq", "S-short"),
    ("equal epochs", "long", "E-long-eq", "S-long"),
]
#: the three final measures on the test images, as a run record's keys
MEASURES = {
    "knn_own": "kNN, own reference",
    "knn_unseen": "kNN, unseen reference",
    "linear": "linear probe",
}
COMMIT = re.compile(r" commit ([0-9a-f]{40})( \(uncommitted changes\))?: ")
SOURCE = re.compile(r", effssl_plugin (\S+), configs ")


def added_commit(path: Path) -> str | None:
    """The commit that added ``path`` to the repository holding it (the oldest if added
    twice), or None (not committed, or not in a repository)."""
    proc = subprocess.run(
        ["git", "-C", str(path.parent), "log", "--diff-filter=A", "--format=%H", "--", path.name],
        capture_output=True,
        text=True,
    )
    commits = proc.stdout.split() if proc.returncode == 0 else []
    return commits[-1] if commits else None


def start_commits(run_dir: Path) -> tuple[list[str], list[str]]:
    """(the commits a run's (re)starts ran, short, marked when uncommitted; the folders its
    ``effssl_plugin`` came from), from its ``starts.log``."""
    text = (run_dir / "starts.log").read_text() if (run_dir / "starts.log").exists() else ""
    found = COMMIT.findall(text)
    commits = dict.fromkeys(h[:12] + (" (uncommitted)" if dirty else "") for h, dirty in found)
    return list(commits), list(dict.fromkeys(SOURCE.findall(text)))


def finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def run_record(run_dir: Path, epochs: int) -> dict:
    """One run's state, validation kNN at its last epoch and curve, final measures
    (``final.json``), steps, raw training and measuring seconds, and commits."""
    log = EvalLog(run_dir)
    rows = log.rows()
    last = [float(r["knn_top1"]) for r in rows if int(r["epoch"]) == epochs]
    final = (
        json.loads((run_dir / FINAL_FILE).read_text()) if (run_dir / FINAL_FILE).exists() else {}
    )
    if (run_dir / DIVERGED).exists():
        state = "diverged: " + (run_dir / DIVERGED).read_text().strip()
    elif last:
        state = "finished"
    else:
        state = f"running (epoch {rows[-1]['epoch']})" if rows else "started"
    linear = final.get("linear", {})
    commits, sources = start_commits(run_dir)
    return {
        "state": state,
        "val": last[-1] if last else None,
        "curve": [(int(r["epoch"]), float(r["knn_top1"])) for r in rows],
        "knn_own": final.get("knn_own_top1"),
        "knn_unseen": final.get("knn_unseen_top1"),
        "linear": linear.get("val_acc1"),
        "unseen_sha256": final.get("unseen_sha256"),
        "steps": int(rows[-1]["steps"]) if rows else 0,
        "raw_s": max((t for _, t in log.time_points()), default=0.0),
        "measure_s": final.get("knn_seconds", 0.0) + linear.get("seconds", 0.0),
        "commits": commits,
        "sources": sources,
    }


def arm_records(args, arms: dict) -> dict[str, dict[int, dict]]:
    """``{arm: {seed: run record}}``; an arm with the same method and epochs as another
    shares its runs."""
    records: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    for run_dir in run_dirs(args):
        method, variant, seed = parse_run_name(run_dir.name)
        for arm, spec in arms.items():
            if (spec["method"], spec["variant"]) == (method, variant):
                records[arm][seed] = run_record(run_dir, spec["epochs"])
    return records


def interval_cell(interval: Interval | None) -> str:
    if interval is None:
        return "- (n < 2 or no spread)"
    return f"[{interval.low:+.2f}, {interval.high:+.2f}] (df {interval.df:.1f})"


def seed_cell(values: dict[int, float]) -> str:
    return ", ".join(f"s{s}: {v:.2f}" for s, v in sorted(values.items())) or "-"


def spread_cell(values: dict[int, float]) -> str:
    if not values:
        return "-"
    mean, sd = mean_std(list(values.values()))
    return f"{mean:.2f} +- {sd:.2f}"


def measure_values(runs: dict[int, dict], measure: str) -> dict[int, float]:
    """``{seed: value}`` of a measure over an arm's run records, where it is a number."""
    return {s: r[measure] for s, r in runs.items() if finite(r[measure])}


def comparison_row(
    comparison: tuple, measure: str, records: dict, arms: dict, planned: int = len(SEEDS)
) -> str:
    """One comparison by one measure: every seed's value of each arm, n, means and standard
    deviations, the difference EffSSL - SimCLR, the Welch and paired intervals, the verdict
    (marked interim while an arm has fewer than the ``planned`` seeds)."""
    kind, budget, a, b = comparison
    va, vb = measure_values(records[a], measure), measure_values(records[b], measure)
    welch = welch_interval(list(va.values()), list(vb.values()))
    paired = paired_interval(va, vb)
    both = bool(va) and bool(vb)
    diff = f"{statistics.fmean(va.values()) - statistics.fmean(vb.values()):+.2f}" if both else "-"
    called = verdict(welch) if both else "no values yet"
    if both and min(len(va), len(vb)) < planned:
        called += f" (interim, n = {len(va)} / {len(vb)})"
    return (
        f"| {kind}, {budget} | {MEASURES[measure]} | {a} ({arms[a]['epochs']} ep) | "
        f"{b} ({arms[b]['epochs']} ep) | {seed_cell(va)} | {seed_cell(vb)} | "
        f"{len(va)} / {len(vb)} | {spread_cell(va)} | {spread_cell(vb)} | "
        f"{diff} | {interval_cell(welch)} | {interval_cell(paired)} | "
        f"{called} |"
    )


def comparison_lines(records: dict, arms: dict) -> list[str]:
    """The comparisons section: each comparison by each measure (:func:`comparison_row`)."""
    lines = [
        "## Comparisons (test set, each run at the end of its own schedule)",
        "",
        f"Difference EffSSL - SimCLR in points; {LEVEL:.0%} Welch interval (the two arms' seeds "
        "as independent samples, Welch-Satterthwaite df), the paired-by-seed interval beside "
        "it (secondary). Verdict on the Welch interval, in the protocol's order: **EffSSL "
        "better** / **SimCLR better** when it excludes 0; **agree** when it lies inside "
        f"[-{AGREE_MARGIN:g}, +{AGREE_MARGIN:g}]; otherwise **not shown either way**.",
        "",
        "| comparison | measure | EffSSL arm | SimCLR arm | EffSSL by seed | SimCLR by seed "
        "| n | EffSSL mean +- sd | SimCLR mean +- sd | difference | Welch 95% CI "
        "| paired 95% CI | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for comparison in COMPARISONS:
        lines += [comparison_row(comparison, m, records, arms) for m in MEASURES]
    return lines + [""]


def value(v) -> str:
    return f"{v:.2f}" if finite(v) else "-"


def run_lines(records: dict, arms: dict) -> list[str]:
    """Every run: its arms, state, validation kNN at its last epoch, the three final measures,
    the validation curve (readings before the last epoch are mid-schedule) and commits."""
    runs: dict[tuple[str, str, int], list[str]] = {}  # a run serves one arm or two
    for arm, seeds in records.items():
        for seed in seeds:
            runs.setdefault((arms[arm]["method"], arms[arm]["variant"], seed), []).append(arm)
    order = list(arms)
    lines = [
        "## Every run",
        "",
        "| arm(s) | seed | method | epochs | lr | state | val kNN at the end | kNN own (test) "
        "| kNN unseen (test) | linear (test) | val kNN by epoch | commits (starts.log) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (_, _, seed), names in sorted(runs.items(), key=lambda kv: (order.index(kv[1][0]), kv[0])):
        spec, r = arms[names[0]], records[names[0]][seed]
        curve = ", ".join(f"{e}: {v:.1f}" for e, v in r["curve"])
        lines.append(
            f"| {' = '.join(names)} | {seed} | {spec['method']} | {spec['epochs']} | "
            f"{spec['lr']:g} | {r['state']} | {value(r['val'])} | {value(r['knn_own'])} | "
            f"{value(r['knn_unseen'])} | {value(r['linear'])} | {curve or '-'} | "
            f"{', '.join(r['commits']) or '-'} |"
        )
    return lines + [""]


def in_repo(path: str) -> str:
    """``path`` relative to the git repository that holds it (this code's, or the one a pinned
    copy writes its results into; no machine's folders in reports), else its last two parts."""
    resolved = Path(path).resolve()
    for folder in resolved.parents:
        if (folder / ".git").exists():
            return str(resolved.relative_to(folder))
    return str(Path(*resolved.parts[-2:]))


def step_cost_lines(fixed: dict) -> list[str]:
    """The step-cost CSV (where, digest, commit, its rows) and the epochs it gave each arm,
    with each arm's budget at the steps an epoch the arms file records (protocol 02's 19)."""
    cost = fixed["step_cost"]
    csv_path = Path(cost["csv"])
    commit = added_commit(csv_path) if csv_path.exists() else None
    c = cost["median_s_per_step"]
    steps = fixed.get("steps_per_epoch", STEPS_PER_EPOCH)  # protocol 02's arms.json lacks it
    lines = [
        "## Step cost and epochs",
        "",
        f"`{csv_path.name}` (sha256 `{cost['sha256']}`; "
        + (f"committed in {commit})" if commit else "**not committed yet**)")
        + ": median seconds a training step, interleaved rounds: "
        + ", ".join(f"{m} {v:.4f}" for m, v in c.items())
        + f"; c_E / c_S = {c[EFFSSL] / c[SIMCLR]:.4f}.",
        "",
    ]
    if csv_path.exists():
        lines += ["```", csv_path.read_text().strip(), "```", ""]
    if (log := csv_path.with_name("step_cost.log")).exists():  # study_equal_compute.sh's
        kept = ("20", "load", "machine:")  # the start (date, commit), the load, the machine
        conditions = [ln for ln in log.read_text().splitlines() if ln.startswith(kept)]
        lines += ["Conditions (`step_cost.log`): " + "; ".join(conditions) + ".", ""]
    lines += [
        "| arm | method | epochs | exact (E x c_E / c_S) | rounding error (epochs) | lr | "
        "variant | budget (steps x c, hours) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, arm in fixed["arms"].items():
        hours = arm["epochs"] * steps * c[arm["method"]] / 3600
        lines.append(
            f"| {name} | {arm['method']} | {arm['epochs']} | {arm['exact_epochs']:.3f} | "
            f"{arm['rounding_error']:+.3f} | {arm['lr']:g} | `{arm['variant']}` | {hours:.2f} |"
        )
    return lines + [""]


def lr_lines(fixed: dict) -> list[str]:
    """Each method's learning rate by protocol 01's rule, with the search's scores."""
    lines = [
        "## Learning rates (protocol 01's rule)",
        "",
        f"From `{in_repo(fixed['lr_search'])}` (validation kNN at the search's last epoch, "
        "seed 0).",
        "",
    ]
    for method, choice in fixed["learning_rates"].items():
        scores = ", ".join(
            f"{lr}: {'diverged' if v is None else f'{v:.2f}'}" for lr, v in choice["scores"].items()
        )
        lines.append(f"- {method}: **{choice['lr']:g}** ({choice['reason']}); scores {scores}")
    return lines + [""]


def compute_lines(records: dict, fixed: dict) -> list[str]:
    """The compute spent per arm (each run counted once): training steps, the same at the
    measured step cost (hours, and EffSSL epochs), raw training and measuring hours."""
    c = fixed["step_cost"]["median_s_per_step"]
    epoch_cost = fixed.get("steps_per_epoch", STEPS_PER_EPOCH) * c[EFFSSL]
    lines = [
        "## Compute spent",
        "",
        "| arm | runs | training steps | at the step cost (h) | in EffSSL epochs | raw "
        "training (h) | final measures (h) |",
        "|---|---|---|---|---|---|---|",
    ]
    seen, totals = set(), [0, 0.0, 0.0, 0.0]
    for arm, seeds in records.items():
        spec = fixed["arms"][arm]
        new = {s: r for s, r in seeds.items() if (spec["variant"], spec["method"], s) not in seen}
        seen |= {(spec["variant"], spec["method"], s) for s in new}
        steps = sum(r["steps"] for r in new.values())
        cost = steps * c[spec["method"]]
        raw = sum(r["raw_s"] for r in new.values())
        measured = sum(r["measure_s"] for r in new.values())
        totals = [totals[0] + steps, totals[1] + cost, totals[2] + raw, totals[3] + measured]
        lines.append(
            f"| {arm} | {len(new)} | {steps} | {cost / 3600:.2f} | "
            f"{cost / epoch_cost:.1f} | {raw / 3600:.2f} | "
            f"{measured / 3600:.2f} |"
        )
    steps, cost, raw, measured = totals
    lines.append(
        f"| all | | {steps} | {cost / 3600:.2f} | {cost / epoch_cost:.1f} | "
        f"{raw / 3600:.2f} | {measured / 3600:.2f} |"
    )
    return lines + [""]


#: protocol 02's unseen reference, in words
UNSEEN_WORDS = "pool images 501-1,000 of each class"


def run_code_lines(records: dict, arms: dict, unseen: str = UNSEEN_WORDS) -> list[str]:
    """The commits the runs ran and where ``effssl_plugin`` came from (``starts.log``; each
    run counted once), and the unseen reference (``unseen``, in words) with its digest as the
    final measures recorded it."""
    runs = {
        (arms[arm]["method"], arms[arm]["variant"], seed): r
        for arm, seeds in records.items()
        for seed, r in seeds.items()
    }
    commits: dict[str, int] = {}
    for r in runs.values():
        for commit in r["commits"]:
            commits[commit] = commits.get(commit, 0) + 1
    digests = sorted({r["unseen_sha256"] for r in runs.values()} - {None})
    sources = sorted({in_repo(source) for r in runs.values() for source in r["sources"]})
    return [
        "- Commits the runs ran (runs that ran each): "
        + (", ".join(f"{c} x{n}" for c, n in sorted(commits.items())) or "none yet")
        + (" **(some uncommitted)**" if any("uncommitted" in c for c in commits) else "")
        + f"; `effssl_plugin` imported from {', '.join(sources) or '-'}.",
        f"- Unseen reference ({unseen}; sha256 of the sorted "
        f"`class/name` lines): {', '.join(f'`{d}`' for d in digests) or 'not used yet'}.",
    ]


def code_lines(records: dict, arms: dict, protocol: str = PROTOCOL) -> list[str]:
    """The runs' code and data (:func:`run_code_lines`) and the protocol's commit."""
    committed = added_commit(REPO / protocol)
    return [
        "## Code and data",
        "",
        f"- Protocol: `{protocol}`, committed in {committed or '(not committed)'}.",
        *run_code_lines(records, arms),
        "",
    ]


def deviation_lines(protocol: str = PROTOCOL) -> list[str]:
    """The protocol's own "Deviations" section, as committed."""
    text = (REPO / protocol).read_text() if (REPO / protocol).exists() else ""
    section = text.split("## Deviations", 1)[1].strip() if "## Deviations" in text else "-"
    return ["## Deviations (from the protocol)", "", section, ""]


def header_lines(records: dict) -> list[str]:
    """The title, the status (interim while an arm has fewer than the protocol's seeds with
    every measure) and what the runs are."""
    done = {
        arm: sum(all(finite(r[m]) for m in MEASURES) for r in seeds.values())
        for arm, seeds in records.items()
    }
    final = all(n >= len(SEEDS) for n in done.values())
    status = (
        "**Result** (n = 5 for every arm)."
        if final
        else "**Interim report**: not every arm has its 5 seeds with all three measures yet "
        f"({', '.join(f'{a}: n = {n}' for a, n in done.items())}); the result is the n = 5 "
        "report. If the budget ends first, this n is the study's n."
    )
    budgets = ", ".join(f"{b} {e} EffSSL epochs" for b, e in BUDGET_EPOCHS.items())
    return [
        "# Protocol 02: EffSSL against SimCLR at equal compute and equal epochs",
        "",
        status,
        "",
        f"Budgets: {budgets}. Every arm a complete cosine schedule ending at its own last "
        "epoch, no warm-up; seeds 0-4; the final measures on the 10,000 test images "
        "after the last epoch; the validation kNN (the 5,000 held-out images) by epoch.",
        "",
    ]


def equal_compute_report(args) -> None:
    """``<out>/equal_compute.md`` from ``arms.json`` and every run with records."""
    fixed = read_arms(args.out)
    records = arm_records(args, fixed["arms"])
    lines = header_lines(records) + comparison_lines(records, fixed["arms"])
    lines += run_lines(records, fixed["arms"]) + step_cost_lines(fixed) + lr_lines(fixed)
    lines += compute_lines(records, fixed) + code_lines(records, fixed["arms"])
    lines += deviation_lines()
    (args.out / REPORT_FILE).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / REPORT_FILE}")
