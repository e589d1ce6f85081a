"""Protocol 02 in the evidence study (benchmarks/evidence/equal_compute.py, final_measures.py,
equal_compute_report.py, stats.py; benchmarks/study_equal_compute.sh): the learning rates by
protocol 01's rule, the epochs from the step cost, the arms as plans with schedules of their
own, the unseen kNN reference, the intervals and verdicts, the report, all on synthetic
results (no training)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from evidence import data as ev_data  # noqa: E402
from evidence import equal_compute as ec  # noqa: E402
from evidence import equal_compute_report as ec_report  # noqa: E402
from evidence import final_measures as fm  # noqa: E402
from evidence import launcher, orchestration, plans, stats  # noqa: E402
from evidence import runs as ev_runs  # noqa: E402

#: step_cost.py's columns, the ones protocol 02 reads and checks
STEP_COST_FIELDS = ["method", "views", "median_s_per_step", "steps_timed", "device", "model"]
STEP_COST_FIELDS += ["batch", "size", "precision", "threads", "samples", "negatives"]


def write_step_cost(path, costs: dict[str, float], **changed) -> None:
    """A step-cost CSV of the protocol's measurement (``changed``: other column values)."""
    setup = {**ec.STEP_COST_SETUP, "threads": "1", **changed}
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=STEP_COST_FIELDS)
        w.writeheader()
        for method, seconds in costs.items():
            w.writerow({"method": method, "views": 1, "median_s_per_step": seconds, **setup})


def search_run(out, method: str, lr: float, top1: float | None, epochs=(5, 10, 15)) -> None:
    """A protocol-01 run of ``method`` at ``lr`` (seed 0): its kNN at ``epochs``, ending at
    ``top1``; None: diverged."""
    variant = f"lr={lr:g},wu=0"
    run_dir = out / "runs" / ev_runs.run_name(method, variant, 0)
    run_dir.mkdir(parents=True)
    if top1 is None:
        (run_dir / ev_runs.DIVERGED).write_text("non-finite loss\n")
        return
    log = ev_runs.EvalLog(run_dir)
    for epoch in epochs:
        log.add(epoch=epoch, train_s=epoch, steps=19 * epoch, knn_top1=top1, knn_top5=90)


def search_study(out, scores: dict[str, dict[float, float | None]], eval_set="val"):
    """A protocol-01 folder (15 epochs, scored on val) with finished runs ``scores``."""
    out.mkdir(parents=True)
    settings = {"epochs": 15, "eval_epochs": [5, 10, 15], "holdout": 500, "eval_set": eval_set}
    (out / "settings.json").write_text(json.dumps(settings))
    for method, by_lr in scores.items():
        for lr, top1 in by_lr.items():
            search_run(out, method, lr, top1)
    return out


#: a finished search: EffSSL's 0.1 inside its grid, SimCLR's 0.133 at the edge, extended
FINISHED = {
    "effssl": {0.0333: 30.0, 0.1: 33.0, 0.3: 31.5},
    "simclr": {0.0444: 35.0, 0.133: 37.0, 0.4: 33.0, 1.2: 32.9},
}


def study_args(tmp_path, costs=None, **kw) -> argparse.Namespace:
    """The study's options for protocol 02 in ``tmp_path/out``, its inputs made there."""
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    search = tmp_path / "lr_search"
    if not search.exists():
        search_study(search, FINISHED)
    write_step_cost(
        out / ec.STEP_COST_FILE, costs or {"effssl": 1.0, "simclr": 1.5, "backbone": 0.8}
    )
    base = dict(
        out=out,
        lr_search=search,
        step_cost=out / ec.STEP_COST_FILE,
        plan=["equal_compute_short"],
        seeds=[0],
        fraction=0.1,
        model="m",
        batch=256,
        epochs=50,
        eval_epochs=list(range(5, 55, 5)),
        stop_after=None,
        negatives=-1,
        effssl_overrides=[],
        workers=0,
        machine="cpu",
        holdout=0,
        split_seed=0,
        eval_set="val",
        threads=0,
        official_src=None,
        data_dir=tmp_path / "data",
        linear_epochs=30,
    )
    return argparse.Namespace(**{**base, **kw})


