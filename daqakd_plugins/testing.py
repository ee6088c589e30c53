"""The conformance kit: one set of checks every backend adapter must pass, in-tree or third-party.

Like scikit-learn's ``parametrize_with_checks``, it turns into pytest parameters, one per
(backend, bit widths, check), each marked ``conformance`` and named ``<backend>-W<w>A<a>-<check>``::

    # tests/test_my_adapter.py (in the adapter's own repository)
    from daqakd_plugins.testing import parametrize_with_checks

    @parametrize_with_checks(["mybackend"])
    def test_conformance(backend, bits, check):
        check(backend, bits)

    $ pytest -m conformance -k mybackend

Every check runs the real backend on the embedded digits set (1,797 8x8 images) with a small
SmallResNet teacher trained once per process (about 2 s), and takes seconds. What they prove is the
contract in docs/adapters.md: quantize leaves the float model untouched and every quantizer has the
requested bits and a bit plan (first/last at 8, a per-layer override) shows in them, through calibration and
save → restore; calibration sets ranges and is repeatable; a short KD fine-tune moves the student and
does not diverge; save → restore gives identical outputs (on SmallResNet and on torchvision's
ShuffleNet-V2 and MobileNetV2); SIGKILL mid-run + resume equals an uninterrupted run bitwise, and so does
training k steps, checkpointing, restoring in a fresh process and training k more (an ImageFolder read
by a worker with a per-sample torchvision policy and CutMix); every export format opens in its own runtime, matches torch's accuracy
within 0.5 pp and (for onnxruntime) has no U8S8 pattern; bits outside the range and a missing backend
give the documented errors.
"""

from __future__ import annotations

import atexit
import copy
import functools
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["parametrize_with_checks", "checks", "Digits", "digits", "ACCURACY_TOLERANCE", "TORCHVISION_MODELS",
           "torchvision_float_model", "make_image_folder"]

#: exported accuracy must equal torch's within this (a fraction: 0.005 = 0.5 pp)
ACCURACY_TOLERANCE = 0.005
Check = Callable[[str, tuple[int, int]], None]


