"""Protocol 01's symmetric learning-rate search (``benchmarks/protocols/01_lr_search.md``):
the grid of every method (its current learning rate x 1/3, x 1, x 3), the decision rule, and
the one extension past an edge of the grid that the rule may ask for."""

from __future__ import annotations

import math

from .runs import DIVERGED, EvalLog, run_name

#: each method's learning rate today (per 256 images): effssl the study's 0.1 (BENCHMARKS 3b),
#: the baselines their recipes in configs/ (simclr and byol LARS, mocov2plus SGD)
SEARCH_LR = {"effssl": 0.1, "simclr": 0.4, "byol": 1.0, "mocov2plus": 0.3}
#: the grid, the same shape for every method: the current value x 1/3, x 1, x 3
SEARCH_FACTORS = (1 / 3, 1.0, 3.0)
#: one more step past an edge of the grid, run only when the protocol's rule asks for it
SEARCH_EXTENSION = {"low": 1 / 9, "high": 9.0}
#: the warm-up, as a fraction of the schedule, for every arm of the search (protocol 01: none)
SEARCH_WARMUP = 0.0
#: a method's settings in the search other than the learning rate, as variant names of
#: :data:`.plans.VARIANTS`: MoCo v2+'s CIFAR queue (32,768 keys) is 6.5x the 5,000-image
#: share, so it runs with the study's 4,096-key queue
SEARCH_FIXED = {"mocov2plus": ["queue=4096"]}
#: scores within this many kNN points of the best count as tied (protocol 01)
SEARCH_TIE = 1.0
#: the order of the search's plans (the budget's)
SEARCH_ORDER = ("simclr", "effssl", "byol", "mocov2plus")


def search_lr(method: str, factor: float) -> float:
    """``method``'s current learning rate times ``factor``, to 3 significant digits."""
    return float(f"{SEARCH_LR[method] * factor:.3g}")


def search_variant(method: str, factor: float) -> str:
    """The variant name of one search arm, e.g. ``lr=0.133,wu=0``."""
    parts = [*SEARCH_FIXED.get(method, []), f"lr={search_lr(method, factor):g}"]
    return ",".join([*parts, f"wu={SEARCH_WARMUP:g}"])


def search_overrides(
    method: str, factor: float, variants: dict[str, list[str]], epochs: int | None = None
) -> list[str]:
    """The launcher overrides of one search arm: the fixed settings (looked up in
    ``variants``), its learning rate and the warm-up (a fraction of the schedule, 0 in
    protocol 01, so the same for every schedule length)."""
    fixed = [o for name in SEARCH_FIXED.get(method, []) for o in variants[name]]
    warmup = SEARCH_WARMUP * epochs if epochs else 0
    if SEARCH_WARMUP and not epochs:
        raise ValueError("a warm-up fraction needs the schedule's length")
    return [
        *fixed,
        f"optimizer.lr={search_lr(method, factor):g}",
        f"scheduler.warmup_epochs={warmup:g}",
    ]


def search_variants(variants: dict[str, list[str]]) -> dict[str, list[str]]:
    """Every search arm's variant (the grid and the extensions) with its overrides."""
    return {
        search_variant(method, factor): search_overrides(method, factor, variants)
        for method in SEARCH_LR
        for factor in (*SEARCH_FACTORS, *SEARCH_EXTENSION.values())
    }


def search_plans() -> dict[str, list[tuple[str, str]]]:
    """One plan a method (``lr_<method>``, its grid) and ``lr_search``, all of them in the
    budget's order."""
    plans = {f"lr_{m}": [(m, search_variant(m, f)) for f in SEARCH_FACTORS] for m in SEARCH_LR}
    plans["lr_search"] = [run for m in SEARCH_ORDER for run in plans[f"lr_{m}"]]
    return plans


def search_choice(scores: dict[float, float | None], recipe: float) -> tuple[float | None, str]:
    """Protocol 01's decision rule on one method's search: ``scores`` maps each learning rate
    run to its validation kNN top-1 at the last epoch (None: the run failed or diverged).
    The highest score wins; scores within :data:`SEARCH_TIE` points of it tie, and a tie goes
    to the learning rate closest to the current value ``recipe`` on a log scale, then to the
    lower one. Closeness is counted in grid steps (x3) to two decimals, so that x1/3 and x3
    tie even where :func:`search_lr`'s three digits make them unequal (byol: 0.333 and 3).
    Returns (the chosen learning rate, the reason); (None, reason) without scores."""
    valid = {lr: v for lr, v in scores.items() if v is not None and math.isfinite(v)}
    if not valid:
        return None, "no run finished with a finite score"
    best = max(valid.values())
    tied = sorted(lr for lr, v in valid.items() if v >= best - SEARCH_TIE)
    steps = {lr: round(abs(math.log(lr / recipe, 3)), 2) for lr in tied}
    chosen = min(tied, key=lambda lr: (steps[lr], lr))
    if len(tied) == 1:
        return chosen, f"highest ({best:.2f})"
    others = ", ".join(f"{lr:g}" for lr in tied if lr != chosen)
    level = [f"{lr:g}" for lr in tied if lr != chosen and steps[lr] == steps[chosen]]
    closest = f"closest to the current {recipe:g}"
    if level:
        closest = f"as close to the current {recipe:g} as {', '.join(level)}: the lower"
    return chosen, f"tied within {SEARCH_TIE:g} of the best ({best:.2f}) with {others}: {closest}"


def search_extension(method: str, scores: dict[float, float | None]) -> str | None:
    """The extension protocol 01 asks for, once per method: when the grid's chosen learning
    rate lies at its lowest or highest value, the next value past it (x 1/9 or x 9), as a
    variant name; None when the choice is inside the grid, or after an extension ran (or
    while a grid run is missing)."""
    grid = [search_lr(method, f) for f in SEARCH_FACTORS]
    extra = [search_lr(method, f) for f in SEARCH_EXTENSION.values()]
    if any(lr not in scores for lr in grid) or any(lr in scores for lr in extra):
        return None
    chosen, _ = search_choice({lr: scores[lr] for lr in grid}, SEARCH_LR[method])
    for side, edge in (("low", min(grid)), ("high", max(grid))):
        if chosen == edge:
            return search_variant(method, SEARCH_EXTENSION[side])
    return None


def search_scores(args, method: str) -> dict[float, float | None]:
    """``{learning rate: validation kNN top-1 at the last epoch}`` of ``method``'s finished
    search runs (seed 0, the protocol's); None for a run that diverged."""
    scores = {}
    for factor in (*SEARCH_FACTORS, *SEARCH_EXTENSION.values()):
        run_dir = args.out / "runs" / run_name(method, search_variant(method, factor), 0)
        rows = [r for r in EvalLog(run_dir).rows() if int(r["epoch"]) == args.epochs]
        if (run_dir / DIVERGED).exists():
            scores[search_lr(method, factor)] = None
        elif rows:
            scores[search_lr(method, factor)] = float(rows[-1]["knn_top1"])
    return scores
