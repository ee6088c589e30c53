"""The two soft-label forms of the contextual MI I, on the same teacher outputs and label distributions.

- daqakd (METRIC.md section 1): I = (1/N) Σ_i Σ_k t_i[k] · KL(p_i ‖ Q_k), the conditional mutual
  information of the teacher's prediction and the sample given its label, with Y ~ t_i.
- the authors' code (Jakur/SQAKD, CIFAR/models/util.py, ``Centroid.get_loss`` for 2-D targets):
  I = (1/N) Σ_i KL(p_i ‖ Σ_k t_i[k] · Q_k), a KL to a label-mixed centroid.

For one-hot labels the two are the same number. For mixed labels (CutMix, MixUp) they differ: KL is convex
in its second argument, so the mixed form is never larger, sample by sample. Numbers on the digits teacher:

    python tests/test_soft_label_kl.py
"""

from __future__ import annotations

import math

import torch

from daqakd_plugins.ranking.metrics import Q_CLAMP, CMIStats


def both_forms(logits: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(Σ_k t_k KL(p ‖ Q_k), KL(p ‖ Σ_k t_k Q_k))`` with daqakd's centroids Q (float64)."""
    stats = CMIStats.zeros(t.shape[1])
    stats.update(logits, t)
    q = stats.centroids()
    logp = torch.log_softmax(logits.double(), 1)
    p, t = logp.exp(), t.double()
    neg_h = (p * logp).sum(1)  # Σ_c p log p
    ours = (t * (neg_h[:, None] - p @ q.clamp_min(Q_CLAMP).log().T)).sum(1)
    mixed = neg_h - (p * (t @ q).clamp_min(Q_CLAMP).log()).sum(1)
    return ours, mixed


def authors_transposed_centroids(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The authors' soft-label centroids as their code builds them: ``einsum('bi,bj->ij', p, t)`` divided
    row-wise by the label mass, i.e. ``[i, j] = Σ_b p_b[i] t_b[j] / Σ_b t_b[i]`` (transposed)."""
    p, t = torch.softmax(logits.double(), 1), t.double()
    return (p.T @ t) / t.sum(0)[:, None]


def teacher_batches(teacher: torch.nn.Module, bundle, candidate: str, batch_size: int = 256, seed: int = 0):  # noqa: ANN001, ANN201
    """Teacher logits and label distributions on the batches ``rank_augmentations`` visits (one repeat):
    the order seeded with ``seed``, each piece of the candidate where the pipeline runs it, seeded per
    sample (workers) and per batch (mixers, device pieces) as docs/data.md says."""
    from daqakd_plugins.augment import resolve_augmentation, split_stages
    from daqakd_plugins.streams import TAG_DEVICE, Program, StreamLoader, derive_seed, device_stage

    sample, mix, device = split_stages(resolve_augmentation(candidate))
    order = torch.randperm(len(bundle.train_labels), generator=torch.Generator().manual_seed(seed)).tolist()
    plan = [[(0, seed, b, i) for i in order[s : s + batch_size]]
            for b, s in enumerate(range(0, len(order), batch_size))]
    loader = StreamLoader(bundle.train, [Program(sample, mix)], lambda: plan, num_classes=bundle.num_classes)
    logits, targets = [], []
    for batch in loader:
        with torch.inference_mode():
            xa, ta = device_stage(device, batch.images, batch.targets, derive_seed(seed, batch.number, TAG_DEVICE))
            logits.append(teacher(xa).double())
        targets.append(ta.double())
    return torch.cat(logits), torch.cat(targets)


def _soft(labels: torch.Tensor, c: int, g: torch.Generator) -> torch.Tensor:
    """CutMix-like label distributions: each row mixes its label with its neighbour's."""
    oh = torch.nn.functional.one_hot(labels, c).double()
    lam = torch.rand(len(labels), 1, generator=g, dtype=torch.float64)
    return lam * oh + (1 - lam) * oh.roll(1, 0)


def test_the_forms_agree_for_one_hot_labels_and_the_mixed_one_is_smaller_for_soft_labels() -> None:
    g = torch.Generator().manual_seed(0)
    c = 10
    labels = torch.randint(0, c, (500,), generator=g)
    # logits that depend on the label, so the class centroids differ (the case that matters)
    logits = 2 * torch.randn(500, c, generator=g, dtype=torch.float64) + 5 * torch.nn.functional.one_hot(labels, c)
    ours, mixed = both_forms(logits, torch.nn.functional.one_hot(labels, c).double())
    assert torch.allclose(ours, mixed, rtol=1e-12, atol=1e-15)
    ours, mixed = both_forms(logits, _soft(labels, c, g))
    assert bool((mixed <= ours + 1e-12).all())  # convexity of KL in its second argument, per sample
    assert float(ours.mean() - mixed.mean()) > 0.05


def test_digits_teacher_none_and_cutmix(digits, digits_teacher) -> None:
    """Clean labels: one number. CutMix labels: daqakd's I (what `rank_augmentations` reports) is clearly
    above the mixed-centroid form of the authors' code on the very same batches."""
    from daqakd_plugins.ranking import rank_augmentations

    teacher, _ = digits_teacher
    ranked = rank_augmentations(teacher, digits, candidates=["none", "none+cutmix"], progress=False)
    for name in ("none", "none+cutmix"):
        ours, mixed = both_forms(*teacher_batches(teacher, digits, name))
        reported = ranked[name].components["I"]
        assert math.isclose(float(ours.mean()), reported, rel_tol=1e-9), (name, float(ours.mean()), reported)
        if name == "none":
            assert math.isclose(float(mixed.mean()), reported, rel_tol=1e-12)
        else:
            assert bool((mixed <= ours + 1e-12).all())
            assert float(ours.mean() - mixed.mean()) > 0.1, (float(ours.mean()), float(mixed.mean()))


if __name__ == "__main__":
    from daqakd_plugins.data import load_digits
    from daqakd_plugins.train import train_teacher

    torch.set_num_threads(1)
    bundle = load_digits()
    teacher, meta = train_teacher(bundle, epochs=15, seed=0, progress=False)
    teacher.eval()
    print(f"digits teacher: {meta['test_accuracy']:.4f} test accuracy; batch 256, all {len(bundle.train_x)} training samples")
    print("candidate     seed  I daqakd (Σ t KL(p‖Q_k))  I mixed (KL(p‖Σ t Q_k))  authors' code as written (transposed Q, mixed)")
    for name in ("none", "none+cutmix"):
        for seed in (0, 1, 2):
            lg, t = teacher_batches(teacher, bundle, name, seed=seed)
            ours, mixed = both_forms(lg, t)
            if name == "none":  # hard labels take the authors' index_select path: KL(p ‖ Q_y), as ours
                as_written = mixed.mean()
            else:
                qa = authors_transposed_centroids(lg, t)
                logp = torch.log_softmax(lg, 1)
                as_written = ((logp.exp() * (logp - (t @ qa).clamp_min(Q_CLAMP).log())).sum(1)).mean()
            print(f"{name:<13} {seed:>4}  {float(ours.mean()):>22.4f}  {float(mixed.mean()):>23.4f}  {float(as_written):>22.4f}"
                  + ("" if name != "none" else f"   (|daqakd − mixed| = {float((ours - mixed).abs().max()):.1e})"))
