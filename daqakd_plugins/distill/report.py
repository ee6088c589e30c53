"""What a finished ``daqakd distill`` run says: the run engine's report renderer
(:mod:`daqakd_plugins.run.report`, one for every mode), under the names this package has always offered."""

from __future__ import annotations

from ..run.report import pick_summary, ranking_rows, render_markdown

__all__ = ["render_markdown", "ranking_rows", "pick_summary"]
