"""Every input check of a pretraining run, as pure functions of the composed config and a
description of what the filesystem holds (:class:`InputFacts`, :class:`CheckpointFacts`).

No torch, solo-learn or Lightning: the launcher gathers the facts
(:func:`effssl_plugin.config.describe_inputs`,
:func:`effssl_plugin.checkpointing.read_checkpoint`), then calls :func:`check_inputs` once,
before it builds anything, and :func:`check_resume` once it knows which checkpoint it
continues. Each check raises one :class:`~effssl_plugin.errors.EffSSLError` whose one-line
message names the key or path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from effssl_plugin.errors import ConfigError, DataError, suggest
from effssl_plugin.settings import EffSSLSettings, check_bank_shape, numeric_method_kwargs

__all__ = [
    "BANK_STORAGE",
    "CheckpointFacts",
    "FolderFacts",
    "InputFacts",
    "NUMERIC_KEYS",
    "Numeric",
    "PIPELINES",
    "check_checkpoint_storage",
    "check_choices",
    "check_config_and_paths",
    "check_data_paths",
    "check_data_size",
    "check_dataset",
    "check_global_batch",
    "check_inputs",
    "check_numeric_keys",
    "check_required_keys",
    "check_resume",
    "check_stopping_condition",
    "check_val_classes",
    "select",
]

#: ``checkpoint.bank``: how checkpoints store the EffSSL memory bank (``bank.*`` buffers).
#: ``full``: as trained; ``bfloat16``: a float32 bank is stored in bfloat16 (half the bytes; on
#: resume it is the bfloat16-rounded bank, cast back); ``none_at_end``: as trained, except the
#: checkpoint of the last epoch, which leaves the bank out (it cannot be continued).
BANK_STORAGE = ("full", "bfloat16", "none_at_end")
#: datasets that solo-learn reads from an ImageFolder (the others download into the path)
FOLDER_DATASETS = ("custom", "imagenet", "imagenet100")
#: subfolder names of a dataset root (splits), as opposed to class folders
SPLIT_NAMES = ("train", "test", "val", "valid", "validation")
#: the data formats solo-learn reads
DATA_FORMATS = ("image_folder", "dali", "h5")
#: ``data.pipeline``: solo-learn's per-image PIL augmentation in DataLoader workers, or the
#: training set decoded once and augmented a batch at a time on the training device
#: (:mod:`effssl_plugin.tensor_data`; image folders and torchvision's CIFAR/STL-10 only)
PIPELINES = ("pil", "tensor")
#: the dataset presets whose ``data.pipeline`` default is ``tensor`` (configs/dataset/; set
#: by protocol 04, docs/BENCHMARKS.md 5c), named in errors
TENSOR_PRESETS = ("cifar10", "cifar100", "stl10", "custom_lowres")


def select(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg``'s dotted ``key``, or ``default`` where it is absent or null (solo-learn's
    ``omegaconf_select``, without importing solo-learn)."""
    if isinstance(cfg, DictConfig):
        value = OmegaConf.select(cfg, key, default=default)
    else:
        value = cfg
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return default
            value = value[part]
    return default if value is None else value


