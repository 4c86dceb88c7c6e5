"""One loaded model: its settings, the checks a turn's input passes, and typed stream events.

`LoadedModel` is what `app.loading.load_model` returns and every front end drives (CLI, batch,
demo, evaluation). It holds no per-user state: a chat's history and files live in
`app.chat.ChatSession`. The checks on a turn's input (empty prompt, music mode, media files and
their length) happen here, once, before any work; `stream_turn` then yields `TextDelta` events
as the answer grows and one `FinalReply` at the end, so no consumer sorts an untyped stream.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional, Protocol, Sequence,
                    Union)

from app.args import DEFAULT_MAX_MEDIA_SECONDS, MUSIC_MODES
from app.errors import InputError, ModelLoadError, one_line

if TYPE_CHECKING:
    from data.features import MediaFeatures
    from llama.m2ugen import ChatReply, GenerationSettings, M2UGen, MediaInput

MODALITIES = ("audio", "image", "video")


# ---------------------------------------------------------------------------------------------
# Stream events


@dataclasses.dataclass(frozen=True)
class TextDelta:
    """Answer text produced since the previous event (never holds [AUD] tokens)."""

    text: str


@dataclasses.dataclass(frozen=True)
class FinalReply:
    """The end of a turn: the full reply (text, token ids, music when there is some)."""

    reply: "ChatReply"


TurnEvent = Union[TextDelta, FinalReply]


# ---------------------------------------------------------------------------------------------
# Input checks (torch-free: the CLI runs them before loading a model)


def check_prompt(prompt: str) -> None:
    """The one rule for an empty prompt or chat message."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty")


def check_music_mode(music: str) -> None:
    if music not in MUSIC_MODES:
        raise InputError(f"music must be one of {list(MUSIC_MODES)}, got {music!r}")


def check_media_paths(media: Mapping[str, Any], label: str = "{modality}") -> None:
    """Fail early, naming the flag/field (`label` formatted with the modality), on missing files."""
    for modality, path in media.items():
        if isinstance(path, (str, os.PathLike)) and not Path(path).is_file():
            raise InputError(f"{label.format(modality=modality)} {path}: no such file")


def check_media_length(media: Mapping[str, Any], max_seconds: Optional[float],
                       label: str = "{modality}") -> None:
    """Refuse audio/video files longer than `max_seconds` (None: no limit), from the container
    header -- or, when it declares no length, by demuxing only up to the limit -- so a long
    upload costs neither decoding time nor memory. Unreadable files pass: their loader says why."""
    if max_seconds is None:
        return
    from data.media import media_duration

    for modality, path in media.items():
        if modality not in ("audio", "video") or not isinstance(path, (str, os.PathLike)):
            continue
        seconds = media_duration(path, limit=max_seconds)
        if seconds is not None and seconds > max_seconds:
            raise InputError(f"{label.format(modality=modality)} {path}: the {modality} lasts "
                             f"at least {seconds:.1f} s, more than the limit of {max_seconds:g} s "
                             "(--max_media_seconds)")


class ModelSource(Protocol):
    """What the engine keeps of how its model was chosen (`app.loading.ModelChoice`)."""

    checkpoint: Optional[str]
    preset: str

    @property
    def key(self) -> tuple: ...


# ---------------------------------------------------------------------------------------------
# The engine


