"""The support matrix of docs/models.md: which torchvision architectures each backend adapter takes end
to end — quantize → calibrate → a few Distiller KD steps → export → the exported file's logits next to
torch's — and, for every failure, the reason.

Every cell is independent (a failure is recorded, not raised) and written to a JSONL file as soon as it
is done, so an interrupted run resumes where it stopped. Data are random images of ``--size`` pixels
(agreement between torch and the exported file does not need trained weights); the float models are
randomly initialised with a CIFAR-style small-input stem, 10 classes.

    python benchmarks/model_matrix.py --out runs/model_matrix            # every model x implemented backend
    python benchmarks/model_matrix.py --models resnet18,mobilenet_v2 --backends brevitas --out /tmp/mm
    python benchmarks/model_matrix.py --out runs/model_matrix --markdown docs-table.md   # + the Markdown table
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5",
          "regnet_x_400mf", "convnext_tiny")
#: per-backend bit widths of the matrix (each backend's natural deployment setting) and options
DEFAULT_BITS = {"brevitas": (4, 4), "nncf": (8, 8), "pytorch-quantization": (8, 8), "modelopt": (8, 8)}
#: options a model needs on a backend, and why (documented in docs/models.md)
MODEL_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("brevitas", "efficientnet_b0"): {"float_layers": ["SiLU", "sigmoid"], "bias_quant": False},
    ("brevitas", "mobilenet_v3_small"): {"float_layers": ["Hardswish", "Hardsigmoid"], "bias_quant": False},
    ("brevitas", "convnext_tiny"): {"float_layers": ["LayerNorm2d", "GELU", "LayerNorm"]},
}


def one_cell(model_name: str, backend: str, *, size: int = 32, batch: int = 16, kd_steps: int = 3,
             options: dict[str, Any] | None = None, bits: tuple[int, int] | None = None,
             formats: tuple[str, ...] | None = None) -> dict[str, Any]:
    """quantize → calibrate → KD steps → export → agreement, for one model on one backend."""
    from daqakd_plugins import backends
    from daqakd_plugins.config import QuantConfig
    from daqakd_plugins.distill import Distiller
    from daqakd_plugins.models import arch_spec, as_tensor, build_model

    w, a = bits or DEFAULT_BITS.get(backend, (8, 8))
    opts = dict(options if options is not None else MODEL_OPTIONS.get((backend, model_name), {}))
    row: dict[str, Any] = {"model": model_name, "backend": backend, "bits": f"W{w}A{a}", "options": opts}
    stage = "build"
    t0 = time.perf_counter()
    try:
        torch.manual_seed(0)
        fp = build_model(arch_spec(f"torchvision:{model_name}", num_classes=10, in_channels=3, small_input=True)).eval()
        x = torch.rand(batch * 2, 3, size, size)
        y = torch.randint(0, 10, (batch * 2,))
        stage = "quantize"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = backends.quantize(copy.deepcopy(fp), backend, QuantConfig(weight_bits=w, act_bits=a, options=opts),
                                  example_input=x[:batch], calib_data=x)
        row["warnings"] = sorted({str(c.message)[:200] for c in caught if issubclass(c.category, UserWarning)})[:5]
        row["quantizers"] = backends.count_quantizers(s)
        stage = "kd"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kd = Distiller(fp, s, loss="paper")
        opt = torch.optim.Adam([p for p in s.parameters() if p.requires_grad], lr=1e-4)
        s.train()
        for i in range(kd_steps):
            lo = (i % 2) * batch
            loss = kd.loss(x[lo : lo + batch], y[lo : lo + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        kd.remove_hooks()
        row["kd_loss"] = float(loss.detach())
        stage = "export"
        row["stage_seconds"] = {"quantize+kd": round(time.perf_counter() - t0, 1)}
        s.eval()
        xe = x[:8]  # a reference executor (qonnx runs node by node in Python) is slow on big graphs
        with torch.no_grad():
            ref = as_tensor(s(xe)).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            exported = backends.export(s, backend, example_input=x[:1], out_dir=tmp, formats=formats)
            stage = "run exported"
            row["exports"] = []
            for e in exported:
                t1 = time.perf_counter()
                got = np.asarray(e.predict(xe.numpy()))
                row["exports"].append({
                    "format": e.format, "runtime": e.runtime,
                    "argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
                    "max_abs_logit_diff": float(np.abs(got - ref).max()),
                    # per-sample logit spread (max - min) of torch's logits: the scale the difference is read against
                    "logit_spread": float(np.median(ref.max(1) - ref.min(1))),
                    "predict_seconds": round(time.perf_counter() - t1, 1),
                })
        row["ok"] = True
    except Exception as exc:  # noqa: BLE001 - every failure is a result of the matrix
        row["ok"] = False
        row["stage"] = stage
        row["error"] = f"{type(exc).__name__}: {str(exc)[:600]}"
        row["where"] = traceback.format_exception(exc)[-2].strip()[:300] if exc.__traceback__ else ""
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    """One line per (model, backend): ✓ with each export's agreement, or the stage and reason of the failure."""
    lines = ["| model | backend | bits | options | result | exports: max \\|logit diff\\| ÷ logit spread (argmax agreement) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in (r.get("options") or {}).items()) or "–"
        if r.get("ok"):
            ex = "; ".join(f"{e['format']} ({e['runtime']}): " + (
                f"{e['max_abs_logit_diff'] / max(e['logit_spread'], 1e-12):.2g}" if "logit_spread" in e
                else f"max diff {e['max_abs_logit_diff']:.3g}") + f" ({e['argmax_agreement']:.2f})"
                for e in r.get("exports", []))
            warn = f" (warns: {r['warnings'][0][:80]})" if r.get("warnings") else ""
            lines.append(f"| {r['model']} | {r['backend']} | {r['bits']} | {opts} | works{warn} | {ex} | {r['seconds']} |")
        else:
            err = str(r.get("error", "")).replace("|", "\\|").replace("\n", " ")[:220]
            lines.append(f"| {r['model']} | {r['backend']} | {r['bits']} | {opts} | **fails at {r.get('stage')}**: "
                         f"{err} | – | {r['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from daqakd_plugins.plugins import backend_status, get_backends

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/model_matrix"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--backends", default=None, help="default: every implemented and installed backend")
    ap.add_argument("--size", type=int, default=32, help="image size (default 32, CIFAR-like)")
    ap.add_argument("--kd-steps", type=int, default=3)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the Markdown table here")
    ap.add_argument("--formats", default=None,
                    help="export only these formats (comma-separated), e.g. onnx-qcdq: qonnx's cleanup_model takes "
                         "minutes on graphs of hundreds of nodes")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    infos = get_backends()
    names = (args.backends.split(",") if args.backends else
             [n for n, i in infos.items() if i.implemented and backend_status(i)["available"]])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "matrix.jsonl"
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
                done[(r["model"], r["backend"])] = r
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a killed run: redone
    for m in args.models.split(","):
        for b in names:
            if (m, b) in done:
                continue
            fmts = tuple(args.formats.split(",")) if args.formats else None
            r = one_cell(m, b, size=args.size, kd_steps=args.kd_steps, formats=fmts)
            done[(m, b)] = r
            with path.open("a") as fh:
                fh.write(json.dumps(r) + "\n")
            state = "ok" if r["ok"] else f"FAIL at {r['stage']}: {r['error'][:120]}"
            print(f"{m:22s} {b:22s} {r['seconds']:6.1f}s {state}", flush=True)
    rows = [done[(m, b)] for m in args.models.split(",") for b in names if (m, b) in done]
    table = markdown(rows)
    (args.out / "matrix.md").write_text(table + "\n")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
