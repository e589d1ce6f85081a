"""Protocol 05 in the evidence study (benchmarks/evidence/scale.py, scale_report.py, the final
measures' images in final_measures.py, the change interval in stats.py;
benchmarks/study_scale.sh): each regime's arms from its own step cost, the steps an epoch from
its share, the unseen reference and the probe's labelled images per regime, the interval of
the change of the advantage, and the report on partial results, all on synthetic results (no
training)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from evidence import data as ev_data  # noqa: E402
from evidence import equal_compute as ec  # noqa: E402
from evidence import equal_compute_report as ec_report  # noqa: E402
from evidence import final_measures as fm  # noqa: E402
from evidence import launcher, orchestration, scale, scale_report, stats  # noqa: E402
from test_study_equal_compute import (  # noqa: E402
    fake_cifar,
    finished_run,
    measures,
    study_args,
    write_step_cost,
)

COSTS = {"effssl": 1.0, "simclr": 1.2, "backbone": 0.8}  # S: 15 / 1.2 = 12.5 -> 13 epochs


def regime_args(tmp_path, name: str, costs=COSTS, **kw):
    """Study options of a protocol-05 regime in ``tmp_path/scale/<name>``, with its step-cost
    CSV of the protocol's measurement (``costs``) and protocol 01's finished search."""
    regime = scale.REGIMES[name]
    out = tmp_path / "scale" / name
    cost = out / ec.step_cost_file(regime.model)
    plan = {v: k for k, v in scale.SCALE_PLANS.items()}[name]
    args = study_args(tmp_path, out=out, step_cost=cost, plan=[plan], epochs=15)
    for key, value in {"fraction": regime.fraction, "model": regime.model, **kw}.items():
        setattr(args, key, value)
    args.negatives, args.eval_epochs = regime.negatives, [5, 10, 15]
    out.mkdir(parents=True, exist_ok=True)
    write_step_cost(cost, costs, **regime_setup(regime))
    return args


def regime_setup(regime: scale.Regime) -> dict[str, str]:
    """The step-cost columns a regime's measurement writes (beyond protocol 02's)."""
    return {
        "model": regime.model,
        "samples": str(regime.images),
        "negatives": str(regime.negatives),
    }


def test_each_regimes_arms_come_from_its_own_step_cost_and_are_fixed_once(tmp_path):
    r2 = regime_args(tmp_path, "R2")
    assert orchestration.planned_runs(r2, "scale_r2") == [
        ("effssl", "lr=0.1,wu=0,ep=15", 0),
        ("simclr", "lr=0.133,wu=0,ep=13", 0),  # 12.5 rounds half up
    ]
    fixed = json.loads((r2.out / ec.ARMS_FILE).read_text())
    assert fixed["protocol"] == scale.PROTOCOL and list(fixed["arms"]) == ["E", "S"]
    assert fixed["steps_per_epoch"] == 78
    assert (
        fixed["arms"]["S"]["exact_epochs"] == 12.5 and fixed["arms"]["S"]["rounding_error"] == 0.5
    )
    assert fixed["learning_rates"]["simclr"]["lr"] == 0.133  # protocol 01's rule, as protocol 02
    r2.seeds = [0, 1, 2]
    runs = orchestration.planned_runs(r2, "scale_r2")
    assert [(m, s) for m, _, s in runs] == [(m, s) for s in (0, 1, 2) for m in ("effssl", "simclr")]
    # R3 reads its own CSV: other costs, other epochs; 19 steps an epoch
    r3 = regime_args(tmp_path, "R3", {"effssl": 1.6, "simclr": 2.4, "backbone": 1.0})
    assert scale.scale_plan(r3, "scale_r3") == [
        ("effssl", "lr=0.1,wu=0,ep=15"),
        ("simclr", "lr=0.133,wu=0,ep=10"),
    ]
    assert json.loads((r3.out / ec.ARMS_FILE).read_text())["steps_per_epoch"] == 19
    # a changed CSV after the arms are fixed is refused
    write_step_cost(r2.step_cost, {**COSTS, "simclr": 2.0}, **regime_setup(scale.REGIMES["R2"]))
    with pytest.raises(SystemExit, match="fixed other arms"):
        orchestration.planned_runs(r2, "scale_r2")


def test_only_the_regimes_own_step_cost_measurement_is_accepted(tmp_path):
    r2 = regime_args(tmp_path, "R2")
    write_step_cost(r2.step_cost, COSTS)  # protocol 02's measurement: 5,000 rows, every one
    with pytest.raises(
        SystemExit, match="samples='5000', not '20000'.*negatives='-1', not '10000'"
    ):
        scale.scale_plan(r2, "scale_r2")
    write_step_cost(r2.step_cost, COSTS, **regime_setup(scale.REGIMES["R2"]), threads="2")
    with pytest.raises(SystemExit, match="protocol 05 cannot fix .* threads='2', not '1'"):
        scale.scale_plan(r2, "scale_r2")
    r2.step_cost.unlink()
    with pytest.raises(SystemExit, match="no step-cost CSV .*--samples 20000 --negatives 10000"):
        scale.scale_plan(r2, "scale_r2")
    assert not (r2.out / ec.ARMS_FILE).exists()
    # R3's measurement: resnet18, 5,000 rows, every row a negative
    r3 = regime_args(tmp_path, "R3")
    write_step_cost(r3.step_cost, COSTS, **regime_setup(scale.REGIMES["R2"]))
    with pytest.raises(SystemExit, match="model='mobilenetv3_small_100', not 'resnet18'"):
        scale.scale_plan(r3, "scale_r3")
    # a protocol-02 arms file in the folder is not this protocol's
    r3 = regime_args(tmp_path / "other", "R3")
    (r3.out / ec.ARMS_FILE).write_text(json.dumps({"protocol": ec.PROTOCOL, "arms": {}}))
    with pytest.raises(SystemExit, match="fixed other arms"):
        scale.scale_plan(r3, "scale_r3")


def test_a_plan_runs_only_with_its_regimes_options(tmp_path):
    r2 = regime_args(tmp_path, "R2")
    for key, value, flag in (
        ("fraction", 0.1, "--fraction 0.1 \\(not 0.4\\)"),
        ("negatives", -1, "--negatives -1 \\(not 10000\\)"),
        ("model", "resnet18", "--model resnet18"),
        ("out", tmp_path / "scale" / "R3", "--out R3 \\(not R2\\)"),
    ):
        wrong = study_args(tmp_path, **{**vars(r2), key: value})
        with pytest.raises(SystemExit, match=f"regime R2: {flag}"):
            scale.scale_plan(wrong, "scale_r2")
    with pytest.raises(SystemExit, match="not a step_cost_cpu_mobilenetv3_small_100_b256.csv"):
        scale.scale_plan(
            study_args(tmp_path, **{**vars(r2), "step_cost": tmp_path / "x.csv"}), "scale_r2"
        )
    # the runs get the regime's settings: EffSSL's num_negatives, the model, the own schedule
    r2.method, r2.variant, r2.seed, r2.eval_set = "effssl", "lr=0.1,wu=0,ep=15", 0, "test"
    overrides = launcher.launcher_overrides(r2, tmp_path, tmp_path / "run")
    for o in ("method_kwargs.num_negatives=10000", "max_epochs=15", "optimizer.lr=0.1"):
        assert o in overrides
    assert "backbone.kwargs.model_name=mobilenetv3_small_100" in overrides


def test_steps_an_epoch_come_from_the_share_not_a_constant(tmp_path):
    assert ec.steps_per_epoch(5000) == 19 and ec.steps_per_epoch(20000) == 78
    assert ec.steps_per_epoch(20000, 128) == 156 and ec.STEPS_PER_EPOCH == 19
    regimes = scale.REGIMES
    assert [(r.images, r.steps_per_epoch) for r in regimes.values()] == [
        (5000, 19),
        (20000, 78),
        (5000, 19),
    ]
    assert scale.regime_rule(regimes["R2"]).steps_per_epoch == 78
    # the report's budget: 15 epochs x 78 steps x c_E (1 s) = 0.325 h; SimCLR 13 x 78 x 1.2 s
    r2 = regime_args(tmp_path, "R2")
    fixed = scale.study_arms(r2)
    text = "\n".join(ec_report.step_cost_lines(fixed))
    assert "| E | effssl | 15 | 15.000 | +0.000 | 0.1 | `lr=0.1,wu=0,ep=15` | 0.33 |" in text
    assert "| S | simclr | 13 | 12.500 | +0.500 | 0.133 | `lr=0.133,wu=0,ep=13` | 0.34 |" in text
    finished_run(r2.out, "effssl", "lr=0.1,wu=0,ep=15", 0, 30.0, None)  # 285 steps recorded
    records = ec_report.arm_records(r2, fixed["arms"])
    compute = "\n".join(ec_report.compute_lines(records, fixed))
    assert "| E | 1 | 285 | 0.08 | 3.7 |" in compute  # 285 steps: 285 / 78 EffSSL epochs


def test_the_unseen_reference_of_the_40_percent_share_follows_it(tmp_path):
    data = fake_cifar(tmp_path / "data")  # 40 a class: 10% = 4, 40% = 16, holdout 4
    args = regime_args(tmp_path, "R2", holdout=4, data_dir=data)
    images = fm.final_images(args, ["scale_r2"])
    assert images == fm.FinalImages(0.4, 0.1, 0.1)
    files, labels, digest = fm.unseen_reference(args, data, images)
    split = ev_data.prepare_split(data, 4, 0, [0.4, 0.1])
    manifest = json.loads((split / "manifest.json").read_text())
    names = {cls: sorted(pool[16:20]) for cls, pool in manifest["pool_order"].items()}
    assert digest == ev_data.names_digest(names) and len(files) == 40
    assert sorted(f"{f.parent.name}/{f.name}" for f in files) == sorted(
        f"{c}/{n}" for c, ns in names.items() for n in ns
    )
    assert all(f.parent.name == f"class{label}" for f, label in zip(files, labels, strict=True))
    for share in ("train_f0.4", "train_f0.1"):
        assert fm.unseen_problems(manifest, names, share) == []
    # protocol 02's rule (right after the run's share, as large) would take 16 a class
    default = fm.unseen_reference(args, data)
    assert len(default[0]) == 160 and default[2] != digest
    # a reference inside the 40% share is caught by the existing rules
    with pytest.raises(SystemExit, match="shares training images"):
        fm.unseen_reference(args, data, fm.FinalImages(0.1, 0.1, 0.1))
    # R3 and protocol 02: the images right after the 10% share
    assert fm.final_images(regime_args(tmp_path, "R3"), ["scale_r3"]) == (0.1, 0.1, 0.1)
    assert fm.final_images(study_args(tmp_path), ["equal_compute_short"]) == (0.1, 0.1, None)
    with pytest.raises(SystemExit, match="one regime's plan at a time"):
        fm.final_images(args, ["scale_r2", "scale_r3"])


def test_the_cifar_unseen_reference_of_r2_is_the_2001st_to_2500th_of_each_pool():
    files = {f"c{c}": [f"{i:04d}.jpg" for i in range(5000)] for c in range(10)}
    drawn = ev_data.draw_split(files, holdout=500, seed=0)
    pool = drawn["pool"]
    shares = {
        f"train_f{f:g}": {"names": {c: sorted(p[:n]) for c, p in pool.items()}}
        for f, n in ((0.1, 500), (0.4, 2000))
    }
    manifest = {"val": drawn["val"], "pool_order": pool, "shares": shares}
    r2 = scale.REGIMES["R2"]
    start = ev_data.share_per_class(r2.unseen_after, scale.CLASS_IMAGES)
    count = ev_data.share_per_class(r2.unseen_size, scale.CLASS_IMAGES)
    assert (start, count) == (2000, 500) and r2.unseen_words() == (
        "pool images 2,001-2,500 of each class"
    )
    names = fm.unseen_names(manifest, start, count)
    assert sum(map(len, names.values())) == 5000
    assert all(set(ns) == set(pool[c][2000:2500]) for c, ns in names.items())
    for share in shares:
        assert fm.unseen_problems(manifest, names, share) == []
    assert fm.unseen_problems(manifest, fm.unseen_names(manifest, 500, 500), "train_f0.4")
    assert scale.REGIMES["R3"].unseen_words() == ec_report.UNSEEN_WORDS  # protocol 02's


def checkpointed_run(out, variant: str, epochs: int):
    """A finished EffSSL run with its last epoch's checkpoint (Lightning counts from 0)."""
    run_dir = finished_run(out, "effssl", variant, 0, 30.0, None)
    ckpt = run_dir / "ckpt" / "effssl" / "20261205-x" / f"effssl-x-ep={epochs - 1}.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    return run_dir


