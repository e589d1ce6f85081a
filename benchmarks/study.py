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
images, on disk (:func:`evidence.data.prepare_split`:
``<data-dir>/splits/holdout<N>_s<seed>/`` with ``val/``, ``trainpool/`` and
``train_f<fraction>/`` folders of hard links and a ``manifest.json`` with their digests);
``--eval-set val`` evaluates the kNN on those N x 10 images instead of the test set,
so that choices (learning rates, rules) never see the test images. Without ``--holdout`` the
runs train on solo-learn's ``data.fraction`` share of all training images, as every study
before issue 27 did.

    python benchmarks/study.py --plan lr_simclr lr_effssl --seeds 0 --holdout 500 \
        --eval-set val --epochs 15 --eval-epochs 5 10 15 --threads 1   # protocol 01

Protocol 02 (``benchmarks/protocols/02_equal_compute.md``, :mod:`evidence.equal_compute`):
its arms are fixed from protocol 01's choices (``--lr-search``, that search's folder) and the
step-cost CSV (``--step-cost``, default ``<out>/step_cost_cpu_mobilenetv3_small_100_b256.csv``)
into ``<out>/arms.json``; each arm is a variant ``lr=<lr>,wu=0,ep=<epochs>``, a complete
schedule of its own length (``--epochs`` is the longest, ``--eval-epochs`` the validation
readings, cut at each run's own last epoch). ``--final-measures`` then measures every
finished run on the test set (kNN against its own and an unseen reference, linear probe);
``<out>/equal_compute.md`` is its report (``benchmarks/study_equal_compute.sh`` runs it all):

    python benchmarks/study.py --arms --holdout 500 --eval-set val --epochs 50 ...
    python benchmarks/study.py --plan equal_compute_short --seeds 0 1 2 --holdout 500 \
        --eval-set val --epochs 50 --eval-epochs 5 10 15 20 25 30 35 40 45 50 --threads 1
    python benchmarks/study.py --final-measures --plan equal_compute_short --seeds 0 1 2 ...

Protocol 05 (``benchmarks/protocols/05_scale_and_backbone.md``, :mod:`evidence.scale`): the
equal-compute comparison in two more regimes, each a study of its own in ``<root>/R2`` (the
40% share, mobilenetv3_small_100, EffSSL ``--negatives 10000``) and ``<root>/R3`` (resnet18
on the 10% share), plans ``scale_r2`` and ``scale_r3``; each regime's arms E and S are fixed
from its own step-cost CSV into its ``arms.json``, ``--final-measures`` measures its runs
(the probe on the 10% share in both), and ``<root>/report.md`` compares the advantages with
R1, protocol 02's short budget (``--equal-compute``, read only);
``benchmarks/study_scale.sh`` runs it all:

    python benchmarks/study.py --plan scale_r2 --seeds 0 --holdout 500 --eval-set val \
        --fraction 0.4 --negatives 10000 --epochs 15 --eval-epochs 5 10 15 --threads 1 \
        --out benchmarks/results/scale/R2

The official reference needs the official repository's source: ``--official-src DIR`` (or
``$EFFSSL_OFFICIAL_SRC``), e.g. ``git clone https://github.com/CupidJay/Efficient_SSL``; it
is never copied into this project. The harness imports its ``main.py`` and runs its own
calibration loop, ``adjust_learning_rate``, ``train`` and ``update_feature`` on our model,
data and evaluation; every patch it applies to run on a CPU is printed and logged.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from evidence.equal_compute import EQUAL_COMPUTE_PLANS, arm_lines, step_cost_file
from evidence.evaluation import linear_probes, random_init_reference
from evidence.final_measures import final_measures
from evidence.launcher import launcher_worker
from evidence.official import official_worker
from evidence.orchestration import run_all
from evidence.parity import PARITY_PLAN
from evidence.plans import PLANS
from evidence.report import report
from evidence.runs import REPO
from evidence.scale import SCALE_PLANS, study_arms
from evidence.scale_report import EQUAL_COMPUTE_OUT


def add_study_options(p: argparse.ArgumentParser) -> None:
    """The options that define a study (recorded in ``settings.json``) and how it runs."""
    plans = [*PLANS, *EQUAL_COMPUTE_PLANS, PARITY_PLAN, *SCALE_PLANS]
    p.add_argument("--plan", nargs="+", default=["main"], choices=plans)
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


def add_place_and_mode_options(p: argparse.ArgumentParser) -> None:
    """Where the data, the results and the official code are, and what the command does."""
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
    p.add_argument(
        "--lr-search",
        type=Path,
        default=REPO / "benchmarks" / "results" / "lr_search",
        help="protocol 02: protocol 01's study folder, whose rule gives the learning rates",
    )
    p.add_argument(
        "--step-cost",
        type=Path,
        default=None,
        help="protocols 02 and 05: step_cost.py's CSV (default: "
        "<out>/step_cost_cpu_<model>_b<batch>.csv)",
    )
    p.add_argument(
        "--equal-compute",
        type=Path,
        default=EQUAL_COMPUTE_OUT,
        help="protocol 05: protocol 02's study folder, whose short budget is regime R1 (read only)",
    )
    p.add_argument("--arms", action="store_true", help="protocols 02 and 05: fix and show the arms")
    p.add_argument(
        "--final-measures",
        action="store_true",
        help="protocols 02 and 05: the test-set measures of the finished runs of --plan and "
        "--seeds",
    )
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--linear", action="store_true", help="linear probes of finished runs")
    p.add_argument("--linear-epochs", type=int, default=30)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with paths resolved and the default evaluation epochs (every tenth
    of the schedule, and the last)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_study_options(p)
    add_place_and_mode_options(p)
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.data_dir = args.data_dir.resolve()
    args.lr_search = args.lr_search.resolve()
    args.step_cost = (args.step_cost or args.out / step_cost_file(args.model, args.batch)).resolve()
    args.equal_compute = args.equal_compute.resolve()
    if args.eval_epochs is None:
        step = max(1, args.epochs // 10)
        args.eval_epochs = sorted({*range(step, args.epochs + 1, step), args.epochs})
    if args.official_src is not None:
        args.official_src = args.official_src.resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
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
    elif args.arms:
        print("\n".join(arm_lines(study_arms(args))))
        report(args)
    elif args.final_measures:
        final_measures(args)
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
