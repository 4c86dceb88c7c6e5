"""data.augment: random time crops of cached music features."""

import pytest
import torch

from data.augment import random_time_crop


def _features(t: int = 50) -> torch.Tensor:
    return torch.arange(2 * t * 3, dtype=torch.float32).reshape(2, t, 3)  # (S, T, H)


def test_crop_is_a_contiguous_span_of_allowed_length():
    x = _features()
    g = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(200):
        y = random_time_crop(x, 0.6, generator=g)
        t = y.shape[1]
        assert 30 <= t <= 50 and y.shape[::2] == x.shape[::2]
        start = int(y[0, 0, 0].item()) // 3
        assert torch.equal(y, x[:, start: start + t])
        lengths.add(t)
    assert min(lengths) == 30 and max(lengths) == 50  # both ends of the range are drawn


def test_same_generator_state_gives_the_same_crop_and_one_keeps_everything():
    x = _features()
    a = random_time_crop(x, 0.3, generator=torch.Generator().manual_seed(5))
    b = random_time_crop(x, 0.3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert random_time_crop(x, 1.0) is x
    assert random_time_crop(_features(1), 0.5).shape[1] == 1


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match="min_fraction"):
        random_time_crop(_features(), fraction)


def test_wrong_rank_is_refused():
    with pytest.raises(ValueError, match=r"\(S, T, H\)"):
        random_time_crop(torch.zeros(4, 5), 0.5)