@dataclass(frozen=True)
class Digits:
    """The data and teacher every check shares: the embedded digits split and a trained SmallResNet."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    teacher: nn.Module
    arch: dict[str, Any]
    teacher_file: Path


@functools.lru_cache(maxsize=1)
def digits() -> Digits:
    """Trained once per process (15 epochs, seed 0, ≥ 99 % test accuracy, ~2 s on one CPU thread)."""
    from .data import load_digits
    from .models import save_model
    from .train import train_teacher

    d = load_digits()
    teacher, meta = train_teacher(d, epochs=15, seed=0, progress=False)
    for p in teacher.parameters():
        p.requires_grad_(False)
    tmp = tempfile.mkdtemp(prefix="daqakd-conformance-")
    atexit.register(shutil.rmtree, tmp, True)  # one teacher file per process; gone when the process ends
    path = Path(tmp) / "teacher.pt"
    save_model(path, teacher, meta["arch"], meta)
    return Digits(d.train_x, d.train_y, d.test_x, d.test_y, teacher.eval(), dict(meta["arch"]), path)


def _config(bits: tuple[int, int], **kw: Any) -> Any:
    from .config import QuantConfig

    return QuantConfig(weight_bits=bits[0], act_bits=bits[1], **kw)


def _student(backend: str, bits: tuple[int, int], *, calibrate: bool = True, config: Any = None) -> nn.Module:
    from . import backends

    d = digits()
    return backends.quantize(copy.deepcopy(d.teacher), backend, config or _config(bits), example_input=d.train_x[:8],
                             calib_data=d.train_x[:512] if calibrate else None)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    from .train import evaluate

    return evaluate(model, x, y)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from .models import as_tensor

    model.eval()
    with torch.no_grad():
        return as_tensor(model(x)).detach().clone()


# --------------------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------------------
def check_quantize(backend: str, bits: tuple[int, int]) -> None:
    """Quantize leaves the float model untouched, and every weight / activation quantizer has the
    requested bits (input/output quantizers an adapter adds at the edges may have their own)."""
    from . import backends
    from .backends import describe_quantizers

    d = digits()
    fp = copy.deepcopy(d.teacher)
    before = {k: v.clone() for k, v in fp.state_dict().items()}
    grads = [p.requires_grad for p in fp.parameters()]
    student = backends.quantize(fp, backend, _config(bits, first_last=None), example_input=d.train_x[:8],
                                calib_data=d.train_x[:512])  # uniform: check_bit_plan covers per-layer widths
    assert student is not fp, "quantize must return a new model, not the float one"
    after = fp.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"quantize modified the float model in place: {changed[:5]}"
    assert [p.requires_grad for p in fp.parameters()] == grads, "quantize changed the float model's requires_grad"
    assert _accuracy(fp, d.test_x, d.test_y) == _accuracy(d.teacher, d.test_x, d.test_y)
    qs = describe_quantizers(student)
    weights = [q for q in qs if q.role == "weight"]
    acts = [q for q in qs if q.role == "activation"]
    assert weights, f"{backend}: describe_quantizers lists no weight quantizer"
    assert acts, f"{backend}: describe_quantizers lists no activation quantizer"
    wrong = [(q.name, q.bits) for q in weights if q.bits != bits[0]] + [(q.name, q.bits) for q in acts if q.bits != bits[1]]
    assert not wrong, f"{backend} W{bits[0]}A{bits[1]}: quantizers with other bit widths: {wrong[:6]}"
    assert all(p.requires_grad for p in student.parameters() if p.is_floating_point()), \
        "the student's parameters must be trainable (QAT), even when the teacher's were frozen"


def check_calibration(backend: str, bits: tuple[int, int]) -> None:
    """Calibration sets ranges (other data, other outputs) and is repeatable: calibrating again on the
    first data gives the first outputs exactly (re-estimated, not accumulated)."""
    from . import backends

    d = digits()
    s = _student(backend, bits, calibrate=False)
    x = d.train_x[:512]
    backends.calibrate(s, backend, x, num_batches=8, config=_config(bits))
    o1 = _outputs(s, d.test_x[:128])
    backends.calibrate(s, backend, x * 3.0, num_batches=8, config=_config(bits))
    o3 = _outputs(s, d.test_x[:128])
    assert not torch.equal(o1, o3), "calibrating on other data (x·3) changed no output: ranges were not set"
    backends.calibrate(s, backend, x, num_batches=8, config=_config(bits))
    o1b = _outputs(s, d.test_x[:128])
    assert torch.equal(o1, o1b), (
        f"calibrating twice on the same data gave other outputs (max diff {float((o1 - o1b).abs().max()):.3g}): "
        "calibration must re-estimate ranges, not accumulate them")


def check_kd_finetune(backend: str, bits: tuple[int, int]) -> None:
    """A short KD fine-tune through the core Distiller moves the student's weights, keeps the loss
    finite and does not wreck accuracy."""
    from .data import make_loader
    from .distill import Distiller

    d = digits()
    s = _student(backend, bits)
    acc0 = _accuracy(s, d.test_x, d.test_y)
    before = {k: v.detach().clone() for k, v in s.state_dict().items() if v.is_floating_point()}
    kd = Distiller(d.teacher, s, loss="paper")
    opt = torch.optim.Adam([p for p in s.parameters() if p.requires_grad], lr=1e-4)
    torch.manual_seed(0)
    losses = []
    s.train()
    for i, (xb, yb) in enumerate(make_loader(d.train_x, d.train_y, 64, shuffle=True, seed=0)):
        if i == 12:
            break
        loss = kd.loss(xb, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    kd.remove_hooks()
    assert all(torch.isfinite(torch.tensor(losses))), f"KD loss went non-finite: {losses}"
    moved = [k for k, v in s.state_dict().items() if k in before and not torch.equal(before[k], v)]
    assert moved, "12 KD steps changed no floating-point state of the student: gradients do not reach it"
    acc1 = _accuracy(s, d.test_x, d.test_y)
    assert acc1 >= acc0 - 0.05, f"12 KD steps at lr 1e-4 dropped accuracy from {acc0:.3f} to {acc1:.3f}"


def check_save_restore(backend: str, bits: tuple[int, int]) -> None:
    """save → (a weights_only round trip) → restore into a freshly built float model (other weights)
    gives bitwise identical outputs."""
    from . import backends
    from .models import build_model

    d = digits()
    s = _student(backend, bits)
    cfg = _config(bits)
    payload = backends.save_student(s, backend, cfg)
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)  # the payload must be weights_only-safe
    torch.manual_seed(123)
    fresh = build_model(d.arch)  # random weights: restore must not depend on them
    r = backends.restore_student(fresh, backend, cfg, payload, example_input=d.train_x[:8])
    a, b = _outputs(s, d.test_x), _outputs(r, d.test_x)
    assert torch.equal(a, b), f"restored student differs from the saved one (max diff {float((a - b).abs().max()):.3g})"


def check_resume(backend: str, bits: tuple[int, int]) -> None:
    """A real ``daqakd distill`` SIGKILLed after its first checkpoint and resumed ends with the same
    student (bitwise) and the same accuracies as an uninterrupted run, with a random augmentation."""
    d = digits()
    with tempfile.TemporaryDirectory(prefix="daqakd-resume-") as tmp:
        full, killed = Path(tmp) / "full", Path(tmp) / "killed"
        epochs = 3

        def cmd(out: Path) -> list[str]:
            return [sys.executable, "-m", "daqakd_plugins", "distill", "--backend", backend, "--bits", str(bits[0]),
                    "--act-bits", str(bits[1]), "--data", "digits", "--teacher", str(d.teacher_file),
                    "--epochs", str(epochs), "--augment", "trivialaugmentwide", "--train-per-class", "20",
                    "--batch-size", "16", "--lr", "1e-3", "--seed", "3", "--no-export", "--out", str(out)]

        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONHASHSEED": "0"}
        r = subprocess.run(cmd(full), env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        proc = subprocess.Popen(cmd(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ck = killed / "checkpoint.pt"
        deadline = time.monotonic() + 900
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-training (rc {proc.returncode}): {err[-2000:]!r}"
        saved = torch.load(ck, map_location="cpu", weights_only=True)
        assert 1 <= saved["epoch"] < epochs
        r2 = subprocess.run([sys.executable, "-m", "daqakd_plugins", "distill", "--resume", str(killed), "--no-export"],
                            env=env, capture_output=True, text=True, timeout=900)
        assert r2.returncode == 0, r2.stderr[-3000:]
        from .distill import load_student

        a, _ = load_student(full)
        b, _ = load_student(killed)
        ya, yb = _outputs(a, d.test_x), _outputs(b, d.test_x)
        assert torch.equal(ya, yb), "the resumed student computes other outputs than the uninterrupted one"
        sa, sb = a.state_dict(), b.state_dict()
        diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not diff, f"resumed weights differ from the uninterrupted run in {diff[:5]}"
        import json

        ra = json.loads((full / "report.json").read_text())
        rb = json.loads((killed / "report.json").read_text())
        assert rb["resumed_from_epoch"] == saved["epoch"] and ra["resumed_from_epoch"] is None
        assert [h["test_accuracy"] for h in ra["history"]] == [h["test_accuracy"] for h in rb["history"]]
        assert ra["accuracy"] == rb["accuracy"] and rb["augmentation"] == "trivialaugmentwide"


# --------------------------------------------------------------------------------------------------
# torchvision models: channel shuffles/splits (ShuffleNet-V2) and depthwise convolutions (MobileNetV2)
# --------------------------------------------------------------------------------------------------
#: the torchvision architectures the round-trip and resume checks run on (``small_input``: 32x32 inputs)
TORCHVISION_MODELS = ("shufflenet_v2_x0_5", "mobilenet_v2")
_TV_CLASSES, _TV_SIZE = 3, 32


def _tv_arch(name: str) -> dict[str, Any]:
    from .models import arch_spec

    return arch_spec(f"torchvision:{name}", num_classes=_TV_CLASSES, small_input=True)


def _tv_images(n: int = 16, seed: int = 0) -> torch.Tensor:
    """``n`` 3x32x32 images in [0, 1]: a smooth per-image colour field plus noise (image-like statistics)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=_TV_SIZE, mode="bilinear",
                                           align_corners=False)
    return (0.8 * base + 0.2 * torch.rand(n, 3, _TV_SIZE, _TV_SIZE, generator=g)).clamp(0, 1)


