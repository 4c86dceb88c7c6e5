"""The words of the synthetic data (`data.synthetic`): caption templates, questions and answers,
the text-only exchanges, and the phrasings of music requests (training and held-out).

Captions always name every attribute value as a word. Held-out phrasings are sentences no
training item has, built only from tokens the training phrasings use (why: docs/SYNTHETIC.md,
"What is held out"); `tests/data/test_synthetic_text.py` checks both.
"""

from __future__ import annotations

import itertools
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


# Phrasings are generated from small grammars: a sentence picks one shape, then one choice per
# part (joined by spaces), so that every verb meets every noun and object. A tiny model trained on
# a handful of fixed sentences decides by their surface (on one seed "What is the tempo of this
# music?" made music because the edit requests said "the tempo of this music"); across many
# recombinations only the intent (asking versus making) predicts the answer. Held-out phrasings
# (below) are removed from what training draws from, and some lie outside the grammars.
Grammar = tuple[tuple[tuple[str, ...], ...], ...]


def expand(grammar: Grammar) -> tuple[str, ...]:
    """Every sentence of `grammar`, in a fixed order, without repeats."""
    out: dict[str, None] = {}
    for shape in grammar:
        for words in itertools.product(*shape):
            text = " ".join(w for w in words if w)
            out[text.replace(" ?", "?").replace(" .", ".")] = None
    return tuple(out)


def training_phrasings(grammar: Grammar, held_out: tuple[str, ...]) -> tuple[str, ...]:
    """The sentences of `grammar` that training may use: all but the held-out ones."""
    return tuple(t for t in expand(grammar) if t not in set(held_out))


_OF_MUSIC = ("this music", "this song", "this tune", "this melody", "this piece", "the music",
             "this clip")
_OF_IMAGE = ("this image", "this picture", "this photo", "the image", "the picture")
_OF_VIDEO = ("this video", "this clip", "the video", "the clip")
# Imperative requests about something *in* the input: music requests say "music in a low
# register ... for this clip", so a grammar without these taught "imperative + in -> music"
# ("Describe the object in this photo." made music on 11 of 11 items for four of five seeds).
_THING_IN = ("the object in", "the shape in")
_IN_CLIP = ("the music in this clip", "the melody in this clip", "the song in this clip",
            "the tune in this clip", "the music in the clip")
_TELL_COLOUR = ("Tell me the colour of", "Describe the colour of", "Name the colour of")

# Understanding: modality -> attribute (None: a description, answered with the caption) ->
# (question grammar, answer templates). MusicQA asks the audio ones; a training MUImage, MUVideo
# or MUEdit item may first ask one about its input.
UNDERSTANDING: dict[str, dict[str | None, tuple[Grammar, tuple[str, ...]]]] = {
    "audio": {
        "instrument": (
            ((("What instrument plays", "Which instrument plays", "What instrument do you hear in",
               "Which instrument is in"), _OF_MUSIC, ("?",)),
             (("Name the instrument of", "Describe the instrument of", "Tell me the instrument of"),
              _OF_MUSIC, (".",)),
             (("What instrument is playing?", "Which instrument do you hear?"),),
             (("What instrument plays", "Which instrument plays"), _IN_CLIP, ("?",))),
            ("The instrument is the {instrument}.", "I hear a {instrument}.",
             "It is played on the {instrument}.", "A {instrument} plays it.",
             "It sounds like a {instrument}."),
        ),
        "register": (
            ((("Is",), _OF_MUSIC, ("in a low or high register?", "in a high or low register?",
                                   "low or high?")),
             (("What register is",), _OF_MUSIC, ("in?",)),
             (("Describe the register of", "Tell me the register of"), _OF_MUSIC, (".",))),
            ("It is in a {register} register.", "The melody is in the {register} register.",
             "The register is {register}.", "It is played in the {register} register."),
        ),
        "tempo": (
            ((("Is",), _OF_MUSIC, ("slow or fast?", "fast or slow?")),
             (("What is the tempo of", "How fast is"), _OF_MUSIC, ("?",)),
             (("Describe the tempo of", "Tell me the tempo of"), _OF_MUSIC, (".",)),
             (("Is the tempo slow or fast?",),)),
            ("The tempo is {tempo}.", "It is {tempo} music.", "It is {tempo}.",
             "The tempo of this music is {tempo}."),
        ),
        None: (
            ((("Describe", "Tell me about", "Give me a description of"), _OF_MUSIC, (".",)),
             (("What do you hear in", "What is in"), _OF_MUSIC, ("?",)),
             (("What is",), _OF_MUSIC, ("like?",)),
             (("Describe", "Tell me about"), _IN_CLIP, (".",))),
            (),
        ),
    },
    "image": {
        "colour": (
            ((("What colour is the object in", "What colour is the shape in",
               "Which colour is the object in", "Which colour is the shape in"), _OF_IMAGE,
              ("?",)),
             (("What colour is the object?", "What colour is the shape?"),),
             (_TELL_COLOUR, _THING_IN, _OF_IMAGE, (".",))),
            ("The object is {colour}.", "The shape is {colour}.", "It is {colour}."),
        ),
        "size": (
            ((("Is the object in", "Is the shape in"), _OF_IMAGE,
              ("small or large?", "large or small?")),
             (("How large is the object in", "How large is the shape in"), _OF_IMAGE, ("?",))),
            ("The object is {size}.", "The shape is {size}.", "It is {size}."),
        ),
        None: (
            ((("Describe", "Give me a description of", "Tell me about"), _OF_IMAGE, (".",)),
             (("What do you see in", "What is in", "What is shown in"), _OF_IMAGE, ("?",)),
             (("Describe", "Tell me about"), _THING_IN, _OF_IMAGE, (".",))),
            (),
        ),
    },
    "video": {
        "colour": (
            ((("What colour is the object in", "What colour is the shape in",
               "Which colour is the object in", "Which colour is the shape in"), _OF_VIDEO,
              ("?",)),
             (_TELL_COLOUR, _THING_IN, _OF_VIDEO, (".",))),
            ("The object is {colour}.", "The shape is {colour}.", "It is {colour}."),
        ),
        "brightness": (
            ((("Is", "Is the scene in"), _OF_VIDEO, ("brightening or darkening?",)),
             (("Is",), _OF_VIDEO, ("darkening or brightening?",)),
             (("Does",), _OF_VIDEO, ("get brighter or darker?",))),
            ("The scene is {brightness}.", "It is {brightness}.", "The video is {brightness}."),
        ),
        None: (
            ((("Describe", "Give me a description of", "Tell me about"), _OF_VIDEO, (".",)),
             (("What happens in", "What is in", "What do you see in", "What is shown in"),
              _OF_VIDEO, ("?",)),
             (("Describe", "Tell me about"), _THING_IN, _OF_VIDEO, (".",))),
            (),
        ),
    },
}

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

