"""Protocol 02 (``benchmarks/protocols/02_equal_compute.md``): EffSSL against SimCLR at equal
compute and at equal epochs, each arm a complete schedule of its own. Its arms are built
from two measured inputs, fixed once in ``<out>/arms.json``: each method's learning rate by
protocol 01's rule (read from that search's results folder) and the epochs the step cost
buys (read from ``benchmarks/step_cost.py``'s CSV). An arm is a variant
``lr=<lr>,wu=0,ep=<epochs>``: its name carries its learning rate, warm-up and schedule.
How a protocol fixes its arms is an :class:`ArmRule`; protocol 05 (:mod:`.scale`) fixes each
of its regimes' arms by a rule of its own."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
from collections.abc import Callable
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
#: the study's batch (``drop_last``: an epoch is whole batches)
BATCH = 256


def steps_per_epoch(images: int, batch: int = BATCH) -> int:
    """Training steps an epoch of ``images`` training images: whole batches (``drop_last``),
    19 for 5,000 images, 78 for 20,000."""
    return images // batch


#: training steps an epoch of protocol 02: 5,000 images, batch 256, ``drop_last``
STEPS_PER_EPOCH = steps_per_epoch(5000)
#: the arms fixed at the first planning (the inputs, the learning rates, the epochs)
ARMS_FILE = "arms.json"
#: a run's final measures (``.final_measures``), read by the report
FINAL_FILE = "final.json"


def step_cost_file(model: str, batch: int = BATCH) -> str:
    """``step_cost.py``'s CSV name for a CPU measurement of ``model`` at ``batch``."""
    return f"step_cost_cpu_{model}_b{batch}.csv"


#: ``step_cost.py``'s CSV name for the study's configuration (written into the study folder)
STEP_COST_FILE = step_cost_file("mobilenetv3_small_100")
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


def step_cost_options(
    model: str = STEP_COST_SETUP["model"], samples: int = 5000, negatives: int = -1
) -> list[str]:
    """``step_cost.py``'s options for a protocol's measurement of ``model`` with ``samples``
    bank rows and EffSSL's ``negatives`` (CPU, batch 256, 32 px, 6 rounds x 3 steps timed);
    the thread count comes from ``OMP_NUM_THREADS``, ``--out`` from the runner."""
    return [
        *("--device", "cpu", "--model", model, "--batch", str(BATCH), "--size", "32"),
        *("--samples", str(samples), "--negatives", str(negatives)),
        *("--methods", *STEP_COST_METHODS, "--rounds", "6", "--steps", "3"),
    ]


def step_cost_command(
    model: str = STEP_COST_SETUP["model"], samples: int = 5000, negatives: int = -1
) -> str:
    """The step-cost measurement a protocol names, as a command line."""
    options = " ".join(step_cost_options(model, samples, negatives))
    return f"python benchmarks/step_cost.py {options} --out <out>"


STEP_COST_COMMAND = step_cost_command()
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


def arm_spec(method: str, epochs: int, exact: float) -> dict:
    """An arm's method, epochs, exact epochs and rounding error (epochs - exact)."""
    return {
        "method": method,
        "epochs": epochs,
        "exact_epochs": exact,
        "rounding_error": epochs - exact,
    }


def equal_compute_pair(epochs: int, costs: dict[str, float]) -> tuple[dict, dict]:
    """The EffSSL arm of ``epochs`` and the SimCLR arm of the same compute from the step
    costs ``c_E`` and ``c_S``: ``round(epochs x c_E / c_S)`` epochs (half up, at least 1),
    with the rounding error (at most half an epoch)."""
    exact = epochs * costs[EFFSSL] / costs[SIMCLR]
    simclr = max(1, math.floor(exact + 0.5))
    return arm_spec(EFFSSL, epochs, epochs), arm_spec(SIMCLR, simclr, exact)


def arm_epochs(costs: dict[str, float]) -> dict[str, dict]:
    """Every arm's method and epochs from the step costs ``c_E`` and ``c_S``: E-<budget> the
    budget's epochs E, S-<budget> ``round(E x c_E / c_S)`` (:func:`equal_compute_pair`),
    E-<budget>-eq SimCLR's epochs."""
    arms = {}
    for budget, epochs in BUDGET_EPOCHS.items():
        effssl, simclr = equal_compute_pair(epochs, costs)
        equal = arm_spec(EFFSSL, simclr["epochs"], simclr["epochs"])
        arms |= {f"E-{budget}": effssl, f"S-{budget}": simclr, f"E-{budget}-eq": equal}
    return arms


