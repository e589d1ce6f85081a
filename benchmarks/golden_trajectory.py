"""A golden training trajectory, to prove that a refactor leaves training bit-identical.

Runs EffSSL through the launcher on the in-repository CIFAR-10 fixture (300 images), on the
CPU with a fixed seed, 2 short epochs, CutMix on, once per bank rule (grad and ema), and
records the loss of every step (exact, as float hex), a SHA-256 of the bank after each
epoch and of the final backbone weights.

    python benchmarks/golden_trajectory.py --record    # writes the reference JSON
    python benchmarks/golden_trajectory.py             # re-runs, compares, exit 1 on a change

Bit-identity holds on one machine and software stack (torch picks CPU kernels by
instruction set, and reductions depend on the thread count): record and check on the same
one; both run with one intra-op thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "cifar10_test_300_jpg.tar.gz"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "golden_trajectory.json"


def sha256(tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def trajectory_overrides(rule: str, data: Path, workdir: Path) -> list[str]:
    """The recorded run: the tests' small CPU run (``tiny_overrides`` in tests/conftest.py,
    which a test keeps equal to this list), 2 epochs of 3 steps, batch 50, 100 negatives."""
    return [
        "machine=cpu",
        "dataset=custom_lowres",
        f"data.train_path={data}",
        "data.val_path=null",
        "data.num_workers=0",
        "backbone.kwargs.model_name=resnet10t",
        "method_kwargs.proj_hidden_dim=64",
        "method_kwargs.proj_output_dim=32",
        "method_kwargs.num_negatives=100",
        "optimizer.batch_size=50",
        "max_epochs=2",
        f"method_kwargs.bank_update={rule}",
        "+limit_train_batches=3",
        "seed=0",
        f"checkpoint.dir={workdir / rule}",
        "checkpoint.enabled=false",
        "auto_resume.enabled=false",
    ]


def trajectory(rule: str, data: Path, workdir: Path) -> dict:
    """Per-step losses, the bank's hash after each epoch and the final backbone's hash."""
    import torch
    from hydra import compose, initialize_config_module
    from lightning.pytorch.callbacks import Callback

    from effssl_plugin.main_pretrain import pretrain

    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = compose("effssl", overrides=trajectory_overrides(rule, data, workdir))
    record: dict = {"losses": [], "bank_after_epoch": [], "backbone": None}

    class Record(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            record["losses"].append(float(loss).hex())

        def on_train_epoch_end(self, trainer, module) -> None:
            record["bank_after_epoch"].append(sha256(module.bank.weight))

        def on_train_end(self, trainer, module) -> None:
            digest = hashlib.sha256()
            for name, tensor in sorted(module.backbone.state_dict().items()):
                digest.update(name.encode() + sha256(tensor).encode())
            record["backbone"] = digest.hexdigest()

    torch.use_deterministic_algorithms(True, warn_only=True)
    pretrain(cfg, extra_callbacks=[Record()])
    return record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--record", action="store_true", help="write the reference instead")
    p.add_argument("--reference", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)  # reductions, hence bits, depend on the thread count

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(FIXTURE) as tar:
            tar.extractall(tmp, filter="data")
        (folder,) = [d for d in Path(tmp).iterdir() if d.is_dir()]
        runs = {rule: trajectory(rule, folder, Path(tmp) / "runs") for rule in ("grad", "ema")}
    result = {"torch": torch.__version__, "runs": runs}
    if args.record:
        args.reference.parent.mkdir(parents=True, exist_ok=True)
        args.reference.write_text(json.dumps(result, indent=1) + "\n")
        print(f"recorded {args.reference}")
        return
    reference = json.loads(args.reference.read_text())
    same = True
    for rule, run in runs.items():
        ref = reference["runs"][rule]
        for key in ("losses", "bank_after_epoch", "backbone"):
            ok = run[key] == ref[key]
            same &= ok
            print(f"{rule:>4} {key:<16} {'identical' if ok else 'DIFFERENT'}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
