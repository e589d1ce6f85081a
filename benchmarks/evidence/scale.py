"""Protocol 05 (``benchmarks/protocols/05_scale_and_backbone.md``): EffSSL against SimCLR at
equal compute in two more regimes than protocol 02's (R1, its short budget): the 40% share
with mobilenetv3_small_100 (R2) and resnet18 on the 10% share (R3). Each new regime is a
study of its own in ``<root>/<regime>/`` (``benchmarks/study_scale.sh``), whose two arms, E
(EffSSL, 15 epochs) and S (SimCLR, the epochs the regime's own step cost buys), are fixed
once in its ``arms.json`` by protocol 02's rule (:class:`.equal_compute.ArmRule`) with
protocol 01's learning rates; its plan is ``scale_r2`` or ``scale_r3``."""

from __future__ import annotations

import sys
from typing import NamedTuple

from . import equal_compute
from .data import share_per_class
from .equal_compute import (
    BATCH,
    STEP_COST_SETUP,
    ArmRule,
    equal_compute_pair,
    fixed_arms,
    step_cost_file,
    steps_per_epoch,
)

PROTOCOL = "benchmarks/protocols/05_scale_and_backbone.md"
#: EffSSL's epochs in every regime (protocol 02's short budget)
BUDGET = 15
#: the arms, in the protocol's order (seed by seed: E, then S)
ARMS = ("E", "S")
#: the protocol's seeds, all planned
SEEDS = (0, 1, 2)
#: CIFAR-10's training images a class, and its classes (a share's size)
CLASS_IMAGES, CLASSES = 5000, 10


def share_images(fraction: float) -> int:
    """The images of a training share: 5,000 at 10%, 20,000 at 40%."""
    return share_per_class(fraction, CLASS_IMAGES) * CLASSES


class Regime(NamedTuple):
    """A regime: its name (its folder under the protocol's root), its training share, model and
    EffSSL's ``num_negatives`` (``--negatives``, also the step cost's), and where its final
    measures take their other images, as training shares of protocol 01's split: the unseen
    reference is the pool's images right after the share ``unseen_after``, as many a class as
    the share ``unseen_size`` holds; the linear probe trains on the share ``probe``."""

    name: str
    fraction: float
    model: str
    negatives: int
    unseen_after: float
    unseen_size: float
    probe: float

    @property
    def images(self) -> int:
        """Training images (also the EffSSL bank's rows): 5,000 at 10%, 20,000 at 40%."""
        return share_images(self.fraction)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.images)

    def unseen_words(self) -> str:
        """The unseen reference in words, e.g. ``pool images 2,001-2,500 of each class``."""
        start = share_per_class(self.unseen_after, CLASS_IMAGES)
        end = start + share_per_class(self.unseen_size, CLASS_IMAGES)
        return f"pool images {start + 1:,}-{end:,} of each class"


MOBILENET = "mobilenetv3_small_100"
REGIMES = {
    "R1": Regime("R1", 0.1, MOBILENET, -1, 0.1, 0.1, 0.1),  # protocol 02's short budget
    "R2": Regime("R2", 0.4, MOBILENET, 10000, 0.4, 0.1, 0.1),
    "R3": Regime("R3", 0.1, "resnet18", -1, 0.1, 0.1, 0.1),
}
#: the new regimes' plans (``--plan``), in the protocol's order (R2 before R3)
SCALE_PLANS = {"scale_r2": "R2", "scale_r3": "R3"}
#: R1's arms among protocol 02's (``{protocol 05's arm: protocol 02's arm}``)
R1_ARMS = {"E": "E-short", "S": "S-short"}


def scale_arm_epochs(costs: dict[str, float]) -> dict[str, dict]:
    """The arms' methods and epochs from a regime's step costs: E 15 epochs of EffSSL, S
    ``round(15 x c_E / c_S)`` of SimCLR (:func:`.equal_compute.equal_compute_pair`)."""
    return dict(zip(ARMS, equal_compute_pair(BUDGET, costs), strict=True))


def step_cost_command(regime: Regime) -> str:
    """The step-cost measurement the protocol names for ``regime``."""
    return equal_compute.step_cost_command(regime.model, regime.images, regime.negatives)


def shell_settings(name: str) -> str:
    """A new regime's settings for ``benchmarks/study_scale.sh``, so that they are defined
    here only: its plan, share, model and EffSSL's negatives on line 1, its step-cost options
    (:func:`.equal_compute.step_cost_options`) on line 2."""
    regime = REGIMES[name]
    (plan,) = [p for p, r in SCALE_PLANS.items() if r == name]
    cost = equal_compute.step_cost_options(regime.model, regime.images, regime.negatives)
    return f"{plan} {regime.fraction} {regime.model} {regime.negatives}\n{' '.join(cost)}"


def regime_rule(regime: Regime) -> ArmRule:
    """How ``regime`` fixes its arms: its own step-cost measurement (protocol 02's with its
    model, bank rows and negatives, one torch thread), E and S, its steps an epoch."""
    setup = STEP_COST_SETUP | {
        "model": regime.model,
        "samples": str(regime.images),
        "negatives": str(regime.negatives),
        "threads": "1",
    }
    return ArmRule(
        PROTOCOL,
        setup,
        step_cost_command(regime),
        "benchmarks/study_scale.sh",
        scale_arm_epochs,
        regime.steps_per_epoch,
    )


def plan_regime(args, plan: str) -> Regime:
    """The regime of a protocol-05 plan, after checking that the study's options are its
    own (``--out`` its folder, named as the regime; its share, model, EffSSL's negatives and
    the batch); exits otherwise."""
    regime = REGIMES[SCALE_PLANS[plan]]
    wanted = {
        "--out": (args.out.name, regime.name),
        "--fraction": (args.fraction, regime.fraction),
        "--model": (args.model, regime.model),
        "--negatives": (args.negatives, regime.negatives),
        "--batch": (args.batch, BATCH),
    }
    if wrong := [f"{k} {got} (not {want})" for k, (got, want) in wanted.items() if got != want]:
        sys.exit(f"--plan {plan} is regime {regime.name}: {', '.join(wrong)}")
    if args.step_cost.name != step_cost_file(regime.model):
        sys.exit(f"--plan {plan}: --step-cost is not a {step_cost_file(regime.model)}")
    return regime


def scale_plan(args, plan: str) -> list[tuple[str, str]]:
    """A protocol-05 plan's (method, variant) arms, E then S, fixed in ``<out>/arms.json``."""
    arms = fixed_arms(args, regime_rule(plan_regime(args, plan)))["arms"]
    return [(arms[a]["method"], arms[a]["variant"]) for a in ARMS]


def study_arms(args) -> dict:
    """The arms ``study.py --arms`` fixes and shows: the regime's of a protocol-05 plan in
    ``--plan``, else protocol 02's."""
    scale = [p for p in args.plan if p in SCALE_PLANS]
    return fixed_arms(args, regime_rule(plan_regime(args, scale[0]))) if scale else fixed_arms(args)


if __name__ == "__main__":  # python -m evidence.scale R2 (from benchmarks/): study_scale.sh
    if len(sys.argv) != 2 or sys.argv[1] not in SCALE_PLANS.values():
        sys.exit(f"usage: python -m evidence.scale {{{','.join(SCALE_PLANS.values())}}}")
    print(shell_settings(sys.argv[1]))