_MAKE = ("Compose", "Generate", "Write", "Produce", "Create", "Make", "Give me", "I need",
         "I want")
_OF_EDITED = ("this", "this music", "this song", "this tune", "this piece")
MUIMAGE_GRAMMAR: Grammar = (
    (_MAKE, ("{tempo} music", "a {tempo} song", "a {tempo} tune", "a {tempo} melody",
             "a {tempo} piece"),
     ("for this image.", "for this picture.", "for this photo.", "that matches this image.",
      "that suits this picture.", "that fits this photo.", "inspired by this image.",
      "to go with this picture.")),
    # the tempo phrase also in the middle of an image request ("at a slow tempo" was only in
    # edits, and "Write music for this picture at a slow tempo." went unanswered on one seed)
    (_MAKE, ("music at a {tempo} tempo", "a song at a {tempo} tempo",
             "a tune with a {tempo} tempo", "a melody with a {tempo} tempo",
             "a piece at a {tempo} tempo"),
     ("for this image.", "for this picture.", "for this photo.", "to go with this picture.")),
    # ... and after the picture: with the caption-like understanding requests above ("Describe
    # the object in this photo."), a request whose attribute came last was answered with a
    # caption ("Write music for this picture at a slow tempo.": 17 of 19 items on one seed)
    (_MAKE, ("music", "a song", "a tune", "a melody", "a piece"),
     ("for this image", "for this photo", "to go with this picture"),
     ("with a {tempo} tempo.", "at a {tempo} tempo.")),
)
MUVIDEO_GRAMMAR: Grammar = (
    (_MAKE, ("music in a {register} register", "{register} register music",
             "a song in the {register} register", "a {register} register tune",
             "a melody in the {register} register", "a piece in a {register} register"),
     ("for this video.", "for this clip.", "that fits this video.", "that matches this clip.",
      "to go with this video.", "inspired by this clip.")),
    (_MAKE, ("music", "a song", "a tune", "a melody", "a piece"),
     ("for this clip", "to go with this video", "that fits this clip"),
     ("in a {register} register.", "in the {register} register.")),
)
EDIT_GRAMMAR: dict[str, Grammar] = {
    "instrument": (
        (("Play", "Rewrite", "Redo", "Arrange", "Give me"), _OF_EDITED,
         ("with a {instrument}.", "for the {instrument}.", "on the {instrument}.",
          "with the {instrument} instead.", "on a {instrument} instead.")),
        (("Change the instrument of", "Set the instrument of"), _OF_EDITED[1:],
         ("to the {instrument}.", "to a {instrument}.")),
        (("Turn",), _OF_EDITED[:3], ("into {instrument} music.",)),
    ),
    "register": (
        (("Move", "Put", "Play", "Shift", "Set"), _OF_EDITED,
         ("in a {register} register.", "in the {register} register.", "to a {register} register.",
          "to the {register} register.", "into the {register} register.")),
        (("Change the register of",), _OF_EDITED[1:], ("to {register}.",)),
        # "the register of this music" is also in questions; here it is also made something
        (("Make", "Set"), ("the register of this music", "the register of this song",
                           "the register of this tune", "the register of this piece"),
         ("{register}.", "to {register}.")),
        (("Turn",), _OF_EDITED[:3], ("into {register} register music.",)),
    ),
    "tempo": (
        (("Make", "Change", "Rework", "Set"),
         ("the tempo of this music", "the tempo of this song", "the tempo of this tune",
          "the tempo of this piece"), ("{tempo}.", "to {tempo}.")),
        (("Play", "Make", "Rework", "Redo"), _OF_EDITED[:4],
         ("at a {tempo} tempo.", "with a {tempo} tempo.", "{tempo}.")),
        (("Turn",), _OF_EDITED[:3], ("into {tempo} music.",)),
    ),
}
# Held-out phrasings: only test items use them (the routing metric sees unseen instructions).
# Each is a sentence no training item has, built from tokens the training requests use: a model
# trained from scratch cannot know a word it never saw ("Score this video..." was routed on 19 of
# 21 items for one seed and on 4 of 23 for another), so these test the intent carried over to a
# new wording, not a guess at an unknown word. Each also names what it asks for (music, song,
# tune, melody, or the attribute it changes): "Make this fast." named nothing and was answered
# as a caption request on every item for two seeds. The first two of each set are sentences of
# the grammar above (removed from training); the last is a shape the grammar does not have.
MUIMAGE_REQUESTS_HELD_OUT = (
    "Write a {tempo} melody that suits this picture.",
    "I need a {tempo} song that matches this image.",
    "Write music for this picture at a {tempo} tempo.",
)
MUVIDEO_REQUESTS_HELD_OUT = (
    "Compose a song in the {register} register for this clip.",
    "I need {register} register music that fits this video.",
    "Write music for this video in the {register} register.",
)
EDIT_REQUESTS_HELD_OUT = {
    "instrument": ("Play this music with the {instrument} instead.",
                   "Rewrite this tune for the {instrument}.",
                   "Rewrite this for a {instrument}."),
    "register": ("Move this to the {register} register.",
                 "Put this in the {register} register.",
                 "Change this tune to a {register} register."),
    "tempo": ("Make the tempo of this music {tempo}.",
              "Rework the tempo of this music to {tempo}.",
              "Change this music to a {tempo} tempo."),
}
MUIMAGE_REQUESTS = training_phrasings(MUIMAGE_GRAMMAR, MUIMAGE_REQUESTS_HELD_OUT)
MUVIDEO_REQUESTS = training_phrasings(MUVIDEO_GRAMMAR, MUVIDEO_REQUESTS_HELD_OUT)
EDIT_REQUESTS = {attr: training_phrasings(g, EDIT_REQUESTS_HELD_OUT[attr])
                 for attr, g in EDIT_GRAMMAR.items()}

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
        ("Tell me about the music in this clip.", None),
        ("What is the instrument in this song?", "instrument"),
        ("Is the tempo of this melody slow or fast?", "tempo"),
        ("Which register is this tune in?", "register"),
    ),
    "image": (
        ("Describe this image.", None),
        ("What colour is the object in this picture?", "colour"),
        ("Is the shape in this image small or large?", "size"),
        ("What is in this picture?", None),
        ("Describe the object in this photo.", None),
        ("Tell me the colour of the object in this image.", "colour"),
        ("Which colour is this object?", "colour"),
    ),
    "video": (
        ("Describe this video.", None),
        ("What colour is the shape in this clip?", "colour"),
        ("Is the scene in this video brightening or darkening?", "brightness"),
        ("What is in this clip?", None),
        ("Describe the object in this video.", None),
        ("Tell me about the object in this clip.", None),
        ("Which colour is this shape?", "colour"),
    ),
}



