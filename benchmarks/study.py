"""The evidence study: kNN accuracy per epoch and per wall-clock minute on real CIFAR-10,
EffSSL against solo-learn's SimCLR, BYOL and MoCo v2+, EffSSL ablations, and the official
EffSSL training loop (github.com/CupidJay/Efficient_SSL) as an end-to-end reference, all
with several seeds, resumable in pieces.

Every run trains for ``--epochs`` epochs on a class-stratified share of the training images
(``--fraction``, solo-learn's ``data.fraction`` split) with the same timm backbone
(low-resolution stem), batch and augmentations. At the epochs in ``--eval-epochs`` the frozen
backbone (eval mode) is evaluated offline with solo-learn's weighted kNN (cosine, k=200,
T=0.07): the 10,000 test images against the run's own training images, unaugmented, as the
reference. Evaluation time is not counted in the wall-clock axis; EffSSL's calibration pass
and all data loading are.

    python benchmarks/study.py --plan main                 # effssl vs simclr, 3 seeds
    python benchmarks/study.py --plan official             # the official loop (EMA), 3 seeds
    python benchmarks/study.py --plan ablations            # bank_update, kl_weight, ...
    python benchmarks/study.py --plan baselines            # byol, mocov2plus
    python benchmarks/study.py --random-init               # untrained-backbone kNN
    python benchmarks/study.py --report-only               # tables and plots again
    python benchmarks/study.py --report-only --pool DIR1 DIR2 --out DIR3   # seeds of 2 studies
    python benchmarks/study.py --plan main --epochs 3 --eval-epochs 1 3 --fraction 0.02   # smoke

Resumable: a finished run (its last evaluation in ``evals.csv``) is skipped; an unfinished
one continues from its last checkpoint (the launcher's auto-resume, or the official
harness's own checkpoint); while a file ``PAUSE`` exists in ``--out`` no new run starts and
a running one stops after its current epoch's checkpoint (continue by deleting ``PAUSE`` and
running the same command). ``--stop-after N`` trains each run's ``--epochs`` schedule only
through epoch N (a cheap look at the early curve of more seeds); a later call with a larger N,
or without it, continues those runs. ``report.md`` and the plots are rebuilt from whatever
finished.

A held-out validation split (issue 27): ``--holdout N`` sets N training images per class
aside (drawn with ``--split-seed``) and draws every run's training share from the other
images, on disk (:func:`prepare_split`: ``<data-dir>/splits/holdout<N>_s<seed>/`` with ``val/``,
``trainpool/`` and ``train_f<fraction>/`` folders of hard links and a ``manifest.json`` with
their digests); ``--eval-set val`` evaluates the kNN on those N x 10 images instead of the
test set, so that choices (learning rates, rules) never see the test images. Without
``--holdout`` the runs train on solo-learn's ``data.fraction`` share of all training images,
as every study before issue 27 did.

    python benchmarks/study.py --plan lr_simclr lr_effssl --seeds 0 --holdout 500 \
        --eval-set val --epochs 15 --eval-epochs 5 10 15 --threads 1   # protocol 01

The official reference needs the official repository's source: ``--official-src DIR`` (or
``$EFFSSL_OFFICIAL_SRC``), e.g. ``git clone https://github.com/CupidJay/Efficient_SSL``; it
is never copied into this project. The harness imports its ``main.py`` and runs its own
calibration loop, ``adjust_learning_rate``, ``train`` and ``update_feature`` on our model,
data and evaluation; every patch it applies to run on a CPU is printed and logged.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import types
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: all of CIFAR-10 as JPEG folders (see ../shared/data/README); extracted once to --data-dir
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10_jpg_q75.tar.gz"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
K, T = 200, 0.07
METHODS = ("effssl", "simclr", "byol", "mocov2plus", "official")
#: the study's EffSSL baseline (the "default" variant): the gradient bank rule, the package
#: default when the study began, pinned so the runs keep their meaning when a default changes
EFFSSL_BASE = ["method_kwargs.bank_update=grad"]
#: the official loop with this plugin's calibration (every row) and CutMix box (timm's): the
#: two differences from this plugin's ``ema`` runs outside the training step (BENCHMARKS 3c)
OFFICIAL_LIKE_PLUGIN = "calibration+box=plugin"
#: effssl variants (launcher overrides) for the ablations
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "bank_update=grad": ["method_kwargs.bank_update=grad"],
    "bank_update=ema": ["method_kwargs.bank_update=ema"],
    "kl_weight=0": ["method_kwargs.kl_weight=0"],
    "bank_init=random": ["method_kwargs.bank_init=random"],
    "proj=512": ["method_kwargs.proj_hidden_dim=512", "method_kwargs.proj_output_dim=512"],
    "proj=128": ["method_kwargs.proj_hidden_dim=2048", "method_kwargs.proj_output_dim=128"],
    "lr=0.1": ["optimizer.lr=0.1"],
    "lr=0.03": ["optimizer.lr=0.03"],
    "lars": [  # SimCLR's recipe optimizer (configs/simclr.yaml)
        "optimizer.name=lars",
        "optimizer.lr=0.4",
        "optimizer.weight_decay=1e-5",
        "+optimizer.kwargs.eta=0.02",
        "+optimizer.kwargs.clip_lr=true",
        "+optimizer.kwargs.exclude_bias_n_norm=true",
    ],
    "lr=0.1,ema": ["optimizer.lr=0.1", "method_kwargs.bank_update=ema"],
    "bank_matmul=bfloat16": ["method_kwargs.bank_matmul=bfloat16"],
    "bank=bfloat16": ["method_kwargs.bank_matmul=bfloat16", "method_kwargs.bank_dtype=bfloat16"],
    # MoCo's CIFAR queue (32768) is 6.5x the 10% subset (5,000 images): every query would meet
    # ~6 older keys of its own image as negatives; 4096 < N holds each image at most once
    "queue=4096": ["method_kwargs.queue_size=4096"],
    # BYOL's CIFAR recipe (LARS lr 1.0) stayed below the untrained backbone at 50 epochs, its
    # projections half collapsed in warm-up (z_std 0.011 in epoch 2); the BYOL paper's lr 0.2
    # (a 10-epoch probe only, --stop-after 10: no better than the recipe, so not continued)
    "lr=0.2": ["optimizer.lr=0.2"],
    # a faster target for the 950 steps of the 50-epoch schedule: the recipes' base_tau 0.99
    # averages over ~100 steps (5 epochs of the subset), 0.96 over ~25 (final_tau unchanged);
    # a 10-epoch probe first (--stop-after 10), continued only if it beats the recipe there
    "tau=0.96": ["momentum.base_tau=0.96"],
    "queue=4096,tau=0.96": ["method_kwargs.queue_size=4096", "momentum.base_tau=0.96"],
}
PLANS: dict[str, list[tuple[str, str]]] = {
    "main": [("effssl", "default"), ("simclr", "default")],
    "official": [("official", "default"), ("effssl", "bank_update=ema")],
    "ablations": [  # each against ("effssl", "default"), which is bank_update=grad
        ("effssl", "bank_update=ema"),
        ("effssl", "kl_weight=0"),
        ("effssl", "bank_init=random"),
        ("effssl", "proj=512"),
    ],
    "baselines": [("byol", "default"), ("mocov2plus", "default")],
    # one run each, for studies run in pieces that must each finish inside a session
    "byol": [("byol", "default")],
    "mocov2plus": [("mocov2plus", "default")],
    "mocov2plus_queue": [("mocov2plus", "queue=4096")],
    "byol_lr": [("byol", "lr=0.2")],
    "byol_tau": [("byol", "tau=0.96")],
    "mocov2plus_tau": [("mocov2plus", "queue=4096,tau=0.96")],
    # the budget's order of the ablations (issue 9): kl_weight first, then the rest
    "kl": [("effssl", "kl_weight=0")],
    # the EMA half of "official", alone: grad vs ema (the default rule) needs its 3 seeds first
    "ema": [("effssl", "bank_update=ema")],
    # the official half alone: its seeds 3-5 to the end before this plugin's (BENCHMARKS 3c)
    "official_loop": [("official", "default")],
    # the official loop without the two differences outside the step (BENCHMARKS 3c)
    "official_like_plugin": [("official", OFFICIAL_LIKE_PLUGIN)],
    "rest": [("effssl", "bank_init=random"), ("effssl", "proj=512")],
    "bank_init": [("effssl", "bank_init=random")],
    "proj": [("effssl", "proj=512")],
    "diagnose": [("official", "default"), ("effssl", "bank_update=ema"), ("effssl", "default")],
    # issue 13: the effect of bfloat16 bank products (and bfloat16 rows) on a short run
    "precision": [
        ("effssl", "default"),
        ("effssl", "bank_matmul=bfloat16"),
        ("effssl", "bank=bfloat16"),
    ],
    "probe": [
        ("effssl", "default"),
        ("effssl", "lr=0.1"),
        ("effssl", "lars"),
        ("effssl", "lr=0.03"),
        ("simclr", "default"),
    ],
}

# ----------------------------------------- issue 27: the symmetric learning-rate search
#: each method's learning rate today (per 256 images): effssl the study's 0.1 (BENCHMARKS 3b),
#: the baselines their recipes in configs/ (simclr and byol LARS, mocov2plus SGD)
SEARCH_LR = {"effssl": 0.1, "simclr": 0.4, "byol": 1.0, "mocov2plus": 0.3}
#: the grid, the same shape for every method: the current value x 1/3, x 1, x 3
SEARCH_FACTORS = (1 / 3, 1.0, 3.0)
#: one more step past an edge of the grid, run only when the protocol's rule asks for it
SEARCH_EXTENSION = {"low": 1 / 9, "high": 9.0}
#: the warm-up, as a fraction of the schedule, for every arm of the search (protocol 01: none)
SEARCH_WARMUP = 0.0
#: a method's settings in the search other than the learning rate: MoCo v2+'s CIFAR queue
#: (32,768 keys) is 6.5x the 5,000-image share, so it runs with the study's 4,096-key queue
SEARCH_FIXED = {"mocov2plus": ["queue=4096"]}
#: scores within this many kNN points of the best count as tied (protocol 01)
SEARCH_TIE = 1.0


def search_lr(method: str, factor: float) -> float:
    """``method``'s current learning rate times ``factor``, to 3 significant digits."""
    return float(f"{SEARCH_LR[method] * factor:.3g}")


