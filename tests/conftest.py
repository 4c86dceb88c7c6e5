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