def test_the_learning_rate_follows_protocol_01s_rule_once_the_search_has_finished(tmp_path):
    out = search_study(tmp_path / "s", FINISHED)
    choice = ec.chosen_lr(out, "effssl")
    assert (choice.lr, choice.variant) == (0.1, "lr=0.1,wu=0") and "highest" in choice.reason
    # SimCLR: 0.133 won at the grid's edge; its extension 0.0444 is 2 points lower: 0.133
    assert ec.chosen_lr(out, "simclr").lr == 0.133
    # within a point of the best: the learning rate closest to the current one (0.1)
    tied = search_study(tmp_path / "t", {"effssl": {0.0333: 32.5, 0.1: 33.0, 0.3: 33.4}})
    choice = ec.chosen_lr(tied, "effssl")
    assert choice.lr == 0.1 and "tied" in choice.reason
    # an extension that wins: chosen at the new edge (no further extension)
    won = search_study(tmp_path / "w", {"simclr": {**FINISHED["simclr"], 0.0444: 39.0}})
    assert ec.chosen_lr(won, "simclr").lr == 0.0444
    # a diverged extension has no score: the grid's choice stands
    gone = search_study(tmp_path / "g", {"simclr": {**FINISHED["simclr"], 0.0444: None}})
    assert ec.chosen_lr(gone, "simclr").lr == 0.133


def test_an_unfinished_search_raises_and_says_what_is_missing(tmp_path):
    missing = search_study(tmp_path / "m", {"effssl": {0.0333: 30.0, 0.1: 33.0}})
    with pytest.raises(ec.SearchUnfinished, match="no score at epoch 15 for lr 0.3$"):
        ec.chosen_lr(missing, "effssl")
    search_run(missing, "effssl", 0.3, 31.0, epochs=(5, 10))  # still running
    with pytest.raises(ec.SearchUnfinished, match="for lr 0.3$"):
        ec.chosen_lr(missing, "effssl")
    edge = {k: v for k, v in FINISHED["simclr"].items() if k != 0.0444}
    due = search_study(tmp_path / "d", {"simclr": edge})
    with pytest.raises(ec.SearchUnfinished, match="asks for, lr=0.0444,wu=0, has no score"):
        ec.chosen_lr(due, "simclr")
    dead = search_study(tmp_path / "x", {"effssl": {0.0333: None, 0.1: None, 0.3: None}})
    with pytest.raises(ec.SearchUnfinished, match="chose no learning rate"):
        ec.chosen_lr(dead, "effssl")
    on_test = search_study(tmp_path / "o", FINISHED, eval_set="test")
    with pytest.raises(ec.SearchUnfinished, match="validation split"):
        ec.chosen_lr(on_test, "effssl")
    with pytest.raises(ec.SearchUnfinished, match="no protocol 01 study"):
        ec.chosen_lr(tmp_path / "nowhere", "effssl")


def test_the_epochs_come_from_the_step_cost_rounded_half_up_with_the_error_reported(tmp_path):
    path = tmp_path / "cost.csv"
    write_step_cost(path, {"effssl": 1.6828, "simclr": 2.5359, "backbone": 1.1913})
    arms = ec.step_cost_epochs(path)
    assert list(arms) == ["E-long", "S-long", "E-long-eq", "E-short", "S-short", "E-short-eq"]
    exact_long, exact_short = 50 * 1.6828 / 2.5359, 15 * 1.6828 / 2.5359  # 33.18, 9.95
    assert arms["S-long"]["epochs"] == 33 and arms["S-short"]["epochs"] == 10
    assert arms["S-long"]["exact_epochs"] == pytest.approx(exact_long)
    assert arms["S-long"]["rounding_error"] == pytest.approx(33 - exact_long)
    assert arms["S-short"]["rounding_error"] == pytest.approx(10 - exact_short)
    assert all(abs(a["rounding_error"]) <= 0.5 for a in arms.values())
    assert (arms["E-long"]["epochs"], arms["E-short"]["epochs"]) == (50, 15)
    assert (arms["E-long-eq"]["epochs"], arms["E-short-eq"]["epochs"]) == (33, 10)
    assert {a["method"] for n, a in arms.items() if n.startswith("E")} == {"effssl"}
    # exactly half an epoch rounds up (37.5 -> 38), not to the even 38/37 of round()
    half = ec.arm_epochs({"effssl": 0.75, "simclr": 1.0})
    assert (half["S-long"]["epochs"], half["S-short"]["epochs"]) == (38, 11)
    assert half["S-long"]["rounding_error"] == 0.5


