"""NVIDIA's TensorRT QAT recipe with pytorch-quantization (its quant_resnet50 tutorial, on digits), which
gains DA-QAKD with three added lines.

The recipe, step by step as in the tutorial: set the input QuantDescriptor (histogram calibration),
build the network between ``quant_modules.initialize()`` and ``deactivate()`` so its Conv2d/Linear
layers are QuantConv2d/QuantLinear, load the float weights, calibrate (``collect_stats`` +
``compute_amax(method="percentile")``), fine-tune briefly with a small learning rate, and export
Q/DQ ONNX for TensorRT (``TensorQuantizer.use_fb_fake_quant = True``, opset 13). The three lines
marked ``# DA-QAKD`` are everything daqakd adds:

1. the import;
2. ``Distiller(teacher, model, loss="paper", augment=...)``: the float network becomes the frozen
   teacher, the augmentation is the best one ``rank_augmentations`` finds with that teacher (the
   paper's CMI metric; no training involved), the loss is the paper's 1·CE + 2·τ²·KL (τ = 4);
3. ``loss = kd.loss(image, target)``: augments the batch, runs the frozen teacher and the student on
   it and returns a scalar tensor. It replaces the plain loss: the two upstream lines that
   computed it (the student's forward and the criterion) are commented out and marked
   ``# DA-QAKD: replaced``, so no forward pass is wasted.

So the change to the upstream loop is 3 added lines and 2 commented out. Delete the three marked lines and
uncomment the two replaced ones, and this is NVIDIA's recipe again; tests/test_tensorrt_example.py runs
both versions on digits. For NVIDIA's own label-free variant (yolov7_qat's layer-wise MSE) use
``loss="layerwise_mse", features=daqakd_pytorch_quantization.supervision_layers(model)``.

    python examples/tensorrt_qat.py --epochs 3 --onnx quant_digits.onnx
    trtexec --onnx=quant_digits.onnx --int8          # on a machine with TensorRT
"""

from __future__ import annotations

import argparse

import torch
from pytorch_quantization import calib, quant_modules
from pytorch_quantization import nn as quant_nn
from pytorch_quantization.tensor_quant import QuantDescriptor
from torch import nn

from daqakd_plugins import Distiller, rank_augmentations  # DA-QAKD
from daqakd_plugins.data import load_digits


class DigitsNet(nn.Module):
    """Two conv/BN/ReLU blocks and a classifier for 8×8 digits (built from torch.nn names, so that
    quant_modules.initialize() can swap in the quantized layers)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def train_float(model: nn.Module, loader: torch.utils.data.DataLoader, epochs: int) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for images, target in loader:
            loss = nn.functional.cross_entropy(model(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval().requires_grad_(False)


def collect_stats(model: nn.Module, data_loader: torch.utils.data.DataLoader, num_batches: int) -> None:
    """Feed data to the network and collect statistics (NVIDIA's tutorial)."""
    for module in model.modules():  # enable calibrators
        if isinstance(module, quant_nn.TensorQuantizer):
            if module._calibrator is not None:
                module.disable_quant()
                module.enable_calib()
            else:
                module.disable()
    for i, (image, _) in enumerate(data_loader):
        model(image)
        if i + 1 >= num_batches:
            break
    for module in model.modules():  # disable calibrators
        if isinstance(module, quant_nn.TensorQuantizer):
            if module._calibrator is not None:
                module.enable_quant()
                module.disable_calib()
            else:
                module.enable()


def compute_amax(model: nn.Module, **kwargs: object) -> None:
    """Load the calibrated amax into every quantizer (NVIDIA's tutorial)."""
    for module in model.modules():
        if isinstance(module, quant_nn.TensorQuantizer) and module._calibrator is not None:
            if isinstance(module._calibrator, calib.MaxCalibrator):
                module.load_calib_amax()
            else:
                module.load_calib_amax(**kwargs)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="QAT fine-tuning epochs")
    parser.add_argument("--float-epochs", type=int, default=10, help="epochs for the float network")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (SGD, cosine)")
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--onnx", default="quant_digits.onnx", help="where to write the Q/DQ ONNX for TensorRT")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    data = load_digits()  # 8x8 digits embedded in scikit-learn: no download
    data_loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True)
    teacher = train_float(DigitsNet(data.num_classes), data_loader, args.float_epochs)
    print(f"float network: test accuracy {evaluate(teacher, data.test_x, data.test_y):.4f}")

    # NVIDIA's recipe: histogram calibration for inputs, then the network built with quantized layers
    quant_desc_input = QuantDescriptor(calib_method="histogram")
    quant_nn.QuantConv2d.set_default_quant_desc_input(quant_desc_input)
    quant_nn.QuantLinear.set_default_quant_desc_input(quant_desc_input)
    quant_modules.initialize()
    try:
        model = DigitsNet(data.num_classes)
    finally:
        quant_modules.deactivate()  # the monkeypatch is global: undo it as soon as the model exists
    model.load_state_dict(teacher.state_dict(), strict=False)  # the quantizers' amax is not in it yet

    model.eval()
    with torch.no_grad():
        collect_stats(model, data_loader, num_batches=args.calib_batches)
        compute_amax(model, method="percentile", percentile=99.99)
    print(f"INT8 after calibration: test accuracy {evaluate(model, data.test_x, data.test_y):.4f}")

    kd = Distiller(teacher, model, loss="paper", augment=rank_augmentations(teacher, (data.train_x, data.train_y), progress=False).best)  # DA-QAKD
    criterion = nn.CrossEntropyLoss()  # noqa: F841 - the upstream loss, replaced by kd.loss (DA-QAKD)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    lr_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, args.epochs * len(data_loader)))
    acc = 0.0
    for epoch in range(args.epochs):
        model.train()
        for image, target in data_loader:
            # output = model(image)  # DA-QAKD: replaced
            # loss = criterion(output, target)  # DA-QAKD: replaced
            loss = kd.loss(image, target)  # DA-QAKD
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
        acc = evaluate(model, data.test_x, data.test_y)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.4f}  test accuracy {acc:.4f}", flush=True)

    # Q/DQ ONNX for TensorRT, as in NVIDIA's recipe
    quant_nn.TensorQuantizer.use_fb_fake_quant = True
    try:
        dummy_input = torch.randn(1, 1, 8, 8)
        torch.onnx.export(model.eval(), dummy_input, args.onnx, opset_version=13, dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        quant_nn.TensorQuantizer.use_fb_fake_quant = False
    print(f"wrote {args.onnx} (TensorRT: trtexec --onnx={args.onnx} --int8)")
    return acc


if __name__ == "__main__":
    main()
