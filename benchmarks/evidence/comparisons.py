"""The report's pairwise comparisons: which arms are compared, by which measure, and the
Markdown table of their values, differences and verdicts (:func:`.stats.separated`)."""

from __future__ import annotations

import csv
import statistics

from .plans import OFFICIAL_LIKE_PLUGIN
from .runs import REPO
from .stats import MIN_SEEDS, first_reaching, interpolate, mean_std, separated

#: the study's EffSSL baseline, arm A of most comparisons
EFFSSL = ("effssl", "default")
#: the "cost" measure's step costs, measured alone on one machine (``step_cost.py``: median
#: seconds a step over interleaved rounds), so free of the machines' speeds across sessions;
#: each arm's method name in that CSV
STEP_COST_CSV = REPO / "benchmarks/results/step_cost_cpu_mobilenetv3_small_100_b256_proj.csv"
STEP_COST_METHOD = {EFFSSL: "effssl", ("effssl", "proj=512"): "effssl-proj512"}

#: (arm A, arm B, what is compared) of the report's comparisons section
COMPARISONS = [
    *(
        (EFFSSL, (baseline, "default"), measure)
        for baseline in ("simclr", "byol", "mocov2plus")
        for measure in ("end", "minutes")
    ),
    (EFFSSL, ("mocov2plus", "queue=4096"), "end"),
    (EFFSSL, ("mocov2plus", "queue=4096"), "minutes"),
    *(
        (EFFSSL, baseline, measure)
        for baseline in (("byol", "tau=0.96"), ("mocov2plus", "queue=4096,tau=0.96"))
        for measure in ("end", "minutes")
    ),
    # the short-schedule probes against their recipes, epoch by epoch
    (("byol", "tau=0.96"), ("byol", "default"), "curve"),
    (("mocov2plus", "queue=4096,tau=0.96"), ("mocov2plus", "queue=4096"), "curve"),
    (EFFSSL, ("effssl", "bank_update=ema"), "end"),
    (EFFSSL, ("effssl", "bank_update=ema"), "reach"),
    # epochs only: the ema runs ran in a faster session than simclr's (BENCHMARKS 3c)
    (("effssl", "bank_update=ema"), ("simclr", "default"), "end"),
    (("official", "default"), ("effssl", "bank_update=ema"), "curve"),
    (("official", OFFICIAL_LIKE_PLUGIN), ("effssl", "bank_update=ema"), "curve"),
    (("official", OFFICIAL_LIKE_PLUGIN), ("official", "default"), "curve"),
    (EFFSSL, ("effssl", "kl_weight=0"), "end"),
    (EFFSSL, ("effssl", "kl_weight=0"), "reach"),
    # "greatly accelerates convergence" (the paper): the two curves epoch by epoch
    (EFFSSL, ("effssl", "kl_weight=0"), "curve"),
    (EFFSSL, ("effssl", "bank_init=random"), "end"),
    (EFFSSL, ("effssl", "proj=512"), "end"),
    (EFFSSL, ("effssl", "proj=512"), "minutes"),
    (EFFSSL, ("effssl", "proj=512"), "cost"),
]
INTRO = [
    "## Comparisons",
    "",
    "Finished runs only, except the curves ('all runs there'). A difference is called "
    f"only with >= {MIN_SEEDS} seeds per arm, "
    "when the means differ by more than the larger of the two standard deviations *and* "
    "every seed of one arm is above every seed of the other; otherwise it is reported as "
    "not separated. 'kNN at N min' reads every run's curve at the shorter arm's mean "
    "clipped training time (a run that finished earlier keeps its final value), and 'at "
    "equal step cost' reads A where its steps cost what B's whole run does: both read the "
    "longer arm in the middle of its cosine schedule, with its learning rate still high, so "
    "they get no verdict; equal compute with a full schedule for every arm is protocol 02 "
    "(`benchmarks/results/equal_compute`).",
    "",
    "| A | B | measure | A | B | A - B | verdict |",
    "|---|---|---|---|---|---|---|",
]


def label(method: str, variant: str) -> str:
    if method == "effssl" and variant == "default":
        return "effssl (grad)"  # EFFSSL_BASE
    return method if variant == "default" else f"{method} ({variant})"


def step_seconds(arm: tuple[str, str]) -> float:
    """An arm's measured seconds a training step, from :data:`STEP_COST_CSV`."""
    with open(STEP_COST_CSV) as f:
        by_method = {r["method"]: float(r["median_s_per_step"]) for r in csv.DictReader(f)}
    return by_method[STEP_COST_METHOD[arm]]


