"""Protocol 05's report, ``<root>/report.md`` and ``<root>/scale.png``, rebuilt from whatever
has finished (any subset of runs): per regime and final measure the advantage EffSSL -
SimCLR at equal compute with its Welch interval and protocol 02's verdict; the change of the
advantage from R1 (protocol 02's short budget, read only from its study folder) to R2 and R3
with its interval from four independent means; a plot of the advantages; every run; each
regime's step cost and the epochs it gave; the compute spent; the commits; the deviations."""

from __future__ import annotations

import statistics
from pathlib import Path
from types import SimpleNamespace

from .equal_compute import ARMS_FILE, read_arms
from .equal_compute_report import (
    MEASURES,
    arm_records,
    comparison_row,
    compute_lines,
    deviation_lines,
    equal_compute_report,
    finite,
    in_repo,
    lr_lines,
    run_code_lines,
    run_lines,
    step_cost_lines,
)
from .equal_compute_report import added_commit as committed_in
from .runs import REPO
from .scale import ARMS, PROTOCOL, R1_ARMS, REGIMES, SCALE_PLANS, SEEDS, share_images
from .stats import AGREE_MARGIN, LEVEL, Interval, change_interval, welch_interval

REPORT_FILE = "report.md"
PLOT_FILE = "scale.png"
#: R1's folder by default: protocol 02's study (read, never written)
EQUAL_COMPUTE_OUT = REPO / "benchmarks" / "results" / "equal_compute"
#: the between-regime changes the protocol reads, each against R1
CHANGES = ("R2", "R3")
#: changes reported without a verdict: (regime, measure) -> why
NO_VERDICT = {
    ("R2", "knn_own"): "no verdict: R2's own reference is 20,000 images, R1's 5,000",
}


def r1_state(r1_out: Path) -> tuple[dict | None, dict]:
    """R1 as a regime: protocol 02's arms file with E-short and S-short as E and S (None
    before protocol 02 fixed its arms), and their runs of seeds 0-2 (read only)."""
    path = Path(r1_out) / ARMS_FILE
    if not path.exists():
        return None, {arm: {} for arm in ARMS}
    fixed = read_arms(path.parent)
    arms = {arm: fixed["arms"][name] for arm, name in R1_ARMS.items()}
    records = arm_records(SimpleNamespace(out=Path(r1_out)), arms)
    records = {arm: {s: r for s, r in runs.items() if s in SEEDS} for arm, runs in records.items()}
    return fixed | {"arms": arms}, records


def regime_states(root: Path, r1_out: Path) -> dict[str, tuple[dict | None, dict]]:
    """``{regime: (its arms file or None, {arm: {seed: run record}})}``: R1 from protocol 02's
    folder, R2 and R3 from ``<root>/<regime>/`` (None and no runs before its arms are fixed)."""
    states = {"R1": r1_state(r1_out)}
    for name in SCALE_PLANS.values():
        path = Path(root) / name / ARMS_FILE
        if not path.exists():
            states[name] = (None, {arm: {} for arm in ARMS})
            continue
        fixed = read_arms(path.parent)
        states[name] = (fixed, arm_records(SimpleNamespace(out=path.parent), fixed["arms"]))
    return states


def arm_values(records: dict, measure: str) -> tuple[list[float], list[float]]:
    """E's and S's values of a measure, in seed order, over the seeds that have it."""
    e, s = (
        [r[measure] for _, r in sorted(records[arm].items()) if finite(r[measure])] for arm in ARMS
    )
    return e, s


def advantage_interval(records: dict, measure: str) -> Interval | None:
    """A regime's advantage E - S by a measure with its Welch interval (None: n < 2 or no
    spread), as the table's rows compute it (:func:`.equal_compute_report.comparison_row`)."""
    return welch_interval(*arm_values(records, measure))


def advantage(records: dict, measure: str) -> float | None:
    """mean(E) - mean(S) by a measure, or None while an arm has no value."""
    e, s = arm_values(records, measure)
    return statistics.fmean(e) - statistics.fmean(s) if e and s else None


def regime_words(name: str) -> str:
    regime = REGIMES[name]
    return f"{regime.model}, {regime.fraction:.0%} share"


