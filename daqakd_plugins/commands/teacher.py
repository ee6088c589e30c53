"""``daqakd teacher``: train (or re-evaluate) a full-precision teacher."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_arch_args, add_data_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("teacher", help="train a full-precision teacher on digits or an ImageFolder directory")
    p.add_argument("--data", default="digits", help="'digits' (embedded, default) or an ImageFolder directory")
    p.add_argument("--out", type=Path, default=Path("runs/teacher.pt"), help="where to save the state_dict")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="retrain even if --out exists")
    add_arch_args(p)
    add_data_args(p, train=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checks import check_image_size, check_lr, check_normalization, check_output_file, check_workers
    from ..data import load_data
    from ..models import load_model, save_model
    from ..streams import Normalizer, eval_loader, resolve_workers
    from ..train import evaluate_loader, train_teacher

    check_lr(args.lr, flag="--lr")
    check_output_file(args.out, flag="--out")
    check_workers(args.workers, flag="--workers")
    check_image_size(args.image_size, flag="--image-size")
    mean, std = check_normalization(args.mean, args.std)
    from .. import progress

    progress.doing("reading the data")
    bundle = load_data(args.data, seed=args.seed, image_size=args.image_size)
    if args.out.exists() and not args.force:
        progress.doing(f"evaluating the existing teacher {args.out}")
        model, meta = load_model(args.out, trust_factory=args.arch or False)  # a factory only if --arch names it
        rec = meta.get("normalize") or {}
        norm = Normalizer(mean, std) if mean is not None else Normalizer(rec.get("mean"), rec.get("std"))
        loader = eval_loader(bundle.test, num_classes=bundle.num_classes, workers=resolve_workers(args.workers))
        acc = evaluate_loader(model, loader, normalize=norm)
        print(f"teacher {args.out} exists (use --force to retrain): test accuracy {acc:.4f}")
        return 0
    from ..train import teacher_arch

    arch = teacher_arch(bundle, args.arch, num_classes=args.num_classes, small_input=bool(args.small_input))
    progress.doing(f"training the teacher ({args.epochs} epochs)")
    model, meta = train_teacher(bundle, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                                arch=arch, workers=args.workers, normalize=(mean, std) if mean is not None and std is not None else None,
                                base_augment=args.base_augment or "auto")
    save_model(args.out, model, meta["arch"], meta)
    print(json.dumps({"teacher": str(args.out), **meta}, indent=2))
    return 0
