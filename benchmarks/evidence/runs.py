"""A run's folder and records: its name, ``evals.csv`` and ``time.csv`` (:class:`EvalLog`),
``starts.log`` (:func:`record_start`), and whether it is finished, diverged or paused."""

from __future__ import annotations

import csv
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: the study's command line, which the orchestration starts once per run (``--worker``)
STUDY_SCRIPT = REPO / "benchmarks" / "study.py"
#: the code a run depends on: a change here, uncommitted, marks its start as dirty
CODE_PATHS = (
    "effssl_plugin",
    "configs",
    "hydra_plugins",
    "benchmarks/study.py",
    "benchmarks/evidence",
)
EVAL_FIELDS = ["epoch", "train_s", "steps", "knn_top1", "knn_top5"]
#: a run whose loss or features became non-finite: it is over, with no score
DIVERGED = "diverged.txt"


def run_name(method: str, variant: str, seed: int) -> str:
    return f"{method}__{variant.replace('=', '-')}__s{seed}"


def parse_run_name(name: str) -> tuple[str, str, int]:
    """``run_name``'s inverse: (method, variant, seed); a variant name holds no ``-``."""
    method, variant, seed = name.split("__")
    return method, variant.replace("-", "="), int(seed[1:])


def hydra_path(path: Path) -> str:
    """``path`` as a quoted Hydra override value: a ``,`` in a run folder's name (a variant
    such as ``queue=4096,tau=0.96``) would otherwise read as a list."""
    if "'" in str(path):
        sys.exit(f"a study path may not contain a single quote: {path}")
    return f"'{path}'"


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


def paused(out: Path) -> bool:
    return (out / "PAUSE").exists()


def variant_epochs(variant: str) -> int | None:
    """The schedule a variant fixes for itself (its ``ep=<N>`` part: protocol 02's arms, each
    a complete schedule of its own length), else None (the study's ``--epochs``)."""
    for part in variant.split(","):
        key, _, value = part.partition("=")
        if key == "ep":
            return int(value)
    return None


def run_epochs(args, variant: str) -> int:
    """A run's schedule: its variant's ``ep=<N>``, else the study's ``--epochs``."""
    return variant_epochs(variant) or args.epochs


def run_schedule(args, variant: str) -> tuple[int, list[int]]:
    """(epochs, evaluation epochs) of a run: the study's, or for a variant with a schedule of
    its own (``ep=<N>``) N and the study's evaluation epochs before N, then N."""
    epochs = variant_epochs(variant)
    if epochs is None:
        return args.epochs, list(args.eval_epochs)
    return epochs, sorted({e for e in args.eval_epochs if e < epochs} | {epochs})


def last_epoch(args, variant: str = "default") -> int:
    """The epoch after which a run stops: its schedule's last (:func:`run_epochs`), or
    ``--stop-after`` when earlier."""
    epochs = run_epochs(args, variant)
    return min(epochs, args.stop_after or epochs)


def finished(args, method: str, variant: str, seed: int) -> bool:
    """The run's last evaluation is in, or it diverged (``diverged.txt``)."""
    run_dir = args.out / "runs" / run_name(method, variant, seed)
    if (run_dir / DIVERGED).exists():
        return True
    return any(int(r["epoch"]) >= last_epoch(args, variant) for r in EvalLog(run_dir).rows())


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


def machine_words() -> str:
    """The machine a run ran on, e.g. ``AMD EPYC 7B13, 2 cpus, torch 2.14.1``: the CPU model
    (``/proc/cpuinfo``'s first ``model name``, or :func:`platform.processor`), the CPUs and
    the torch version. Machines change between sessions, and a run's numbers depend on them."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cpus, torch {torch.__version__}"


def record_start(run_dir: Path, threads: int | None = None) -> None:
    """Appends this (re)start's code version and command to the run's ``starts.log``: the
    commit of the study's code, a mark when its package, configs or runner have uncommitted
    changes, where ``effssl_plugin`` and its configs were imported from (a pinned copy, or the
    editable checkout), torch's thread count and the machine (:func:`machine_words`)."""
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
            f"    runner {STUDY_SCRIPT}, effssl_plugin "
            f"{Path(effssl_plugin.__file__).resolve().parent}, configs "
            f"{', '.join(configs)}, torch threads {threads}\n"
        )
        f.write(f"    machine {machine_words()}\n")
    print(
        f"[{run_dir.name}] commit {git('rev-parse', 'HEAD')}{dirty}; effssl_plugin from "
        f"{effssl_plugin.__file__}; configs from {', '.join(configs)}; torch threads {threads}",
        flush=True,
    )
