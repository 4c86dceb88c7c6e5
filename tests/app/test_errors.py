"""What counts as bad input, and its one-line report."""

from __future__ import annotations

import io

from app import errors


def test_bad_input_is_a_closed_set():
    from data.media import MediaError
    from llama.m2ugen import PromptTooLong

    bad = errors.bad_input_errors()
    assert set(bad) == {errors.InputError, MediaError, PromptTooLong}
    assert issubclass(errors.ModelLoadError, errors.InputError)
    # Library ValueErrors/OSErrors and bugs are not bad input unless the serving layer says so.
    for bug in (ValueError("x"), OSError("x"), KeyError("x"), TypeError("x"), RuntimeError("x")):
        assert not isinstance(bug, bad)


def test_one_line_joins_multi_line_messages():
    assert errors.one_line(ValueError("first\n  second\n\nthird")) == "first second third"
    assert errors.one_line(KeyError()) == "KeyError"


def test_fail_prints_one_line_and_returns_2():
    from llama.m2ugen import PromptTooLong

    out = io.StringIO()
    assert errors.fail("prog", errors.InputError("--x 3:\n bad"), out) == 2
    assert out.getvalue() == "prog: error: --x 3: bad\n"
    assert errors.error_line("p", PromptTooLong("is 9 tokens")) == (
        "p: error: prompt too long: is 9 tokens")
