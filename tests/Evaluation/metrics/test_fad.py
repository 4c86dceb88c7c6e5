"""fad-pytorch's window and crop (aeiou's PadCrop + AudioDataset redraws) and fadtk's FAD-inf."""

import numpy as np
import pytest

from Evaluation.metrics import fad as F
from Evaluation.metrics.audio import frechet_distance

SIZE = F.FAD_SAMPLE_SIZE


def test_silence_is_a_peak_below_minus_60_dbfs():
    assert F.is_silent(np.zeros(10)) and F.is_silent(np.full(10, 0.9e-3))
    assert not F.is_silent(np.full(10, 1.1e-3)) and not F.is_silent(np.array([0.0, -0.5]))


def test_random_window_position_is_seeded_and_uniform_over_the_file():
    wave = np.arange(SIZE + 1000, dtype=np.float32)
    starts = [int(F.random_window(wave, np.random.default_rng(s))[0]) for s in range(200)]
    assert min(starts) >= 0 and max(starts) <= 1000 and len(set(starts)) > 100
    again = [int(F.random_window(wave, np.random.default_rng(s))[0]) for s in range(200)]
    assert starts == again
    short = np.ones(5000, dtype=np.float32)  # shorter than the window: from 0, zero-padded
    w = F.random_window(short, np.random.default_rng(0))
    assert w.shape == (SIZE,) and w[:5000].sum() == 5000 and w[5000:].sum() == 0


def _files(*waves):
    return len(waves), lambda i: waves[i]


def test_first_and_random_agree_on_short_audible_files():
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, SIZE)]
    first = F.fad_windows(*_files(*waves), "first", np.random.default_rng(1), F.CropCounts())
    counts = F.CropCounts()
    rand = F.fad_windows(*_files(*waves), "random", np.random.default_rng(1), counts)
    for a, b in zip(first, rand):
        np.testing.assert_array_equal(a, b)
    assert counts.as_dict() == {"files": 2, "longer_than_window": 0, "redrawn_in_file": 0,
                                "replaced_from_other_file": 0}


def test_silent_windows_are_redrawn_in_the_file_then_replaced_from_another():
    loud = np.zeros(3 * SIZE, dtype=np.float32)
    loud[-SIZE // 2:] = 0.5  # only the end of this long file is audible
    silent = np.zeros(1000, dtype=np.float32)  # a system that output silence
    other = np.full(2000, 0.25, dtype=np.float32)
    counts = F.CropCounts()
    out = F.fad_windows(*_files(loud, silent, other), "random", np.random.default_rng(3), counts)
    assert counts.longer_than_window == 1 and counts.redrawn_in_file >= 2
    assert counts.replaced_from_other_file >= 1
    assert not F.is_silent(out[1])  # the published quirk: the silent output is replaced
    firsts = F.fad_windows(*_files(loud, silent, other), "first", np.random.default_rng(3),
                           F.CropCounts())
    assert F.is_silent(firsts[0]) and F.is_silent(firsts[1])  # first keeps what is there
    with pytest.raises(ValueError, match="unknown FAD crop"):
        F.fad_windows(*_files(loud), "middle", np.random.default_rng(0), F.CropCounts())


def test_an_all_silent_set_stops_after_two_replacements():
    counts = F.CropCounts()
    out = F.fad_windows(*_files(np.zeros(100), np.zeros(100)), "random",
                        np.random.default_rng(0), counts)
    assert all(F.is_silent(w) for w in out)
    assert counts.replaced_from_other_file == 4 and counts.redrawn_in_file == 2 * 2 * 3


def test_fad_inf_removes_the_small_sample_bias():
    """Two sets from the SAME distribution: FAD at finite n is biased upwards (~ c / n);
    FAD-inf, the intercept in 1/n, is much closer to the true distance 0."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50000, 8))
    gen = rng.standard_normal((10000, 8))
    out = F.fad_inf(ref, gen, seed=0)
    mu, cov = ref.mean(0), np.cov(ref, rowvar=False)
    at_500 = frechet_distance(mu, cov, gen[:500].mean(0), np.cov(gen[:500], rowvar=False))
    assert out["slope"] > 0 and out["r2"] > 0.8
    assert abs(out["value"]) < at_500 / 5  # measured 0.0024 against 0.039
    assert (out["n_min"], out["n_max"], out["steps"]) == (500, 10000, 25)
    assert F.fad_inf(ref, gen, seed=0) == out  # seeded


def test_fad_inf_of_a_shifted_set_extrapolates_to_the_true_distance():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((50000, 4))
    gen = rng.standard_normal((4000, 4)) + 0.5  # true FD = 4 * 0.25 = 1.0
    assert F.fad_inf(ref, gen)["value"] == pytest.approx(1.0, abs=0.06)
