"""benchmarks/loop_cost.py: the breakdown of a loop step from the batch stamps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
loop_cost = pytest.importorskip("loop_cost", reason="needs solo-learn (step_cost imports it)")


def test_breakdown_splits_steps_waits_and_epoch_edges():
    """Two timed epochs of 3 steps: each step 1 s, 0.5 s between batches, 4 s between epochs
    of which 3 s in the checkpoint; epoch 0 (untimed) is far off and must not count."""
    probe = loop_cost.LoopProbe()
    probe.starts.append((0, -100.0))
    probe.ends.append((0, -99.0))
    t = 0.0
    for epoch in (1, 2):
        for _ in range(3):
            probe.starts.append((epoch, t))
            probe.ends.append((epoch, t + 1.0))
            t += 1.5
        t += 4.0 - 0.5
        probe.checkpoints.append((epoch, 3.0))
    probe.train_start = -130.0  # calibration: 30 s before epoch 0's first batch, 10 batches
    out = loop_cost.LoopProbe.breakdown(probe, num_samples=2560, batch_size=256, calibrates=True)
    assert out["steps"] == 6
    assert out["in_step_s"] == pytest.approx(1.0)
    assert out["data_wait_s"] == pytest.approx(0.5)
    # wall: 6 steps, 4 inner waits, 1 edge between the epochs + 1 for the last epoch's end
    assert out["loop_s_per_step"] == pytest.approx((6 * 1.0 + 4 * 0.5 + 2 * 4.0) / 6)
    assert out["epoch_edge_s_per_step"] == pytest.approx(4.0 / 6)
    assert out["checkpoint_s_per_step"] == pytest.approx(6.0 / 6)
    assert out["calibration_s_per_batch"] == pytest.approx(30.0 / 10)
