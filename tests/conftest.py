"""Suite-wide settings: offline hub, deterministic small thread pools."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# librosa's numba cache lives in site-packages by default, shared by every process at once; two
# processes writing it together left an index that crashed the next reader (a segfault in
# librosa's peak_pick). Each pytest worker (and the CLIs it starts) keeps its own cache.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "numba",
    os.environ.get("PYTEST_XDIST_WORKER", "main")))

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
