"""Protocol 02's final measures (and protocol 05's, the same in each of its regimes), once a
run has finished its schedule, on the frozen backbone of its last epoch's checkpoint, on the
10,000 test images: the weighted kNN against the run's own training images, the same
against the *unseen reference* (pool images no run trained on), and the linear probe. Where
the unseen reference lies in the pool and which images the probe trains on are explicit
(:class:`FinalImages`). Each run's measures go to ``<run>/final.json`` as they finish, so
that a stopped pass continues where it was."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from .data import (
    ensure_data,
    names_digest,
    prepare_split,
    prepare_study_data,
    share_name,
    study_data,
)
from .equal_compute import EQUAL_COMPUTE_PLANS, FINAL_FILE
from .evaluation import (
    backbone_features,
    eval_sets,
    linear_command,
    load_images,
    run_probe,
    weighted_knn,
)
from .orchestration import planned_runs, write_settings
from .runs import DIVERGED, finished, paused, run_epochs, run_name, set_threads
from .scale import REGIMES, SCALE_PLANS

#: final.json's keys of the three measures (top-1 on the test images)
MEASURE_KEYS = {"knn_own": "knn_own_top1", "knn_unseen": "knn_unseen_top1", "linear": "linear"}


class FinalImages(NamedTuple):
    """The images of the final measures beyond the run's own share, as training shares of the
    split (fractions of each class): the unseen reference is the pool's images right after
    the share ``unseen_after``, as many a class as the share ``unseen_size`` holds; the linear
    probe trains on the share ``probe`` (None: the pretraining run's own training images)."""

    unseen_after: float
    unseen_size: float
    probe: float | None = None


def final_images(args, plans: list[str]) -> FinalImages:
    """The images of ``plans``' final measures: a protocol-05 regime's own
    (:data:`.scale.REGIMES`), else protocol 02's (the unseen reference right after the run's
    share and as large, the probe on the run's images). One regime's plans at a time."""
    regimes = {SCALE_PLANS[p] for p in plans if p in SCALE_PLANS}
    if not regimes:
        return FinalImages(args.fraction, args.fraction)
    if len(regimes) > 1 or len(regimes) != len(plans):
        sys.exit(f"--final-measures: one regime's plan at a time, not {plans}")
    regime = REGIMES[regimes.pop()]
    return FinalImages(regime.unseen_after, regime.unseen_size, regime.probe)


def unseen_names(manifest: dict, start: int, count: int) -> dict[str, list[str]]:
    """The unseen reference of a split's ``manifest``: in every class, the images
    ``start + 1`` to ``start + count`` of the pool's drawn order (protocol 02: the 501st to
    1,000th, after the 10% share's first 500 and inside the 40% share's 2,000), sorted."""
    names = {}
    for cls, pool in sorted(manifest["pool_order"].items()):
        if len(pool) < start + count:
            raise ValueError(f"class {cls}: {len(pool)} pool images, fewer than {start + count}")
        names[cls] = sorted(pool[start : start + count])
    return names


def unseen_problems(manifest: dict, names: dict[str, list[str]], share: str) -> list[str]:
    """Every way the unseen reference ``names`` fails its rules: disjoint from the validation
    images and from the training share ``share``, inside the pool, every class alike."""
    trained = manifest["shares"][share]["names"]
    problems = []
    if sorted(names) != sorted(manifest["val"]) or sorted(names) != sorted(trained):
        problems.append("the unseen reference has other classes than the split")
    if len({len(v) for v in names.values()}) != 1:
        problems.append("the unseen reference is not stratified")
    for cls, ns in names.items():
        if set(ns) & set(manifest["val"].get(cls, [])):
            problems.append(f"the unseen reference shares validation images of {cls}")
        if set(ns) & set(trained.get(cls, [])):
            problems.append(f"the unseen reference shares training images of {cls}")
        if not set(ns) <= set(manifest["pool_order"].get(cls, [])):
            problems.append(f"the unseen reference is not inside the pool for {cls}")
    return problems


def unseen_reference(
    args, data: Path, images: FinalImages | None = None
) -> tuple[list[Path], list[int], str]:
    """(files, labels, name digest) of the unseen reference of the study's split, in every
    class the pool's images after those of the share ``images.unseen_after``, as many as the
    share ``images.unseen_size`` holds (default: both the run's own share, protocol 02's);
    checked against its rules (:func:`unseen_problems`) for the run's share and the probe's.
    Labels are ImageFolder's (the sorted class names' indices)."""
    images = images or FinalImages(args.fraction, args.fraction)
    after, size = share_name(images.unseen_after), share_name(images.unseen_size)
    fractions = [args.fraction, images.unseen_after, images.unseen_size, images.probe]
    split = prepare_split(data, args.holdout, args.split_seed, [f for f in fractions if f])
    manifest = json.loads((split / "manifest.json").read_text())
    shares = manifest["shares"]
    names = unseen_names(manifest, shares[after]["per_class"], shares[size]["per_class"])
    trained = {share_name(f) for f in (args.fraction, images.probe) if f}
    if problems := [
        p for share in sorted(trained) for p in unseen_problems(manifest, names, share)
    ]:
        sys.exit(f"{split}: {'; '.join(problems)}")
    classes = sorted(names)
    files = [data / "train" / cls / n for cls in classes for n in names[cls]]
    labels = [i for i, cls in enumerate(classes) for _ in names[cls]]
    return files, labels, names_digest(names)


def probe_folder(args, data: Path, images: FinalImages) -> Path | None:
    """The folder of the share the linear probe trains on (None: the run's own images)."""
    if images.probe is None:
        return None
    return prepare_split(data, args.holdout, args.split_seed, [images.probe]) / share_name(
        images.probe
    )


def measure_sets(args, data: Path, images: FinalImages | None = None) -> dict:
    """The images of the final kNN: the run's training share (own reference), the unseen
    reference (:func:`unseen_reference`), the test images; each (images, labels), and the
    unseen reference's digest."""
    import torch

    train_dir = study_data(args, data)[0]
    own_x, own_y, test_x, test_y = eval_sets(train_dir, -1, data / "test")
    files, labels, digest = unseen_reference(args, data, images)
    classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
    if classes != sorted({f.parent.name for f in files}):
        sys.exit(f"the unseen reference's classes differ from {train_dir}'s")
    unseen = (load_images([str(f) for f in files]), torch.tensor(labels))
    return {"own": (own_x, own_y), "unseen": unseen, "test": (test_x, test_y), "digest": digest}


def final_checkpoint(run_dir: Path, method: str, epochs: int) -> Path | None:
    """The run's checkpoint after its last epoch (``...-ep=<epochs - 1>.ckpt``: Lightning
    counts from 0), the newest if several; None when none is here (checkpoints stay local)."""
    from effssl_plugin.run_layout import checkpoint_epoch

    ckpts = [
        p for p in (run_dir / "ckpt" / method).glob("*/*.ckpt") if checkpoint_epoch(p) == epochs - 1
    ]
    return max(ckpts, key=lambda p: p.stat().st_mtime) if ckpts else None


def final_knn(ckpt: Path, sets: dict) -> dict:
    """Both kNN measures of a checkpoint's frozen backbone on the test images: against the
    run's own training images and against the unseen reference (features computed once)."""
    from effssl_plugin.evaluation import load_pretrained_backbone

    start = time.perf_counter()
    backbone, _, _ = load_pretrained_backbone(ckpt)
    images = [sets["own"][0], sets["unseen"][0], sets["test"][0]]
    own, unseen, test = backbone_features(backbone, images)
    own1, own5 = weighted_knn(own, sets["own"][1], test, sets["test"][1])
    unseen1, unseen5 = weighted_knn(unseen, sets["unseen"][1], test, sets["test"][1])
    return {
        "knn_own_top1": own1,
        "knn_own_top5": own5,
        "knn_unseen_top1": unseen1,
        "knn_unseen_top5": unseen5,
        "unseen_sha256": sets["digest"],
        "knn_seconds": round(time.perf_counter() - start, 1),
    }


def write_json(path: Path, value: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)


def measure_run(
    args, run_dir: Path, method: str, variant: str, data: Path, sets: dict, images: FinalImages
) -> None:
    """A finished run's missing final measures into ``final.json`` (each saved when done);
    ``sets`` (:func:`measure_sets` of ``images``) is loaded on first need and kept for the
    next run; the probe trains on ``images.probe``'s share (:func:`probe_folder`)."""
    path = run_dir / FINAL_FILE
    result = json.loads(path.read_text()) if path.exists() else {}
    if all(key in result for key in MEASURE_KEYS.values()):
        return
    epochs = run_epochs(args, variant)
    ckpt = final_checkpoint(run_dir, method, epochs)
    if ckpt is None:
        print(f"== final measures {run_dir.name}: skipped, no checkpoint of epoch {epochs} here")
        return
    print(f"== final measures {run_dir.name} ({ckpt.name})", flush=True)
    result |= {"epochs": epochs, "checkpoint": str(ckpt.relative_to(run_dir)), "images": "test"}
    if "knn_own_top1" not in result:
        if not sets:
            sets.update(measure_sets(args, data, images))
        result |= final_knn(ckpt, sets)
        write_json(path, result)
        print(f"   kNN own {result['knn_own_top1']:.2f}, unseen {result['knn_unseen_top1']:.2f}")
    if "linear" not in result:
        probe_dir = probe_folder(args, data, images)
        cmd = linear_command(args, ckpt, run_dir, data / "test", -1, "linear_test", probe_dir)
        if (probe := run_probe(args, cmd, run_dir)) is not None:
            trained = {} if probe_dir is None else {"probe_train": probe_dir.name}
            write_json(path, result | {"linear": probe} | trained)


def final_measures(args) -> None:
    """The final measures of every finished, not diverged run of ``--plan``'s protocol-02 or
    protocol-05 plans and ``--seeds`` (:func:`measure_run`, with the plans' images,
    :func:`final_images`); stops before the next run while ``PAUSE`` exists."""
    plans = [p for p in args.plan if p in EQUAL_COMPUTE_PLANS or p in SCALE_PLANS]
    if not plans or not getattr(args, "holdout", 0):
        known = [*EQUAL_COMPUTE_PLANS, *SCALE_PLANS]
        sys.exit(f"--final-measures needs --holdout and a plan of {known}")
    images = final_images(args, plans)
    args.out.mkdir(parents=True, exist_ok=True)
    write_settings(args)
    set_threads(args)
    prepare_study_data(args)
    data, sets = ensure_data(args.data_dir), {}
    for method, variant, seed in dict.fromkeys(r for p in plans for r in planned_runs(args, p)):
        if paused(args.out):
            print("PAUSE present: stopping before the next run's final measures")
            break
        run_dir = args.out / "runs" / run_name(method, variant, seed)
        if finished(args, method, variant, seed) and not (run_dir / DIVERGED).exists():
            measure_run(args, run_dir, method, variant, data, sets, images)
