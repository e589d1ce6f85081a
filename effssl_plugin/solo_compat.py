"""Every patch this plugin applies to solo-learn, in one place, each with why it exists and
what would let it go upstream (the text of those issues: ``docs/UPSTREAM.md``).

Importing this module is light (the standard library only); :func:`register` applies:

1. **The kNN classifier swap.** solo-learn's ``WeightedKNNClassifier`` passes
   ``compute_on_step`` (torchmetrics >= 1.0 rejects it), runs the kNN on every training batch
   under torchmetrics 1.x, counts classes from the val labels only (crashing on val subsets),
   overflows ``exp(sim / T)`` in float16 under 16-mixed, and keeps every epoch's features
   under DDP. Its name in ``solo.utils.knn`` and ``solo.methods.base`` points at
   :class:`~effssl_plugin.knn.WeightedKNNClassifierTM1` (same math, float32). Goes when
   solo-learn ships those fixes (UPSTREAM.md, 1).
2. **The kNN's epoch switch.** ``BaseMethod`` collects kNN training features at every step
   and frees them only in validation: with ``data.val_path=null`` they grow for the whole
   run. A ``BaseMethod.on_train_epoch_start`` collects them only in epochs that a
   validation follows. Goes with 1.
3. **Registration**: ``"effssl"`` in ``METHODS`` and the ``"timm"`` backbone factory in
   ``BaseMethod._BACKBONES`` (solo-learn's documented extension points, not a fix).
4. **The import hook** (:func:`register_when_solo_is_imported`): solo-learn's own scripts
   (``main_linear.py``) import ``solo`` without knowing this plugin; the Hydra search-path
   plugin installs a one-shot ``sys.meta_path`` hook that calls :func:`register` right
   after solo-learn's package is executed. Goes if solo-learn looks methods up through
   entry points (``importlib.metadata.entry_points(group="solo.methods")``).

Not patches, but solo-learn code this plugin replaces by subclassing or wrapping, and whose
upstream fixes UPSTREAM.md states: the device count for lr scaling
(:func:`effssl_plugin.config.local_device_count`), the atomic checkpointer with
newest-checkpoint resume (:mod:`effssl_plugin.checkpointing`), and the one-crop launcher.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
import warnings
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = [
    "import_solo_quietly",
    "quiet_imports",
    "register",
    "register_when_solo_is_imported",
    "start_knn_epoch",
]

_registered = False


def register() -> None:
    """Registers EffSSL with solo-learn and applies this module's patches (see its
    docstring); idempotent.

    Adds ``"effssl"`` to ``solo.methods.METHODS`` and a ``"timm"`` backbone factory to
    ``BaseMethod._BACKBONES`` (any ``timm.list_models()`` name via
    ``backbone.kwargs.model_name``), points solo-learn's ``WeightedKNNClassifier`` name at
    :class:`~effssl_plugin.knn.WeightedKNNClassifierTM1` (patch 1) and gives
    ``BaseMethod`` an ``on_train_epoch_start`` that switches the online kNN's collection of
    training features on only in epochs that a validation follows (patch 2).
    """
    global _registered
    from effssl_plugin import register_resolvers

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
    if "on_train_epoch_start" not in vars(solo_base.BaseMethod):  # solo-learn defines none
        solo_base.BaseMethod.on_train_epoch_start = start_knn_epoch
    _registered = True


def start_knn_epoch(self: Any) -> None:
    """``BaseMethod.on_train_epoch_start`` (patch 2): the online kNN collects this epoch's
    training features only when a validation follows
    (:meth:`~effssl_plugin.knn.WeightedKNNClassifierTM1.start_training_epoch`); solo-learn
    collects them at every step and frees them only in validation, so with
    ``data.val_path=null`` they pile up for the whole run."""
    if getattr(self, "knn_eval", False):
        self.knn.start_training_epoch(self.trainer)


class _RegisterAfterSoloImport(importlib.abc.MetaPathFinder):
    """A one-shot import hook: finds ``solo`` with the other finders and has its loader call
    :func:`register` once solo-learn's package (which imports ``solo.methods``) is executed."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "solo":
            return None
        _remove_solo_hook()  # one shot, and the finders below do not see it again
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                break
        else:
            return None  # solo-learn is not installed: nothing to register
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ExecThenRegister(spec.loader)
        return spec


class _ExecThenRegister(importlib.abc.Loader):
    """solo-learn's own loader, then :func:`register`; the module keeps its real loader."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _register_for_solo_app()


def _remove_solo_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterAfterSoloImport)]


def _register_for_solo_app() -> None:
    """:func:`register` inside another app's solo-learn import: a failure becomes a warning,
    so that the app's own import of solo-learn still succeeds."""
    try:
        register()
    except Exception as err:  # reported, not raised into the app's import
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
    if "solo" in sys.modules:
        _register_for_solo_app()
    elif not any(isinstance(f, _RegisterAfterSoloImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterSoloImport())


#: what importing solo-learn prints: timm's renamed modules, solo-learn re-registering timm
#: model names, and torch's deprecated ``torch.cuda.amp.custom_fwd`` in solo-learn
_HOST_IMPORT_WARNINGS = (
    r"Importing from timm\.",
    r"Overwriting .* in registry with solo\.",
    r"`torch\.cuda\.amp\.custom_fwd",
)


@contextlib.contextmanager
def quiet_imports() -> Iterator[None]:
    """Hides solo-learn's and timm's import-time warnings inside the block only.

    Its own filters are removed on exit; the filters that the libraries imported in the block
    install for themselves (torch, numpy, scipy and Lightning do) stay, which
    ``warnings.catch_warnings`` would drop with the rest.
    """
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
