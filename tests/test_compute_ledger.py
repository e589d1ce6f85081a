"""benchmarks/compute_ledger.py: training hours per study folder and method, from the runs'
time.csv and starts.log."""

from __future__ import annotations

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import compute_ledger  # noqa: E402


def _run(folder, name: str, seconds: list[float], starts: list[str]) -> None:
    run_dir = folder / "runs" / name
    run_dir.mkdir(parents=True)
    rows = "".join(f"{e},{s}\n" for e, s in enumerate(seconds, start=1))
    (run_dir / "time.csv").write_text("epoch,train_s\n" + rows)
    log = "".join(f"{when} commit {'a' * 40}: --worker\n    runner x\n" for when in starts)
    (run_dir / "starts.log").write_text(log)


def test_hours_are_summed_per_folder_and_method_and_since_keeps_later_runs(tmp_path, capsys):
    a, b = tmp_path / "lr_search", tmp_path / "equal_compute"
    _run(a, "simclr__lr-0.1__s0", [600.0, 1800.0], ["2026-12-04 19:00:00"])
    _run(a, "effssl__lr-0.1__s0", [900.0], ["2026-12-03 10:00:00", "2026-12-04 11:00:00"])
    _run(b, "effssl__ep-9__s0", [1800.0, 3600.0, 5400.0], ["2026-12-05 01:00:00"])
    (b / "runs" / "effssl__never__s1").mkdir()  # started, no epoch: not counted
    costs = compute_ledger.ledger([a, b])
    assert [(c.study, c.method, c.epochs, c.seconds) for c in costs] == [
        ("lr_search", "effssl", 1, 900.0),
        ("lr_search", "simclr", 2, 1800.0),
        ("equal_compute", "effssl", 3, 5400.0),
    ]
    assert costs[0].first_start == "2026-12-03"
    assert compute_ledger.main([str(a), str(b), "--since", "2026-12-04"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "| equal_compute | effssl | 1 | 3 | 1.50 |" in table
    assert "| lr_search | simclr | 1 | 2 | 0.50 |" in table
    assert not any("| lr_search | effssl |" in line for line in table)  # first started 12-03
    assert table[-1] == "| **all** | | 2 | 5 | **2.00** |"


def test_work_lost_to_a_restart_counts_as_trained():
    rows = lambda *pairs: [[str(e), str(s)] for e, s in pairs]  # noqa: E731
    trained = compute_ledger.trained
    assert trained(rows((1, 100.0), (2, 200.0), (3, 300.0))) == (3, 300.0)  # one session
    # paused after epoch 2's checkpoint, resumed from it: nothing lost
    assert trained(rows((1, 100.0), (2, 200.0), (3, 310.0))) == (3, 310.0)
    # resumed from epoch 2's checkpoint after epoch 3 had trained: epoch 3 trained twice
    assert trained(rows((1, 100.0), (2, 200.0), (3, 300.0), (3, 305.0), (4, 405.0))) == (
        5,
        505.0,
    )
    # the checkpoint lost: started over from epoch 0 after 4 epochs
    start_over = rows((1, 194.84), (2, 334.81), (3, 469.47), (4, 604.52), (1, 193.18), (2, 333.61))
    epochs, seconds = trained(start_over)
    assert epochs == 6 and abs(seconds - (604.52 + 333.61)) < 1e-9
