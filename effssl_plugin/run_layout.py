"""The run directory's layout, named in one place:

    <checkpoint.dir>/<method>/<run id>/
        args.json                           the resolved config (solo-learn's Checkpointer)
        <name>-<run id>-ep=<N>.ckpt         checkpoints (atomic: written as .ckpt.tmp first)
        encoder/                            the trained encoder, timm's folder format
        logs/version_<N>/                   CSV logs, one version per session that trains

Tools find a run's files through these names only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "ARGS_FILE",
    "ENCODER_DIR",
    "LOGS_DIR",
    "checkpoint_epoch",
    "checkpoint_name_pattern",
    "newest_checkpoint",
    "next_log_version",
    "oldest_first",
    "run_directory",
]

ARGS_FILE = "args.json"
ENCODER_DIR = "encoder"
LOGS_DIR = "logs"


def run_directory(checkpoint_dir: str | Path, method: str, run_id: str) -> Path:
    """``<checkpoint.dir>/<method>/<run id>``."""
    return Path(checkpoint_dir) / method / run_id


def checkpoint_name_pattern(name: str, run_id: str) -> str:
    """The checkpoint file name with ``{}`` for the epoch (solo-learn's placeholder)."""
    return f"{name}-{run_id}" + "-ep={}.ckpt"


def checkpoint_epoch(path: str | Path) -> int:
    """The epoch in a ``...-ep=N.ckpt`` file name (-1 if absent)."""
    match = re.search(r"-ep=(\d+)\.ckpt$", str(path))
    return int(match.group(1)) if match else -1


def oldest_first(ckpts: Iterable[Path]) -> list[Path]:
    """By the epoch in the name (a newer mtime never beats a higher epoch), then by mtime."""
    return sorted(ckpts, key=lambda p: (checkpoint_epoch(p), p.stat().st_mtime))


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The highest-epoch ``.ckpt`` in ``run_dir`` (never an unfinished ``.ckpt.tmp``), or None."""
    ckpts = oldest_first(Path(run_dir).glob("*.ckpt"))
    return ckpts[-1] if ckpts else None


def next_log_version(run_dir: Path) -> int:
    """1 + the highest ``logs/version_N`` holding files (0 for none): an attempt that logged
    nothing leaves an empty folder, which is reused."""
    used = [
        int(d.name.removeprefix("version_"))
        for d in (run_dir / LOGS_DIR).glob("version_*")
        if d.name.removeprefix("version_").isdigit() and any(d.iterdir())
    ]
    return max(used, default=-1) + 1
