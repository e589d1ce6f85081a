"""Protocol 02 (``benchmarks/protocols/02_equal_compute.md``): EffSSL against SimCLR at equal
compute and at equal epochs, each arm a complete schedule of its own. Its arms are built
from two measured inputs, fixed once in ``<out>/arms.json``: each method's learning rate by
protocol 01's rule (read from that search's results folder) and the epochs the step cost
buys (read from ``benchmarks/step_cost.py``'s CSV). An arm is a variant
``lr=<lr>,wu=0,ep=<epochs>``: its name carries its learning rate, warm-up and schedule."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

from .search import (
    SEARCH_FACTORS,
    SEARCH_FIXED,
    SEARCH_LR,
    SEARCH_WARMUP,
    search_choice,
    search_extension,
    search_lr,
    search_scores,
)

PROTOCOL = "benchmarks/protocols/02_equal_compute.md"
#: the compared methods; every difference is EffSSL - SimCLR
EFFSSL, SIMCLR = "effssl", "simclr"
#: each budget's EffSSL epochs: protocol 01's schedule (short) and the study's (long)
BUDGET_EPOCHS = {"long": 50, "short": 15}
#: training steps an epoch: 5,000 images, batch 256, ``drop_last``
STEPS_PER_EPOCH = 19
#: the arms fixed at the first planning (the inputs, the learning rates, the epochs)
ARMS_FILE = "arms.json"
#: a run's final measures (``.final_measures``), read by the report
FINAL_FILE = "final.json"
#: ``step_cost.py``'s CSV name for the study's configuration (written into the study folder)
STEP_COST_FILE = "step_cost_cpu_mobilenetv3_small_100_b256.csv"
#: the step-cost measurement the protocol names: ``step_cost.py``'s columns and their values
#: (6 rounds x 3 steps timed; 5,000 bank rows, every row a negative)
STEP_COST_SETUP = {
    "device": "cpu",
    "model": "mobilenetv3_small_100",
    "batch": "256",
    "size": "32",
    "precision": "32-true",
    "samples": "5000",
    "negatives": "-1",
    "steps_timed": "18",
}
STEP_COST_METHODS = ("effssl", "simclr", "backbone")
STEP_COST_COMMAND = (
    "python benchmarks/step_cost.py --device cpu --model mobilenetv3_small_100 --batch 256 "
    "--size 32 --samples 5000 --negatives -1 --methods effssl simclr backbone --rounds 6 "
    "--steps 3 --out <out>"
)
#: the plans (``--plan``): one budget each, its arms in the protocol's order
EQUAL_COMPUTE_PLANS = {"equal_compute_short": "short", "equal_compute_long": "long"}


class SearchUnfinished(RuntimeError):
    """Protocol 01's search has not (yet) chosen a method's learning rate."""


class StepCostProblem(RuntimeError):
    """The step-cost CSV is missing or is not the protocol's measurement."""


class LrChoice(NamedTuple):
    """A method's learning rate by protocol 01's rule: the value, the search's variant that
    ran it, the rule's reason and every finished score (``{lr: kNN or None}``)."""

    lr: float
    variant: str
    reason: str
    scores: dict[float, float | None]


def chosen_lr(search_out: Path, method: str) -> LrChoice:
    """``method``'s learning rate by protocol 01's rule on its search in ``search_out``: the
    grid finished (each run scored at the search's last epoch or diverged), the extension
    the rule asks for finished, then :func:`.search.search_choice` over every score. Raises
    :class:`SearchUnfinished` otherwise, saying what is missing."""
    settings_path = Path(search_out) / "settings.json"
    if not settings_path.exists():
        raise SearchUnfinished(f"no protocol 01 study in {search_out} (no settings.json)")
    settings = json.loads(settings_path.read_text())
    if settings.get("eval_set") != "val":
        raise SearchUnfinished(f"{search_out} did not score on the validation split")
    study = SimpleNamespace(out=Path(search_out), epochs=settings["epochs"])
    scores = search_scores(study, method)
    missing = [lr for lr in (search_lr(method, f) for f in SEARCH_FACTORS) if lr not in scores]
    where = f"{method}'s search in {search_out}"
    if missing:
        raise SearchUnfinished(
            f"{where} has not finished: no score at epoch {settings['epochs']} for lr "
            f"{', '.join(f'{lr:g}' for lr in missing)}"
        )
    if extension := search_extension(method, scores):
        raise SearchUnfinished(
            f"{where} has not finished: the extension its rule asks for, {extension}, has no "
            "score yet"
        )
    lr, reason = search_choice(scores, SEARCH_LR[method])
    if lr is None:
        raise SearchUnfinished(f"{where} chose no learning rate: {reason}")
    variant = ",".join([*SEARCH_FIXED.get(method, []), f"lr={lr:g}", f"wu={SEARCH_WARMUP:g}"])
    return LrChoice(lr, variant, reason, scores)


