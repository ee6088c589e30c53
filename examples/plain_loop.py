"""A plain Brevitas QAT loop that gains data-augmented KD with three added lines.

Everything here is what a Brevitas user already has: a float model (the teacher), a student written
with ``brevitas.nn`` layers, and an ordinary training loop. The three lines marked ``[DA-QAKD n/3]``
are the whole change: delete them and uncomment the plain ``cross_entropy`` line, and it is the
original QAT loop again (tests/test_distill_example.py checks exactly that).

    python examples/plain_loop.py                      # W2A4 student, paper loss (1*CE + 2*KD), no DA
    python examples/plain_loop.py --augment trivialaugmentwide
    python examples/plain_loop.py --loss ce            # the same loop as plain QAT (CE only)

Runs on the embedded digits set in seconds on a CPU.
"""

from __future__ import annotations

import argparse

import brevitas.nn as qnn
import torch
import torch.nn.functional as F  # noqa: F401,N812 - used by the plain QAT line
from torch import nn

from daqakd_plugins.data import load_digits, make_loader
from daqakd_plugins.distill import Distiller  # [DA-QAKD 1/3]
from daqakd_plugins.train import evaluate, train_teacher


class QuantStudent(nn.Module):
    """A user's own low-bit network: 2-bit weights, 4-bit activations, 8-bit input and classifier."""

    def __init__(self, width: int = 32, weight_bits: int = 2, act_bits: int = 4) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
        self.conv1 = qnn.QuantConv2d(1, width, 3, padding=1, bias=False, weight_bit_width=weight_bits)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=True)
        self.conv2 = qnn.QuantConv2d(width, width, 3, padding=1, bias=False, weight_bit_width=weight_bits)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = qnn.QuantLinear(width, 10, bias=True, weight_bit_width=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(self.inp(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--loss", default="paper", help="paper (1*CE + 2*KD), sqakd, ce (plain QAT), ...")
    p.add_argument("--augment", default="none", help="a registered augmentation name, or none")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    data = load_digits()
    teacher, _ = train_teacher(data, epochs=15, seed=0, progress=False)  # the user's FP model
    student = QuantStudent()
    opt = torch.optim.Adam(student.parameters(), lr=args.lr)
    loader = make_loader(data.train_x, data.train_y, 64, shuffle=True, seed=args.seed)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * len(loader))

    kd = Distiller(teacher, student, loss=args.loss, augment=args.augment)  # [DA-QAKD 2/3]
    for epoch in range(args.epochs):
        student.train()
        for x, y in loader:
            # loss = F.cross_entropy(student(x), y)
            loss = kd.loss(x, y)  # [DA-QAKD 3/3]
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = evaluate(student, data.test_x, data.test_y)
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}  test accuracy {acc:.4f}")
    teacher_acc = evaluate(teacher, data.test_x, data.test_y)
    print(f"teacher (FP) {teacher_acc:.4f}  student W2A4 {acc:.4f}")
    return {"student": acc, "teacher": teacher_acc}


if __name__ == "__main__":
    main()
