"""Does a run stopped after an epoch and resumed train exactly as one that never stopped?

For each pipeline (``tensor``; ``pil`` with 0 and 2 loader workers) it trains the golden
trajectory's small CPU run (``golden_trajectory.trajectory_overrides``: the in-repository
300-image CIFAR-10 fixture, resnet10t, batch 50, 3 steps an epoch, ``grad``) for 3 epochs,
twice without a stop and once stopped after epoch 1 and resumed, and counts the checkpoint
tensors (weights, buffers, bank) that differ from the first run's:

    python benchmarks/resume_exactness.py                        # the package as it is
    python benchmarks/resume_exactness.py --without-epoch-streams  # as before epoch_streams

``--without-epoch-streams`` replaces the ``EpochStreams`` callback by one that does nothing,
which is how the package resumed before it (the loader is still the package's). Prints one
line a pipeline; the test that guards the result is
``tests/test_fault_tolerance.py::test_a_run_stopped_and_resumed_trains_exactly_as_one_that_never_stopped``.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

PIPELINES = [("tensor", 0), ("pil", 0), ("pil", 2)]


def train(data: Path, ckpt_dir: Path, pipeline: str, workers: int, stop_after: int) -> dict:
    """A 3-epoch run's newest checkpoint, stopped after ``stop_after`` epochs if > 0."""
    import torch
    from golden_trajectory import trajectory_overrides
    from hydra import compose, initialize_config_module
    from lightning.pytorch.callbacks import Callback

    from effssl_plugin.main_pretrain import pretrain

    class StopAfter(Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            if stop_after and trainer.current_epoch + 1 >= stop_after:
                trainer.should_stop = True

    overrides = trajectory_overrides("grad", data, ckpt_dir) + [  # Hydra keeps the last value
        "max_epochs=3",
        f"data.pipeline={pipeline}",
        f"data.num_workers={workers}",
        f"checkpoint.dir={ckpt_dir}",
        "checkpoint.enabled=true",
        "checkpoint.frequency=1",
        "auto_resume.enabled=true",
    ]
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = compose("effssl", overrides=overrides)
    pretrain(cfg, extra_callbacks=[StopAfter()])
    newest = max(ckpt_dir.rglob("*.ckpt"), key=lambda p: torch.load(p)["global_step"])
    return torch.load(newest, map_location="cpu")


def differing(a: dict, b: dict) -> int:
    """How many tensors of two checkpoints' state dicts differ."""
    import torch

    return sum(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--without-epoch-streams", action="store_true")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch
    from golden_trajectory import FIXTURE
    from lightning.pytorch.callbacks import Callback

    import effssl_plugin.epoch_streams as epoch_streams

    torch.set_num_threads(1)
    if args.without_epoch_streams:

        class NoStreams(Callback):
            def __init__(self, *_: object) -> None:
                pass

        epoch_streams.EpochStreams = NoStreams  # type: ignore[misc]
    label = "without epoch_streams" if args.without_epoch_streams else "with epoch_streams"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with tarfile.open(FIXTURE) as tar:
            tar.extractall(root / "data", filter="data")
        (data,) = [d for d in (root / "data").iterdir() if d.is_dir()]
        for pipeline, workers in PIPELINES:
            name = f"{pipeline}-w{workers}"
            first = train(data, root / f"{name}-a", pipeline, workers, 0)
            again = train(data, root / f"{name}-b", pipeline, workers, 0)
            train(data, root / f"{name}-c", pipeline, workers, 1)
            resumed = train(data, root / f"{name}-c", pipeline, workers, 0)
            total = len(first["state_dict"])
            print(
                f"{label}, {pipeline} with {workers} workers: uninterrupted twice "
                f"{differing(first, again)} of {total} tensors differ; stopped after epoch 1 "
                f"and resumed {differing(first, resumed)} of {total}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