class LoadedModel:
    """A loaded model with its media-feature front end; holds no per-user state."""

    def __init__(self, model: "M2UGen", features: "MediaFeatures", choice: ModelSource) -> None:
        self.model = model
        self.features = features
        self.choice = choice
        self._media_lock = threading.Lock()  # the feature memo and lazy encoders are shared
        # Longer audio/video inputs are refused before decoding (a serving policy, set by the CLIs).
        self.max_media_seconds: Optional[float] = DEFAULT_MAX_MEDIA_SECONDS

    @property
    def description(self) -> str:
        source = self.choice.checkpoint or f"random tuned weights (preset {self.choice.preset})"
        cfg = self.model.cfg
        music = f"{cfg.decoder.kind} decoder" if cfg.chat_style.music_output else "no music output"
        return f"{cfg.name} ({music}) from {source}"

    def settings(self, values: Optional[Mapping[str, Any]] = None) -> "GenerationSettings":
        """Validated settings for this model's decoder (None values = defaults)."""
        from app.settings import make_settings

        if (values or {}).get("music_conditioning") is None:
            # Unset: the model's chat style says (releases: from the answer text, as the
            # published demo made it; their projector never trained, docs/MODEL.md 7.1).
            values = {**(values or {}),
                      "music_conditioning": self.model.cfg.chat_style.music_route}
        return make_settings(values, decoder=self.model.cfg.decoder)

    def encoder(self, modality: str) -> Any:
        """The frozen encoder of `modality`, loaded on first use. Its typed load error (or an
        OSError: folder or hub id unreachable) names the encoder; anything else is a bug."""
        from llama.encoders import EncoderLoadError

        try:
            return self.model.encoder(modality)
        except (EncoderLoadError, OSError) as err:
            enc_cfg = {"audio": self.model.cfg.mert, "image": self.model.cfg.vit,
                       "video": self.model.cfg.vivit}[modality]
            raise ModelLoadError(modality, enc_cfg.path, one_line(err)) from err

    def media_input(self, media: Optional[Mapping[str, Any]]) -> "MediaInput":
        """{modality: path, decoded array or None} -> the model's MediaInput of features."""
        from llama.m2ugen import MediaInput

        present = {m: v for m, v in (media or {}).items() if v is not None}
        unknown = sorted(set(present) - set(MODALITIES))
        if unknown:
            raise InputError(f"unknown modality {unknown}; known: {list(MODALITIES)}")
        check_media_paths(present)
        check_media_length(present, self.max_media_seconds)
        out: dict[str, Any] = {}
        with self._media_lock:
            for modality, item in present.items():
                self.encoder(modality)
                try:
                    out[modality] = self.features.item_features(modality, item)
                except ValueError as err:  # the encoder refused this item's content
                    name = Path(item).name if isinstance(item, (str, os.PathLike)) else "input"
                    raise InputError(f"{modality} {name}: {one_line(err)}") from None
        return MediaInput(**out)

    def forget_media(self, paths: Iterable[str | os.PathLike]) -> int:
        """Drop the remembered features of these files (deleted uploads): the memo is keyed by
        path, so they would otherwise hold their share of it until newer files push them out."""
        with self._media_lock:
            return self.features.forget(paths)

    def stream_turn(
        self,
        prompt: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        media: Optional[Mapping[str, Any]] = None,
        settings: "GenerationSettings",
        music: str = "auto",
    ) -> Iterator[TurnEvent]:
        """TextDelta events, then one FinalReply; `music="always"` synthesizes even without
        [AUD]. The prompt and music mode are checked now, before anything runs."""
        check_prompt(prompt)
        check_music_mode(music)
        return self._events(prompt, history, media, settings, music)

    def run_turn(self, prompt: str, **kwargs: Any) -> "ChatReply":
        """Blocking form of `stream_turn`: the final reply."""
        for event in self.stream_turn(prompt, **kwargs):
            if isinstance(event, FinalReply):
                return event.reply
        raise AssertionError("a turn ended without its FinalReply")

    def _events(self, prompt: str, history: Sequence[tuple[str, str]],
                media: Optional[Mapping[str, Any]], settings: "GenerationSettings",
                music: str) -> Iterator[TurnEvent]:
        from llama.decoders import DecoderLoadError

        try:
            yield from self._turn(prompt, history, media, settings, music)
        except DecoderLoadError as err:  # the decoder is loaded on the first music
            raise ModelLoadError("decoder", self.model.cfg.decoder.path, one_line(err)) from err

    def _turn(self, prompt: str, history: Sequence[tuple[str, str]],
              media: Optional[Mapping[str, Any]], settings: "GenerationSettings",
              music: str) -> Iterator[TurnEvent]:
        from llama.chat_style import UnsupportedModalityError
        from llama.m2ugen import ChatReply

        model = self.model
        given = [m for m, v in (media or {}).items() if v is not None]
        try:  # media the model's chat style refuses (MuMu-LLaMA: video; MU-LLaMA: a turn
            # without music, or music asked for), before decoding any
            model.cfg.chat_style.check_modalities(given, music)
        except UnsupportedModalityError as err:
            raise InputError(str(err)) from None
        media_in = self.media_input(media)
        reply: Optional[ChatReply] = None
        # The model's own stream is text pieces then its ChatReply; typed here, once.
        for item in model.stream_chat(prompt, history=history, media=media_in, settings=settings,
                                      want_music=music != "never"):
            if isinstance(item, ChatReply):
                reply = item
            else:
                yield TextDelta(item)
        assert reply is not None, "stream_chat ended without a ChatReply"
        if music == "always" and reply.music is None:
            # The model did not ask for music: append [AUD0..7] after its answer ourselves.
            ids, _ = model.build_prompt(prompt, history, settings.max_new_tokens)
            feats = model.media_vector(media_in)
            reply.music, reply.sample_rate = model.synthesize(
                ids + list(reply.token_ids), feats, reply.text, settings)
            if model.cfg.chat_style.stop.aud == "first":  # the ids as our layout holds them
                reply.generated_ids = list(reply.token_ids) + list(model.tokenizer.aud_ids)
        yield FinalReply(reply)


# ---------------------------------------------------------------------------------------------
# A reply's outputs


def write_music(path: str | os.PathLike, reply: "ChatReply") -> Path:
    """The reply's music as a WAV file (atomic, 32-bit float samples as generated).

    Non-finite samples are a numerical fault of the model, never the user's input: they raise
    RuntimeError (with its traceback), not a bad-input error."""
    from data.media import MediaError, write_wav

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_wav(path, reply.music, int(reply.sample_rate))
    except MediaError as err:
        raise RuntimeError(f"the generated music cannot be written: {err}") from err
    return path


def reply_record(reply: "ChatReply", audio: Optional[Path]) -> dict[str, Any]:
    """The JSON form of a reply (CLI --json output and batch result lines)."""
    import numpy as np

    seconds = None
    if reply.music is not None and reply.sample_rate:
        seconds = round(float(np.asarray(reply.music).shape[-1]) / reply.sample_rate, 3)
    return {
        "text": reply.text,
        "token_ids": [int(t) for t in (reply.generated_ids or reply.token_ids)],
        "audio": str(audio) if audio else None,
        "sample_rate": reply.sample_rate if audio else None,
        "audio_seconds": seconds,
        "dropped_history_turns": reply.dropped_history_turns,
    }
