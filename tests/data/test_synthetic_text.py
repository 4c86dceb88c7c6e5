"""data.synthetic_text: held-out phrasings are new sentences made of known tokens, captions and
answers name what they describe, and templates are recognised whatever fills them."""

from __future__ import annotations

import re

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
    texts += [t for pairs in st.QA.values() for pair in pairs for t in pair]
    texts += [t for pair in st.ALPACA for t in pair]
    texts += list(st.DESCRIBE_QUESTIONS)
    texts += [t for q, a in st.IMAGE_QUESTIONS + st.VIDEO_QUESTIONS for t in (q, a) if t]
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
    for attr, pairs in st.QA.items():
        for _, answer in pairs:
            assert "{" + attr + "}" in answer
    for questions, space in ((st.IMAGE_QUESTIONS, IMAGE_ATTRIBUTES),
                             (st.VIDEO_QUESTIONS, VIDEO_ATTRIBUTES)):
        for _, answer in questions:
            assert answer is None or re.findall(r"\{([a-z]+)\}", answer)[0] in space


def test_music_template_of_finds_the_template_whatever_fills_it() -> None:
    attrs = {"instrument": "flute", "register": "low", "tempo": "fast"}
    for k, caption in enumerate(st.music_captions(attrs)):
        assert st.music_template_of(f"Sure. {caption}") == k
        assert st.music_template_of(caption.replace("flute", "banjo")) == k
    assert st.music_template_of("A low register green") is None
