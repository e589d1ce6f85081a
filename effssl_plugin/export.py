"""The trained encoder in timm's folder format: ``config.json`` + ``model.safetensors``.

Written by :func:`timm.models.save_for_hf` and read by ``timm.create_model("local-dir:<folder>",
pretrained=True)``; nothing here defines a format of its own. What this module adds:

* :func:`export_encoder` (``effssl-export <run dir or .ckpt> <out folder>``): rebuilds the
  run's timm backbone from its ``args.json``, loads ``state_dict["backbone.*"]`` and writes the
  folder. The backbone has no classifier (``num_classes=0``); ``pretrained_cfg`` carries the
  run's mean, std, input size and evaluation crop (``crop_pct``, center crop, bilinear), and a
  top-level ``"effssl"`` entry records how it was trained (method, dataset, epochs, the path
  and SHA-256 of ``args.json``, of which the folder keeps a copy).
* ``low_res`` backbones (ResNet, EfficientNet/MobileNet, ConvNeXt) are modified after timm
  builds them, which stock timm cannot repeat; their ``model_args`` hold ``"low_res": true``,
  so stock timm stops with ``TypeError: ... unexpected keyword argument 'low_res'`` instead of
  loading the weights into the wrong architecture. :func:`create_encoder` rebuilds them (and
  loads any other exported folder too). Low-res ViTs are plain timm arguments (``img_size``,
  ``patch_size``) and load in stock timm.
* :class:`EncoderExport`: a Lightning callback that writes ``<run dir>/encoder/`` at the end of
  every pretraining run (rank 0).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch import nn

from effssl_plugin import __version__
from effssl_plugin.backbones import timm_backbone
from effssl_plugin.checkpointing import resolve_checkpoint
from effssl_plugin.cli import main_with_errors
from effssl_plugin.errors import EffSSLError
from effssl_plugin.preprocessing import eval_data_config
from effssl_plugin.pretrained import backbone_weights, build_backbone, load_pretrain_cfg
from effssl_plugin.run_layout import ARGS_FILE, ENCODER_DIR
from effssl_plugin.solo_compat import register

__all__ = [
    "ExportError",
    "EncoderExport",
    "create_encoder",
    "encoder_run_config",
    "export_backbone",
    "export_encoder",
    "is_encoder_folder",
    "main",
]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
RECORD_KEY = "effssl"  # top-level config.json entry: how the encoder was trained
FORMAT_VERSION = 1
_DROP_RATES = ("drop_rate", "drop_path_rate", "drop_block_rate")


class ExportError(EffSSLError, ValueError):
    """A checkpoint or encoder folder that cannot be exported or loaded; the message says why."""


# --------------------------------------------------------------------------- writing


def _select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def _check_timm_backbone(cfg: DictConfig) -> None:
    name = _select(cfg, "backbone.name", "timm")
    if name != "timm":
        raise ExportError(
            f"backbone.name={name!r} is a solo-learn backbone, not a timm model: timm's folder "
            "format holds timm models only (backbone.name=timm). Evaluate this run with "
            "effssl-knn / effssl-linear on its run directory instead."
        )


def build_run_backbone(cfg: DictConfig) -> nn.Module:
    """A fresh backbone as the run built it (timm backbones only; the evaluation tools'
    builder, :func:`effssl_plugin.pretrained.build_backbone`), with the ``model_args`` that
    timm's folder format records."""
    _check_timm_backbone(cfg)
    model = build_backbone(cfg.backbone, cfg.data.dataset, cfg.method)
    if not getattr(model, "_model_args", None):  # built through a native entrypoint
        kwargs = OmegaConf.to_container(cfg.backbone.get("kwargs") or {}, resolve=True)
        assert isinstance(kwargs, dict)
        model._model_args = {
            "num_classes": 0,
            **{
                k: v
                for k, v in kwargs.items()
                if k not in ("model_name", "low_res", "img_size", "pretrained") and v is not None
            },
        }
    return model


def _needs_low_res_arg(model: nn.Module, low_res: bool) -> bool:
    """Whether ``low_res`` changed the model after construction (stock timm cannot redo it)."""
    from timm.models.vision_transformer import VisionTransformer

    return bool(low_res) and not isinstance(model, VisionTransformer)


def _clean_pretrained_cfg(model: nn.Module, description: str) -> dict[str, Any]:
    """The model's pretrained_cfg without the ImageNet checkpoint's identity (url, tag, hub
    id, license), which describe timm's weights, not these."""
    keep = ("architecture", "first_conv", "classifier", "fixed_input_size", "input_size")
    src = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg = {k: src[k] for k in keep if k in src}
    cfg.setdefault("architecture", type(model).__name__.lower())
    cfg["num_classes"] = 0
    cfg["description"] = description
    return cfg


