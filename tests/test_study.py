"""The evidence study (benchmarks/study.py, the command line over the benchmarks/evidence/
package): resumable bookkeeping and the report rebuilt from whatever finished, on synthetic
results (no training); one slow end-to-end run of the launcher worker."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from evidence import (  # noqa: E402
    comparisons,
    evaluation,
    launcher,
    official,
    orchestration,
    report,
    search,
    stats,
)
from evidence import data as ev_data  # noqa: E402
from evidence import plans as ev_plans  # noqa: E402
from evidence import runs as ev_runs  # noqa: E402


def make_args(out, **kw) -> argparse.Namespace:
    base = dict(
        out=out,
        fraction=0.1,
        model="m",
        batch=64,
        epochs=10,
        eval_epochs=[5, 10],
        negatives=-1,
        effssl_overrides=[],
        machine="cpu",
        stop_after=None,
        holdout=0,
        split_seed=0,
        eval_set="test",
    )
    return argparse.Namespace(**{**base, **kw})


def add_run(out, method, variant, seed, values, epochs=(5, 10)) -> None:
    run_dir = out / "runs" / ev_runs.run_name(method, variant, seed)
    run_dir.mkdir(parents=True)
    log = ev_runs.EvalLog(run_dir)
    for i, (epoch, top1) in enumerate(zip(epochs, values, strict=False)):
        log.add(epoch=epoch, train_s=60.0 * (i + 1), steps=epoch * 10, knn_top1=top1, knn_top5=90)


def test_run_names_round_trip_for_every_variant_and_the_report_reads_them_back(tmp_path):
    for variant in [*ev_plans.VARIANTS, ev_plans.OFFICIAL_LIKE_PLUGIN]:
        name = ev_runs.run_name("mocov2plus", variant, 3)
        assert ev_runs.parse_run_name(name) == ("mocov2plus", variant, 3)
    variant = "queue=4096,tau=0.96"  # two "=": the report once read it as "queue=4096,tau-0.96"
    add_run(tmp_path, "mocov2plus", variant, 0, [20.0])
    args = make_args(tmp_path)
    assert set(report.collect(args)) == {("mocov2plus", variant)}


def test_eval_log_replaces_a_repeated_epoch_and_keeps_epoch_order(tmp_path):
    log = ev_runs.EvalLog(tmp_path)
    log.add(epoch=10, train_s=100, steps=1, knn_top1=30, knn_top5=80)
    log.add(epoch=5, train_s=50, steps=1, knn_top1=20, knn_top5=70)
    log.add(epoch=10, train_s=110, steps=2, knn_top1=31, knn_top5=81)  # epoch redone on resume
    rows = log.rows()
    assert [int(r["epoch"]) for r in rows] == [5, 10]
    assert float(rows[1]["knn_top1"]) == 31
    # resuming after 7 epochs: the time after epoch 7, else the last evaluation before it
    assert log.train_seconds_at(7) == 50 and log.train_seconds_at(4) == 0
    for epoch, seconds in ((6, 61.0), (7, 70.5), (8, 80.0), (7, 71.0)):  # epoch 7 done twice
        log.add_time(epoch, seconds)
    assert log.train_seconds_at(7) == 71.0 and log.train_seconds_at(0) == 0


def test_finished_needs_the_last_evaluation(tmp_path):
    args = make_args(tmp_path)
    add_run(tmp_path, "effssl", "default", 0, [20], epochs=(5,))
    assert not ev_runs.finished(args, "effssl", "default", 0)
    ev_runs.EvalLog(tmp_path / "runs" / ev_runs.run_name("effssl", "default", 0)).add(
        epoch=10, train_s=1, steps=1, knn_top1=1, knn_top5=1
    )
    assert ev_runs.finished(args, "effssl", "default", 0)
    assert not ev_runs.finished(args, "effssl", "default", 1)


def test_stop_after_counts_a_run_done_at_that_epoch_and_reaches_the_workers(tmp_path, monkeypatch):
    args = make_args(tmp_path, stop_after=5, plan=["main"], seeds=[0], workers=1)
    args.data_dir, args.official_src = tmp_path, None
    add_run(tmp_path, "effssl", "default", 0, [20], epochs=(5,))
    assert ev_runs.finished(args, "effssl", "default", 0)  # done through epoch 5 of 10
    assert not ev_runs.finished(make_args(tmp_path), "effssl", "default", 0)  # continued later
    assert ev_runs.last_epoch(make_args(tmp_path, stop_after=50)) == 10  # never past --epochs
    started = []

    def fake_run(cmd, **kwargs):
        started.append(cmd)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(orchestration, "report", lambda args: None)
    orchestration.run_all(args)
    (cmd,) = started  # effssl seed 0 was skipped: only simclr ran
    assert cmd[cmd.index("--method") + 1] == "simclr"
    assert cmd[cmd.index("--stop-after") + 1] == "5"


def test_linear_probes_skip_finished_runs_without_a_local_checkpoint(tmp_path, monkeypatch, capsys):
    args = make_args(tmp_path, plan=["main"], seeds=[0], workers=1, linear_epochs=1)
    args.data_dir = tmp_path
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
    add_run(tmp_path, "effssl", "default", 0, [20, 30])  # finished, checkpoint kept elsewhere
    add_run(tmp_path, "simclr", "default", 0, [20, 30])
    encoder = tmp_path / "runs" / ev_runs.run_name("simclr", "default", 0) / "ckpt" / "simclr" / "x"
    encoder.mkdir(parents=True)
    started = []

    def fake_run(cmd, **kwargs):
        started.append(cmd)
        return SimpleNamespace(returncode=0, stdout="Final: val_acc1=41.5, val_acc5=90.0\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    evaluation.linear_probes(args)
    (cmd,) = started
    assert f"pretrained_feature_extractor='{encoder}'" in cmd
    assert "effssl__default__s0: skipped, no checkpoint here" in capsys.readouterr().out
    assert json.loads((encoder.parents[2] / "linear.json").read_text())["val_acc1"] == 41.5


def test_settings_of_another_study_are_refused(tmp_path):
    orchestration.write_settings(make_args(tmp_path))
    orchestration.write_settings(make_args(tmp_path))  # same settings: fine
    assert "machine" not in json.loads((tmp_path / "settings.json").read_text())  # cpu: implied
    with pytest.raises(SystemExit, match="other settings"):
        orchestration.write_settings(make_args(tmp_path, batch=256))
    with pytest.raises(SystemExit, match="other settings"):
        orchestration.write_settings(make_args(tmp_path, machine="auto"))


def test_effssl_runs_pin_the_grad_baseline_and_variants_override_it(tmp_path):
    from omegaconf import OmegaConf

    def composed(method: str, variant: str):
        from hydra import compose, initialize_config_module

        args = make_args(tmp_path, method=method, variant=variant, seed=1, workers=0)
        args.effssl_overrides = ["optimizer.lr=0.1"]
        overrides = launcher.launcher_overrides(args, tmp_path, tmp_path / "run")
        with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
            return OmegaConf.to_container(compose(method, overrides=overrides))

    default = composed("effssl", "default")
    assert default["method_kwargs"]["bank_update"] == "grad"  # whatever the package default
    assert default["optimizer"]["lr"] == 0.1 and default["seed"] == 1
    assert composed("effssl", "bank_update=ema")["method_kwargs"]["bank_update"] == "ema"
    assert composed("effssl", "kl_weight=0")["method_kwargs"]["bank_update"] == "grad"
    assert composed("simclr", "default")["optimizer"]["lr"] != 0.1  # effssl overrides only
    # every study run names solo-learn's PIL pipeline, whatever the preset's default; protocol
    # 04's variants name their own, and win
    assert default["data"]["pipeline"] == composed("simclr", "default")["data"]["pipeline"] == "pil"
    tensor = composed("effssl", "lr=0.1,wu=0,pipeline=tensor")["data"]["pipeline"]
    assert tensor == "tensor"
    assert comparisons.label("effssl", "default") == "effssl (grad)"


def test_every_planned_launcher_run_composes_with_its_variant_applied(tmp_path):
    """A typo in a variant (a key the method's config lacks) fails here, not hours into a run."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    runs = {run for plan in ev_plans.PLANS.values() for run in plan if run[0] != "official"}
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        for method, variant in sorted(runs):
            args = make_args(tmp_path, method=method, variant=variant, seed=0, workers=0)
            run_dir = tmp_path / "runs" / ev_runs.run_name(method, variant, 0)  # the real name
            overrides = launcher.launcher_overrides(args, tmp_path, run_dir)
            cfg = compose(method, overrides=overrides)
            assert cfg.checkpoint.dir == str(run_dir / "ckpt")
            for override in ev_plans.VARIANTS[variant]:
                key, value = override.lstrip("+").split("=", 1)
                got = str(OmegaConf.select(cfg, key)).lower()
                try:  # numbers compare as numbers (1e-5 composes to 1e-05)
                    assert float(got) == float(value), (method, override)
                except ValueError:
                    assert got == value.lower(), (method, override)
    assert ("mocov2plus", "queue=4096") in runs and ("byol", "lr=0.2") in runs
    searched = {run for m in search.SEARCH_LR for run in ev_plans.PLANS[f"lr_{m}"]}
    assert searched <= runs and len(searched) == 3 * len(search.SEARCH_LR)


def test_every_search_arm_composes_with_its_learning_rate_and_no_warm_up(tmp_path):
    """Protocol 01's arms, the grid and its one-step extensions: each composes (the baseline
    configs state ``scheduler.warmup_epochs``, so the override is accepted) with the method's
    current learning rate x its factor, warm-up 0 and the other settings unchanged."""
    from hydra import compose, initialize_config_module

    factors = (*search.SEARCH_FACTORS, *search.SEARCH_EXTENSION.values())
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        for method in search.SEARCH_LR:
            recipe = compose(method, overrides=["machine=cpu"])
            for factor in factors:
                variant = search.search_variant(method, factor)
                args = make_args(tmp_path, method=method, variant=variant, seed=0, workers=0)
                run_dir = tmp_path / "runs" / ev_runs.run_name(method, variant, 0)
                assert ev_runs.parse_run_name(run_dir.name) == (method, variant, 0)
                cfg = compose(
                    method, overrides=launcher.launcher_overrides(args, tmp_path, run_dir)
                )
                assert cfg.optimizer.lr == pytest.approx(
                    search.SEARCH_LR[method] * factor, rel=5e-3
                )
                assert cfg.scheduler.warmup_epochs == 0
                assert cfg.optimizer.name == recipe.optimizer.name  # only the lr searched
                assert cfg.scheduler.interval == recipe.scheduler.interval
                if method == "effssl":
                    assert cfg.method_kwargs.bank_update == "grad"  # EFFSSL_BASE
                if method == "mocov2plus":
                    assert cfg.method_kwargs.queue_size == 4096
    # the grid is x1/3, x1, x3 of today's value, the value itself in the middle
    assert [search.search_lr("simclr", f) for f in search.SEARCH_FACTORS] == [0.133, 0.4, 1.2]
    assert [search.search_lr("effssl", f) for f in search.SEARCH_FACTORS] == [0.0333, 0.1, 0.3]
    assert ev_plans.PLANS["lr_search"][:3] == ev_plans.PLANS["lr_simclr"]  # simclr first


def test_the_search_rule_picks_the_best_and_breaks_ties_towards_the_current_value():
    choice = search.search_choice
    assert choice({0.1: 30.0, 0.3: 33.0, 1.0: 31.0}, 0.3)[0] == 0.3
    assert choice({0.1: 35.0, 0.3: 33.0, 1.0: 31.0}, 0.3)[0] == 0.1  # by more than the margin
    lr, why = choice({0.1: 33.9, 0.3: 33.0, 1.0: 31.0}, 0.3)  # within 1 point: the current
    assert lr == 0.3 and "tied" in why
    assert choice({0.1: 33.0, 0.3: 20.0, 0.9: 33.5}, 0.3)[0] == 0.1  # equally far: the lower
    # x1/3 and x3 equally far although rounded to 3 digits (0.333 is not 1/3): the lower
    lr, why = choice({0.333: 23.86, 1.0: 20.80, 3.0: 23.98}, 1.0)
    assert lr == 0.333 and why.endswith("as close to the current 1 as 3: the lower")
    assert choice({0.0444: 36.88, 0.133: 36.96, 0.4: 33.06}, 0.4)[0] == 0.133  # 1 step, not 2
    assert choice({0.1: None, 0.3: float("nan"), 0.9: 25.0}, 0.3)[0] == 0.9  # diverged: no score
    assert choice({0.1: None}, 0.3) == (None, "no run finished with a finite score")


def test_the_search_extends_past_an_edge_of_the_grid_once():
    grid = [search.search_lr("simclr", f) for f in search.SEARCH_FACTORS]  # 0.133, 0.4, 1.2
    ext = search.search_extension
    assert ext("simclr", dict(zip(grid, [30.0, 33.0, 31.0], strict=True))) is None
    assert ext("simclr", dict(zip(grid, [30.0, 31.0, 33.0], strict=True))) == "lr=3.6,wu=0"
    assert ext("simclr", dict(zip(grid, [34.0, 31.0, 30.0], strict=True))) == "lr=0.0444,wu=0"
    assert ext("simclr", dict(zip(grid[:2], [30.0, 33.0], strict=True))) is None  # unfinished
    ran = dict(zip(grid, [30.0, 31.0, 33.0], strict=True)) | {3.6: 20.0}
    assert ext("simclr", ran) is None  # once only
    byol = [search.search_lr("byol", f) for f in search.SEARCH_FACTORS]  # 0.333, 1, 3
    assert ext("byol", dict(zip(byol, [23.86, 20.80, 23.98], strict=True))) == "lr=0.111,wu=0"
    assert search.search_choice(ran, 0.4)[0] == 1.2


def test_a_finished_search_grid_runs_its_extension_after_it(tmp_path, monkeypatch):
    args = make_args(tmp_path, plan=["lr_simclr"], seeds=[0], workers=1, epochs=10)
    args.data_dir, args.official_src = tmp_path, None
    for factor, top1 in zip(search.SEARCH_FACTORS, [30.0, 31.0, 33.0], strict=True):
        add_run(tmp_path, "simclr", search.search_variant("simclr", factor), 0, [20.0, top1])
    started = []

    def fake_run(cmd, **kwargs):
        started.append(cmd[cmd.index("--variant") + 1])
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(orchestration, "report", lambda args: None)
    orchestration.run_all(args)
    assert started == ["lr=3.6,wu=0"]
    # a diverged run is over (not restarted) and has no score
    diverged = tmp_path / "runs" / ev_runs.run_name("simclr", "lr=3.6,wu=0", 0)
    diverged.mkdir()
    (diverged / ev_runs.DIVERGED).write_text("non-finite loss\n")
    assert ev_runs.finished(args, "simclr", "lr=3.6,wu=0", 0)
    assert search.search_scores(args, "simclr")[3.6] is None
    started.clear()
    orchestration.run_all(args)
    assert started == []


def fake_cifar(root, classes=10, per_class=40):
    """A training folder of distinct small files (the split only links and hashes them)."""
    for c in range(classes):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            (d / f"{i:04d}.jpg").write_bytes(f"{c}-{i}".encode())
    (root / "test" / "class0").mkdir(parents=True)
    return root


def test_the_validation_split_is_stratified_disjoint_from_every_share_and_verified(tmp_path):
    data = fake_cifar(tmp_path / "data")
    out = ev_data.prepare_split(data, holdout=4, seed=0, fractions=[0.1, 0.4])
    val, pool = ev_data.folder_names(out / "val"), ev_data.folder_names(out / "trainpool")
    small, large = (
        ev_data.folder_names(out / "train_f0.1"),
        ev_data.folder_names(out / "train_f0.4"),
    )
    train = ev_data.folder_names(data / "train")
    assert sorted(val) == sorted(train)  # every class folder in every split folder
    for cls in train:
        assert len(val[cls]) == 4 and len(small[cls]) == 4 and len(large[cls]) == 16
        assert sorted(val[cls] + pool[cls]) == train[cls]  # a partition of the class
        assert not set(val[cls]) & set(large[cls]) and not set(val[cls]) & set(small[cls])
        assert set(small[cls]) <= set(large[cls]) <= set(pool[cls])  # nested shares
    # hard links of the extracted images, same bytes
    some = next(iter(val["class3"]))
    assert (out / "val" / "class3" / some).read_bytes() == (
        data / "train/class3" / some
    ).read_bytes()
    summary = ev_data.verify_split(out)
    assert summary["val_images"] == 40 and summary["trainpool_images"] == 360
    assert summary["shares"]["train_f0.1"]["images"] == 40
    # the same call again verifies and keeps the split; another seed draws another one
    assert ev_data.prepare_split(data, 4, 0, [0.1]) == out
    assert ev_data.verify_split(out) == summary
    other = ev_data.verify_split(ev_data.prepare_split(data, 4, 1, [0.1]))
    assert other["val_sha256"] != summary["val_sha256"]
    # a validation image in a training share, or a missing one, is caught
    shutil_copy = (out / "val" / "class3" / some).read_bytes()
    (out / "train_f0.1" / "class3" / some).write_bytes(shutil_copy)
    with pytest.raises(SystemExit, match="train_f0.1/ differs"):
        ev_data.verify_split(out)
    (out / "train_f0.1" / "class3" / some).unlink()
    (out / "val" / "class3" / some).unlink()
    with pytest.raises(SystemExit, match="val/ differs"):
        ev_data.verify_split(out)


def test_the_split_of_cifar10_sizes_leaves_room_for_the_10_and_40_percent_shares():
    files = {f"c{c}": [f"{i:04d}.jpg" for i in range(5000)] for c in range(10)}
    drawn = ev_data.draw_split(files, holdout=500, seed=0)
    assert drawn == ev_data.draw_split(files, holdout=500, seed=0)  # fixed by the seed
    for cls in files:
        val, pool = set(drawn["val"][cls]), drawn["pool"][cls]
        assert len(val) == 500 and len(pool) == 4500 and not val & set(pool)
        assert not val & set(pool[: ev_data.share_per_class(0.4, 5000)])  # 2,000 a class
    assert ev_data.share_per_class(0.1, 5000) == 500
    with pytest.raises(ValueError, match="does not fit"):
        ev_data.draw_split(files, holdout=5000, seed=0)


def test_the_study_trains_on_its_share_and_evaluates_on_val_only_when_asked(tmp_path):
    data = fake_cifar(tmp_path / "data")
    args = make_args(tmp_path / "out", holdout=4, split_seed=0, eval_set="val", workers=0)
    train_dir, fraction, eval_dir = ev_data.study_data(args, data)
    assert (train_dir.name, fraction, eval_dir.name) == ("train_f0.1", -1, "val")
    args.method, args.variant, args.seed = "simclr", "default", 0
    overrides = launcher.launcher_overrides(args, data, tmp_path / "run")
    assert f"data.train_path='{train_dir}'" in overrides and "data.fraction=-1" in overrides
    args.eval_set = "test"
    assert ev_data.study_data(args, data)[2] == data / "test"
    # without a holdout: solo-learn's fraction of all training images, as before; no val
    old = make_args(tmp_path / "out")
    assert ev_data.study_data(old, data) == (data / "train", 0.1, data / "test")
    with pytest.raises(SystemExit, match="needs --holdout"):
        ev_data.study_data(make_args(tmp_path, eval_set="val"), data)
    # the settings record the split and the evaluation set; the workers get them
    args.eval_set, args.out = "val", tmp_path / "out"
    args.out.mkdir()
    orchestration.write_settings(args)
    settings = json.loads((args.out / "settings.json").read_text())
    assert (settings["holdout"], settings["split_seed"], settings["eval_set"]) == (4, 0, "val")
    args.stop_after, args.official_src, args.data_dir, args.threads = None, None, data, 1
    argv = orchestration.common_argv(args)
    for flag, value in (("--holdout", "4"), ("--eval-set", "val"), ("--threads", "1")):
        assert argv[argv.index(flag) + 1] == value
    args.data_dir = data
    ev_data.prepare_study_data(args)
    recorded = json.loads((args.out / "split.json").read_text())
    assert recorded["val_images"] == 40 and "train_f0.1" in recorded["shares"]
    args.split_seed = 1
    with pytest.raises(SystemExit, match="another split"):
        ev_data.prepare_study_data(args)


def test_workers_set_their_threads_and_record_code_and_import_paths(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        assert ev_runs.set_threads(SimpleNamespace(threads=1)) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    ev_runs.record_start(tmp_path, threads=1)
    first, second, third = (tmp_path / "starts.log").read_text().splitlines()
    # the full hash, then ':' (clean tree) or ' (uncommitted changes):'
    assert re.search(r" commit [0-9a-f]{40}( \(uncommitted changes\))?: ", first), first
    assert "effssl_plugin /" in second and "torch threads 1" in second
    # the machine: its CPU model, its CPUs and torch's version
    assert third.startswith("    machine ") and f", {os.cpu_count()} cpus, " in third, third
    assert third.endswith(f"torch {torch.__version__}"), third


def test_report_aggregates_seeds_and_marks_unfinished_runs(tmp_path):
    pytest.importorskip("matplotlib")
    args = make_args(tmp_path)
    orchestration.write_settings(args)
    for seed, v in enumerate([40.0, 42.0, 47.0]):
        add_run(tmp_path, "effssl", "default", seed, [30.0, v])
    add_run(tmp_path, "simclr", "default", 0, [35.0], epochs=(5,))  # interrupted
    for seed, seconds in ((0, 1000.0), (1, 800.0)):  # seed 2 and simclr: no time.csv
        log = ev_runs.EvalLog(tmp_path / "runs" / ev_runs.run_name("effssl", "default", seed))
        log.add_time(5, seconds / 2)
        log.add_time(10, seconds)
    (tmp_path / "runs" / ev_runs.run_name("effssl", "default", 1) / "linear.json").write_text(
        json.dumps({"val_acc1": 50.5})
    )
    report.report(args)
    text = (tmp_path / "report.md").read_text()
    mean, std = statistics.fmean([40, 42, 47]), statistics.stdev([40, 42, 47])
    assert f"| effssl (grad) | 3 | 10 | {mean:.2f} +- {std:.2f} | 40.00, 42.00, 47.00 |" in text
    assert "| simclr | 1 | 5 (unfinished) | 35.00 +- 0.00 |" in text
    assert "50.50 +- 0.00 (n=1)" in text
    assert "Compute so far: 0.5 h of training wall-clock over 4 runs" in text
    assert (tmp_path / "study.png").stat().st_size > 0


def test_clipped_seconds_caps_disturbed_epochs_only():
    # epoch 1 holds start-up (kept raw); epochs of 10 s, except epoch 4 (disturbed: 40 s)
    points = [(1, 25.0), (2, 35.0), (3, 45.0), (4, 85.0), (5, 95.0)]
    clipped = stats.clipped_seconds(points)
    assert clipped[1] == 25.0 and clipped[3] == 45.0
    assert clipped[4] == pytest.approx(45.0 + stats.CLIP_FACTOR * 10.0)
    assert clipped[5] == pytest.approx(clipped[4] + 10.0)
    # an undisturbed run is unchanged
    even = [(e, 10.0 * e) for e in range(1, 8)]
    assert stats.clipped_seconds(even) == dict(even)


def test_time_points_keep_the_last_record_of_a_resumed_epoch(tmp_path):
    log = ev_runs.EvalLog(tmp_path)
    for epoch, seconds in ((1, 10.0), (2, 20.0), (2, 21.0), (3, 31.0)):
        log.add_time(epoch, seconds)
    assert log.time_points() == [(1, 10.0), (2, 21.0), (3, 31.0)]


def test_a_difference_is_called_only_when_seeds_separate_beyond_the_spread():
    assert stats.separated([44.0, 43.0, 45.0], [40.0, 41.0, 39.5]) == "A > B"
    assert stats.separated([40.0, 41.0, 39.5], [44.0, 43.0, 45.0]) == "B > A"
    # means 2 apart but one seed of A below one of B: ranges overlap
    assert stats.separated([44.0, 41.5, 44.5], [41.0, 42.0, 40.0]) == "not separated"
    # seeds separate but the gap is smaller than the spread
    assert stats.separated([43.0, 44.0, 51.0], [42.0, 42.5, 42.9]) == "not separated"
    assert stats.separated([44.0, 45.0], [40.0, 41.0]) == "too few seeds"


def test_interpolation_and_first_reaching_epoch():
    rows = [
        {"epoch": 5.0, "clipped_s": 100.0, "knn_top1": 30.0},
        {"epoch": 10.0, "clipped_s": 200.0, "knn_top1": 40.0},
    ]
    assert stats.interpolate(rows, "clipped_s", 150.0) == pytest.approx(35.0)
    assert stats.interpolate(rows, "clipped_s", 50.0) is None  # before the first evaluation
    assert stats.interpolate(rows, "clipped_s", 500.0) == 40.0  # finished: keeps its value
    assert stats.first_reaching(rows, 36.0) == pytest.approx(8.0)
    assert stats.first_reaching(rows, 25.0) == 5.0
    assert stats.first_reaching(rows, 41.0) is None


def test_mid_schedule_readings_are_shown_without_a_verdict():
    def run(final_s: float, top1: float) -> list[dict]:
        return [
            {"epoch": 5.0, "clipped_s": final_s / 2, "knn_top1": top1 - 10},
            {"epoch": 10.0, "clipped_s": final_s, "knn_top1": top1},
        ]

    runs = {
        ("effssl", "default"): {s: run(100.0, 40.0 + s) for s in range(3)},
        ("simclr", "default"): {s: run(200.0, 40.0 + s) for s in range(3)},
        ("byol", "default"): {0: run(200.0, 40.0)[:1]},  # unfinished: left out
    }
    lines = "\n".join(comparisons.comparison_lines(runs, epochs=10))
    assert "| effssl (grad) | simclr | kNN at epoch 10 | 41.00 +- 1.00 (n=3) | 41.00" in lines
    # at 100 s (1.7 min) simclr is half-way: 10 points lower on every seed, beyond the spread,
    # but read mid-schedule, so the row is labelled and gets no verdict (issue 27)
    assert (
        "kNN at 1.7 min (the longer arm mid-schedule) | 41.00 +- 1.00 (n=3) | "
        "31.00 +- 1.00 (n=3) | +10.00 | no verdict: mid-schedule reading |"
    ) in lines
    assert "A > B" not in lines  # nor at epoch 10, where the arms are level
    assert "byol" not in lines


def test_epochs_to_reach_use_a_level_every_seed_reaches():
    def run(top1_at_5: float, top1_at_10: float) -> list[dict]:
        return [
            {"epoch": 5.0, "clipped_s": 50.0, "knn_top1": top1_at_5},
            {"epoch": 10.0, "clipped_s": 100.0, "knn_top1": top1_at_10},
        ]

    runs = {  # fast reaches 38 (the slow arm's lowest final) at epoch 5 + 5 * 8 / 10 = 9
        ("effssl", "default"): {s: run(30.0, 40.0) for s in range(3)},
        ("effssl", "kl_weight=0"): {0: run(20.0, 38.0), 1: run(20.0, 39.0), 2: run(20.0, 40.0)},
    }
    lines = "\n".join(comparisons.comparison_lines(runs, epochs=10))
    assert "epochs to kNN 38.0 (lower is better) | 9.00 +- 0.00 (n=3) |" in lines
    # slow: 10, 5 + 5 * 18 / 19 and 9.5 epochs; more epochs (B > A) is the slower arm
    assert "| 9.75 +- 0.25 (n=3) | -0.75 | B > A |" in lines


def test_equal_step_cost_reads_the_costlier_arm_where_its_steps_cost_the_cheaper_run(
    tmp_path, monkeypatch
):
    costs = tmp_path / "step_cost.csv"  # step_cost.py's columns, the ones read here
    costs.write_text("method,views,median_s_per_step\neffssl,1,1.25\neffssl-proj512,1,1.0\n")
    monkeypatch.setattr(comparisons, "STEP_COST_CSV", costs)

    def run(top1_at_5: float, top1_at_10: float) -> list[dict]:
        return [
            {"epoch": 5.0, "clipped_s": 50.0, "knn_top1": top1_at_5},
            {"epoch": 10.0, "clipped_s": 100.0, "knn_top1": top1_at_10},
        ]

    runs = {
        ("effssl", "default"): {s: run(30.0 + s, 40.0 + s) for s in range(3)},
        ("effssl", "proj=512"): {s: run(20.0, 35.0 + s) for s in range(3)},
    }
    # 10 epochs of the cheap head (1.0 s a step) cost what 8 of the default (1.25 s) do,
    # where the default is at 30 + 10 * 3 / 5 = 36 (+ the seed mean's 1)
    lines = "\n".join(comparisons.comparison_lines(runs, epochs=10))
    what = "kNN at equal step cost (A at epoch 8.0, B at 10)"
    assert f"{what} | 37.00 +- 1.00 (n=3)" in lines
    assert "| 36.00 +- 1.00 (n=3) |" in lines.split("equal step cost")[1]


def test_a_failed_run_does_not_stop_the_others_but_fails_the_command(tmp_path, monkeypatch):
    args = make_args(tmp_path, plan=["main"], seeds=[0], workers=1, data_dir=tmp_path)
    args.official_src = None
    started = []

    def fake_run(cmd, **kwargs):
        started.append(cmd[cmd.index("--method") + 1])
        return SimpleNamespace(returncode=1 if started[-1] == "effssl" else 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(orchestration, "report", lambda args: None)
    with pytest.raises(SystemExit, match=r"failed: effssl__default__s0 \(see "):
        orchestration.run_all(args)
    assert started == ["effssl", "simclr"]


def test_epoch_metrics_compare_every_variant_with_the_default_run(tmp_path, capsys, monkeypatch):
    import epoch_metrics

    def write(variant: str, ce: list[float], session: str = "a", method: str = "effssl") -> None:
        logs = tmp_path / "runs" / f"{method}__{variant}__s0" / "ckpt" / session / "logs"
        logs.mkdir(parents=True)
        rows = "".join(f"{e},{v},\n" for e, v in enumerate(ce))
        (logs / "metrics.csv").write_text("epoch,train_ce_loss_epoch,other\n" + rows)

    write("default", [8.0, 4.0])
    write("bank-bfloat16", [8.0, 5.0])
    write("bank_matmul-bfloat16", [8.8, 3.0])
    write("bank_matmul-bfloat16", [8.8, 4.2], session="b")  # a resumed run: later sessions win
    write("default", [1.0, 1.0], method="simclr")  # another method's default: not the reference
    argv = ["epoch_metrics.py", str(tmp_path), "--metrics", "train_ce_loss_epoch"]
    monkeypatch.setattr(sys, "argv", argv)
    epoch_metrics.main()
    out = capsys.readouterr().out
    assert "bank-bfloat16: largest relative difference 25.00%" in out  # |5 - 4| / 4
    assert "bank_matmul-bfloat16: largest relative difference 10.00%" in out  # |8.8 - 8| / 8
    assert "default: largest" not in out


NEEDS_OFFICIAL = pytest.mark.skipif(
    not os.environ.get("EFFSSL_OFFICIAL_SRC"),
    reason="needs the official code: EFFSSL_OFFICIAL_SRC=<checkout of CupidJay/Efficient_SSL>",
)
#: runs benchmarks/official_step_check.py, with the official SqrtKL scaled by argv[1]
STEP_CHECK = """
import sys
factor = float(sys.argv[1])
sys.argv = ["official_step_check.py", "--steps", "3"]
sys.path.insert(0, "benchmarks")
import official_step_check
from evidence import official
load = official.load_official
def scaled(src):
    module = load(src)
    kl = module.SqrtKL
    module.SqrtKL = lambda out, pow_kl=0.5, **kw: factor * kl(out, pow_kl, **kw)
    return module
official.load_official = scaled
official_step_check.main()
"""


@pytest.mark.slow
@NEEDS_OFFICIAL
@pytest.mark.parametrize("kl_factor", [1.0, 0.9])
def test_training_steps_match_the_official_loop_and_a_changed_kl_weight_does_not(kl_factor):
    proc = subprocess.run(
        [sys.executable, "-c", STEP_CHECK, str(kl_factor)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout.count("step ") == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    if kl_factor == 1.0:  # the official code as it is
        assert proc.returncode == 0 and "MATCH" in proc.stdout, proc.stdout[-3000:]
    else:  # lambda 18 instead of 20 on the official side only
        assert proc.returncode == 1 and "DIFFERENT" in proc.stdout, proc.stdout[-3000:]


def test_the_official_curve_is_compared_at_every_epoch_including_unfinished_runs():
    def run(values: list[float]) -> list[dict]:
        return [
            {"epoch": float(e), "clipped_s": 10.0 * e, "knn_top1": v}
            for e, v in zip((5, 10), values, strict=False)
        ]

    runs = {
        ("official", "default"): {0: run([30, 33]), 1: run([31, 34]), 2: run([32])},
        ("effssl", "bank_update=ema"): {0: run([20, 40]), 1: run([21, 41]), 2: run([22, 42])},
    }
    lines = "\n".join(comparisons.comparison_lines(runs, epochs=10))
    head = "| official | effssl (bank_update=ema) | kNN at epoch"
    # epoch 5: every seed of both arms, official higher on every seed
    assert (
        f"{head} 5 (all runs there) | 31.00 +- 1.00 (n=3) | 21.00 +- 1.00 (n=3) | +10.00 | A > B"
        in lines
    )
    # epoch 10: official seed 2 has not got there; too few seeds to call
    assert (
        f"{head} 10 (all runs there) | 33.50 +- 0.71 (n=2) | 41.00 +- 1.00 (n=3) | -7.50 |" in lines
    )
    assert "too few seeds" in lines.split(f"{head} 10")[1].splitlines()[0]


def test_pool_merges_the_seeds_of_studies_with_the_same_settings(tmp_path):
    pytest.importorskip("matplotlib")
    first, second, pooled = tmp_path / "a", tmp_path / "b", tmp_path / "pooled"
    for out, seeds in ((first, (0, 1, 2)), (second, (3, 4, 5))):
        out.mkdir()
        orchestration.write_settings(make_args(out))
        for seed in seeds:
            add_run(out, "official", "default", seed, [30.0, 30.0 + seed])
        (out / "random_init.csv").write_text(
            "model,seed,knn_top1,knn_top5\n" + "".join(f"m,{s},{20 + s},70\n" for s in seeds)
        )
    args = make_args(pooled, pool=[first, second], epochs=99)  # the studies' settings win
    pooled.mkdir()
    report.report(args)
    text = (pooled / "report.md").read_text()
    values = [30.0 + s for s in range(6)]
    mean, std = statistics.fmean(values), statistics.stdev(values)
    row = f"| official | 6 | 10 | {mean:.2f} +- {std:.2f} | "
    assert row + ", ".join(f"{v:.2f}" for v in values) + " |" in text
    ref_mean, ref_std = statistics.fmean(range(20, 26)), statistics.stdev(range(20, 26))
    assert f"Untrained backbone (6 seed(s)): {ref_mean:.2f} +- {ref_std:.2f}" in text
    assert "Pooled from: a, b" in text
    assert not (first / "report.md").exists()


def test_pool_refuses_other_settings_and_a_run_in_two_studies(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        out.mkdir()
        add_run(out, "official", "default", 0, [30.0, 31.0])
    orchestration.write_settings(make_args(first))
    orchestration.write_settings(make_args(second, batch=128))
    with pytest.raises(SystemExit, match="settings differ"):
        report.report(make_args(tmp_path, pool=[first, second]))
    (second / "settings.json").unlink()
    orchestration.write_settings(make_args(second))
    with pytest.raises(SystemExit, match="official__default__s0 in more than one study"):
        report.report(make_args(tmp_path, pool=[first, second]))


def test_timm_box_is_timms_box_with_the_official_draw_order():
    import numpy as np
    from timm.data.mixup import rand_bbox

    for seed, lam in enumerate(np.linspace(0.5, 0.999, 40)):
        np.random.seed(seed)
        x1, y1, x2, y2 = official.timm_box((8, 3, 32, 32), lam)
        after = np.random.random()
        np.random.seed(seed)  # timm draws the row centre first, the official the column's
        yl, yh, xl, xh = rand_bbox((8, 3, 32, 32), lam)
        assert (x1, x2, y1, y2) == (yl, yh, xl, xh)
        assert np.random.random() == after  # two draws, as the official rand_bbox
    np.random.seed(0)  # an odd side keeps its length (the official box: 6) where unclipped
    boxes = [official.timm_box((1, 3, 32, 32), 1 - (7.5 / 32) ** 2) for _ in range(50)]
    inside = [x2 - x1 for x1, _, x2, _ in boxes if 0 < x1 and x2 < 32]
    assert inside and set(inside) == {7}


def test_the_search_chain_runs_the_protocols_plans_in_its_order():
    """benchmarks/study_lr_search.sh: valid bash, its plans are the search's in protocol
    01's order (simclr first), evaluated on the validation split, one thread a worker."""
    script = REPO / "benchmarks" / "study_lr_search.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("python benchmarks/study.py --plan")]
    plans = line.split("--plan ")[1].split(" --")[0].split()
    assert plans == ["lr_simclr", "lr_effssl", "lr_byol", "lr_mocov2plus"]
    assert all(p in ev_plans.PLANS for p in plans)
    for flag in ("--holdout 500", "--eval-set val", "--threads 1", "--epochs 15"):
        assert flag in text


def test_the_golden_trajectory_runs_the_tests_tiny_run_without_importing_tests(tmp_path):
    import golden_trajectory
    from conftest import tiny_overrides

    extra = [
        "method_kwargs.bank_update=ema",
        "+limit_train_batches=3",
        "seed=0",
        f"checkpoint.dir={tmp_path / 'ema'}",
        "checkpoint.enabled=false",
        "auto_resume.enabled=false",
    ]
    expected = tiny_overrides(tmp_path / "data", 2, 50, 100, *extra)
    assert golden_trajectory.trajectory_overrides("ema", tmp_path / "data", tmp_path) == expected


def test_the_study_tools_functions_stay_short():
    import ast

    paths = [REPO / "benchmarks" / "study.py", *(REPO / "benchmarks" / "evidence").glob("*.py")]
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path.name}: {node.name} has {length} lines"


def test_no_benchmark_imports_tests_or_the_study_script():
    import ast

    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and not node.level
        }
        assert not imported & {"conftest", "tests", "study"}, path
        assert 'sys.path.insert(0, str(REPO / "tests"' not in path.read_text(), path


@pytest.mark.slow
def test_a_launcher_run_pauses_after_its_epoch_and_resumes_to_the_end(tmp_path, cifar300):
    """The study's launcher worker end to end on the 300-image fixture (as training and
    evaluation images): kNN at both epochs, ``PAUSE`` stops it after epoch 1's checkpoint,
    the same command then resumes it to the end, and the orchestration counts it finished."""
    data, out = tmp_path / "cifar", tmp_path / "out"
    data.mkdir()
    (data / "train").symlink_to(cifar300)
    (data / "test").symlink_to(cifar300)
    out.mkdir()
    argv = ["--worker", "--method", "effssl", "--variant", "default", "--seed", "0"]
    argv += ["--epochs", "2", "--eval-epochs", "1", "2", "--fraction", "1", "--model"]
    argv += ["resnet10t", "--batch", "50", "--negatives", "100", "--workers", "0"]
    argv += ["--threads", "1", "--data-dir", str(data), "--out", str(out)]
    argv += ["--effssl-overrides", "method_kwargs.proj_hidden_dim=64"]
    argv += ["method_kwargs.proj_output_dim=32", "+limit_train_batches=2"]
    cmd = [sys.executable, str(REPO / "benchmarks" / "study.py"), *argv]
    run_dir = out / "runs" / ev_runs.run_name("effssl", "default", 0)
    (out / "PAUSE").touch()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [int(r["epoch"]) for r in ev_runs.EvalLog(run_dir).rows()] == [1]
    (out / "PAUSE").unlink()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = ev_runs.EvalLog(run_dir).rows()
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["steps"]) for r in rows] == [2, 4]
    assert float(rows[1]["train_s"]) > float(rows[0]["train_s"]) > 0
    assert all(0 < float(r["knn_top1"]) <= 100 for r in rows)
    assert len((run_dir / "starts.log").read_text().splitlines()) == 6  # 2 starts, 3 lines each
    args = make_args(out, epochs=2, eval_epochs=[1, 2])
    assert ev_runs.finished(args, "effssl", "default", 0)


#: a stand-in for the official ``main.py``: the functions and class the harness calls, with
#: a plain instance-discrimination step against the bank (not the official method)
FAKE_OFFICIAL_MAIN = """
import logging
import torch
import torch.nn.functional as F


class FeatCLS(torch.nn.Module):
    def __init__(self, base_encoder, args):
        super().__init__()
        self.encoder_q = base_encoder()
        self.encoder_q.fc = torch.nn.Linear(self.encoder_q.backbone.num_features, args.dim)

    def forward(self, x):
        return F.normalize(self.encoder_q(x), dim=1)


def update_feature(center, output, index, momentum=0.5):
    with torch.no_grad():
        center[index] = momentum * center[index] + (1 - momentum) * output.detach()


def adjust_learning_rate(optimizer, epoch, args):
    for group in optimizer.param_groups:
        group["lr"] = args.lr


def train(loader, model, criterion, optimizer, epoch, args, logger, center):
    for images, index in loader:
        out = model(images)
        loss = criterion(out @ center.t() / args.moco_t, index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        update_feature(center, out, index, args.moco_m)
        logger.info("epoch %d loss %.4f", epoch, loss.item())


def construct_logger(name, save_dir):
    return logging.getLogger(name)
"""


@pytest.mark.slow
def test_the_official_harness_checkpoints_pauses_and_resumes(tmp_path, cifar300):
    """The official worker's plumbing end to end, with a stand-in for the official code:
    calibration, kNN at both epochs, its checkpoint, ``PAUSE`` after epoch 1, resume."""
    data, out, src = tmp_path / "cifar", tmp_path / "out", tmp_path / "official"
    for folder in (data, out, src):
        folder.mkdir()
    (data / "train").symlink_to(cifar300)
    (data / "test").symlink_to(cifar300)
    (src / "main.py").write_text(FAKE_OFFICIAL_MAIN)
    argv = ["--worker", "--method", "official", "--seed", "0", "--official-src", str(src)]
    argv += ["--epochs", "2", "--eval-epochs", "1", "2", "--fraction", "1", "--model"]
    argv += ["resnet10t", "--batch", "50", "--workers", "0", "--threads", "1"]
    argv += ["--data-dir", str(data), "--out", str(out)]
    cmd = [sys.executable, str(REPO / "benchmarks" / "study.py"), *argv]
    run_dir = out / "runs" / ev_runs.run_name("official", "default", 0)
    (out / "PAUSE").touch()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [int(r["epoch"]) for r in ev_runs.EvalLog(run_dir).rows()] == [1]
    assert (run_dir / "official.pt").exists()
    (out / "PAUSE").unlink()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[official] resumed at epoch 1" in proc.stdout
    rows = ev_runs.EvalLog(run_dir).rows()
    assert [int(r["steps"]) for r in rows] == [6, 12]  # 300 images, batch 50, drop_last
    assert float(rows[1]["train_s"]) > float(rows[0]["train_s"]) > 0
    assert "channels_last" in (run_dir / "patches.txt").read_text()
    assert ev_runs.finished(make_args(out, epochs=2), "official", "default", 0)