def search_variant(method: str, factor: float) -> str:
    """The variant name of one search arm, e.g. ``lr=0.133,wu=0``."""
    parts = [*SEARCH_FIXED.get(method, []), f"lr={search_lr(method, factor):g}"]
    return ",".join([*parts, f"wu={SEARCH_WARMUP:g}"])


def search_overrides(method: str, factor: float, epochs: int | None = None) -> list[str]:
    """The launcher overrides of one search arm: its learning rate, the warm-up (a fraction of
    the schedule, 0 in protocol 01, so the same for every schedule length), the fixed
    settings."""
    fixed = [o for name in SEARCH_FIXED.get(method, []) for o in VARIANTS[name]]
    warmup = SEARCH_WARMUP * epochs if epochs else 0
    if SEARCH_WARMUP and not epochs:
        raise ValueError("a warm-up fraction needs the schedule's length")
    return [
        *fixed,
        f"optimizer.lr={search_lr(method, factor):g}",
        f"scheduler.warmup_epochs={warmup:g}",
    ]


for _method in SEARCH_LR:
    for _factor in (*SEARCH_FACTORS, *SEARCH_EXTENSION.values()):
        VARIANTS[search_variant(_method, _factor)] = search_overrides(_method, _factor)
    # the grid, one plan a method (the budget's order: simclr, effssl, byol, mocov2plus)
    PLANS[f"lr_{_method}"] = [(_method, search_variant(_method, f)) for f in SEARCH_FACTORS]
PLANS["lr_search"] = [
    run for m in ("simclr", "effssl", "byol", "mocov2plus") for run in PLANS[f"lr_{m}"]
]


def search_choice(scores: dict[float, float | None], recipe: float) -> tuple[float | None, str]:
    """Protocol 01's decision rule on one method's search: ``scores`` maps each learning rate
    run to its validation kNN top-1 at the last epoch (None: the run failed or diverged).
    The highest score wins; scores within :data:`SEARCH_TIE` points of it tie, and a tie goes
    to the learning rate closest to the current value ``recipe`` on a log scale, then to the
    lower one. Returns (the chosen learning rate, the reason); (None, reason) without scores."""
    valid = {lr: v for lr, v in scores.items() if v is not None and math.isfinite(v)}
    if not valid:
        return None, "no run finished with a finite score"
    best = max(valid.values())
    tied = sorted(lr for lr, v in valid.items() if v >= best - SEARCH_TIE)
    chosen = min(tied, key=lambda lr: (abs(math.log(lr / recipe)), lr))
    if len(tied) == 1:
        return chosen, f"highest ({best:.2f})"
    others = ", ".join(f"{lr:g}" for lr in tied if lr != chosen)
    return chosen, (
        f"tied within {SEARCH_TIE:g} of the best ({best:.2f}) with {others}: closest to the "
        f"current {recipe:g}"
    )


def search_extension(method: str, scores: dict[float, float | None]) -> str | None:
    """The extension protocol 01 asks for, once per method: when the grid's chosen learning
    rate lies at its lowest or highest value, the next value past it (x 1/9 or x 9), as a
    variant name; None when the choice is inside the grid, or after an extension ran (or
    while a grid run is missing)."""
    grid = [search_lr(method, f) for f in SEARCH_FACTORS]
    extra = [search_lr(method, f) for f in SEARCH_EXTENSION.values()]
    if any(lr not in scores for lr in grid) or any(lr in scores for lr in extra):
        return None
    chosen, _ = search_choice({lr: scores[lr] for lr in grid}, SEARCH_LR[method])
    for side, edge in (("low", min(grid)), ("high", max(grid))):
        if chosen == edge:
            return search_variant(method, SEARCH_EXTENSION[side])
    return None


EVAL_FIELDS = ["epoch", "train_s", "steps", "knn_top1", "knn_top5"]


# ------------------------------------------------------------------------ shared
def run_name(method: str, variant: str, seed: int) -> str:
    return f"{method}__{variant.replace('=', '-')}__s{seed}"


def parse_run_name(name: str) -> tuple[str, str, int]:
    """``run_name``'s inverse: (method, variant, seed); a variant name holds no ``-``."""
    method, variant, seed = name.split("__")
    return method, variant.replace("-", "="), int(seed[1:])


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


# ------------------------------------------------------------ validation split
def draw_split(files: dict[str, list[str]], holdout: int, seed: int) -> dict[str, dict]:
    """The held-out split of the training images: ``files`` maps each class to its image
    names. Each class's sorted names are shuffled once with ``random.Random(f"{seed}:{class}")``;
    the first ``holdout`` are the validation images, the rest the training pool **in that
    drawn order**, so that a training share of n images a class is the pool's first n (the
    shares are nested: 10% lies inside 40%). Returns ``{"val": {class: names},
    "pool": {class: names}}``, the validation names sorted."""
    val, pool = {}, {}
    for cls in sorted(files):
        names = sorted(files[cls])
        if not 0 < holdout < len(names):
            raise ValueError(f"holdout {holdout} does not fit class {cls} ({len(names)} images)")
        random.Random(f"{seed}:{cls}").shuffle(names)
        val[cls], pool[cls] = sorted(names[:holdout]), names[holdout:]
    return {"val": val, "pool": pool}


