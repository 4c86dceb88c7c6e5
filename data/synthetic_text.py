"""The words of the synthetic data (`data.synthetic`): caption templates, questions and answers,
the text-only exchanges, and the phrasings of music requests (training and held-out).

Captions always name every attribute value as a word. Held-out phrasings are sentences no
training item has, built only from tokens the training phrasings use (why: docs/SYNTHETIC.md,
"What is held out"); `tests/data/test_synthetic_text.py` checks both.
"""

from __future__ import annotations

import re

import numpy as np

from data.synthetic_attributes import AUDIO_ATTRIBUTES, Attrs

# Text


MUSIC_TEMPLATES = (
    "A {tempo} {instrument} melody in a {register} register.",
    "Solo {instrument} music with a {tempo} tempo, played in the {register} register.",
    "This is a {tempo} tune on the {instrument}, {register} register.",
    "The {instrument} plays {tempo} notes in a {register} register.",
    "A {register} register {instrument} piece at a {tempo} tempo.",
)
IMAGE_TEMPLATES = (
    "A {size} {colour} object on a grey background.",
    "An image of a {size} {colour} shape.",
    "A picture showing one {colour} object; the object is {size}.",
    "A {colour} shape, {size}, somewhere in the image.",
)
VIDEO_TEMPLATES = (
    "A video of a {colour} object; the scene is {brightness}.",
    "A {colour} shape drifts while the clip keeps {brightness}.",
    "A clip with a {colour} object, {brightness} over time.",
    "The video shows a {colour} shape and the picture is {brightness}.",
)


ANSWER_TEMPLATE = 0  # the MUSIC_TEMPLATES entry music answers use


def fill(templates: tuple[str, ...], attrs: Attrs, rng: np.random.Generator) -> str:
    return templates[int(rng.integers(0, len(templates)))].format(**attrs)


def music_answer(basis: Attrs, modality: str, music: Attrs) -> str:
    """A music answer: the opener, the restated basis (the input's attributes; for an edit, the
    input music's), then the music's caption in the answer template."""
    fields = dict(basis)
    if modality == "audio":
        source = music_answer_caption(basis)
        fields = {"source": source[0].lower() + source[1:]}
    restated = ANSWER_BASIS[modality].format(**fields)
    return f"{MUSIC_OPENER} {restated} {music_answer_caption(music)}"


def music_answer_caption(attrs: Attrs) -> str:
    """The caption a music answer writes: one template, so every answer names the attributes in
    one order (tempo, instrument, register) and the projector's target follows the words."""
    return MUSIC_TEMPLATES[ANSWER_TEMPLATE].format(**attrs)


def music_caption(attrs: Attrs, rng: np.random.Generator) -> str:
    return fill(MUSIC_TEMPLATES, attrs, rng)


def music_captions(attrs: Attrs) -> list[str]:
    """Every caption template filled with `attrs`: all the ways the data describes that music."""
    return [t.format(**attrs) for t in MUSIC_TEMPLATES]


def _template_pattern(template: str) -> str:
    pattern = re.escape(template)
    for slot in AUDIO_ATTRIBUTES:
        pattern = pattern.replace(re.escape("{" + slot + "}"), r"[a-z]+")
    return pattern


def music_template_of(text: str) -> int | None:
    """Index (into `music_captions`) of the caption template that `text` contains, whatever words
    fill its slots; None when it contains none."""
    found = last_music_caption(text)
    return None if found is None else found[0]


def last_music_caption(text: str) -> tuple[int, str] | None:
    """(template index, the caption) of the caption that ends last in `text` (a music answer may
    first restate what it was made from), whatever words fill its slots; None if there is none."""
    best: tuple[int, int, str] | None = None
    for k, template in enumerate(MUSIC_TEMPLATES):
        for m in re.finditer(_template_pattern(template), text, flags=re.IGNORECASE):
            if best is None or m.end() > best[0]:
                best = (m.end(), k, m.group(0))
    return None if best is None else (best[1], best[2])


def image_caption(attrs: Attrs, rng: np.random.Generator) -> str:
    return fill(IMAGE_TEMPLATES, attrs, rng)


def video_caption(attrs: Attrs, rng: np.random.Generator) -> str:
    return fill(VIDEO_TEMPLATES, attrs, rng)


