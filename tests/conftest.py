"""Shared fixtures. Tests run on CPU with few threads so the suite fits 2 cores."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")
# NNCF compiles its C++ extension on first use and gives up after 60 s; tests that call NNCF directly (not
# through the adapter, which raises that limit itself) must not fail on a cold, busy machine.
# scripts/dev.sh builds it during set-up; tests/test_first_use.py checks the cold start without this.
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "1800")
# one thread: on 2 shared cores, two torch threads made small-model training ~8x slower (oversubscription)
torch.set_num_threads(1)


@pytest.fixture
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A clean plugin manager for the test, and a clean one again afterwards."""
    from daqakd_plugins import plugins

    for var in (plugins.DISABLE_ENV, plugins.PLUGINS_ENV, plugins.TRACE_ENV):
        monkeypatch.delenv(var, raising=False)
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()


@pytest.fixture(scope="session")
def digits():
    from daqakd_plugins.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def digits_teacher(digits):
    """The default digits teacher (trained once per session, ~2 s)."""
    from daqakd_plugins.train import train_teacher

    model, meta = train_teacher(digits, epochs=15, seed=0, progress=False)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta

