"""Per-step wall time and peak memory: EffSSL against solo-learn's SimCLR, BYOL and
MoCo v2+, and the bare backbone (one view, forward + backward: the floor of any
single-branch method), all with the same timm backbone, batch and resolution.

Each method trains through a real Lightning ``Trainer`` on in-memory random images (data
loading is excluded), configured from this package's configs (solo-learn's recipes for the
baselines). After warm-up, methods run in interleaved blocks (A B C ... A B C ...) and the
median step time of each is reported with its ratio to EffSSL.

    python benchmarks/step_cost.py [--device cpu|cuda] [--model resnet18] [--batch 256]
        [--size 32] [--rounds 4] [--steps 3] [--profile N] [--out benchmarks/results]

``--profile N`` then profiles N more steps of each method with ``torch.profiler`` and writes
the operators that take the most time to ``step_cost_profile_<device>_<model>_b<batch>.txt``.

Targets: effssl <= 0.55 x simclr, <= 0.5 x byol, <= 1.15 x the bare backbone (issue 13:
<= 1.3 x for mobilenetv3_small_100). ``--methods effssl-bf16`` adds effssl with the bank
products in bfloat16 (``method_kwargs.bank_matmul=bfloat16``), ``effssl-bf16-bank`` also
the bank rows (``method_kwargs.bank_dtype=bfloat16``); ``effssl-proj512`` a 512-wide projector
and bank (the study's ``proj=512``).

Peak memory: exact on CUDA (``max_memory_allocated``); on CPU it is the growth of the
process's peak resident memory during the method's steps, approximate because memory
freed by an earlier block is reused (``n/a`` when it did not grow).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from effssl_plugin import register
from effssl_plugin.config import parse_pretrain_cfg

METHODS = ("effssl", "simclr", "byol", "mocov2plus", "backbone")
#: effssl variants (``--methods effssl-bf16``): the effssl config plus these overrides
VARIANTS = {
    "effssl-bf16": ["method_kwargs.bank_matmul=bfloat16"],
    # also the rows stored in bfloat16 (half the bytes to gather and update)
    "effssl-bf16-bank": ["method_kwargs.bank_matmul=bfloat16", "method_kwargs.bank_dtype=bfloat16"],
    # a 512-wide projector and bank (the study's proj=512 ablation): its cost per step
    "effssl-proj512": ["method_kwargs.proj_hidden_dim=512", "method_kwargs.proj_output_dim=512"],
}
#: effssl's step over the method's, at most (issue 13: 1.3 x the backbone for small models)
TARGETS = {"simclr": 0.55, "byol": 0.5, "backbone": 1.15}


class RandomViews(Dataset):
    """``(index, [views], label)`` items of random images, like solo-learn's datasets."""

    def __init__(self, n: int, views: int, size: int) -> None:
        self.n, self.views = n, views
        self.images = torch.randn(16, 3, size, size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return i, [self.images[(i + v) % 16] for v in range(self.views)], i % 10


class StepTimer(Callback):
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.times: list[float] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, *args) -> None:
        self._sync()
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self._sync()
        self.times.append(time.perf_counter() - self.start)


def reset_peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    try:  # Linux: reset VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _vm("VmRSS")


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return _vm("VmHWM")


