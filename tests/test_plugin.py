"""solo-learn integration: registration, the EffSSL module, config parsing, kNN, fits."""

from __future__ import annotations

import pytest
import torch
from conftest import compose, make_image_folder, require_solo, tiny_overrides

require_solo()

import solo.methods  # noqa: E402
import solo.methods.base as solo_base  # noqa: E402
import solo.utils.knn as solo_knn  # noqa: E402
import timm.models._registry as timm_registry  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import effssl_plugin  # noqa: E402
from effssl_plugin.errors import ConfigError  # noqa: E402

SMALL = [
    "machine=cpu",
    "backbone.kwargs.model_name=resnet10t",
    "method_kwargs.proj_hidden_dim=64",
    "method_kwargs.proj_output_dim=32",
]


def effssl_cfg(folder, extra=()):
    from effssl_plugin.config import parse_pretrain_cfg

    cfg = compose(
        "effssl",
        [
            *SMALL,
            "dataset=custom_lowres",
            f"data.train_path={folder}",
            f"data.val_path={folder}",
            "data.num_workers=0",
            "optimizer.batch_size=6",
            "method_kwargs.num_negatives=4",
            *extra,
        ],
    )
    return parse_pretrain_cfg(cfg)


# ------------------------------------------------------------------ registration
def test_register_is_idempotent_and_touches_nothing_else():
    methods_before = dict(solo.methods.METHODS)
    backbones_before = dict(solo_base.BaseMethod._BACKBONES)
    timm_before = dict(timm_registry._model_entrypoints)
    effssl_plugin.register()
    effssl_plugin.register()
    methods = solo.methods.METHODS
    assert methods["effssl"].__name__ == "EffSSL"
    assert {k: v for k, v in methods.items() if k != "effssl"} == {
        k: v for k, v in methods_before.items() if k != "effssl"
    }
    backbones = solo_base.BaseMethod._BACKBONES
    assert backbones["timm"].__name__ == "timm_backbone"
    assert {k: v for k, v in backbones.items() if k != "timm"} == {
        k: v for k, v in backbones_before.items() if k != "timm"
    }
    assert dict(timm_registry._model_entrypoints) == timm_before
    # solo-learn's kNN name now points at the torchmetrics-1.x compatible subclass
    assert issubclass(solo_base.WeightedKNNClassifier, solo_knn.WeightedKNNClassifier.__mro__[1])
    solo_base.WeightedKNNClassifier(k=5)  # solo-learn's own class raises on compute_on_step


def test_register_replaces_solo_learns_knn_which_fails_under_torchmetrics_1_and_on_subsets(
    fake_folder, monkeypatch
):
    """solo-learn's own kNN classifier fails in two ways: under torchmetrics >= 1.0 (the
    installed one) its constructor passes ``compute_on_step``, which is rejected; under its
    pinned torchmetrics < 0.12 its ``compute`` crashes on a validation subset that lacks some
    classes. register() points the name that solo-learn's BaseMethod builds its online kNN
    from at the fixed subclass, which does neither, on every torchmetrics version."""
    import torchmetrics
    from packaging.version import Version

    from effssl_plugin.knn import WeightedKNNClassifierTM1

    solo_class = WeightedKNNClassifierTM1.__bases__[0]
    assert solo_class.__module__ == "solo.utils.knn"
    if Version(torchmetrics.__version__) >= Version("1.0"):
        with pytest.raises(ValueError, match="compute_on_step"):
            solo_class(k=3)
    else:  # solo-learn's pin: its constructor works
        solo_class(k=3)

    x = torch.eye(4).repeat(5, 1)
    y = torch.arange(4).repeat(5)
    subset = y == 0  # a validation subset: one class of four; k=6 reaches the others

    def stored(knn):
        knn.train_features, knn.train_targets = [x], [y]
        knn.test_features, knn.test_targets = [x[subset]], [y[subset]]
        return knn

    with pytest.raises(RuntimeError, match="out of bounds"):  # solo-learn's own compute
        solo_class.compute(stored(WeightedKNNClassifierTM1(k=6)))

    # solo-learn as it is before register(): its own class under both names
    monkeypatch.setattr(solo_base, "WeightedKNNClassifier", solo_class)
    monkeypatch.setattr(solo_knn, "WeightedKNNClassifier", solo_class)
    monkeypatch.setattr(effssl_plugin.solo_compat, "_registered", False)
    effssl_plugin.register()
    assert solo_knn.WeightedKNNClassifier is WeightedKNNClassifierTM1
    # solo-learn's BaseMethod builds the online kNN itself, from the name in its module
    cfg = effssl_cfg(fake_folder, ["+method_kwargs.num_samples=18", "knn_eval.k=6"])
    knn = solo.methods.METHODS["effssl"](cfg).knn
    assert type(knn) is WeightedKNNClassifierTM1
    knn(train_features=x, train_targets=y)
    knn(test_features=x[subset], test_targets=y[subset])
    assert knn.compute()[0] == 100.0


