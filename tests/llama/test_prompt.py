"""Prompt template text and the token/label layout of a conversation."""

from __future__ import annotations

import pytest

import llama
from llama.prompt import (
    IGNORE_INDEX,
    encode_prompt,
    encode_turns,
    format_followup,
    format_prompt,
)
from llama.tokenizer import Tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return load_tokenizer("tiny")


def test_prompt_template_exact() -> None:
    preamble = ("Below is an instruction that describes a task. Write a response that "
                "appropriately completes the request.")
    assert format_prompt("Describe the music.") == (
        f"{preamble}\n\n### Instruction:\nDescribe the music.\n\n### Response:")
    assert format_followup("And the tempo?") == (
        "\n\n### Instruction:\nAnd the tempo?\n\n### Response:")
    two = format_prompt("q3", history=[("q1", "a1"), ("q2", "a2")])
    assert two == format_prompt("q1") + "a1" + format_followup("q2") + "a2" + format_followup("q3")
    assert llama.format_prompt is format_prompt and llama.format_followup is format_followup


def test_encode_turns_layout(tok: Tokenizer) -> None:
    turns = [("What plays?", "A piano."), ("Make it faster.", "Here it is.")]
    ids, labels = encode_turns(tok, turns, music=True)
    p1 = tok.encode(format_prompt("What plays?"), bos=True)
    a1 = tok.encode("A piano.") + [tok.eos_id]
    p2 = tok.encode(format_followup("Make it faster."))
    a2 = tok.encode("Here it is.") + tok.aud_ids + [tok.eos_id]
    assert ids == p1 + a1 + p2 + a2
    assert labels == [IGNORE_INDEX] * len(p1) + a1 + [IGNORE_INDEX] * len(p2) + a2
    text_only, _ = encode_turns(tok, turns, music=False)
    assert text_only == p1 + a1 + p2 + tok.encode("Here it is.") + [tok.eos_id]


def test_encode_prompt_is_the_training_prefix(tok: Tokenizer) -> None:
    history = [("What plays?", "A piano.")]
    prompt = encode_prompt(tok, "Make it faster.", history)
    ids, _ = encode_turns(tok, [*history, ("Make it faster.", "Here it is.")], music=True)
    assert ids[: len(prompt)] == prompt
    assert ids[len(prompt):] == tok.encode("Here it is.") + tok.aud_ids + [tok.eos_id]
