"""The study's report, rebuilt from whatever finished: ``report.md`` (settings, one row per
arm, the learning-rate search, the comparisons, every evaluation) and ``study.png`` (kNN
against epochs and wall-clock)."""

from __future__ import annotations

import csv
import json
import statistics
import sys

from .comparisons import comparison_lines, label
from .equal_compute import ARMS_FILE
from .evaluation import K, T
from .parity import parity_report_lines
from .runs import DIVERGED, EvalLog, parse_run_name, run_dirs, run_epochs, run_name, studies
from .scale_report import protocol_report
from .search import (
    SEARCH_EXTENSION,
    SEARCH_FACTORS,
    SEARCH_LR,
    SEARCH_TIE,
    SEARCH_WARMUP,
    search_choice,
    search_extension,
    search_lr,
    search_scores,
    search_variant,
)
from .stats import CLIP_FACTOR, clipped_seconds, mean_std

SEARCH_ALL = (*SEARCH_FACTORS, *SEARCH_EXTENSION.values())


def collect(args) -> dict[tuple[str, str], dict[int, list[dict]]]:
    """{(method, variant): {seed: evaluation rows}} for every run with results."""
    out: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for run_dir in run_dirs(args):
        method, variant, seed = parse_run_name(run_dir.name)
        log = EvalLog(run_dir)
        rows = [{k: float(v) for k, v in r.items()} for r in log.rows()]
        if rows:
            points = log.time_points() or [(r["epoch"], r["train_s"]) for r in rows]
            clipped = clipped_seconds(points)
            for r in rows:
                r["clipped_s"] = clipped.get(int(r["epoch"]), r["train_s"])
            out.setdefault((method, variant), {})[seed] = rows
    return out


def evaluated_images(args) -> str:
    """The report's name for the evaluation images."""
    if getattr(args, "eval_set", "test") == "val":
        return (
            f"the held-out validation split ({args.holdout} training images a class, split "
            f"seed {args.split_seed}, never trained on; `split.json`), not the test set"
        )
    return "the 10,000 test images"


def search_row(args, runs: dict, method: str, factor: float) -> str | None:
    """One search arm's row: its kNN at every evaluated epoch and at the end (or why not)."""
    variant = search_variant(method, factor)
    run_dir = args.out / "runs" / run_name(method, variant, 0)
    rows = runs.get((method, variant), {}).get(0, [])
    if not rows and not (run_dir / DIVERGED).exists():
        return None
    curve = ", ".join(f"{int(r['epoch'])}: {r['knn_top1']:.2f}" for r in rows)
    end = [r["knn_top1"] for r in rows if int(r["epoch"]) == args.epochs]
    if (run_dir / DIVERGED).exists():
        end_cell = "diverged: " + (run_dir / DIVERGED).read_text().strip()
    else:
        end_cell = f"**{end[0]:.2f}**" if end else "(running)"
    return (
        f"| {method} | {search_lr(method, factor):g} | {factor:.3g} | {curve or '-'} | {end_cell} |"
    )


def search_choice_row(args, method: str) -> str | None:
    """The rule's choice for ``method`` once its grid has finished."""
    scores = search_scores(args, method)
    if not all(search_lr(method, f) in scores for f in SEARCH_FACTORS):
        return None
    chosen, why = search_choice(scores, SEARCH_LR[method])
    if chosen is None:
        return f"| **{method}: no choice** | | | {why} | |"
    extension = search_extension(method, scores)
    due = f"; extension {extension} due" if extension else ""
    return f"| **{method}: chosen** | **{chosen:g}** | | {why}{due} | |"


def search_lines(args, runs: dict) -> list[str]:
    """The learning-rate search (protocol 01): each searched method's learning rates with
    their kNN at every evaluated epoch (seed 0), and the rule's choice (on the last epoch)
    once its grid has finished."""
    methods = [m for m in SEARCH_LR if any((m, search_variant(m, f)) in runs for f in SEARCH_ALL)]
    if not methods:
        return []
    lines = [
        "## Learning-rate search (benchmarks/protocols/01_lr_search.md)",
        "",
        f"Seed 0, warm-up {SEARCH_WARMUP:.0%} of the schedule for every arm. The rule: the "
        f"highest kNN at epoch {args.epochs}; within {SEARCH_TIE:g} point of it, the learning "
        "rate closest to the current one (log scale), then the lower; a choice at an edge of "
        "the grid runs the next value past it (x1/9 or x9) once.",
        "",
        "| method | learning rate | x current | kNN top-1 by epoch | at the end |",
        "|---|---|---|---|---|",
    ]
    for method in methods:
        rows = (search_row(args, runs, method, f) for f in sorted(SEARCH_ALL))
        lines += [r for r in (*rows, search_choice_row(args, method)) if r is not None]
    return lines + [""]


