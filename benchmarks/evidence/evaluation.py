"""The study's evaluations of a frozen backbone: the offline weighted kNN (solo-learn's,
cosine, k=200, T=0.07) at the evaluation epochs, the untrained-backbone reference, and the
linear probes (``effssl-linear``) of finished runs."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from .data import ensure_data, prepare_study_data, study_data
from .runs import finished, hydra_path, parse_run_name, run_dirs, set_threads

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
K, T = 200, 0.07


def load_images(paths: list[str]):
    """Images as normalised float tensors (decoded once)."""
    import torch
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    return torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])


def eval_sets(train_dir: Path, fraction: float, eval_dir: Path):
    """(train x, train y, eval x, eval y): the run's training share (the images of
    ``train_dir``, or with ``0 < fraction < 1`` solo-learn's stratified ``data.fraction``
    split of them, the same files) and every image of ``eval_dir`` (the test images, or the
    held-out validation images)."""
    import torch
    from sklearn.model_selection import train_test_split
    from torchvision.datasets import ImageFolder

    train = ImageFolder(str(train_dir)).samples
    if 0 < fraction < 1:
        files, labels = [f for f, _ in train], [label for _, label in train]
        files, _, labels, _ = train_test_split(
            files, labels, train_size=fraction, stratify=labels, random_state=42
        )
        train = list(zip(files, labels, strict=True))
    evaluated = ImageFolder(str(eval_dir))
    if evaluated.class_to_idx != ImageFolder(str(train_dir)).class_to_idx:
        sys.exit(f"{eval_dir} and {train_dir} index their classes differently")
    test = evaluated.samples
    return (
        load_images([f for f, _ in train]),
        torch.tensor([label for _, label in train]),
        load_images([f for f, _ in test]),
        torch.tensor([label for _, label in test]),
    )


def backbone_features(backbone, images: list) -> list:
    """Frozen eval-mode features (float32, on the CPU) of each tensor of images, in chunks of
    500 on the backbone's device (the training device: a GPU with ``--machine auto``)."""
    import torch

    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    feats = []
    with torch.no_grad():
        for x in images:
            chunks = (x[i : i + 500].to(device) for i in range(0, x.shape[0], 500))
            feats.append(torch.cat([backbone(c).float().cpu() for c in chunks]))
    backbone.train(was_training)
    return feats


def weighted_knn(train_feats, train_y, test_feats, test_y) -> tuple[float, float]:
    """solo-learn's weighted kNN (cosine, k=200, T=0.07): (top-1, top-5) of the test features
    against the reference features; NaN for non-finite features (a diverged network)."""
    import torch

    from effssl_plugin.knn import WeightedKNNClassifierTM1

    if not all(bool(torch.isfinite(f).all()) for f in (train_feats, test_feats)):
        return math.nan, math.nan
    knn = WeightedKNNClassifierTM1(k=K, T=T, distance_fx="cosine")
    knn(train_features=train_feats, train_targets=train_y)
    knn(test_features=test_feats, test_targets=test_y)
    top1, top5 = knn.compute()
    return float(top1), float(top5)


def knn_eval(backbone, sets) -> tuple[float, float]:
    """solo-learn's weighted kNN (cosine, k=200, T=0.07) on frozen eval-mode features:
    ``sets`` = (reference images, labels, evaluated images, labels)."""
    train_feats, test_feats = backbone_features(backbone, [sets[0], sets[2]])
    return weighted_knn(train_feats, sets[1], test_feats, sets[3])


def study_backbone(model_name: str):
    """A fresh timm backbone with the low-resolution stem, as the launcher builds it."""
    import effssl_plugin

    effssl_plugin.register()
    from solo.methods.base import BaseMethod

    return BaseMethod._BACKBONES["timm"](method="effssl", model_name=model_name, low_res=True)