class ArmRule(NamedTuple):
    """How a protocol fixes its arms: its file, the step-cost measurement it names
    (``step_cost.py``'s columns and their values, the command that makes it, the runner
    that runs it), the arms' methods and epochs from the step costs, and the training steps
    of an epoch (the budget's unit)."""

    protocol: str
    setup: dict[str, str]
    command: str
    runner: str
    arms: Callable[[dict[str, float]], dict[str, dict]]
    steps_per_epoch: int

    @property
    def name(self) -> str:
        """``protocol 02`` from ``benchmarks/protocols/02_equal_compute.md``."""
        return f"protocol {Path(self.protocol).name.split('_')[0]}"


#: protocol 02's arms: its step-cost measurement, both budgets' three arms, 19 steps an epoch
EQUAL_COMPUTE_RULE = ArmRule(
    PROTOCOL,
    STEP_COST_SETUP,
    STEP_COST_COMMAND,
    "benchmarks/study_equal_compute.sh",
    arm_epochs,
    STEPS_PER_EPOCH,
)


def read_step_costs(path: Path, rule: ArmRule = EQUAL_COMPUTE_RULE) -> dict[str, float]:
    """``{method: median seconds a step}`` from ``step_cost.py``'s CSV, after checking that it
    is ``rule``'s measurement (its setup's columns, the methods of
    :data:`STEP_COST_METHODS`); raises :class:`StepCostProblem`."""
    if not Path(path).is_file():
        raise StepCostProblem(
            f"no step-cost CSV at {path}: measure it first on an otherwise idle machine "
            f"({rule.command}; {rule.runner} does, with IDLE=1)"
        )
    with open(path) as f:
        rows = list(csv.DictReader(f))
    problems = [
        f"{r['method']}: {key}={r.get(key)!r}, not {value!r}"
        for r in rows
        for key, value in rule.setup.items()
        if r.get(key) != value
    ]
    methods = {r["method"] for r in rows}
    if missing := [m for m in STEP_COST_METHODS if m not in methods]:
        problems.append(f"no row for {', '.join(missing)}")
    if problems:
        raise StepCostProblem(f"{path} is not {rule.name}'s measurement: {'; '.join(problems)}")
    return {r["method"]: float(r["median_s_per_step"]) for r in rows}


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


def design(args, rule: ArmRule = EQUAL_COMPUTE_RULE) -> dict:
    """``rule``'s arms from its inputs: the learning rates (``--lr-search``), the step costs
    (``--step-cost``), each arm's epochs and variant, the steps of an epoch; raises when an
    input is not ready."""
    costs = read_step_costs(args.step_cost, rule)
    choices = {m: chosen_lr(args.lr_search, m) for m in (EFFSSL, SIMCLR)}
    arms = rule.arms(costs)
    for arm in arms.values():
        arm["lr"] = choices[arm["method"]].lr
        arm["variant"] = arm_variant(arm["method"], arm["lr"], arm["epochs"])
    return {
        "protocol": rule.protocol,
        "arms": arms,
        "step_cost": {"csv": relative_to(args.step_cost, args.out)}
        | {"sha256": file_digest(args.step_cost)}
        | {"median_s_per_step": costs},
        "steps_per_epoch": rule.steps_per_epoch,
        "learning_rates": {
            m: {"lr": c.lr, "search_variant": c.variant, "reason": c.reason}
            | {"scores": {f"{lr:g}": v for lr, v in sorted(c.scores.items())}}
            for m, c in choices.items()
        },
        "lr_search": relative_to(args.lr_search, args.out),
    }


def relative_to(path: Path, folder: Path) -> str:
    """``path`` as the arms file records it: relative to the study folder ``folder`` (no
    machine's folders in records; :func:`read_arms` resolves it again)."""
    return os.path.relpath(Path(path).resolve(), Path(folder).resolve())


def read_arms(out: Path) -> dict:
    """``<out>/arms.json`` with its input paths resolved against ``out`` (an absolute path,
    as the first arms files recorded, stays as it is)."""
    fixed = json.loads((Path(out) / ARMS_FILE).read_text())
    if "csv" in fixed.get("step_cost", {}):
        fixed["step_cost"]["csv"] = str(Path(out) / fixed["step_cost"]["csv"])
    if "lr_search" in fixed:
        fixed["lr_search"] = str(Path(out) / fixed["lr_search"])
    return fixed


def fixed_arms(args, rule: ArmRule = EQUAL_COMPUTE_RULE) -> dict:
    """``rule``'s arms (:func:`design`), written to ``<out>/arms.json`` the first time; every
    later call must compute the same arms (a changed step-cost CSV or search is refused).
    Exits with the reason while an input is not ready."""
    try:
        fresh = design(args, rule)
    except (SearchUnfinished, StepCostProblem) as error:
        sys.exit(f"{rule.name} cannot fix its arms yet: {error}")
    path = args.out / ARMS_FILE
    if path.exists():
        fixed = read_arms(args.out)
        if fixed.get("protocol") != rule.protocol or fixed["arms"] != fresh["arms"]:
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
