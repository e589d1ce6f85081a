"""Whole training steps of this plugin (``bank_update=ema``) against the official loop's
``train`` on identical state: the same backbone and projector weights, bank rows, images,
batches and CutMix draws. Prints, after every step, how far apart the two are (backbone,
projector, bank; parameters and BatchNorm buffers) relative to how far training moved them,
next to a measured noise floor (the official loop run twice, the second time on images
changed in their 7th significant digit: how fast float rounding alone drifts apart), and
exits non-zero when the difference exceeds both ``--tol`` and that floor.

    python benchmarks/official_step_check.py --official-src /path/to/Efficient_SSL \\
        [--model mobilenetv3_small_100] [--batch 32] [--samples 96] [--steps 3]

What the study's official runs do and this check does not: the official calibration pass
(with ``drop_last``, which leaves the rows of the images it drops at zero until they are
first trained on) and the official random streams (data order, augmentations, CutMix).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence import official as harness  # noqa: E402


def build_plugin(args):
    from hydra import compose, initialize_config_module
    from solo.methods import METHODS

    from effssl_plugin import register
    from effssl_plugin.config import parse_pretrain_cfg

    register()
    overrides = [
        f"backbone.kwargs.model_name={args.model}",
        "augmentations.0.crop_size=32",
        f"optimizer.batch_size={args.batch}",
        f"optimizer.lr={args.lr}",
        "data.val_path=null",
        "knn_eval.enabled=false",
        "machine=cpu",
        f"+method_kwargs.num_samples={args.samples}",
        "method_kwargs.num_negatives=-1",
        "method_kwargs.bank_update=ema",
        "method_kwargs.bank_init=random",
        f"max_epochs={args.epochs}",
    ]
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = parse_pretrain_cfg(compose("effssl", overrides=overrides))
    return METHODS["effssl"](cfg).to(memory_format=torch.channels_last)


def build_official(official, module, args):
    """The official ``FeatCLS`` around the plugin's backbone, with the plugin's weights."""
    ns = argparse.Namespace(dim=module.bank.dim)
    model = official.FeatCLS(harness.official_encoder(args.model), ns)
    state = {f"encoder_q.backbone.{k}": v for k, v in module.backbone.state_dict().items()}
    state |= {f"encoder_q.fc.{k}": v for k, v in module.projector.state_dict().items()}
    model.load_state_dict(state)
    return model.to(memory_format=torch.channels_last)


class FixedCutMix:
    """Pre-drawn CutMix (``lam``, partner permutation, box) served to both sides in turn."""

    def __init__(self, steps: int, batch: int, size: int, alpha: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        self.draws = []
        for _ in range(steps):
            lam = float(rng.beta(alpha, alpha))
            lam = max(lam, 1 - lam)
            cut = int(size * np.sqrt(1 - lam))
            cy, cx = (int(v) for v in rng.integers(0, size, 2))
            box = (
                max(cy - cut // 2, 0),
                min(cy + (cut + 1) // 2, size),
                max(cx - cut // 2, 0),
                min(cx + (cut + 1) // 2, size),
            )
            self.draws.append((torch.randperm(batch, generator=gen), box))
        self.plugin_step = self.official_step = 0

    def _mix(self, x, step):
        perm, (yl, yh, xl, xh) = self.draws[step]
        x[:, :, yl:yh, xl:xh] = x[perm, :, yl:yh, xl:xh]
        lam = 1 - (yh - yl) * (xh - xl) / (x.shape[-1] * x.shape[-2])
        return x, perm, float(lam)

    def plugin(self, x, alpha):
        self.plugin_step += 1
        return self._mix(x, self.plugin_step - 1)

    def official(self, x, y, alpha=1.0, use_cuda=True):
        self.official_step += 1
        x, perm, lam = self._mix(x, self.official_step - 1)
        return x, y, y[perm], lam


def plugin_groups(module) -> dict[str, dict]:
    """The plugin's state to compare: backbone, projector, bank rows."""
    return {
        "backbone": {k: v.clone() for k, v in module.backbone.state_dict().items()},
        "projector": {k: v.clone() for k, v in module.projector.state_dict().items()},
        "bank": {"w": module.bank.weight.clone()},
    }


def official_groups(model, center) -> dict[str, dict]:
    """The same state of the official ``FeatCLS`` and its ``center`` bank."""
    state = model.state_dict()
    out = {"backbone": {}, "projector": {}, "bank": {"w": center.clone()}}
    for key, value in state.items():
        for group, prefix in (("backbone", "encoder_q.backbone."), ("projector", "encoder_q.fc.")):
            if key.startswith(prefix):
                out[group][key.removeprefix(prefix)] = value.clone()
    return out


