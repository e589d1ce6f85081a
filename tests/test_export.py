"""The encoder export (``effssl-export``, ``<run dir>/encoder``): timm's folder format, the same
features as the trained backbone, stock timm loading, clear refusals, the evaluation tools on
an exported folder, and the checkpoint bank storage (``checkpoint.bank``)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from conftest import REPO, compose, make_image_folder, python_cmd, require_solo, tiny_overrides
from omegaconf import OmegaConf

require_solo()

from lightning.pytorch.callbacks import Callback  # noqa: E402

from effssl_plugin.backbones import timm_backbone  # noqa: E402
from effssl_plugin.errors import ConfigError  # noqa: E402
from effssl_plugin.export import ExportError, create_encoder, export_encoder  # noqa: E402
from effssl_plugin.export import main as export_main  # noqa: E402

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("img") / "data", classes=3, per_class=6)


def trained_backbone(model_name: str, low_res: bool, seed: int = 0) -> torch.nn.Module:
    """A backbone with non-default weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = timm_backbone(model_name=model_name, low_res=low_res, img_size=32)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return model.eval()


def fake_run(
    root: Path, data: Path, method: str, model_name: str, low_res: bool, epoch: int = 2
) -> tuple[Path, torch.nn.Module]:
    """A run directory as the launcher leaves it: args.json and a Lightning-style checkpoint
    with ``backbone.*`` and other weights."""
    run = root / f"{method}-{model_name}-{low_res}"
    run.mkdir(parents=True)
    cfg = compose(
        method,
        [
            "dataset=custom_lowres",
            f"data.train_path={data}",
            f"data.val_path={data}",
            f"backbone.kwargs.model_name={model_name}",
            f"backbone.kwargs.low_res={low_res}",
        ],
    )
    (run / "args.json").write_text(json.dumps(OmegaConf.to_container(cfg, resolve=True)))
    backbone = trained_backbone(model_name, low_res)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["projector.0.weight"] = torch.randn(4, 4)
    state["bank.weight"] = torch.randn(18, 4)
    ckpt = {"state_dict": state, "epoch": epoch, "global_step": 7 * (epoch + 1)}
    torch.save(ckpt, run / f"{method}-r-ep={epoch}.ckpt")
    return run, backbone


def images(n: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "method, model_name",
    [
        ("effssl", "resnet10t"),
        ("simclr", "mobilenetv3_small_050"),
        ("byol", "convnext_atto"),
        ("mocov2plus", "vit_tiny_patch16_224"),
    ],
)
def test_low_res_export_gives_the_trained_features_and_records_the_run(
    tmp_path, data, method, model_name
):
    run, backbone = fake_run(tmp_path, data, method, model_name, low_res=True)
    out = export_encoder(run, tmp_path / "encoder")
    assert sorted(p.name for p in out.iterdir()) == [
        "args.json",
        "config.json",
        "model.safetensors",
    ]

    encoder = create_encoder(out)
    assert not encoder.training and encoder.num_classes == 0
    x = images()
    torch.testing.assert_close(encoder(x), backbone(x), rtol=1e-5, atol=1e-6)

    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == model_name and config["num_classes"] == 0
    # stock timm cannot rebuild modified stems: their model_args make it fail loudly
    assert config["model_args"].get("low_res", False) is (model_name != "vit_tiny_patch16_224")
    pre = config["pretrained_cfg"]
    assert pre["input_size"] == [3, 32, 32] and pre["crop_pct"] == 1.0
    assert pre["crop_mode"] == "center" and pre["num_classes"] == 0
    assert pre["mean"] == pytest.approx(CIFAR_MEAN) and pre["std"] == pytest.approx(CIFAR_STD)
    assert "url" not in pre and "hf_hub_id" not in pre and "tag" not in pre  # not timm's weights
    record = config["effssl"]
    args_bytes = (run / "args.json").read_bytes()
    assert record["method"] == method and record["dataset"] == "custom"
    assert record["epochs"] == 3 and record["global_step"] == 21
    assert record["model_name"] == model_name and record["low_res"] is True
    assert record["args_sha256"] == hashlib.sha256(args_bytes).hexdigest()
    assert (out / "args.json").read_bytes() == args_bytes