def export_backbone(
    weights: Mapping[str, torch.Tensor],
    cfg: DictConfig,
    out_dir: str | Path,
    record: dict[str, Any],
) -> Path:
    """Writes a backbone's weights to ``out_dir`` in timm's folder format, atomically (a
    previous export there is replaced).

    Args:
        weights: The trained backbone's ``state_dict``; copied into a fresh model of the run's
            architecture, which must match it key for key.
        cfg: The run's config (``args.json``).
        out_dir: The folder to write.
        record: How it was trained; stored as ``config.json["effssl"]``.
    """
    from timm.models import save_for_hf

    model = build_run_backbone(cfg)
    state = {k: v.detach().to("cpu") for k, v in weights.items()}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ExportError(
            f"the backbone weights do not match {cfg.backbone.kwargs.model_name!r} "
            f"(low_res={_select(cfg, 'backbone.kwargs.low_res', False)}) from args.json: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    low_res = bool(_select(cfg, "backbone.kwargs.low_res", False))
    model_name = str(cfg.backbone.kwargs.model_name)
    method, dataset = str(cfg.method), str(cfg.data.dataset)
    description = f"self-supervised {model_name} encoder ({method} on {dataset}, effssl-plugin)"
    model.pretrained_cfg = _clean_pretrained_cfg(model, description)
    record = {
        "format_version": FORMAT_VERSION,
        "exported_by": f"effssl-plugin {__version__}",
        "model_name": model_name,
        "low_res": low_res,
        **record,
    }
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        save_for_hf(
            model,
            str(tmp),
            model_config={RECORD_KEY: record},
            model_args={"low_res": True} if _needs_low_res_arg(model, low_res) else None,
            safe_serialization=True,
            data_config=eval_data_config(cfg),
        )
        args_copy = tmp / ARGS_FILE
        if record.get("args_json") and Path(record["args_json"]).is_file():
            shutil.copyfile(record["args_json"], args_copy)
        else:
            args = OmegaConf.to_container(cfg)
            args_copy.write_text(json.dumps(args, default=lambda o: "<not serializable>"))
        _chmod_like_new_files(tmp)
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _chmod_like_new_files(folder: Path) -> None:
    """The permissions of ordinarily created files (mkdtemp and safetensors use 0700/0600)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        file.chmod(0o666 & ~umask)


def _replace_dir(new: Path, target: Path) -> None:
    """Moves folder ``new`` to ``target``, replacing a previous export there."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _training_record(
    cfg: DictConfig, epochs: int | None, global_step: int | None, source: str, args_json: Path
) -> dict[str, Any]:
    """How the encoder was trained (``config.json["effssl"]``): the run's method, data and
    schedule, where the weights come from, and the run's ``args.json`` with its SHA-256."""
    found = args_json.is_file()
    return {
        "method": str(cfg.method),
        "dataset": str(cfg.data.dataset),
        "train_path": str(_select(cfg, "data.train_path", "")),
        "epochs": epochs,
        "max_epochs": _select(cfg, "max_epochs"),
        "global_step": global_step,
        "source": source,
        "args_json": str(args_json.resolve()) if found else None,
        "args_sha256": _sha256(args_json) if found else None,
    }


def _load_checkpoint_state(ckpt: Path) -> dict[str, Any]:
    """The checkpoint dict (CPU, ``weights_only``), or an ExportError saying why not."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated zip, not a torch file, foreign pickled objects
        raise ExportError(
            f"cannot read checkpoint {ckpt}: it is truncated or not a PyTorch checkpoint "
            f"({type(err).__name__}: {' '.join(str(err).split())[:300]})"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ExportError(f"{ckpt} is not a Lightning checkpoint: it has no 'state_dict'")
    return state


def export_encoder(source: str | Path, out_dir: str | Path) -> Path:
    """``effssl-export``: the backbone of a run directory (newest checkpoint) or ``.ckpt``,
    trained through the launcher with a timm backbone, written to ``out_dir``."""
    out_dir = Path(out_dir)
    if out_dir.is_file() or (
        out_dir.is_dir() and any(out_dir.iterdir()) and not is_encoder_folder(out_dir)
    ):
        raise ExportError(f"{out_dir} exists and is not an encoder folder: choose another output")
    ckpt = resolve_checkpoint(source)
    cfg = load_pretrain_cfg(ckpt)
    _check_timm_backbone(cfg)  # refuses a solo-learn backbone before reading the checkpoint
    state = _load_checkpoint_state(ckpt)
    weights = backbone_weights(state["state_dict"])
    if not weights:
        raise ExportError(f"{ckpt} holds no backbone weights (no state_dict['backbone.*'] keys)")
    epoch = state.get("epoch")
    epochs = None if epoch is None else int(epoch) + 1
    source, args_json = str(ckpt.resolve()), ckpt.parent / ARGS_FILE
    record = _training_record(cfg, epochs, state.get("global_step"), source, args_json)
    return export_backbone(weights, cfg, out_dir, record)


class EncoderExport(Callback):
    """Writes ``<run dir>/encoder/`` (timm's folder format) when ``fit`` ends, on rank 0.

    Runs with a solo-learn (non-timm) backbone log a warning and export nothing.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.run_dir = Path(run_dir)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        if _select(self.cfg, "backbone.name", "timm") != "timm":
            log.warning(
                "no encoder export: backbone.name=%s is not a timm model; the checkpoint "
                "holds the weights",
                self.cfg.backbone.name,
            )
            return
        record = _training_record(
            self.cfg,
            int(trainer.current_epoch),
            int(trainer.global_step),
            f"end of training, run directory {self.run_dir.resolve()}",
            self.run_dir / ARGS_FILE,
        )
        out = self.run_dir / ENCODER_DIR
        export_backbone(pl_module.backbone.state_dict(), self.cfg, out, record)
        print(f"Encoder exported to {out} (load: effssl_plugin.create_encoder({str(out)!r}))")


# --------------------------------------------------------------------------- reading


def is_encoder_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder in timm's format (``config.json`` and weights)."""
    p = Path(path)
    return (p / "config.json").is_file() and (
        (p / WEIGHTS_FILE).is_file() or (p / "pytorch_model.bin").is_file()
    )


def _read_config(folder: Path) -> dict[str, Any]:
    file = folder / "config.json"
    if not file.is_file():
        raise ExportError(f"{folder} is not an encoder folder: it has no config.json")
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"cannot read {file}: not a JSON file ({err})") from None
    if not isinstance(config, dict) or "architecture" not in config:
        raise ExportError(f"{file} is not a timm model config: it has no 'architecture'")
    return config


