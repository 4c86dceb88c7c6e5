"""`Evaluation.media_effect`: NAME=FILE parsing, the paired bootstrap and a control's block."""

import numpy as np
import pytest

from Evaluation._common import EvalInputError
from Evaluation.media_effect import control_effect, paired_bootstrap, parse_control_predictions


def test_parse_control_predictions():
    got = parse_control_predictions("silence=a.json, noise=dir/b.json,")
    assert {k: str(v) for k, v in got.items()} == {"silence": "a.json", "noise": "dir/b.json"}
    for bad in ("silence", "=a.json", "silence=a.json,silence=b.json", " , "):
        with pytest.raises(EvalInputError):
            parse_control_predictions(bad)


def test_identical_rows_give_exact_zeros():
    main = np.random.default_rng(0).random(40)
    assert paired_bootstrap(main, main.copy(), seed=0) == [0.0, 0.0]
    block = control_effect(["x"] * 40, ["x"] * 40, {"m": main}, {"m": main.copy()}, 0, np.mean)
    assert block["identical_answers"] == 1.0 and block["m"] == {"delta": 0.0, "ci95": [0.0, 0.0]}


def test_bootstrap_interval_covers_the_shift_and_is_seeded():
    rng = np.random.default_rng(1)
    control = rng.random(200)
    main = control + 0.1 + 0.05 * rng.standard_normal(200)
    lo, hi = paired_bootstrap(main, control, seed=0)
    assert lo < 0.1 < hi and hi - lo < 0.03
    assert paired_bootstrap(main, control, seed=0) == [lo, hi]
    assert paired_bootstrap(main, control, seed=1) != [lo, hi]
    block = control_effect(list("abcd") * 50, list("abce") * 50, {"m": main}, {"m": control}, 0,
                           np.mean)
    assert block["identical_answers"] == 0.75
    assert block["m"]["delta"] == pytest.approx(float(np.mean(main - control)))
