"""The training loop against its step: seconds per step of the real launcher loop (Lightning
``fit`` with data loading, logging and checkpointing) against the pure step of
``step_cost.py`` (in-memory tensors, no loader), interleaved in one run, with a breakdown of
where the rest of the time goes.

    python benchmarks/loop_cost.py [--methods effssl simclr] [--per-class 500] [--epochs 3]
        [--rounds 2] [--loop-config default w0 t1] [--out benchmarks/results]

Per round and method: one launcher run (``machine=cpu``, the study's regime by default:
mobilenetv3_small_100, batch 256, 500 CIFAR-10 JPEGs a class, 32 px, ``data.val_path=null``)
for ``--epochs`` epochs, then ``step_cost.py``'s pure step on the same bank size. Only the
epochs after the first count (the first holds calibration, loader start and warm-up). A
callback stamps every batch, so each loop step splits into:

* ``in_step``: batch start to batch end (forward, backward, optimizer, bank update,
  logging and its host syncs);
* ``data_wait``: the previous batch's end to this batch's start, inside an epoch (the
  loader's next batch, Lightning's bookkeeping);
* ``epoch_edge``: the last batch of an epoch to the first of the next (checkpoint write,
  loader restart), spread over the epoch's steps; ``checkpoint`` is the part spent in
  ``Trainer.save_checkpoint``.

``--loop-config`` runs the loop in other thread layouts to expose oversubscription:
``default`` (``machine=cpu``: ``data.num_workers`` = cores - 1, torch's threads = cores),
``w0`` (no worker process: the main process decodes), ``t1`` (one torch thread beside the
workers), and ``tensor`` (``data.pipeline=tensor``: decoded once, no worker, the batched
augmentation in the main process before each step, so inside ``data_wait``). EffSSL's
calibration pass is timed per batch (train start to the first batch, over the calibration's
batches). The data pipeline's own cost (``decode`` and ``augment`` seconds per batch, one
process) is measured apart, from the same dataset.

Writes ``loop_cost_<model>_b<batch>.csv`` (one row per round, method and loop config) and
prints the medians and the loop-to-step ratio. Targets (issue 26, not asserted): the loop at
most 1.15x the pure step for effssl and simclr.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import tarfile
import tempfile
import time
import warnings
from argparse import Namespace
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_cost  # noqa: E402  (benchmarks/step_cost.py: the pure step)

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10_jpg_q75.tar.gz"
LOOP_CONFIGS = {
    "default": ["data.pipeline=pil"],
    "w0": ["data.pipeline=pil", "data.num_workers=0"],
    "t1": ["data.pipeline=pil"],
    "tensor": ["data.pipeline=tensor"],
}
FIELDS = [
    "round",
    "method",
    "loop_config",
    "steps",
    "loop_s_per_step",
    "in_step_s",
    "data_wait_s",
    "epoch_edge_s_per_step",
    "checkpoint_s_per_step",
    "calibration_s_per_batch",
    "pure_step_s",
    "ratio",
]


class LoopProbe(Callback):
    """Stamps every training batch's start and end, epoch by epoch, and times
    ``Trainer.save_checkpoint``."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, float]] = []
        self.ends: list[tuple[int, float]] = []
        self.checkpoints: list[tuple[int, float]] = []
        self.train_start = 0.0

    def on_train_start(self, trainer, module) -> None:
        self.train_start = time.perf_counter()  # before the module's hook: its calibration

    def on_fit_start(self, trainer, module) -> None:
        save = trainer.save_checkpoint

        def timed_save(*args, **kwargs):
            t = time.perf_counter()
            out = save(*args, **kwargs)
            self.checkpoints.append((trainer.current_epoch, time.perf_counter() - t))
            return out

        trainer.save_checkpoint = timed_save

    def on_train_batch_start(self, trainer, *args) -> None:
        self.starts.append((trainer.current_epoch, time.perf_counter()))

    def on_train_batch_end(self, trainer, *args) -> None:
        self.ends.append((trainer.current_epoch, time.perf_counter()))

    def breakdown(
        self, num_samples: int, batch_size: int, calibrates: bool, first_epoch: int = 1
    ) -> dict[str, float]:
        """Medians per step of the epochs from ``first_epoch`` on (see the module)."""
        stamps = zip(self.starts, self.ends, strict=True)
        steps = [(e, s, t) for (e, s), (_, t) in stamps if e >= first_epoch]
        if len(steps) < 2:
            raise RuntimeError("too few timed steps: train for more epochs")
        in_step = [t - s for _, s, t in steps]
        inside, edges = [], []
        for (e0, _, t0), (e1, s1, _) in zip(steps, steps[1:], strict=False):
            (inside if e0 == e1 else edges).append(s1 - t0)
        # the loop's time: first timed batch start to last batch end, plus one epoch edge
        # for the last epoch (its checkpoint is written after its last batch)
        edge = statistics.median(edges) if edges else 0.0
        total = steps[-1][2] - steps[0][1] + edge
        ckpt = [s for e, s in self.checkpoints if e >= first_epoch]
        # EffSSL's calibration (one pass over the training set) runs between train start and
        # the first batch, with the loader's start: per calibration batch
        batches = math.ceil(num_samples / batch_size)
        calibration = (self.starts[0][1] - self.train_start) / batches if calibrates else 0.0
        return {
            "steps": len(steps),
            "loop_s_per_step": total / len(steps),
            "in_step_s": statistics.median(in_step),
            "data_wait_s": statistics.median(inside) if inside else 0.0,
            "epoch_edge_s_per_step": sum(edges) / len(steps),
            "checkpoint_s_per_step": sum(ckpt) / len(steps),
            "calibration_s_per_batch": calibration,
        }