@pytest.mark.parametrize("name", ["R2", "R3"])
def test_the_probe_trains_on_the_10_percent_share_in_every_regime(tmp_path, monkeypatch, name):
    data = fake_cifar(tmp_path / "data")
    args = regime_args(tmp_path, name, holdout=4, data_dir=data)
    run_dir = checkpointed_run(args.out, "lr=0.1,wu=0,ep=15", 15)
    used, probed = [], []
    monkeypatch.setattr(fm, "measure_sets", lambda a, d, images: used.append(images) or {"x": 1})
    monkeypatch.setattr(
        fm, "final_knn", lambda ckpt, sets: {"knn_own_top1": 1.0, "knn_unseen_top1": 2.0}
    )
    monkeypatch.setattr(fm, "run_probe", lambda a, cmd, d: probed.append(cmd) or {"val_acc1": 3.0})
    fm.final_measures(args)
    share = ev_data.split_dir(data, 4, 0) / "train_f0.1"
    assert share.is_dir() and len(probed) == 1
    assert f"data.train_path='{share}'" in probed[0]  # in R2 not the run's own 40% share
    assert f"data.val_path='{data / 'test'}'" in probed[0] and "data.fraction=-1" in probed[0]
    assert used == [fm.FinalImages(scale.REGIMES[name].unseen_after, 0.1, 0.1)]
    result = json.loads((run_dir / ec.FINAL_FILE).read_text())
    assert result["probe_train"] == "train_f0.1" and result["linear"] == {"val_acc1": 3.0}
    # protocol 02's probe keeps the pretraining run's own images (no train_path override)
    cmd = fm.linear_command(args, run_dir, run_dir, data / "test", -1, "linear_test")
    assert not any(str(a).startswith("data.train_path") for a in cmd)


