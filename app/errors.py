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


# The parts a model is loaded from: what the user calls each, and the flag that points at it.
COMPONENTS: dict[str, tuple[str, str]] = {
    "checkpoint": ("checkpoint", "--model"),
    "llama": ("LLaMA weights", "--llama_dir"),
    "tokenizer": ("tokenizer", "--tokenizer_path"),
    "audio": ("music encoder", "--mert_path"),
    "image": ("image encoder", "--vit_path"),
    "video": ("video encoder", "--vivit_path"),
    "decoder": ("music decoder", "--music_decoder_path"),
    "knn": ("kNN index", "--knn_dir"),
    "model": ("model", "--model"),  # an I/O failure no single component can be blamed for
}


class ModelLoadError(InputError):
    """A model component that cannot be loaded from what the user pointed at. `component` is a
    key of COMPONENTS; the message names it, where it was looked for, its flag and why."""

    def __init__(self, component: str, source: object, reason: str) -> None:
        name, flag = COMPONENTS[component]
        super().__init__(f"cannot load the {name} {str(source)!r} ({flag}): {reason}")
        self.component, self.source, self.reason = component, source, reason


@functools.cache
def bad_input_errors() -> tuple[type[BaseException], ...]:
    """THE tuple of bad-input exception types (built on first use: it imports the model package).

    `MediaError`: unreadable/corrupt media; `PromptTooLong`: the prompt does not fit the context.
    Library ValueErrors/OSErrors are NOT in it: the serving layer turns the model package's typed
    load errors into ModelLoadError (app.loading, app.engine); anything else is a bug."""
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
