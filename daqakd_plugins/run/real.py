"""The batch source of a run on real data (``daqakd distill``): the training split through the streaming
loader (each rank its share under torchrun), calibration on a class-stratified seeded sample, and the
augmentation ranked on real images before the student exists."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch

from .source import AugmentationChoice, Finish, RunContext, SourceDefaults

__all__ = ["RealData"]


class RealData(SourceDefaults):
    """Training batches from the data bundle (see :mod:`daqakd_plugins.run.source` for the protocol)."""

    mode = "data"
    ranks_before_student = True  # ranking reads real images, not the student
    trains_with_base = True  # --base-augment: the recipe's crop/flip runs before every candidate

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.loader: Any = None
        self.calibration: dict[str, Any] = {}

    def open(self, cfg: Any) -> Any:
        """The data bundle (digits in memory, a folder read lazily), restricted to ``train_per_class``."""
        from ..data import load_data, stratified_subset

        bundle = load_data(cfg.data, seed=0, image_size=cfg.image_size)
        self.bundle = bundle
        if cfg.train_crop == "random":
            bundle.training_set("random")  # refuses in-memory data and folders without --image-size, before any work
        if cfg.train_per_class is not None:
            idx = stratified_subset(bundle.train_labels, cfg.train_per_class, seed=0)  # one subset for every seed
            bundle = self.bundle = bundle.subset(idx)
        return bundle

    def example(self, ctx: RunContext) -> torch.Tensor:
        """The first training images (the student's example input for tracing / shapes), normalised."""
        from ..streams import dataset_tensors

        b = ctx.bundle
        n = min(ctx.cfg.batch_size, len(b.train_labels))
        return ctx.norm(dataset_tensors(b.train, num_classes=b.num_classes, desc="example batch", index=range(n))[0])

    def choose_augmentation(self, ctx: RunContext) -> AugmentationChoice:
        """``augment``: a name, or ``auto``: rank the candidates with the teacher and take the best."""
        cfg = ctx.cfg
        if cfg.searches:
            return self._search(ctx)
        if cfg.augment != "auto":
            from ..augment import resolve_augmentation

            return AugmentationChoice(resolve_augmentation(cfg.augment).name)
        from ..augment import resolve_augmentation, resolve_candidates
        from ..ranking import rank_augmentations

        cands = resolve_candidates(cfg.candidates)
        added = all(c.name != "none" for c in cands)
        if added:  # `auto` never picks a candidate that its own score ranks below the base alone
            cands.append(resolve_augmentation("none"))
        from .. import progress

        progress.doing(f"ranking {len(cands)} candidate augmentations with the teacher ({cfg.metric})")
        ranking = rank_augmentations(
            ctx.teacher, ctx.bundle, cands, cfg.metric, seed=cfg.seed, repeats=cfg.rank_repeats,
            per_class=cfg.rank_per_class, device=cfg.device, num_classes=ctx.bundle.num_classes,
            progress=cfg.progress, workers=ctx.workers, normalize=ctx.norm, base_augment=cfg.base_augment,
        )
        if added:
            ranking.notes.append("`none` (the base transform alone) was ranked too, so that `--augment auto` keeps "
                                 "no extra augmentation when no candidate scores better than it")
        return AugmentationChoice(str(ranking.best), json.loads(json.dumps(ranking.to_dict(), default=str)))

    def _search(self, ctx: RunContext) -> AugmentationChoice:
        """``augment="search:<space>"``: score ``search_n`` policies of the space with the teacher (resumable
        through ``OUT/search.jsonl``), train with the top ``search_top_k`` combined. The report's ranking table
        holds the top k, the combination and ``none``, best first; ``search`` in it the search's summary."""
        from .. import progress
        from ..augment import parse_search_name
        from ..ranking import search_augmentations

        cfg = ctx.cfg
        space = parse_search_name(cfg.augment)[0]
        progress.doing(f"searching {cfg.search_n} policies of {space} with the teacher ({cfg.metric})")
        res = search_augmentations(
            ctx.teacher, ctx.bundle, space, cfg.search_n, top_k=cfg.search_top_k, metric=cfg.metric, seed=cfg.seed,
            repeats=cfg.rank_repeats, per_class=cfg.rank_per_class, device=cfg.device,
            num_classes=ctx.bundle.num_classes, progress=cfg.progress, workers=ctx.workers, normalize=ctx.norm,
            base_augment=cfg.base_augment, resume=ctx.out / "search.jsonl",
        )
        shown = [res.ranking[n] for n in res.top]
        shown += [e for e in (res.combined_entry, res.reference) if e is not None and e.name not in res.top]
        table = replace(res.ranking, entries=shown, seconds=res.seconds,
                        notes=res.ranking.notes + [f"searched {res.n} policies of {space}: the top {len(res.top)} are "
                                                   f"shown with their combination {res.combined} (trained with) and `none`"])
        detail = table.to_dict()
        summary = {k: v for k, v in res.to_dict().items() if k not in ("ranking", "reference", "combined_entry")}
        detail["search"] = summary
        return AugmentationChoice(res.combined, json.loads(json.dumps(detail, default=str)))

    def calibration_batches(self, ctx: RunContext) -> list[torch.Tensor]:
        """Calibration batches (normalised, as the models see them) from a class-stratified, seeded sample of
        the training images, read through the data pipeline; the report says per-class counts."""
        from ..data import calibration_sample
        from ..streams import dataset_tensors

        cfg, b = ctx.cfg, ctx.bundle
        labels = b.train_labels
        want, how = cfg.calibration_size()
        idx = calibration_sample(labels, want, seed=cfg.seed)
        from .engine import say

        say(cfg, f"calibrating the quantized student on {len(idx)} training images (class-stratified; {how}"
                 f"{'; the training set has only ' + str(len(labels)) if len(idx) < want else ''}) in "
                 f"{math.ceil(len(idx) / cfg.batch_size)} batch(es) of {cfg.batch_size} ...")
        xs, _ = dataset_tensors(b.train, num_classes=b.num_classes, index=idx, workers=ctx.workers,
                                batch_size=cfg.batch_size, desc="calibration images")
        xs = ctx.norm(xs)
        classes = list(b.classes)
        counts = torch.bincount(labels[idx], minlength=len(classes)).tolist()
        self.calibration = {"images": int(len(idx)), "batches": int(math.ceil(len(idx) / cfg.batch_size)),
                            "batch_size": cfg.batch_size, "size_from": how,
                            "seed": cfg.seed, "sampling": "class-stratified, seeded, shuffled",
                            "per_class": dict(zip(classes, counts))}
        return [xs[i: i + cfg.batch_size] for i in range(0, len(xs), cfg.batch_size)]

    def prepare_training(self, ctx: RunContext, kd: Any) -> None:
        train_set = ctx.bundle.training_set(ctx.cfg.train_crop)
        self.loader = kd.loader(train_set, batch_size=ctx.cfg.batch_size, workers=ctx.workers,
                                seed=ctx.cfg.seed)  # sharded under torchrun

    def batches_per_epoch(self) -> int:
        return len(self.loader)

    def samples_per_epoch(self) -> int:
        return len(self.loader.inner.order())  # this rank's share

    def epoch(self, epoch: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        self.loader.set_epoch(epoch)  # the order and every draw of epoch e depend only on (seed, e)
        return self.loader

    def export_example(self, ctx: RunContext) -> torch.Tensor:
        assert ctx.example is not None
        return ctx.example

    def finish(self, ctx: RunContext) -> Finish:
        data = {**ctx.bundle.describe(), "train_used": len(ctx.bundle.train_labels)}
        return Finish(files={}, student_meta={}, data=data, calibration=self.calibration,
                      section={"pipeline": self._pipeline(ctx)})

    def _pipeline(self, ctx: RunContext) -> dict[str, Any]:
        """Where the augmentation ran and how the data was read (report.json's ``pipeline``)."""
        loader, cfg = self.loader, ctx.cfg
        prog = loader.inner.programs[0]
        dev = loader.device_piece if loader.worker_stages else loader.kd.augment
        return {
            "workers": ctx.workers,
            "image_size": cfg.image_size,
            "train_crop": cfg.train_crop,
            "normalize": ctx.norm.to_dict(),
            "augmentation_stages": {
                "workers_per_image": [a.name for a in prog.sample],
                "collate_batch": [a.name for a in prog.batch],
                "step_on_device": [p.name for p in (dev.parts or (dev,))] if dev is not None else [],
            },
            "seeds": "per sample from (seed, epoch, index); per batch from (seed, epoch, batch number)",
        }