STOCK_TIMM = """
import sys, timm, torch
std, low, x_file, out_file = sys.argv[1:]
model = timm.create_model("local-dir:" + std, pretrained=True).eval()
cfg = timm.data.resolve_data_config({}, model=model)
with torch.no_grad():
    torch.save({"features": model(torch.load(x_file)), "cfg": cfg}, out_file)
try:
    timm.create_model("local-dir:" + low, pretrained=True)
    print("LOW_RES LOADED")
except TypeError as err:
    print("LOW_RES REFUSED:", err)
assert not any(m.split(".")[0] in ("effssl_plugin", "solo") for m in sys.modules), "imported"
"""


@pytest.mark.slow  # a subprocess with stock timm
def test_standard_stem_loads_in_stock_timm_and_low_res_fails_loudly(tmp_path, data):
    run, backbone = fake_run(tmp_path, data, "effssl", "resnet10t", low_res=False)
    std = export_encoder(run, tmp_path / "std")
    low_run, _ = fake_run(tmp_path, data, "simclr", "resnet10t", low_res=True)
    low = export_encoder(low_run, tmp_path / "low")
    x = images()
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "stock.py"
    script.write_text(STOCK_TIMM)
    proc = subprocess.run(
        python_cmd(str(script), str(std), str(low), str(tmp_path / "x.pt"), str(tmp_path / "f.pt")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOW_RES REFUSED:" in proc.stdout and "low_res" in proc.stdout
    result = torch.load(tmp_path / "f.pt")
    with torch.no_grad():
        torch.testing.assert_close(result["features"], backbone(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(create_encoder(std)(x), backbone(x), rtol=1e-5, atol=1e-6)
    assert result["cfg"]["input_size"] == (3, 32, 32)
    assert list(result["cfg"]["mean"]) == pytest.approx(CIFAR_MEAN)


def test_timm_preprocessing_from_the_folder_equals_the_eval_tools(tmp_path, data):
    import timm
    from PIL import Image

    from effssl_plugin.checkpointing import resolve_checkpoint
    from effssl_plugin.evaluation import eval_transforms, load_pretrain_cfg

    run, _ = fake_run(tmp_path, data, "effssl", "resnet10t", low_res=True)
    encoder = create_encoder(export_encoder(run, tmp_path / "enc"))
    timm_tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=encoder))
    _, ours = eval_transforms(load_pretrain_cfg(resolve_checkpoint(run)))
    image = Image.open(next((data / "class1").iterdir())).convert("RGB")
    torch.testing.assert_close(timm_tf(image), ours(image))


def test_export_and_evaluation_share_one_backbone_builder_and_one_preprocessing():
    """One function each, whatever module a tool reaches it through: they cannot diverge."""
    from effssl_plugin import evaluation, export, preprocessing, pretrained

    assert export.build_backbone is evaluation.build_backbone is pretrained.build_backbone
    assert export.load_pretrain_cfg is evaluation.load_pretrain_cfg is pretrained.load_pretrain_cfg
    assert export.backbone_weights is evaluation.backbone_weights is pretrained.backbone_weights
    assert export.eval_data_config is preprocessing.eval_data_config
    assert evaluation.eval_transform is preprocessing.eval_transform


@pytest.mark.parametrize("crop, val_crop_pct", [(32, None), (64, 0.8), (128, None)])
def test_the_validation_loader_applies_what_the_export_declares(data, crop, val_crop_pct):
    """A custom folder's online validation (the launcher's val loader), the evaluation tools and
    an export's ``pretrained_cfg`` preprocess an image to the same tensor."""
    import timm
    from PIL import Image

    from effssl_plugin.data import build_val_loader
    from effssl_plugin.evaluation import eval_transforms
    from effssl_plugin.preprocessing import eval_data_config

    overrides = ["dataset=custom_lowres", f"data.train_path={data}", f"data.val_path={data}"]
    overrides += ["data.num_workers=0", f"augmentations.0.crop_size={crop}"]
    if val_crop_pct is not None:
        overrides.append(f"data.val_crop_pct={val_crop_pct}")
    cfg = compose("effssl", overrides)
    image = Image.open(next((data / "class1").iterdir())).convert("RGB").resize((150, 110))
    declared = timm.data.create_transform(**eval_data_config(cfg))(image)
    assert declared.shape == (3, crop, crop)
    torch.testing.assert_close(build_val_loader(cfg, 2).dataset.transform(image), declared)
    torch.testing.assert_close(eval_transforms(cfg)[1](image), declared)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "stl10", "imagenet100", "custom"])