def test_register_leaves_no_process_wide_warning_filter():
    import warnings

    before = list(warnings.filters)
    effssl_plugin.solo_compat._registered = False
    effssl_plugin.register()
    assert warnings.filters == before


def test_importing_the_package_does_not_import_solo():
    import subprocess
    import sys

    code = "import sys, effssl_plugin; print('solo' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_baselines_still_build_with_the_timm_backbone(fake_folder):
    from effssl_plugin.config import parse_pretrain_cfg

    effssl_plugin.register()
    for name in ("simclr", "byol", "mocov2plus"):
        cfg = compose(
            name,
            [
                *SMALL[:2],
                "dataset=custom_lowres",
                f"data.train_path={fake_folder}",
                f"data.val_path={fake_folder}",
            ],
        )
        model = solo.methods.METHODS[name](parse_pretrain_cfg(cfg))
        out = model(torch.randn(2, 3, 32, 32))
        assert out["feats"].shape == (2, model.features_dim)


# ------------------------------------------------------------------------ module
def test_effssl_forward_shapes_and_bank(fake_folder):
    effssl_plugin.register()
    cfg = effssl_cfg(fake_folder, ["+method_kwargs.num_samples=18"])
    model = solo.methods.METHODS["effssl"](cfg)
    out = model(torch.randn(4, 3, 32, 32))
    assert out["feats"].shape == (4, model.features_dim)
    assert out["logits"].shape == (4, 3)
    assert out["z"].shape == (4, 32)
    assert tuple(model.bank.weight.shape) == (18, 32)
    # bank excluded from DDP's per-step buffer broadcast, projector as the official code
    assert set(model._ddp_params_and_buffers_to_ignore) == {
        "bank.weight",
        "bank.filled",
        "bank.last_write",
        "bank.num_updates",
    }
    kinds = [type(m).__name__ for m in model.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    names = [n for n, _ in model.named_modules() if "backbone" in n.split(".")[0]]
    assert all(n.split(".")[0] == "backbone" for n in names)


def test_ddp_steps_gather_without_a_size_exchange_only_for_full_batches(fake_folder, monkeypatch):
    """Under DDP the bank's per-step gathers skip the size exchange (a host sync) because
    every rank's batch holds optimizer.batch_size images; another size is refused on the
    host, before any collective could disagree."""
    import effssl_plugin.method as method

    effssl_plugin.register()
    model = solo.methods.METHODS["effssl"](
        effssl_cfg(fake_folder, ["+method_kwargs.num_samples=18"])
    )
    assert model._check_ddp_batch(torch.arange(6)) is False  # one process: nothing to skip
    monkeypatch.setattr(method, "is_distributed", lambda: True)
    assert model._check_ddp_batch(torch.arange(6)) is True
    with pytest.raises(ConfigError, match="optimizer.batch_size=6"):
        model._check_ddp_batch(torch.arange(5))


def test_negatives_sampler_has_no_checkpoint_state_and_old_checkpoints_load(fake_folder):
    """The sampler is a function of (seed, global step): nothing to save; the key that
    older checkpoints carry is ignored."""
    effssl_plugin.register()
    model = solo.methods.METHODS["effssl"](
        effssl_cfg(fake_folder, ["+method_kwargs.num_samples=18"])
    )
    checkpoint: dict = {"state_dict": {}}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint == {"state_dict": {}}
    state = {f"bank.{k}": v.clone() for k, v in model.bank.state_dict().items()}
    old = {"state_dict": state, "effssl_negatives_generator": torch.ByteTensor(5056)}
    model.on_load_checkpoint(old)
    assert set(old["state_dict"]) == set(state)


def test_defaults_are_the_official_run_sh_values(fake_folder):
    from effssl_plugin.settings import DEFAULT_METHOD_KWARGS

    cfg = compose("effssl")
    kw = cfg.method_kwargs
    official = {
        "temperature": 0.2,
        "bank_momentum": 0.5,
        "kl_weight": 20.0,
        "kl_power": 0.5,
        "proj_output_dim": 2048,
        "num_negatives": 10000,
        "cutmix_alpha": 0.5,
    }
    for key, value in official.items():
        assert kw[key] == value == DEFAULT_METHOD_KWARGS[key], key
    # SGD lr 1.0 at a total batch of 512: solo-learn scales lr * batch * world / 256
    assert cfg.optimizer.name == "sgd" and cfg.optimizer.kwargs.momentum == 0.9
    assert cfg.optimizer.lr * 512 / 256 == 1.0 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.max_epochs == 200 and cfg.scheduler.warmup_epochs == 0
    assert cfg.augmentations[0].num_crops == 1 and cfg.augmentations[0].crop_size == 32


@pytest.mark.parametrize(
    "override, key",
    [
        ("method_kwargs.temperature=0", "method_kwargs.temperature"),
        ("method_kwargs.kl_power=1.0", "method_kwargs.kl_power"),
        ("method_kwargs.bank_update=sgd", "method_kwargs.bank_update"),
        ("method_kwargs.bank_init=zeros", "method_kwargs.bank_init"),
        ("method_kwargs.bank_dtype=float64", "method_kwargs.bank_dtype"),
        ("method_kwargs.bank_momentum=1.0", "method_kwargs.bank_momentum"),
        ("+method_kwargs.temprature=0.1", "method_kwargs.temprature"),
        ("num_views=2", "one view"),
    ],
)
def test_method_kwargs_are_validated(fake_folder, override, key):
    effssl_plugin.register()
    cfg = effssl_cfg(fake_folder, ["+method_kwargs.num_samples=18", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        solo.methods.METHODS["effssl"](cfg)


def test_unknown_key_suggests_the_right_one(fake_folder):
    effssl_plugin.register()
    cfg = effssl_cfg(fake_folder, ["+method_kwargs.num_samples=18", "+method_kwargs.temprature=1"])
    with pytest.raises(ConfigError, match="Did you mean: temperature"):
        solo.methods.METHODS["effssl"](cfg)


# ------------------------------------------------------------------ lr scaling
@pytest.mark.parametrize("devices, expected", [("auto", 1), (1, 1), ("1", 1), ("2", 2), (3, 3)])
def test_lr_scaling_uses_real_process_count(fake_folder, devices, expected):
    from effssl_plugin.config import parse_pretrain_cfg

    cfg = compose(
        "effssl",
        [
            "machine=cpu",
            f"devices='{devices}'" if isinstance(devices, str) else f"devices={devices}",
            "num_nodes=2",
            "dataset=custom_lowres",
            f"data.train_path={fake_folder}",
            f"data.val_path={fake_folder}",
            "optimizer.batch_size=64",
        ],
    )
    base_lr = cfg.optimizer.lr
    cfg = parse_pretrain_cfg(cfg)
    assert cfg.world_size == expected * 2
    assert cfg.optimizer.lr == pytest.approx(base_lr * 64 * expected * 2 / 256)
    assert cfg.devices == devices  # handed back to Lightning unchanged


def test_auto_machine_resolves_on_cpu(fake_folder):
    from effssl_plugin.config import parse_pretrain_cfg

    cfg = compose(
        "effssl",
        ["dataset=custom_lowres", f"data.train_path={fake_folder}", f"data.val_path={fake_folder}"],
    )
    cfg = parse_pretrain_cfg(cfg)
    if not torch.cuda.is_available():
        assert cfg.precision == "32-true" and cfg.sync_batchnorm is False


# ------------------------------------------------------------------------- kNN
def test_knn_compat_matches_solo_math_and_clears_state():
    from effssl_plugin.knn import WeightedKNNClassifierTM1

    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 16, generator=g)
    y = x[:, :8].argmax(1)
    for distance in ("cosine", "euclidean"):
        ref = WeightedKNNClassifierTM1(k=15, distance_fx=distance)
        ref.train_features, ref.train_targets = [x[:500]], [y[:500]]  # float32, as given
        ref.test_features, ref.test_targets = [x[500:]], [y[500:]]
        solo_class = WeightedKNNClassifierTM1.__bases__[0]  # register() swaps solo's name
        assert solo_class.__module__ == "solo.utils.knn"
        expected = solo_class.compute(ref)  # solo-learn's own math
        for dtype in (torch.float32, torch.float16):  # float16: the stored cosine features
            ours = WeightedKNNClassifierTM1(k=15, distance_fx=distance, feature_dtype=dtype)
            ours(train_features=x[:500], train_targets=y[:500])
            ours(test_features=x[500:], test_targets=y[500:])
            got = ours.compute()
            assert not ours.train_features and not ours.test_features  # cleared
            assert got == pytest.approx(expected)
        assert got[0] > 30  # far above the 12.5% chance level


def test_knn_handles_val_subsets_missing_classes():
    from effssl_plugin.knn import WeightedKNNClassifierTM1

    x = torch.eye(4).repeat(5, 1)
    y = torch.arange(4).repeat(5)
    knn = WeightedKNNClassifierTM1(k=3)
    knn(train_features=x, train_targets=y)
    knn(test_features=x[y == 3], test_targets=y[y == 3])  # one class only
    assert knn.compute()[0] == 100.0


# ------------------------------------------------------------------------- fit
def test_fast_dev_run_fit_on_fake_folder(fake_folder, tmp_path, monkeypatch):
    from effssl_plugin.main_pretrain import pretrain

    monkeypatch.chdir(tmp_path)
    overrides = tiny_overrides(fake_folder, 1, 6, 4, f"data.val_path={fake_folder}")
    cfg = compose("effssl", [*overrides, "+fast_dev_run=2"])
    captured = {}

    from lightning.pytorch.callbacks import Callback

    class Capture(Callback):
        def on_train_start(self, trainer, module):
            captured["filled_before"] = bool(module.bank.filled)

        def on_train_end(self, trainer, module):
            captured["module"] = module
            captured["steps"] = trainer.global_step

    pretrain(cfg, extra_callbacks=[Capture()])
    module = captured["module"]
    assert captured["filled_before"] is False  # calibration happens in the module's hook
    assert bool(module.bank.filled)
    assert (module.bank.last_write >= 0).all()  # every row written by calibration
    assert int(module.bank.num_updates) == captured["steps"] == 2
    norms = module.bank.weight.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_checkpoint_loads_into_solo_learns_linear_model_as_main_linear_does(
    fake_folder, tmp_path, monkeypatch
):
    """solo-learn's main_linear.py reads the run's config with solo-learn's ``parse_cfg``,
    builds the backbone from solo-learn's registry (``BaseMethod._BACKBONES[name](method=...,
    **kwargs)``), keeps the checkpoint keys containing ``backbone``, strips ``backbone.``,
    loads them with ``strict=False`` and wraps the backbone in solo-learn's ``LinearModel``.
    main_linear.py is a script of solo-learn's repository, not a part of the installed
    package, so its six-line key rule is restated here; everything else is solo-learn's own
    code. ``strict=False`` skips any key that does not match without a word, so the test
    checks the outcome: no key is missing or left over, and LinearModel's features equal the
    pretrained module's."""
    from lightning.pytorch.callbacks import Callback
    from solo.args.linear import parse_cfg as solo_parse_linear_cfg
    from solo.methods.linear import LinearModel
    from test_solo_main_linear_cpu import solo_linear_cfg

    from effssl_plugin.main_pretrain import pretrain

    monkeypatch.chdir(tmp_path)
    captured = {}

    class Capture(Callback):
        def on_train_end(self, trainer, module):
            captured["backbone"] = module.backbone

    cfg = compose("effssl", tiny_overrides(fake_folder, 1, 6, 4))
    run_dir = pretrain(cfg, extra_callbacks=[Capture()])
    (ckpt,) = run_dir.glob("*.ckpt")
    args = OmegaConf.load(run_dir / "args.json")
    linear_cfg = solo_linear_cfg(fake_folder, "1")
    linear_cfg.backbone = args.backbone
    linear_cfg.pretrain_method = args.method
    linear_cfg.pretrained_feature_extractor = str(ckpt)
    linear_cfg = solo_parse_linear_cfg(linear_cfg)

    backbone = solo_base.BaseMethod._BACKBONES[linear_cfg.backbone.name](
        method=linear_cfg.pretrain_method, **linear_cfg.backbone.kwargs
    )
    state = torch.load(ckpt, map_location="cpu")["state_dict"]  # main_linear.py's rule
    for k in list(state.keys()):
        if "backbone" in k:
            state[k.replace("backbone.", "")] = state[k]
        del state[k]
    result = backbone.load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    model = LinearModel(backbone, cfg=linear_cfg, loss_func=torch.nn.CrossEntropyLoss()).eval()

    pretrained = captured["backbone"].eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x)["feats"], pretrained(x))


