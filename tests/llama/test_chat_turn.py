"""One chat turn (llama/chat.py): the model's chat style alone decides the prompt, where the
answer ends and what the reply holds; the same loop serves our style and the published ones."""

from __future__ import annotations

import dataclasses

import pytest

from llama import chat_style
from llama.chat import GenerationSettings, answer_ids
from llama.chat_style import ChatStyle, StopRule
from llama.config import get_preset
from llama.m2ugen import M2UGen

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "Describe the music and compose a slow piano melody"
NEVER_STOPS = StopRule(eos=False, aud="continue")


def _with_style(model: M2UGen, style: ChatStyle) -> M2UGen:
    model.cfg = dataclasses.replace(model.cfg, chat_style=style)
    return model


@pytest.fixture(scope="module")
def model() -> M2UGen:
    return M2UGen(get_preset("tiny"), load_decoder=False)


@pytest.fixture()
def free(model):
    """Prompt ids and 40 greedy ids with nothing ending the answer."""
    _with_style(model, dataclasses.replace(chat_style.M2UGEN, stop=NEVER_STOPS))
    ids, _ = model.build_prompt(PROMPT, [], 40)
    out = answer_ids(model, ids, None, 40)
    assert len(out) == 40
    yield ids, out
    _with_style(model, chat_style.M2UGEN)


def test_the_prompt_follows_the_style(model):
    other = ChatStyle("other", "Q: {instruction}\nA:", "\nQ: {instruction}\nA:")
    ours = model.build_prompt(PROMPT, [("Hi", "Hello")], 16)[0]
    _with_style(model, other)
    try:
        theirs = model.build_prompt(PROMPT, [("Hi", "Hello")], 16)[0]
    finally:
        _with_style(model, chat_style.M2UGEN)
    tok = model.tokenizer
    assert theirs == (tok.encode("Q: Hi\nA:", bos=True) + tok.encode("Hello") + [tok.eos_id]
                      + tok.encode(f"\nQ: {PROMPT}\nA:"))
    assert theirs != ours


def test_the_published_tail_rule_keeps_the_stop_tokens_and_cuts_the_text(model, free):
    ids, out = free
    raw = model.tokenizer.hf.decode
    stop = raw(out[8:11])
    end = next(i for i in range(2, 40) if raw(out[i - 2: i + 1]) == stop)
    style = dataclasses.replace(chat_style.PUBLISHED_M2UGEN,
                                stop=StopRule(eos=False, strings=(stop,), tail_tokens=3,
                                              aud="continue"))
    _with_style(model, style)
    assert answer_ids(model, ids, None, 40) == out[: end + 1]
    reply = model.chat(PROMPT, settings=GenerationSettings(max_new_tokens=40))
    aud = set(model.tokenizer.aud_ids)
    cut = next((i for i, t in enumerate(out[: end + 1]) if t in aud), end + 1)
    assert reply.generated_ids == out[: end + 1] and reply.token_ids == out[:cut]
    assert reply.text == style.answer_text(model.tokenizer.decode(out[:cut]))


def _first_new(out: list[int], start: int) -> int:
    """A position >= start whose id does not occur earlier in `out`."""
    return next(j for j in range(start, len(out)) if out[j] not in out[:j])


def test_ours_ends_at_eos_and_keeps_it(model, free, monkeypatch):
    ids, out = free
    j = _first_new(out, 5)
    _with_style(model, chat_style.M2UGEN)
    monkeypatch.setattr(model.tokenizer, "eos_id", out[j])  # an id the model does produce
    reply = model.chat(PROMPT, settings=GenerationSettings(max_new_tokens=40))
    assert reply.token_ids == out[:j] and reply.generated_ids == out[: j + 1]


def test_ours_ends_at_the_first_aud_and_appends_the_rest(model, free, monkeypatch):
    ids, out = free
    j = _first_new(out, 5)
    fake_aud = [out[j]] + [t for t in range(900, 1000) if t not in out][:7]
    _with_style(model, chat_style.M2UGEN)
    monkeypatch.setattr(model.tokenizer, "aud_ids", fake_aud)
    reply = model.chat(PROMPT, settings=GenerationSettings(max_new_tokens=40), want_music=False)
    assert reply.token_ids == out[:j] and reply.generated_ids == out[:j] + fake_aud


def test_the_in_order_aud_run_ends_the_newer_releases_answer(model, free):
    ids, out = free
    aud = list(model.tokenizer.aud_ids)
    style = dataclasses.replace(chat_style.PUBLISHED_MUMU_LLAMA,
                                stop=StopRule(eos=False, aud="after_run"))
    _with_style(model, style)
    got = answer_ids(model, ids, None, 40)
    matched = 0
    for i, t in enumerate(out):  # the published counter: [AUD0..7] in order, others between
        if t == aud[matched]:
            matched += 1
            if matched == len(aud):
                assert got == out[: i + 1]
                break
    else:
        assert got == out


def test_unset_settings_take_the_styles_music_route(model, monkeypatch):
    seen = {}

    def synthesize(ids, feats, text, settings):
        seen["route"] = settings.music_conditioning
        return None, None

    monkeypatch.setattr(model, "synthesize", synthesize)
    style = dataclasses.replace(chat_style.PUBLISHED_M2UGEN, stop=StopRule(aud="first"))
    _with_style(model, style)
    try:
        aud0 = model.tokenizer.aud_ids[0]
        monkeypatch.setattr("llama.chat._stream_ids", lambda *a, **k: iter([[aud0]]))
        model.chat(PROMPT)
    finally:
        _with_style(model, chat_style.M2UGEN)
    assert seen["route"] == "text"
