"""Protocol 04 (pipeline parity): its arms from protocol 01's choices, each arm's overrides
naming its pipeline, the values read from finished runs, and the verdicts of its table."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from evidence import orchestration, parity, plans  # noqa: E402
from evidence import runs as ev_runs  # noqa: E402
from test_study_equal_compute import FINISHED, search_study  # noqa: E402


def test_each_arm_names_its_pipeline_over_the_search_variants_settings():
    assert plans.variant_overrides("lr=0.133,wu=0,pipeline=tensor") == [
        "optimizer.lr=0.133",
        "scheduler.warmup_epochs=0",
        "data.pipeline=tensor",
    ]
    assert plans.variant_overrides("lr=0.133,wu=0,pipeline=pil")[-1] == "data.pipeline=pil"
    assert parity.pipeline_overrides("lr=0.133,wu=0,pipeline=jpeg", plans.VARIANTS) is None
    with pytest.raises(KeyError):
        plans.variant_overrides("lr=0.777,wu=0,pipeline=tensor")  # not a search variant
    with pytest.raises(ValueError):
        parity.pipeline_variant("lr=0.1,wu=0", "jpeg")


def test_the_plan_takes_each_methods_learning_rate_from_protocol_01(tmp_path):
    from types import SimpleNamespace

    search = search_study(tmp_path / "lr_search", FINISHED)
    args = SimpleNamespace(lr_search=search, seeds=[0, 1, 2])
    assert parity.parity_plan(args) == [
        ("effssl", "lr=0.1,wu=0,pipeline=pil"),
        ("effssl", "lr=0.1,wu=0,pipeline=tensor"),
        ("simclr", "lr=0.133,wu=0,pipeline=pil"),
        ("simclr", "lr=0.133,wu=0,pipeline=tensor"),
    ]
    runs = orchestration.planned_runs(args, parity.PARITY_PLAN)
    assert len(runs) == 12 and runs[:4] == [(m, v, 0) for m, v in parity.parity_plan(args)]


def test_the_verdicts_follow_the_protocol():
    assert parity.parity_verdict(0.1, 2.0) == "separated"
    assert parity.parity_verdict(-3.0, -0.2) == "separated"
    assert parity.parity_verdict(-1.4, 1.2) == "agree (not separated)"
    assert parity.parity_verdict(-2.5, 1.2) == "not separated"


def _run(out, method: str, variant: str, seed: int, knn: float, linear: float | None) -> None:
    run_dir = out / "runs" / ev_runs.run_name(method, variant, seed)
    run_dir.mkdir(parents=True)
    log = ev_runs.EvalLog(run_dir)
    for epoch in (5, 15):
        log.add(epoch=epoch, train_s=epoch, steps=19 * epoch, knn_top1=knn, knn_top5=90)
    if linear is not None:
        (run_dir / "linear.json").write_text(json.dumps({"val_acc1": linear}))


def test_the_table_shows_every_seed_the_intervals_and_the_verdict(tmp_path):
    from types import SimpleNamespace

    search = search_study(tmp_path / "lr_search", FINISHED)
    out = tmp_path / "out"
    args = SimpleNamespace(lr_search=search, seeds=[0, 1, 2], out=out, epochs=15)
    arms = parity.parity_plan(args)
    values = {  # effssl: tensor far above pil (separated); simclr: level
        arms[0]: [30.0, 31.0, 30.5],
        arms[1]: [35.0, 36.0, 35.5],
        arms[2]: [36.0, 37.0, 36.5],
        arms[3]: [36.2, 36.9, 36.4],
    }
    for (method, variant), by_seed in values.items():
        for seed, v in enumerate(by_seed):
            _run(out, method, variant, seed, v, v + 1.0 if seed < 2 else None)
    lines = parity.parity_lines(args, arms)
    effssl_knn = next(line for line in lines if line.startswith("| effssl | kNN"))
    assert "0: 30.00, 1: 31.00, 2: 30.50" in effssl_knn and "+5.00 [" in effssl_knn
    assert effssl_knn.endswith("| separated |")
    simclr_knn = next(line for line in lines if line.startswith("| simclr | kNN"))
    assert "not separated" in simclr_knn
    linear = next(line for line in lines if line.startswith("| effssl | linear"))
    assert "(n=2)" in linear  # seed 2's probe has not run
    assert parity.parity_report_lines(args)[0].startswith("## Pipeline parity")


def test_the_runner_runs_the_protocols_plan_then_its_probes_from_pinned_code():
    import subprocess

    script = REPO / "benchmarks" / "study_parity.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "use_pinned_code || exit 1" in text
    plan = text.index("--plan pipeline_parity --seeds 0 1 2")
    assert plan < text.index("--linear --plan pipeline_parity --seeds 0 1 2")
    assert "--eval-set val" in text and "--epochs 15" in text  # protocol 01's regime