def test_the_export_normalises_as_solo_learns_pretraining_pipeline(dataset):
    """The mean and std come from solo-learn's own pretraining pipeline for the dataset and
    augmentations the run used, not from a copy of its constants."""
    from solo.data.pretrain_dataloader import build_transform_pipeline

    from effssl_plugin.preprocessing import eval_data_config

    cfg = compose("effssl", [f"dataset={dataset}"])
    if dataset == "custom":
        cfg.augmentations[0].mean, cfg.augmentations[0].std = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    normalize = build_transform_pipeline(dataset, cfg.augmentations[0]).transforms[-1]
    config = eval_data_config(cfg)
    assert config["mean"] == pytest.approx(tuple(normalize.mean))
    assert config["std"] == pytest.approx(tuple(normalize.std))
    sources = (REPO / "effssl_plugin").glob("*.py")
    copies = [f.name for f in sources if re.search(r"0\.4914|0\.2673|0\.2470", f.read_text())]
    assert copies == [], "solo-learn's dataset statistics copied into the package"


def test_knn_names_an_unreadable_image_as_the_linear_probe_does(tmp_path, data):
    """effssl-knn and effssl-linear read their images through one dataset builder
    (:func:`effssl_plugin.evaluation.eval_datasets`): a broken file is named in one line."""
    import shutil

    from effssl_plugin.errors import DataError
    from effssl_plugin.main_knn import parse_args, run_knn

    run, _ = fake_run(tmp_path, data, "effssl", "resnet10t", low_res=True)
    queries = tmp_path / "queries"
    shutil.copytree(data, queries)
    (queries / "class1" / "broken.png").write_bytes(b"not an image")
    args = [str(run), "--val-path", str(queries), "--num-workers", "0", "--device", "cpu"]
    with pytest.raises(DataError, match=r"cannot read image file .*broken\.png"):
        run_knn(parse_args(args))


def test_refusals_are_clear(tmp_path, data, capsys):
    run, _ = fake_run(tmp_path, data, "effssl", "resnet10t", low_res=True)
    (ckpt,) = run.glob("*.ckpt")
    good = ckpt.read_bytes()

    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(ExportError, match=r"cannot read checkpoint .* truncated or not a PyTorch"):
        export_encoder(run, tmp_path / "a")
    ckpt.write_text("not a checkpoint\n")
    with pytest.raises(ExportError, match=r"truncated or not a PyTorch checkpoint"):
        export_encoder(ckpt, tmp_path / "a")
    torch.save([1, 2], ckpt)
    with pytest.raises(ExportError, match=r"not a Lightning checkpoint"):
        export_encoder(run, tmp_path / "a")
    torch.save({"state_dict": {"projector.w": torch.zeros(2)}, "epoch": 0}, ckpt)
    with pytest.raises(ExportError, match=r"no backbone weights \(no state_dict\['backbone\.\*'\]"):
        export_encoder(run, tmp_path / "a")
    assert not (tmp_path / "a").exists()

    # the CLI: one line on stderr, exit status 2
    ckpt.write_bytes(good[:1000])
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(run), str(tmp_path / "a")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("effssl-export: error: cannot read checkpoint")

    # a solo-learn backbone is not a timm model
    args = json.loads((run / "args.json").read_text())
    args["backbone"] = {"name": "resnet18", "kwargs": {}}
    (run / "args.json").write_text(json.dumps(args))
    ckpt.write_bytes(good)
    with pytest.raises(ExportError, match=r"backbone\.name='resnet18' is a solo-learn backbone"):
        export_encoder(run, tmp_path / "a")

    # an output folder holding something else is not overwritten
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an encoder folder"):
        export_encoder(run, other)


