"""data.synthetic_attributes: the held-out combinations, balanced draws, the cross-modal maps."""

from __future__ import annotations

import numpy as np

from data import synthetic_attributes as sa


def test_held_out_combinations_are_distinct_instruments_and_seeded() -> None:
    held = sa.held_out_combinations(3)
    assert len(held) == sa.HELD_OUT_COMBINATIONS
    assert len({h["instrument"] for h in held}) == len(held)
    assert held == sa.held_out_combinations(3)
    assert any(sa.held_out_combinations(s) != held for s in (4, 5, 6))


def test_music_combos_split_the_space_into_held_out_and_the_rest() -> None:
    held = sa.held_out_combinations(5)
    seen, unseen = sa.music_combos(held, False), sa.music_combos(held, True)
    assert sorted(map(str, unseen)) == sorted(map(str, held))
    assert len(seen) + len(unseen) == 16 and not [c for c in seen if c in held]


def test_draws_are_balanced_over_the_combinations() -> None:
    rng = np.random.default_rng(0)
    combos = sa.music_combos([], False)
    picks = sa.balanced(combos, 3 * len(combos), rng)
    assert all(picks.count(c) == 3 for c in combos)
    images = sa.shuffled_attrs(sa.IMAGE_ATTRIBUTES, 16, rng)
    assert all(images.count(sa.draw_attrs(sa.IMAGE_ATTRIBUTES, i)) == 2 for i in range(8))


def test_the_maps_are_one_to_one_and_invert() -> None:
    for forward, back in ((sa.COLOUR_TO_INSTRUMENT, sa.INSTRUMENT_TO_COLOUR),
                          (sa.SIZE_TO_REGISTER, sa.REGISTER_TO_SIZE),
                          (sa.BRIGHTNESS_TO_TEMPO, sa.TEMPO_TO_BRIGHTNESS)):
        assert len(set(forward.values())) == len(forward)
        assert all(back[v] == k for k, v in forward.items())