def test_only_the_protocols_step_cost_measurement_is_accepted(tmp_path):
    path = tmp_path / "cost.csv"
    with pytest.raises(ec.StepCostProblem, match="no step-cost CSV"):
        ec.read_step_costs(path)
    write_step_cost(path, {"effssl": 1.0, "simclr": 1.5, "backbone": 0.8}, samples="50000")
    with pytest.raises(ec.StepCostProblem, match="samples='50000', not '5000'"):
        ec.read_step_costs(path)
    write_step_cost(path, {"effssl": 1.0, "backbone": 0.8})
    with pytest.raises(ec.StepCostProblem, match="no row for simclr"):
        ec.read_step_costs(path)
    write_step_cost(path, {"effssl": 1.0, "simclr": 1.5, "backbone": 0.8}, steps_timed="12")
    with pytest.raises(ec.StepCostProblem, match="steps_timed"):
        ec.read_step_costs(path)
    # step_cost.py writes every column the check reads
    source = (REPO / "benchmarks" / "step_cost.py").read_text()
    for key in ("method", "median_s_per_step", *ec.STEP_COST_SETUP):
        assert f'"{key}":' in source, key


def test_an_arm_is_named_by_its_lr_and_epochs_and_composes_to_its_own_complete_schedule(
    tmp_path,
):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    variant = ec.arm_variant("simclr", 0.133, 33)
    assert variant == "lr=0.133,wu=0,ep=33"
    name = ev_runs.run_name("simclr", variant, 4)
    assert name == "simclr__lr-0.133,wu-0,ep-33__s4"
    assert ev_runs.parse_run_name(name) == ("simclr", variant, 4)
    assert ev_runs.variant_epochs(variant) == 33 and ev_runs.variant_epochs("lr=0.1,wu=0") is None
    assert plans.variant_overrides(variant) == [
        "optimizer.lr=0.133",
        "scheduler.warmup_epochs=0",
        "max_epochs=33",
    ]
    assert plans.variant_overrides("lr=0.1,wu=0") == plans.VARIANTS["lr=0.1,wu=0"]
    with pytest.raises(KeyError):
        plans.variant_overrides("no_such_variant")
    args = study_args(tmp_path, eval_set="test")
    assert ev_runs.run_schedule(args, variant) == (33, [5, 10, 15, 20, 25, 30, 33])
    assert ev_runs.run_schedule(args, "default") == (50, args.eval_epochs)
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        for method, lr, epochs in (("effssl", 0.1, 15), ("simclr", 0.133, 33)):
            args.method, args.variant, args.seed = method, ec.arm_variant(method, lr, epochs), 0
            overrides = launcher.launcher_overrides(args, tmp_path, tmp_path / "run")
            cfg = compose(method, overrides=overrides)
            assert (cfg.max_epochs, cfg.optimizer.lr) == (epochs, lr)  # the cosine's length
            assert cfg.scheduler.name == "warmup_cosine" and cfg.scheduler.warmup_epochs == 0
            assert OmegaConf.select(cfg, "scheduler.min_lr", default=0.0) == 0  # ends at 0
            if method == "effssl":
                assert cfg.method_kwargs.bank_update == "grad" and cfg.optimizer.name == "sgd"
                assert cfg.method_kwargs.num_negatives == -1
            else:
                assert cfg.optimizer.name == "lars"


