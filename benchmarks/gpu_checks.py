"""The checks behind ``benchmarks/gpu_smoke.sh`` and ``benchmarks/gpu_suite.sh``: each
subcommand prints what it saw and exits non-zero when its check fails.

    gpu_checks.py subset ARCHIVE OUT.tar.gz [--train-per-class 500] [--test-per-class 200]
    gpu_checks.py train [--probe FILE] [--expect-start-epoch N] [--expect-bank-device cuda]
        [--expect-run-dir DIR] [--no-knn-features] [--max-growth-mib M] -- OVERRIDE ...
    gpu_checks.py knn-agree RUN_DIR [--tol 15] [--dtype-tol 1] [--k 200] [--device cuda]
    gpu_checks.py ckpt-bank RUN_DIR --dtype bfloat16
    gpu_checks.py bank-oob --device cuda --case ema|fill|columns
    gpu_checks.py epochs --csv STEP_COST.csv --budget 240 --train-images 50000 --batch 512
    gpu_checks.py pipeline-rate [--device cuda] [--model resnet18] [--batch 512]
    gpu_checks.py suite-summary STUDY_DIR ...

``train`` composes the launcher's ``effssl`` config with the overrides, exactly as
``python main_pretrain.py --config-name effssl OVERRIDE ...`` does, and runs the launcher's
:func:`~effssl_plugin.main_pretrain.pretrain` with a probe callback: after every training
epoch it prints the memory in use (CUDA: allocated, peak and reserved, and nvidia-smi's
reading; always: the process's resident memory), the kNN training features the method holds
and the device and dtype of EffSSL's bank.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KNN_T = 0.07  # the online kNN's temperature (solo-learn's WeightedKNNClassifier default)


# ----------------------------------------------------------------------------- data
def make_subset(archive: Path, out: Path, train_per_class: int, test_per_class: int) -> dict:
    """The first ``train_per_class`` / ``test_per_class`` images (by file name) of each class
    of the archive's ``train/`` and ``test/`` folders, written as a ``.tar.gz`` of the same
    layout. Returns the counts per split."""
    limits = {"train": train_per_class, "test": test_per_class}
    chosen: dict[str, list[tarfile.TarInfo]] = {}
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        per_class: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
        for m in members:
            parts = Path(m.name).parts
            if len(parts) != 3 or parts[0] not in limits:
                continue
            per_class.setdefault((parts[0], parts[1]), []).append(m)
        for (split, _), files in sorted(per_class.items()):
            files.sort(key=lambda m: m.name)
            chosen.setdefault(split, []).extend(files[: limits[split]])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with tarfile.open(tmp, "w:gz") as dst:
            for split in sorted(chosen):
                for m in chosen[split]:
                    dst.addfile(m, tar.extractfile(m))
        os.replace(tmp, out)
    counts = {split: len(files) for split, files in sorted(chosen.items())}
    if set(counts) != set(limits):
        raise SystemExit(f"{archive}: expected train/ and test/ folders, found {sorted(counts)}")
    return counts


# --------------------------------------------------------------------------- memory
def rss_mib() -> float:
    """The process's resident memory (Linux), else 0."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def nvidia_smi_used_mib() -> str:
    """nvidia-smi's memory in use on each GPU, or why not."""
    if shutil.which("nvidia-smi") is None:
        return "n/a (no nvidia-smi)"
    cmd = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"n/a ({err})"
    return ",".join(proc.stdout.split()) or f"n/a (exit {proc.returncode})"


def knn_features_held(module) -> int:
    """Number of training-feature rows the module's online kNN holds now."""
    knn = getattr(module, "knn", None)
    if knn is None:
        return 0
    return sum(int(t.shape[0]) for t in getattr(knn, "train_features", []) if hasattr(t, "shape"))