def cifar_subset(data_dir: Path, per_class: int) -> Path:
    """``per_class`` training JPEGs of each CIFAR-10 class as an ImageFolder of links."""
    if not (data_dir / "train").is_dir():
        if not ARCHIVE.is_file():
            sys.exit(f"no data: {ARCHIVE} not found; pass --data-dir with train/")
        data_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(data_dir, filter="data")
    out = Path(tempfile.mkdtemp(prefix="loop_cost_")) / "train"
    for cls in sorted(p for p in (data_dir / "train").iterdir() if p.is_dir()):
        (out / cls.name).mkdir(parents=True)
        for img in sorted(cls.iterdir())[:per_class]:
            (out / cls.name / img.name).symlink_to(img)
    return out


def launcher_cfg(method: str, train: Path, args, extra: list[str]):
    from hydra import compose, initialize_config_module

    overrides = [
        "machine=cpu",
        "dataset=custom_lowres",
        f"data.train_path={train}",
        "data.val_path=null",
        f"backbone.kwargs.model_name={args.model}",
        f"optimizer.batch_size={args.batch}",
        f"max_epochs={args.epochs}",
        f"checkpoint.dir={Path(tempfile.mkdtemp(prefix='loop_cost_ckpt_'))}",
        "auto_resume.enabled=false",
        *(["method_kwargs.num_negatives=-1"] if method == "effssl" else []),
        *extra,
    ]
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        return compose(method, overrides=overrides)


def loop_run(method: str, train: Path, args, loop_config: str) -> dict[str, float]:
    from effssl_plugin.main_pretrain import pretrain

    probe = LoopProbe()
    cfg = launcher_cfg(method, train, args, LOOP_CONFIGS[loop_config])
    threads = torch.get_num_threads()
    if loop_config == "t1":
        torch.set_num_threads(1)
    try:
        pretrain(cfg, extra_callbacks=[probe])
    finally:
        torch.set_num_threads(threads)
    return probe.breakdown(10 * args.per_class, args.batch, method == "effssl")


def pure_step(method: str, samples: int, args) -> float:
    """``step_cost.py``'s median step on in-memory tensors, same model, batch and bank."""
    ns = Namespace(
        model=args.model,
        size=32,
        batch=args.batch,
        device="cpu",
        precision="32-true",
        samples=samples,
        negatives=-1,  # effssl: every other bank row, as the loop (the study's setting)
        overrides=[],
    )
    model, views = step_cost.build(method, ns)
    times, _ = step_cost.run_steps(model, views, args.pure_steps + 1, ns, torch.device("cpu"))
    return statistics.median(times[1:])  # the first step warms up


