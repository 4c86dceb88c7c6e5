"""How a model is talked to: its prompt template, when its answer ends, how its music is made and
which media it accepts. One `ChatStyle` object (like litgpt's `PromptStyle`) travels with the
weights: it is a field of `M2UGenConfig`, so it is written into a checkpoint's `config.json` and
read back from there, never from the code's current default.

Why it travels: a model only answers well in the layout it was trained on, and the tiny model's
tokenizer was even trained on the template's text. Changing the default template in this file
therefore changes new models only; every checkpoint keeps the style it was written with, and a
checkpoint written before styles were stored loads with `FIRST_STYLE` (the template all of them
were trained on, pinned below).

The styles here:
- `M2UGEN` (our models, the default): Alpaca's no-input template, the answer ends at EOS or at its
  first [AUD] token (the other seven are appended, as training lays them out), music from the
  output projector, every modality.
- `PUBLISHED_M2UGEN`, `PUBLISHED_MUMU_LLAMA` (the released checkpoints, docs/RELEASES.md): the same
  template, but decoding as the published demo did: EOS does not stop, the answer stops when its
  last three tokens decode to "\\n###" (the newer release also right after the 8th [AUD] token),
  music by re-prompting the decoder with the answer text; MuMu-LLaMA takes no video (its published
  video path could not run, so those weights never trained).
"""

from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

__all__ = [
    "ALL_MODALITIES",
    "ChatStyle",
    "ChatStyleError",
    "DEFAULT",
    "FIRST_STYLE",
    "M2UGEN",
    "PUBLISHED_M2UGEN",
    "PUBLISHED_MUMU_LLAMA",
    "PUBLISHED_STYLES",
    "StopRule",
    "UnsupportedModalityError",
]

ALL_MODALITIES: tuple[str, ...] = ("audio", "image", "video")
AudRule = Literal["first", "after_run", "continue"]
MusicRoute = Literal["projector", "text"]

# Alpaca's no-input template (docs/MODEL.md section 2): the first turn carries the preamble,
# later turns only their instruction; the answer follows "### Response:" directly.
ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")
ALPACA_FIRST_TURN = ALPACA_PREAMBLE + "\n\n### Instruction:\n{instruction}\n\n### Response:"
ALPACA_NEXT_TURN = "\n\n### Instruction:\n{instruction}\n\n### Response:"


class ChatStyleError(ValueError):
    """A stored chat style is malformed (the message names the field)."""


class UnsupportedModalityError(ValueError):
    """The model's chat style does not accept this kind of media."""


@dataclass(frozen=True)
class StopRule:
    """When an answer ends.

    eos: the EOS token ends it. strings: decoded text that ends it. tail_tokens: 0 = a stop string
    anywhere in the answer ends it and is cut off; k > 0 = the answer ends when its last k tokens
    decode (special tokens as text) to exactly a stop string, and those tokens stay in the
    generated ids (the published check, k = 3). aud: "first" = the first [AUD] token ends the
    answer and the rest of [AUD0..7] is appended (our training layout); "after_run" = [AUD] tokens
    are generated like text and the answer ends right after the 8th of an in-order [AUD0..7] run
    (other tokens may come between them, as the published counter allowed); "continue" = [AUD]
    tokens do not end the answer.
    """

    eos: bool = True
    strings: tuple[str, ...] = ()
    tail_tokens: int = 0
    aud: AudRule = "first"

    def __post_init__(self) -> None:
        if self.aud not in ("first", "after_run", "continue"):
            raise ChatStyleError(f"chat_style.stop.aud must be first, after_run or continue, "
                                 f"got {self.aud!r}")
        if any(not isinstance(s, str) or not s for s in self.strings):
            raise ChatStyleError(f"chat_style.stop.strings must be non-empty strings, got "
                                 f"{list(self.strings)}")
        if isinstance(self.tail_tokens, bool) or not isinstance(self.tail_tokens, int) \
                or self.tail_tokens < 0:
            raise ChatStyleError(f"chat_style.stop.tail_tokens must be an integer >= 0, got "
                                 f"{self.tail_tokens!r}")