def _vm(key: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def bare_backbone_class():
    """solo-learn's BaseMethod trained through its backbone: one view, forward + backward."""
    from solo.methods.base import BaseMethod

    class BareBackbone(BaseMethod):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            # the online classifier sees detached features: add a loss through the backbone
            return out["loss"] + out["feats"][0].float().pow(2).mean()

    return BareBackbone


def build(method: str, args) -> tuple[LightningModule, int]:
    from solo.methods import METHODS as SOLO

    effssl = method == "effssl" or method in VARIANTS
    config = "effssl" if effssl or method == "backbone" else method
    overrides = [
        f"backbone.kwargs.model_name={args.model}",
        f"augmentations.0.crop_size={args.size}",
        f"optimizer.batch_size={args.batch}",
        "data.val_path=null",
        "knn_eval.enabled=false",
        f"accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        "devices=1",
        f"precision={args.precision}",
        "strategy=auto",
        "sync_batchnorm=false",
    ]
    if effssl:
        overrides += [
            f"+method_kwargs.num_samples={args.samples}",
            # the official k, or as many as a small bank holds
            f"method_kwargs.num_negatives={min(args.negatives, args.samples - args.batch)}",
            "method_kwargs.bank_init=random",  # calibration is not a per-step cost
            *args.overrides,
            *VARIANTS.get(method, []),
        ]
    if method == "backbone":
        overrides.append("method=base")
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = compose(config, overrides=overrides)
    cfg = parse_pretrain_cfg(cfg)
    model = bare_backbone_class()(cfg) if method == "backbone" else SOLO[cfg.method](cfg)
    if not cfg.performance.disable_channel_last:
        model = model.to(memory_format=torch.channels_last)
    return model, int(cfg.data.num_large_crops)


def run_steps(model, views: int, steps: int, args, device) -> tuple[list[float], int]:
    timer = StepTimer(device)
    loader = DataLoader(RandomViews(args.batch * (steps + 1), views, args.size), args.batch)
    trainer = Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    before = reset_peak_memory(device)
    trainer.fit(model, loader)
    return timer.times, max(0, peak_memory(device) - before)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--samples", type=int, default=50_000, help="effssl bank rows")
    p.add_argument("--negatives", type=int, default=10_000, help="effssl k (capped by the bank)")
    p.add_argument("--precision", default=None, help="default: 32-true (cpu), 16-mixed (cuda)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved timed rounds")
    p.add_argument("--steps", type=int, default=3, help="steps per method per round")
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"also: {list(VARIANTS)}")
    p.add_argument("--tag", default="", help="suffix of the output file names")
    p.add_argument("--backbone-target", type=float, default=TARGETS["backbone"])
    p.add_argument("--profile", type=int, default=0, help="then profile N steps per method")
    p.add_argument("--overrides", nargs="*", default=[], help="extra effssl config overrides")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    args.precision = args.precision or ("16-mixed" if args.device == "cuda" else "32-true")
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    register()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
    )
    print(
        f"backbone timm {args.model} (low-res stem), batch {args.batch}, {args.size} px, "
        f"precision {args.precision}, {args.rounds} rounds x {args.steps} steps"
    )
    models = {m: build(m, args) for m in args.methods}
    times: dict[str, list[float]] = {m: [] for m in models}
    per_round: dict[str, list[float]] = {m: [] for m in models}  # each round's median
    peaks: dict[str, int] = dict.fromkeys(models, 0)
    for model, views in models.values():  # warm-up
        run_steps(model, views, 2, args, device)
    for r in range(args.rounds):
        for name, (model, views) in models.items():
            ts, peak = run_steps(model, views, args.steps, args, device)
            times[name] += ts
            per_round[name].append(statistics.median(ts))
            peaks[name] = max(peaks[name], peak)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    targets = {**TARGETS, "backbone": args.backbone_target}
    rows = []
    print(f"\n{'method':<13}{'views':>6}{'median s/step':>15}{'peak MiB':>10}")
    for name, med in medians.items():
        peak = f"{peaks[name] / 2**20:.0f}" if peaks[name] else "n/a"
        print(f"{name:<13}{models[name][1]:>6}{med:>15.3f}{peak:>10}")
        rows.append(
            {
                "method": name,
                "views": models[name][1],
                "median_s_per_step": round(med, 4),
                "peak_mib": round(peaks[name] / 2**20, 1),
                "steps_timed": len(times[name]),
                "device": args.device,
                "model": args.model,
                "batch": args.batch,
                "size": args.size,
                "precision": args.precision,
                # what the measurement ran with (protocol 02 checks them): torch's threads, the
                # effssl bank's rows and --negatives as given (-1: every row)
                "threads": torch.get_num_threads(),
                "samples": args.samples,
                "negatives": args.negatives,
                **{f"effssl_over_{m}": "" for m in TARGETS},
                **{f"effssl_over_{m}_rounds": "" for m in TARGETS},
            }
        )
    print("\neffssl step / method step (target: at most)")
    for row in rows:
        if row["method"] != "effssl" and row["method"] not in VARIANTS:
            continue
        for other, target in targets.items():
            if other in medians:
                ratio = medians[row["method"]] / medians[other]
                row[f"effssl_over_{other}"] = round(ratio, 4)
                rounds = [
                    a / b for a, b in zip(per_round[row["method"]], per_round[other], strict=True)
                ]
                row[f"effssl_over_{other}_rounds"] = " ".join(f"{r:.3f}" for r in rounds)
                verdict = "met" if ratio <= target else "NOT met"
                spread = f"rounds {min(rounds):.2f}-{max(rounds):.2f}"
                print(
                    f"  {row['method']:<12} / {other:<11} {ratio:6.2f}  ({spread}; "
                    f"<= {target}: {verdict})"
                )
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"step_cost_{args.device}_{args.model}_b{args.batch}{args.tag}.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {out}")
    if args.profile:
        profile_steps(models, args, device)


def profile_steps(models: dict, args, device: torch.device) -> None:
    """``torch.profiler`` tables (self time, top 30 operators) of ``--profile`` steps each."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out = args.out / f"step_cost_profile_{args.device}_{args.model}_b{args.batch}{args.tag}.txt"
    with open(out, "w") as f:
        for name, (model, views) in models.items():
            with profile(activities=activities) as prof:
                run_steps(model, views, args.profile, args, device)
            table = prof.key_averages().table(sort_by=sort, row_limit=30)
            f.write(f"== {name}: {args.profile} steps\n{table}\n")
            print(f"== {name}: {args.profile} steps\n{table}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
