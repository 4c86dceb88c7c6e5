"""One chat turn over a composed model: settings, prompt fitting, decoding, the reply.

Every model is decoded by the one loop (`llama.generation`), configured by the model's chat style
(`llama.chat_style`, stored in its config): the prompt template, when the answer ends, how music is
made and which media it accepts. Our models and the released checkpoints differ only in their
style, so a release reproduces the published greedy ids through the same code path.

The functions take the model (`llama.m2ugen.M2UGen`) as their first argument; `M2UGen.chat` /
`stream_chat` / `build_prompt` call them. No file I/O: media arrive decoded or as features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Optional, Sequence

import numpy as np
import torch

from llama.chat_style import ChatStyle
from llama.config import AUD_TOKENS, MODALITIES
from llama.generation import stream_generate
from llama.prompt import encode_prompt

__all__ = [
    "ChatReply",
    "GenerationSettings",
    "MediaInput",
    "PromptTooLong",
    "answer_ids",
    "build_prompt",
    "stream_chat",
]


class PromptTooLong(ValueError):
    """The prompt (after dropping all history) does not fit the context window."""


@dataclass
class GenerationSettings:
    """Knobs of one chat turn (text sampling and music synthesis).

    The one definition of their defaults and valid ranges: the CLI, the demo, the evaluation and
    the library all build settings from this class (flags and UI values left unset mean these
    defaults). Greedy decoding by default, so that one prompt gives one answer everywhere.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: Optional[int] = None
    audio_seconds: float = 5.0
    guidance_scale: Optional[float] = None  # classifier-free guidance >= 1 (None: the decoder's)
    num_inference_steps: Optional[int] = None  # AudioLDM2 diffusion steps (None: the decoder's)
    music_conditioning: Literal["projector", "text"] = "projector"

    INT_FIELDS = ("max_new_tokens", "seed", "num_inference_steps")

    def validate(self, decoder: Any = None) -> None:
        """Raise ValueError naming the first invalid field. With `decoder` (a DecoderConfig), also
        check what depends on it: the longest clip, and steps only for a diffusion decoder."""

        def number(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
            return float(value)

        for name in self.INT_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if number("temperature", self.temperature) < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < number("top_p", self.top_p) <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if number("audio_seconds", self.audio_seconds) <= 0:
            raise ValueError(f"audio_seconds must be > 0, got {self.audio_seconds}")
        if self.guidance_scale is not None and number("guidance_scale", self.guidance_scale) < 1:
            raise ValueError(f"guidance_scale must be >= 1 (1 disables classifier-free guidance), "
                             f"got {self.guidance_scale}")
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.music_conditioning not in ("projector", "text"):
            raise ValueError(
                f"music_conditioning must be 'projector' or 'text', got {self.music_conditioning!r}"
            )
        if decoder is not None:
            if self.audio_seconds > decoder.max_seconds:
                raise ValueError(f"audio_seconds must be <= {decoder.max_seconds} for this "
                                 f"decoder, got {self.audio_seconds}")
            if self.num_inference_steps is not None and decoder.kind != "audioldm2":
                raise ValueError(f"num_inference_steps applies to the AudioLDM2 decoder, not "
                                 f"{decoder.kind}")


@dataclass
class MediaInput:
    """The media attached to a turn, per modality: a decoded array (np.ndarray: waveform, image
    or frames) or that item's precomputed frozen-encoder features (torch.Tensor). Paths are
    resolved outside the model package (`data.features.MediaFeatures`)."""

    audio: Any = None
    image: Any = None
    video: Any = None

    def present(self) -> dict[str, Any]:
        return {m: v for m in MODALITIES if (v := getattr(self, m)) is not None}


@dataclass
class ChatReply:
    text: str
    music: Optional[np.ndarray] = None
    sample_rate: Optional[int] = None
    token_ids: list[int] = field(default_factory=list)  # the answer's text tokens
    dropped_history_turns: int = 0
    generated_ids: list[int] = field(default_factory=list)  # every id produced, special included


# ---------------------------------------------------------------------------------------------
# Prompt and decoding


def build_prompt(model: Any, prompt: str, history: Sequence[tuple[str, str]],
                 max_new_tokens: int) -> tuple[list[int], int]:
    """Token ids of the dialogue in the model's chat style, oldest turns dropped to fit the
    context; (ids, dropped)."""
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    budget = model.cfg.llama.max_seq_len - max_new_tokens - len(AUD_TOKENS)
    history = list(history)
    for dropped in range(len(history) + 1):
        ids = encode_prompt(model.tokenizer, prompt, history[dropped:], style=model.cfg.chat_style)
        if len(ids) <= budget:
            return ids, dropped
    raise PromptTooLong(
        f"the prompt is {len(ids)} tokens; with max_new_tokens={max_new_tokens} the context of "
        f"{model.cfg.llama.max_seq_len} tokens allows {budget}"
    )


def _stopping(model: Any) -> dict[str, Any]:
    """The decoding loop's end rules for the model's chat style (its [AUD] ids resolved)."""
    stop = model.cfg.chat_style.stop
    tok = model.tokenizer
    aud = list(tok.aud_ids)
    return dict(
        eos_id=(),  # EOS, when it ends an answer, is returned like [AUD0] (see `end_ids`)
        end_ids=([tok.eos_id] if stop.eos else []) + (aud if stop.aud == "first" else []),
        end_after=aud if stop.aud == "after_run" else (),
        stop_strings=stop.strings,
        stop_tail_tokens=stop.tail_tokens,
        # The published check decoded special tokens as text: the raw tokenizer does that.
        tokenizer=tok.hf if stop.tail_tokens else tok,
    )


def _stream_ids(model: Any, ids: list[int], feats: Optional[torch.Tensor], max_new_tokens: int,
                temperature: float = 0.0, top_p: float = 1.0,
                generator: Optional[torch.Generator] = None) -> Iterator[list[int]]:
    """The generated ids of one prompt as the loop releases them, ended by the chat style."""
    for step in stream_generate(model.backbone, [ids], max_new_tokens, temperature, top_p,
                                generator=generator, modality_features=feats,
                                pad_id=model.tokenizer.pad_id, **_stopping(model)):
        yield list(map(int, step[0]))


def answer_ids(model: Any, ids: list[int], feats: Optional[torch.Tensor], max_new_tokens: int,
               temperature: float = 0.0, top_p: float = 1.0,
               generator: Optional[torch.Generator] = None) -> list[int]:
    """Every id generated after the prompt `ids` (greedy at temperature 0), ended as the model's
    chat style says: what a reply's `generated_ids` start with."""
    out: list[int] = []
    for released in _stream_ids(model, ids, feats, max_new_tokens, temperature, top_p, generator):
        out += released
    return out


# ---------------------------------------------------------------------------------------------
# A turn


def _split(style: ChatStyle, new: list[int], tokenizer: Any) -> tuple[int, bool]:
    """(where the answer's text tokens end, whether it asks for music): the first [AUD] id, or
    the EOS when the style ends answers there."""
    aud = set(tokenizer.aud_ids)
    for i, t in enumerate(new):
        if t in aud:
            return i, True
        if style.stop.eos and t == tokenizer.eos_id:
            return i, False
    return len(new), False


def stream_chat(
    model: Any,
    prompt: str,
    *,
    history: Sequence[tuple[str, str]] = (),
    media: Optional[MediaInput] = None,
    settings: Optional[GenerationSettings] = None,
    want_music: bool = True,
) -> Iterator[Any]:
    """Yield text deltas (without [AUD] tokens or stop text) as they are produced, then the
    ChatReply. Without `settings`, music follows the chat style's route."""
    style: ChatStyle = model.cfg.chat_style
    settings = settings or GenerationSettings(music_conditioning=style.music_route)
    settings.validate()
    style.check_modalities((media.present() if media is not None else {}).keys())
    ids, dropped = model.build_prompt(prompt, history, settings.max_new_tokens)
    feats = model.media_vector(media)
    generator = None
    if settings.seed is not None:
        generator = torch.Generator(device=model.device_).manual_seed(settings.seed)
    tok = model.tokenizer
    new: list[int] = []
    shown = ""
    # The loop runs each step under inference_mode; no grad mode leaks to the caller while this
    # generator is paused at a yield.
    for released in _stream_ids(model, ids, feats, settings.max_new_tokens, settings.temperature,
                                settings.top_p, generator):
        new += released
        cut, _ = _split(style, new, tok)
        text = style.answer_text(tok.decode(new[:cut]))
        if text.startswith(shown) and len(text) > len(shown):
            yield text[len(shown):]
            shown = text
    cut, music = _split(style, new, tok)
    # `generated_ids`: the full output as the model's sequence holds it. With the "first" rule the
    # model emits one [AUD] id and the rest of [AUD0..7] is appended (the training layout).
    generated = new[:cut] + list(tok.aud_ids) if music and style.stop.aud == "first" else new
    reply = ChatReply(text=style.answer_text(tok.decode(new[:cut])), token_ids=new[:cut],
                      dropped_history_turns=dropped, generated_ids=list(generated))
    if music and want_music:
        reply.music, reply.sample_rate = model.synthesize(ids + new[:cut], feats, reply.text,
                                                          settings)
    yield reply