# MusicQA: (question, answer) per attribute, and requests for a description (answered with the
# clip's caption). Several phrasings each, some with the nouns and verbs music requests use
# ("song", "tune", "Give me"), so that the intent, not a word, decides whether music is made.
QA = {
    "instrument": (
        ("What instrument is playing?", "The instrument is the {instrument}."),
        ("Which instrument do you hear in this music?", "I hear a {instrument}."),
        ("Name the instrument in this song.", "It is played on the {instrument}."),
        ("What instrument plays this tune?", "A {instrument} plays it."),
        ("Describe the instrument you hear.", "It sounds like a {instrument}."),
        ("What is the instrument of this music?", "The instrument is the {instrument}."),
    ),
    "register": (
        ("Is this music in a low or high register?", "It is in a {register} register."),
        ("Describe the register of the melody.", "The melody is in the {register} register."),
        ("What register is this song in?", "This song is in the {register} register."),
        ("Is the tune low or high?", "The register is {register}."),
        ("Describe the register of this piece.", "The piece is in a {register} register."),
        ("What is the register of this music?", "It is in a {register} register."),
    ),
    "tempo": (
        ("Is the tempo slow or fast?", "The tempo is {tempo}."),
        ("How fast is this music?", "It is {tempo} music."),
        ("What is the tempo of this song?", "The song is {tempo}."),
        ("Is this tune slow or fast?", "This tune is {tempo}."),
        ("Describe the tempo of this tune.", "The tempo is {tempo}."),
    ),
}
DESCRIBE_QUESTIONS = (
    "Describe the music.",
    "What do you hear in this clip?",
    "Describe this song for me.",
    "What does this tune sound like?",
    "Give me a description of this melody.",
    "What is this music like?",
    "Tell me about this music.",
)
# The questions an edit request may follow (its input music's QA and descriptions).
AUDIO_QUESTIONS: tuple[tuple[str, str | None], ...] = (
    tuple(pair for pairs in QA.values() for pair in pairs)
    + tuple((q, None) for q in DESCRIBE_QUESTIONS))
# Image and video understanding: the first turn of some MUImage / MUVideo training items (the
# second asks for music), so that describing a picture is learned apart from scoring it.
IMAGE_QUESTIONS = (
    ("Describe the image.", None),
    ("What do you see in this picture?", None),
    ("Give me a description of this photo.", None),
    ("What is shown in the image?", None),
    ("What colour is the object?", "The object is {colour}."),
    ("Which colour is the shape in this photo?", "The shape is {colour}."),
    ("Is the object in the picture small or large?", "The object is {size}."),
    ("How large is the shape in this image?", "The shape is {size}."),
)
VIDEO_QUESTIONS = (
    ("Describe the video.", None),
    ("What happens in this clip?", None),
    ("Give me a description of this video.", None),
    ("What is shown in the clip?", None),
    ("What colour is the shape in the video?", "The shape is {colour}."),
    ("Which colour is the object in this clip?", "The object is {colour}."),
    ("Is the clip brightening or darkening?", "The scene is {brightness}."),
    ("Does this video get brighter or darker?", "It is {brightness}."),
)

ALPACA = (
    ("Name an instrument with keys and hammers.", "The piano."),
    ("Name an instrument that is played by blowing across a hole.", "The flute."),
    ("Name an instrument with six strings that is often plucked.", "The guitar."),
    ("Name an instrument with pipes and a keyboard.", "The organ."),
    ("What is the opposite of slow?", "Fast."),
    ("What is the opposite of fast?", "Slow."),
    ("What is the opposite of low?", "High."),
    ("What is the opposite of high?", "Low."),
    ("What is the opposite of small?", "Large."),
    ("What is the opposite of large?", "Small."),
    ("What colour do you get by mixing red and green light?", "Yellow."),
    ("What colour is the sky on a clear day?", "Blue."),
    ("What colour is fresh grass?", "Green."),
    ("What colour is a ripe tomato?", "Red."),
    ("What does tempo mean in music?", "Tempo is the speed of the music."),
    ("What does register mean in music?", "Register is how low or high the notes are."),
    ("Write a short sentence about a song.", "The song has a bright melody."),
    ("Say hello.", "Hello!"),
    ("Count from one to three.", "One, two, three."),
    ("Is a video made of images?", "Yes, a video is a sequence of images."),
)