def test_create_encoder_refuses_truncated_and_foreign_folders(tmp_path, data):
    run, _ = fake_run(tmp_path, data, "effssl", "resnet10t", low_res=True)
    out = export_encoder(run, tmp_path / "enc")
    weights = (out / "model.safetensors").read_bytes()

    (out / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ExportError, match=r"model\.safetensors: it is truncated or not a safet"):
        create_encoder(out)
    (out / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ExportError, match=r"truncated or not a safetensors file"):
        create_encoder(out)

    other_run, _ = fake_run(tmp_path, data, "simclr", "mobilenetv3_small_050", low_res=True)
    other = export_encoder(other_run, tmp_path / "other")
    (out / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ExportError, match=r"does not hold the weights of resnet10t"):
        create_encoder(out)

    (out / "config.json").write_text("{ not json")
    with pytest.raises(ExportError, match=r"config\.json: not a JSON file"):
        create_encoder(out)
    (out / "config.json").write_text('{"weights": 1}')
    with pytest.raises(ExportError, match=r"not a timm model config"):
        create_encoder(out)
    with pytest.raises(ExportError, match=r"has no config\.json"):
        create_encoder(tmp_path / "missing")


def test_knn_on_an_exported_folder_equals_the_run_directory(tmp_path, data, monkeypatch):
    from effssl_plugin.knn import WeightedKNNClassifierTM1
    from effssl_plugin.main_knn import run_knn

    stored: list[torch.dtype] = []  # effssl-knn is the float32 reference of the online kNN
    compute = WeightedKNNClassifierTM1.compute
    monkeypatch.setattr(
        WeightedKNNClassifierTM1,
        "compute",
        lambda self: stored.append(self.train_features[0].dtype) or compute(self),
    )
    run, _ = fake_run(tmp_path, data, "effssl", "resnet10t", low_res=True)
    (run / "encoder").mkdir()
    export_encoder(run, run / "encoder")
    moved = export_encoder(run, tmp_path / "elsewhere")

    def knn(source: Path) -> list[dict]:
        args = Namespace(
            checkpoint=str(source),
            train_path=None,
            val_path=None,
            k=[3],
            temperature=[0.07],
            distance=["cosine"],
            batch_size=8,
            num_workers=0,
            device="cpu",
            output=None,
        )
        return run_knn(args)

    reference = knn(run)
    assert stored == [torch.float32]
    assert knn(run / "encoder") == reference
    assert knn(moved) == reference  # a folder elsewhere uses its own args.json copy
    # a run directory without checkpoints falls back to its encoder/ folder
    for ckpt in run.glob("*.ckpt"):
        ckpt.unlink()
    assert knn(run) == reference


# --------------------------------------------------------------------------- README snippets