def torchvision_float_model(name: str, seed: int = 0) -> nn.Module:
    """A torchvision ``name`` (small-input stem, 3 classes) with random weights from ``seed`` and BatchNorm
    running statistics measured on :func:`_tv_images`, in eval mode. The statistics matter: with
    torchvision's initial ones (mean 0, var 1) the activations of a random network shrink towards 0, so
    quantizing one activation or not changes no logit and a broken round trip would pass."""
    from .models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(_tv_arch(name))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches below
    model.train()
    with torch.no_grad():
        model(_tv_images(32, seed=1))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def _save_restore_torchvision(name: str, backend: str, bits: tuple[int, int]) -> None:
    from . import backends

    x = _tv_images(16)
    cfg = _config(bits)
    student = backends.quantize(torchvision_float_model(name), backend, cfg, example_input=x[:4], calib_data=x)
    payload = backends.save_student(student, backend, cfg)
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    fresh = torchvision_float_model(name, seed=123)  # other weights: restore must not depend on them
    restored = backends.restore_student(fresh, backend, cfg, payload, example_input=x[:4])
    a, b = _outputs(student, x), _outputs(restored, x)
    assert float(a.std()) > 0, f"{name}: the student's logits are constant; the check would prove nothing"
    assert torch.equal(a, b), (
        f"{backend} W{bits[0]}A{bits[1]} {name}: the restored student differs from the saved one (max |logit diff| "
        f"{float((a - b).abs().max()):.3g} on logits up to {float(a.abs().max()):.3g}); the student has state "
        "that save/restore does not carry (see docs/adapters.md, daqakd_save_student)")