class Numeric(NamedTuple):
    """What a numeric config key accepts: an integer or any number, and a lower bound."""

    integer: bool = False
    low: float | None = None  # None: no bound
    low_allowed: bool = True  # >= low (True) or > low (False)

    def describe(self) -> str:
        """E.g. ``"an integer >= 1"``."""
        kind = "an integer" if self.integer else "a number"
        return (
            kind if self.low is None else f"{kind} {'>=' if self.low_allowed else '>'} {self.low}"
        )

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has the type (booleans are not numbers here) and the range."""
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        return self.low is None or (value >= self.low if self.low_allowed else value > self.low)


#: Every numeric config key the launcher or solo-learn computes with, and its range. Checked
#: once (:func:`check_numeric_keys`) before anything else reads them; absent or null keys are
#: skipped (required ones are checked before). Ranges of ``method_kwargs`` are the method's
#: settings' to check (EffSSL: :class:`~effssl_plugin.settings.EffSSLSettings`); here only
#: their type. ``max_epochs`` also allows -1, see :func:`check_stopping_condition`.
NUMERIC_KEYS: dict[str, Numeric] = {
    "optimizer.lr": Numeric(low=0, low_allowed=False),
    "optimizer.classifier_lr": Numeric(low=0, low_allowed=False),
    "optimizer.weight_decay": Numeric(low=0),
    "optimizer.batch_size": Numeric(integer=True, low=1),
    "max_epochs": Numeric(integer=True, low=-1),
    "max_steps": Numeric(integer=True, low=-1),
    "seed": Numeric(integer=True),
    "num_views": Numeric(integer=True, low=1),
    "data.num_workers": Numeric(integer=True, low=0),
    "data.fraction": Numeric(low=-1),
    "data.crop_size": Numeric(integer=True, low=1),
    "data.val_crop_pct": Numeric(low=0, low_allowed=False),
    "scheduler.warmup_epochs": Numeric(low=0),
    "scheduler.warmup_start_lr": Numeric(low=0),
    "scheduler.min_lr": Numeric(low=0),
    "knn_eval.k": Numeric(integer=True, low=1),
    "checkpoint.frequency": Numeric(integer=True, low=1),
    "checkpoint.keep_last": Numeric(integer=True, low=1),
    "auto_resume.max_hours": Numeric(low=0, low_allowed=False),
    "momentum.base_tau": Numeric(low=0),
    "momentum.final_tau": Numeric(low=0),
    # solo-learn baselines' method_kwargs (simclr, byol, mocov2plus)
    "method_kwargs.pred_hidden_dim": Numeric(integer=True),
    "method_kwargs.queue_size": Numeric(integer=True),
    # effssl's, from their types (floats accept integers)
    **{
        f"method_kwargs.{key}": Numeric(integer=integer)
        for key, integer in numeric_method_kwargs().items()
    },
}


@dataclass(frozen=True)
class FolderFacts:
    """What the filesystem holds at a ``data.*_path``."""

    path: str
    exists: bool = False
    is_dir: bool = False
    is_file: bool = False
    has_entries: bool = False
    class_names: tuple[str, ...] = ()  # its subfolders, sorted (ImageFolder's classes)


@dataclass(frozen=True)
class InputFacts:
    """What a run's checks need to know beyond its config, gathered before anything is built."""

    methods: tuple[str, ...] = ()  # solo-learn's METHODS (empty: not checked)
    datasets: tuple[str, ...] = ()  # solo-learn's supported datasets (empty: not checked)
    world_size: int | None = None  # processes that will train (None: not known yet)
    train: FolderFacts | None = None  # data.train_path of a folder dataset
    val: FolderFacts | None = None  # data.val_path of a folder dataset
    train_images: int | None = None  # images the training set will hold (None: not known yet)
    dali_import_error: str | None = None  # why NVIDIA DALI cannot be imported (data.format=dali)
    timm_models: tuple[str, ...] = ()  # timm's model names (backbone.name=timm; empty: not checked)


@dataclass(frozen=True)
class CheckpointFacts:
    """What a resumed checkpoint holds, as far as the checks go."""

    path: str
    epochs: int  # epochs trained
    bank_omitted: bool = False  # saved by checkpoint.bank=none_at_end after the last epoch
    classifier_classes: int | None = None  # rows of the online classifier
    bank_shape: tuple[int, ...] | None = None  # EffSSL's memory bank


# ------------------------------------------------------------------------ the config alone
def check_required_keys(cfg: DictConfig) -> None:
    """The keys a pretraining run cannot do without are set."""
    required = ["method", "backbone.name", "data.dataset", "data.train_path", "optimizer.lr"]
    required += ["optimizer.batch_size", "augmentations", "max_epochs"]
    if select(cfg, "data.val_path") is not None:
        required.append("optimizer.classifier_lr")
    for key in required:
        if select(cfg, key) is None:
            raise ConfigError(f"{key} is missing from the config")