def test_the_change_interval_matches_a_hand_computation_and_scipy():
    from scipy import stats as sps

    # four arms of n = 3 and variance 1: se = sqrt(4/3), df = (4/3)^2 / (4 (1/3)^2 / 2) = 8
    e, s, e1, s1 = [41.0, 42.0, 43.0], [38.0, 39.0, 40.0], [40.0, 41.0, 42.0], [39.0, 40.0, 41.0]
    change = stats.change_interval(e, s, e1, s1)
    half = 2.3060041 * math.sqrt(4 / 3)  # t(0.975, 8), tables
    assert change.diff == pytest.approx(2.0) and change.df == pytest.approx(8.0)
    assert (change.low, change.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert change.n == (3, 3, 3, 3)
    # unequal variances and sizes: the formula by hand
    e, s, e1, s1 = [40.1, 42.3, 44.0], [38.5, 39.0], [35.2, 35.9, 36.1, 34.0], [33.0, 36.5, 34.1]
    v = [statistics_var(x) / len(x) for x in (e, s, e1, s1)]
    df = sum(v) ** 2 / sum(vi**2 / (len(x) - 1) for vi, x in zip(v, (e, s, e1, s1), strict=True))
    diff = mean(e) - mean(s) - mean(e1) + mean(s1)
    half = float(sps.t.ppf(0.975, df)) * math.sqrt(sum(v))
    change = stats.change_interval(e, s, e1, s1)
    assert (change.diff, change.df) == (pytest.approx(diff), pytest.approx(df))
    assert (change.low, change.high) == (pytest.approx(diff - half), pytest.approx(diff + half))
    # S and S1 without spread: Welch's interval of E against E1 (scipy's), shifted
    a, b = [40.1, 42.3, 44.0, 39.2], [38.5, 39.0, 39.4]
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    change = stats.change_interval(a, [30.0, 30.0], b, [31.0, 31.0, 31.0])
    assert (change.low, change.high) == (pytest.approx(ci.low + 1), pytest.approx(ci.high + 1))
    # two terms are Welch's interval
    assert stats.contrast_interval([(1, a), (-1, b)]) == stats.welch_interval(a, b)
    assert stats.change_interval([1.0], s, e1, s1) is None  # an arm with n = 1
    assert stats.change_interval(*[[2.0, 2.0]] * 4) is None  # no spread anywhere


def statistics_var(values: list[float]) -> float:
    m = mean(values)
    return sum((x - m) ** 2 for x in values) / (len(values) - 1)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_the_change_interval_covers_the_true_change_about_95_percent_of_the_time():
    import numpy as np

    rng = np.random.default_rng(0)
    means, sds = (40.0, 38.0, 37.0, 36.0), (1.0, 2.0, 0.5, 3.0)
    true = means[0] - means[1] - means[2] + means[3]
    hits = naive = 0
    trials = 3000
    for _ in range(trials):
        arms = [list(rng.normal(m, sd, 3)) for m, sd in zip(means, sds, strict=True)]
        change = stats.change_interval(*arms)
        hits += change.low <= true <= change.high
        se = (change.high - change.low) / 2 / stats.t_quantile(0.95, change.df)
        naive += abs(change.diff - true) <= 1.96 * se
    assert 0.94 <= hits / trials <= 0.975
    assert naive / trials < 0.90  # the normal quantile, without the df, under-covers at n = 3


def fixed_r1(tmp_path):
    """Protocol 02's folder with its arms fixed (S-short 10 epochs) and runs: E-short and
    S-short seeds 0-3 (seed 3 is not R1's), an E-short-eq run (not R1's either)."""
    args = study_args(tmp_path / "p02")
    arms = ec.fixed_arms(args)["arms"]
    e, s = arms["E-short"]["variant"], arms["S-short"]["variant"]
    for seed in range(4):
        finished_run(
            args.out, "effssl", e, seed, 40.0, measures(45.0 + seed, 40.0 + seed, 50.0 + seed / 2)
        )
        finished_run(
            args.out, "simclr", s, seed, 38.0, measures(44.0, 39.0 + seed / 2, 49.0 + seed)
        )
    finished_run(args.out, "effssl", arms["E-short-eq"]["variant"], 0, 1.0, measures(1, 1, 1))
    return args.out


def test_the_report_works_on_partial_results_and_leaves_r1_alone(tmp_path):
    r1 = fixed_r1(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in r1.rglob("*")}
    r2 = regime_args(tmp_path, "R2")
    scale.study_arms(r2)
    root = r2.out.parent
    own_e, unseen_e, linear_e = [48.0, 50.0], [41.0, 42.5], [52.0, 51.0]
    for seed in range(2):
        finished_run(
            r2.out,
            "effssl",
            "lr=0.1,wu=0,ep=15",
            seed,
            40.0,
            measures(own_e[seed], unseen_e[seed], linear_e[seed]),
        )
    for seed, (unseen, linear) in enumerate([(39.0, 50.0), (40.0, 49.5), (39.5, 50.5)]):
        finished_run(
            r2.out, "simclr", "lr=0.133,wu=0,ep=13", seed, 38.0, measures(46.0, unseen, linear)
        )
    finished_run(r2.out, "effssl", "lr=0.1,wu=0,ep=15", 2, 41.0, None)  # measures to come
    path = scale_report.scale_report(root, r1)
    text = path.read_text()
    assert path == root / "report.md" and (root / "scale.png").stat().st_size > 0
    assert {p: p.stat().st_mtime_ns for p in r1.rglob("*")} == before  # R1 is only read
    assert "**Interim report**" in text and "R2 E: n = 2" in text and "R3 S: n = 0" in text
    assert "R1 E: n = 3" in text  # seeds 0-2 of protocol 02's E-short, not its seed 3
    welch = stats.welch_interval(unseen_e, [39.0, 40.0, 39.5])
    assert (
        "| R2, mobilenetv3_small_100, 40% share | kNN, unseen reference | E (15 ep) | S (13 ep) "
        "| s0: 41.00, s1: 42.50 | s0: 39.00, s1: 40.00, s2: 39.50 | 2 / 3 |"
    ) in text
    assert f"| +2.25 | [{welch.low:+.2f}, {welch.high:+.2f}] (df {welch.df:.1f}) |" in text
    assert "| R3 | (arms not fixed yet" in text
    # the change of the advantage R2 - R1 from the four arms (R1: seeds 0-2)
    r1_e, r1_s = [40.0, 41.0, 42.0], [39.0, 39.5, 40.0]
    change = stats.change_interval(unseen_e, [39.0, 40.0, 39.5], r1_e, r1_s)
    row = next(ln for ln in text.splitlines() if ln.startswith("| R2 - R1 | kNN, unseen"))
    assert row == (
        f"| R2 - R1 | kNN, unseen reference | +2.25 | +1.50 | 2/3/3/3 | +0.75 | "
        f"[{change.low:+.2f}, {change.high:+.2f}] | {change.df:.1f} | no change shown |"
    )
    own = next(ln for ln in text.splitlines() if ln.startswith("| R2 - R1 | kNN, own"))
    assert own.endswith("| no verdict: R2's own reference is 20,000 images, R1's 5,000 |")
    r3 = next(ln for ln in text.splitlines() if ln.startswith("| R3 - R1 | linear"))
    assert r3.endswith("| no interval yet (an arm with n < 2 or no spread) |")
    assert "pool images 2,001-2,500 of each class" in text and "| 78 | 15 | 13 (12.500) |" in text
    assert "### R2: compute spent" in text and "### R1: compute spent" not in text
    assert "## Deviations (from the protocol)" in text


def test_the_change_verdicts_and_an_empty_report(tmp_path):
    interval = stats.Interval(2.0, 0.5, 3.5, 8.0, (3, 3, 3, 3))
    assert scale_report.change_verdict("R3", "linear", interval) == "the advantage grows"
    shrinks = interval._replace(low=-3.5, high=-0.2)
    assert scale_report.change_verdict("R2", "knn_unseen", shrinks) == "the advantage shrinks"
    assert scale_report.change_verdict("R2", "linear", interval._replace(low=-0.1)) == (
        "no change shown"
    )
    assert scale_report.change_verdict("R2", "knn_own", interval).startswith("no verdict")
    # nothing at all yet: no protocol 02 arms, no regime folder
    text = scale_report.scale_report(tmp_path, tmp_path / "nowhere").read_text()
    assert "R1 E: n = 0" in text and text.count("(arms not fixed yet") == 3
    # the study's report of a regime folder writes the protocol's report of the root
    r1 = fixed_r1(tmp_path)
    r3 = regime_args(tmp_path, "R3")
    scale.study_arms(r3)
    r3.equal_compute = r1
    scale_report.protocol_report(r3)
    assert "| R3, resnet18, 10% share | linear probe |" in (r3.out.parent / "report.md").read_text()
    assert not (r1 / ec_report.REPORT_FILE).exists()


def test_the_runner_orders_the_regimes_and_measures_each_step_cost_only_when_idle(tmp_path):
    script = REPO / "benchmarks" / "study_scale.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert text.splitlines()[1].startswith("# Issue 27, point 6")  # the usage at the top
    calls = [ln for ln in text.splitlines() if ln.startswith("regime ")]
    assert calls == ["regime R2 || exit 1", "regime R3 || exit 1"]  # R2 before R3
    assert "for seed in 0 1 2; do" in text and "--holdout 500" in text and "--threads 1" in text
    assert 'measure_step_cost "$out" "$cost" "${cost_options[@]}"' in text
    # the settings the runner reads (python -m evidence.scale <regime>) are REGIMES' own
    for name, plan in (("R2", "scale_r2"), ("R3", "scale_r3")):
        regime = scale.REGIMES[name]
        got = subprocess.run(
            [sys.executable, "-m", "evidence.scale", name],
            cwd=REPO / "benchmarks",
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        assert got[0].split() == [plan, str(regime.fraction), regime.model, str(regime.negatives)]
        expected = scale.step_cost_command(regime).split("step_cost.py ")[1]
        assert got[1] == expected.removesuffix(" --out <out>"), (got, expected)
        assert f"--samples {regime.images} " in got[1] and f"--model {regime.model} " in got[1]
    unknown = subprocess.run(
        [sys.executable, "-m", "evidence.scale", "R1"],
        cwd=REPO / "benchmarks",
        capture_output=True,
        text=True,
    )
    assert unknown.returncode != 0 and "usage" in unknown.stderr
    path = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "ROOT": str(tmp_path / "scale"), "IDLE": "0", "PATH": path}
    proc = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "otherwise idle" in proc.stdout, proc.stdout + proc.stderr
    assert not list((tmp_path / "scale").rglob("*.csv"))
    # a regime with runs but no step cost is never measured afterwards, even when idle
    (tmp_path / "scale" / "R2" / "runs").mkdir(parents=True)
    env["IDLE"] = "1"
    proc = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "before\nthe regime's first run" in proc.stdout, proc.stdout
    assert not (tmp_path / "scale" / "R2" / "step_cost.log").exists()
    # PAUSE at the root stops before the first step
    (tmp_path / "scale" / "PAUSE").touch()
    proc = subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "PAUSE present" in proc.stdout, proc.stdout + proc.stderr


def test_the_shared_step_cost_measurement_runs_once_and_logs_its_conditions(tmp_path):
    out, csv = tmp_path / "out", tmp_path / "out" / "cost.csv"
    body = (
        f". {REPO / 'benchmarks' / 'study_common.sh'}; set -o pipefail; "
        'python() { echo "$@" > "$OUT/args"; echo rows > "$CSV"; }; '
        'measure_step_cost "$OUT" "$CSV" --model m --samples 7'
    )
    env = {**os.environ, "OUT": str(out), "CSV": str(csv)}

    def run(idle: str) -> subprocess.CompletedProcess:
        env["IDLE"] = idle
        return subprocess.run(
            ["bash", "-c", body], cwd=REPO, env=env, capture_output=True, text=True
        )

    refused = run("0")
    assert refused.returncode == 1 and "otherwise idle" in refused.stdout and not out.exists()
    done = run("1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "args").read_text().split() == [
        "benchmarks/step_cost.py",
        "--model",
        "m",
        "--samples",
        "7",
        "--out",
        str(out),
    ]
    log = (out / "step_cost.log").read_text()
    assert "step cost, commit" in log and "load before:" in log and "load after:" in log
    (out / "args").unlink()
    assert run("0").returncode == 0 and not (out / "args").exists()  # measured: not again
