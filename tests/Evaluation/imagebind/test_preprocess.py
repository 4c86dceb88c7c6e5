"""`Evaluation.imagebind.preprocess` against ImageBind's own `data.py` (run with torchaudio,
pytorchvideo and decord; frontend_reference/README.md) on real recordings and videos."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from Evaluation.imagebind import preprocess as P

REF = Path(__file__).parents[1] / "frontend_reference"
SHORT = 24000  # the first 1.5 s of music_16k: shorter than one 2 s clip


@pytest.fixture(scope="module")
def reference():
    with np.load(REF / "imagebind_reference.npz") as z:
        return dict(z)


def _wave(name: str) -> np.ndarray:
    return sf.read(REF / f"{name}.wav", dtype="int16")[0].astype(np.float32) / 32768


@pytest.mark.parametrize("name,wave", [("speech_16k", lambda: _wave("speech_16k")),
                                       ("music_16k_short", lambda: _wave("music_16k")[:SHORT])])
def test_audio_clips_equal_load_and_transform_audio_data(reference, name, wave):
    want = reference[f"audio.{name}"]
    ours = P.audio_clips(wave())[:, 0].numpy()
    assert ours.shape == want.shape == (3, 128, 204)
    np.testing.assert_allclose(ours, want, rtol=0, atol=3e-4)  # measured max 1.1e-4
    # without the reference's in-place mean subtraction of overlapping clips it differs
    if name == "speech_16k":
        clip = wave()[24000:56000]  # clip 2 of 3 (start 1.5 s), mean removed only on its own
        alone = (P.kaldi_fbank(clip - clip.mean()).T - P.AUDIO_MEAN) / P.AUDIO_STD
        n = alone.shape[1]  # 198 frames of 2 s, padded to 204
        assert np.abs(alone - want[1][:, :n]).max() > 1e-3


@pytest.mark.parametrize("name", ["landscape", "portrait"])
def test_video_views_equal_load_and_transform_video_data(reference, name):
    views = P.video_views(P.video_clip_frames(REF / f"{name}.mp4")).numpy()
    assert views.shape == (15, 3, 2, 224, 224)
    np.testing.assert_allclose(views[..., 3::11, 5::11], reference[f"video.{name}.strided"],
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose(views.mean(axis=(-1, -2)), reference[f"video.{name}.mean"],
                               rtol=0, atol=1e-5)