README_MARK = "<!-- tested by tests/test_export.py -->"


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(re.escape(README_MARK) + r"\s*```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2, "the README's two 'Use your encoder' examples"
    return blocks


def test_readme_encoder_examples_run(tmp_path, data):
    run, backbone = fake_run(tmp_path, data, "effssl", "resnet10t", low_res=True)
    out = export_encoder(run, tmp_path / "encoder")
    features_code, finetune_code = readme_blocks()
    paths = {"trained_models/effssl/<run id>/encoder": str(out), "path/to/train": str(data)}
    for old, new in paths.items():
        features_code = features_code.replace(old, new)
        finetune_code = finetune_code.replace(old, new)

    from PIL import Image

    pil_images = [Image.open(p).convert("RGB") for p in sorted((data / "class0").iterdir())]
    scope: dict = {"pil_images": pil_images}
    exec(features_code, scope)
    assert scope["images"].shape == (6, 3, 32, 32)
    with torch.no_grad():
        reference = backbone(scope["images"])
    torch.testing.assert_close(scope["features"], reference, rtol=1e-5, atol=1e-6)
    assert scope["feature_map"].shape == (6, 512, 4, 4)  # total stride 8 at 32 px

    finetune_code = finetune_code.replace("range(10)", "range(2)").replace("size=64", "size=6")
    scope = {}
    exec(finetune_code, scope)
    model = scope["model"]
    model.eval()
    with torch.no_grad():
        logits = model(images())
    assert logits.shape == (4, 3)  # 3 classes in the folder
    assert not torch.equal(model.fc.weight, torch.zeros_like(model.fc.weight))
    assert not torch.equal(  # the encoder itself was trained too
        model.state_dict()["layer1.0.conv1.weight"], backbone.state_dict()["layer1.0.conv1.weight"]
    )


# --------------------------------------------------------------------------- launcher runs


class Recorder(Callback):
    """The bank at the start of training and after each epoch; weights at the end."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.epoch_end: list[torch.Tensor] = []
        self.end: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, module) -> None:
        self.start = {k: v.clone() for k, v in module.bank.state_dict().items()}

    def on_train_epoch_end(self, trainer, module) -> None:
        self.epoch_end.append(module.bank.weight.detach().clone())

    def on_train_end(self, trainer, module) -> None:
        self.end = {k: v.detach().clone() for k, v in module.state_dict().items()}


def run_pretrain(data: Path, *extra: str, callbacks: list | None = None) -> Path:
    from effssl_plugin.main_pretrain import pretrain

    overrides = tiny_overrides(data, 2, 6, 4, "checkpoint.keep_prev=true", *extra)
    return pretrain(compose("effssl", overrides), extra_callbacks=callbacks)


@pytest.mark.slow
def test_pretraining_ends_with_the_export_and_none_at_end_drops_the_last_bank(
    tmp_path, data, monkeypatch
):
    from effssl_plugin.evaluation import build_backbone, load_backbone_weights, load_pretrain_cfg

    monkeypatch.chdir(tmp_path)
    run = run_pretrain(data, "checkpoint.bank=none_at_end")
    first, last = sorted(run.glob("*.ckpt"), key=lambda p: p.name)
    assert first.name.endswith("-ep=0.ckpt") and last.name.endswith("-ep=1.ckpt")
    early, final = torch.load(first), torch.load(last)
    assert early["state_dict"]["bank.weight"].dtype == torch.float32
    assert not any(k.startswith("bank.") for k in final["state_dict"])
    assert final["effssl_checkpoint_bank"] == "omitted"

    # the export equals the backbone of the final checkpoint, loaded the evaluation tools' way
    cfg = load_pretrain_cfg(last)
    reference = build_backbone(cfg.backbone, cfg.data.dataset, cfg.method)
    load_backbone_weights(reference, last)
    encoder = create_encoder(run / "encoder")
    with torch.no_grad():
        torch.testing.assert_close(encoder(images()), reference.eval()(images()))
    record = json.loads((run / "encoder" / "config.json").read_text())["effssl"]
    assert record["epochs"] == 2 and record["global_step"] == final["global_step"]
    assert record["args_sha256"] == hashlib.sha256((run / "args.json").read_bytes()).hexdigest()

    # continuing a checkpoint without its bank is refused before anything starts
    with pytest.raises(ConfigError, match=r"saved without its memory bank"):
        run_pretrain(data, f"resume_from_checkpoint='{last}'", "max_epochs=3")


@pytest.mark.slow
def test_bfloat16_bank_resumes_from_the_rounded_bank_deterministically(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = Recorder()
    run = run_pretrain(data, "checkpoint.bank=bfloat16", "max_epochs=1", callbacks=[first])
    (ckpt,) = run.glob("*-ep=0.ckpt")
    stored = torch.load(ckpt)
    assert stored["state_dict"]["bank.weight"].dtype == torch.bfloat16
    assert stored["effssl_checkpoint_bank"] == "bfloat16"
    trained = first.epoch_end[-1]
    assert trained.dtype == torch.float32
    assert torch.equal(stored["state_dict"]["bank.weight"], trained.to(torch.bfloat16))

    resumed = []
    for _ in range(2):
        rec = Recorder()
        resume = f"resume_from_checkpoint='{ckpt}'"
        run_pretrain(data, "checkpoint.bank=bfloat16", resume, callbacks=[rec])
        resumed.append(rec)
    for rec in resumed:
        # exactly the bfloat16-rounded bank, in the run's float32, with its bookkeeping
        assert rec.start["weight"].dtype == torch.float32
        assert torch.equal(rec.start["weight"], trained.to(torch.bfloat16).float())
        assert not torch.equal(rec.start["weight"], trained)
        assert bool(rec.start["filled"]) and len(rec.epoch_end) == 1
        assert torch.equal(rec.start["last_write"], stored["state_dict"]["bank.last_write"])
        assert torch.equal(rec.start["num_updates"], stored["state_dict"]["bank.num_updates"])
    a, b = resumed[0].end, resumed[1].end
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_linear_probe_on_an_exported_folder_equals_the_run_directory(tmp_path, monkeypatch):
    from effssl_plugin.main_linear import linear_probe

    monkeypatch.chdir(tmp_path)
    data = make_image_folder(tmp_path / "six", classes=6, per_class=3)  # top-5 needs >= 5
    run, _ = fake_run(tmp_path, data, "effssl", "resnet10t", low_res=True)
    folder = export_encoder(run, tmp_path / "elsewhere")

    def probe(source: Path) -> dict[str, float]:
        overrides = [
            f"pretrained_feature_extractor={source}",
            "machine=cpu",
            "max_epochs=1",
            "optimizer.batch_size=6",
            "data.num_workers=0",
            "checkpoint.enabled=false",
        ]
        return linear_probe(compose("linear", overrides))

    reference = probe(run)
    assert reference and probe(folder) == reference


def test_a_linear_probe_trains_from_a_run_directory_in_the_fast_tier(tmp_path, monkeypatch):
    """One epoch of effssl-linear in-process on a fake run (the slow test compares the run
    directory with its export): it trains, reports its val metrics, and refuses a run
    without validation data."""
    from effssl_plugin.errors import EffSSLError
    from effssl_plugin.main_linear import linear_probe

    monkeypatch.chdir(tmp_path)
    data = make_image_folder(tmp_path / "six", classes=6, per_class=3)  # top-5 needs >= 5
    run, _ = fake_run(tmp_path, data, "effssl", "resnet10t", low_res=True)
    overrides = [
        f"pretrained_feature_extractor={run}",
        "machine=cpu",
        "max_epochs=1",
        "optimizer.batch_size=6",
        "data.num_workers=0",
        "checkpoint.enabled=false",
    ]
    metrics = linear_probe(compose("linear", overrides))
    assert {"val_acc1", "val_acc5", "val_loss"} <= set(metrics)
    assert 0.0 <= metrics["val_acc1"] <= metrics["val_acc5"] <= 100.0
    args = json.loads((run / "args.json").read_text())
    args["data"]["val_path"] = None
    (run / "args.json").write_text(json.dumps(args))
    with pytest.raises(EffSSLError, match=r"data\.val_path is not set"):
        linear_probe(compose("linear", overrides))


def test_the_linear_config_overrides_the_runs_values_where_it_sets_them():
    from effssl_plugin.main_linear import merge_with_pretrain_cfg

    pre = OmegaConf.create(
        {
            "method": "effssl",
            "backbone": {"name": "timm", "kwargs": {"model_name": "resnet18"}},
            "data": {"dataset": "custom", "num_classes": 10, "val_path": "/v", "fraction": -1},
            "augmentations": [{"crop_size": 32}],
        }
    )
    cfg = OmegaConf.create({"data": {"val_path": None, "fraction": 0.5}, "max_epochs": 3})
    merged = merge_with_pretrain_cfg(cfg, pre)
    assert merged.data.val_path == "/v"  # null: the run's value
    assert merged.data.fraction == 0.5 and merged.max_epochs == 3  # set: the linear config's
    assert "num_classes" not in merged.data and merged.pretrain_method == "effssl"
    assert merged.backbone.kwargs.model_name == "resnet18"
