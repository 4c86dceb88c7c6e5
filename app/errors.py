"""What counts as bad input, and how it is reported: one line, exit status 2, no traceback.

Bad input is anything the user can fix: flags and settings, prompts, media files, and model
components that cannot be loaded (a missing folder, a hub id while offline). Everything else is a
bug in this program and propagates with its traceback; it is never disguised as bad input.
"""

from __future__ import annotations

import functools
import sys
from typing import TextIO

EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """A problem with what the user asked for (reported as one line, never a traceback)."""


class ModelLoadError(InputError):
    """A model component (checkpoint, LLaMA weights, tokenizer, encoder, decoder) that cannot be
    loaded from what the user pointed at; the message names the component, its source and why."""


@functools.cache
def bad_input_errors() -> tuple[type[BaseException], ...]:
    """THE tuple of bad-input exception types (built on first use: it imports the model package).

    `MediaError`: unreadable/corrupt media; `PromptTooLong`: the prompt does not fit the context.
    Library ValueErrors/OSErrors are NOT in it: the serving layer turns them into InputError or
    ModelLoadError where it knows they come from the user's input (see app.session)."""
    from data.media import MediaError
    from llama.m2ugen import PromptTooLong

    return (InputError, MediaError, PromptTooLong)


def one_line(err: BaseException) -> str:
    """An exception as a single line (multi-line library messages are joined)."""
    return " ".join(str(err).split()) or type(err).__name__


def error_line(prog: str, err: BaseException) -> str:
    """`prog: error: message` for a bad-input error."""
    prefix = "prompt too long: " if type(err).__name__ == "PromptTooLong" else ""
    return f"{prog}: error: {prefix}{one_line(err)}"


def fail(prog: str, err: BaseException, stream: TextIO | None = None) -> int:
    """Report a bad-input error as one line on stderr; returns the exit status (2)."""
    print(error_line(prog, err), file=stream or sys.stderr)
    return EXIT_BAD_INPUT
