"""EffSSL for solo-learn: single-branch self-supervised learning with a memory bank.

Importing this package is light: it imports neither solo-learn nor Lightning.
:func:`register` plugs the method into solo-learn.
"""

from __future__ import annotations

import contextlib as _contextlib
import os as _os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__version__ = "0.1.0"

# In a source checkout the Hydra configs live in the top-level ``configs/`` folder, which
# installs as ``effssl_plugin.configs``; let ``effssl_plugin.configs`` resolve there too, so
# ``python main_pretrain.py`` works from the repository root whatever the install mode.
_repo_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "configs")) and _os.path.isfile(
    _os.path.join(_repo_root, "configs", "__init__.py")
):
    __path__.append(_repo_root)  # noqa: F821 - the package's own search path
__all__ = ["register", "__version__", "cpu_workers", "create_encoder"]

_registered = False


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


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("effssl.cpu_workers", cpu_workers, replace=True)


_register_resolvers()


def create_encoder(path: str | _os.PathLike):
    """The pretrained encoder in an exported folder (``effssl-export``, ``<run dir>/encoder``),
    in eval mode, low-resolution stems included; see :func:`effssl_plugin.export.create_encoder`.
    """
    from effssl_plugin.export import create_encoder as _create_encoder

    return _create_encoder(path)


def register() -> None:
    """Registers EffSSL with solo-learn; idempotent.

    Adds ``"effssl"`` to ``solo.methods.METHODS`` and a ``"timm"`` backbone factory to
    ``BaseMethod._BACKBONES`` (any ``timm.list_models()`` name via
    ``backbone.kwargs.model_name``). It also points solo-learn's ``WeightedKNNClassifier``
    name at a subclass with the same math (:mod:`effssl_plugin.knn`), on every torchmetrics
    version: solo-learn's own class does not run under torchmetrics >= 1.0 (it passes
    ``compute_on_step``) and, under the torchmetrics < 0.12 it pins, crashes on validation
    batches that lack some classes.
    """
    global _registered
    if _registered:
        return
    with quiet_imports():
        import solo.methods.base as solo_base
        import solo.utils.knn as solo_knn
        from solo.methods import METHODS

        from effssl_plugin.backbones import timm_backbone
        from effssl_plugin.knn import WeightedKNNClassifierTM1
        from effssl_plugin.method import EffSSL

    METHODS["effssl"] = EffSSL
    solo_base.BaseMethod._BACKBONES["timm"] = timm_backbone
    solo_base.WeightedKNNClassifier = WeightedKNNClassifierTM1
    solo_knn.WeightedKNNClassifier = WeightedKNNClassifierTM1
    _registered = True


#: what importing solo-learn prints: timm's renamed modules, solo-learn re-registering timm
#: model names, and torch's deprecated ``torch.cuda.amp.custom_fwd`` in solo-learn
_HOST_IMPORT_WARNINGS = (
    r"Importing from timm\.",
    r"Overwriting .* in registry with solo\.",
    r"`torch\.cuda\.amp\.custom_fwd",
)


@_contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Hides solo-learn's and timm's import-time warnings inside the block only.

    Its own filters are removed on exit; the filters that the libraries imported in the block
    install for themselves (torch, numpy, scipy and Lightning do) stay, which
    ``warnings.catch_warnings`` would drop with the rest.
    """
    import warnings

    before = list(warnings.filters)
    for message in _HOST_IMPORT_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    ours = [f for f in warnings.filters[: len(_HOST_IMPORT_WARNINGS)] if f not in before]
    try:
        yield
    finally:
        for item in ours:
            if item in warnings.filters:
                warnings.filters.remove(item)  # an "ignore" filter: nothing cached to reset


def import_solo_quietly() -> None:
    """Imports solo-learn (and, through it, timm's deprecated modules) under
    :func:`quiet_imports`. The entry points call it first: Python imports a module once, so
    their later solo-learn imports print nothing."""
    with quiet_imports():
        import solo.methods  # noqa: F401 - imported for its side effect, quietly
