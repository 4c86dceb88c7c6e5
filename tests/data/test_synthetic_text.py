"""data.synthetic_text: held-out phrasings are new sentences made of known tokens, captions and
answers name what they describe, and templates are recognised whatever fills them."""

from __future__ import annotations

import re

import numpy as np
import pytest

from data import synthetic_text as st
from data.synthetic_attributes import (
    AUDIO_ATTRIBUTES,
    IMAGE_ATTRIBUTES,
    VIDEO_ATTRIBUTES,
    draw_attrs,
)

SPACES = {"audio": AUDIO_ATTRIBUTES, "image": IMAGE_ATTRIBUTES, "video": VIDEO_ATTRIBUTES}


@pytest.fixture(scope="module")
def tok():
    from llama.tokenizer import load_tokenizer

    return load_tokenizer("tiny")


def _tokens(tok, template: str) -> set[int]:
    return set(tok.encode(re.sub(r"\{[a-z]+\}", "", template)))


def _flat(groups) -> tuple[str, ...]:
    return tuple(t for g in (groups.values() if isinstance(groups, dict) else [groups])
                 for t in g)


def _training_texts() -> list[str]:
    """Every sentence (template) a training item can contain: questions, answers, captions,
    requests, text-only exchanges."""
    texts = list(st.MUSIC_TEMPLATES + st.IMAGE_TEMPLATES + st.VIDEO_TEMPLATES)
    texts += [st.MUSIC_OPENER, *st.ANSWER_BASIS.values()]
    for modality, topics in st.UNDERSTANDING.items():
        for asked, (_, answers) in topics.items():
            texts += [*st.understanding_questions(modality, asked), *answers]
    texts += [t for pair in st.ALPACA for t in pair]
    texts += _flat(st.MUIMAGE_REQUESTS) + _flat(st.MUVIDEO_REQUESTS) + _flat(st.EDIT_REQUESTS)
    return texts


def test_held_out_requests_use_only_tokens_of_training_requests(tok) -> None:
    """A model trained from scratch has never seen a token the training requests lack: the
    held-out phrasings recombine known tokens into new sentences (slots aside)."""
    train = _flat(st.MUIMAGE_REQUESTS) + _flat(st.MUVIDEO_REQUESTS) + _flat(st.EDIT_REQUESTS)
    held = (_flat(st.MUIMAGE_REQUESTS_HELD_OUT) + _flat(st.MUVIDEO_REQUESTS_HELD_OUT)
            + _flat(st.EDIT_REQUESTS_HELD_OUT))
    known = set().union(*(_tokens(tok, t) for t in train))
    assert not set(held) & set(train)
    for template in held:
        unknown = _tokens(tok, template) - known
        assert not unknown, (template, [tok.decode([i]) for i in unknown])
        named = re.findall(r"\b(music|song|tune|melody|instrument|register|tempo)\b", template)
        assert named, f"{template!r} does not say what to make or change"


def test_held_out_understanding_requests_are_new_sentences_of_known_tokens(tok) -> None:
    train = _training_texts()
    known = set().union(*(_tokens(tok, t) for t in train))
    for modality, pairs in st.UNDERSTANDING_REQUESTS_HELD_OUT.items():
        assert len(pairs) >= 4, modality
        for request, asked in pairs:
            assert request not in train, request
            unknown = _tokens(tok, request) - known
            assert not unknown, (request, [tok.decode([i]) for i in unknown])
            assert asked is None or asked in SPACES[modality], (modality, asked)
        assert any(a is None for _, a in pairs), f"{modality}: no request for a description"


def test_answers_and_captions_name_every_value() -> None:
    for i in range(16):
        attrs = draw_attrs(AUDIO_ATTRIBUTES, i)
        for caption in st.music_captions(attrs) + [st.music_answer_caption(attrs)]:
            assert set(attrs.values()) <= set(re.findall(r"[a-z]+", caption.lower()))
        assert st.music_answer_caption(attrs) == st.music_captions(attrs)[st.ANSWER_TEMPLATE]
    for modality, topics in st.UNDERSTANDING.items():
        for asked, (_, answers) in topics.items():
            assert bool(answers) == (asked is not None), (modality, asked)
            for answer in answers:
                assert "{" + str(asked) + "}" in answer and asked in SPACES[modality]


def test_grammars_expand_to_sentences_and_leave_the_held_out_ones_out() -> None:
    grammar = ((("Play", "Make"), ("this", "that"), ("fast.", "slow.")), (("Stop?",),))
    assert st.expand(grammar) == ("Play this fast.", "Play this slow.", "Play that fast.",
                                  "Play that slow.", "Make this fast.", "Make this slow.",
                                  "Make that fast.", "Make that slow.", "Stop?")
    assert "Make this slow." not in st.training_phrasings(grammar, ("Make this slow.",))
    for grammar, held in ((st.MUIMAGE_GRAMMAR, st.MUIMAGE_REQUESTS_HELD_OUT),
                          (st.MUVIDEO_GRAMMAR, st.MUVIDEO_REQUESTS_HELD_OUT),
                          *((st.EDIT_GRAMMAR[a], st.EDIT_REQUESTS_HELD_OUT[a])
                            for a in st.EDIT_GRAMMAR)):
        sentences = st.expand(grammar)
        assert len(sentences) >= 30
        # some held-out phrasings are sentences of the grammar, some a shape it does not have
        assert 0 < sum(h in sentences for h in held) < len(held), held
    for modality, pairs in st.UNDERSTANDING_REQUESTS_HELD_OUT.items():
        every = {q for asked in st.UNDERSTANDING[modality]
                 for q in st.expand(st.UNDERSTANDING[modality][asked][0])}
        assert 0 < sum(q in every for q, _ in pairs) < len(pairs), modality


def test_understanding_turns_answer_what_they_ask() -> None:
    rng = np.random.default_rng(0)
    attrs = {"instrument": "flute", "register": "low", "tempo": "fast"}
    for _ in range(50):
        q, a = st.understanding_turn("audio", "tempo", attrs, "A caption.", rng)
        assert "fast" in a and q in st.understanding_questions("audio", "tempo")
    assert st.understanding_turn("audio", None, attrs, "A caption.", rng)[1] == "A caption."


def test_music_template_of_finds_the_template_whatever_fills_it() -> None:
    attrs = {"instrument": "flute", "register": "low", "tempo": "fast"}
    for k, caption in enumerate(st.music_captions(attrs)):
        assert st.music_template_of(f"Sure. {caption}") == k
        assert st.music_template_of(caption.replace("flute", "banjo")) == k
    assert st.music_template_of("A low register green") is None