def pipeline_cost(method: str, train: Path, args) -> dict[str, float]:
    """Seconds per batch of the training dataset in one process: JPEG decoding alone,
    decoding plus the method's PIL augmentations (what the workers do), and the batched
    augmentation of ``data.pipeline=tensor`` on a decoded batch."""
    from PIL import Image

    from effssl_plugin import register
    from effssl_plugin.config import parse_pretrain_cfg
    from effssl_plugin.data import build_pretrain_dataset
    from effssl_plugin.tensor_data import batch_views_from_cfg

    register()
    cfg = parse_pretrain_cfg(launcher_cfg(method, train, args, []))
    dataset = build_pretrain_dataset(cfg)
    paths = [p for p in sorted(train.rglob("*.jpg"))][: args.batch]
    t = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            im.convert("RGB")
    decode = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(min(args.batch, len(dataset))):
        dataset[i]
    full = time.perf_counter() - t
    views = batch_views_from_cfg(cfg)
    images = _decoded(paths)
    views(images, None)  # warm-up
    t = time.perf_counter()
    for _ in range(3):
        views(images, None)
    batched = (time.perf_counter() - t) / 3
    return {
        "decode_s_per_batch": decode,
        "augment_s_per_batch": full - decode,
        "tensor_augment_s_per_batch": batched,
    }


def _decoded(paths: list[Path]) -> torch.Tensor:
    """The images at ``paths`` as one uint8 batch (N, 3, H, W)."""
    import numpy as np
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["effssl", "simclr"])
    p.add_argument("--model", default="mobilenetv3_small_100")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--per-class", type=int, default=500, help="training JPEGs per class")
    p.add_argument("--epochs", type=int, default=3, help="loop epochs (the first is not timed)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    p.add_argument("--pure-steps", type=int, default=5, help="timed pure steps per round")
    p.add_argument("--loop-config", nargs="+", default=["default"], choices=list(LOOP_CONFIGS))
    p.add_argument("--data-dir", type=Path, default=Path.home() / ".cache/effssl/cifar10")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    train = cifar_subset(args.data_dir, args.per_class)
    samples = 10 * args.per_class
    os.chdir(train.parent)  # the launcher writes trained_models/ and logs here
    rows: list[dict] = []
    for r in range(args.rounds):
        for method in args.methods:
            step = pure_step(method, samples, args)
            for loop_config in args.loop_config:
                loop = loop_run(method, train, args, loop_config)
                row = {"round": r, "method": method, "loop_config": loop_config, **loop}
                row.update(pure_step_s=step, ratio=loop["loop_s_per_step"] / step)
                rows.append(row)
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    costs = {m: pipeline_cost(m, train, args) for m in args.methods}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"loop_cost_{args.model}_b{args.batch}.csv"
    with path.open("w", newline="") as f:
        costs_fields = ["decode_s_per_batch", "augment_s_per_batch", "tensor_augment_s_per_batch"]
        writer = csv.DictWriter(f, FIELDS + costs_fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **costs[row["method"]]})
    print(f"\n{'method':8s} {'config':8s} loop/step  loop_s  step_s  in_step  wait  edge  ckpt")
    for method in args.methods:
        for lc in args.loop_config:
            sel = [r for r in rows if r["method"] == method and r["loop_config"] == lc]
            med = {k: statistics.median(r[k] for r in sel) for k in FIELDS[4:]}
            print(
                f"{method:8s} {lc:8s} {med['ratio']:8.2f}x {med['loop_s_per_step']:7.2f} "
                f"{med['pure_step_s']:7.2f} {med['in_step_s']:8.2f} {med['data_wait_s']:5.2f} "
                f"{med['epoch_edge_s_per_step']:5.2f} {med['checkpoint_s_per_step']:5.2f}"
            )
        print(f"{method:8s} pipeline, one process: {costs[method]}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
