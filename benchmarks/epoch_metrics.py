"""Per-epoch training metrics of a study's runs, side by side: for each seed, every variant's
epoch means of the logged losses (from each run's Lightning ``metrics.csv``), then each
variant's largest relative difference from the ``default`` run of the same seed.

    python benchmarks/epoch_metrics.py benchmarks/results/bank_bf16 \\
        [--metrics train_ce_loss_epoch train_kl_loss_epoch train_own_prob_epoch] \\
        [--method effssl]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

DEFAULT_METRICS = ["train_ce_loss_epoch", "train_kl_loss_epoch", "train_own_prob_epoch"]


def epoch_metrics(run_dir: Path, metrics: list[str]) -> dict[int, dict[str, float]]:
    """{epoch: {metric: value}} from every ``metrics.csv`` under ``run_dir`` (a resumed run
    has one per session; later sessions win)."""
    out: dict[int, dict[str, float]] = {}
    for path in sorted(run_dir.glob("ckpt/**/metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                for name in metrics:
                    if row.get(name):
                        out.setdefault(int(row["epoch"]), {})[name] = float(row[name])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="a study's --out folder")
    p.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS)
    p.add_argument("--method", default="effssl", help="the method whose runs are compared")
    args = p.parse_args()
    runs: dict[int, dict[str, dict]] = {}
    for run_dir in sorted((args.out / "runs").glob(f"{args.method}__*__s*")):
        _, variant, seed = run_dir.name.split("__")
        runs.setdefault(int(seed[1:]), {})[variant] = epoch_metrics(run_dir, args.metrics)
    for seed, variants in sorted(runs.items()):
        print(f"seed {seed}")
        for name in args.metrics:
            print(f"  {name}")
            for variant, epochs in variants.items():
                values = "  ".join(
                    f"{epochs[e].get(name, float('nan')):.5g}" for e in sorted(epochs)
                )
                print(f"    {variant:<28} {values}")
            ref = variants.get("default")  # every other variant against the default run
            for variant, epochs in variants.items():
                if ref is None or variant == "default":
                    continue
                diffs = [
                    abs(epochs[e][name] - ref[e][name]) / abs(ref[e][name])
                    for e in sorted(set(ref) & set(epochs))
                    if name in ref[e] and name in epochs[e] and ref[e][name]
                ]
                if diffs:
                    print(f"    {variant}: largest relative difference {max(diffs):.2%}")


if __name__ == "__main__":
    main()
