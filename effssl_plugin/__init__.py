"""EffSSL for solo-learn: single-branch self-supervised learning with a memory bank.

Importing this package is light and changes nothing outside it: it imports neither
solo-learn nor Lightning, registers no resolver and installs no warning filter.
:func:`register` plugs the method into solo-learn (every patch of solo-learn lives in
:mod:`effssl_plugin.solo_compat`);
:func:`register_resolvers` adds the OmegaConf resolver the configs use.
"""

from __future__ import annotations

import os as _os

from effssl_plugin.solo_compat import (
    import_solo_quietly,
    quiet_imports,
    register,
    register_when_solo_is_imported,
)

__version__ = "0.1.0"

# In a source checkout the Hydra configs live in the top-level ``configs/`` folder, which
# installs as ``effssl_plugin.configs``; let ``effssl_plugin.configs`` resolve there too, so
# ``python main_pretrain.py`` works from the repository root whatever the install mode.
_repo_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "configs")) and _os.path.isfile(
    _os.path.join(_repo_root, "configs", "__init__.py")
):
    __path__.append(_repo_root)  # noqa: F821 - the package's own search path
__all__ = [
    "import_solo_quietly",
    "quiet_imports",
    "register",
    "register_resolvers",
    "register_when_solo_is_imported",
    "__version__",
    "cpu_workers",
    "create_encoder",
]


def cpu_workers(devices: object = 1) -> int:
    """DataLoader workers per process on this machine: the CPU cores available to this
    process, shared by ``devices`` processes, less one each for the process itself (as
    Lightning suggests; at least 1). The ``${effssl.cpu_workers:${devices}}`` resolver."""
    try:
        cores = len(_os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = _os.cpu_count() or 1
    processes = devices if isinstance(devices, int) and devices > 0 else 1
    return max(1, cores // processes - 1)


def register_resolvers() -> None:
    """Registers the OmegaConf resolver the configs use, ``${effssl.cpu_workers:${devices}}``
    (``machine=cpu``'s ``data.num_workers``); idempotent and light (OmegaConf only). The
    Hydra search-path plugin calls it when a Hydra app starts, and :func:`register` too."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("effssl.cpu_workers", cpu_workers, replace=True)


def create_encoder(path: str | _os.PathLike):
    """The pretrained encoder in an exported folder (``effssl-export``, ``<run dir>/encoder``),
    in eval mode, low-resolution stems included; see :func:`effssl_plugin.export.create_encoder`.
    """
    from effssl_plugin.export import create_encoder as _create_encoder

    return _create_encoder(path)