def read_step_costs(path: Path) -> dict[str, float]:
    """``{method: median seconds a step}`` from ``step_cost.py``'s CSV, after checking that it
    is the protocol's measurement (:data:`STEP_COST_SETUP`, the methods of
    :data:`STEP_COST_METHODS`); raises :class:`StepCostProblem`."""
    if not Path(path).is_file():
        raise StepCostProblem(
            f"no step-cost CSV at {path}: measure it first on an otherwise idle machine "
            f"({STEP_COST_COMMAND}; benchmarks/study_equal_compute.sh does, with IDLE=1)"
        )
    with open(path) as f:
        rows = list(csv.DictReader(f))
    problems = [
        f"{r['method']}: {key}={r.get(key)!r}, not {value!r}"
        for r in rows
        for key, value in STEP_COST_SETUP.items()
        if r.get(key) != value
    ]
    methods = {r["method"] for r in rows}
    if missing := [m for m in STEP_COST_METHODS if m not in methods]:
        problems.append(f"no row for {', '.join(missing)}")
    if problems:
        raise StepCostProblem(f"{path} is not protocol 02's measurement: {'; '.join(problems)}")
    return {r["method"]: float(r["median_s_per_step"]) for r in rows}


def arm_epochs(costs: dict[str, float]) -> dict[str, dict]:
    """Every arm's method and epochs from the step costs ``c_E`` and ``c_S``: E-<budget> the
    budget's epochs E, S-<budget> ``round(E x c_E / c_S)`` (half up, at least 1) with the
    rounding error (epochs - exact, at most half an epoch), E-<budget>-eq SimCLR's epochs."""
    c_e, c_s = costs[EFFSSL], costs[SIMCLR]
    arms = {}
    for budget, epochs in BUDGET_EPOCHS.items():
        exact = epochs * c_e / c_s
        simclr = max(1, math.floor(exact + 0.5))
        arms[f"E-{budget}"] = {"method": EFFSSL, "epochs": epochs, "exact_epochs": epochs}
        arms[f"S-{budget}"] = {"method": SIMCLR, "epochs": simclr, "exact_epochs": exact}
        arms[f"E-{budget}-eq"] = {"method": EFFSSL, "epochs": simclr, "exact_epochs": simclr}
    for arm in arms.values():
        arm["rounding_error"] = arm["epochs"] - arm["exact_epochs"]
    return arms


def step_cost_epochs(path: Path) -> dict[str, dict]:
    """Every arm's method, epochs and rounding error from the step-cost CSV at ``path``."""
    return arm_epochs(read_step_costs(path))


def arm_variant(method: str, lr: float, epochs: int) -> str:
    """An arm's variant name: protocol 01's fixed settings of the method, its learning rate,
    no warm-up, its own schedule, e.g. ``lr=0.1,wu=0,ep=15``."""
    name = ",".join([*SEARCH_FIXED.get(method, []), f"lr={lr:g}", f"wu={SEARCH_WARMUP:g}"])
    name += f",ep={epochs}"
    if "-" in name or "__" in name:
        raise ValueError(f"{name}: a variant name holds no '-' (run folder names)")
    return name