def check_numeric_keys(cfg: DictConfig) -> None:
    """Every key of :data:`NUMERIC_KEYS` that is set holds a number in its range."""
    for key, rule in NUMERIC_KEYS.items():
        value = select(cfg, key)
        if value is not None and not rule.accepts(value):
            raise ConfigError(f"{key} must be {rule.describe()}, got {value!r}")


#: schedulers whose length solo-learn derives from ``max_epochs`` (unusable with -1)
_SCHEDULERS_WITHOUT_EPOCHS = ("none", "step")


def check_stopping_condition(cfg: DictConfig) -> None:
    """``max_epochs`` must end training: >= 1, or -1 (Lightning: no epoch limit) only with
    ``max_steps`` or ``max_time`` set and a scheduler that does not need a number of epochs."""
    if cfg.max_epochs >= 1:
        return
    if cfg.max_epochs == 0:
        raise ConfigError("max_epochs must be >= 1 (or -1 with +max_steps/+max_time), got 0")
    max_steps = select(cfg, "max_steps", -1) or -1
    if max_steps <= 0 and select(cfg, "max_time") is None:
        raise ConfigError(
            "max_epochs=-1 with neither max_steps nor max_time set would train forever: set "
            "max_epochs to a number of epochs, or add +max_steps=N or +max_time=DD:HH:MM:SS"
        )
    scheduler = str(select(cfg, "scheduler.name", "none")).lower()
    if scheduler not in _SCHEDULERS_WITHOUT_EPOCHS:
        raise ConfigError(
            f"max_epochs=-1: scheduler.name={scheduler} needs a number of epochs; set max_epochs "
            "(max_steps and max_time still stop earlier) or scheduler.name=none"
        )


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}")


def check_dataset(cfg: DictConfig, facts: InputFacts) -> None:
    """``data.dataset`` is one solo-learn knows."""
    dataset = cfg.data.dataset
    if facts.datasets and dataset not in facts.datasets:  # solo-learn: a bare assert
        raise ConfigError(
            f"data.dataset={dataset!r} is not one of {facts.datasets}."
            f"{suggest(str(dataset), facts.datasets)}"
        )


def check_checkpoint_storage(keep_last: Any, bank: Any) -> None:
    """``checkpoint.keep_last`` and ``checkpoint.bank``, as the checkpointer takes them."""
    rule = NUMERIC_KEYS["checkpoint.keep_last"]
    if not rule.accepts(keep_last):
        raise ConfigError(f"checkpoint.keep_last must be {rule.describe()}, got {keep_last!r}")
    _check_choice("checkpoint.bank", bank, BANK_STORAGE)


def check_choices(cfg: DictConfig, facts: InputFacts) -> None:
    """Keys that take one of a few names: ``data.dataset``, ``method``, ``checkpoint.bank``,
    ``data.format`` (with DALI importable), ``data.pipeline``, and EffSSL's ``method_kwargs``
    (every key known, every value in range, one view per image)."""
    check_dataset(cfg, facts)
    if facts.methods and cfg.method not in facts.methods:
        raise ConfigError(f"method={cfg.method!r} is unknown.{suggest(cfg.method, facts.methods)}")
    _check_choice("checkpoint.bank", select(cfg, "checkpoint.bank", "full"), BANK_STORAGE)
    data_format = select(cfg, "data.format", "image_folder")
    _check_choice("data.format", data_format, DATA_FORMATS)
    pipeline = select(cfg, "data.pipeline", "pil")
    _check_choice("data.pipeline", pipeline, PIPELINES)
    if data_format == "dali" and facts.dali_import_error is not None:
        raise ConfigError(f"data.format=dali needs NVIDIA DALI: {facts.dali_import_error}")
    if pipeline == "tensor" and data_format != "image_folder":
        raise ConfigError(
            f"data.pipeline=tensor (the {', '.join(TENSOR_PRESETS)} presets' default) decodes "
            f"image folders or CIFAR/STL-10 into memory, not data.format={data_format} "
            "(DALI runs its own pipeline): add data.pipeline=pil"
        )
    check_timm_model(cfg, facts)
    if cfg.method == "effssl":
        EffSSLSettings.from_cfg(cfg)