def random_init_reference(args) -> None:
    """kNN of the untrained backbone, per seed, with the study's evaluation."""
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    set_threads(args)
    prepare_study_data(args)
    sets = eval_sets(*study_data(args, ensure_data(args.data_dir)))
    path = args.out / "random_init.csv"
    done = set()
    if path.exists():
        with open(path) as f:
            done = {(r["model"], int(r["seed"])) for r in csv.DictReader(f)}
    for seed in args.seeds:
        if (args.model, seed) in done:
            continue
        torch.manual_seed(seed)
        top1, top5 = knn_eval(study_backbone(args.model), sets)
        print(f"random-init {args.model} seed {seed}: kNN top-1 {top1:.2f}")
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["model", "seed", "knn_top1", "knn_top5"])
            if new:
                w.writeheader()
            w.writerow({"model": args.model, "seed": seed, "knn_top1": top1, "knn_top5": top5})


def linear_command(
    args,
    pretrain_dir: Path,
    run_dir: Path,
    eval_dir: Path,
    fraction,
    logs: str = "linear",
    train_dir: Path | None = None,
) -> list:
    """The ``effssl-linear`` command of one run's probe (the evaluation images once, at the
    end; its logs in ``<run>/<logs>``), trained on the images of ``train_dir`` (None: the
    pretraining run's own training images, the probe's default)."""
    train = [] if train_dir is None else [f"data.train_path={hydra_path(train_dir)}"]
    return [
        sys.executable,
        "-m",
        "effssl_plugin.main_linear",
        f"pretrained_feature_extractor={hydra_path(pretrain_dir)}",
        f"machine={args.machine}",
        f"data.val_path={hydra_path(eval_dir)}",
        f"data.fraction={fraction}",
        f"data.num_workers={args.workers}",
        f"max_epochs={args.linear_epochs}",
        f"+check_val_every_n_epoch={args.linear_epochs}",  # the test set once, at the end
        f"checkpoint.dir={hydra_path(run_dir / logs)}",
        "checkpoint.enabled=false",
        *train,
    ]


def linear_probes(args) -> None:
    """``effssl-linear`` on the final encoder of every finished launcher run (frozen backbone,
    the run's training share as labelled data, the 10,000 test images), into
    ``<run>/linear.json``; finished probes are skipped. With ``--eval-set val`` the probe is
    scored on the validation images instead of the test images."""
    data = ensure_data(args.data_dir)
    _, fraction, eval_dir = study_data(args, data)
    for run_dir in run_dirs(args):
        method, variant, seed = parse_run_name(run_dir.name)
        target = run_dir / "linear.json"
        if method == "official" or target.exists():
            continue
        if not finished(args, method, variant, seed):
            continue
        ckpt_dir = run_dir / "ckpt" / method
        if not ckpt_dir.is_dir():  # checkpoints stay local: a run finished on another machine
            print(f"== linear probe {run_dir.name}: skipped, no checkpoint here", flush=True)
            continue
        (pretrain_dir,) = ckpt_dir.iterdir()
        cmd = linear_command(args, pretrain_dir, run_dir, eval_dir, fraction)
        print(f"== linear probe {run_dir.name}", flush=True)
        if (result := run_probe(args, cmd, run_dir)) is not None:
            target.write_text(json.dumps(result, indent=1) + "\n")


def run_probe(args, cmd: list, run_dir: Path) -> dict | None:
    """Runs one ``effssl-linear`` command in ``run_dir``; its final metrics (``val_acc1``: top-1
    on the evaluation images) with the epochs and seconds, or None (its output printed) when
    it failed."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=run_dir)
    final = [line for line in proc.stdout.splitlines() if line.startswith("Final: ")]
    if proc.returncode != 0 or not final:
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        return None
    metrics = dict(kv.split("=") for kv in final[-1].removeprefix("Final: ").split(", "))
    result = {k: float(v) for k, v in metrics.items()}
    result.update(epochs=args.linear_epochs, seconds=round(time.perf_counter() - start, 1))
    print(f"   {result}", flush=True)
    return result