def check_save_restore_shufflenet(backend: str, bits: tuple[int, int]) -> None:
    """save → weights_only round trip → restore gives bitwise identical outputs on torchvision's
    ShuffleNet-V2 x0.5 (small input, 3x32x32): channel splits, concatenations and shuffles."""
    _save_restore_torchvision("shufflenet_v2_x0_5", backend, bits)


def check_save_restore_mobilenet(backend: str, bits: tuple[int, int]) -> None:
    """The same round trip on torchvision's MobileNetV2 (small input): depthwise convolutions, ReLU6,
    residual adds."""
    _save_restore_torchvision("mobilenet_v2", backend, bits)


def make_image_folder(root: str | Path, *, classes: int = _TV_CLASSES, train_per_class: int = 8,
                      test_per_class: int = 2, size: int = _TV_SIZE, seed: int = 0) -> Path:
    """A tiny ImageFolder (``root/train/<class>/*.png``, ``root/test/<class>/*.png``) of generated RGB
    images: a class colour plus smooth noise, so a model can tell the classes apart."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            colour = np.array([(c * 97) % 256, (c * 53 + 80) % 256, (c * 191 + 40) % 256], dtype=np.float64)
            for i in range(n):
                noise = rng.normal(0, 40, size=(size // 4, size // 4, 3)).repeat(4, 0).repeat(4, 1)
                img = np.clip(colour + noise + rng.normal(0, 10, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


#: the resume check: model, batch size, augmentation (a per-sample torchvision policy + a batch mixer)
_RESUME_MODEL, _RESUME_BATCH, _RESUME_AUGMENT, _RESUME_LR = "shufflenet_v2_x0_5", 8, "trivialaugmentwide+cutmix", 1e-4


def _resume_leg(spec: dict[str, Any]) -> tuple[nn.Module, list[float], torch.Tensor | None]:
    """One leg of :func:`check_resume_steps`, as ``daqakd distill`` runs it: build the student (quantize +
    calibrate, or restore from ``spec['resume']``), train epochs ``[start, stop)`` of the ImageFolder through
    ``kd.loader`` (one worker), and with ``spec['save']`` write a checkpoint after epoch ``spec['save_after']``
    and go on, as the pipeline does after every epoch. Returns the student, the step losses and the logits
    right after the restore (a restored student) or right after the checkpoint was written (a saving one)."""
    from . import backends
    from .data import load_image_folder
    from .distill import Distiller
    from .distill.checkpoint import FORMAT, atomic_save, capture_rng, load_checkpoint, restore_rng
    from .train import seed_everything

    backend, bits = spec["backend"], (int(spec["bits"][0]), int(spec["bits"][1]))
    cfg = _config(bits)
    seed_everything(0)
    bundle = load_image_folder(spec["data"])
    x = torch.stack([bundle.train[i][0] for i in range(_RESUME_BATCH)])
    teacher = torchvision_float_model(_RESUME_MODEL)
    for p in teacher.parameters():
        p.requires_grad_(False)
    ck = load_checkpoint(spec["resume"]) if spec.get("resume") else None
    if ck is None:
        student = backends.quantize(torchvision_float_model(_RESUME_MODEL), backend, cfg, example_input=x,
                                    calib_data=x)
    else:
        student = backends.restore_student(torchvision_float_model(_RESUME_MODEL, seed=123), backend, cfg,
                                           ck["student"], example_input=x)
    restored = _outputs(student, _tv_images(16)) if ck is not None else None
    for p in student.parameters():
        p.requires_grad_(True)
    kd = Distiller(teacher, student, loss="paper", augment=_RESUME_AUGMENT, num_classes=bundle.num_classes)
    loader = kd.loader(bundle.training_set("center"), batch_size=_RESUME_BATCH, workers=1, seed=3)
    opt = torch.optim.Adam([*student.parameters(), *kd.parameters()], lr=_RESUME_LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2 * len(loader))  # over both halves
    if ck is not None:
        kd.load_state_dict(ck["distiller"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        restore_rng(ck["rng"])
    losses: list[float] = []
    for epoch in range(spec["start"], spec["stop"]):
        student.train()
        loader.set_epoch(epoch)
        for xb, yb in loader:
            loss = kd.loss(xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        if spec.get("save") and epoch + 1 == spec["save_after"]:
            atomic_save({"format": FORMAT, "epoch": epoch + 1, "student": backends.save_student(student, backend, cfg),
                         "distiller": kd.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "rng": capture_rng()}, spec["save"])
            restored = _outputs(student, _tv_images(16))  # the logits the checkpoint must give back
    kd.remove_hooks()
    return student, losses, restored


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _resume_child(spec_file: str) -> None:
    """The fresh process of :func:`check_resume_steps`: restore, train the second half, save the result."""
    import json

    spec = json.loads(Path(spec_file).read_text())
    student, losses, restored = _resume_leg(spec)
    torch.save({"losses": losses, "state": _state_tensors(student), "outputs": _outputs(student, _tv_images(16)),
                "restored": restored}, spec["result"])


def check_resume_steps(backend: str, bits: tuple[int, int]) -> None:
    """Train k steps, checkpoint, restore in a fresh process and train k more: the same losses, weights and
    outputs as 2k uninterrupted steps, bitwise on CPU. ShuffleNet-V2 x0.5 (small input) on a generated
    ImageFolder read by one DataLoader worker that runs TrivialAugmentWide per image and CutMix per
    batch, Adam with a cosine schedule: every piece of state a resumed ``daqakd distill`` must carry."""
    import json

    with tempfile.TemporaryDirectory(prefix="daqakd-resume-steps-") as tmp:
        data = make_image_folder(Path(tmp) / "data", train_per_class=4)  # 12 images: 2 steps of 8 (and 4) per epoch
        base = {"backend": backend, "bits": list(bits), "data": str(data), "stop": 2}
        ck = Path(tmp) / "checkpoint.pt"
        # the uninterrupted run checkpoints after its first epoch and goes on, as `daqakd distill` does
        full, full_losses, saved = _resume_leg({**base, "start": 0, "save": str(ck), "save_after": 1})
        assert saved is not None
        first = full_losses[: len(full_losses) // 2]
        spec = {**base, "start": 1, "resume": str(ck), "result": str(Path(tmp) / "result.pt")}
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        code = "import sys; from daqakd_plugins.testing import _resume_child; _resume_child(sys.argv[1])"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
        r = subprocess.run([sys.executable, "-c", code, str(Path(tmp) / "spec.json")], env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        res = torch.load(str(spec["result"]), weights_only=True)
        k = len(first)
        assert k >= 2 and len(full_losses) == 2 * k, (k, full_losses)
        assert torch.equal(saved, res["restored"]), (
            f"{backend} W{bits[0]}A{bits[1]}: the student restored from the checkpoint in a fresh process computes "
            f"other logits than the one that was saved (max diff {float((saved - res['restored']).abs().max()):.3g})")
        assert first + res["losses"] == full_losses, (
            f"{backend} W{bits[0]}A{bits[1]}: losses of {k} steps + checkpoint + {k} steps in a fresh process "
            f"{first + res['losses']} differ from {2 * k} uninterrupted steps {full_losses}")
        state = _state_tensors(full)
        diff = [n for n in state if n not in res["state"] or not torch.equal(state[n], res["state"][n])]
        assert not diff, f"{backend} W{bits[0]}A{bits[1]}: the resumed student's state differs in {diff[:5]}"
        a = _outputs(full, _tv_images(16))
        assert float(a.std(0).max()) > 0, f"{backend}: the trained student's logits do not depend on the input"
        assert torch.equal(a, res["outputs"]), (
            f"{backend} W{bits[0]}A{bits[1]}: the resumed student computes other logits (max diff "
            f"{float((a - res['outputs']).abs().max()):.3g})")


def check_exports(backend: str, bits: tuple[int, int]) -> None:
    """Every export format opens in its own runtime and matches torch's accuracy within 0.5 pp on the
    digits test split; every onnxruntime ONNX file is free of the U8S8 pattern (host-independent)."""
    import onnx

    from . import backends
    from .onnx_qdq import u8s8_hazards
    from .plugins import get_backend
    from .runtime import accuracy_of

    d = digits()
    s = _student(backend, bits).eval()
    ref = _accuracy(s, d.test_x, d.test_y)
    with tempfile.TemporaryDirectory(prefix="daqakd-export-") as tmp:
        exported = backends.export(s, backend, example_input=d.test_x[:1], out_dir=tmp)
        assert exported, f"{backend} exported nothing"
        declared = set(get_backend(backend).export_formats)
        for e in exported:
            assert e.format in declared, f"format {e.format!r} is not among the registered {sorted(declared)}"
            assert Path(e.path).exists() and e.size_bytes > 0
            acc = accuracy_of(e.predict, d.test_x, d.test_y)
            assert abs(acc - ref) <= ACCURACY_TOLERANCE, f"{e.format} in {e.runtime}: {acc:.4f} vs torch {ref:.4f}"
            if e.u8s8_guard:
                assert u8s8_hazards(onnx.load(str(e.path))) == []


def check_bad_bits(backend: str, bits: tuple[int, int]) -> None:
    """Bits outside the registered range give a ConfigError naming the range, before the adapter runs."""
    import pytest

    from . import backends
    from .errors import ConfigError
    from .plugins import get_backend

    info = get_backend(backend)
    d = digits()
    lo, hi = info.weight_bits
    bad = [(hi + 1, bits[1])] + ([(lo - 1, bits[1])] if lo > 1 else [])
    alo, ahi = info.act_bits
    bad += [(bits[0], ahi + 1)] + ([(bits[0], alo - 1)] if alo > 1 else [])
    for w, a in bad:
        if not (1 <= w <= 16 and 1 <= a <= 16):
            continue
        with pytest.raises(ConfigError, match=r"outside what backend .* supports \(\d+\.\.\d+\)"):
            backends.quantize(copy.deepcopy(d.teacher), backend, _config((w, a)), example_input=d.train_x[:2])
    inside = [(w, a) for w in range(lo, hi + 1) for a in range(alo, ahi + 1) if (w, a) not in info.bit_pairs]
    if info.bit_pairs and inside:  # a pair inside the ranges that the backend does not support
        with pytest.raises(ConfigError, match=r"not a bit combination backend .* supports"):
            backends.quantize(copy.deepcopy(d.teacher), backend, _config(inside[0]), example_input=d.train_x[:2])


def check_missing_backend(backend: str, bits: tuple[int, int]) -> None:
    """With the backend's package not importable, quantize raises BackendUnavailableError whose message
    is the exact install command the adapter registered."""
    from .plugins import get_backend

    info = get_backend(backend)
    code = textwrap.dedent(f"""
        import sys
        sys.modules[{info.module!r}] = None  # as if it were not installed
        import torch
        from daqakd_plugins import backends
        from daqakd_plugins.config import QuantConfig
        from daqakd_plugins.errors import BackendUnavailableError
        try:
            backends.quantize(torch.nn.Linear(2, 2), {backend!r}, QuantConfig(weight_bits={bits[0]}, act_bits={bits[1]}),
                              example_input=torch.zeros(1, 2))
        except BackendUnavailableError as exc:
            print("MSG", exc)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MSG" in r.stdout and info.install in r.stdout, r.stdout


