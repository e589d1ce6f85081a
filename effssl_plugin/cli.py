"""The command-line plumbing every tool shares: Hydra entry points, user-facing errors as one
line and exit status 2, solo-learn's Trainer from a config, run ids, and the command line a
run was started with. No tool imports a launcher script for these."""

from __future__ import annotations

import inspect
import random
import shlex
import string
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from effssl_plugin.errors import EffSSLError

__all__ = [
    "CONFIG_PATH",
    "RUN_ID_ENV",
    "hydra_config_name",
    "hydra_entry_point",
    "main_with_errors",
    "new_run_id",
    "relaunch_command",
    "trainer_from_cfg",
]

#: Hydra config source of the packaged configs (``configs/`` in the repository)
CONFIG_PATH = "pkg://effssl_plugin.configs"
RUN_ID_ENV = "EFFSSL_RUN_ID"  # rank 0's run directory name, for the DDP workers Lightning starts


def main_with_errors(fn: Callable[[], object], prog: str) -> None:
    """Runs ``fn``; a user-facing error becomes one line on stderr and exit status 2. An
    error re-raised by a DataLoader worker shows its original message (the traceback's last
    line)."""
    try:
        fn()
    except EffSSLError as err:
        text = str(err).strip()
        if "Traceback" in text:
            text = text.splitlines()[-1].split(": ", 1)[-1]
        print(f"{prog}: error: {' '.join(text.split())}", file=sys.stderr)
        sys.exit(2)


def hydra_entry_point(
    run: Callable[[DictConfig], object], config_name: str, prog: str
) -> Callable[[], None]:
    """A console entry point: Hydra composes ``config_name`` with the command line, then
    ``run(cfg)`` runs under :func:`main_with_errors`."""
    import hydra

    @hydra.main(version_base="1.2", config_path=CONFIG_PATH, config_name=config_name)
    def _main(cfg: DictConfig) -> None:
        from effssl_plugin import import_solo_quietly

        import_solo_quietly()  # solo-learn's and timm's import warnings stay off the console
        main_with_errors(lambda: run(cfg), prog)

    return _main


def trainer_from_cfg(cfg: DictConfig, logger: Any, callbacks: list) -> Any:
    """solo-learn's Trainer: every config key that is a ``Trainer`` argument, our logger and
    callbacks, ``strategy: ddp`` as ``DDPStrategy(find_unused_parameters=False)``."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.strategies.ddp import DDPStrategy

    valid = inspect.signature(Trainer.__init__).parameters
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg).items() if k in valid}
    strategy = cfg.get("strategy") or "auto"
    kwargs.update(
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        strategy=DDPStrategy(find_unused_parameters=False) if strategy == "ddp" else strategy,
    )
    return Trainer(**kwargs)


def new_run_id() -> str:
    """A sortable, unique run directory name, e.g. ``20261128-124501-k3f9``."""
    suffix = "".join(random.SystemRandom().choices(string.ascii_lowercase + string.digits, k=4))
    return time.strftime("%Y%m%d-%H%M%S-") + suffix


def hydra_config_name(default: str = "effssl") -> str:
    """The ``--config-name`` the running Hydra app was started with (``default`` outside one)."""
    from hydra.core.hydra_config import HydraConfig

    return (HydraConfig.get().job.config_name or default) if HydraConfig.initialized() else default


def relaunch_command(drop: Iterable[str] = ()) -> str:
    """The pretraining command line this process was started with (its config name and
    command-line overrides), without the overrides of the keys in ``drop``."""
    from hydra.core.hydra_config import HydraConfig

    dropped, overrides = set(drop), []
    if HydraConfig.initialized():
        for item in HydraConfig.get().overrides.task:
            if item.split("=", 1)[0].lstrip("+~") not in dropped:
                overrides.append(shlex.quote(item))
    return " ".join(["python main_pretrain.py --config-name", hydra_config_name(), *overrides])