# Training phrasings: several per task, so that the intent (make music) is learned apart from the
# wording and carries over to the held-out phrasings below.
MUIMAGE_REQUESTS = (
    "Compose {tempo} music for this image.",
    "Generate {tempo} music that matches this picture.",
    "Write a {tempo} song inspired by this image.",
    "Produce a {tempo} tune for this photo.",
    "I need {tempo} music that suits this image.",
    "Give me a {tempo} melody for this picture.",
)
MUVIDEO_REQUESTS = (
    "Compose music in a {register} register for this video.",
    "Generate {register} register music that fits this clip.",
    "Write a song for this video, in the {register} register.",
    "Produce {register} register music for this video.",
    "I need a tune in the {register} register for this clip.",
    "Give me {register} register music for this clip.",
)
# Held-out phrasings: only test items use them (the routing metric sees unseen instructions).
# Each is a sentence no training item has, built from tokens the training requests use: a model
# trained from scratch cannot know a word it never saw ("Score this video..." was routed on 19 of
# 21 items for one seed and on 4 of 23 for another), so these test the intent carried over to a
# new wording, not a guess at an unknown word. Each also names what it asks for (music, song,
# tune, melody, or the attribute it changes): "Make this fast." named nothing and was answered
# as a caption request on every item for two seeds.
MUIMAGE_REQUESTS_HELD_OUT = (
    "Write a {tempo} melody that suits this picture.",
    "I need a {tempo} song that matches this image.",
)
MUVIDEO_REQUESTS_HELD_OUT = (
    "Compose a song in the {register} register for this clip.",
    "I need {register} register music that fits this video.",
)
EDIT_REQUESTS_HELD_OUT = {
    "instrument": ("Rewrite this for a {instrument}.",
                   "Play this music with the {instrument} instead."),
    "register": ("Move this to the {register} register.",
                 "Put this in the {register} register."),
    "tempo": ("Make the tempo of this music {tempo}.",
              "Rework the tempo of this music to {tempo}."),
}
EDIT_REQUESTS = {
    "instrument": (
        "Change the instrument of this music to the {instrument}.",
        "Play this with a {instrument} instead.",
        "Rewrite this music for the {instrument}.",
        "Turn this into {instrument} music.",
        "Give me this music on the {instrument}.",
        "Make this music with a {instrument}.",
    ),
    "register": (
        "Move this music to a {register} register.",
        "Play this in the {register} register.",
        "Put this music in a {register} register.",
        "Change the register of this music to {register}.",
        "Turn this into {register} register music.",
        "Give me this music in the {register} register.",
    ),
    "tempo": (
        "Make this music {tempo}.",
        "Change the tempo of this music to {tempo}.",
        "Rework this music to be {tempo}.",
        "Play this music at a {tempo} tempo.",
        "Turn this into {tempo} music.",
        "Give me this music with a {tempo} tempo.",
    ),
}
# Every music answer opens with the same word, so that whether to make music is one decision
# at the first token: with three openers the music answers' probability was split three ways
# (one of them, "This", also opens captions and answers), and a request phrased in a new way was
# answered as a question whenever any one reply opening beat each of the three.
MUSIC_OPENER = "Sure."
# What a music answer restates before its caption: the input's attribute words (an image or a
# video), or the music it edits. Each slot of the caption that follows then has its evidence in
# the words just written (the colour for the instrument, the size for the register, ...), not
# only in the input's features, where the training combinations offer a shortcut: every pair of
# attribute values in a held-out combination occurs in training, always with the other value of
# the third, so reading two of them is enough to guess the third on every training item.
ANSWER_BASIS = {
    "image": "The picture is {colour} and {size}.",
    "video": "The video is {colour} and {brightness}.",
    "audio": "It was {source}",
}

# Held-out understanding requests (modality -> (request, the attribute it asks about; None: a
# description of every attribute)): only `Evaluation.synthetic` asks them, of held-out media, to
# measure that captioning and questions phrased in ways no training item uses are not answered
# with music. Each is a sentence no training text has, made only of tokens training texts use.
UNDERSTANDING_REQUESTS_HELD_OUT: dict[str, tuple[tuple[str, str | None], ...]] = {
    "audio": (
        ("Describe this music.", None),
        ("What instrument do you hear in this song?", "instrument"),
        ("Is this song slow or fast?", "tempo"),
        ("What do you hear in this song?", None),
        ("Is this melody in a low or high register?", "register"),
        ("Describe the instrument of this tune.", "instrument"),
        ("What is the tempo of this music?", "tempo"),
        ("Which instrument plays this piece?", "instrument"),
    ),
    "image": (
        ("Describe this image.", None),
        ("What colour is the object in this picture?", "colour"),
        ("Is the shape in this image small or large?", "size"),
        ("What is in this picture?", None),
        ("Describe the object in this photo.", None),
    ),
    "video": (
        ("Describe this video.", None),
        ("What colour is the shape in this clip?", "colour"),
        ("Is the scene in this video brightening or darkening?", "brightness"),
        ("What is in this clip?", None),
        ("Describe the object in this video.", None),
    ),
}

