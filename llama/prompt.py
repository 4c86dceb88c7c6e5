"""The chat template and its token layout, shared by training data and inference.

One module owns both the text template (Alpaca's no-input form, docs/MODEL.md section 2) and the
rule that turns a conversation into token ids, so a model sees at inference exactly the layout it
was trained on: BOS, the first instruction in the full template, each answer followed by EOS,
later instructions in the short follow-up template, and a music answer ending in [AUD0..7].

Labels mark what the loss is computed on: answers only (prompts carry `IGNORE_INDEX`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "IGNORE_INDEX",
    "PROMPT_PREAMBLE",
    "PromptTokenizer",
    "encode_prompt",
    "encode_turns",
    "format_followup",
    "format_prompt",
]

PROMPT_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
IGNORE_INDEX = -100  # label of positions without loss (torch's cross_entropy default)


class PromptTokenizer(Protocol):
    """What the encoders below need of a tokenizer (`llama.tokenizer.Tokenizer` has it)."""

    eos_id: int
    aud_ids: list[int]

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]: ...


def format_prompt(instruction: str, history: Sequence[tuple[str, str]] = ()) -> str:
    """Render the Alpaca no-input template; the answer follows directly.

    With `history` [(q1, a1), ...] earlier turns come first, each answer directly after its
    "### Response:"; EOS ids between turns are added at the token level (`encode_turns`).
    """
    turns = [*history, (instruction, None)]
    first_q, first_a = turns[0]
    parts = [f"{PROMPT_PREAMBLE}\n\n### Instruction:\n{first_q}\n\n### Response:"]
    if first_a is not None:
        parts.append(first_a)
    for question, answer in turns[1:]:
        parts.append(format_followup(question))
        if answer is not None:
            parts.append(answer)
    return "".join(parts)


def format_followup(instruction: str) -> str:
    """The template of a later turn in a conversation (no preamble)."""
    return f"\n\n### Instruction:\n{instruction}\n\n### Response:"


def encode_turns(
    tokenizer: PromptTokenizer,
    turns: Sequence[tuple[str, str]],
    *,
    music: bool,
    answer_last: bool = True,
) -> tuple[list[int], list[int]]:
    """Token ids and labels of a conversation [(question, answer), ...].

    Every answer ends with EOS; with `music` the last answer ends with [AUD0..7] before its EOS.
    With `answer_last=False` the last answer is left out (a prompt awaiting generation).
    """
    ids: list[int] = []
    labels: list[int] = []
    for i, (q, a) in enumerate(turns):
        prompt = format_prompt(q) if i == 0 else format_followup(q)
        p_ids = tokenizer.encode(prompt, bos=(i == 0))
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
    tokenizer: PromptTokenizer, instruction: str, history: Sequence[tuple[str, str]] = ()
) -> list[int]:
    """Prompt ids exactly as training builds them (BOS, template, earlier answers each + EOS):
    use this at inference so that a multi-turn chat sees the token layout it was trained on."""
    ids, _ = encode_turns(tokenizer, [*history, (instruction, "")], music=False, answer_last=False)
    return ids
