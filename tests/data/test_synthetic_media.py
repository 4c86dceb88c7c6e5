"""data.synthetic_media: every attribute is physically present in the media, and the writers are
deterministic and readable by the project's loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data import synthetic_media as sm
from data.media import load_audio, load_image, load_video
from data.synthetic_attributes import COLOURS, INSTRUMENTS, SIZES


def test_media_decode_with_the_project_loaders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    wav, png, mp4 = tmp_path / "a.wav", tmp_path / "b.png", tmp_path / "c.mp4"
    sm.write_music(wav, sm.synth_music({"instrument": "flute", "register": "high",
                                        "tempo": "fast"}, rng))
    sm.write_png(png, sm.draw_image({"colour": "red", "size": "small"}, rng))
    sm.write_mp4(mp4, sm.render_video({"colour": "blue", "brightness": "darkening"}, rng))
    x = load_audio(wav, sm.SAMPLE_RATE)
    assert x.shape == (int(sm.CLIP_SECONDS * sm.SAMPLE_RATE),) and np.abs(x).max() > 0.3
    assert load_image(png).shape == (sm.IMAGE_SIZE, sm.IMAGE_SIZE, 3)
    assert load_video(mp4, sm.VIDEO_FRAMES).shape == (sm.VIDEO_FRAMES, sm.VIDEO_SIZE,
                                                      sm.VIDEO_SIZE, 3)


def test_writers_give_the_same_bytes_for_the_same_media(tmp_path: Path) -> None:
    frames = sm.render_video({"colour": "green", "brightness": "brightening"},
                             np.random.default_rng(1))
    sm.write_mp4(tmp_path / "a.mp4", frames)
    sm.write_mp4(tmp_path / "b.mp4", frames)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


@pytest.mark.parametrize("brightness", ["brightening", "darkening"])
def test_video_brightness_ramps_the_right_way(tmp_path: Path, brightness: str) -> None:
    path = tmp_path / "v.mp4"
    sm.write_mp4(path, sm.render_video({"colour": "red", "brightness": brightness},
                                       np.random.default_rng(2)))
    means = load_video(path, sm.VIDEO_FRAMES).astype(float).mean(axis=(1, 2, 3))
    assert (means[-1] > means[0]) == (brightness == "brightening")


def test_image_colour_dominates_the_object_and_size_sets_its_area(tmp_path: Path) -> None:
    channel = {"red": 0, "green": 1, "blue": 2}
    rng = np.random.default_rng(3)
    area = {}
    for colour in COLOURS:
        for size in SIZES:
            path = tmp_path / f"{colour}_{size}.png"
            sm.write_png(path, sm.draw_image({"colour": colour, "size": size}, rng))
            img = load_image(path).astype(float)
            obj = img[img.max(-1) - img.min(-1) > 80]
            assert len(obj) > 0, path.name
            if colour in channel:
                assert obj.mean(0).argmax() == channel[colour], path.name
            area.setdefault(size, []).append(len(obj))
    assert max(area["small"]) < min(area["large"])


@pytest.mark.parametrize("inst", INSTRUMENTS)
def test_register_and_tempo_are_audible(inst: str) -> None:
    rng = np.random.default_rng(0)
    sr = sm.SAMPLE_RATE

    def pitch(reg: str) -> float:
        """Median over loud 64 ms frames of the strongest frequency."""
        x = sm.synth_music({"instrument": inst, "register": reg, "tempo": "slow"}, rng)
        frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::512] * np.hanning(1024)
        spec = np.abs(np.fft.rfft(frames, axis=1))
        loud = spec.max(1) > 0.1 * spec.max()
        return float(np.median(np.argmax(spec[loud], 1) * sr / 1024))

    def onsets(tempo: str) -> int:
        """Peaks of positive spectral flux (a plain note-onset detector)."""
        x = sm.synth_music({"instrument": inst, "register": "low", "tempo": tempo}, rng)
        frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::160] * np.hanning(512)
        log_spec = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))
        flux = np.maximum(log_spec[1:] - log_spec[:-1], 0).sum(1)
        thr = flux.mean() + flux.std()
        return sum(1 for i in range(1, len(flux) - 1)
                   if flux[i] > thr and flux[i] == flux[max(0, i - 5): i + 6].max())

    assert pitch("low") < 400 and pitch("high") > 500
    assert onsets("fast") > 2 * onsets("slow")


def test_unknown_instrument_is_refused() -> None:
    with pytest.raises(ValueError, match="banjo"):
        sm.synth_music({"instrument": "banjo", "register": "low", "tempo": "slow"},
                       np.random.default_rng(0))
