"""The study's data: CIFAR-10 as JPEG folders, extracted once from the shared archive, and
the held-out validation split (issue 27), made once on disk and verified on every use."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tarfile
from pathlib import Path

from .runs import REPO

#: all of CIFAR-10 as JPEG folders (see ../shared/data/README); extracted once to --data-dir
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10_jpg_q75.tar.gz"
SPLIT_RULE = (
    "per class: sorted names shuffled by random.Random(f'{seed}:{class}'); "
    "val = the first holdout, pool = the rest in drawn order; a share of n a class = "
    "the pool's first n"
)


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


def fresh_tmp(path: Path) -> Path:
    """``path`` emptied (a leftover of an interrupted preparation is removed)."""
    if path.exists():
        shutil.rmtree(path)
    return path


def make_split(data: Path, out: Path, holdout: int, seed: int, files: dict) -> None:
    """Draws the split and writes ``val/``, ``trainpool/`` and ``manifest.json`` (no shares
    yet) into a temporary folder, renamed to ``out`` when complete."""
    drawn = draw_split(files, holdout, seed)
    tmp = fresh_tmp(out.with_name(out.name + ".tmp"))
    tmp.mkdir(parents=True)
    link_tree(data / "train", tmp / "val", drawn["val"])
    link_tree(data / "train", tmp / "trainpool", drawn["pool"])
    manifest = {
        "source": str(data / "train"),
        "archive_sha256": file_sha256(ARCHIVE) if ARCHIVE.is_file() else None,
        "holdout_per_class": holdout,
        "seed": seed,
        "rule": SPLIT_RULE,
        "val": drawn["val"],
        "pool_order": drawn["pool"],
        "val_sha256": names_digest(drawn["val"]),
        "val_content_sha256": content_digest(data / "train", drawn["val"]),
        "trainpool_sha256": names_digest(drawn["pool"]),
        "shares": {},
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out)


def add_share(data: Path, out: Path, manifest: dict, fraction: float, class_size: int) -> None:
    """Links the training share of ``fraction`` (the pool's first images of every class)
    into ``out/train_f<fraction>/`` and records it in ``manifest`` (not yet written)."""
    name = share_name(fraction)
    n = share_per_class(fraction, class_size)
    if not all(0 < n <= len(p) for p in manifest["pool_order"].values()):
        sys.exit(f"a share of {fraction:g} ({n} a class) does not fit the pool")
    names = {cls: sorted(p[:n]) for cls, p in manifest["pool_order"].items()}
    tmp = fresh_tmp(out / (name + ".tmp"))
    link_tree(data / "train", tmp, names)
    os.replace(tmp, out / name)
    manifest["shares"][name] = {
        "fraction": fraction,
        "per_class": n,
        "names": names,
        "sha256": names_digest(names),
        "content_sha256": content_digest(data / "train", names),
    }


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
        make_split(data, out, holdout, seed, files)
    manifest = json.loads(manifest_path.read_text())
    if manifest["seed"] != seed or manifest["holdout_per_class"] != holdout:
        sys.exit(f"{manifest_path}: another split ({manifest['seed']}, {holdout})")
    missing = [f for f in dict.fromkeys(fractions) if share_name(f) not in manifest["shares"]]
    for fraction in missing:
        add_share(data, out, manifest, fraction, min(len(v) for v in files.values()))
    if missing:
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, manifest_path)
    verify_split(out)
    return out


def split_problems(out: Path, manifest: dict) -> list[str]:
    """Every way the folders under ``out`` differ from ``manifest`` or break the split's
    rules (see :func:`verify_split`)."""
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
    return problems


def verify_split(out: Path) -> dict:
    """Checks a prepared split against its manifest: every folder holds exactly its listed
    images, ``val`` is disjoint from the pool and from every share, each share lies inside
    the pool and has the same count in every class, and the name digests match. Returns the
    manifest's summary (no name lists), as :func:`split_summary`."""
    manifest = json.loads((out / "manifest.json").read_text())
    if problems := split_problems(out, manifest):
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
