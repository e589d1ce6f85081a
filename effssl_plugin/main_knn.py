"""``effssl-knn``: offline weighted kNN of a pretrained checkpoint's backbone features.

Reuses solo-learn's :class:`~solo.utils.knn.WeightedKNNClassifier` (torchmetrics-1.x
compatible subclass) and classification datasets; features come from the frozen backbone
with evaluation transforms at the pretraining resolution.

    effssl-knn trained_models/effssl/<run>/            # newest checkpoint of a run
    effssl-knn run.ckpt --k 20 200 --temperature 0.07 0.1 --output knn.json
    effssl-knn trained_models/effssl/<run>/encoder/     # an exported encoder folder
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from effssl_plugin.cli import main_with_errors
from effssl_plugin.errors import EffSSLError

__all__ = ["main", "run_knn"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="effssl-knn", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "checkpoint",
        help="a run directory (newest checkpoint), a .ckpt file, or an exported encoder folder",
    )
    p.add_argument("--train-path", help="reference set (default: the pretraining data.train_path)")
    p.add_argument("--val-path", help="query set (default: the pretraining data.val_path)")
    p.add_argument("--k", type=int, nargs="+", default=[20, 200], help="neighbours")
    p.add_argument(
        "--temperature", type=float, nargs="+", default=[0.07], help="T of the cosine weights"
    )
    p.add_argument("--distance", choices=["cosine", "euclidean"], nargs="+", default=["cosine"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--output", type=Path, help="write the results as JSON here")
    return p.parse_args(argv)


def run_knn(args: argparse.Namespace) -> list[dict]:
    """Extracts features once, then evaluates every (distance, k, T) combination."""
    from effssl_plugin.data import check_data_paths
    from effssl_plugin.evaluation import (
        eval_datasets,
        eval_transforms,
        extract_features,
        load_pretrained_backbone,
    )
    from effssl_plugin.knn import WeightedKNNClassifierTM1

    backbone, cfg, ckpt = load_pretrained_backbone(args.checkpoint)
    if args.train_path:
        cfg.data.train_path = args.train_path
    if args.val_path:
        cfg.data.val_path = args.val_path
    check_data_paths(cfg)
    if cfg.data.val_path is None:
        raise EffSSLError("no query set: pass --val-path (the run had data.val_path=null)")

    _, transform = eval_transforms(cfg)
    train_set, val_set = eval_datasets(cfg, transform, transform)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )

    def loader(ds):
        return DataLoader(ds, batch_size=args.batch_size, num_workers=args.num_workers)

    train_x, train_y = extract_features(backbone, loader(train_set), device, "train features")
    val_x, val_y = extract_features(backbone, loader(val_set), device, "val features")
    results = []
    for distance in args.distance:
        for k in args.k:
            for t in args.temperature if distance == "cosine" else [None]:
                knn = WeightedKNNClassifierTM1(
                    k=k, T=t or 0.07, distance_fx=distance, feature_dtype=torch.float32
                )
                knn(train_features=train_x, train_targets=train_y)
                knn(test_features=val_x, test_targets=val_y)
                acc1, acc5 = knn.compute()
                row = {"distance": distance, "k": k, "T": t, "acc1": acc1, "acc5": acc5}
                print(f"kNN {distance} k={k} T={t}: top-1 {acc1:.2f}  top-5 {acc5:.2f}")
                results.append(row)
    summary = {
        "checkpoint": str(ckpt),
        "train_path": str(cfg.data.train_path),
        "val_path": str(cfg.data.val_path),
        "num_train": len(train_set),
        "num_val": len(val_set),
        "results": results,
    }
    if args.output:
        args.output.write_text(json.dumps(summary, indent=2))
    return results


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``effssl-knn``)."""
    from effssl_plugin.solo_compat import import_solo_quietly

    args = parse_args(argv)
    import_solo_quietly()  # solo-learn's and timm's import warnings stay off the console
    main_with_errors(lambda: run_knn(args), "effssl-knn")


if __name__ == "__main__":
    main()