def share_per_class(fraction: float, class_size: int) -> int:
    """Images a class in a training share of ``fraction`` of the training images (CIFAR-10:
    5,000 a class, so 0.1 is 500 and 0.4 is 2,000), drawn from the pool."""
    return round(fraction * class_size)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names_digest(names: dict[str, list[str]]) -> str:
    """sha256 of the sorted ``class/name`` lines of a set of images."""
    lines = sorted(f"{cls}/{n}" for cls, ns in names.items() for n in ns)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def content_digest(root: Path, names: dict[str, list[str]]) -> str:
    """sha256 over the sorted ``class/name sha256(bytes)`` lines of the images under ``root``
    (so a changed image, not only a changed list, changes it)."""
    h = hashlib.sha256()
    for line in sorted(f"{cls}/{n}" for cls, ns in names.items() for n in ns):
        h.update(f"{line} {hashlib.sha256((root / line).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def folder_names(root: Path) -> dict[str, list[str]]:
    """``{class: sorted image names}`` of an ImageFolder tree."""
    return {
        d.name: sorted(f.name for f in d.iterdir()) for d in sorted(root.iterdir()) if d.is_dir()
    }


def split_dir(data: Path, holdout: int, seed: int) -> Path:
    return data / "splits" / f"holdout{holdout}_s{seed}"


def share_name(fraction: float) -> str:
    return f"train_f{fraction:g}"


def link_tree(src: Path, dst: Path, names: dict[str, list[str]]) -> None:
    """``dst/<class>/<name>`` as hard links of ``src``'s images (symbolic links where the file
    system refuses hard links); every class folder is made, so ImageFolder's class indices
    are the same in every split folder."""
    for cls, ns in names.items():
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for n in ns:
            target = dst / cls / n
            try:
                os.link(src / cls / n, target)
            except OSError:
                target.symlink_to(src / cls / n)


def prepare_split(data: Path, holdout: int, seed: int, fractions: list[float]) -> Path:
    """The held-out split on disk, made once and verified on every later call:
    ``<data>/splits/holdout<holdout>_s<seed>/`` with ``val/`` (the held-out images),
    ``trainpool/`` (all the others) and ``train_f<fraction>/`` for each training share (its
    first images of the pool's drawn order, stratified), and ``manifest.json`` (the seed, the
    names of every folder, their name and content digests). Raises if a folder on disk no
    longer matches its manifest. The training shares are disjoint from ``val`` by
    construction and by check."""
    out = split_dir(data, holdout, seed)
    manifest_path = out / "manifest.json"
    files = folder_names(data / "train")
    if not manifest_path.exists():
        drawn = draw_split(files, holdout, seed)
        tmp = out.with_name(out.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        link_tree(data / "train", tmp / "val", drawn["val"])
        link_tree(data / "train", tmp / "trainpool", drawn["pool"])
        manifest = {
            "source": str(data / "train"),
            "archive_sha256": file_sha256(ARCHIVE) if ARCHIVE.is_file() else None,
            "holdout_per_class": holdout,
            "seed": seed,
            "rule": "per class: sorted names shuffled by random.Random(f'{seed}:{class}'); "
            "val = the first holdout, pool = the rest in drawn order; a share of n a class = "
            "the pool's first n",
            "val": drawn["val"],
            "pool_order": drawn["pool"],
            "val_sha256": names_digest(drawn["val"]),
            "val_content_sha256": content_digest(data / "train", drawn["val"]),
            "trainpool_sha256": names_digest(drawn["pool"]),
            "shares": {},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, out)
    manifest = json.loads(manifest_path.read_text())
    if manifest["seed"] != seed or manifest["holdout_per_class"] != holdout:
        sys.exit(f"{manifest_path}: another split ({manifest['seed']}, {holdout})")
    changed = False
    for fraction in fractions:
        name = share_name(fraction)
        if name in manifest["shares"]:
            continue
        n = share_per_class(fraction, min(len(v) for v in files.values()))
        if not all(0 < n <= len(p) for p in manifest["pool_order"].values()):
            sys.exit(f"a share of {fraction:g} ({n} a class) does not fit the pool")
        names = {cls: sorted(p[:n]) for cls, p in manifest["pool_order"].items()}
        tmp = out / (name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        link_tree(data / "train", tmp, names)
        os.replace(tmp, out / name)
        manifest["shares"][name] = {
            "fraction": fraction,
            "per_class": n,
            "names": names,
            "sha256": names_digest(names),
            "content_sha256": content_digest(data / "train", names),
        }
        changed = True
    if changed:
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, manifest_path)
    verify_split(out)
    return out


def verify_split(out: Path) -> dict:
    """Checks a prepared split against its manifest: every folder holds exactly its listed
    images, ``val`` is disjoint from the pool and from every share, each share lies inside
    the pool and has the same count in every class, and the name digests match. Returns the
    manifest's summary (no name lists), as :func:`split_summary`."""
    manifest = json.loads((out / "manifest.json").read_text())
    val = manifest["val"]
    pool = {cls: sorted(p) for cls, p in manifest["pool_order"].items()}
    problems = []
    if folder_names(out / "val") != val:
        problems.append("val/ differs from the manifest")
    if folder_names(out / "trainpool") != pool:
        problems.append("trainpool/ differs from the manifest")
    if names_digest(val) != manifest["val_sha256"]:
        problems.append("the val digest differs")
    if names_digest(pool) != manifest["trainpool_sha256"]:
        problems.append("the trainpool digest differs")
    for cls in val:
        if set(val[cls]) & set(pool[cls]):
            problems.append(f"val and trainpool share images of {cls}")
    for name, share in manifest["shares"].items():
        names = share["names"]
        if folder_names(out / name) != names:
            problems.append(f"{name}/ differs from the manifest")
        if names_digest(names) != share["sha256"]:
            problems.append(f"the digest of {name} differs")
        if {len(v) for v in names.values()} != {share["per_class"]}:
            problems.append(f"{name} is not stratified")
        for cls, ns in names.items():
            if set(ns) & set(val[cls]) or not set(ns) <= set(pool[cls]):
                problems.append(f"{name} is not inside the pool for {cls}")
    if problems:
        sys.exit(f"{out}: {'; '.join(problems)}")
    return split_summary(manifest)


def split_summary(manifest: dict) -> dict:
    """What a study records about its split (``split.json``): the rule, the seed, the counts,
    the digests, and the validation and training images by number (``0123.jpg`` is 123)."""

    def numbers(names: dict[str, list[str]]) -> dict[str, str]:
        return {cls: " ".join(n.removesuffix(".jpg") for n in ns) for cls, ns in names.items()}

    keys = ("archive_sha256", "holdout_per_class", "seed", "rule")
    return {
        **{k: manifest[k] for k in keys},
        "val_images": sum(map(len, manifest["val"].values())),
        "val_sha256": manifest["val_sha256"],
        "val_content_sha256": manifest["val_content_sha256"],
        "trainpool_images": sum(map(len, manifest["pool_order"].values())),
        "trainpool_sha256": manifest["trainpool_sha256"],
        "shares": {
            name: {k: v for k, v in share.items() if k != "names"}
            | {"images": sum(map(len, share["names"].values())), "numbers": numbers(share["names"])}
            for name, share in manifest["shares"].items()
        },
        "val_numbers": numbers(manifest["val"]),
    }


def study_data(args, data: Path) -> tuple[Path, float, Path]:
    """(training folder, solo-learn ``data.fraction``, evaluation folder) of the study: with
    ``--holdout`` the prepared share of the pool (no further fraction) and ``val`` or
    ``test``; without it the training images with ``--fraction`` and the test images."""
    holdout = getattr(args, "holdout", 0)
    eval_set = getattr(args, "eval_set", "test")
    if not holdout:
        if eval_set != "test":
            sys.exit("--eval-set val needs --holdout")
        return data / "train", args.fraction if args.fraction < 1 else -1, data / "test"
    out = prepare_split(data, holdout, args.split_seed, [args.fraction])
    return (
        out / share_name(args.fraction),
        -1,
        (out / "val" if eval_set == "val" else data / "test"),
    )


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


def knn_eval(backbone, sets) -> tuple[float, float]:
    """solo-learn's weighted kNN (cosine, k=200, T=0.07) on frozen eval-mode features."""
    import torch

    from effssl_plugin.knn import WeightedKNNClassifierTM1

    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device  # the training device (GPU: --machine auto)
    feats = []
    with torch.no_grad():
        for x in (sets[0], sets[2]):
            chunks = (x[i : i + 500].to(device) for i in range(0, x.shape[0], 500))
            feats.append(torch.cat([backbone(c).float().cpu() for c in chunks]))
    backbone.train(was_training)
    if not all(bool(torch.isfinite(f).all()) for f in feats):
        return math.nan, math.nan  # a diverged network
    knn = WeightedKNNClassifierTM1(k=K, T=T, distance_fx="cosine")
    knn(train_features=feats[0], train_targets=sets[1])
    knn(test_features=feats[1], test_targets=sets[3])
    top1, top5 = knn.compute()
    return float(top1), float(top5)


class EvalLog:
    """A run's ``evals.csv`` (one row per evaluated epoch; a repeated epoch replaces the
    earlier row) and ``time.csv`` (training seconds after every epoch, for resuming)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "evals.csv"
        self.times = run_dir / "time.csv"

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path) as f:
            return list(csv.DictReader(f))

    def add(self, **row) -> None:
        rows = [r for r in self.rows() if int(r["epoch"]) != int(row["epoch"])] + [row]
        rows.sort(key=lambda r: int(r["epoch"]))
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=EVAL_FIELDS)
            w.writeheader()
            w.writerows({k: r[k] for k in EVAL_FIELDS} for r in rows)
        os.replace(tmp, self.path)

    def add_time(self, epoch: int, train_s: float) -> None:
        with open(self.times, "a") as f:
            f.write(f"{epoch},{train_s:.2f}\n")

    def time_points(self) -> list[tuple[int, float]]:
        """``(epoch, cumulative training seconds)`` from ``time.csv``; the last record of a
        repeated epoch (a resumed run) wins."""
        if not self.times.exists():
            return []
        points = {}
        for line in self.times.read_text().split():
            epoch, seconds = line.split(",")
            points[int(epoch)] = float(seconds)
        return sorted(points.items())

    def train_seconds_at(self, epoch: int) -> float:
        """Training seconds recorded when ``epoch`` epochs were complete (the state a
        checkpoint after that epoch resumes from); 0 for epoch 0."""
        if epoch <= 0:
            return 0.0
        if self.times.exists():
            at = [line.split(",") for line in self.times.read_text().split()]
            exact = [float(t) for e, t in at if int(e) == epoch]
            if exact:
                return exact[-1]
        done = [r for r in self.rows() if int(r["epoch"]) <= epoch]  # older runs: evals only
        return float(done[-1]["train_s"]) if done else 0.0


def set_threads(args) -> int:
    """``torch.set_num_threads(--threads)`` when given (the study beside other work on a
    shared machine: 1); returns the number of threads torch uses."""
    import torch

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    return torch.get_num_threads()


def git(*cmd: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), *cmd], capture_output=True, text=True)
    return out.stdout.strip()


#: the code a run depends on: a change here, uncommitted, marks its start as dirty
CODE_PATHS = ("effssl_plugin", "configs", "hydra_plugins", "benchmarks/study.py")


def record_start(run_dir: Path, threads: int | None = None) -> None:
    """Appends this (re)start's code version and command to the run's ``starts.log``: the
    commit of the study's code, a mark when its package, configs or runner have uncommitted
    changes, where ``effssl_plugin`` and its configs were imported from (a pinned copy, or the
    editable checkout), and torch's thread count."""
    import effssl_plugin

    spec = importlib.util.find_spec("effssl_plugin.configs")
    configs = [  # resolved through an editable install's links to the real files
        str((Path(d) / "effssl.yaml").resolve().parent)
        for d in (spec.submodule_search_locations or [] if spec else [])
    ]
    dirty = " (uncommitted changes)" if git("status", "--porcelain", "--", *CODE_PATHS) else ""
    with open(run_dir / "starts.log", "a") as f:
        f.write(
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} commit {git('rev-parse', 'HEAD')}{dirty}: "
            f"{' '.join(sys.argv[1:])}\n"
        )
        f.write(
            f"    runner {Path(__file__).resolve()}, effssl_plugin "
            f"{Path(effssl_plugin.__file__).resolve().parent}, configs "
            f"{', '.join(configs)}, torch threads {threads}\n"
        )
    print(
        f"[{run_dir.name}] commit {git('rev-parse', 'HEAD')}{dirty}; effssl_plugin from "
        f"{effssl_plugin.__file__}; configs from {', '.join(configs)}; torch threads {threads}",
        flush=True,
    )


def paused(out: Path) -> bool:
    return (out / "PAUSE").exists()


def last_epoch(args) -> int:
    """The epoch after which runs stop: ``--epochs``, or ``--stop-after`` when earlier."""
    return min(args.epochs, args.stop_after or args.epochs)


# ------------------------------------------------------------- launcher runs
def hydra_path(path: Path) -> str:
    """``path`` as a quoted Hydra override value: a ``,`` in a run folder's name (a variant
    such as ``queue=4096,tau=0.96``) would otherwise read as a list."""
    if "'" in str(path):
        sys.exit(f"a study path may not contain a single quote: {path}")
    return f"'{path}'"


def launcher_overrides(args, data: Path, run_dir: Path) -> list[str]:
    """The launcher's config overrides for one run: the study's settings, then (effssl)
    :data:`EFFSSL_BASE` and ``--effssl-overrides``, then the variant's, which win."""
    train_dir, fraction, _ = study_data(args, data)
    overrides = [
        f"machine={args.machine}",
        "dataset=custom_lowres",
        f"data.train_path={hydra_path(train_dir)}",
        "data.val_path=null",
        f"data.num_workers={args.workers}",
        f"data.fraction={fraction}",
        f"backbone.kwargs.model_name={args.model}",
        f"optimizer.batch_size={args.batch}",
        f"max_epochs={args.epochs}",
        "knn_eval.enabled=false",
        f"checkpoint.dir={hydra_path(run_dir / 'ckpt')}",
        "checkpoint.frequency=1",
        "auto_resume.enabled=true",
        "auto_resume.max_hours=1000000",  # a study continues across sessions days apart
        f"seed={args.seed}",
    ]
    if args.method == "effssl":
        overrides += [
            f"method_kwargs.num_negatives={args.negatives}",
            *EFFSSL_BASE,
            *args.effssl_overrides,
        ]
    return overrides + VARIANTS[args.variant]  # last: Hydra keeps the last value of a key


def launcher_worker(args) -> None:
    """One run through this package's launcher (effssl or a solo-learn baseline)."""
    warnings.filterwarnings("ignore")
    import torch
    from hydra import compose, initialize_config_module
    from lightning.pytorch.callbacks import Callback

    from effssl_plugin.main_pretrain import pretrain

    threads = set_threads(args)
    data = ensure_data(args.data_dir)
    sets = eval_sets(*study_data(args, data))
    run_dir = args.out / "runs" / run_name(args.method, args.variant, args.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_start(run_dir, threads)
    log = EvalLog(run_dir)
    overrides = launcher_overrides(args, data, run_dir)
    with initialize_config_module("effssl_plugin.configs", version_base="1.2"):
        cfg = compose(args.method, overrides=overrides)
    eval_epochs = set(args.eval_epochs)
    out = args.out

    def diverged(trainer, why: str) -> None:
        (run_dir / DIVERGED).write_text(f"{why} (epoch {trainer.current_epoch + 1})\n")
        print(f"[{run_dir.name}] diverged: {why}", flush=True)
        trainer.should_stop = True

    class Study(Callback):
        """Wall-clock per epoch (evaluation excluded), kNN at the evaluation epochs,
        stop after a checkpoint when ``PAUSE`` appears, or at a non-finite loss or kNN
        (``diverged.txt``: the run is over, with no score)."""

        def on_train_start(self, trainer, module) -> None:  # before the module's calibration
            self.t0 = time.perf_counter()
            self.base = log.train_seconds_at(trainer.current_epoch)  # epochs already done

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
                diverged(trainer, f"non-finite loss at global step {trainer.global_step}")

        def on_train_epoch_end(self, trainer, module) -> None:
            self.base += time.perf_counter() - self.t0
            epoch = trainer.current_epoch + 1  # epochs completed
            log.add_time(epoch, self.base)
            if epoch in eval_epochs and not (run_dir / DIVERGED).exists():
                top1, top5 = knn_eval(module.backbone, sets)
                if not math.isfinite(top1):
                    diverged(trainer, "non-finite features")
                    return
                log.add(
                    epoch=epoch,
                    train_s=round(self.base, 2),
                    steps=trainer.global_step,
                    knn_top1=round(top1, 3),
                    knn_top5=round(top5, 3),
                )
                print(f"[{run_dir.name}] epoch {epoch}: kNN top-1 {top1:.2f}", flush=True)
            if paused(out) or epoch >= last_epoch(args):
                trainer.should_stop = True
            self.t0 = time.perf_counter()

    try:
        pretrain(cfg, extra_callbacks=[Study()])
    except Exception as error:  # effssl's own check stops at a non-finite loss
        if type(error).__name__ == "NonFiniteLossError":
            (run_dir / DIVERGED).write_text(f"{str(error).splitlines()[0]}\n")
        raise


# ------------------------------------------------------- official reference
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


def study_backbone(model_name: str):
    """A fresh timm backbone with the low-resolution stem, as the launcher builds it."""
    import effssl_plugin

    effssl_plugin.register()
    from solo.methods.base import BaseMethod

    return BaseMethod._BACKBONES["timm"](method="effssl", model_name=model_name, low_res=True)


def official_encoder(model_name: str) -> type:
    """The ``base_encoder`` the official ``FeatCLS`` calls: :func:`study_backbone` with the
    ``fc`` head that ``FeatCLS`` replaces by its projector."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = study_backbone(model_name)
            self.fc = torch.nn.Linear(self.backbone.num_features, 10)

        def forward(self, x):
            return self.fc(self.backbone(x))

    return Encoder


def official_worker(args) -> None:
    """The official training loop (EMA bank) on our model, data and evaluation."""
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from hydra import compose, initialize_config_module
    from torch.utils.data import DataLoader

    import effssl_plugin
    from effssl_plugin.config import parse_pretrain_cfg
    from effssl_plugin.data import build_pretrain_dataset

    official = load_official(args.official_src)
    patches = official_patches(official)
    like_plugin = args.variant == OFFICIAL_LIKE_PLUGIN
    if args.variant not in ("default", OFFICIAL_LIKE_PLUGIN):
        sys.exit(f"official variants: default, {OFFICIAL_LIKE_PLUGIN}; got {args.variant}")
    if like_plugin:
        sys.modules["utils.mixup_utils"].rand_bbox = timm_box
        patches.append(
            "utils.mixup_utils.rand_bbox -> timm's box (sides cut, not 2 * (cut // 2); the "
            f"same draws): variant {OFFICIAL_LIKE_PLUGIN}"
        )
        patches.append(
            "calibration loop over every image (drop_last=False), so that no bank row stays "
            f"zero: variant {OFFICIAL_LIKE_PLUGIN}"
        )
    threads = set_threads(args)
    run_dir = args.out / "runs" / run_name("official", args.variant, args.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_start(run_dir, threads)
    log = EvalLog(run_dir)
    data = ensure_data(args.data_dir)
    train_dir, fraction, eval_dir = study_data(args, data)
    sets = eval_sets(train_dir, fraction, eval_dir)

    effssl_plugin.register()
    # our data pipeline: the same config the launcher builds for effssl
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
        """(image, index), as the official ``CIFAR10_ID``."""

        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i):
            index, views, _ = dataset[i]
            return views[0], index

    num_samples = len(dataset)
    lr = cfg.optimizer.lr  # solo-learn's scaled lr (per 256 x batch / 256), as our runs
    k = num_samples if args.negatives < 0 else args.negatives
    ns = official_args(lr, args.epochs, k, batch_size=args.batch)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = official.FeatCLS(official_encoder(args.model), ns)
    model = model.to(memory_format=torch.channels_last)
    patches.append("model in channels_last memory format, as the launcher's (speed only)")
    (run_dir / "patches.txt").write_text("\n".join(patches) + "\n")
    for p in patches:
        print(f"[official] patch: {p}", flush=True)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(
        WithIndex(),
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    center = torch.zeros(num_samples, ns.dim)
    ckpt = run_dir / "official.pt"
    start_epoch = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        center = state["center"]
        start_epoch = state["epoch"]
        random.setstate(state["py_rng"])
        np.random.set_state(state["np_rng"])
        torch.set_rng_state(state["torch_rng"])
        print(f"[official] resumed at epoch {start_epoch}", flush=True)
    logger = official.construct_logger(f"official-{args.seed}", str(run_dir))
    train_s = log.train_seconds_at(start_epoch)
    t0 = time.perf_counter()
    if start_epoch == 0:  # the official calibration loop (main_worker), verbatim
        calibration = loader
        if like_plugin:
            calibration = DataLoader(
                WithIndex(), batch_size=args.batch, shuffle=True, num_workers=args.workers
            )
        for images, labels in calibration:
            with torch.no_grad():
                output = model(images)
                official.update_feature(center, output, labels, momentum=0)
    for epoch in range(start_epoch, args.epochs):
        official.adjust_learning_rate(optimizer, epoch, ns)
        official.train(loader, model, criterion, optimizer, epoch, ns, logger, center)
        train_s += time.perf_counter() - t0
        log.add_time(epoch + 1, train_s)
        tmp = ckpt.with_suffix(".tmp")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "center": center,
                "epoch": epoch + 1,
                "py_rng": random.getstate(),
                "np_rng": np.random.get_state(),
                "torch_rng": torch.get_rng_state(),
            },
            tmp,
        )
        os.replace(tmp, ckpt)
        if epoch + 1 in set(args.eval_epochs):
            top1, top5 = knn_eval(model.encoder_q.backbone, sets)
            steps = (epoch + 1) * len(loader)
            log.add(
                epoch=epoch + 1,
                train_s=round(train_s, 2),
                steps=steps,
                knn_top1=round(top1, 3),
                knn_top5=round(top5, 3),
            )
            print(f"[{run_dir.name}] epoch {epoch + 1}: kNN top-1 {top1:.2f}", flush=True)
        if paused(args.out) or epoch + 1 >= last_epoch(args):
            return
        t0 = time.perf_counter()


# ------------------------------------------------------------------ orchestration
def write_settings(args) -> None:
    """The study's fixed settings; a different setting in the same ``--out`` is refused."""
    settings = {
        "fraction": args.fraction,
        "model": args.model,
        "batch": args.batch,
        "epochs": args.epochs,
        "eval_epochs": args.eval_epochs,
        "negatives": args.negatives,
        "effssl_overrides": args.effssl_overrides,
        "knn": {"k": K, "T": T},
    }
    if args.machine != "cpu":  # recorded only when not the default (older studies lack it)
        settings["machine"] = args.machine
    if getattr(args, "holdout", 0):  # the held-out split (issue 27; older studies lack it)
        settings |= {"holdout": args.holdout, "split_seed": args.split_seed}
    if getattr(args, "eval_set", "test") != "test":
        settings["eval_set"] = args.eval_set
    path = args.out / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            sys.exit(f"{path} holds other settings ({old}); use another --out")
    else:
        path.write_text(json.dumps(settings, indent=1) + "\n")


#: a run whose loss or features became non-finite: it is over, with no score
DIVERGED = "diverged.txt"


def finished(args, method: str, variant: str, seed: int) -> bool:
    """The run's last evaluation is in, or it diverged (``diverged.txt``)."""
    run_dir = args.out / "runs" / run_name(method, variant, seed)
    if (run_dir / DIVERGED).exists():
        return True
    return any(int(r["epoch"]) >= last_epoch(args) for r in EvalLog(run_dir).rows())


def prepare_study_data(args) -> None:
    """Extracts the data and, with ``--holdout``, prepares and verifies the split before any
    run starts, recording its summary in ``<out>/split.json`` (a different split is refused)."""
    if not getattr(args, "holdout", 0):
        return  # the workers extract the data
    data = ensure_data(args.data_dir)
    summary = verify_split(prepare_split(data, args.holdout, args.split_seed, [args.fraction]))
    path = args.out / "split.json"
    if path.exists():
        old = json.loads(path.read_text())
        same = ("holdout_per_class", "seed", "val_sha256", "val_content_sha256", "trainpool_sha256")
        if any(old[k] != summary[k] for k in same):
            sys.exit(f"{path} records another split; use another --out")
        for name, share in old["shares"].items():  # keep the shares prepared earlier
            summary["shares"].setdefault(name, share)
        if any(old["shares"][n]["sha256"] != summary["shares"][n]["sha256"] for n in old["shares"]):
            sys.exit(f"{path} records other training shares; use another --out")
    path.write_text(json.dumps(summary, indent=1) + "\n")


def search_scores(args, method: str) -> dict[float, float | None]:
    """``{learning rate: validation kNN top-1 at the last epoch}`` of ``method``'s finished
    search runs (seed 0, the protocol's); None for a run that diverged."""
    scores = {}
    for factor in (*SEARCH_FACTORS, *SEARCH_EXTENSION.values()):
        run_dir = args.out / "runs" / run_name(method, search_variant(method, factor), 0)
        rows = [r for r in EvalLog(run_dir).rows() if int(r["epoch"]) == args.epochs]
        if (run_dir / DIVERGED).exists():
            scores[search_lr(method, factor)] = None
        elif rows:
            scores[search_lr(method, factor)] = float(rows[-1]["knn_top1"])
    return scores


def planned_runs(args, plan: str) -> list[tuple[str, str, int]]:
    """A plan's runs, seed by seed; a search plan (``lr_<method>``) run to the schedule's end
    adds the extension its rule asks for (:func:`search_extension`), once."""
    runs = [(m, v, s) for s in args.seeds for m, v in PLANS[plan]]
    method = plan.removeprefix("lr_")
    if plan.startswith("lr_") and method in SEARCH_LR and last_epoch(args) == args.epochs:
        if 0 in args.seeds and (extra := search_extension(method, search_scores(args, method))):
            runs.append((method, extra, 0))
    return runs


def run_all(args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    write_settings(args)
    log = args.out / "runs.log"
    with open(log, "a") as f:
        f.write(
            f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()} {os.cpu_count()} cpus, "
            f"python {platform.python_version()}: {' '.join(sys.argv)}\n"
        )
    prepare_study_data(args)
    failed = []
    # in the order of the plans (the budget's priority), each plan seed by seed; a search
    # plan's extension (if its rule asks for one) right after its grid
    for plan in args.plan:
        runs = planned_runs(args, plan)
        run_list(args, runs, failed)
        run_list(args, [r for r in planned_runs(args, plan) if r not in runs], failed)
    report(args)
    if failed:  # the other runs went on; their errors are in runs.log
        sys.exit(f"failed: {', '.join(dict.fromkeys(failed))} (see {log})")


def run_list(args, runs: list[tuple[str, str, int]], failed: list[str]) -> None:
    """Starts each unfinished run of ``runs`` as a worker process (output in ``runs.log``);
    a run that fails is added to ``failed`` and the others go on."""
    log = args.out / "runs.log"
    for method, variant, seed in dict.fromkeys(runs):
        if run_name(method, variant, seed) in failed:
            continue
        if paused(args.out):
            print("PAUSE present: stopping before the next run")
            break
        if finished(args, method, variant, seed):
            print(f"skip {run_name(method, variant, seed)}: finished")
            continue
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--method",
            method,
            "--variant",
            variant,
            "--seed",
            str(seed),
            *common_argv(args),
        ]
        print(f"== {run_name(method, variant, seed)}", flush=True)
        start = time.time()
        with open(log, "a") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=args.out)
        print(f"   exit {proc.returncode} after {(time.time() - start) / 60:.1f} min", flush=True)
        if proc.returncode != 0 and not paused(args.out):
            failed.append(run_name(method, variant, seed))