def test_a_run_with_its_own_schedule_finishes_at_its_own_last_epoch(tmp_path):
    args = study_args(tmp_path)
    variant = "lr=0.1,wu=0,ep=15"
    run_dir = args.out / "runs" / ev_runs.run_name("effssl", variant, 0)
    run_dir.mkdir(parents=True)
    log = ev_runs.EvalLog(run_dir)
    log.add(epoch=10, train_s=1, steps=190, knn_top1=30, knn_top5=80)
    assert not ev_runs.finished(args, "effssl", variant, 0)
    log.add(epoch=15, train_s=2, steps=285, knn_top1=31, knn_top5=81)
    assert ev_runs.finished(args, "effssl", variant, 0)  # 15 of its own, not the study's 50
    assert ev_runs.last_epoch(args, variant) == 15 and ev_runs.last_epoch(args) == 50


def test_the_arms_are_fixed_once_and_run_in_the_protocols_order(tmp_path, monkeypatch):
    args = study_args(tmp_path, seeds=[0, 1])  # c_E / c_S = 2/3: 10 and 33 SimCLR epochs
    runs = orchestration.planned_runs(args, "equal_compute_short")
    assert runs == [
        ("effssl", "lr=0.1,wu=0,ep=15", 0),
        ("simclr", "lr=0.133,wu=0,ep=10", 0),
        ("effssl", "lr=0.1,wu=0,ep=10", 0),
        ("effssl", "lr=0.1,wu=0,ep=15", 1),
        ("simclr", "lr=0.133,wu=0,ep=10", 1),
        ("effssl", "lr=0.1,wu=0,ep=10", 1),
    ]
    fixed = json.loads((args.out / ec.ARMS_FILE).read_text())
    assert fixed["arms"]["S-long"]["variant"] == "lr=0.133,wu=0,ep=33"
    assert fixed["learning_rates"]["simclr"]["search_variant"] == "lr=0.133,wu=0"
    assert len(fixed["step_cost"]["sha256"]) == 64
    # the record holds no machine's folders: its inputs relative to the study folder, which
    # read_arms resolves again
    assert not any(
        Path(fixed[k] if k == "lr_search" else fixed[k]["csv"]).is_absolute()
        for k in ("lr_search", "step_cost")
    )
    resolved = ec.read_arms(args.out)
    assert Path(resolved["step_cost"]["csv"]).resolve() == args.step_cost.resolve()
    assert Path(resolved["lr_search"]).resolve() == Path(args.lr_search).resolve()
    # the workers get each run's own schedule; a finished run is skipped
    add = ev_runs.EvalLog(args.out / "runs" / ev_runs.run_name("effssl", runs[0][1], 0)).add
    (args.out / "runs" / ev_runs.run_name("effssl", runs[0][1], 0)).mkdir(parents=True)
    add(epoch=15, train_s=1, steps=285, knn_top1=30, knn_top5=80)
    started = []

    def fake_run(cmd, **kwargs):
        at = cmd.index("--eval-epochs") + 1
        epochs = cmd[at : cmd.index("--negatives")]
        started.append((cmd[cmd.index("--variant") + 1], cmd[cmd.index("--epochs") + 1], epochs))
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(orchestration, "report", lambda args: None)
    args.seeds = [0]
    orchestration.run_all(args)
    assert started == [
        ("lr=0.133,wu=0,ep=10", "10", ["5", "10"]),
        ("lr=0.1,wu=0,ep=10", "10", ["5", "10"]),
    ]
    # other inputs give other arms: refused, the fixed arms stay
    write_step_cost(args.step_cost, {"effssl": 1.0, "simclr": 2.0, "backbone": 0.8})
    with pytest.raises(SystemExit, match="fixed other arms"):
        orchestration.planned_runs(args, "equal_compute_long")
    # with equal step costs the equal-epochs arm is the equal-compute arm: one run, not two
    same = study_args(tmp_path / "same", {"effssl": 1.0, "simclr": 1.0, "backbone": 0.8})
    assert len(orchestration.planned_runs(same, "equal_compute_long")) == 2


def test_arms_wait_for_their_inputs(tmp_path):
    args = study_args(tmp_path)
    args.step_cost.unlink()
    with pytest.raises(SystemExit, match="cannot fix its arms yet: no step-cost CSV"):
        ec.fixed_arms(args)
    assert not (args.out / ec.ARMS_FILE).exists()


