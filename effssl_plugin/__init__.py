"""EffSSL for solo-learn: single-branch self-supervised learning with a memory bank.

Importing this package is light and changes nothing outside it: it imports neither
solo-learn nor Lightning, registers no resolver and installs no warning filter.
:func:`register` plugs the method into solo-learn (the one place that touches solo-learn);
:func:`register_resolvers` adds the OmegaConf resolver the configs use.
"""

from __future__ import annotations

import contextlib as _contextlib
import importlib.abc as _importlib_abc
import os as _os
import sys as _sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from importlib.machinery import ModuleSpec
    from types import ModuleType

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
    "register",
    "register_resolvers",
    "register_when_solo_is_imported",
    "__version__",
    "cpu_workers",
    "create_encoder",
]

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
    register_resolvers()
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


class _RegisterAfterSoloImport(_importlib_abc.MetaPathFinder):
    """A one-shot import hook: finds ``solo`` with the other finders and has its loader call
    :func:`register` once solo-learn's package (which imports ``solo.methods``) is executed."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "solo":
            return None
        _remove_solo_hook()  # one shot, and the finders below do not see it again
        for finder in _sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                break
        else:
            return None  # solo-learn is not installed: nothing to register
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ExecThenRegister(spec.loader)
        return spec


class _ExecThenRegister(_importlib_abc.Loader):
    """solo-learn's own loader, then :func:`register`; the module keeps its real loader."""

    def __init__(self, loader: _importlib_abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _register_for_solo_app()


def _remove_solo_hook() -> None:
    _sys.meta_path[:] = [f for f in _sys.meta_path if not isinstance(f, _RegisterAfterSoloImport)]


def _register_for_solo_app() -> None:
    """:func:`register` inside another app's solo-learn import: a failure becomes a warning,
    so that the app's own import of solo-learn still succeeds."""
    try:
        register()
    except Exception as err:  # reported, not raised into the app's import
        import warnings

        warnings.warn(
            f"effssl-plugin could not register EffSSL and the timm backbone with solo-learn: "
            f"{type(err).__name__}: {err}",
            RuntimeWarning,
            stacklevel=2,
        )


def register_when_solo_is_imported() -> None:
    """Calls :func:`register` as soon as the running program has imported solo-learn: now if
    it has, else right after its first ``import solo...`` (a one-shot ``sys.meta_path``
    hook). The Hydra search-path plugin calls it, so that solo-learn's own scripts
    (``main_linear.py``, ``main_pretrain.py``) find EffSSL and the ``timm`` backbone, while
    a Hydra app that never imports solo-learn imports nothing heavy and is left unchanged."""
    if "solo" in _sys.modules:
        _register_for_solo_app()
    elif not any(isinstance(f, _RegisterAfterSoloImport) for f in _sys.meta_path):
        _sys.meta_path.insert(0, _RegisterAfterSoloImport())


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
