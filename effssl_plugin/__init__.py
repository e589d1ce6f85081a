"""EffSSL for solo-learn: single-branch self-supervised learning with a memory bank.

Importing this package is light: it imports neither solo-learn nor Lightning.
:func:`register` plugs the method into solo-learn.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# In a source checkout the Hydra configs live in the top-level ``configs/`` folder, which
# installs as ``effssl_plugin.configs``; let ``effssl_plugin.configs`` resolve there too, so
# ``python main_pretrain.py`` works from the repository root whatever the install mode.
_repo_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(_os.path.dirname(__file__), "configs")) and _os.path.isfile(
    _os.path.join(_repo_root, "configs", "__init__.py")
):
    __path__.append(_repo_root)  # noqa: F821 - the package's own search path
__all__ = ["register", "__version__"]

_registered = False


def register() -> None:
    """Registers EffSSL with solo-learn; idempotent.

    Adds ``"effssl"`` to ``solo.methods.METHODS`` and a ``"timm"`` backbone factory to
    ``BaseMethod._BACKBONES`` (any ``timm.list_models()`` name via
    ``backbone.kwargs.model_name``). With torchmetrics >= 1.0 it also points solo-learn's
    ``WeightedKNNClassifier`` name at a compatible subclass with the same math, which
    solo-learn's own class (it passes ``compute_on_step``) needs to run at all.
    """
    global _registered
    if _registered:
        return
    import warnings

    # solo-learn's own imports warn about timm's renamed modules and re-register timm names
    for message in (
        r"Importing from timm\.",
        r"Overwriting .* in registry with solo\.",
        r"`torch\.cuda\.amp\.custom_fwd",
    ):
        warnings.filterwarnings("ignore", message=message)
    import solo.methods.base as solo_base
    import solo.utils.knn as solo_knn
    import torchmetrics
    from packaging.version import Version
    from solo.methods import METHODS

    from effssl_plugin.backbones import timm_backbone
    from effssl_plugin.method import EffSSL

    METHODS["effssl"] = EffSSL
    solo_base.BaseMethod._BACKBONES["timm"] = timm_backbone
    if Version(torchmetrics.__version__) >= Version("1.0"):
        from effssl_plugin.knn import WeightedKNNClassifierTM1

        solo_base.WeightedKNNClassifier = WeightedKNNClassifierTM1
        solo_knn.WeightedKNNClassifier = WeightedKNNClassifierTM1
    _registered = True