def make_probe(records: list[dict]):
    import torch
    from lightning.pytorch.callbacks import Callback

    class Probe(Callback):
        """Records the bank's device and the memory in use at the start and after each
        training epoch (Lightning calls ``on_train_epoch_end`` after that epoch's validation)."""

        def _record(self, trainer, module, when: str) -> None:
            bank = getattr(module, "bank", None)
            row: dict = {
                "when": when,
                "epoch": trainer.current_epoch,
                "global_step": trainer.global_step,
                "module_device": str(module.device),
                "bank_device": str(bank.weight.device) if bank is not None else None,
                "bank_dtype": str(bank.weight.dtype).replace("torch.", "") if bank else None,
                "knn_features_held": knn_features_held(module),
                "rss_mib": round(rss_mib(), 1),
            }
            if module.device.type == "cuda":
                torch.cuda.synchronize()
                row.update(
                    cuda_allocated_mib=round(torch.cuda.memory_allocated() / 2**20, 1),
                    cuda_peak_mib=round(torch.cuda.max_memory_allocated() / 2**20, 1),
                    cuda_reserved_mib=round(torch.cuda.memory_reserved() / 2**20, 1),
                    nvidia_smi_used_mib=nvidia_smi_used_mib(),
                )
                torch.cuda.reset_peak_memory_stats()
            records.append(row)
            text = ", ".join(f"{k}={v}" for k, v in row.items() if k != "when")
            print(f"[probe] {when}: {text}", flush=True)

        def on_train_start(self, trainer, module) -> None:
            self._record(trainer, module, "train start")

        def on_train_epoch_end(self, trainer, module) -> None:
            self._record(trainer, module, f"end of epoch {trainer.current_epoch}")

    return Probe()


def check_probe(records: list[dict], args) -> list[str]:
    """The failed expectations of ``train``'s options, as sentences."""
    problems = []
    starts = [r for r in records if r["when"] == "train start"]
    ends = [r for r in records if r["when"] != "train start"]
    if not starts or not ends:
        return ["no training epoch ran"]
    if args.expect_start_epoch is not None and starts[0]["epoch"] != args.expect_start_epoch:
        problems.append(
            f"training started at epoch {starts[0]['epoch']}, not resumed at "
            f"epoch {args.expect_start_epoch}"
        )
    if args.expect_bank_device:
        for r in records:
            device = str(r["bank_device"]).split(":")[0]
            if device != args.expect_bank_device:
                problems.append(
                    f"bank on {r['bank_device']} at {r['when']}, expected {args.expect_bank_device}"
                )
    if args.no_knn_features:
        held = [(r["when"], r["knn_features_held"]) for r in ends if r["knn_features_held"]]
        if held:
            problems.append(f"the online kNN holds training features with no validation: {held}")
    if args.max_growth_mib is not None and len(ends) >= 2:
        key = "cuda_allocated_mib" if "cuda_allocated_mib" in ends[0] else None
        if key:
            growth = ends[-1][key] - ends[0][key]
            if growth > args.max_growth_mib:
                problems.append(
                    f"{key} grew by {growth:.1f} MiB from {ends[0]['when']} to "
                    f"{ends[-1]['when']} (allowed: {args.max_growth_mib} MiB)"
                )
    return problems


def cmd_train(args) -> int:
    from hydra import compose, initialize_config_module

    from effssl_plugin import import_solo_quietly
    from effssl_plugin.main_pretrain import pretrain

    import_solo_quietly()
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = compose(args.config, overrides=args.overrides)
    records: list[dict] = []
    run_dir = pretrain(cfg, extra_callbacks=[make_probe(records)])
    print(f"[probe] run directory: {run_dir}")
    if args.probe:
        args.probe.parent.mkdir(parents=True, exist_ok=True)
        args.probe.write_text(json.dumps(records, indent=1) + "\n")
    problems = check_probe(records, args)
    if args.expect_run_dir and Path(run_dir).resolve() != args.expect_run_dir.resolve():
        problems.append(f"trained in {run_dir}, not in {args.expect_run_dir}")
    for p in problems:
        print(f"CHECK FAILED: {p}", flush=True)
    return 1 if problems else 0