def advantage_lines(states: dict) -> list[str]:
    """Per regime and measure: every seed, n, means and spreads, the advantage E - S with its
    Welch (and, secondary, paired) interval and protocol 02's verdict."""
    lines = [
        "## The advantage in each regime (test set, equal compute)",
        "",
        f"A = mean(E) - mean(S) in points; {LEVEL:.0%} Welch interval (Welch-Satterthwaite "
        "df), the paired-by-seed interval beside it (secondary). Verdicts as protocol 02: "
        "**EffSSL better** / **SimCLR better** when the Welch interval excludes 0; **agree** "
        f"when it lies inside [-{AGREE_MARGIN:g}, +{AGREE_MARGIN:g}]; otherwise **not shown "
        f"either way**; interim while an arm has fewer than {len(SEEDS)} seeds.",
        "",
        "| regime | measure | EffSSL arm | SimCLR arm | EffSSL by seed | SimCLR by seed "
        "| n | EffSSL mean +- sd | SimCLR mean +- sd | A | Welch 95% CI "
        "| paired 95% CI | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (fixed, records) in states.items():
        if fixed is None:
            lines.append(f"| {name} | (arms not fixed yet: no step cost or no learning rates) |")
            continue
        row = (name, regime_words(name), *ARMS)
        lines += [comparison_row(row, m, records, fixed["arms"], len(SEEDS)) for m in MEASURES]
    return lines + [""]


def change_verdict(regime: str, measure: str, interval: Interval | None) -> str:
    """Protocol 05's rule on the interval of A_R - A_R1."""
    if (regime, measure) in NO_VERDICT:
        return NO_VERDICT[regime, measure]
    if interval is None:
        return "no interval yet (an arm with n < 2 or no spread)"
    if interval.low > 0:
        return "the advantage grows"
    if interval.high < 0:
        return "the advantage shrinks"
    return "no change shown"


def change_row(name: str, measure: str, states: dict) -> str:
    """One change of the advantage, A_R - A_R1, by one measure: both advantages with their
    n, the change, its interval from the four arms (Welch-Satterthwaite df) and the verdict."""
    records, r1 = states[name][1], states["R1"][1]
    interval = change_interval(*arm_values(records, measure), *arm_values(r1, measure))
    a_r, a_1 = advantage(records, measure), advantage(r1, measure)
    n = "/".join(str(len(v)) for v in (*arm_values(records, measure), *arm_values(r1, measure)))
    change = f"{a_r - a_1:+.2f}" if a_r is not None and a_1 is not None else "-"
    ci = "-" if interval is None else f"[{interval.low:+.2f}, {interval.high:+.2f}]"
    df = "-" if interval is None else f"{interval.df:.1f}"
    return (
        f"| {name} - R1 | {MEASURES[measure]} | "
        f"{'-' if a_r is None else f'{a_r:+.2f}'} | {'-' if a_1 is None else f'{a_1:+.2f}'} | "
        f"{n} | {change} | {ci} | {df} | {change_verdict(name, measure, interval)} |"
    )


def change_lines(states: dict) -> list[str]:
    """The change of the advantage between regimes (R2 - R1, R3 - R1) by every measure."""
    lines = [
        "## The change of the advantage between regimes",
        "",
        f"A_R - A_R1 with a {LEVEL:.0%} interval from the four arms' variances (the four "
        "means independent; Welch-Satterthwaite df for a sum of four terms). **The advantage "
        "grows** (or **shrinks**) only when the interval excludes 0; otherwise **no change "
        f"shown**. With n = {len(SEEDS)} seeds an arm the interval is wide: read the "
        "interval, not the means. Measure 1 (kNN, own reference) in R2 uses 20,000 "
        "reference images against R1's 5,000: its change is reported without a verdict.",
        "",
        "| change | measure | A_R | A_R1 | n (E_R/S_R/E_R1/S_R1) | A_R - A_R1 | 95% CI "
        "| df | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in CHANGES:
        lines += [change_row(name, m, states) for m in MEASURES]
    return lines + [""]


def plot(states: dict, path: Path) -> None:
    """The advantage (with its Welch interval where one exists) against regime, one panel a
    measure; the band is protocol 02's margin of agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(states)
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(13, 4), sharey=True)
    for ax, (measure, title) in zip(axes, MEASURES.items(), strict=True):
        for x, name in enumerate(names):
            records = states[name][1]
            a, interval = advantage(records, measure), advantage_interval(records, measure)
            if a is None:
                continue
            n = "/".join(str(len(v)) for v in arm_values(records, measure))
            if interval is None:
                ax.plot([x], [a], "o", mfc="none", color="C0")
            else:
                err = [[a - interval.low], [interval.high - a]]
                ax.errorbar([x], [a], yerr=err, fmt="o", color="C0", capsize=4)
            ax.annotate(f"n={n}", (x, a), textcoords="offset points", xytext=(6, 4), fontsize=7)
        ax.axhline(0, color="gray", lw=1)
        ax.axhspan(-AGREE_MARGIN, AGREE_MARGIN, color="gray", alpha=0.15)
        ticks = [f"{n}\n{regime_words(n).replace(', ', chr(10))}" for n in names]
        ax.set_xticks(range(len(names)), ticks, fontsize=7)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("EffSSL - SimCLR at equal compute (points, test)")
    fig.suptitle(
        f"Protocol 05: the advantage with its {LEVEL:.0%} Welch interval by regime (hollow: no "
        f"interval yet; band: agreement within +-{AGREE_MARGIN:g})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def header_lines(states: dict, r1_out: Path) -> list[str]:
    """The title, the status (which runs exist and n per arm with all three measures) and
    the regimes."""
    done = {
        f"{name} {arm}": sum(all(finite(r[m]) for m in MEASURES) for r in runs.values())
        for name, (_, records) in states.items()
        for arm, runs in records.items()
    }
    complete = all(n >= len(SEEDS) for n in done.values())
    status = (
        f"**Result** (n = {len(SEEDS)} for every arm)."
        if complete
        else "**Interim report**: not every arm has its seeds 0-2 with all three measures "
        f"({', '.join(f'{a}: n = {n}' for a, n in done.items())}). If the budget ends "
        "first, this n is the study's n."
    )
    lines = [
        "# Protocol 05: EffSSL's advantage at equal compute across regimes",
        "",
        status,
        "",
        "| regime | data | model | EffSSL negatives | steps an epoch | E epochs | S epochs "
        "(exact) | unseen reference | linear probe trained on | runs from |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (fixed, _) in states.items():
        r = REGIMES[name]
        arms = fixed["arms"] if fixed else {}
        epochs = [f"{arms[a]['epochs']}" if a in arms else "-" for a in ARMS]
        exact = f" ({arms['S']['exact_epochs']:.3f})" if "S" in arms else ""
        where = f"protocol 02, `{in_repo(str(r1_out))}`" if name == "R1" else f"`{name}/`"
        lines.append(
            f"| {name} | {r.fraction:.0%} share ({r.images:,} images) | {r.model} | "
            f"{r.negatives} | {r.steps_per_epoch} | {epochs[0]} | {epochs[1]}{exact} | "
            f"{r.unseen_words()} | the {r.probe:.0%} share ({share_images(r.probe):,} "
            f"labelled images) | {where} |"
        )
    return lines + [""]


def regime_detail_lines(name: str, fixed: dict, records: dict) -> list[str]:
    """A regime's runs, step cost and epochs, compute (new regimes) and code, each section
    retitled under the regime."""

    def titled(title: str, lines: list[str]) -> list[str]:
        return [f"### {name}: {title}", *lines[1:]]

    lines = [f"## Regime {name} ({regime_words(name)})", ""]
    lines += titled("every run", run_lines(records, fixed["arms"]))
    lines += titled("step cost and epochs", step_cost_lines(fixed))
    if name != "R1":
        lines += titled("compute spent", compute_lines(records, fixed))
    return lines + run_code_lines(records, fixed["arms"], REGIMES[name].unseen_words()) + [""]


def scale_report(root: Path, r1_out: Path = EQUAL_COMPUTE_OUT) -> Path:
    """``<root>/report.md`` and ``<root>/scale.png`` from every regime's arms and runs (R1 read
    from protocol 02's folder ``r1_out``); returns the report's path."""
    root = Path(root)
    states = regime_states(root, r1_out)
    plot(states, root / PLOT_FILE)
    lines = header_lines(states, r1_out) + advantage_lines(states) + change_lines(states)
    lines += [f"![the advantage by regime]({PLOT_FILE})", ""]
    if fixed := next((f for f, _ in states.values() if f is not None), None):
        lines += lr_lines(fixed)
    for name, (fixed, records) in states.items():
        if fixed is not None:
            lines += regime_detail_lines(name, fixed, records)
    protocol = committed_in(REPO / PROTOCOL)
    lines += [f"Protocol: `{PROTOCOL}`, committed in {protocol or '(not committed)'}.", ""]
    lines += deviation_lines(PROTOCOL)
    (root / REPORT_FILE).write_text("\n".join(lines) + "\n")
    print(f"wrote {root / REPORT_FILE}")
    return root / REPORT_FILE


def protocol_report(args) -> None:
    """The report of the protocol whose arms ``--out`` holds: protocol 05's of the regimes'
    root (``--out``'s parent; R1 from ``--equal-compute``), else protocol 02's."""
    if read_arms(args.out).get("protocol") == PROTOCOL:
        scale_report(args.out.parent, getattr(args, "equal_compute", None) or EQUAL_COMPUTE_OUT)
    else:
        equal_compute_report(args)
