"""The study's runs as data: a *variant* is a named list of launcher overrides on top of a
method's recipe, a *plan* a list of (method, variant) arms that ``--plan`` runs for each of
``--seeds``. Variant names become run-folder names (:func:`.runs.run_name`), so a name, once
run, keeps its overrides."""

from __future__ import annotations

from .equal_compute import schedule_overrides
from .parity import pipeline_overrides
from .search import search_plans, search_variants

METHODS = ("effssl", "simclr", "byol", "mocov2plus", "official")
#: the study's EffSSL baseline (the "default" variant): the gradient bank rule, the package
#: default when the study began, pinned so the runs keep their meaning when a default changes
EFFSSL_BASE = ["method_kwargs.bank_update=grad"]
#: the official loop with this plugin's calibration (every row) and CutMix box (timm's): the
#: two differences from this plugin's ``ema`` runs outside the training step (BENCHMARKS 3c)
OFFICIAL_LIKE_PLUGIN = "calibration+box=plugin"

#: EffSSL's own choices, each against the baseline (issue 9's ablations, BENCHMARKS 3)
ABLATION_VARIANTS = {
    "bank_update=grad": ["method_kwargs.bank_update=grad"],
    "bank_update=ema": ["method_kwargs.bank_update=ema"],
    "kl_weight=0": ["method_kwargs.kl_weight=0"],
    "bank_init=random": ["method_kwargs.bank_init=random"],
    "proj=512": ["method_kwargs.proj_hidden_dim=512", "method_kwargs.proj_output_dim=512"],
    "proj=128": ["method_kwargs.proj_hidden_dim=2048", "method_kwargs.proj_output_dim=128"],
}
#: EffSSL's optimiser probes (BENCHMARKS 3b); ``lars`` is SimCLR's recipe (configs/simclr.yaml)
OPTIMIZER_VARIANTS = {
    "lr=0.1": ["optimizer.lr=0.1"],
    "lr=0.03": ["optimizer.lr=0.03"],
    "lars": [
        "optimizer.name=lars",
        "optimizer.lr=0.4",
        "optimizer.weight_decay=1e-5",
        "+optimizer.kwargs.eta=0.02",
        "+optimizer.kwargs.clip_lr=true",
        "+optimizer.kwargs.exclude_bias_n_norm=true",
    ],
    "lr=0.1,ema": ["optimizer.lr=0.1", "method_kwargs.bank_update=ema"],
}
#: the bank's precision (issue 13): bfloat16 products, and bfloat16 rows too
PRECISION_VARIANTS = {
    "bank_matmul=bfloat16": ["method_kwargs.bank_matmul=bfloat16"],
    "bank=bfloat16": ["method_kwargs.bank_matmul=bfloat16", "method_kwargs.bank_dtype=bfloat16"],
}
#: the baselines' recipes fitted to the 5,000-image share (BENCHMARKS 3):
#: ``queue=4096``: MoCo's CIFAR queue (32,768) would hold ~6 older keys of every image, 4,096
#: holds each at most once; ``lr=0.2``: the BYOL paper's learning rate instead of the recipe's
#: LARS 1.0; ``tau=0.96``: a target averaging over ~25 steps instead of base_tau 0.99's ~100
BASELINE_VARIANTS = {
    "queue=4096": ["method_kwargs.queue_size=4096"],
    "lr=0.2": ["optimizer.lr=0.2"],
    "tau=0.96": ["momentum.base_tau=0.96"],
    "queue=4096,tau=0.96": ["method_kwargs.queue_size=4096", "momentum.base_tau=0.96"],
}
VARIANTS: dict[str, list[str]] = {
    "default": [],
    **ABLATION_VARIANTS,
    **OPTIMIZER_VARIANTS,
    **PRECISION_VARIANTS,
    **BASELINE_VARIANTS,
}
#: protocol 01's search arms, e.g. ``lr=0.133,wu=0`` (:mod:`.search`)
VARIANTS |= search_variants(VARIANTS)

#: the comparisons, each with its arms
STUDY_PLANS = {
    "main": [("effssl", "default"), ("simclr", "default")],
    "official": [("official", "default"), ("effssl", "bank_update=ema")],
    "ablations": [  # each against ("effssl", "default"), which is bank_update=grad
        ("effssl", "bank_update=ema"),
        ("effssl", "kl_weight=0"),
        ("effssl", "bank_init=random"),
        ("effssl", "proj=512"),
    ],
    "baselines": [("byol", "default"), ("mocov2plus", "default")],
    "diagnose": [("official", "default"), ("effssl", "bank_update=ema"), ("effssl", "default")],
    "precision": [
        ("effssl", "default"),
        ("effssl", "bank_matmul=bfloat16"),
        ("effssl", "bank=bfloat16"),
    ],
    "probe": [
        ("effssl", "default"),
        ("effssl", "lr=0.1"),
        ("effssl", "lars"),
        ("effssl", "lr=0.03"),
        ("simclr", "default"),
    ],
}
#: parts of the comparisons, for a study run in pieces that must each finish in a session
#: (``study_chain.sh`` runs them in the budget's order)
PIECE_PLANS = {
    "byol": [("byol", "default")],
    "mocov2plus": [("mocov2plus", "default")],
    "mocov2plus_queue": [("mocov2plus", "queue=4096")],
    "byol_lr": [("byol", "lr=0.2")],
    "byol_tau": [("byol", "tau=0.96")],
    "mocov2plus_tau": [("mocov2plus", "queue=4096,tau=0.96")],
    "kl": [("effssl", "kl_weight=0")],
    "ema": [("effssl", "bank_update=ema")],
    "official_loop": [("official", "default")],
    "official_like_plugin": [("official", OFFICIAL_LIKE_PLUGIN)],
    "rest": [("effssl", "bank_init=random"), ("effssl", "proj=512")],
    "bank_init": [("effssl", "bank_init=random")],
    "proj": [("effssl", "proj=512")],
}
PLANS: dict[str, list[tuple[str, str]]] = {**STUDY_PLANS, **PIECE_PLANS}
#: protocol 01's search: ``lr_<method>`` (its grid) and ``lr_search`` (:mod:`.search`)
PLANS |= search_plans()


def variant_overrides(variant: str) -> list[str]:
    """A variant's launcher overrides: a named one of :data:`VARIANTS`, or one named by its
    settings with a schedule of its own (protocol 02's arms, ``lr=<lr>,wu=0,ep=<epochs>``:
    :func:`.equal_compute.schedule_overrides`), or with a pipeline (protocol 04's arms,
    ``lr=<lr>,wu=0,pipeline=<pil|tensor>``: :func:`.parity.pipeline_overrides`)."""
    if variant in VARIANTS:
        return VARIANTS[variant]
    overrides = schedule_overrides(variant, VARIANTS) or pipeline_overrides(variant, VARIANTS)
    if overrides is None:
        raise KeyError(f"unknown variant {variant!r}")
    return overrides