def create_encoder(path: str | Path) -> nn.Module:
    """The encoder in an exported folder, in eval mode, with its ``pretrained_cfg``.

    Rebuilds ``low_res`` backbones, which stock timm cannot; any other folder (also one that
    stock timm loads) gives the same model as ``timm.create_model("local-dir:<path>",
    pretrained=True)``. Output: pooled features (``num_classes=0``).

    Raises:
        ExportError: No folder, an unreadable or foreign ``config.json``, a missing,
            truncated or foreign ``model.safetensors``, or weights of another architecture.
    """
    import timm
    from timm.models._hub import load_model_config_from_path

    folder = Path(path)
    config = _read_config(folder)
    if RECORD_KEY not in config:  # a timm folder from elsewhere: timm's own loading
        return timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0).eval()
    pretrained_cfg, arch, model_args = load_model_config_from_path(folder)
    model_args = dict(model_args or {})
    low_res = bool(model_args.pop("low_res", False))
    model_args.pop("num_classes", None)
    try:
        model = timm_backbone(model_name=arch, low_res=low_res, **model_args)
    except EffSSLError as err:
        raise ExportError(f"{folder / 'config.json'}: {err}") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ExportError(f"{folder} has no {WEIGHTS_FILE}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise ExportError(
            f"cannot read {weights}: it is truncated or not a safetensors file ({err})"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ExportError(
            f"{weights} does not hold the weights of {arch} (low_res={low_res}) that "
            f"config.json describes: {' '.join(str(err).split())[:400]}"
        ) from None
    model.pretrained_cfg = model.default_cfg = pretrained_cfg
    return model.eval()


def encoder_run_config(folder: str | Path) -> DictConfig:
    """The pretraining config of an exported encoder: its ``args.json`` copy (or the run
    directory's, for ``<run dir>/encoder``)."""
    folder = Path(folder)
    for candidate in (folder / ARGS_FILE, folder.parent / ARGS_FILE):
        if candidate.is_file():
            return OmegaConf.create(json.loads(candidate.read_text()))
    raise ExportError(
        f"{folder} has no args.json (nor its parent): the evaluation tools need the pretraining "
        "config (data paths, augmentations)"
    )


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``effssl-export``)."""
    parser = argparse.ArgumentParser(
        prog="effssl-export",
        description="Export a pretrained backbone to timm's folder format "
        "(config.json + model.safetensors).",
    )
    parser.add_argument("source", help="a run directory (its newest checkpoint) or a .ckpt")
    parser.add_argument("out", type=Path, help="the folder to write (replaced if an export)")
    args = parser.parse_args(argv)

    def run() -> None:
        register()  # quiets solo-learn's import-time warnings (the checkpoint tools import it)
        out = export_encoder(args.source, args.out)
        config = json.loads((out / "config.json").read_text())
        print(f"Exported the encoder to {out}; load it with")
        print(f"  effssl_plugin.create_encoder({str(out)!r})")
        if config.get("model_args", {}).get("low_res"):
            print("  (a low_res stem: stock timm cannot rebuild it and refuses this folder)")
        else:
            print(f"  or timm.create_model('local-dir:{out}', pretrained=True)")

    main_with_errors(run, "effssl-export")


if __name__ == "__main__":
    main()