def distance(a: dict, b: dict, start: dict) -> dict[str, float]:
    """Per group, ``||a - b|| / ||a - start||`` (L2 over every floating-point entry): how far
    apart two runs are relative to how far training moved them. A per-tensor ratio would be
    noise where a gradient is zero in exact arithmetic (a bias just before a
    batch-statistics BatchNorm), and the two sides' sums round differently."""
    out = {}
    for group, tensors in a.items():
        keys = [k for k, v in tensors.items() if v.is_floating_point()]
        apart = sum(float((tensors[k] - b[group][k]).double().pow(2).sum()) for k in keys)
        moved = sum(float((tensors[k] - start[group][k]).double().pow(2).sum()) for k in keys)
        out[group] = apart**0.5 / max(moved**0.5, 1e-30)
    return out


def run_official(official, model, images, rows, batches, lr, args) -> list[dict]:
    """The official ``train`` over the fixed batches (one call per batch, epoch 0), its SGD
    and lr schedule; the state after every step."""
    center = rows.clone()
    ns = harness.official_args(lr, args.epochs, k=args.samples)
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=1e-4)
    logger = logging.getLogger("official-step-check")
    states = []
    for b in batches:
        official.adjust_learning_rate(optimizer, 0, ns)
        loader = [(images[b].clone().contiguous(memory_format=torch.channels_last), b)]
        official.train(loader, model, torch.nn.CrossEntropyLoss(), optimizer, 0, ns, logger, center)
        states.append(official_groups(model, center))
    return states


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-src", type=Path, default=os.environ.get("EFFSSL_OFFICIAL_SRC"))
    p.add_argument("--model", default="mobilenetv3_small_100")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--epochs", type=int, default=50, help="the schedule's length")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-5)
    args = p.parse_args()
    if args.official_src is None:
        sys.exit("needs --official-src (or EFFSSL_OFFICIAL_SRC)")
    warnings.filterwarnings("ignore")
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader, Dataset

    import effssl_plugin.method as plugin_method

    official = harness.load_official(Path(args.official_src).resolve())
    for line in harness.official_patches(official)[:-1]:
        print(f"[official] patch: {line}")
    torch.manual_seed(args.seed)
    module = build_plugin(args)
    initial = {k: v.clone() for k, v in module.state_dict().items()}
    model = build_official(official, module, args)
    images = torch.randn(args.samples, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    # calibrated rows (the untrained network's features, as the calibration pass writes
    # them) plus noise: logits spread as in training, so that the KL term matters too
    with torch.no_grad():
        feats = module.projector(
            module.backbone(images.contiguous(memory_format=torch.channels_last))
        )
        noise = 0.5 * torch.randn(feats.shape, generator=torch.Generator().manual_seed(3))
        rows = F.normalize(F.normalize(feats, dim=1) + noise / feats.shape[1] ** 0.5, dim=1)
    module.load_state_dict(initial)  # BatchNorm running statistics as before that pass
    order = torch.randperm(args.samples, generator=torch.Generator().manual_seed(2))
    batches = [order[i * args.batch : (i + 1) * args.batch] for i in range(args.steps)]
    assert all(len(b) == args.batch for b in batches), "--samples too small for the steps"
    cutmix = FixedCutMix(args.steps, args.batch, 32, 0.5, args.seed)
    plugin_method.cutmix_batch = cutmix.plugin
    official.cutmix_data = cutmix.official

    start = plugin_groups(module)
    start["bank"]["w"] = rows.clone()
    lr = module.lr  # solo-learn's: --lr per 256 images, scaled to the batch (as the study's)
    reference = run_official(official, model, images, rows, batches, lr, args)
    # the noise floor: the official loop again, on images changed in their 7th digit
    cutmix.official_step = 0
    model = build_official(official, module, args)
    wiggled = images * (
        1 + 1e-7 * torch.randn(images.shape, generator=torch.Generator().manual_seed(4))
    )
    floor = run_official(official, model, wiggled, rows, batches, lr, args)

    # this plugin: the same batches through Lightning, solo-learn's optimizer and schedule
    module.bank.weight.copy_(rows)
    module.bank.mark_filled_()

    class Fixed(Dataset):
        def __len__(self) -> int:
            return args.samples

        def __getitem__(self, i: int):
            return i, [images[i]], 0

    failed = False

    from lightning.pytorch.callbacks import Callback

    class AfterStep(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            nonlocal failed
            ours = plugin_groups(pl_module)
            diff = distance(ours, reference[batch_idx], start)
            noise = distance(reference[batch_idx], floor[batch_idx], start)
            limit = {g: max(args.tol, noise[g]) for g in diff}
            failed |= any(diff[g] > limit[g] for g in diff)
            cells = ", ".join(f"{g} {diff[g]:.1e} (noise {noise[g]:.1e})" for g in diff)
            print(f"step {batch_idx + 1}: |plugin - official| / |move|: {cells}", flush=True)

    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=args.steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=[AfterStep()],
    )  # fmt: skip
    trainer.fit(module, DataLoader(Fixed(), batch_sampler=[b.tolist() for b in batches]))
    verdict = "MATCH" if not failed else "DIFFERENT"
    print(f"{verdict} (limit per step: the larger of {args.tol} and the noise floor)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
