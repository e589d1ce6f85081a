"""Protocol 03 (fidelity): the arms read from several study folders, the paired verdicts with
the +-2 margin, the explanation rule, and the runner's order."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from evidence import fidelity  # noqa: E402
from evidence import runs as ev_runs  # noqa: E402
from evidence.stats import Interval  # noqa: E402


def _run(study, arm: str, seed: int, curve: dict[int, float], commit: str = "c" * 40) -> None:
    method, variant = fidelity.ARMS[arm]
    run_dir = study / "runs" / ev_runs.run_name(method, variant, seed)
    run_dir.mkdir(parents=True)
    log = ev_runs.EvalLog(run_dir)
    for epoch, top1 in curve.items():
        log.add(epoch=epoch, train_s=epoch, steps=19 * epoch, knn_top1=top1, knn_top5=80)
    (run_dir / "starts.log").write_text(f"2026-12-04 10:00:00 commit {commit}: --worker\n")


def test_the_verdict_rule_with_its_margin():
    def iv(low: float, high: float) -> Interval:
        return Interval((low + high) / 2, low, high, 5, (6, 6))

    assert fidelity.fidelity_verdict(iv(-4.6, 1.2)) == "not shown either way"
    assert fidelity.fidelity_verdict(iv(-1.5, 1.9)) == "agree"
    assert fidelity.fidelity_verdict(iv(0.1, 4.1)) == "differ"
    assert fidelity.fidelity_verdict(iv(-1.9, -0.3)) == "differ (inside the +-2 margin)"
    assert fidelity.fidelity_verdict(None).startswith("not shown")


def test_arms_are_pooled_from_both_studies_and_the_explanation_rule_applies(tmp_path):
    first, seeds = tmp_path / "study", tmp_path / "study_seeds"
    jitter = [0.3, -0.2, 0.1, -0.4, 0.2, 0.0]
    for s in range(6):
        study = first if s < 3 else seeds
        p = 38.0 + jitter[s]
        _run(study, "P", s, {10: p - 5, 50: p})
        _run(study, "O", s, {10: p - 7, 50: p - 2.5 + jitter[5 - s]})  # lower
        _run(seeds, "O+", s, {10: p - 5, 50: p + jitter[(s + 2) % 6] / 2})  # level with P
    studies = [first, seeds]
    assert sorted(fidelity.arm_curves(studies, "O")) == [0, 1, 2, 3, 4, 5]
    lines = fidelity.fidelity_lines(studies)
    text = "\n".join(lines)
    assert "| O - P |" in text and "| differ |" in next(x for x in lines if "| O - P |" in x)
    assert "agree" in next(x for x in lines if "| O+ - P |" in x)
    assert "shown: **yes**" in text
    # O+ as low as O: the explanation fails
    for s in range(6):
        _run(tmp_path / "low", "O+", s, {10: 30.0, 50: 35.5 + jitter[s]})
    assert "shown: **no**" in "\n".join(fidelity.fidelity_lines([tmp_path / "low", *studies]))


def test_the_runner_moves_the_lost_seed_5_runs_aside_then_runs_the_protocols_arms():
    script = REPO / "benchmarks" / "study_fidelity.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text().split("use_pinned_code || exit 1", 1)[1]  # the commands
    order = [
        'mv "$run" "$OUT/superseded/$name"',
        "--plan official_like_plugin --seeds 0 1 2 5",
        "--plan ema --seeds 5",
        "benchmarks/fidelity_report.py",
    ]
    positions = [text.index(part) for part in order]
    assert positions == sorted(positions)
    assert "--epochs 50 --eval-epochs 5 10 20 30 40 50" in script.read_text()  # 3c's regime