def check_timm_model(cfg: DictConfig, facts: InputFacts) -> None:
    """``backbone.kwargs.model_name`` of the ``timm`` backbone is a timm model name (its part
    before a ``.tag``). Whether timm registered it itself, and whether ``low_res`` fits its
    family, need timm's model classes: :mod:`effssl_plugin.backbones` checks those when it
    builds the model."""
    if not facts.timm_models or select(cfg, "backbone.name", None) != "timm":
        return
    name = select(cfg, "backbone.kwargs.model_name", None)
    if not isinstance(name, str) or name.split(".", 1)[0] not in facts.timm_models:
        raise ConfigError(
            f"backbone.kwargs.model_name={name!r} is not a timm model."
            + suggest(str(name), facts.timm_models)
        )


# --------------------------------------------------------------------------- the data
def _check_class_folder(key: str, folder: FolderFacts | None) -> None:
    """An existing, non-empty folder that is not a dataset root (``train/`` plus ``test/``)."""
    if folder is None or folder.path == "":
        raise DataError(f"{key} is not set: point it to an image folder (one subfolder per class)")
    if not folder.exists:
        raise DataError(f"{key}={folder.path} does not exist")
    if not folder.is_dir or not folder.has_entries:
        raise DataError(
            f"{key}={folder.path} is empty or not a folder: expected one subfolder per class"
        )
    names = [n for n in folder.class_names if not n.startswith(".")]  # .ipynb_checkpoints
    if "train" in names and len(names) >= 2 and set(names) <= set(SPLIT_NAMES):
        val = next(n for n in SPLIT_NAMES if n != "train" and n in names)
        raise DataError(
            f"{key}={folder.path} holds the split folders {', '.join(n + '/' for n in names)}, "
            f"not one folder per class: use data.train_path={folder.path}/train "
            f"data.val_path={folder.path}/{val}"
        )


def check_data_paths(cfg: DictConfig, facts: InputFacts, validation: bool = True) -> None:
    """A folder dataset's paths exist and hold class folders (h5: files), and the val folder
    has no class the training folder lacks. CIFAR and STL-10 paths are torchvision download
    roots and may not exist yet."""
    if select(cfg, "data.dataset") not in FOLDER_DATASETS:
        return
    val = facts.val if validation and select(cfg, "data.val_path") is not None else None
    if select(cfg, "data.format", "image_folder") == "h5":
        for key, folder in (("train_path", facts.train), ("val_path", val)):
            if folder is not None and not folder.is_file:
                raise DataError(f"data.{key}={folder.path} is not an existing h5 file")
        return
    _check_class_folder("data.train_path", facts.train)
    if val is None:
        return
    _check_class_folder("data.val_path", val)
    check_val_classes(cfg, facts.train, val)


def check_val_classes(cfg: DictConfig, train: FolderFacts, val: FolderFacts) -> None:
    """The val folder has no class folder the training folder lacks (labelled data only)."""
    extra = sorted(set(val.class_names) - set(train.class_names))
    if extra and not select(cfg, "data.no_labels", False):
        shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise DataError(
            f"data.val_path={val.path} has {len(extra)} class folder(s) that data.train_path="
            f"{train.path} lacks ({shown}): the online classifier knows the training classes "
            "only; remove them from data.val_path or add them to data.train_path"
        )


