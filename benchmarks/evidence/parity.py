"""Protocol 04 (``benchmarks/protocols/04_pipeline_parity.md``): EffSSL and SimCLR, each
trained through ``data.pipeline=pil`` and ``data.pipeline=tensor`` in protocol 01's regime
with protocol 01's learning rates; validation kNN and linear probe, Welch intervals of
tensor - pil, and the protocol's verdicts."""

from __future__ import annotations

import json
from pathlib import Path

from .equal_compute import chosen_lr
from .runs import EvalLog, run_name
from .stats import interval_cell, mean_sd_cell, paired_interval, seeds_cell, welch_interval

PROTOCOL = "benchmarks/protocols/04_pipeline_parity.md"
#: the plan (``--plan``) and its methods, in the protocol's order
PARITY_PLAN = "pipeline_parity"
PARITY_METHODS = ("effssl", "simclr")
PIPELINES = ("pil", "tensor")
#: "agree" needs the interval inside [-margin, +margin] (protocol 04)
PARITY_MARGIN = 1.5


def pipeline_variant(search_variant: str, pipeline: str) -> str:
    """A parity arm's variant: protocol 01's search variant plus the pipeline, e.g.
    ``lr=0.133,wu=0,pipeline=tensor``."""
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    return f"{search_variant},pipeline={pipeline}"


def pipeline_overrides(variant: str, variants: dict[str, list[str]]) -> list[str] | None:
    """The overrides of a :func:`pipeline_variant` name (the search variant's, looked up in
    ``variants``, then ``data.pipeline``); None for a name of another form."""
    base, _, pipeline = variant.rpartition(",pipeline=")
    if not base or pipeline not in PIPELINES or base not in variants:
        return None
    return [*variants[base], f"data.pipeline={pipeline}"]


def parity_plan(args) -> list[tuple[str, str]]:
    """The protocol's four arms with each method's learning rate by protocol 01's rule
    (``args.lr_search``: that search's results folder)."""
    arms = []
    for method in PARITY_METHODS:
        choice = chosen_lr(Path(args.lr_search), method)
        arms += [(method, pipeline_variant(choice.variant, p)) for p in PIPELINES]
    return arms


def arm_values(args, method: str, variant: str) -> dict[str, dict[int, float]]:
    """``{measure: {seed: value}}`` of an arm's finished runs: the validation kNN at the
    last epoch and the linear probe's top-1 (``linear.json``)."""
    values: dict[str, dict[int, float]] = {"kNN": {}, "linear": {}}
    for seed in args.seeds:
        run_dir = args.out / "runs" / run_name(method, variant, seed)
        rows = [r for r in EvalLog(run_dir).rows() if int(r["epoch"]) == args.epochs]
        if rows:
            values["kNN"][seed] = float(rows[-1]["knn_top1"])
        probe = run_dir / "linear.json"
        if probe.exists():
            top1 = json.loads(probe.read_text()).get("val_acc1")
            if top1 is not None:
                values["linear"][seed] = float(top1)
    return values


def parity_verdict(low: float, high: float) -> str:
    """Protocol 04's rule on the Welch interval of tensor - pil."""
    if low > 0 or high < 0:
        return "separated"
    if -PARITY_MARGIN <= low and high <= PARITY_MARGIN:
        return "agree (not separated)"
    return "not separated"


def parity_report_lines(args) -> list[str]:
    """The report's parity section when ``--out`` holds parity runs, else nothing."""
    if not getattr(args, "lr_search", None) or not any(
        ",pipeline" in p.name for p in (args.out / "runs").glob("*")
    ):
        return []
    return [*parity_lines(args, parity_plan(args)), ""]


def parity_lines(args, plan: list[tuple[str, str]]) -> list[str]:
    """The report's table: per method and measure, every seed, means, Welch and paired
    intervals of tensor - pil, and the verdict."""
    lines = [
        f"## Pipeline parity (protocol 04, `{PROTOCOL}`)",
        "",
        "| method | measure | pil (seeds) | tensor (seeds) | pil mean +- sd | tensor mean +- sd "
        "| tensor - pil [95% Welch] | paired | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_method = {m: [v for mm, v in plan if mm == m] for m in PARITY_METHODS}
    for method, (pil, tensor) in by_method.items():
        a, b = arm_values(args, method, tensor), arm_values(args, method, pil)
        for measure in ("kNN", "linear"):
            t, p = a[measure], b[measure]
            welch = welch_interval(list(t.values()), list(p.values()))
            paired = paired_interval(t, p)
            lines.append(
                f"| {method} | {measure} | {seeds_cell(p)} | {seeds_cell(t)} | {mean_sd_cell(p)} | "
                f"{mean_sd_cell(t)} | {interval_cell(welch)} | {interval_cell(paired)} | "
                f"{parity_verdict(welch.low, welch.high) if welch else 'no interval (n < 2)'} |"
            )
    return lines