def common_argv(args) -> list[str]:
    argv = [
        "--fraction",
        str(args.fraction),
        "--model",
        args.model,
        "--batch",
        str(args.batch),
        "--epochs",
        str(args.epochs),
        "--eval-epochs",
        *map(str, args.eval_epochs),
        "--negatives",
        str(args.negatives),
        "--effssl-overrides",
        *args.effssl_overrides,
        "--workers",
        str(args.workers),
        "--machine",
        args.machine,
        "--data-dir",
        str(args.data_dir),
        "--out",
        str(args.out),
    ]
    if args.stop_after:
        argv += ["--stop-after", str(args.stop_after)]
    if args.official_src is not None:
        argv += ["--official-src", str(args.official_src)]
    if getattr(args, "holdout", 0):
        argv += ["--holdout", str(args.holdout), "--split-seed", str(args.split_seed)]
    if getattr(args, "eval_set", "test") != "test":
        argv += ["--eval-set", args.eval_set]
    if getattr(args, "threads", 0):
        argv += ["--threads", str(args.threads)]
    return argv


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
        cmd = [
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
            f"checkpoint.dir={hydra_path(run_dir / 'linear')}",
            "checkpoint.enabled=false",
        ]
        print(f"== linear probe {run_dir.name}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=run_dir)
        final = [line for line in proc.stdout.splitlines() if line.startswith("Final: ")]
        if proc.returncode != 0 or not final:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            continue
        metrics = dict(kv.split("=") for kv in final[-1].removeprefix("Final: ").split(", "))
        result = {k: float(v) for k, v in metrics.items()}
        result.update(epochs=args.linear_epochs, seconds=round(time.perf_counter() - start, 1))
        target.write_text(json.dumps(result, indent=1) + "\n")
        print(f"   {result}", flush=True)


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


# ---------------------------------------------------------------------- report
def studies(args) -> list[Path]:
    """The study folders whose runs the report reads: ``--out``, or the ``--pool`` folders."""
    return getattr(args, "pool", None) or [args.out]


def run_dirs(args) -> list[Path]:
    """Every run's folder (``<method>__<variant>__s<seed>``), sorted; with ``--pool``, those of
    every pooled study, where one run (method, variant, seed) may appear only once."""
    dirs = sorted(d for study in studies(args) for d in (study / "runs").glob("*__*__s*"))
    names = [d.name for d in dirs]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        sys.exit(f"--pool: {', '.join(twice)} in more than one study; pool disjoint seeds")
    return dirs


def collect(args) -> dict[tuple[str, str], dict[int, list[dict]]]:
    """{(method, variant): {seed: evaluation rows}} for every run with results."""
    out: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for run_dir in run_dirs(args):
        method, variant, seed = parse_run_name(run_dir.name)
        log = EvalLog(run_dir)
        rows = [{k: float(v) for k, v in r.items()} for r in log.rows()]
        if rows:
            points = log.time_points() or [(r["epoch"], r["train_s"]) for r in rows]
            clipped = clipped_seconds(points)
            for r in rows:
                r["clipped_s"] = clipped.get(int(r["epoch"]), r["train_s"])
            out.setdefault((method, variant), {})[seed] = rows
    return out


#: an epoch slower than this multiple of its run's median epoch counts as disturbed
CLIP_FACTOR = 1.2


def clipped_seconds(points: list[tuple[float, float]]) -> dict[int, float]:
    """Cumulative training seconds with disturbed epochs clipped: ``points`` are
    ``(epoch, cumulative seconds)``; after the first interval (which holds the calibration
    pass and start-up), each interval's seconds per epoch are capped at ``CLIP_FACTOR``
    times the run's median (weighted by epochs). This removes slow-downs from other work on
    the shared 2-core machine (and restarts) without hiding a method's real cost."""
    points = sorted((int(e), float(t)) for e, t in points)
    intervals = list(zip(points, points[1:], strict=False))
    if not intervals:
        return dict(points)
    rates = []
    for (e0, t0), (e1, t1) in intervals:
        rates += [(t1 - t0) / (e1 - e0)] * (e1 - e0)
    cap = CLIP_FACTOR * statistics.median(rates)
    out = {points[0][0]: points[0][1]}
    for (e0, t0), (e1, t1) in intervals:
        out[e1] = out[e0] + min(t1 - t0, cap * (e1 - e0))
    return out


def label(method: str, variant: str) -> str:
    if method == "effssl" and variant == "default":
        return "effssl (grad)"  # EFFSSL_BASE
    return method if variant == "default" else f"{method} ({variant})"


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


#: seeds each arm needs before a difference can be called
MIN_SEEDS = 3


def separated(a: list[float], b: list[float]) -> str:
    """The study's rule for calling a difference: with >= 3 seeds each, the means differ by
    more than the larger standard deviation AND every seed of one arm is above every seed of
    the other. Returns ``"A > B"``, ``"B > A"``, ``"not separated"`` or, with fewer seeds,
    ``"too few seeds"``."""
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        return "too few seeds"
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if abs(ma - mb) <= max(sa, sb):
        return "not separated"
    if min(a) > max(b):
        return "A > B"
    if min(b) > max(a):
        return "B > A"
    return "not separated"


def interpolate(rows: list[dict], x_key: str, x: float, y_key: str = "knn_top1") -> float | None:
    """``y_key`` linearly interpolated at ``x`` along ``x_key``; after the run's end its final
    value (a finished run keeps its features), before its first evaluation None."""
    points = sorted((r[x_key], r[y_key]) for r in rows)
    if not points or x < points[0][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def first_reaching(rows: list[dict], level: float) -> float | None:
    """The (interpolated) epoch at which kNN top-1 first reaches ``level``; None if never."""
    points = sorted((r["epoch"], r["knn_top1"]) for r in rows)
    if points and points[0][1] >= level:
        return points[0][0]
    for (e0, y0), (e1, y1) in zip(points, points[1:], strict=False):
        if y0 < level <= y1:
            return e0 + (e1 - e0) * (level - y0) / (y1 - y0)
    return None


#: the study's EffSSL baseline, arm A of most comparisons
EFFSSL = ("effssl", "default")
#: the "cost" measure's step costs, measured alone on one machine (``step_cost.py``: median
#: seconds a step over interleaved rounds), so free of the machines' speeds across sessions;
#: each arm's method name in that CSV
STEP_COST_CSV = REPO / "benchmarks/results/step_cost_cpu_mobilenetv3_small_100_b256_proj.csv"
STEP_COST_METHOD = {EFFSSL: "effssl", ("effssl", "proj=512"): "effssl-proj512"}


def step_seconds(arm: tuple[str, str]) -> float:
    """An arm's measured seconds a training step, from :data:`STEP_COST_CSV`."""
    with open(STEP_COST_CSV) as f:
        by_method = {r["method"]: float(r["median_s_per_step"]) for r in csv.DictReader(f)}
    return by_method[STEP_COST_METHOD[arm]]


#: (arm A, arm B, what is compared) of the report's comparisons section
COMPARISONS = [
    *(
        (EFFSSL, (baseline, "default"), measure)
        for baseline in ("simclr", "byol", "mocov2plus")
        for measure in ("end", "minutes")
    ),
    (EFFSSL, ("mocov2plus", "queue=4096"), "end"),
    (EFFSSL, ("mocov2plus", "queue=4096"), "minutes"),
    *(
        (EFFSSL, baseline, measure)
        for baseline in (("byol", "tau=0.96"), ("mocov2plus", "queue=4096,tau=0.96"))
        for measure in ("end", "minutes")
    ),
    # the short-schedule probes against their recipes, epoch by epoch
    (("byol", "tau=0.96"), ("byol", "default"), "curve"),
    (("mocov2plus", "queue=4096,tau=0.96"), ("mocov2plus", "queue=4096"), "curve"),
    (EFFSSL, ("effssl", "bank_update=ema"), "end"),
    (EFFSSL, ("effssl", "bank_update=ema"), "reach"),
    # epochs only: the ema runs ran in a faster session than simclr's (BENCHMARKS 3c)
    (("effssl", "bank_update=ema"), ("simclr", "default"), "end"),
    (("official", "default"), ("effssl", "bank_update=ema"), "curve"),
    (("official", OFFICIAL_LIKE_PLUGIN), ("effssl", "bank_update=ema"), "curve"),
    (("official", OFFICIAL_LIKE_PLUGIN), ("official", "default"), "curve"),
    (EFFSSL, ("effssl", "kl_weight=0"), "end"),
    (EFFSSL, ("effssl", "kl_weight=0"), "reach"),
    # "greatly accelerates convergence" (the paper): the two curves epoch by epoch
    (EFFSSL, ("effssl", "kl_weight=0"), "curve"),
    (EFFSSL, ("effssl", "bank_init=random"), "end"),
    (EFFSSL, ("effssl", "proj=512"), "end"),
    (EFFSSL, ("effssl", "proj=512"), "minutes"),
    (EFFSSL, ("effssl", "proj=512"), "cost"),
]


def comparison_lines(runs: dict, epochs: int) -> list[str]:
    """The comparisons section: each pair's values, difference and verdict, finished runs
    only. ``end``: kNN after the last epoch; ``minutes``: kNN at the shorter arm's mean
    (clipped) training time, interpolated along each run's curve (equal compute);
    ``cost``: A at the epoch where its training steps cost what B's whole run does, by
    :func:`step_seconds`, against B at the end;
    ``reach``: the epoch at which each seed first reaches the lowest final kNN of any
    seed of either arm (so that every seed reaches it); ``curve``: kNN at every evaluated
    epoch, over the seeds that reached it (unfinished runs included)."""
    lines = [
        "## Comparisons",
        "",
        "Finished runs only, except the curves ('all runs there'). A difference is called "
        f"only with >= {MIN_SEEDS} seeds per arm, "
        "when the means differ by more than the larger of the two standard deviations *and* "
        "every seed of one arm is above every seed of the other; otherwise it is reported as "
        "not separated. 'kNN at N min' reads every run's curve at the shorter arm's mean "
        "clipped training time (a run that finished earlier keeps its final value).",
        "",
        "| A | B | measure | A | B | A - B | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    done = {
        key: {s: rows for s, rows in seeds.items() if int(rows[-1]["epoch"]) == epochs}
        for key, seeds in runs.items()
    }

    def add(a, b, what: str, va: list[float], vb: list[float]) -> None:
        (ma, sa), (mb, sb) = mean_std(va), mean_std(vb)
        lines.append(
            f"| {label(*a)} | {label(*b)} | {what} | {ma:.2f} +- {sa:.2f} (n={len(va)}) | "
            f"{mb:.2f} +- {sb:.2f} (n={len(vb)}) | {ma - mb:+.2f} | {separated(va, vb)} |"
        )

    for a, b, measure in COMPARISONS:
        if measure == "curve":
            ra, rb = runs.get(a, {}), runs.get(b, {})
            at = {  # {epoch: ([A's values], [B's values])}
                int(r["epoch"]): ([], []) for arm in (ra, rb) for rows in arm.values() for r in rows
            }
            for side, arm in enumerate((ra, rb)):
                for rows in arm.values():
                    for r in rows:
                        at[int(r["epoch"])][side].append(r["knn_top1"])
            for epoch, (va, vb) in sorted(at.items()):
                if va and vb:
                    add(a, b, f"kNN at epoch {epoch} (all runs there)", va, vb)
            continue
        ra, rb = done.get(a, {}), done.get(b, {})
        if not ra or not rb:
            continue
        if measure == "end":
            va = [rows[-1]["knn_top1"] for rows in ra.values()]
            vb = [rows[-1]["knn_top1"] for rows in rb.values()]
            what = f"kNN at epoch {epochs}"
        elif measure == "minutes":
            budget = min(
                statistics.fmean(rows[-1]["clipped_s"] for rows in arm.values()) for arm in (ra, rb)
            )
            va = [interpolate(rows, "clipped_s", budget) for rows in ra.values()]
            vb = [interpolate(rows, "clipped_s", budget) for rows in rb.values()]
            what = f"kNN at {budget / 60:.1f} min"
        elif measure == "cost":
            at = epochs * step_seconds(b) / step_seconds(a)
            va = [interpolate(rows, "epoch", at) for rows in ra.values()]
            vb = [rows[-1]["knn_top1"] for rows in rb.values()]
            what = f"kNN at equal step cost (A at epoch {at:.1f}, B at {epochs})"
        else:
            level = min(rows[-1]["knn_top1"] for arm in (ra, rb) for rows in arm.values())
            va = [v for rows in ra.values() if (v := first_reaching(rows, level)) is not None]
            vb = [v for rows in rb.values() if (v := first_reaching(rows, level)) is not None]
            what = f"epochs to kNN {level:.1f} (lower is better)"
        va, vb = [v for v in va if v is not None], [v for v in vb if v is not None]
        if va and vb:
            add(a, b, what, va, vb)
    return lines + [""]


def evaluated_images(args) -> str:
    """The report's name for the evaluation images."""
    if getattr(args, "eval_set", "test") == "val":
        return (
            f"the held-out validation split ({args.holdout} training images a class, split "
            f"seed {args.split_seed}, never trained on; `split.json`), not the test set"
        )
    return "the 10,000 test images"


def search_lines(args, runs: dict) -> list[str]:
    """The learning-rate search (protocol 01): each searched method's learning rates with
    their kNN at every evaluated epoch (seed 0), and the rule's choice (on the last epoch)
    once its grid has finished."""
    methods = [
        m
        for m in SEARCH_LR
        if any(
            (m, search_variant(m, f)) in runs for f in (*SEARCH_FACTORS, *SEARCH_EXTENSION.values())
        )
    ]
    if not methods:
        return []
    lines = [
        "## Learning-rate search (benchmarks/protocols/01_lr_search.md)",
        "",
        f"Seed 0, warm-up {SEARCH_WARMUP:.0%} of the schedule for every arm. The rule: the "
        f"highest kNN at epoch {args.epochs}; within {SEARCH_TIE:g} point of it, the learning "
        "rate closest to the current one (log scale), then the lower; a choice at an edge of "
        "the grid runs the next value past it (x1/9 or x9) once.",
        "",
        "| method | learning rate | x current | kNN top-1 by epoch | at the end |",
        "|---|---|---|---|---|",
    ]
    for method in methods:
        for factor in sorted((*SEARCH_FACTORS, *SEARCH_EXTENSION.values())):
            variant = search_variant(method, factor)
            run_dir = args.out / "runs" / run_name(method, variant, 0)
            rows = runs.get((method, variant), {}).get(0, [])
            if not rows and not (run_dir / DIVERGED).exists():
                continue
            curve = ", ".join(f"{int(r['epoch'])}: {r['knn_top1']:.2f}" for r in rows)
            end = [r["knn_top1"] for r in rows if int(r["epoch"]) == args.epochs]
            if (run_dir / DIVERGED).exists():
                end_cell = "diverged: " + (run_dir / DIVERGED).read_text().strip()
            else:
                end_cell = f"**{end[0]:.2f}**" if end else "(running)"
            lines.append(
                f"| {method} | {search_lr(method, factor):g} | {factor:.3g} | {curve or '-'} | "
                f"{end_cell} |"
            )
        scores = search_scores(args, method)
        grid = [search_lr(method, f) for f in SEARCH_FACTORS]
        if all(lr in scores for lr in grid):
            chosen, why = search_choice(scores, SEARCH_LR[method])
            extension = search_extension(method, scores)
            lines.append(
                f"| **{method}: chosen** | **{chosen:g}** | | {why}"
                + (f"; extension {extension} due" if extension else "")
                + " | |"
                if chosen is not None
                else f"| **{method}: no choice** | | | {why} | |"
            )
    return lines + [""]


def report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = {
        d: json.loads(f.read_text()) for d in studies(args) if (f := d / "settings.json").exists()
    }
    if len({json.dumps(v, sort_keys=True) for v in found.values()}) > 1:
        sys.exit(f"--pool: the studies' settings differ: {found}")
    for key, value in next(iter(found.values()), {}).items():  # theirs, not this command line's
        if key != "knn":
            setattr(args, key, value)
    runs = collect(args)
    if not runs:
        print("no results yet")
        return
    refs = {}  # {seed: untrained kNN}; the pooled studies measure the same seeds alike
    for path in (d / "random_init.csv" for d in studies(args)):
        if path.exists():
            with open(path) as f:
                refs |= {
                    int(r["seed"]): float(r["knn_top1"])
                    for r in csv.DictReader(f)
                    if r["model"] == args.model
                }
    reference = mean_std(list(refs.values())) + (len(refs),) if refs else None
    lines = [
        "# Evidence study",
        "",
        *(
            [f"Pooled from: {', '.join(d.name for d in args.pool)} (same settings).", ""]
            if getattr(args, "pool", None)
            else []
        ),
        f"CIFAR-10, {args.fraction:.0%} of the training images (class-stratified), timm "
        f"`{args.model}` (low-resolution stem), batch {args.batch}, {args.epochs} epochs"
        + (
            f"; EffSSL and the official loop with `{' '.join(args.effssl_overrides)}`. "
            if getattr(args, "effssl_overrides", None)
            else ". "
        )
        + f"kNN (cosine, k={K}, T={T}) top-1 on {evaluated_images(args)}, the run's training "
        "images as reference. Mean +- sample standard deviation over seeds, then every "
        "seed's value. Wall-clock minutes exclude evaluation and include calibration and "
        "data loading; 'clipped' caps each epoch at "
        f"{CLIP_FACTOR}x its run's median epoch (other work on the shared 2-core machine, "
        "restarts), and the minutes axis of the plot uses it. Unfinished runs are marked.",
        "",
    ]
    if reference:
        lines += [
            f"Untrained backbone ({reference[2]} seed(s)): {reference[0]:.2f} +- "
            f"{reference[1]:.2f}. A run counts as having learned when it ends >= 10 points "
            "above it.",
            "",
        ]
    spent = [max((t for _, t in EvalLog(d).time_points()), default=0.0) for d in run_dirs(args)]
    lines += [
        f"Compute so far: {sum(spent) / 3600:.1f} h of training wall-clock over {len(spent)} "
        "runs (raw, so including other work on the machine; evaluations, linear probes and "
        "the untrained-backbone reference not counted).",
        "",
        "| method | seeds | final epoch | kNN top-1 at the end | values "
        "| train min (raw / clipped) | linear top-1 | values |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (method, variant), seeds in sorted(runs.items()):
        finals = [rows[-1] for rows in seeds.values()]
        top1 = [r["knn_top1"] for r in finals]
        m, s = mean_std(top1)
        epochs = sorted({int(r["epoch"]) for r in finals})
        note = "" if epochs == [args.epochs] else " (unfinished)"
        names = {run_name(method, variant, seed) for seed in seeds}
        probes = [
            json.loads(p.read_text())["val_acc1"]
            for d in run_dirs(args)
            if d.name in names and (p := d / "linear.json").exists()
        ]
        linear = "-"
        if probes:
            lm, ls = mean_std(probes)
            linear = f"{lm:.2f} +- {ls:.2f} (n={len(probes)}) | " + ", ".join(
                f"{v:.2f}" for v in probes
            )
        else:
            linear += " | -"
        lines.append(
            f"| {label(method, variant)} | {len(seeds)} | {'/'.join(map(str, epochs))}{note} | "
            f"{m:.2f} +- {s:.2f} | {', '.join(f'{v:.2f}' for v in top1)} | "
            f"{statistics.fmean(r['train_s'] for r in finals) / 60:.1f} / "
            f"{statistics.fmean(r['clipped_s'] for r in finals) / 60:.1f} | {linear} |"
        )
    lines.append("")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for i, ((method, variant), seeds) in enumerate(sorted(runs.items())):
        epochs = sorted(set.intersection(*({r["epoch"] for r in v} for v in seeds.values())))
        if not epochs:
            continue
        per_epoch = [
            [next(r for r in rows if r["epoch"] == e) for rows in seeds.values()] for e in epochs
        ]
        acc = [mean_std([r["knn_top1"] for r in rs]) for rs in per_epoch]
        minutes = [statistics.fmean(r["clipped_s"] for r in rs) / 60 for rs in per_epoch]
        mean = [a[0] for a in acc]
        low = [a[0] - a[1] for a in acc]
        high = [a[0] + a[1] for a in acc]
        name = f"{label(method, variant)} (n={len(seeds)})"
        for ax, x in ((axes[0], epochs), (axes[1], minutes)):
            ax.plot(x, mean, marker="o", color=f"C{i}", label=name)
            ax.fill_between(x, low, high, color=f"C{i}", alpha=0.2)
    for ax, xlabel in zip(axes, ("epochs", "training wall-clock (min, 2 CPU cores)"), strict=True):
        if reference:
            ax.axhline(reference[0], color="gray", ls="--", label="untrained backbone")
            ax.axhline(reference[0] + 10, color="gray", ls=":", label="untrained + 10")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("kNN top-1 (%)")
    axes[1].legend(fontsize=7)
    fig.suptitle(
        f"CIFAR-10 {args.fraction:.0%}, {args.model}, batch {args.batch}: mean +- std over seeds"
    )
    fig.tight_layout()
    fig.savefig(args.out / "study.png", dpi=120)
    plt.close(fig)
    lines += ["![kNN against epochs and wall-clock](study.png)", ""]
    lines += search_lines(args, runs)
    lines += comparison_lines(runs, args.epochs)
    lines += ["## Every evaluation", "", "| run | " + " | ".join(["epoch: top-1"]) + " |"]
    lines += ["|---|---|"]
    for (method, variant), seeds in sorted(runs.items()):
        for seed, rows in sorted(seeds.items()):
            cells = ", ".join(f"{int(r['epoch'])}: {r['knn_top1']:.1f}" for r in rows)
            lines.append(f"| {label(method, variant)} seed {seed} | {cells} |")
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--plan", nargs="+", default=["main"], choices=list(PLANS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--model", default="mobilenetv3_small_100")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--eval-epochs", type=int, nargs="+", default=None)
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop every run after this epoch of its --epochs schedule (resumable)",
    )
    p.add_argument("--negatives", type=int, default=-1, help="effssl num_negatives (-1: all rows)")
    p.add_argument(
        "--effssl-overrides",
        nargs="*",
        default=[],
        help="config overrides for every effssl run and the official reference's lr, e.g. "
        "optimizer.lr=0.1 (recorded in settings.json)",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--holdout",
        type=int,
        default=0,
        help="training images a class held out as the validation split (issue 27; 0: none, "
        "the training share drawn from all training images as before)",
    )
    p.add_argument("--split-seed", type=int, default=0, help="the draw of --holdout's split")
    p.add_argument(
        "--eval-set",
        default="test",
        choices=["test", "val"],
        help="the kNN's (and linear probe's) evaluation images: the test set, or the held-out "
        "validation split (needs --holdout): every choice is made on val",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch.set_num_threads in each worker (0: torch's default); 1 beside other work",
    )
    p.add_argument(
        "--machine",
        default="cpu",
        choices=["cpu", "auto"],
        help="the launcher's machine preset: cpu, or auto (all GPUs if any; gpu_suite.sh)",
    )
    p.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "effssl" / "cifar10")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "study")
    p.add_argument(
        "--official-src",
        type=Path,
        default=Path(os.environ["EFFSSL_OFFICIAL_SRC"])
        if "EFFSSL_OFFICIAL_SRC" in os.environ
        else None,
    )
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--pool",
        type=Path,
        nargs="+",
        default=None,
        help="with --report-only: pool the runs of these studies (same settings, other seeds) "
        "into one report written to --out",
    )
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--linear", action="store_true", help="linear probes of finished runs")
    p.add_argument("--linear-epochs", type=int, default=30)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.out = args.out.resolve()
    args.data_dir = args.data_dir.resolve()
    if args.eval_epochs is None:
        step = max(1, args.epochs // 10)
        args.eval_epochs = sorted({*range(step, args.epochs + 1, step), args.epochs})
    if args.official_src is not None:
        args.official_src = args.official_src.resolve()
    if args.worker:
        if args.method == "official":
            if args.official_src is None:
                sys.exit("the official reference needs --official-src (or EFFSSL_OFFICIAL_SRC)")
            official_worker(args)
        else:
            launcher_worker(args)
    elif args.random_init:
        random_init_reference(args)
        report(args)
    elif args.linear:
        linear_probes(args)
        report(args)
    elif args.report_only:
        if args.pool:
            args.pool = [d.resolve() for d in args.pool]
            args.out.mkdir(parents=True, exist_ok=True)
        report(args)
    elif args.pool:
        sys.exit("--pool only with --report-only")
    else:
        run_all(args)


if __name__ == "__main__":
    main()
