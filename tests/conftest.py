"""Shared fixtures: every test runs on the CPU with one torch thread, so results are repeatable."""

from __future__ import annotations

import os

import pytest
import torch as th

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
th.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_tty_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests behave as CI does: no progress bar, plain log lines.
    monkeypatch.setenv("CI", "true")
