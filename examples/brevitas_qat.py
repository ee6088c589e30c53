"""A plain Brevitas QAT loop, as in Brevitas' own examples, that gains DA-QAKD with three added lines.

The usual Brevitas flow: train a float network, build the same network from ``brevitas.nn`` layers,
load the float weights into it (``strict=False``: the quantizers' scales are new) and fine-tune it
with an ordinary PyTorch loop. The three lines marked ``# DA-QAKD`` are everything daqakd adds:

1. the import;
2. ``Distiller(teacher, model, loss="paper", augment=...)``: the float network becomes the frozen
   teacher, the augmentation is the best one ``rank_augmentations`` finds with that teacher (the
   paper's CMI metric; no training involved), the loss is the paper's 1·CE + 2·τ²·KL (τ = 4);
3. ``loss = kd.loss(images, target)``: augments the batch, runs the frozen teacher and the student on
   it and returns a scalar tensor. It replaces the plain loss: the two upstream lines that
   computed it (the student's forward and the criterion) are commented out and marked
   ``# DA-QAKD: replaced``, so no forward pass is wasted.

So the change to the upstream loop is 3 added lines and 2 commented out. Delete the three
marked lines and uncomment the two replaced ones, and this is plain Brevitas QAT again; tests/test_brevitas_example.py runs
both versions on digits.

    python examples/brevitas_qat.py --epochs 10 --bits 2 --act-bits 4
"""

from __future__ import annotations

import argparse

import brevitas.nn as qnn
import torch
from torch import nn

from daqakd_plugins import Distiller, rank_augmentations  # DA-QAKD
from daqakd_plugins.data import load_digits


class DigitsNet(nn.Module):
    """The float network: two conv/ReLU blocks and two linear layers for 8×8 digits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 4 * 4, 128, bias=True)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


class QuantDigitsNet(DigitsNet):
    """The same network from ``brevitas.nn`` layers, as in Brevitas' examples: an 8-bit input
    quantizer, weights at ``weight_bit_width`` (8 for the classifier), activations at ``act_bit_width``."""

    def __init__(self, weight_bit_width: int = 4, act_bit_width: int = 4, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        self.quant_inp = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, 32, 3, padding=1, bias=False, weight_bit_width=weight_bit_width)
        self.relu1 = qnn.QuantReLU(bit_width=act_bit_width, return_quant_tensor=True)
        self.conv2 = qnn.QuantConv2d(32, 64, 3, padding=1, bias=False, weight_bit_width=weight_bit_width)
        self.relu2 = qnn.QuantReLU(bit_width=act_bit_width, return_quant_tensor=True)
        self.fc1 = qnn.QuantLinear(64 * 4 * 4, 128, bias=True, weight_bit_width=weight_bit_width)
        self.relu3 = qnn.QuantReLU(bit_width=act_bit_width, return_quant_tensor=True)
        self.fc2 = qnn.QuantLinear(128, num_classes, bias=True, weight_bit_width=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.quant_inp(x))


def test(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
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


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="QAT epochs")
    parser.add_argument("--float-epochs", type=int, default=10, help="epochs for the float network")
    parser.add_argument("--bits", type=int, default=2, help="weight bit width")
    parser.add_argument("--act-bits", type=int, default=4, help="activation bit width")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    data = load_digits()  # 8x8 digits embedded in scikit-learn: no download
    train_loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True)
    teacher = train_float(DigitsNet(data.num_classes), train_loader, args.float_epochs)
    print(f"float network: test accuracy {test(teacher, data.test_x, data.test_y):.4f}")

    model = QuantDigitsNet(args.bits, args.act_bits, data.num_classes)
    model.load_state_dict(teacher.state_dict(), strict=False)  # start QAT from the float weights
    kd = Distiller(teacher, model, loss="paper", augment=rank_augmentations(teacher, (data.train_x, data.train_y), progress=False).best)  # DA-QAKD
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss()  # noqa: F841 - the upstream loss, replaced by kd.loss (DA-QAKD)

    acc = test(model, data.test_x, data.test_y)
    print(f"W{args.bits}A{args.act_bits} before QAT: test accuracy {acc:.4f}")
    for epoch in range(args.epochs):
        model.train()
        for images, target in train_loader:
            # output = model(images)  # DA-QAKD: replaced
            # loss = criterion(output, target)  # DA-QAKD: replaced
            loss = kd.loss(images, target)  # DA-QAKD
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        acc = test(model, data.test_x, data.test_y)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.4f}  test accuracy {acc:.4f}", flush=True)
    return acc


if __name__ == "__main__":
    main()
