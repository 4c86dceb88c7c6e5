import math

from util.lr_sched import lr_at


def test_warmup_is_linear_then_cosine_reaches_min():
    kw = dict(lr=1e-3, min_lr=1e-5, warmup_epochs=2, epochs=10)
    assert lr_at(0, **kw) == 0
    assert math.isclose(lr_at(1, **kw), 5e-4)
    assert math.isclose(lr_at(2, **kw), 1e-3)
    assert math.isclose(lr_at(6, **kw), (1e-3 + 1e-5) / 2)
    assert math.isclose(lr_at(10, **kw), 1e-5)
    values = [lr_at(2 + i * 0.5, **kw) for i in range(17)]
    assert all(a >= b for a, b in zip(values, values[1:]))
