"""benchmarks/compare_runs.py (issue 27, point 8): a rerun's evaluations and commits against
the reference runs of the same names."""

from __future__ import annotations

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import compare_runs  # noqa: E402

COMMIT = "a" * 40


def _run(out, name: str, rows: list[tuple[int, float, float]], commit: str = COMMIT) -> None:
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True)
    lines = ["epoch,train_s,steps,knn_top1,knn_top5"]
    lines += [f"{e},{10 * e},{19 * e},{t1},{t5}" for e, t1, t5 in rows]
    (run_dir / "evals.csv").write_text("\n".join(lines) + "\n")
    (run_dir / "starts.log").write_text(f"2026-12-04 22:00:00 commit {commit}: --worker\n")


def test_identical_reruns_pass_and_any_difference_or_other_commit_fails(tmp_path, capsys):
    ref, new = tmp_path / "ref", tmp_path / "new"
    _run(ref, "effssl__a__s0", [(5, 30.0, 80.0), (10, 33.0, 82.0), (15, 34.0, 83.0)])
    _run(new, "effssl__a__s0", [(5, 30.0, 80.0), (10, 33.0, 82.0)])  # stopped after 10
    assert compare_runs.main([str(ref), str(new)]) == 0
    assert "identical" in capsys.readouterr().out

    _run(new, "simclr__b__s0", [(5, 31.0, 81.0)])
    _run(ref, "simclr__b__s0", [(5, 31.0, 81.5)])  # top-5 differs by 0.5
    lines, same = compare_runs.compare(ref, new, tol=0.0)
    assert not same and any("| 0.50 |" in line for line in lines)
    assert compare_runs.compare(ref, new, tol=0.5)[1]

    _run(new, "effssl__c__s0", [(5, 30.0, 80.0)], commit="b" * 40)
    _run(ref, "effssl__c__s0", [(5, 30.0, 80.0)])  # same values, another commit
    assert not compare_runs.compare(ref, new, tol=1.0)[1]


def _session(out, name: str, version: int, epochs: dict[int, float]) -> None:
    """A Lightning CSV log of one session: a step row, then each epoch's mean losses."""
    logs = out / "runs" / name / "ckpt" / "effssl" / "20261204-223501-6hax" / "logs"
    path = logs / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True)
    lines = ["epoch,step,train_ce_loss_epoch,train_ce_loss_step,train_kl_loss_epoch"]
    for epoch, ce in epochs.items():
        lines += [f"{epoch},{epoch * 19},,{ce + 1},", f"{epoch},{epoch * 19 + 18},{ce},,0.01"]
    path.write_text("\n".join(lines) + "\n")


def test_training_losses_name_the_first_epoch_where_two_runs_part_and_each_sessions_epochs(
    tmp_path,
):
    ref, new = tmp_path / "ref", tmp_path / "new"
    for out in (ref, new):
        _run(out, "effssl__a__s0", [(5, 30.0, 80.0)])
    _session(ref, "effssl__a__s0", 0, {0: 8.7, 1: 8.8, 2: 8.6})  # stopped after epoch 2
    _session(ref, "effssl__a__s0", 1, {3: 8.5, 4: 8.4})  # resumed
    _session(new, "effssl__a__s0", 0, {0: 8.7, 1: 8.8, 2: 8.6, 3: 8.45, 4: 8.4})
    losses, sessions = compare_runs.epoch_losses(new / "runs" / "effssl__a__s0")
    assert sessions == [[0, 1, 2, 3, 4]] and losses[3] == ("8.45", "0.01")
    (line,) = compare_runs.loss_lines(ref, new)[2:]
    assert line == "| effssl__a__s0 | 0-2, 4 | 3 | 0-2; 3-4 | 0-4 |"
    assert compare_runs.compare(ref, new, tol=0.0)[1]  # the losses decide nothing
