"""Your own model (issue 18): architectures as plugins (small_resnet, torchvision:<name>, a factory by
import path), teacher files as plain state_dicts plus --arch, the pickled-model refusal, and the
class-stratified calibration sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from daqakd_plugins.errors import CheckpointError, ModelError
from daqakd_plugins.models import arch_spec, build_model, load_model, save_model

REPO = Path(__file__).resolve().parents[1]


def test_torchvision_models_build_with_num_classes_channels_and_a_small_stem() -> None:
    m = build_model(arch_spec("torchvision:resnet18", num_classes=7, in_channels=1, small_input=True)).eval()
    assert m(torch.rand(2, 1, 8, 8)).shape == (2, 7)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, nn.Identity)
    plain = build_model(arch_spec("torchvision:resnet18", num_classes=7))
    assert plain.conv1.kernel_size == (7, 7) and plain.conv1.in_channels == 3
    mb = build_model(arch_spec("torchvision:mobilenet_v2", num_classes=5, in_channels=1)).eval()
    assert mb(torch.rand(1, 1, 32, 32)).shape == (1, 5)
    with pytest.raises(ModelError, match="torchvision has no classification model 'resnet19'"):
        build_model(arch_spec("torchvision:resnet19", num_classes=7))
    with pytest.raises(ModelError, match=r"unknown architecture 'nosuch'; known: cifar_resnet20, cifar_resnet32, cifar_resnet56, small_resnet, timm:, torchvision:, vgg8"):
        build_model(arch_spec("nosuch", num_classes=3))


def test_a_factory_by_import_path(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_models.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(num_classes, in_channels, hidden=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = build_model(arch_spec("my_models:tiny", num_classes=4, in_channels=1, hidden=3))
    assert m[1].out_features == 3 and m(torch.rand(2, 1, 8, 8)).shape == (2, 4)
    with pytest.raises(ModelError, match="has no callable 'nope'"):
        build_model(arch_spec("my_models:nope", num_classes=4))


def test_plain_state_dict_with_arch_and_pickled_model_refusal(tmp_path) -> None:
    spec = arch_spec("torchvision:resnet18", num_classes=10, in_channels=1, small_input=True)
    torch.manual_seed(0)
    m = build_model(spec).eval()
    torch.save(m.state_dict(), tmp_path / "weights.pt")
    loaded, meta = load_model(tmp_path / "weights.pt", arch=spec)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(loaded(x), m(x)) and meta["arch"] == spec
    with pytest.raises(ModelError, match=r"do not fit 'torchvision:resnet18' with num_classes=7.*--num-classes"):
        load_model(tmp_path / "weights.pt", arch={**spec, "num_classes": 7})
    torch.save(m, tmp_path / "whole.pt")  # a pickled nn.Module
    with pytest.raises(CheckpointError, match=r"pickled Python object.*does not unpickle.*\(1\) torch\.save\(model\.state_dict\(\)"):
        load_model(tmp_path / "whole.pt")
    save_model(tmp_path / "daqakd.pt", m, spec)  # a daqakd file names its architecture itself
    assert load_model(tmp_path / "daqakd.pt")[1]["arch"] == spec
    with pytest.raises(ModelError, match="was saved as 'torchvision:resnet18' but --arch says 'small_resnet'"):
        load_model(tmp_path / "daqakd.pt", arch=arch_spec("small_resnet", num_classes=10))


def test_calibration_sample_is_class_stratified_and_seeded() -> None:
    from daqakd_plugins.data import calibration_sample

    labels = torch.arange(10).repeat_interleave(50)  # sorted by class, as an ImageFolder split is
    idx = calibration_sample(labels, 100, seed=3)
    assert torch.bincount(labels[idx], minlength=10).tolist() == [10] * 10
    assert torch.equal(idx, calibration_sample(labels, 100, seed=3)) and not torch.equal(idx, calibration_sample(labels, 100, seed=4))
    assert len(set(labels[idx[:20]].tolist())) > 3  # batches mix classes
    small = torch.tensor([0] * 3 + [1] * 40)
    assert torch.bincount(small[calibration_sample(small, 20, seed=0)]).tolist() == [3, 17]


def _png_folder(root: Path, classes: int = 3, per_class: int = 16) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(rng.normal(60 + 70 * c, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i}.png")


@pytest.mark.slow
def test_cli_distills_a_torchvision_student_from_a_plain_state_dict(tmp_path) -> None:
    """The issue's acceptance path, small: ImageFolder, --arch torchvision:mobilenet_v2, a plain
    state_dict teacher, exports; then load_student in a fresh process; the calibration counts."""
    _png_folder(tmp_path / "data")
    spec = arch_spec("torchvision:mobilenet_v2", num_classes=3, in_channels=3)
    torch.manual_seed(0)
    torch.save(build_model(spec).state_dict(), tmp_path / "weights.pt")
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "daqakd_plugins", "distill", "--data", str(tmp_path / "data"),
                        "--arch", "torchvision:mobilenet_v2", "--teacher", str(tmp_path / "weights.pt"),
                        "--bits", "4", "--epochs", "1", "--augment", "none", "--batch-size", "8",
                        "--calib-batches", "2", "--out", str(out)], capture_output=True, text=True, env=env,
                       timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["per_class"] == {"class0": 6, "class1": 5, "class2": 5}  # 16 images, stratified
    assert [e["format"] for e in report["export"]["student"]] == ["onnx-qcdq", "qonnx"]
    assert all(e["accuracy_abs_diff"] <= 0.005 for e in report["export"]["student"])
    code = ("import sys, torch; from daqakd_plugins.distill import load_student; "
            f"s, meta = load_student({str(out)!r}); "
            "print(meta['quant_config']['weight_bits'], type(s).__name__, tuple(s(torch.rand(2, 3, 16, 16)).shape))")
    r2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stdout.split()[0] == "4" and r2.stdout.strip().endswith("(2, 3)")


def test_backend_options_from_the_command_line() -> None:
    from daqakd_plugins.commands._common import parse_backend_options
    from daqakd_plugins.distill import DistillConfig
    from daqakd_plugins.errors import ConfigError

    opts = parse_backend_options(["float_layers=SiLU", "input_bits=8", "merge_bn=false", "float_layers2=GELU,SiLU"])
    assert opts == {"float_layers": "SiLU", "input_bits": 8, "merge_bn": False, "float_layers2": ["GELU", "SiLU"]}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_backend_options(["float_layers"])
    cfg = DistillConfig(out="x", backend_options={"float_layers": "SiLU"})  # checked before any work
    assert cfg.quant_config().options == {"float_layers": "SiLU"}
    with pytest.raises(ConfigError, match=r"unknown brevitas option\(s\) \['float_layer'\]"):
        DistillConfig(out="x", backend_options={"float_layer": "SiLU"})


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet18", "shufflenet_v2_x0_5"])
def test_support_matrix_fast_subset(model: str) -> None:
    """Two torchvision models through benchmarks/model_matrix.py's cell on Brevitas (16x16 images):
    quantize, calibrate, KD steps, export, and the exported QCDQ file's logits next to torch's.
    ShuffleNet's channel split needed QuantTensor.chunk, which Brevitas lacks (the adapter adds it)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from model_matrix import one_cell
    finally:
        sys.path.pop(0)
    row = one_cell(model, "brevitas", size=16, batch=8, kd_steps=2, formats=("onnx-qcdq",))
    assert row["ok"], row.get("error")
    (qcdq,) = row["exports"]
    assert qcdq["format"] == "onnx-qcdq" and qcdq["argmax_agreement"] == 1.0
