"""A Model Optimizer QAT script in the shape of its examples/cnn_qat, which gains DA-QAKD with three lines.

Model Optimizer's CNN recipe (examples/cnn_qat in NVIDIA/Model-Optimizer): load the pretrained float
network and evaluate it; ``mtq.quantize(model, mtq.INT8_DEFAULT_CFG, calibrate_fn)`` with a forward loop
over ~512 calibration images (PTQ); fine-tune with the ordinary training loop (SGD, small learning rate,
cosine schedule); ``mto.save(model, path)``, and ``mto.restore(build_model(), path)`` to reload. Here the
"pretrained" network is trained first on the 8×8 digits (no download), and ``--bits 4`` copies the INT8
config with 4-bit integers, as the recipe suggests for other formats.

The three lines marked ``# DA-QAKD`` are everything daqakd adds:

1. the import;
2. ``Distiller(teacher, model, loss="paper", augment=...)``: the pretrained float network, loaded again,
   is the frozen teacher; the augmentation is the best one ``rank_augmentations`` finds with it (the
   paper's CMI metric; no training involved); the loss is the paper's 1·CE + 2·τ²·KL (τ = 4);
3. ``loss = kd.loss(images, target)``: augments the batch, runs the frozen teacher and the quantized
   student on it and returns a scalar tensor. It replaces the plain loss: the two upstream lines that
   computed it (the student's forward and the criterion) are commented out and marked
   ``# DA-QAKD: replaced``, so no forward pass is wasted.

So the change to the upstream loop is 3 added lines and 2 commented out. Delete the three
marked lines and uncomment the two replaced ones, and this is plain Model Optimizer QAT again; tests/test_modelopt_example.py
runs both versions on digits. (Model Optimizer's own ``mtd.convert`` KD gives the same loss from the same
recipe: daqakd_modelopt.kd, docs/backends/tensorrt.md.)

    python examples/modelopt_qat.py --epochs 5 --bits 4
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import modelopt.torch.opt as mto
import modelopt.torch.quantization as mtq
import torch
from torch import nn

from daqakd_plugins import Distiller, rank_augmentations  # DA-QAKD
from daqakd_plugins.data import load_digits


class DigitsNet(nn.Module):
    """Two conv-BN-ReLU blocks, max pooling and a classifier for 8×8 digits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model() -> nn.Module:
    return DigitsNet()


def load_pretrained(path: Path) -> nn.Module:
    model = build_model()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def pretrain(path: Path, loader: torch.utils.data.DataLoader, epochs: int) -> None:
    """Stands in for downloading pretrained weights: trains the float network once and saves it."""
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for images, target in loader:
            loss = nn.functional.cross_entropy(model(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="QAT epochs")
    parser.add_argument("--float-epochs", type=int, default=10, help="epochs for the 'pretrained' float network")
    parser.add_argument("--bits", type=int, default=8, choices=(4, 8), help="8: mtq.INT8_DEFAULT_CFG; 4: its 4-bit copy")
    parser.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate (cosine schedule)")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/modelopt_qat"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    data = load_digits()  # 8x8 digits embedded in scikit-learn: no download
    train_loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True)
    calib_loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=False)
    pretrained = args.output_dir / "float.pt"
    pretrain(pretrained, train_loader, args.float_epochs)

    model = load_pretrained(pretrained)
    print(f"FP32: test accuracy {evaluate(model, data.test_x, data.test_y):.4f}")

    def calibrate_fn(m: nn.Module) -> None:
        m.eval()
        seen = 0
        for x, _ in calib_loader:
            m(x)
            seen += x.size(0)
            if seen >= 512:
                break

    quant_cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    for entry in quant_cfg["quant_cfg"]:
        if isinstance(entry.get("cfg"), dict) and "num_bits" in entry["cfg"]:
            entry["cfg"]["num_bits"] = args.bits
    # 1. PTQ quantization + calibration
    model = mtq.quantize(model, quant_cfg, calibrate_fn)
    print(f"PTQ INT{args.bits}: test accuracy {evaluate(model, data.test_x, data.test_y):.4f}")

    # 2. QAT fine-tuning
    kd = Distiller(teacher := load_pretrained(pretrained).eval().requires_grad_(False), model, loss="paper", augment=rank_augmentations(teacher, (data.train_x, data.train_y), progress=False).best)  # DA-QAKD
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    criterion = nn.CrossEntropyLoss()  # noqa: F841 - the upstream loss, replaced by kd.loss (DA-QAKD)
    acc = 0.0
    for epoch in range(args.epochs):
        model.train()
        for images, target in train_loader:
            # output = model(images)  # DA-QAKD: replaced
            # loss = criterion(output, target)  # DA-QAKD: replaced
            loss = kd.loss(images, target)  # DA-QAKD
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        acc = evaluate(model, data.test_x, data.test_y)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.4f}  test accuracy {acc:.4f}", flush=True)

    # 3. Save final QAT model (weights + quantizer state); 4. reload it for inference
    path = args.output_dir / "modelopt_qat.pth"
    mto.save(model, path)
    restored = mto.restore(build_model(), path)
    restored_acc = evaluate(restored, data.test_x, data.test_y)
    print(f"saved {path}; restored: test accuracy {restored_acc:.4f}")
    assert restored_acc == acc, "mto.restore gave another model"
    return acc


if __name__ == "__main__":
    main()