#: measures that read the costlier arm's curve before the end of its cosine schedule: shown,
#: labelled, never given a verdict (issue 27: equal compute is protocol 02's full schedules)
MID_SCHEDULE = ("minutes", "cost")
MID_SCHEDULE_VERDICT = "no verdict: mid-schedule reading"


def row(a, b, what: str, va: list[float], vb: list[float], verdict: str | None = None) -> str:
    """One comparison's table row; its verdict by :func:`separated` unless ``verdict``."""
    (ma, sa), (mb, sb) = mean_std(va), mean_std(vb)
    return (
        f"| {label(*a)} | {label(*b)} | {what} | {ma:.2f} +- {sa:.2f} (n={len(va)}) | "
        f"{mb:.2f} +- {sb:.2f} (n={len(vb)}) | {ma - mb:+.2f} | "
        f"{verdict or separated(va, vb)} |"
    )


def curve_rows(a, b, runs: dict) -> list[str]:
    """``curve``: kNN at every evaluated epoch, over the seeds that reached it."""
    ra, rb = runs.get(a, {}), runs.get(b, {})
    at = {  # {epoch: ([A's values], [B's values])}
        int(r["epoch"]): ([], []) for arm in (ra, rb) for rows in arm.values() for r in rows
    }
    for side, arm in enumerate((ra, rb)):
        for rows in arm.values():
            for r in rows:
                at[int(r["epoch"])][side].append(r["knn_top1"])
    return [
        row(a, b, f"kNN at epoch {epoch} (all runs there)", va, vb)
        for epoch, (va, vb) in sorted(at.items())
        if va and vb
    ]


def measured(a, b, measure: str, ra: dict, rb: dict, epochs: int):
    """(what, A's values, B's values) of a measure on finished runs (see
    :func:`comparison_lines`)."""
    if measure == "end":
        va = [rows[-1]["knn_top1"] for rows in ra.values()]
        vb = [rows[-1]["knn_top1"] for rows in rb.values()]
        return f"kNN at epoch {epochs}", va, vb
    if measure == "minutes":
        budget = min(
            statistics.fmean(rows[-1]["clipped_s"] for rows in arm.values()) for arm in (ra, rb)
        )
        va = [interpolate(rows, "clipped_s", budget) for rows in ra.values()]
        vb = [interpolate(rows, "clipped_s", budget) for rows in rb.values()]
        return f"kNN at {budget / 60:.1f} min (the longer arm mid-schedule)", va, vb
    if measure == "cost":
        at = epochs * step_seconds(b) / step_seconds(a)
        va = [interpolate(rows, "epoch", at) for rows in ra.values()]
        vb = [rows[-1]["knn_top1"] for rows in rb.values()]
        return f"kNN at equal step cost (A at epoch {at:.1f}, B at {epochs})", va, vb
    level = min(rows[-1]["knn_top1"] for arm in (ra, rb) for rows in arm.values())
    va = [v for rows in ra.values() if (v := first_reaching(rows, level)) is not None]
    vb = [v for rows in rb.values() if (v := first_reaching(rows, level)) is not None]
    return f"epochs to kNN {level:.1f} (lower is better)", va, vb


def comparison_lines(runs: dict, epochs: int) -> list[str]:
    """The comparisons section: each pair's values, difference and verdict, finished runs
    only. ``end``: kNN after the last epoch; ``minutes``: kNN at the shorter arm's mean
    (clipped) training time, interpolated along each run's curve (equal compute);
    ``cost``: A at the epoch where its training steps cost what B's whole run does, by
    :func:`step_seconds`, against B at the end;
    ``reach``: the epoch at which each seed first reaches the lowest final kNN of any
    seed of either arm (so that every seed reaches it); ``curve``: kNN at every evaluated
    epoch, over the seeds that reached it (unfinished runs included)."""
    lines = list(INTRO)
    done = {
        key: {s: rows for s, rows in seeds.items() if int(rows[-1]["epoch"]) == epochs}
        for key, seeds in runs.items()
    }
    for a, b, measure in COMPARISONS:
        if measure == "curve":
            lines += curve_rows(a, b, runs)
            continue
        ra, rb = done.get(a, {}), done.get(b, {})
        if not ra or not rb:
            continue
        what, va, vb = measured(a, b, measure, ra, rb, epochs)
        va, vb = [v for v in va if v is not None], [v for v in vb if v is not None]
        if va and vb:
            verdict = MID_SCHEDULE_VERDICT if measure in MID_SCHEDULE else None
            lines.append(row(a, b, what, va, vb, verdict))
    return lines + [""]
