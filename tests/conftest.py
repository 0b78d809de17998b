"""Shared test set-up: offline, few threads, paths to the optional real data in ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HASHLIB_VIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def one_thread():
    """torch on one thread for the test (training tests: exact values and no oversubscription on 2 cores)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $HASHLIB_VIT_SHARED_DATA); the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA


def fake_curves(bits: int, ranks=(1, 5, 10)) -> dict:
    """A valid ``curves`` block (metrics.json schema 2) for run directories that tests write by hand:
    precision falls and recall rises with the Hamming radius 0..bits; precision@N at ``ranks``."""
    radius = list(range(bits + 1))
    return {"pr_hamming": {"radius": radius, "precision": [1.0 - 0.5 * r / bits for r in radius],
                           "recall": [r / bits for r in radius]},
            "pr_rank": {"rank": list(ranks), "precision": [0.9 - 0.01 * i for i in range(len(ranks))],
                        "recall": [0.1 * (i + 1) for i in range(len(ranks))]},
            "empty_radius": "exclude"}