def check_paper_architecture(backend: str, bits: tuple[int, int]) -> None:
    """The paper's CIFAR student, ``cifar_resnet20`` (19 3x3 convolutions, two projection shortcuts, a linear
    head, 32x32 RGB inputs): quantized with a weight quantizer at the requested bits on every convolution
    and the head, trained by one KD step, and saved → restored with bitwise identical outputs."""
    from . import backends
    from .backends import describe_quantizers
    from .distill import Distiller
    from .models import arch_spec, build_model

    arch = arch_spec("cifar_resnet20", num_classes=10, in_channels=3)
    torch.manual_seed(0)
    teacher = build_model(arch).eval()
    x = torch.rand(16, 3, 32, 32)
    cfg = _config(bits)
    s = backends.quantize(copy.deepcopy(teacher), backend, cfg, example_input=x[:4], calib_data=[x])
    backends.calibrate(s, backend, [x], config=cfg)
    layers = [n for n, m in teacher.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 19 + 2 + 1, f"cifar_resnet20 should have 22 conv/linear layers, has {len(layers)}"
    wq = [q for q in describe_quantizers(s) if q.role == "weight"]
    assert len(wq) >= len(layers), f"{len(wq)} weight quantizers for {len(layers)} conv/linear layers"
    assert {q.bits for q in wq} <= {bits[0], 8}, f"weight bits {sorted({q.bits for q in wq})}"
    kd = Distiller(teacher, s, loss="paper", augment="none", base_augment="crop-flip")
    opt = torch.optim.SGD([p for p in s.parameters() if p.requires_grad], lr=1e-3)
    s.train()
    loss = kd.loss(x, torch.arange(16) % 10, seed=0)
    opt.zero_grad()
    loss.backward()
    opt.step()
    kd.remove_hooks()
    assert torch.isfinite(loss), "the KD loss of the quantized cifar_resnet20 is not finite"
    payload = backends.save_student(s, backend, cfg)
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    torch.manual_seed(1)
    r = backends.restore_student(build_model(arch), backend, cfg, torch.load(buf, weights_only=True), example_input=x[:4])
    a, b = _outputs(s, x), _outputs(r, x)
    assert a.shape == (16, 10), f"outputs of shape {tuple(a.shape)}"
    assert torch.equal(a, b), f"restored cifar_resnet20 differs from the saved one (max diff {float((a - b).abs().max()):.3g})"


#: every check, in the order a newcomer meets the contract
def _plan_width(backend: str, bits: tuple[int, int]) -> int:
    """A per-layer weight width the backend can set that differs from ``bits``' (8, else its lowest)."""
    from .plugins import get_backend

    info = get_backend(backend)
    allowed = info.layer_weight_bits or tuple(range(max(2, info.weight_bits[0]), info.weight_bits[1] + 1))
    return 8 if bits[0] != 8 and 8 in allowed else min(b for b in allowed if b != bits[0])


def _planned_bits(backend: str, model: nn.Module) -> dict[tuple[str, str], set[int]]:
    """``{(layer, role): bits}`` of the described quantizers that name their layer."""
    from .backends import describe_quantizers

    out: dict[tuple[str, str], set[int]] = {}
    for q in describe_quantizers(model):
        if q.layer and q.role in ("weight", "activation"):
            out.setdefault((q.layer, q.role), set()).add(q.bits)
    return out


def check_bit_plan(backend: str, bits: tuple[int, int]) -> None:
    """A bit plan is honoured: the default convention (first and last weight layer at 8 bits) plus an
    explicit ``layer_bits`` on an inner layer show in the described quantizers of every planned layer; the
    plan survives calibration and save → restore (identical outputs and widths). A backend whose adapter
    takes no plans must refuse ``layer_bits`` and quantize uniformly by default."""
    from . import backends
    from .errors import ConfigError
    from .plugins import get_backend

    d = digits()
    x = d.train_x[:8]
    if not get_backend(backend).bit_plans:
        wq = [q for q in backends.describe_quantizers(_student(backend, bits)) if q.role == "weight"]
        assert {q.bits for q in wq} == {bits[0]}, f"{backend} takes no plans, yet its default student is not uniform"
        try:
            backends.quantize(copy.deepcopy(d.teacher), backend, _config(bits, layer_bits={"fc": 8}), example_input=x)
        except ConfigError:
            return
        raise AssertionError(f"{backend} declares no bit_plans, yet quantize accepted layer_bits")
    from .bitplan import weight_layers

    layers = weight_layers(d.teacher, x)
    inner = layers[len(layers) // 2]
    wide = _plan_width(backend, bits)
    cfg = _config(bits, layer_bits={inner: wide})
    plan = backends.resolve_plan(d.teacher, backend, cfg, example_input=x)
    assert plan[inner]["weight"] == wide and plan[layers[0]]["weight"] == 8 and plan[layers[-1]]["weight"] == 8, plan
    s = _student(backend, bits, config=cfg)
    backends.calibrate(s, backend, d.train_x[:256], num_batches=4, config=cfg)
    seen = _planned_bits(backend, s)
    wrong = {n: (e["weight"], seen.get((n, "weight"))) for n, e in plan.items() if seen.get((n, "weight")) != {e["weight"]}}
    assert not wrong, f"{backend}: planned vs described weight bits differ (layer: (plan, described)): {wrong}"
    acts = {n: (e["act"], seen[(n, "activation")]) for n, e in plan.items()
            if (n, "activation") in seen and seen[(n, "activation")] != {e["act"]}}
    assert not acts, f"{backend}: planned vs described input-activation bits differ: {acts}"
    payload = backends.save_student(s, backend, cfg)
    r = backends.restore_student(copy.deepcopy(d.teacher), backend, cfg, payload, example_input=x)
    assert _planned_bits(backend, r) == seen, f"{backend}: the restored student lost the plan"
    a, b = _outputs(s, d.test_x), _outputs(r, d.test_x)
    assert torch.equal(a, b), f"{backend}: restored planned student differs (max diff {float((a - b).abs().max()):.3g})"


CHECKS: tuple[Check, ...] = (check_quantize, check_bit_plan, check_calibration, check_kd_finetune, check_save_restore,
                             check_save_restore_shufflenet, check_save_restore_mobilenet, check_exports,
                             check_resume, check_resume_steps, check_bad_bits, check_missing_backend,
                             check_paper_architecture)
#: checks that do not depend on the bit widths run once per backend (on its first bit widths)
_ONCE = {check_resume, check_bad_bits, check_missing_backend}
#: checks of state a resume must carry run once per backend, at its lowest bit widths (the last of the list),
#: where the most quantizer state is learned; ``check_resume`` covers the CLI path at the first widths
_LOWEST = {check_resume_steps}


def default_bits(backend: str) -> list[tuple[int, int]]:
    """W8A8 and W4A4, where the backend's registered range allows them (else its widest setting)."""
    from .plugins import get_backend

    info = get_backend(backend)
    out = [(w, a) for w, a in ((8, 8), (4, 4))
           if info.weight_bits[0] <= w <= info.weight_bits[1] and info.act_bits[0] <= a <= info.act_bits[1]
           and (not info.bit_pairs or (w, a) in info.bit_pairs)]
    return out or [info.bit_pairs[0] if info.bit_pairs else (info.weight_bits[1], info.act_bits[1])]


def checks(backend: str, bits: Sequence[tuple[int, int]] | None = None) -> list[tuple[str, tuple[int, int], Check]]:
    """``(backend, bits, check)`` triples for one backend."""
    combos = list(bits) if bits is not None else default_bits(backend)
    out = []
    for i, b in enumerate(combos):
        for c in CHECKS:
            if (c in _ONCE and i > 0) or (c in _LOWEST and i < len(combos) - 1):
                continue
            out.append((backend, tuple(b), c))
    return out  # type: ignore[return-value]


def parametrize_with_checks(backends: Sequence[str] | str, bits: Sequence[tuple[int, int]] | None = None) -> Any:
    """A pytest ``parametrize`` over every (backend, bits, check), each marked ``conformance`` with the id
    ``<backend>-W<w>A<a>-<check>``; the test receives ``backend``, ``bits`` and ``check`` and calls
    ``check(backend, bits)``."""
    import pytest

    names = [backends] if isinstance(backends, str) else list(backends)
    params = []
    for name in names:
        for b, wa, c in checks(name, bits):
            cid = c.__name__.removeprefix("check_")
            params.append(pytest.param(b, wa, c, id=f"{b}-W{wa[0]}A{wa[1]}-{cid}", marks=pytest.mark.conformance))
    return pytest.mark.parametrize(("backend", "bits", "check"), params)