# Text-only requests to compose, as a user types them in the demo (no training text is one: text
# to music is learned from stage 2's captions and the requests wrapping them, `data.mixes`):
# only `Evaluation.synthetic` asks them, for every attribute combination. The last two name
# fewer than all three attributes.
TEXT_REQUESTS_HELD_OUT: tuple[str, ...] = (
    "Compose a {tempo} {instrument} melody in a {register} register.",
    "Now compose a {tempo} {instrument} piece in a {register} register.",
    "Write a {tempo} {instrument} tune in the {register} register.",
    "Make {tempo} {instrument} music in a {register} register.",
    "Compose a {tempo} {instrument} melody",
    "Give me a {register} register {instrument} song.",
)


def understanding_questions(modality: str, asked: str | None) -> tuple[str, ...]:
    """The training questions about `asked` (None: requests for a description) of a modality's
    input: its grammar's sentences, without any held-out understanding request (whatever its
    modality: "What is in this clip?" is held out for videos, so no clip is asked it)."""
    held = tuple(q for pairs in UNDERSTANDING_REQUESTS_HELD_OUT.values() for q, _ in pairs)
    return training_phrasings(UNDERSTANDING[modality][asked][0], held)


def understanding_turn(modality: str, asked: str | None, attrs: Attrs, caption: str,
                       rng: np.random.Generator) -> tuple[str, str]:
    """(question, answer) about an input with attributes `attrs` and caption `caption`."""
    questions = understanding_questions(modality, asked)
    question = questions[int(rng.integers(0, len(questions)))]
    answers = UNDERSTANDING[modality][asked][1]
    if asked is None:
        return question, caption
    return question, answers[int(rng.integers(0, len(answers)))].format(**attrs)
