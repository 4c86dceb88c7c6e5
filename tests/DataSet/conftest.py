"""Fixtures for the DataSet tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def espeak_wav(tmp_path_factory) -> Path:
    """Synthesised speech from Debian's espeak-ng (a test dependency: apt-get install
    espeak-ng)."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is required for the VAD test (apt-get install -y espeak-ng)"
    out = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run([exe, "-w", str(out), "Good morning everyone. This is a spoken sentence, "
                    "not music. We are testing the voice activity detector today."], check=True)
    return out
