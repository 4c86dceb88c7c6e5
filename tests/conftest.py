"""Suite-wide settings: offline hub, deterministic small thread pools."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory) -> Path:
    """A small `data.synthetic` dataset shared by the tests that need real files on disk."""
    from data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0, n=12)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core box threads spin-wait badly
    (measured 10x slower). Modules opt in with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items) -> None:
    """Modules that set `RUN_FIRST = True` (the learning run, the suite's long pole) start first.

    With two xdist workers and `--dist loadfile`, started first it overlaps everything else
    instead of starting after a worker's earlier files. The sort is stable and depends only on
    the collected items, so every worker agrees on the order."""
    items.sort(key=lambda item: 0 if getattr(item.module, "RUN_FIRST", False) else 1)