def adopt_settings(args) -> None:
    """The studies' own settings (``settings.json``) replace this command line's; pooled
    studies must share them."""
    found = {
        d: json.loads(f.read_text()) for d in studies(args) if (f := d / "settings.json").exists()
    }
    if len({json.dumps(v, sort_keys=True) for v in found.values()}) > 1:
        sys.exit(f"--pool: the studies' settings differ: {found}")
    for key, value in next(iter(found.values()), {}).items():
        if key != "knn":
            setattr(args, key, value)


def untrained_reference(args) -> tuple[float, float, int] | None:
    """(mean, std, seeds) of the untrained backbone's kNN (``random_init.csv``); the pooled
    studies measure the same seeds alike."""
    refs = {}
    for path in (d / "random_init.csv" for d in studies(args)):
        if path.exists():
            with open(path) as f:
                refs |= {
                    int(r["seed"]): float(r["knn_top1"])
                    for r in csv.DictReader(f)
                    if r["model"] == args.model
                }
    return mean_std(list(refs.values())) + (len(refs),) if refs else None


def intro_lines(args, reference) -> list[str]:
    """The title and the study's settings, in words."""
    pooled = getattr(args, "pool", None)
    overrides = getattr(args, "effssl_overrides", None)
    lines = [
        "# Evidence study",
        "",
        *(
            [f"Pooled from: {', '.join(d.name for d in args.pool)} (same settings).", ""]
            if pooled
            else []
        ),
        f"CIFAR-10, {args.fraction:.0%} of the training images (class-stratified), timm "
        f"`{args.model}` (low-resolution stem), batch {args.batch}, {args.epochs} epochs"
        + (f"; EffSSL and the official loop with `{' '.join(overrides)}`. " if overrides else ". ")
        + f"kNN (cosine, k={K}, T={T}) top-1 on {evaluated_images(args)}, the run's training "
        "images as reference. Mean +- sample standard deviation over seeds, then every "
        "seed's value. Wall-clock minutes exclude evaluation and include calibration and "
        "data loading; 'clipped' caps each epoch at "
        f"{CLIP_FACTOR}x its run's median epoch (other work on the shared 2-core machine, "
        "restarts), and the minutes axis of the plot uses it. Unfinished runs are marked.",
        "",
    ]
    if reference:
        lines += [
            f"Untrained backbone ({reference[2]} seed(s)): {reference[0]:.2f} +- "
            f"{reference[1]:.2f}. A run counts as having learned when it ends >= 10 points "
            "above it.",
            "",
        ]
    return lines


def linear_cells(args, names: set[str]) -> str:
    """The linear-probe cells of an arm: mean +- std and every value, or ``- | -``."""
    probes = [
        json.loads(p.read_text())["val_acc1"]
        for d in run_dirs(args)
        if d.name in names and (p := d / "linear.json").exists()
    ]
    if not probes:
        return "- | -"
    lm, ls = mean_std(probes)
    return f"{lm:.2f} +- {ls:.2f} (n={len(probes)}) | " + ", ".join(f"{v:.2f}" for v in probes)


