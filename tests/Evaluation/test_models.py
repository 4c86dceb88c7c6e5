"""`Evaluation.models`: our VGGish log-mel front end against torchvggish's own
`waveform_to_examples` on real recordings (frontend_reference/README.md)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from Evaluation.models import vggish_examples

REF = Path(__file__).parent / "frontend_reference"


@pytest.mark.parametrize("name", ["speech_16k", "music_16k"])
def test_vggish_examples_equal_torchvggish(name):
    wave = sf.read(REF / f"{name}.wav", dtype="int16")[0].astype(np.float32) / 32768
    with np.load(REF / "vggish_reference.npz") as z:
        want = z[f"vggish.{name}"]
    ours = vggish_examples(wave)
    assert ours.shape == want.shape == (5, 96, 64)
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-5)
    # the comparison can fail: a 1-frame shift of the examples is far outside the tolerance
    shifted = vggish_examples(wave[160:])
    assert np.abs(shifted - want[: len(shifted)]).max() > 0.1
