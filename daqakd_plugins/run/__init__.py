"""The run engine: one lifecycle for every mode of ``daqakd distill`` (docs/architecture.md).

``run(RunConfig(settings, source)) -> Report``; the mode is the batch source (:mod:`.source`): real data
(:class:`~daqakd_plugins.run.real.RealData`) or a generator
(:class:`~daqakd_plugins.datafree.loop.GeneratorSource`). Run-directory rules and the lock: :mod:`.rundir`;
the versioned checkpoint: :mod:`.checkpoint`; the report and its Markdown: :mod:`.report`.
"""

from __future__ import annotations

from .checkpoint import Checkpoint
from .engine import RunConfig, run
from .report import Report, render_markdown
from .source import AugmentationChoice, BatchSource, Finish, RunContext

__all__ = ["run", "RunConfig", "Report", "render_markdown", "Checkpoint", "BatchSource", "RunContext",
           "AugmentationChoice", "Finish"]