def schedule_overrides(variant: str, variants: dict[str, list[str]]) -> list[str] | None:
    """The launcher overrides of a variant named by its settings
    (``[<fixed variant>,...]lr=<lr>,wu=<warm-up fraction>,ep=<epochs>``, :func:`arm_variant`):
    the fixed variants' overrides (looked up in ``variants``), the learning rate, the warm-up
    and ``max_epochs`` (the cosine schedule ends at the run's own last epoch); None for a
    name of another form."""
    *fixed, lr, wu, ep = ["", "", "", *variant.split(",")]
    if not (lr.startswith("lr=") and wu.startswith("wu=") and ep.startswith("ep=")):
        return None
    fixed = [name for name in fixed if name]
    if unknown := [name for name in fixed if name not in variants]:
        raise KeyError(f"variant {variant!r}: unknown settings {unknown}")
    epochs = int(ep.removeprefix("ep="))
    return [
        *(o for name in fixed for o in variants[name]),
        f"optimizer.lr={lr.removeprefix('lr=')}",
        f"scheduler.warmup_epochs={float(wu.removeprefix('wu=')) * epochs:g}",
        f"max_epochs={epochs}",
    ]


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def design(args) -> dict:
    """The protocol's arms from its inputs: the learning rates (``--lr-search``), the step
    costs (``--step-cost``), each arm's epochs and variant; raises when an input is not ready."""
    costs = read_step_costs(args.step_cost)
    choices = {m: chosen_lr(args.lr_search, m) for m in (EFFSSL, SIMCLR)}
    arms = arm_epochs(costs)
    for arm in arms.values():
        arm["lr"] = choices[arm["method"]].lr
        arm["variant"] = arm_variant(arm["method"], arm["lr"], arm["epochs"])
    return {
        "protocol": PROTOCOL,
        "arms": arms,
        "step_cost": {"csv": str(args.step_cost), "sha256": file_digest(args.step_cost)}
        | {"median_s_per_step": costs},
        "learning_rates": {
            m: {"lr": c.lr, "search_variant": c.variant, "reason": c.reason}
            | {"scores": {f"{lr:g}": v for lr, v in sorted(c.scores.items())}}
            for m, c in choices.items()
        },
        "lr_search": str(args.lr_search),
    }


def fixed_arms(args) -> dict:
    """The protocol's arms (:func:`design`), written to ``<out>/arms.json`` the first time;
    every later call must compute the same arms (a changed step-cost CSV or search is
    refused). Exits with the reason while an input is not ready."""
    try:
        fresh = design(args)
    except (SearchUnfinished, StepCostProblem) as error:
        sys.exit(f"protocol 02 cannot fix its arms yet: {error}")
    path = args.out / ARMS_FILE
    if path.exists():
        fixed = json.loads(path.read_text())
        if fixed["arms"] != fresh["arms"]:
            sys.exit(f"{path} fixed other arms than its inputs give now: {fresh['arms']}")
        return fixed
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fresh, indent=1) + "\n")
    return fresh


def plan_arms(plan: str) -> list[str]:
    """A protocol-02 plan's arms in the protocol's order (E, S, E-eq of its budget)."""
    budget = EQUAL_COMPUTE_PLANS[plan]
    return [f"E-{budget}", f"S-{budget}", f"E-{budget}-eq"]


def equal_compute_plan(args, plan: str) -> list[tuple[str, str]]:
    """A protocol-02 plan's (method, variant) arms; two arms with the same method and epochs
    are the same runs."""
    arms = fixed_arms(args)["arms"]
    runs = [(arms[a]["method"], arms[a]["variant"]) for a in plan_arms(plan)]
    return list(dict.fromkeys(runs))


def arm_lines(fixed: dict) -> list[str]:
    """The arms in words (``study.py --arms``)."""
    costs = fixed["step_cost"]["median_s_per_step"]
    lines = [f"step costs (s a step): {costs}; c_E / c_S = {costs[EFFSSL] / costs[SIMCLR]:.4f}"]
    for method, choice in fixed["learning_rates"].items():
        lines.append(f"{method}: lr {choice['lr']:g} ({choice['reason']})")
    for name, arm in fixed["arms"].items():
        lines.append(
            f"{name}: {arm['method']} {arm['epochs']} epochs (exact {arm['exact_epochs']:.3f}, "
            f"rounding {arm['rounding_error']:+.3f}), variant {arm['variant']}"
        )
    return lines
