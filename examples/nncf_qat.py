"""NNCF's own quantization-aware training recipe on digits, gaining DA-QAKD with three added lines.

The flow is that of NNCF's examples/quantization_aware_training/torch/resnet18 (NNCF 3.x):

1. a trained float model;
2. ``nncf.quantize(model, nncf.Dataset(calibration_loader, transform_fn))`` (NNCF copies the model:
   the float one stays as it was);
3. the user's own fine-tuning loop on the quantized model (cross-entropy, Adam);
4. save ``{"model_state_dict": ..., "compression_config": nncf.torch.get_config(q)}``, restore with
   ``nncf.torch.load_from_config(copy.deepcopy(model), config)`` + ``load_state_dict``, and export to
   OpenVINO IR with ``ov.convert_model`` + ``ov.save_model(..., compress_to_fp16=False)``, run by OpenVINO.

The three lines marked ``# DA-QAKD`` are everything daqakd adds:

1. the import;
2. ``Distiller(model, quantized_model, loss="paper", augment=...)``: the float model is the frozen
   teacher, the augmentation is the best one ``rank_augmentations`` finds with it (the paper's CMI
   metric; no training involved), the loss is 1·CE + 2·τ²·KL (τ = 4). Users of NNCF 2.x's
   ``knowledge_distillation`` algorithm get that loss back with ``loss="nncf2_kd_softmax"``;
3. ``loss = kd.loss(images, target)``: augments the batch, runs the frozen teacher and the student on it
   and returns a scalar tensor. It replaces the plain loss: the two upstream lines that
   computed it (the student's forward and the criterion) are commented out and marked
   ``# DA-QAKD: replaced``, so no forward pass is wasted.

So the change to the upstream loop is 3 added lines and 2 commented out. Delete the three marked lines and
uncomment the two replaced ones, and this is NNCF's plain QAT again; tests/test_nncf_example.py runs both.

    python examples/nncf_qat.py --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import warnings
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
import torch
from torch import nn
from torch.jit import TracerWarning

from daqakd_plugins import Distiller, rank_augmentations  # DA-QAKD
from daqakd_plugins.data import load_digits

warnings.filterwarnings("ignore", category=TracerWarning)  # as NNCF's example: ov.convert_model traces the model


class DigitsNet(nn.Module):
    """The float network: two conv-BN-ReLU blocks, pooling and a linear classifier for 8×8 digits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(64 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


def validate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
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
    return model.eval()


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="QAT fine-tuning epochs")
    parser.add_argument("--float-epochs", type=int, default=10, help="epochs for the float network")
    parser.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate (NNCF's recipe: 1e-5 for "
                        "a pre-trained ImageNet ResNet; digits from scratch needs more)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="where the checkpoint and the OpenVINO IR go (default: a temp dir)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out or tempfile.mkdtemp(prefix="nncf_qat_"))
    out.mkdir(parents=True, exist_ok=True)

    # Step 1: the float model and the data (8x8 digits embedded in scikit-learn: no download)
    data = load_digits()
    train_loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True)
    calibration_loader = torch.utils.data.DataLoader(data.train, batch_size=1, shuffle=False)
    model = train_float(DigitsNet(data.num_classes), train_loader, args.float_epochs)
    acc_fp32 = validate(model, data.test_x, data.test_y)
    print(f"Accuracy of the FP32 model: {acc_fp32:.4f}")

    # Step 2: quantize with NNCF (post-training quantization initialises the fake quantizers)
    def transform_fn(data_item: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return data_item[0]

    quantization_dataset = nncf.Dataset(calibration_loader, transform_fn)
    quantized_model = nncf.quantize(model, quantization_dataset)
    acc_int8_init = validate(quantized_model, data.test_x, data.test_y)
    print(f"Accuracy of the initialized INT8 model: {acc_int8_init:.4f}")

    # Step 3: fine-tune the quantized model (the user's own training loop)
    kd = Distiller(model, quantized_model, loss="paper", augment=rank_augmentations(model, (data.train_x, data.train_y), progress=False).best)  # DA-QAKD
    criterion = nn.CrossEntropyLoss()  # noqa: F841 - the upstream loss, replaced by kd.loss (DA-QAKD)
    optimizer = torch.optim.Adam(quantized_model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        quantized_model.train()
        for images, target in train_loader:
            # output = quantized_model(images)  # DA-QAKD: replaced
            # loss = criterion(output, target)  # DA-QAKD: replaced
            loss = kd.loss(images, target)  # DA-QAKD
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        acc = validate(quantized_model, data.test_x, data.test_y)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.4f}  INT8 accuracy {acc:.4f}", flush=True)
    acc_int8 = validate(quantized_model, data.test_x, data.test_y)

    # Step 4: save and restore the NNCF way, then export to OpenVINO IR and run it with OpenVINO
    checkpoint = {"model_state_dict": quantized_model.state_dict(),
                  "compression_config": nncf.torch.get_config(quantized_model)}
    torch.save(checkpoint, out / "checkpoint.pth")
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=False)
    restored = nncf.torch.load_from_config(copy.deepcopy(model), checkpoint["compression_config"])
    restored.load_state_dict(checkpoint["model_state_dict"])
    restored.eval()

    example_input = data.test_x[:1]
    ov_model = ov.convert_model(restored.cpu(), example_input=example_input)
    ov.save_model(ov_model, out / "digits_int8.xml", compress_to_fp16=False)
    compiled = ov.Core().compile_model(out / "digits_int8.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = compiled(data.test_x.numpy())[0]
    acc_ov = float(np.mean(np.asarray(logits).argmax(1) == data.test_y.numpy()))
    print(f"Accuracy of the fine-tuned INT8 model: torch {acc_int8:.4f}, OpenVINO IR {acc_ov:.4f} "
          f"({out / 'digits_int8.xml'})")
    return acc_ov


if __name__ == "__main__":
    main()
