"""util.timing: the best of N runs, by the clock asked for."""

from util.timing import best_seconds


def test_best_of_n_uses_the_given_clock_and_warmup():
    ticks = iter([0.0, 5.0, 10.0, 12.0, 20.0, 29.0])  # durations 5, 2, 9
    calls = []
    best = best_seconds(lambda: calls.append(1), 3, clock=lambda: next(ticks), warmup=True)
    assert best == 2.0
    assert len(calls) == 4  # one untimed warm-up call + three timed ones