def summary_lines(args, runs: dict) -> list[str]:
    """The compute spent, and one row per arm: its final kNN, minutes and linear probes."""
    spent = [max((t for _, t in EvalLog(d).time_points()), default=0.0) for d in run_dirs(args)]
    lines = [
        f"Compute so far: {sum(spent) / 3600:.1f} h of training wall-clock over {len(spent)} "
        "runs (raw, so including other work on the machine; evaluations, linear probes and "
        "the untrained-backbone reference not counted).",
        "",
        "| method | seeds | final epoch | kNN top-1 at the end | values "
        "| train min (raw / clipped) | linear top-1 | values |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, variant), seeds in sorted(runs.items()):
        finals = [rows[-1] for rows in seeds.values()]
        top1 = [r["knn_top1"] for r in finals]
        m, s = mean_std(top1)
        epochs = sorted({int(r["epoch"]) for r in finals})
        note = "" if epochs == [run_epochs(args, variant)] else " (unfinished)"
        linear = linear_cells(args, {run_name(method, variant, seed) for seed in seeds})
        lines.append(
            f"| {label(method, variant)} | {len(seeds)} | {'/'.join(map(str, epochs))}{note} | "
            f"{m:.2f} +- {s:.2f} | {', '.join(f'{v:.2f}' for v in top1)} | "
            f"{statistics.fmean(r['train_s'] for r in finals) / 60:.1f} / "
            f"{statistics.fmean(r['clipped_s'] for r in finals) / 60:.1f} | {linear} |"
        )
    return lines + [""]


def plot(args, runs: dict, reference) -> None:
    """``study.png``: every arm's mean +- std kNN against epochs and clipped minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for i, ((method, variant), seeds) in enumerate(sorted(runs.items())):
        epochs = sorted(set.intersection(*({r["epoch"] for r in v} for v in seeds.values())))
        if not epochs:
            continue
        per_epoch = [
            [next(r for r in rows if r["epoch"] == e) for rows in seeds.values()] for e in epochs
        ]
        acc = [mean_std([r["knn_top1"] for r in rs]) for rs in per_epoch]
        minutes = [statistics.fmean(r["clipped_s"] for r in rs) / 60 for rs in per_epoch]
        name = f"{label(method, variant)} (n={len(seeds)})"
        for ax, x in ((axes[0], epochs), (axes[1], minutes)):
            ax.plot(x, [m for m, _ in acc], marker="o", color=f"C{i}", label=name)
            low, high = [m - s for m, s in acc], [m + s for m, s in acc]
            ax.fill_between(x, low, high, color=f"C{i}", alpha=0.2)
    wall_clock = (
        "training wall-clock (min, 2 CPU cores); each curve is its own schedule,\n"
        "so a point before a curve's end is mid-schedule, not equal compute"
    )
    for ax, xlabel in zip(axes, ("epochs", wall_clock), strict=True):
        if reference:
            ax.axhline(reference[0], color="gray", ls="--", label="untrained backbone")
            ax.axhline(reference[0] + 10, color="gray", ls=":", label="untrained + 10")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("kNN top-1 (%)")
    axes[1].legend(fontsize=7)
    fig.suptitle(
        f"CIFAR-10 {args.fraction:.0%}, {args.model}, batch {args.batch}: mean +- std over seeds"
    )
    fig.tight_layout()
    fig.savefig(args.out / "study.png", dpi=120)
    plt.close(fig)


def evaluation_lines(runs: dict) -> list[str]:
    """Every evaluation of every run."""
    lines = ["## Every evaluation", "", "| run | " + " | ".join(["epoch: top-1"]) + " |"]
    lines += ["|---|---|"]
    for (method, variant), seeds in sorted(runs.items()):
        for seed, rows in sorted(seeds.items()):
            cells = ", ".join(f"{int(r['epoch'])}: {r['knn_top1']:.1f}" for r in rows)
            lines.append(f"| {label(method, variant)} seed {seed} | {cells} |")
    return lines


def report(args) -> None:
    """``report.md`` and ``study.png`` in ``--out`` from every run with results (and protocol
    02's ``equal_compute.md``, or protocol 05's report of all its regimes, where their arms
    are fixed)."""
    adopt_settings(args)
    if (args.out / ARMS_FILE).exists() and not getattr(args, "pool", None):
        protocol_report(args)  # protocol 02's or 05's own report, arms fixed (even before runs)
    runs = collect(args)
    if not runs:
        print("no results yet")
        return
    reference = untrained_reference(args)
    lines = intro_lines(args, reference) + summary_lines(args, runs)
    plot(args, runs, reference)
    lines += ["![kNN against epochs and wall-clock](study.png)", ""]
    lines += search_lines(args, runs)
    lines += parity_report_lines(args)
    lines += comparison_lines(runs, args.epochs)
    lines += evaluation_lines(runs)
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
