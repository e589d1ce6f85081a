"""The official worker: one run of the official EffSSL training loop
(github.com/CupidJay/Efficient_SSL, EMA bank) on the study's model, data and evaluation.

The harness imports the official ``main.py`` (never copied into this project) and runs its
calibration loop, ``adjust_learning_rate``, ``train`` and ``update_feature``; every patch it
applies to run on a CPU is printed and written to the run's ``patches.txt``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import time
import types
import warnings
from pathlib import Path

from .data import ensure_data, study_data
from .evaluation import eval_sets, knn_eval, study_backbone
from .plans import OFFICIAL_LIKE_PLUGIN
from .runs import EvalLog, hydra_path, last_epoch, paused, record_start, run_name, set_threads


def timm_box(size, lam: float):
    """The official ``rand_bbox`` with timm's box (:func:`timm.data.mixup.rand_bbox`): sides
    ``cut`` instead of ``2 * (cut // 2)``; the same two draws, the first for dimension 2 (the
    official ``bbx``), returned in the official order ``(bbx1, bby1, bbx2, bby2)``."""
    from timm.data.mixup import rand_bbox

    yl, yh, xl, xh = rand_bbox(size, lam)
    return yl, xl, yh, xh


def official_patches(module: types.ModuleType) -> list[str]:
    """Makes the official code run on a CPU; returns what was patched."""
    import numpy as np
    import torch

    patches = []
    torch.Tensor.cuda = lambda self, *a, **k: self
    patches.append("torch.Tensor.cuda -> identity (no GPU)")
    torch.nn.Module.cuda = lambda self, *a, **k: self
    patches.append("torch.nn.Module.cuda -> identity (no GPU)")
    if not hasattr(np, "int"):
        np.int = int  # rand_bbox uses np.int, removed in NumPy 1.24
        patches.append("numpy.int = int (utils/mixup_utils.rand_bbox; removed in NumPy 1.24)")
    patches.append(
        "main_worker not called: the harness runs the official calibration loop and calls "
        "main.adjust_learning_rate and main.train per epoch on a plain module (no "
        "DataParallel), with the model, data and evaluation below"
    )
    return patches


def variant_patches(variant: str) -> list[str]:
    """The official loop's variant: ``default``, or :data:`.plans.OFFICIAL_LIKE_PLUGIN`
    (timm's CutMix box, calibration over every image); returns what was patched."""
    if variant not in ("default", OFFICIAL_LIKE_PLUGIN):
        sys.exit(f"official variants: default, {OFFICIAL_LIKE_PLUGIN}; got {variant}")
    if variant == "default":
        return []
    sys.modules["utils.mixup_utils"].rand_bbox = timm_box
    return [
        "utils.mixup_utils.rand_bbox -> timm's box (sides cut, not 2 * (cut // 2); the "
        f"same draws): variant {OFFICIAL_LIKE_PLUGIN}",
        "calibration loop over every image (drop_last=False), so that no bank row stays "
        f"zero: variant {OFFICIAL_LIKE_PLUGIN}",
    ]


def load_official(src: Path) -> types.ModuleType:
    if not (src / "main.py").is_file():
        sys.exit(
            f"--official-src {src}: main.py not found; clone "
            "https://github.com/CupidJay/Efficient_SSL and pass its folder"
        )
    sys.path.insert(0, str(src))
    spec = importlib.util.spec_from_file_location("effssl_official_main", src / "main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_args(lr: float, epochs: int, k: int, **extra) -> argparse.Namespace:
    """The official ``main.py`` flags of ``run.sh``'s CIFAR recipe (tau 0.2, m 0.5, D 2048,
    CutMix alpha 0.5, lambda 20, cosine lr without warmup) with our lr, schedule length and
    number of negatives ``k``."""
    return argparse.Namespace(
        lr=lr, epochs=epochs, warmup_epochs=0, cos=True, schedule=[120, 160], moco_t=0.2,
        moco_m=0.5, dim=2048, k=k, cutmix=True, alpha=0.5, pow=0.5, lambda_kl=20.0,
        gpu=None, print_freq=10**9, **extra,
    )  # fmt: skip


def official_encoder(model_name: str) -> type:
    """The ``base_encoder`` the official ``FeatCLS`` calls: :func:`.evaluation.study_backbone`
    with the ``fc`` head that ``FeatCLS`` replaces by its projector."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = study_backbone(model_name)
            self.fc = torch.nn.Linear(self.backbone.num_features, 10)

        def forward(self, x):
            return self.fc(self.backbone(x))

    return Encoder


def indexed_dataset(args, train_dir: Path, fraction: float):
    """(our training data as (image, index) pairs, as the official ``CIFAR10_ID`` gives them;
    the config): our data pipeline, from the same config the launcher builds for effssl."""
    import torch
    from hydra import compose, initialize_config_module

    import effssl_plugin
    from effssl_plugin.config import parse_pretrain_cfg
    from effssl_plugin.data import build_pretrain_dataset

    effssl_plugin.register()
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = compose(
            "effssl",
            overrides=[
                "machine=cpu",
                "dataset=custom_lowres",
                f"data.train_path={hydra_path(train_dir)}",
                "data.val_path=null",
                f"data.fraction={fraction}",
                f"optimizer.batch_size={args.batch}",
                *args.effssl_overrides,
            ],
        )
    cfg = parse_pretrain_cfg(cfg)
    dataset = build_pretrain_dataset(cfg)

    class WithIndex(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i):
            index, views, _ = dataset[i]
            return views[0], index

    return WithIndex(), cfg


def save_state(ckpt: Path, model, optimizer, center, epoch: int) -> None:
    """The official run's checkpoint after ``epoch`` epochs, with every random state."""
    import numpy as np
    import torch

    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "center": center,
        "epoch": epoch,
        "py_rng": random.getstate(),
        "np_rng": np.random.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = ckpt.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, ckpt)


def load_state(ckpt: Path, model, optimizer, center):
    """(bank, epochs done) from the checkpoint, model, optimizer and random states restored;
    ``(center, 0)`` without one."""
    import numpy as np
    import torch

    if not ckpt.exists():
        return center, 0
    state = torch.load(ckpt, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    random.setstate(state["py_rng"])
    np.random.set_state(state["np_rng"])
    torch.set_rng_state(state["torch_rng"])
    print(f"[official] resumed at epoch {state['epoch']}", flush=True)
    return state["center"], state["epoch"]


def build_model(official, args, ns, patches: list[str], run_dir: Path):
    """The official ``FeatCLS`` on the study's backbone, seeded; writes ``patches.txt``."""
    import numpy as np
    import torch

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = official.FeatCLS(official_encoder(args.model), ns)
    model = model.to(memory_format=torch.channels_last)
    patches.append("model in channels_last memory format, as the launcher's (speed only)")
    (run_dir / "patches.txt").write_text("\n".join(patches) + "\n")
    for p in patches:
        print(f"[official] patch: {p}", flush=True)
    return model


def calibrate(official, model, center, loader) -> None:
    """The official calibration loop (``main_worker``), verbatim: every row from the
    untrained network's features."""
    import torch

    for images, labels in loader:
        with torch.no_grad():
            output = model(images)
            official.update_feature(center, output, labels, momentum=0)


def evaluate(run_dir: Path, model, sets, epoch: int, train_s: float, steps: int) -> None:
    """The kNN after ``epoch`` epochs, into ``evals.csv``."""
    top1, top5 = knn_eval(model.encoder_q.backbone, sets)
    EvalLog(run_dir).add(
        epoch=epoch,
        train_s=round(train_s, 2),
        steps=steps,
        knn_top1=round(top1, 3),
        knn_top5=round(top5, 3),
    )
    print(f"[{run_dir.name}] epoch {epoch}: kNN top-1 {top1:.2f}", flush=True)


def official_worker(args) -> None:
    """The official training loop (EMA bank) on our model, data and evaluation."""
    warnings.filterwarnings("ignore")
    import torch
    from torch.utils.data import DataLoader

    official = load_official(args.official_src)
    patches = official_patches(official) + variant_patches(args.variant)
    threads = set_threads(args)
    run_dir = args.out / "runs" / run_name("official", args.variant, args.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_start(run_dir, threads)
    log = EvalLog(run_dir)
    train_dir, fraction, eval_dir = study_data(args, ensure_data(args.data_dir))
    sets = eval_sets(train_dir, fraction, eval_dir)
    dataset, cfg = indexed_dataset(args, train_dir, fraction)
    lr = cfg.optimizer.lr  # solo-learn's scaled lr (per 256 x batch / 256), as our runs
    k = len(dataset) if args.negatives < 0 else args.negatives
    ns = official_args(lr, args.epochs, k, batch_size=args.batch)
    model = build_model(official, args, ns, patches, run_dir)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    ckpt = run_dir / "official.pt"
    center, start_epoch = load_state(ckpt, model, optimizer, torch.zeros(len(dataset), ns.dim))
    logger = official.construct_logger(f"official-{args.seed}", str(run_dir))
    train_s = log.train_seconds_at(start_epoch)
    t0 = time.perf_counter()
    if start_epoch == 0:
        calibration = loader
        if args.variant == OFFICIAL_LIKE_PLUGIN:
            calibration = DataLoader(
                dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers
            )
        calibrate(official, model, center, calibration)
    for epoch in range(start_epoch, args.epochs):
        official.adjust_learning_rate(optimizer, epoch, ns)
        official.train(loader, model, criterion, optimizer, epoch, ns, logger, center)
        train_s += time.perf_counter() - t0
        log.add_time(epoch + 1, train_s)
        save_state(ckpt, model, optimizer, center, epoch + 1)
        if epoch + 1 in set(args.eval_epochs):
            evaluate(run_dir, model, sets, epoch + 1, train_s, (epoch + 1) * len(loader))
        if paused(args.out) or epoch + 1 >= last_epoch(args):
            return
        t0 = time.perf_counter()