@dataclass(frozen=True)
class ChatStyle:
    """Prompt template + stop rule + music route + accepted media of one model.

    `first_turn` / `next_turn` hold one `{instruction}` placeholder each; an answer follows its
    turn's text directly. `music_route` is how music is made when the settings do not say:
    "projector" (the [AUD] states condition the decoder) or "text" (re-prompt the decoder with the
    answer text, as the published demo did).
    """

    name: str
    first_turn: str
    next_turn: str
    stop: StopRule = field(default_factory=StopRule)
    music_route: MusicRoute = "projector"
    modalities: tuple[str, ...] = ALL_MODALITIES

    def __post_init__(self) -> None:
        for name in ("first_turn", "next_turn"):
            fields = [f for _, f, _, _ in string.Formatter().parse(getattr(self, name)) if f]
            if fields != ["instruction"]:
                raise ChatStyleError(f"chat_style.{name} must hold exactly one {{instruction}} "
                                     f"placeholder, got {fields}")
        if self.music_route not in ("projector", "text"):
            raise ChatStyleError(f"chat_style.music_route must be projector or text, got "
                                 f"{self.music_route!r}")
        unknown = sorted(set(self.modalities) - set(ALL_MODALITIES))
        if unknown:
            raise ChatStyleError(f"chat_style.modalities: unknown {unknown}; known: "
                                 f"{list(ALL_MODALITIES)}")

    # -- the template ----------------------------------------------------------------------

    def format_turn(self, instruction: str, first: bool) -> str:
        """The text of one instruction turn (the answer follows it directly)."""
        return (self.first_turn if first else self.next_turn).format(instruction=instruction)

    def format_prompt(self, instruction: str, history: Sequence[tuple[str, str]] = ()) -> str:
        """The whole dialogue as text: earlier turns with their answers, then `instruction`.
        (EOS ids between turns are added at the token level, `llama.prompt.encode_turns`.)"""
        parts = []
        for i, (question, answer) in enumerate([*history, (instruction, None)]):
            parts.append(self.format_turn(question, first=i == 0))
            if answer is not None:
                parts.append(answer)
        return "".join(parts)

    def answer_text(self, text: str) -> str:
        """The shown answer: decoded text cut at the first stop string, stripped."""
        for stop in self.stop.strings:
            text = text.split(stop)[0]
        return text.strip()

    # -- media -----------------------------------------------------------------------------

    def check_modalities(self, present: Iterable[str]) -> None:
        """Raise UnsupportedModalityError naming the first kind of media this style refuses."""
        for modality in present:
            if modality not in self.modalities:
                raise UnsupportedModalityError(
                    f"{modality} input is not supported by this model (chat style "
                    f"{self.name!r} accepts {', '.join(self.modalities) or 'no media'}): its "
                    f"weights were never trained for it")

    # -- training and storage --------------------------------------------------------------

    def for_training(self) -> "ChatStyle":
        """The style a model has after our trainer tuned it: the same template (the weights and
        a tiny tokenizer depend on it) with the ending our data layout teaches (EOS, [AUD0..7]
        before it), the projector route it trains and every modality."""
        if self.stop == StopRule() and self.music_route == "projector" \
                and self.modalities == ALL_MODALITIES:
            return self
        return dataclasses.replace(self, name=f"{self.name}+trained", stop=StopRule(),
                                   music_route="projector", modalities=ALL_MODALITIES)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ChatStyle":
        """The style stored in a config.json (`dataclasses.asdict` output; JSON lists become
        tuples)."""
        if not isinstance(d, Mapping):
            raise ChatStyleError(f"chat_style must be an object, got {type(d).__name__}")
        _check_keys("chat_style", d, cls)
        stop = d.get("stop", {})
        if not isinstance(stop, Mapping):
            raise ChatStyleError(f"chat_style.stop must be an object, got {type(stop).__name__}")
        _check_keys("chat_style.stop", stop, StopRule)
        stop_rule = StopRule(**{**stop, "strings": tuple(stop.get("strings", ()))})
        values = {**d, "stop": stop_rule}
        if "modalities" in d:
            values["modalities"] = tuple(d["modalities"])
        return cls(**values)


def _check_keys(where: str, d: Mapping[str, Any], klass: type) -> None:
    fields = dataclasses.fields(klass)
    names = {f.name for f in fields}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ChatStyleError(f"{where}: unknown field(s) {unknown}")
    required = [f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in d]
    if missing:
        raise ChatStyleError(f"{where}: missing field(s) {missing}")


M2UGEN = ChatStyle("m2ugen", ALPACA_FIRST_TURN, ALPACA_NEXT_TURN)

# What new models get. Changing it changes new models only (checkpoints carry their own style).
DEFAULT = M2UGEN

# Pinned: the style of every checkpoint written before styles were stored in config.json, and
# the template the tiny tokenizer is trained on. Spelled out in full and never to be edited.
FIRST_STYLE = ChatStyle(
    "m2ugen",
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:",
    "\n\n### Instruction:\n{instruction}\n\n### Response:",
)

_PUBLISHED_STOP = dict(eos=False, strings=("\n###",), tail_tokens=3)
PUBLISHED_M2UGEN = ChatStyle("published-m2ugen", ALPACA_FIRST_TURN, ALPACA_NEXT_TURN,
                             StopRule(**_PUBLISHED_STOP, aud="continue"), music_route="text")
PUBLISHED_MUMU_LLAMA = ChatStyle("published-mumu-llama", ALPACA_FIRST_TURN, ALPACA_NEXT_TURN,
                                 StopRule(**_PUBLISHED_STOP, aud="after_run"),
                                 music_route="text", modalities=("audio", "image"))
# By release name, for folders imported before styles were stored (their config.json says only
# {"published": {"release": ...}}).
PUBLISHED_STYLES = {"m2ugen": PUBLISHED_M2UGEN, "mumu-llama": PUBLISHED_MUMU_LLAMA}