@pytest.mark.parametrize("n, b", [(11, 5), (10, 5), (3, 5), (1, 1), (12, 5)])
def test_calibration_batches_cover_every_index_once_without_tiny_tail(n, b):
    from effssl_plugin.calibration import _batches_without_small_tail

    batches = _batches_without_small_tail(list(range(n)), b)
    assert [i for batch in batches for i in batch] == list(range(n))
    assert all(len(batch) >= min(b, n) for batch in batches)


@pytest.mark.slow  # a subprocess Hydra app
def test_hydra_search_path_plugin_resolves_configs_and_registers(tmp_path):
    """Any Hydra app (e.g. solo-learn's main_linear.py) sees our configs and EffSSL."""
    import subprocess
    import sys

    code = (
        "from hydra import initialize, compose\n"
        "import solo.methods\n"
        "assert 'effssl' not in solo.methods.METHODS\n"
        "with initialize(version_base='1.2', config_path=None):\n"
        "    cfg = compose('effssl', overrides=['dataset=stl10'])\n"
        "from solo.methods.base import BaseMethod\n"
        "print(cfg.method, cfg.data.dataset, 'effssl' in solo.methods.METHODS,"
        " 'timm' in BaseMethod._BACKBONES)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["effssl", "stl10", "True", "True"]


@pytest.mark.parametrize(
    "preset, dataset, crop, low_res",
    [
        ("cifar10", "cifar10", 32, True),
        ("cifar100", "cifar100", 32, True),
        ("stl10", "stl10", 96, True),
        ("imagenet100", "imagenet100", 224, False),
        ("imagenet", "imagenet", 224, False),
        ("custom", "custom", 224, False),
        ("custom_lowres", "custom", 32, True),
    ],
)
def test_dataset_presets_select_with_one_override(preset, dataset, crop, low_res):
    for config in ("effssl", "simclr"):
        cfg = compose(config, [f"dataset={preset}"])
        assert cfg.data.dataset == dataset
        assert cfg.augmentations[0].crop_size == crop
        assert cfg.backbone.kwargs.low_res is low_res
        assert cfg.augmentations[0].num_crops == (1 if config == "effssl" else 2)
        assert cfg.backbone.kwargs.model_name == "resnet18"


def test_cpu_preset():
    cfg = compose("effssl", ["machine=cpu"])
    assert (cfg.accelerator, cfg.devices, cfg.precision, cfg.strategy) == (
        "cpu",
        1,
        "32-true",
        "auto",
    )
    assert cfg.sync_batchnorm is False


@pytest.mark.parametrize("crop, resized", [(32, 32), (96, 96), (224, 256)])
def test_custom_validation_runs_at_the_pretraining_resolution(crop, resized):
    from PIL import Image

    from effssl_plugin.preprocessing import classification_transform

    tf = classification_transform(crop)
    assert tf.transforms[0].size == resized  # short side before the center crop
    out = tf(Image.new("RGB", (300, 200)))
    assert tuple(out.shape) == (3, crop, crop)


@pytest.mark.parametrize("n, b, world", [(64, 16, 1), (37, 8, 1), (37, 8, 2), (50, 7, 3)])
def test_calibration_batches_shuffled_identically_on_every_rank_and_cover_every_row(n, b, world):
    from effssl_plugin.calibration import calibration_batches

    shards = [calibration_batches(n, b, seed=3, rank=r, world_size=world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # same number of batches on every rank
    seen = [i for shard in shards for batch in shard for i in batch]
    assert set(seen) == set(range(n)) and len(seen) == n + (-n) % world
    assert seen != sorted(seen)  # not index order
    assert calibration_batches(n, b, 3, 0, world) == shards[0]  # seeded: reproducible
    assert calibration_batches(n, b, 4, 0, world) != shards[0]


def test_calibration_never_sees_one_class_batches_on_a_class_sorted_folder(
    tmp_path, monkeypatch, capsys
):
    """ImageFolder indexes are sorted by class: index-order batches would each hold a single
    class, biasing BatchNorm's batch statistics and hence the calibrated rows."""
    from lightning.pytorch.callbacks import Callback

    from effssl_plugin.calibration import calibration_loader
    from effssl_plugin.main_pretrain import pretrain

    folder = make_image_folder(tmp_path / "sorted", classes=4, per_class=8)
    monkeypatch.chdir(tmp_path)
    captured: dict = {}

    class Capture(Callback):
        def on_train_start(self, trainer, module):  # runs before the module's calibration
            loader = calibration_loader(module)
            targets = loader.dataset.targets
            captured["batches"] = [[targets[i] for i in batch] for batch in loader.batch_sampler]

    cfg = compose("effssl", [*tiny_overrides(folder, 1, 8, 4), "+fast_dev_run=1"])
    pretrain(cfg, extra_callbacks=[Capture()])
    batches = captured["batches"]
    assert sum(len(b) for b in batches) == 32
    assert all(len(set(b)) > 1 for b in batches), batches
    # the console says what the wait before step 1 is
    assert "Calibrating the memory bank: 32 rows, 4 batches in shuffled order" in (
        capsys.readouterr().out
    )