def fake_cifar(root, per_class: int = 40):
    """Ten class folders of distinct small files (the split only links and hashes them)."""
    for c in range(10):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            (d / f"{i:04d}.jpg").write_bytes(f"{c}-{i}".encode())
    (root / "test").mkdir()
    return root


def test_the_unseen_reference_follows_the_training_share_and_is_disjoint_from_it(tmp_path):
    data = fake_cifar(tmp_path / "data")
    split = ev_data.prepare_split(data, holdout=4, seed=0, fractions=[0.1, 0.4])
    manifest = json.loads((split / "manifest.json").read_text())
    names = fm.unseen_names(manifest, 4, 4)  # the 10% share is 4 a class here
    train, large = manifest["shares"]["train_f0.1"]["names"], manifest["shares"]["train_f0.4"]
    for cls, ns in names.items():
        assert ns == sorted(manifest["pool_order"][cls][4:8]) and len(ns) == 4
        assert not set(ns) & set(train[cls]) and not set(ns) & set(manifest["val"][cls])
        assert set(ns) <= set(large["names"][cls])  # inside the 40% share
    assert fm.unseen_problems(manifest, names, "train_f0.1") == []
    args = study_args(tmp_path, holdout=4, data_dir=data)
    files, labels, digest = fm.unseen_reference(args, data)
    assert len(files) == 40 and all(f.is_file() for f in files)
    assert digest == ev_data.names_digest(names)
    assert fm.unseen_reference(args, data) == (files, labels, digest)  # deterministic
    for f, label in zip(files, labels, strict=True):
        assert f.parent.name == f"class{label}"  # ImageFolder's index of the sorted classes
    # a reference that overlaps the training share or the validation images is caught
    bad = {**names, "class3": [*names["class3"][1:], train["class3"][0]]}
    assert fm.unseen_problems(manifest, bad, "train_f0.1") == [
        "the unseen reference shares training images of class3"
    ]
    bad = {**names, "class5": [*names["class5"][1:], manifest["val"]["class5"][0]]}
    assert "the unseen reference shares validation images of class5" in fm.unseen_problems(
        manifest, bad, "train_f0.1"
    )
    with pytest.raises(ValueError, match="fewer than"):
        fm.unseen_names(manifest, 30, 10)


def test_the_cifar_unseen_reference_is_the_501st_to_1000th_of_each_pool(tmp_path):
    files = {f"c{c}": [f"{i:04d}.jpg" for i in range(5000)] for c in range(10)}
    drawn = ev_data.draw_split(files, holdout=500, seed=0)
    pool = drawn["pool"]
    share = {cls: sorted(p[:500]) for cls, p in pool.items()}
    manifest = {
        "val": drawn["val"],
        "pool_order": pool,
        "shares": {"train_f0.1": {"names": share}},
    }
    names = fm.unseen_names(manifest, 500, 500)
    assert sum(map(len, names.values())) == 5000
    for cls, ns in names.items():
        assert set(ns) == set(pool[cls][500:1000])
        assert not set(ns) & set(share[cls]) and not set(ns) & set(drawn["val"][cls])
        assert set(ns) <= set(pool[cls][:2000])  # the 40% share
    assert fm.unseen_problems(manifest, names, "train_f0.1") == []


