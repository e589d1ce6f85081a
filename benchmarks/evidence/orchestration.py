"""The study's orchestration: its fixed settings (``settings.json``), its plans run in order
as one worker process a run (``runs.log``), skipping finished runs, resuming unfinished ones,
and stopping before the next run while ``PAUSE`` exists."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from .data import prepare_study_data
from .equal_compute import EQUAL_COMPUTE_PLANS, equal_compute_plan
from .evaluation import K, T
from .parity import PARITY_PLAN, parity_plan
from .plans import PLANS
from .report import report
from .runs import STUDY_SCRIPT, finished, last_epoch, paused, run_name, run_schedule
from .scale import SCALE_PLANS, scale_plan
from .search import SEARCH_LR, search_extension, search_scores


def study_settings(args) -> dict:
    """The settings every run of a study shares (``settings.json``)."""
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
    return settings


def write_settings(args) -> None:
    """The study's fixed settings; a different setting in the same ``--out`` is refused."""
    settings = study_settings(args)
    path = args.out / "settings.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != settings:
            sys.exit(f"{path} holds other settings ({old}); use another --out")
    else:
        path.write_text(json.dumps(settings, indent=1) + "\n")


def planned_runs(args, plan: str) -> list[tuple[str, str, int]]:
    """A plan's runs, seed by seed; a search plan (``lr_<method>``) run to the schedule's end
    adds the extension its rule asks for (:func:`.search.search_extension`), once; a
    protocol-02 plan's arms are fixed from its inputs (:func:`.equal_compute.fixed_arms`), a
    protocol-05 plan's from its regime's (:func:`.scale.scale_plan`)."""
    if plan in EQUAL_COMPUTE_PLANS:
        return [(m, v, s) for s in args.seeds for m, v in equal_compute_plan(args, plan)]
    if plan in SCALE_PLANS:
        return [(m, v, s) for s in args.seeds for m, v in scale_plan(args, plan)]
    if plan == PARITY_PLAN:
        return [(m, v, s) for s in args.seeds for m, v in parity_plan(args)]
    runs = [(m, v, s) for s in args.seeds for m, v in PLANS[plan]]
    method = plan.removeprefix("lr_")
    if plan.startswith("lr_") and method in SEARCH_LR and last_epoch(args) == args.epochs:
        if 0 in args.seeds and (extra := search_extension(method, search_scores(args, method))):
            runs.append((method, extra, 0))
    return runs


def run_all(args) -> None:
    """Every run of ``--plan`` (in the plans' order, the budget's priority; each plan seed by
    seed; a search plan's extension right after its grid), then the report."""
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
    for plan in args.plan:
        runs = planned_runs(args, plan)
        run_list(args, runs, failed)
        run_list(args, [r for r in planned_runs(args, plan) if r not in runs], failed)
    report(args)
    if failed:  # the other runs went on; their errors are in runs.log
        sys.exit(f"failed: {', '.join(dict.fromkeys(failed))} (see {log})")


def worker_command(args, method: str, variant: str, seed: int) -> list[str]:
    """The command line of one run's worker process, with the run's own schedule
    (:func:`.runs.run_schedule`: a variant's ``ep=<N>``, else the study's)."""
    run = ["--method", method, "--variant", variant, "--seed", str(seed)]
    epochs, eval_epochs = run_schedule(args, variant)
    own = argparse.Namespace(**{**vars(args), "epochs": epochs, "eval_epochs": eval_epochs})
    return [sys.executable, str(STUDY_SCRIPT), "--worker", *run, *common_argv(own)]


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
        cmd = worker_command(args, method, variant, seed)
        print(f"== {run_name(method, variant, seed)}", flush=True)
        start = time.time()
        with open(log, "a") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=args.out)
        print(f"   exit {proc.returncode} after {(time.time() - start) / 60:.1f} min", flush=True)
        if proc.returncode != 0 and not paused(args.out):
            failed.append(run_name(method, variant, seed))


def common_argv(args) -> list[str]:
    """The study's options, as every worker process receives them."""
    argv = [
        *("--fraction", str(args.fraction), "--model", args.model, "--batch", str(args.batch)),
        *("--epochs", str(args.epochs), "--eval-epochs", *map(str, args.eval_epochs)),
        *("--negatives", str(args.negatives), "--effssl-overrides", *args.effssl_overrides),
        *("--workers", str(args.workers), "--machine", args.machine),
        *("--data-dir", str(args.data_dir), "--out", str(args.out)),
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
