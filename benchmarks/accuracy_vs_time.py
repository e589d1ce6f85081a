"""kNN accuracy against training wall-clock time on real CIFAR-10: EffSSL against
solo-learn's SimCLR, BYOL and MoCo v2+, with the same small timm backbone and the same
time budget, plus EffSSL ablations and data-efficiency runs.

Every run trains through this package's launcher (``pretrain``) for a fixed wall-clock
budget, with a cosine learning-rate schedule over that budget (after each recipe's warm-up
share), and pauses at regular intervals to evaluate a weighted kNN (solo-learn's
classifier, cosine, k=200, T=0.07) on the 10,000 test images with the frozen backbone's
features, the reference set being the 50,000 training images (evaluation time is not
counted). The calibration pass of EffSSL and all data loading are counted.

    python benchmarks/accuracy_vs_time.py                          # 4 methods, 20 min each
    python benchmarks/accuracy_vs_time.py --budget-min 10 --fraction 0.1 0.25
    python benchmarks/accuracy_vs_time.py --ablations --budget-min 10
    python benchmarks/accuracy_vs_time.py --random-init            # untrained-backbone kNN
    python benchmarks/accuracy_vs_time.py --report-only            # tables and plots again

Writes ``results.csv`` (one row per evaluation), ``accuracy_vs_time_*.png`` and
``report.md`` into ``--out``. Runs already in ``results.csv`` are skipped (resumable);
while a file ``PAUSE`` exists in ``--out`` no new run starts.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10_jpg_q75.tar.gz"
METHODS = ("effssl", "simclr", "byol", "mocov2plus")
ABLATIONS = {
    "default": [],
    "bank_update=ema": ["method_kwargs.bank_update=ema"],
    "bank_init=random": ["method_kwargs.bank_init=random"],
    "kl_weight=0": ["method_kwargs.kl_weight=0"],
    "cutmix off": ["method_kwargs.cutmix_alpha=0"],
    "num_negatives=all": ["method_kwargs.num_negatives=-1"],
    "proj_output_dim=128": ["method_kwargs.proj_output_dim=128"],
}
FIELDS = [
    "method",
    "variant",
    "fraction",
    "seed",
    "budget_min",
    "eval",
    "train_min",
    "steps",
    "epochs",
    "knn_top1",
    "knn_top5",
    "k",
    "T",
    "model",
    "batch",
    "images",
]
K, T = 200, 0.07
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# ------------------------------------------------------------------------ data
def ensure_data(data_dir: Path) -> Path:
    """CIFAR-10 JPEG folders (train/, test/), extracted once from the shared archive."""
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        return data_dir
    if not ARCHIVE.is_file():
        sys.exit(f"no data: {ARCHIVE} not found; pass --data-dir with train/ and test/")
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"extracting {ARCHIVE} to {data_dir} ...", flush=True)
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(data_dir, filter="data")
    return data_dir


def load_split(folder: Path):
    """All images of an ImageFolder as normalised float tensors (decoded once)."""
    import torch
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    ds = ImageFolder(str(folder), tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=1000, num_workers=2)
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------------- worker
def knn_eval(backbone, train, test, device) -> tuple[float, float]:
    import torch

    from effssl_plugin.knn import WeightedKNNClassifierTM1

    was_training = backbone.training
    backbone.eval()
    feats = []
    with torch.no_grad():
        for x, _ in (train, test):
            out = []
            for i in range(0, x.shape[0], 1000):
                xb = x[i : i + 1000].to(device).to(memory_format=torch.channels_last)
                out.append(backbone(xb).float().cpu())
            feats.append(torch.cat(out))
    backbone.train(was_training)
    knn = WeightedKNNClassifierTM1(k=K, T=T, distance_fx="cosine")
    knn(train_features=feats[0], train_targets=train[1])
    knn(test_features=feats[1], test_targets=test[1])
    return knn.compute()


def make_budget_callback(args, writer_row, train, test, warmup_share: float):
    from lightning.pytorch.callbacks import Callback

    class TimeBudget(Callback):
        """Cosine lr over the wall-clock budget (after a linear warm-up share), kNN
        evaluations at regular intervals (not counted), stop when the budget is spent."""

        def __init__(self) -> None:
            self.budget = args.budget_min * 60
            self.eval_points = [self.budget * (i + 1) / args.evals for i in range(args.evals)]
            self.paused = 0.0
            self.evals_done = 0
            self.images = 0

        def elapsed(self) -> float:
            return time.perf_counter() - self.start - self.paused

        def on_train_start(self, trainer, module) -> None:
            self.start = time.perf_counter()  # before the module's hook: calibration counts
            self.base_lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
            self.warmup = warmup_share

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            frac = min(1.0, self.elapsed() / self.budget)
            if frac < self.warmup:
                factor = frac / self.warmup
            else:
                progress = (frac - self.warmup) / max(1e-8, 1 - self.warmup)
                factor = 0.5 * (1 + math.cos(math.pi * progress))
            for group, lr in zip(trainer.optimizers[0].param_groups, self.base_lrs, strict=True):
                group["lr"] = lr * factor

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.images += int(batch[0].numel())
            t = self.elapsed()
            if self.evals_done < len(self.eval_points) and t >= self.eval_points[self.evals_done]:
                pause = time.perf_counter()
                top1, top5 = knn_eval(module.backbone, train, test, module.device)
                self.evals_done += 1
                steps = trainer.global_step
                writer_row(
                    eval=self.evals_done,
                    train_min=round(t / 60, 3),
                    steps=steps,
                    epochs=round(self.images / trainer.num_training_batches / args.batch, 3),
                    knn_top1=round(top1, 3),
                    knn_top5=round(top5, 3),
                    images=self.images,
                )
                print(
                    f"[{args.method}/{args.variant}/f={args.fraction}] {t / 60:.1f} min, "
                    f"{steps} steps: kNN top-1 {top1:.2f}",
                    flush=True,
                )
                self.paused += time.perf_counter() - pause
                if self.evals_done == len(self.eval_points):
                    trainer.should_stop = True

    return TimeBudget()


def worker(args) -> None:
    warnings.filterwarnings("ignore")
    from hydra import compose, initialize_config_module

    from effssl_plugin.main_pretrain import pretrain

    data = ensure_data(args.data_dir)
    train, test = load_split(data / "train"), load_split(data / "test")
    overrides = [
        f"machine={args.machine}",
        "dataset=custom_lowres",
        f"data.train_path={data / 'train'}",
        "data.val_path=null",
        f"data.num_workers={args.workers}",
        f"data.fraction={args.fraction if args.fraction < 1 else -1}",
        f"backbone.kwargs.model_name={args.model}",
        f"optimizer.batch_size={args.batch}",
        "knn_eval.enabled=false",
        "checkpoint.enabled=false",
        f"checkpoint.dir={Path(tempfile.gettempdir()) / 'effssl_benchmark_runs'}",
        "auto_resume.enabled=false",
        f"seed={args.seed}",
        *(ABLATIONS[args.variant] if args.method == "effssl" else []),
    ]
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = compose(args.method, overrides=overrides)
    rows = round(len(train[1]) * args.fraction) if args.fraction < 1 else len(train[1])
    if args.method == "effssl" and cfg.method_kwargs.num_negatives >= rows:
        # k = 10,000 negatives needs more than 10,000 images: use every row instead
        print(f"{rows} training images <= num_negatives: using all rows (-1)", flush=True)
        cfg.method_kwargs.num_negatives = -1
    cfg.augmentations[0].mean = list(CIFAR_MEAN)
    cfg.augmentations[0].std = list(CIFAR_STD)
    # each recipe's warm-up share of its schedule (solo-learn's default: 10 epochs), then
    # a budget-driven schedule: no epoch-based scheduler, no epoch limit
    warmup_share = cfg.scheduler.get("warmup_epochs", 10) / cfg.max_epochs
    cfg.scheduler.name = "none"
    cfg.max_epochs = 100_000

    results = args.out / "results.csv"

    def writer_row(**row) -> None:
        base = {
            "method": args.method,
            "variant": args.variant,
            "fraction": args.fraction,
            "seed": args.seed,
            "budget_min": args.budget_min,
            "k": K,
            "T": T,
            "model": args.model,
            "batch": args.batch,
        }
        new = not results.exists()
        with open(results, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow({**base, **row})

    callback = make_budget_callback(args, writer_row, train, test, warmup_share)
    pretrain(cfg, extra_callbacks=[callback])


def random_init_reference(args) -> None:
    """kNN top-1 of the untrained backbone (same factory, seed and evaluation): the level
    a pretraining run has to beat before it has learned anything."""
    import torch

    import effssl_plugin

    effssl_plugin.register()
    from solo.methods.base import BaseMethod

    data = ensure_data(args.data_dir)
    train, test = load_split(data / "train"), load_split(data / "test")
    out = args.out / "random_init.csv"
    for seed in args.seeds:
        torch.manual_seed(seed)
        backbone = BaseMethod._BACKBONES["timm"](
            method="effssl", model_name=args.model, low_res=True
        ).to(memory_format=torch.channels_last)
        top1, top5 = knn_eval(backbone, train, test, torch.device("cpu"))
        print(f"random-init {args.model} seed {seed}: kNN top-1 {top1:.2f}, top-5 {top5:.2f}")
        new = not out.exists()
        with open(out, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["model", "seed", "knn_top1", "knn_top5", "k", "T"])
            if new:
                w.writeheader()
            w.writerow(
                {
                    "model": args.model,
                    "seed": seed,
                    "knn_top1": round(top1, 3),
                    "knn_top5": round(top5, 3),
                    "k": K,
                    "T": T,
                }
            )


# ------------------------------------------------------------------ orchestration
def run_key(r: dict) -> tuple:
    return (r["method"], r["variant"], float(r["fraction"]), int(r["seed"]), float(r["budget_min"]))


def done_runs(results: Path, evals: int) -> set[tuple]:
    """Runs whose every evaluation is in ``results.csv`` (an interrupted run is not done)."""
    if not results.exists():
        return set()
    with open(results) as f:
        rows = list(csv.DictReader(f))
    last: dict[tuple, int] = {}
    for r in rows:
        last[run_key(r)] = max(last.get(run_key(r), 0), int(r["eval"]))
    return {key for key, n in last.items() if n >= evals}


def drop_partial_run(results: Path, key: tuple) -> None:
    """Remove the rows an interrupted run left, so its rerun does not duplicate them."""
    if not results.exists():
        return
    with open(results) as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if run_key(r) != key]
    if len(kept) != len(rows):
        with open(results, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(kept)


def plan(args) -> list[tuple[str, str, float, int]]:
    runs = []
    for fraction in args.fraction:
        for seed in args.seeds:
            if args.ablations:
                runs += [("effssl", v, fraction, seed) for v in ABLATIONS]
            else:
                for m in args.methods:
                    variants = args.effssl_variants if m == "effssl" else ["default"]
                    runs += [(m, v, fraction, seed) for v in variants]
    return runs


def run_all(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "runs.log"
    with open(log, "a") as f:
        f.write(
            f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()} {os.cpu_count()} cpus, "
            f"python {platform.python_version()}: {' '.join(sys.argv)}\n"
        )
    for method, variant, fraction, seed in plan(args):
        while (args.out / "PAUSE").exists():  # lets a person use the machine between runs
            time.sleep(10)
        key = (method, variant, float(fraction), seed, float(args.budget_min))
        if key in done_runs(args.out / "results.csv", args.evals):
            print(f"skip {method}/{variant}/f={fraction}/seed={seed}: in results.csv")
            continue
        drop_partial_run(args.out / "results.csv", key)
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--method",
            method,
            "--variant",
            variant,
            "--fraction",
            str(fraction),
            "--seed",
            str(seed),
            "--budget-min",
            str(args.budget_min),
            "--evals",
            str(args.evals),
            "--model",
            args.model,
            "--batch",
            str(args.batch),
            "--workers",
            str(args.workers),
            "--machine",
            args.machine,
            "--data-dir",
            str(args.data_dir),
            "--out",
            str(args.out),
        ]
        print(f"== {method}/{variant} fraction={fraction} seed={seed}", flush=True)
        start = time.time()
        with open(log, "a") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=args.out)
        print(f"   exit {proc.returncode} after {(time.time() - start) / 60:.1f} min", flush=True)
    report(args)


# ---------------------------------------------------------------------- report
def report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = args.out / "results.csv"
    if not results.exists():
        print("no results yet")
        return
    with open(results) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("fraction", "budget_min", "train_min", "knn_top1", "knn_top5", "epochs"):
            r[key] = float(r[key])
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["method"], r["variant"], r["fraction"], r["budget_min"], r["seed"])
        groups.setdefault(key, []).append(r)
    lines = ["# accuracy_vs_time results", ""]
    lines += [
        f"kNN (cosine, k={K}, T={T}) top-1 on the 10,000 CIFAR-10 test images, the 50,000 "
        "training images as reference.",
        "",
    ]
    reference = None
    if (args.out / "random_init.csv").exists():
        with open(args.out / "random_init.csv") as f:
            refs = [float(r["knn_top1"]) for r in csv.DictReader(f) if r["model"] == args.model]
        if refs:
            reference = sum(refs) / len(refs)
            lines += [
                f"Untrained {args.model} (random init, {len(refs)} seed(s)): kNN top-1 "
                f"{reference:.2f} (`--random-init`).",
                "",
            ]
    settings = sorted({(k[2], k[3]) for k in groups})
    for fraction, budget in settings:
        sel = {k: v for k, v in groups.items() if k[2] == fraction and k[3] == budget}
        variants = sorted({(k[0], k[1]) for k in sel}, key=lambda mv: (mv[1] != "default", mv))
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        single_eval = max(len(v) for v in sel.values()) == 1
        lines += [
            f"## data fraction {fraction:g}, budget {budget:g} min",
            "",
            "| method | variant | runs | final top-1 (mean) | spread (min-max) | epochs |",
            "|---|---|---|---|---|---|",
        ]
        for method, variant in variants:
            runs = [
                sorted(v, key=lambda r: r["train_min"])
                for k, v in sel.items()
                if k[0] == method and k[1] == variant
            ]
            finals = [run[-1]["knn_top1"] for run in runs]
            epochs = [run[-1]["epochs"] for run in runs]
            mean = sum(finals) / len(finals)
            lines.append(
                f"| {method} | {variant} | {len(runs)} | {mean:.2f} | "
                f"{min(finals):.2f}-{max(finals):.2f} | {sum(epochs) / len(epochs):.1f} |"
            )
            label = method if variant == "default" else f"{method} ({variant})"
            if single_eval:  # one evaluation per run: a bar per variant (mean, min-max)
                y = variants.index((method, variant))
                ax.barh(y, mean, color=f"C{y}", xerr=[[mean - min(finals)], [max(finals) - mean]])
                ax.text(mean + 0.3, y, f"{mean:.2f}", va="center")
                continue
            for i, run in enumerate(runs):
                ax.plot(
                    [0] + [r["train_min"] for r in run],
                    [10.0] + [r["knn_top1"] for r in run],
                    marker="o",
                    color=f"C{variants.index((method, variant))}",
                    label=label if i == 0 else None,
                    alpha=0.9 if i == 0 else 0.5,
                )
        if single_eval:
            if reference:
                ax.axvline(reference, color="gray", ls="--", label="random-init backbone")
            ax.set_yticks(
                range(len(variants)),
                [m if v == "default" else f"{m} ({v})" for m, v in variants],
            )
            ax.invert_yaxis()
            ax.set_xlabel(f"kNN top-1 (%) after {budget:g} min of training (2 CPU cores)")
        else:
            if reference:
                ax.axhline(reference, color="gray", ls="--", label="random-init backbone")
            ax.set_xlabel("training wall-clock (min, 2 CPU cores; 0 min drawn at chance, 10%)")
            ax.set_ylabel("kNN top-1 (%)")
        ax.set_title(f"CIFAR-10, {fraction:.0%} of the training data, {budget:g}-min budget")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        name = f"accuracy_vs_time_f{fraction:g}_b{budget:g}.png"
        fig.tight_layout()
        fig.savefig(args.out / name, dpi=120)
        plt.close(fig)
        lines += ["", f"![plot]({name})", ""]
        n_evals = max(len(v) for v in sel.values())
        if n_evals > 1:  # top-1 at each evaluation (first run of each variant)
            first = {
                (k[0], k[1]): sorted(v, key=lambda r: r["train_min"])
                for k, v in sorted(sel.items(), key=lambda kv: kv[0][4], reverse=True)
            }
            minutes = [f"{budget * (i + 1) / n_evals:g} min" for i in range(n_evals)]
            lines += ["| method | variant | " + " | ".join(minutes) + " |"]
            lines += ["|---|---|" + "---|" * n_evals]
            for (method, variant), run in first.items():
                cells = [f"{r['knn_top1']:.2f}" for r in run] + ["-"] * (n_evals - len(run))
                lines.append(f"| {method} | {variant} | " + " | ".join(cells) + " |")
            lines.append("")
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--ablations", action="store_true", help="effssl variants instead")
    p.add_argument(
        "--effssl-variants",
        nargs="+",
        default=["default"],
        choices=list(ABLATIONS),
        help="effssl settings to run in the method comparison",
    )
    p.add_argument("--budget-min", type=float, default=20.0)
    p.add_argument("--evals", type=int, default=5, help="kNN evaluations per run")
    p.add_argument("--fraction", type=float, nargs="+", default=[1.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--model", default="mobilenetv3_small_100")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--machine", default="cpu", choices=["cpu", "auto"], help="auto: GPUs if any")
    p.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "effssl" / "cifar10")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "accuracy_vs_time")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="kNN of the untrained backbone (per seed) into random_init.csv, then the report",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out.resolve()
    args.data_dir = args.data_dir.resolve()
    if args.worker:
        args.fraction = args.fraction[0]
        worker(args)
    elif args.random_init:
        random_init_reference(args)
        report(args)
    elif args.report_only:
        report(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
