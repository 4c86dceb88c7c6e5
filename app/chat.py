"""A chat session: one user's conversation with a loaded model.

The model (`app.engine.LoadedModel`) holds no per-user state; a `ChatSession` holds the history as
it is fed back to the model, the last generated music, and a private folder for the WAV files, so
sessions never see each other's data. The history changes only when a turn succeeds.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Union

from app.engine import FinalReply, LoadedModel, TextDelta, write_music
from app.errors import InputError

if TYPE_CHECKING:
    from llama.m2ugen import ChatReply, GenerationSettings


@dataclasses.dataclass
class TurnResult:
    """The end of a chat turn: the reply, and the WAV written for its music (if any)."""

    reply: "ChatReply"
    wav: Optional[Path]

    @property
    def note(self) -> str:
        n = self.reply.dropped_history_turns
        if not n:
            return ""
        return f"(the {n} oldest turn(s) no longer fit the context and were left out)"


ChatEvent = Union[TextDelta, TurnResult]


def history_answer(reply: "ChatReply") -> str:
    """How a past answer is fed back to the model: with [AUD0..7] if it produced music (training
    format), so a follow-up like "make it faster" sees that music was made."""
    from llama.config import AUD_TOKENS

    if reply.music is None:
        return reply.text
    return (reply.text + " " if reply.text else "") + "".join(AUD_TOKENS)


class ChatSession:
    """One user's conversation: history as fed to the model, the last generated music, and a
    private folder for the WAV files (deleted by `close`)."""

    def __init__(self, engine: LoadedModel, folder: str | os.PathLike) -> None:
        self.engine = engine
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.history: list[tuple[str, str]] = []
        self.last_music: Optional[Path] = None
        self.turns = 0

    def stream(
        self,
        text: str,
        *,
        media: Optional[Mapping[str, Any]] = None,
        settings: "GenerationSettings",
        music: str = "auto",
        edit_last_music: bool = False,
    ) -> Iterator[ChatEvent]:
        """TextDelta events, then a TurnResult; `edit_last_music` feeds the last music back in."""
        media = dict(media or {})
        if edit_last_music:
            if media.get("audio"):
                raise InputError("either upload music or edit the last generated music, not both")
            if self.last_music is None or not self.last_music.is_file():
                raise InputError("there is no generated music to edit yet")
            media["audio"] = str(self.last_music)
        reply = None
        for event in self.engine.stream_turn(text, history=list(self.history), media=media,
                                             settings=settings, music=music):
            if isinstance(event, FinalReply):
                reply = event.reply
            else:
                yield event
        assert reply is not None
        wav = None
        if reply.music is not None:
            self.turns += 1
            wav = write_music(self.folder / f"music-{self.turns}.wav", reply)
            self.last_music = wav
        self.history.append((text, history_answer(reply)))
        yield TurnResult(reply, wav)

    def reset(self) -> None:
        """Forget the conversation (files stay until `close`)."""
        self.history.clear()
        self.last_music = None

    def close(self) -> None:
        """Delete the session's folder and everything generated in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
