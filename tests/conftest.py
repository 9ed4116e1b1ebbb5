"""Shared test helpers: repo paths, the ../shared data location, and torch thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CCR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Two cores are shared by pytest-xdist workers: keep each worker on one thread.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "multi30k").is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA} (set CCR_SHARED_DATA)")
    return SHARED_DATA