def check_global_batch(cfg: DictConfig, num_samples: int, world_size: int) -> None:
    """The global batch must fit the dataset, and effssl's negatives must fit the bank."""
    batch = int(cfg.optimizer.batch_size)
    global_batch = batch * world_size
    if global_batch > num_samples:
        raise ConfigError(
            f"optimizer.batch_size={batch} x {world_size} process(es) = "
            f"{global_batch} is larger than the training set ({num_samples} images): with "
            "drop_last no training step would run"
        )
    if cfg.method == "effssl":  # negatives vs bank rows, with every other effssl check
        settings = replace(EffSSLSettings.from_cfg(cfg), num_samples=num_samples)
        settings.check_global_batch(global_batch)


def check_data_size(cfg: DictConfig, num_samples: int, world_size: int) -> None:
    """What the size of the training set decides: ``method_kwargs.num_samples`` (effssl's
    bank rows, derived from it), and the global batch against it."""
    given = select(cfg, "method_kwargs.num_samples") if cfg.method == "effssl" else None
    if given is not None and given != num_samples:
        raise ConfigError(
            f"method_kwargs.num_samples={given} but the training set has "
            f"{num_samples} images: leave it unset so it is derived from the data"
        )
    check_global_batch(cfg, num_samples, world_size)


# ------------------------------------------------------------------------- the one pass
def check_config_and_paths(cfg: DictConfig, facts: InputFacts) -> None:
    """What solo-learn's ``parse_cfg`` needs checked before it reads the config: required
    keys, numbers, stopping, the dataset name and its paths."""
    check_required_keys(cfg)
    check_numeric_keys(cfg)
    check_stopping_condition(cfg)
    check_dataset(cfg, facts)
    check_data_paths(cfg, facts)


def check_inputs(cfg: DictConfig, facts: InputFacts) -> None:
    """Every check that needs no built object, in the order a user would fix them: required
    keys, numbers, stopping, choices, paths and val classes, then (where the facts know
    them) the training-set size against the batch and bank."""
    check_required_keys(cfg)
    check_numeric_keys(cfg)
    check_stopping_condition(cfg)
    check_choices(cfg, facts)
    check_data_paths(cfg, facts)
    if facts.train_images is not None and facts.world_size is not None:
        check_data_size(cfg, facts.train_images, facts.world_size)


# --------------------------------------------------------------------------- resuming
def check_resume(cfg: DictConfig, checkpoint: CheckpointFacts, num_classes: int) -> None:
    """Refuses a checkpoint ``cfg`` cannot continue: made for another dataset (number of
    classes of the online classifier; for effssl, of images, i.e. bank rows) or an EffSSL
    checkpoint saved without its bank (``checkpoint.bank=none_at_end``; fine for a finished
    run, which trains nothing)."""
    path, epochs = checkpoint.path, checkpoint.epochs
    if cfg.method == "effssl" and checkpoint.bank_omitted:
        if not 0 < int(cfg.max_epochs) <= epochs:
            raise ConfigError(
                f"the checkpoint {path} was saved without its memory bank "
                f"(checkpoint.bank=none_at_end, after {epochs} epochs): it holds the trained "
                "weights (also in the run's encoder/ folder) but cannot be continued; resume "
                "from an earlier checkpoint, or start a new run (auto_resume.enabled=false)"
            )
    classes = checkpoint.classifier_classes
    if classes is not None and classes != num_classes:
        raise ConfigError(
            f"the checkpoint {path} was trained on {classes} classes but "
            f"data.train_path has {num_classes}: resuming on a different dataset is "
            "refused (start a new run, e.g. with auto_resume.enabled=false)"
        )
    if cfg.method == "effssl" and checkpoint.bank_shape is not None:
        kw = cfg.method_kwargs
        run_shape = (int(kw.num_samples), int(kw.proj_output_dim))
        reinit = bool(kw.reinit_bank_on_resume)
        check_bank_shape(tuple(checkpoint.bank_shape), run_shape, reinit, path)