def test_welch_and_paired_intervals_match_hand_and_scipy_numbers():
    from scipy import stats as sps

    # equal variances, n = 3 each: df = 4, t(0.975, 4) = 2.776445 (tables), se = sqrt(2/3)
    a, b = [41.0, 42.0, 43.0], [38.0, 39.0, 40.0]
    welch = stats.welch_interval(a, b)
    half = 2.7764451 * math.sqrt(2 / 3)
    assert welch.diff == 3.0 and welch.df == pytest.approx(4.0)
    assert (welch.low, welch.high) == (pytest.approx(3 - half), pytest.approx(3 + half))
    # unequal variances: scipy's own Welch interval
    a, b = [40.1, 42.3, 44.0, 39.2, 41.7], [38.5, 39.0, 39.4, 38.8]
    welch = stats.welch_interval(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (welch.low, welch.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    va, vb = statistics_var(a) / 5, statistics_var(b) / 4
    assert welch.df == pytest.approx((va + vb) ** 2 / (va**2 / 4 + vb**2 / 3))
    # paired by seed: d = 3, 2, 3; mean 8/3, sd 0.57735, t(0.975, 2) = 4.302653
    paired = stats.paired_interval({0: 41.0, 1: 42.0, 2: 43.0}, {0: 38.0, 1: 40.0, 2: 40.0})
    half = 4.3026527 * 0.5773503 / math.sqrt(3)
    assert paired.diff == pytest.approx(8 / 3) and paired.n == (3, 3)
    assert (paired.low, paired.high) == (pytest.approx(8 / 3 - half), pytest.approx(8 / 3 + half))
    a, b = {0: 40.1, 1: 42.3, 2: 44.0, 4: 39.2}, {0: 38.5, 1: 39.0, 2: 39.4, 3: 38.8, 4: 41.0}
    ci = sps.ttest_rel([a[s] for s in (0, 1, 2, 4)], [b[s] for s in (0, 1, 2, 4)])
    low, high = ci.confidence_interval(0.95)
    assert stats.paired_interval(a, b)[1:3] == (pytest.approx(low), pytest.approx(high))
    # no interval: fewer than two values, or no spread
    assert stats.welch_interval([40.0], [38.0, 39.0]) is None
    assert stats.welch_interval([40.0, 40.0], [38.0, 38.0]) is None
    assert stats.paired_interval({0: 41.0, 1: 42.0}, {0: 40.0, 1: 41.0}) is None
    assert stats.paired_interval({0: 41.0}, {0: 40.0, 1: 41.0}) is None


def statistics_var(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def test_the_verdict_rule_in_the_protocols_order():
    def interval(low: float, high: float) -> stats.Interval:
        return stats.Interval((low + high) / 2, low, high, 4.0, (5, 5))

    assert stats.verdict(interval(0.2, 2.5)) == "EffSSL better"
    assert stats.verdict(interval(-3.0, -0.1)) == "SimCLR better"
    assert stats.verdict(interval(0.2, 0.8)) == "EffSSL better"  # excludes 0 comes first
    assert stats.verdict(interval(-0.9, 1.0)) == "agree"  # the margin's ends are inside
    assert stats.verdict(interval(-1.2, 0.5)) == "not shown either way"
    assert stats.verdict(interval(0.0, 3.0)) == "not shown either way"  # 0 not excluded
    assert stats.verdict(None) == "not shown either way"


def finished_run(out, method: str, variant: str, seed: int, val: float, final: dict | None):
    """A finished protocol-02 run: its validation kNN by epoch, time, starts and measures."""
    epochs = ev_runs.variant_epochs(variant)
    run_dir = out / "runs" / ev_runs.run_name(method, variant, seed)
    run_dir.mkdir(parents=True)
    log = ev_runs.EvalLog(run_dir)
    for epoch in (5, epochs):
        log.add(epoch=epoch, train_s=60 * epoch, steps=19 * epoch, knn_top1=val, knn_top5=90)
        log.add_time(epoch, 60.0 * epoch)
    (run_dir / "starts.log").write_text(
        f"2026-12-05 10:00:00 commit {'a' * 40}: --worker\n"
        "    runner /pin/benchmarks/study.py, effssl_plugin /pin_site/effssl_plugin, configs "
        "/pin_site/effssl_plugin/configs, torch threads 1\n"
    )
    if final is not None:
        (run_dir / ec.FINAL_FILE).write_text(json.dumps(final))
    return run_dir


def measures(own: float, unseen: float, linear: float) -> dict:
    return {
        "knn_own_top1": own,
        "knn_unseen_top1": unseen,
        "unseen_sha256": "f" * 64,
        "knn_seconds": 30.0,
        "linear": {"val_acc1": linear, "seconds": 300.0},
    }


def test_the_report_shows_every_seed_the_intervals_and_an_interim_verdict(tmp_path):
    args = study_args(tmp_path)  # E-short 15, S-short and E-short-eq 10 epochs
    arms = ec.fixed_arms(args)["arms"]
    (args.out / "step_cost.log").write_text(
        "2026-12-05 09:00:00 step cost, commit abc\nload before: 0.05 0.1 0.2 1/99 7, 2 cpus\n"
        "machine: x86_64, 1 threads, torch 2.4\nround 1/6 done\nload after: 1.0 0.5 0.3\n"
    )
    e, s, eq = (arms[a]["variant"] for a in ("E-short", "S-short", "E-short-eq"))
    own_e, own_s = [45.0, 46.0, 47.0], [41.0, 42.5, 42.0]
    for seed in range(3):
        finished_run(args.out, "effssl", e, seed, 40.0, measures(own_e[seed], 40.0, 50.0))
        finished_run(args.out, "simclr", s, seed, 38.0, measures(own_s[seed], 40.2 + seed, 50.1))
    finished_run(args.out, "effssl", eq, 0, 39.0, None)  # measures still to come
    ec_report.equal_compute_report(args)
    text = (args.out / ec_report.REPORT_FILE).read_text()
    assert "**Interim report**" in text and "E-short: n = 3" in text and "E-long: n = 0" in text
    welch = stats.welch_interval(own_e, own_s)
    paired = stats.paired_interval(dict(enumerate(own_e)), dict(enumerate(own_s)))
    row = (
        "| equal compute, short | kNN, own reference | E-short (15 ep) | S-short (10 ep) | "
        "s0: 45.00, s1: 46.00, s2: 47.00 | s0: 41.00, s1: 42.50, s2: 42.00 | 3 / 3 | "
        f"46.00 +- 1.00 | 41.83 +- 0.76 | +4.17 | [{welch.low:+.2f}, {welch.high:+.2f}] "
        f"(df {welch.df:.1f}) | [{paired.low:+.2f}, {paired.high:+.2f}] (df 2.0) | "
        "EffSSL better (interim, n = 3 / 3) |"
    )
    assert row in text
    assert "| equal compute, short | linear probe |" in text
    unseen_row = next(ln for ln in text.splitlines() if "short | kNN, unseen" in ln)
    assert unseen_row.endswith("| not shown either way (interim, n = 3 / 3) |")
    assert "| equal epochs, short | kNN, own reference | E-short-eq (10 ep) |" in text
    assert "no values yet |" in text  # E-short-eq has no measures yet, the long budget none
    assert "| E-short-eq | 0 | effssl | 10 | 0.1 | finished | 39.00 | - | - | - |" in text
    assert (
        "| E-short | 0 | effssl | 15 | 0.1 | finished | 40.00 | 45.00 | 40.00 | 50.00 | "
        f"5: 40.0, 15: 40.0 | {'a' * 12} |"
    ) in text
    assert "**not committed yet**" in text  # the CSV in tmp_path: no repository
    assert "load before: 0.05 0.1 0.2 1/99 7, 2 cpus; machine: x86_64, 1 threads" in text
    assert "round 1/6" not in text
    assert "c_E / c_S = 0.6667" in text and "| S-long | simclr | 33 | 33.333 | -0.333 |" in text
    assert "simclr: **0.133**" in text and "0.0444: 35.00" in text
    protocol = subprocess.run(
        ["git", "-C", str(REPO), "log", "--diff-filter=A", "--format=%H", "--", ec.PROTOCOL],
        capture_output=True,
        text=True,
    ).stdout.split()
    if protocol:  # a clone with history
        assert f"committed in {protocol[-1]}" in text
    assert f"`{'f' * 64}`" in text and "## Deviations (from the protocol)" in text
    assert f"{'a' * 12} x7; `effssl_plugin` imported from pin_site/effssl_plugin." in text
    # compute: 3 x 15 + 3 x 10 + 1 x 10 epochs of 19 steps, each run counted once
    assert "| all | | 1615 |" in text


def test_final_measures_go_to_each_finished_runs_final_json_and_resume(tmp_path, monkeypatch):
    data = fake_cifar(tmp_path / "data")
    args = study_args(tmp_path, holdout=4, data_dir=data)
    arms = ec.fixed_arms(args)["arms"]
    e, s = arms["E-short"]["variant"], arms["S-short"]["variant"]
    done = finished_run(args.out, "effssl", e, 0, 40.0, None)
    for epoch in (13, 14):  # Lightning's count: ep=14 is the checkpoint after epoch 15
        ckpt = done / "ckpt" / "effssl" / "20261205-x" / f"effssl-x-ep={epoch}.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(b"")
    finished_run(args.out, "simclr", s, 0, 38.0, None)  # its checkpoint is elsewhere
    diverged = args.out / "runs" / ev_runs.run_name("effssl", arms["E-short-eq"]["variant"], 0)
    diverged.mkdir(parents=True)
    (diverged / ev_runs.DIVERGED).write_text("non-finite loss\n")
    measured, probed = [], []
    monkeypatch.setattr(fm, "measure_sets", lambda args, data, images: {"digest": "d"})
    monkeypatch.setattr(
        fm,
        "final_knn",
        lambda ckpt, sets: (
            measured.append(ckpt.name) or {"knn_own_top1": 1.0, "knn_unseen_top1": 0.5}
        ),
    )
    probe = {"val_acc1": 2.0}
    monkeypatch.setattr(fm, "run_probe", lambda args, cmd, run_dir: probed.append(cmd) or probe)
    fm.final_measures(args)
    assert measured == ["effssl-x-ep=14.ckpt"] and len(probed) == 1
    assert f"data.val_path='{data / 'test'}'" in probed[0]  # the test images
    assert any(a.startswith("pretrained_feature_extractor=") and "ep=14" in a for a in probed[0])
    result = json.loads((done / ec.FINAL_FILE).read_text())
    assert result["linear"] == probe and result["epochs"] == 15 and result["images"] == "test"
    # a probe that failed is tried again, the kNN kept
    (done / ec.FINAL_FILE).write_text(json.dumps({k: result[k] for k in result if k != "linear"}))
    fm.final_measures(args)
    assert len(measured) == 1 and len(probed) == 2
    fm.final_measures(args)  # everything measured: nothing runs
    assert len(measured) == 1 and len(probed) == 2
    (args.out / "PAUSE").touch()
    (done / ec.FINAL_FILE).unlink()
    fm.final_measures(args)
    assert len(measured) == 1
    with pytest.raises(SystemExit, match="needs --holdout"):
        fm.final_measures(study_args(tmp_path, plan=["main"], holdout=4))


def test_the_runner_measures_the_step_cost_only_on_an_idle_machine_then_runs_in_order(tmp_path):
    script = REPO / "benchmarks" / "study_equal_compute.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    batches = [ln for ln in text.splitlines() if ln.startswith("batch ")]
    assert batches == [
        'batch "equal_compute_short" 0 1 2 || exit 0',
        'batch "equal_compute_long" 0 1 2 || exit 0',
        'batch "equal_compute_short equal_compute_long" 3 4 || exit 0',
    ]
    for flag in ("--holdout 500", "--eval-set val", "--threads 1", "--epochs 50", "--arms"):
        assert flag in text
    measure = " ".join(text.split('measure_step_cost "$OUT" "$STEP_COST"')[1].split("\\\n"))
    for flag in ec.STEP_COST_COMMAND.split("step_cost.py")[1].split(" --")[1:]:
        if not flag.startswith("out"):
            assert f"--{flag}" in " ".join(measure.split()), flag
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "OUT": str(tmp_path / "out"), "IDLE": "0", "PATH": path}
    proc = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "otherwise idle" in proc.stdout, proc.stdout + proc.stderr
    assert not (tmp_path / "out" / ec.STEP_COST_FILE).exists()


def test_reports_show_paths_from_the_repository_that_holds_them(tmp_path):
    """A pinned copy writes into another checkout: the report names the path from that
    checkout's root, never the machine's folders."""
    (tmp_path / "checkout" / ".git").mkdir(parents=True)
    inside = tmp_path / "checkout" / "benchmarks" / "results" / "lr_search"
    assert ec_report.in_repo(str(inside)) == "benchmarks/results/lr_search"
    assert ec_report.in_repo(str(tmp_path / "elsewhere" / "lr_search")) == "elsewhere/lr_search"
