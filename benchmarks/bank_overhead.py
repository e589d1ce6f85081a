"""Per-step cost of EffSSL's bank work against one single-view backbone step.

Bank work = sample the columns, gather W_C, logits z W_C^T, CE + lambda * KL forward and
backward (to z), and the bank update (grad rule and EMA). Backbone step = one forward and
backward of timm's resnet18 with the low-resolution stem. Timings are medians of
interleaved repetitions after warm-up. Also prints the bank's memory for ImageNet-1k.

    python benchmarks/bank_overhead.py [--batch 256] [--samples 50000] [--negatives 10000]
        [--dims 128 2048] [--reps 7] [--device cpu] [--precision 32 bf16-mixed]
        [--out benchmarks/results]

``bf16-mixed`` runs backbone and bank under autocast (bfloat16), as a mixed-precision
training step does, with the bank update's product in bfloat16 (``matmul_dtype``).
``32-bank-bf16`` keeps the backbone in float32 and computes only the three bank products in
bfloat16 (``method_kwargs.bank_matmul=bfloat16``), rows still updated in float32.

It then times the three bank products alone (logits ``B x D @ D x |C|``, ``dL/dz``, ``Delta``)
and the backbone step, and reports both in GFLOP/s (the backbone's FLOPs counted with
``torch.utils.flop_counter``).

Target: bank work <= 5% of the backbone step; bank GEMMs at the backbone's GFLOP/s.
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from effssl_plugin.backbones import timm_backbone
from effssl_plugin.bank import MemoryBank
from effssl_plugin.losses import instance_ce_loss, sqrt_kl_loss

IMAGENET_TRAIN = 1_281_167


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device, precision: str):
    enabled = precision == "bf16-mixed"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def make_bank_step(bank: MemoryBank, batch: int, negatives: int, rule: str, device, precision: str):
    gen = torch.Generator(device=device).manual_seed(0)
    matmul_dtype = torch.float32 if precision == "32" else torch.bfloat16
    z_raw = torch.randn(batch, bank.dim, device=device, requires_grad=True)
    perm = torch.randperm(batch, device=device)

    def step() -> None:
        idx = torch.randint(0, bank.num_samples, (batch,), generator=gen, device=device)
        with autocast(device, precision):
            z = F.normalize(z_raw, dim=1)
            cols, pos = bank.columns(idx, negatives, gen)
            w_c = bank.weight.index_select(0, cols)
            logits = z.to(matmul_dtype) @ w_c.to(matmul_dtype).t()
            loss = instance_ce_loss(logits, pos, 0.2, pos[perm], 0.7)
            loss = loss + 20.0 * sqrt_kl_loss(logits)
        loss.backward()
        with torch.no_grad():
            if rule == "ema":
                bank.update_ema(idx, z.detach(), 0.5)
            else:
                probs = F.softmax(logits.detach().float() / 0.2, dim=1)
                y = torch.zeros_like(probs).scatter_(1, pos.view(-1, 1), 0.7)
                y.scatter_add_(1, pos[perm].view(-1, 1), torch.full_like(probs[:, :1], 0.3))
                bank.update_grad(
                    cols, z.detach().float(), probs, y, 0.5, w_c, matmul_dtype=matmul_dtype
                )

    return step


def make_backbone_step(batch: int, device, precision: str):
    model = timm_backbone(model_name="resnet18", low_res=True).to(device)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(device, precision):
            out = model(x).float().sum()
        out.backward()

    return step


def gemm_throughput(batch: int, cols: int, dim: int, dtype, device, reps: int) -> dict:
    """GFLOP/s of the three bank products alone, each ``2 * B * |C| * D`` FLOPs."""
    z = torch.randn(batch, dim, device=device, dtype=dtype)
    w = torch.randn(cols, dim, device=device, dtype=dtype)
    r = torch.randn(batch, cols, device=device, dtype=dtype)
    products = {"logits": lambda: z @ w.t(), "dL/dz": lambda: r @ w, "Delta": lambda: r.t() @ z}
    out = {}
    for name, fn in products.items():
        fn()
        med = statistics.median(timed(fn, device) for _ in range(reps))
        out[name] = 2 * batch * cols * dim / med / 1e9
    return out


def backbone_step_flops(batch: int, device) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = timm_backbone(model_name="resnet18", low_res=True).to(device)
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(batch, 3, 32, 32, device=device)).sum().backward()
    return counter.get_total_flops()


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--negatives", type=int, default=10_000)
    p.add_argument("--dims", type=int, nargs="+", default=[128, 2048])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", nargs="+", default=["32", "32-bank-bf16", "bf16-mixed"])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}, device {device}"
    )
    print(f"batch {args.batch}, N={args.samples}, k={args.negatives}, 32 px, reps={args.reps}")

    rows = []
    for precision in args.precision:
        print(f"\nprecision {precision}")
        steps = {"backbone": make_backbone_step(args.batch, device, precision)}
        for dim in args.dims:
            for rule in ("grad", "ema"):
                bank = MemoryBank(args.samples, dim).to(device)
                bank.reset_random_()
                steps[f"bank D={dim} {rule}"] = make_bank_step(
                    bank, args.batch, args.negatives, rule, device, precision
                )
        for fn in steps.values():  # warm-up
            fn()
            fn()
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.reps):  # interleaved: A B C ... A B C ...
            for name, fn in steps.items():
                times[name].append(timed(fn, device))
        base = statistics.median(times["backbone"])
        print(f"{'step':<22}{'median ms':>12}{'ratio to backbone':>20}   target <= 5%")
        for name, ts in times.items():
            med = statistics.median(ts)
            ratio = med / base
            verdict = "" if name == "backbone" else ("met" if ratio <= 0.05 else "NOT met")
            print(f"{name:<22}{med * 1e3:>12.1f}{ratio:>19.1%}   {verdict}")
            rows.append(
                {
                    "precision": precision,
                    "step": name,
                    "median_ms": round(med * 1e3, 2),
                    "ratio": round(ratio, 4),
                }
            )
    gemm = {d: 3 * 2 * args.batch * (args.negatives + args.batch) * d for d in args.dims}
    backbone_flops = backbone_step_flops(args.batch, device)
    print("\nFLOP floor: the grad rule's three B x |C| x D products (logits, dL/dz, Delta)")
    for dim, flops in gemm.items():
        print(f"  D={dim}: {flops / 1e9:.1f} GFLOP = {flops / backbone_flops:.1%} of the backbone")

    print("\nthroughput, GFLOP/s (medians of --reps):")
    for precision in args.precision:
        step = make_backbone_step(args.batch, device, precision)
        step()
        med = statistics.median(timed(step, device) for _ in range(args.reps))
        gflops = backbone_flops / med / 1e9
        print(f"  backbone fwd+bwd, {precision:<12} {gflops:8.0f}")
        rows.append({"precision": precision, "step": "backbone GFLOP/s", "GFLOPs": round(gflops)})
    cols = args.negatives + args.batch
    for dtype in (torch.float32, torch.bfloat16):
        for name, gflops in gemm_throughput(
            args.batch, cols, max(args.dims), dtype, device, args.reps
        ).items():
            label = f"bank {name} D={max(args.dims)}"
            print(f"  {label:<22} {str(dtype).removeprefix('torch.'):<9} {gflops:8.0f}")
            rows.append(
                {"precision": str(dtype), "step": label + " GFLOP/s", "GFLOPs": round(gflops)}
            )

    print("\nbank memory for ImageNet-1k (N = 1,281,167):")
    for dim in (128, 2048):
        for dtype, size in (("float32", 4), ("bfloat16", 2)):
            gib = IMAGENET_TRAIN * dim * size / 2**30
            print(f"  D={dim:<5} {dtype:<9} {gib:7.2f} GiB")
            rows.append({"step": f"imagenet bank D={dim} {dtype}", "GiB": round(gib, 3)})
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"bank_overhead_{device.type}.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["precision", "step", "median_ms", "ratio", "GiB", "GFLOPs"]
        )
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
