"""What the three launchers share: the config location, run ids, the Trainer built from a
config, and one-line error reporting."""

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
    "new_run_id",
    "trainer_from_cfg",
    "one_line",
    "main_with_errors",
    "hydra_config_name",
    "relaunch_command",
]

#: Hydra config source of the packaged configs (``configs/`` in the repository)
CONFIG_PATH = "pkg://effssl_plugin.configs"


def new_run_id() -> str:
    """A sortable, unique run directory name, e.g. ``20261128-124501-k3f9``."""
    suffix = "".join(random.SystemRandom().choices(string.ascii_lowercase + string.digits, k=4))
    return time.strftime("%Y%m%d-%H%M%S-") + suffix


def trainer_from_cfg(cfg: DictConfig, logger: Any, callbacks: list) -> Any:
    """A Lightning ``Trainer`` from every config key that is a ``Trainer`` argument (as
    solo-learn's scripts do), with our logger and callbacks; ``strategy: ddp`` becomes
    ``DDPStrategy(find_unused_parameters=False)``."""
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


def hydra_config_name(default: str = "effssl") -> str:
    """The ``--config-name`` the running Hydra app was started with (``default`` outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().job.config_name or default
    return default


def relaunch_command(drop: Iterable[str] = ()) -> str:
    """The pretraining command line this process was started with (its config name and
    command-line overrides), without the overrides of the keys in ``drop``."""
    from hydra.core.hydra_config import HydraConfig

    overrides = []
    if HydraConfig.initialized():
        dropped = set(drop)
        for item in HydraConfig.get().overrides.task:
            key = item.split("=", 1)[0].lstrip("+~")
            if key not in dropped:
                overrides.append(shlex.quote(item))
    return " ".join(["python main_pretrain.py --config-name", hydra_config_name(), *overrides])


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line; for errors re-raised by DataLoader workers, the
    original message (the last line of the worker's traceback)."""
    text = str(err).strip()
    if "Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


def main_with_errors(fn: Callable[[], object], prog: str) -> None:
    """Runs ``fn``; a user-facing error becomes one line on stderr and exit status 2."""
    try:
        fn()
    except EffSSLError as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