# ------------------------------------------------------------------------------ kNN
def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    """Every row of a run's CSV logs (all sessions), empty cells dropped."""
    rows = []
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(path) as f:
            rows += [{k: v for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    return rows


def online_knn(run_dir: Path) -> tuple[int, float]:
    """(epoch, val_knn_acc1) of the last epoch that logged the online kNN."""
    logged = [
        (int(r["epoch"]), float(r["val_knn_acc1"]))
        for r in metrics_rows(run_dir)
        if "val_knn_acc1" in r
    ]
    if not logged:
        raise SystemExit(f"no val_knn_acc1 in {run_dir}/logs/*/metrics.csv")
    return max(logged)


def checkpoint_epoch(run_dir: Path) -> int:
    import torch

    from effssl_plugin.checkpointing import newest_checkpoint

    ckpt = newest_checkpoint(run_dir)
    if ckpt is None:
        raise SystemExit(f"no checkpoint in {run_dir}")
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"])


def knn_by_dtype(run_dir: Path, k: int, device: str, workers: int) -> dict[str, float]:
    """kNN top-1 of a run's newest checkpoint (float32 features of the frozen backbone, the
    run's own train and val folders, as ``effssl-knn``) with the features given to the kNN
    classifier in float32, float16 and bfloat16, on ``device``: the online kNN gets float16 or
    bfloat16 features under mixed precision, and its arithmetic must not depend on that."""
    import torch
    from solo.data.classification_dataloader import prepare_datasets
    from torch.utils.data import DataLoader

    from effssl_plugin.evaluation import eval_transforms, extract_features, load_pretrained_backbone
    from effssl_plugin.knn import WeightedKNNClassifierTM1

    backbone, cfg, _ = load_pretrained_backbone(run_dir)
    _, transform = eval_transforms(cfg)
    train_set, val_set = prepare_datasets(
        cfg.data.dataset,
        T_train=transform,
        T_val=transform,
        train_data_path=cfg.data.train_path,
        val_data_path=cfg.data.val_path,
        data_format="image_folder" if cfg.data.format == "dali" else cfg.data.format,
    )
    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    loaders = [DataLoader(ds, batch_size=256, num_workers=workers) for ds in (train_set, val_set)]
    with torch.no_grad():
        (train_x, train_y), (val_x, val_y) = (
            extract_features(backbone, loader, dev, "features") for loader in loaders
        )
    results = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        knn = WeightedKNNClassifierTM1(k=k, T=KNN_T, distance_fx="cosine")
        knn(train_features=train_x.to(dev, dtype), train_targets=train_y.to(dev))
        knn(test_features=val_x.to(dev, dtype), test_targets=val_y.to(dev))
        results[str(dtype).replace("torch.", "")] = float(knn.compute()[0])
    return results


def cmd_knn_agree(args) -> int:
    """The online ``val_knn_acc1`` of a run's last epoch against ``effssl-knn`` (float32
    features of the frozen backbone) on the checkpoint written after that epoch, then the
    offline kNN on float16 and bfloat16 features against float32 (:func:`knn_by_dtype`)."""
    epoch, online = online_knn(args.run_dir)
    ckpt_epoch = checkpoint_epoch(args.run_dir)
    out = args.out or args.run_dir / "knn_offline.json"
    cmd = [
        sys.executable,
        "-m",
        "effssl_plugin.main_knn",
        str(args.run_dir),
        "--k",
        str(args.k),
        "--temperature",
        str(KNN_T),
        "--device",
        args.device,
        "--num-workers",
        str(args.workers),
        "--output",
        str(out),
    ]
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        print(f"CHECK FAILED: effssl-knn exited {proc.returncode}")
        return 1
    offline = json.loads(Path(out).read_text())["results"][0]["acc1"]
    diff = online - offline
    print(
        f"online val_knn_acc1 {online:.2f} (epoch {epoch}), offline float32 effssl-knn "
        f"{offline:.2f} (checkpoint of epoch {ckpt_epoch}, k={args.k}, T={KNN_T}): "
        f"difference {diff:+.2f} points, tolerance {args.tol}"
    )
    problems = []
    if epoch != ckpt_epoch:
        problems.append(f"the online kNN's last epoch {epoch} is not the checkpoint's {ckpt_epoch}")
    if abs(diff) > args.tol:
        problems.append(f"online and offline kNN differ by {abs(diff):.2f} > {args.tol} points")
    by_dtype = knn_by_dtype(args.run_dir, args.k, args.device, args.workers)
    print(
        f"offline kNN with the features given in each dtype ({args.device}): "
        + ", ".join(f"{dtype} {acc:.2f}" for dtype, acc in by_dtype.items())
        + f"; tolerance {args.dtype_tol} points from float32"
    )
    for dtype, acc in by_dtype.items():
        if abs(acc - by_dtype["float32"]) > args.dtype_tol:
            problems.append(
                f"the kNN on {dtype} features gives {acc:.2f}, on float32 features "
                f"{by_dtype['float32']:.2f}"
            )
    for p in problems:
        print(f"CHECK FAILED: {p}")
    return 1 if problems else 0


def cmd_ckpt_bank(args) -> int:
    import torch

    from effssl_plugin.checkpointing import newest_checkpoint

    ckpt = newest_checkpoint(args.run_dir)
    if ckpt is None:
        print(f"CHECK FAILED: no checkpoint in {args.run_dir}")
        return 1
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    weight = state.get("bank.weight")
    dtype = str(weight.dtype).replace("torch.", "") if weight is not None else "absent"
    print(
        f"{ckpt.name}: bank.weight {dtype}"
        + (
            f" {tuple(weight.shape)}, {weight.numel() * weight.element_size() / 2**20:.1f} MiB"
            if weight is not None
            else ""
        )
    )
    if dtype != args.dtype:
        print(f"CHECK FAILED: the checkpoint's bank is {dtype}, not {args.dtype}")
        return 1
    return 0


# ----------------------------------------------------------------------------- bank
def bank_out_of_range(device: str, case: str) -> str:
    """Feeds row index ``num_samples`` (one past the last) to a :class:`MemoryBank` on
    ``device`` through ``case`` (``ema``: ``update_ema``, ``fill``: ``fill_``, ``columns``:
    ``batch_columns`` with the batch indexes on the device and on the host) and returns the
    error message a user gets; raises AssertionError when no error is raised."""
    import torch

    from effssl_plugin.bank import MemoryBank

    n, d = 64, 8
    bank = MemoryBank(n, d).to(device)
    bank.reset_random_(torch.Generator(device=device).manual_seed(0))
    bad = torch.tensor([3, n], device=device)
    z = torch.nn.functional.normalize(torch.randn(2, d, device=device), dim=1)
    try:
        if case == "ema":
            bank.update_ema(bad, z)
        elif case == "fill":
            bank.fill_(bad, z)
        elif case == "columns":
            bank.batch_columns(bad, 8, torch.Generator(device="cpu").manual_seed(0), bad.cpu())
        else:
            raise ValueError(case)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
    except Exception as err:  # noqa: BLE001 - whatever a user would see
        return f"{type(err).__name__}: {' '.join(str(err).split())}"
    raise AssertionError(f"bank index {n} (of {n} rows) raised no error through {case}")


def cmd_bank_oob(args) -> int:
    try:
        message = bank_out_of_range(args.device, args.case)
    except AssertionError as err:
        print(f"CHECK FAILED: {err}")
        return 1
    print(
        f"out-of-range bank index through {args.case} on {args.device}: the user sees\n"
        f"    {message}"
    )
    return 0


# ---------------------------------------------------------------------------- suite
def step_costs(path: Path) -> dict[str, float]:
    """``method -> median seconds per step`` from a ``step_cost.py`` CSV."""
    with open(path) as f:
        return {r["method"]: float(r["median_s_per_step"]) for r in csv.DictReader(f)}


def epochs_for_budget(step_s: float, budget_s: float, train_images: int, batch: int) -> int:
    """Whole epochs whose measured step cost fits ``budget_s`` (at least 1); an epoch is
    ``train_images // batch`` steps (solo-learn's loader drops the last partial batch)."""
    steps = max(1, train_images // batch)
    return max(1, math.floor(budget_s / (step_s * steps)))


def cmd_epochs(args) -> int:
    costs = step_costs(args.csv)
    steps = max(1, args.train_images // args.batch)
    for method in args.methods:
        if method not in costs:
            print(f"CHECK FAILED: {method} not in {args.csv}", file=sys.stderr)
            return 1
        epochs = epochs_for_budget(costs[method], args.budget, args.train_images, args.batch)
        print(f"{method} {epochs}")
        print(
            f"# {method}: {costs[method]:.4f} s/step x {steps} steps/epoch = "
            f"{costs[method] * steps:.2f} s/epoch; {epochs} epochs = "
            f"{epochs * steps * costs[method]:.1f} s of the {args.budget:g} s budget",
            file=sys.stderr,
        )
    return 0


def cmd_pipeline_rate(args) -> int:
    """Images a second of ``data.pipeline=tensor``'s batched augmentation on the device
    (the CIFAR views of each method's config, on uint8 batches already there) against the
    images a second of the method's training step (``step_cost.py``, same batch), one JSON
    row per method. The pipeline keeps up when its rate is above the step's."""
    import statistics
    import time

    import torch
    from hydra import compose, initialize_config_module

    sys.path.insert(0, str(REPO / "benchmarks"))
    import step_cost

    from effssl_plugin import register
    from effssl_plugin.tensor_data import batch_views_from_cfg, seeded_generator

    register()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for method in args.methods:
        with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
            cfg = compose(method, ["dataset=cifar10", "data.pipeline=tensor"])
        views = batch_views_from_cfg(cfg)
        images = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8, device=device)
        generator = seeded_generator(device, 0, 0, 0)
        for _ in range(2):  # warm-up
            views(images, generator)
        sync()
        start = time.perf_counter()
        for _ in range(args.iters):
            views(images, generator)
        sync()
        pipeline_s = (time.perf_counter() - start) / args.iters
        ns = argparse.Namespace(
            model=args.model, size=32, batch=args.batch, device=args.device,
            precision=args.precision, samples=args.samples, negatives=-1, overrides=[],
        )  # fmt: skip
        model, num_views = step_cost.build(method, ns)
        times, _ = step_cost.run_steps(model, num_views, args.steps + 1, ns, device)
        step_s = statistics.median(times[1:])
        row = {
            "method": method, "device": args.device, "model": args.model, "batch": args.batch,
            "views": num_views, "pipeline_images_per_s": args.batch / pipeline_s,
            "step_images_per_s": args.batch / step_s,
        }  # fmt: skip
        row["pipeline_over_step"] = row["pipeline_images_per_s"] / row["step_images_per_s"]
        rows.append(row)
        print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


def cmd_suite_summary(args) -> int:
    """One line per run of the given study folders: epochs planned and done, training
    seconds, kNN top-1 at each evaluated epoch."""
    print(f"{'run':<28}{'epochs':>8}{'done':>6}{'train s':>9}  kNN top-1 by epoch")
    found = 0
    for study in args.dirs:
        for run_dir in sorted(Path(study).glob("runs/*")):
            evals = run_dir / "evals.csv"
            rows = list(csv.DictReader(open(evals))) if evals.exists() else []
            planned = args.planned.get(run_dir.name.split("__")[0], "?")
            done = max((int(r["epoch"]) for r in rows), default=0)
            train_s = rows[-1]["train_s"] if rows else "-"
            cells = ", ".join(f"{r['epoch']}: {float(r['knn_top1']):.2f}" for r in rows)
            print(f"{run_dir.name:<28}{planned:>8}{done:>6}{train_s:>9}  {cells or 'none'}")
            found += 1
    if not found:
        print("no runs found")
    return 0 if found else 1


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("subset", help="a per-class subset of a train/ test/ JPEG archive")
    s.add_argument("archive", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--train-per-class", type=int, default=500)
    s.add_argument("--test-per-class", type=int, default=200)

    s = sub.add_parser("train", help="the launcher's pretrain() with a memory/bank probe")
    s.add_argument("--config", default="effssl")
    s.add_argument("--probe", type=Path, help="write the probe's records here (JSON)")
    s.add_argument("--expect-start-epoch", type=int)
    s.add_argument("--expect-bank-device", choices=["cpu", "cuda"])
    s.add_argument("--expect-run-dir", type=Path)
    s.add_argument(
        "--no-knn-features",
        action="store_true",
        help="fail if the online kNN holds training features after an epoch",
    )
    s.add_argument(
        "--max-growth-mib",
        type=float,
        help="fail if CUDA memory allocated grows more from the first to the last epoch",
    )
    s.add_argument("overrides", nargs="*")

    s = sub.add_parser("knn-agree", help="online val_knn_acc1 against offline effssl-knn")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--tol", type=float, default=15.0, help="online - offline, points of top-1")
    s.add_argument(
        "--dtype-tol", type=float, default=1.0, help="float16/bfloat16 - float32 features, points"
    )
    s.add_argument("--k", type=int, default=200)
    s.add_argument("--device", default="auto")
    s.add_argument("--workers", type=int, default=4)
    s.add_argument("--out", type=Path)

    s = sub.add_parser("ckpt-bank", help="the dtype of the bank in a run's newest checkpoint")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--dtype", required=True)

    s = sub.add_parser("bank-oob", help="an out-of-range index fed to the memory bank")
    s.add_argument("--device", default="cuda")
    s.add_argument("--case", choices=["ema", "fill", "columns"], default="ema")

    s = sub.add_parser("epochs", help="epochs per method for a budget of step-cost seconds")
    s.add_argument("--csv", type=Path, required=True)
    s.add_argument("--budget", type=float, required=True, help="seconds of measured steps")
    s.add_argument("--train-images", type=int, required=True)
    s.add_argument("--batch", type=int, required=True)
    s.add_argument("--methods", nargs="+", default=["effssl", "simclr"])

    s = sub.add_parser("pipeline-rate", help="batched augmentation against the step, images/s")
    s.add_argument("--device", default="cuda")
    s.add_argument("--model", default="resnet18")
    s.add_argument("--batch", type=int, default=512)
    s.add_argument("--precision", default="bf16-mixed")
    s.add_argument("--samples", type=int, default=5000, help="EffSSL's bank rows")
    s.add_argument("--iters", type=int, default=20)
    s.add_argument("--steps", type=int, default=5)
    s.add_argument("--methods", nargs="+", default=["effssl", "simclr"])
    s.add_argument("--out", type=Path)

    s = sub.add_parser("suite-summary", help="the runs of gpu_suite.sh's study folders")
    s.add_argument("dirs", nargs="+", type=Path)
    s.add_argument("--planned", nargs="*", default=[], help="METHOD=EPOCHS ...")

    args = p.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")  # timm's and solo-learn's import warnings: not ours
    if args.cmd == "subset":
        counts = make_subset(args.archive, args.out, args.train_per_class, args.test_per_class)
        size = args.out.stat().st_size / 2**20
        print(
            f"wrote {args.out}: {counts['train']} train and {counts['test']} test images, "
            f"{size:.1f} MiB"
        )
        return 0
    if args.cmd == "train":
        return cmd_train(args)
    if args.cmd == "knn-agree":
        return cmd_knn_agree(args)
    if args.cmd == "ckpt-bank":
        return cmd_ckpt_bank(args)
    if args.cmd == "bank-oob":
        return cmd_bank_oob(args)
    if args.cmd == "epochs":
        return cmd_epochs(args)
    if args.cmd == "pipeline-rate":
        return cmd_pipeline_rate(args)
    args.planned = dict(kv.split("=", 1) for kv in args.planned)
    return cmd_suite_summary(args)


if __name__ == "__main__":
    sys.exit(main())
