"""A conversation as token ids and labels, shared by training data and inference.

The template text lives in the model's chat style (`llama.chat_style`); this module owns the rule
that turns a conversation into token ids, so a model sees at inference exactly the layout it was
trained on: BOS, the first instruction in the style's first-turn template, each answer followed by
EOS, later instructions in its next-turn template, and a music answer ending in [AUD0..7].

Labels mark what the loss is computed on: answers only (prompts carry `IGNORE_INDEX`).
`format_prompt` / `format_followup` render the default style (`llama.format_prompt` is public).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Protocol

from llama import chat_style

__all__ = [
    "IGNORE_INDEX",
    "PromptTokenizer",
    "encode_prompt",
    "encode_turns",
    "format_followup",
    "format_prompt",
]

IGNORE_INDEX = -100  # label of positions without loss (torch's cross_entropy default)


class PromptTokenizer(Protocol):
    """What the encoders below need of a tokenizer (`llama.tokenizer.Tokenizer` has it)."""

    eos_id: int
    aud_ids: list[int]

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]: ...


def format_prompt(instruction: str, history: Sequence[tuple[str, str]] = ()) -> str:
    """The dialogue text in the default chat style (see `ChatStyle.format_prompt`)."""
    return chat_style.DEFAULT.format_prompt(instruction, history)


def format_followup(instruction: str) -> str:
    """A later turn's text in the default chat style (no preamble)."""
    return chat_style.DEFAULT.format_turn(instruction, first=False)


def encode_turns(
    tokenizer: PromptTokenizer,
    turns: Sequence[tuple[str, str]],
    *,
    music: bool,
    answer_last: bool = True,
    style: Optional[chat_style.ChatStyle] = None,
) -> tuple[list[int], list[int]]:
    """Token ids and labels of a conversation [(question, answer), ...] in `style` (default:
    the default chat style).

    Every answer ends with EOS; with `music` the last answer ends with [AUD0..7] before its EOS.
    With `answer_last=False` the last answer is left out (a prompt awaiting generation).
    """
    style = style or chat_style.DEFAULT
    ids: list[int] = []
    labels: list[int] = []
    for i, (q, a) in enumerate(turns):
        p_ids = tokenizer.encode(style.format_turn(q, first=i == 0), bos=(i == 0))
        ids += p_ids
        labels += [IGNORE_INDEX] * len(p_ids)
        last = i == len(turns) - 1
        if last and not answer_last:
            break
        a_ids = list(tokenizer.encode(a)) if a else []
        if last and music:
            a_ids += list(tokenizer.aud_ids)
        a_ids.append(tokenizer.eos_id)
        ids += a_ids
        labels += a_ids
    return ids, labels


def encode_prompt(
    tokenizer: PromptTokenizer, instruction: str, history: Sequence[tuple[str, str]] = (),
    style: Optional[chat_style.ChatStyle] = None,
) -> list[int]:
    """Prompt ids exactly as training builds them (BOS, template, earlier answers each + EOS):
    use this at inference so that a multi-turn chat sees the token layout it was trained on."""
    ids, _ = encode_turns(tokenizer, [*history, (instruction, "")], music=False,
                          answer_last=False, style=style)
    return ids
