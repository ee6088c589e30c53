"""Augmentation ranking (METRIC.md sections 1-2): score candidate augmentations with a frozen teacher.

>>> from daqakd_plugins.ranking import rank_augmentations
>>> ranking = rank_augmentations(teacher, bundle, candidates=["none", "randaugment+cutmix"])
>>> ranking.best, ranking.to_markdown()
"""

from __future__ import annotations

from .core import DEFAULT_METRIC, prepare_data, rank_augmentations, resolve_metric
from .metrics import CMIAccumulator, CMIStats, TStdDevAccumulator, check_batch
from .result import RankEntry, Ranking
from .search import SearchResult, search_augmentations

__all__ = [
    "rank_augmentations",
    "search_augmentations",
    "SearchResult",
    "Ranking",
    "RankEntry",
    "CMIStats",
    "CMIAccumulator",
    "TStdDevAccumulator",
    "check_batch",
    "prepare_data",
    "resolve_metric",
    "DEFAULT_METRIC",
]
