"""The web demo's serving policy: one session per browser (or API client), uploads, expiry.

`gradio_app.py` only lays out the page and wires events; what a turn does and what a session owns
is decided here:
- each browser session gets a `DemoSession`: its `app.chat.ChatSession` (history, last music, a
  private folder), the messages on its page, and the uploads its turns used;
- the service indexes the live sessions by gradio's session hash, so a closing tab ends its own
  session and no other; a session also ends when gradio drops its idle state (`--session_ttl`);
- ending a session deletes its folder; its uploads go once no live session uses them and nobody
  uploaded the same bytes for the session lifetime (gradio stores uploads by content, so users
  share paths), and only files inside gradio's upload folder (an API caller's own files are
  never ours to delete);
- a turn's failure becomes a message: bad input is named (server paths shown as file names), an
  internal error shows only a reference whose details go to the server log;
- after a session ends, what the server still held for it goes too: its uploads' remembered
  features (the memo is keyed by path), gradio's empty leftovers in its upload folder (every
  request with a file input leaves an empty temporary file, and swept uploads leave empty
  folders) once older than the session lifetime, and the heap memory the finished turns freed,
  which glibc otherwise keeps; and glibc gets at most two malloc arenas
  (`limit_malloc_arenas`: with one per worker thread the heap stays fragmented after a burst of
  concurrent turns). Measured under load in docs/DEMO.md (the first measurement, before these:
  1212 MB 2 minutes after 16 sessions against 549 MB idle).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from app.chat import ChatSession, TurnResult
from app.engine import LoadedModel
from app.errors import bad_input_errors, one_line

log = logging.getLogger("m2ugen.service")

SESSION_TTL_SECONDS = 6 * 3600  # idle sessions (and their WAV files) are dropped after this


@dataclasses.dataclass
class DemoSession:
    """What one browser session (or one API client) owns: its chat, the displayed messages, and
    the uploaded files its turns used (deleted with it)."""

    chat: ChatSession
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    key: str = ""  # gradio's session hash
    uploads: set[Path] = dataclasses.field(default_factory=set)
    closed: bool = False


@dataclasses.dataclass
class TurnRequest:
    """One message as the page or the API sent it (settings: widget values, None = default)."""

    text: str
    audio: Optional[str]
    image: Optional[str]
    video: Optional[str]
    edit_last_music: bool
    music: str
    settings: dict[str, Any]

    @property
    def files(self) -> list[str]:
        return [p for p in (self.audio, self.image, self.video) if p]


@dataclasses.dataclass(frozen=True)
class AnswerSoFar:
    """The answer text produced so far (the page replaces the previous one)."""

    text: str


@dataclasses.dataclass(frozen=True)
class Answer:
    """The finished turn: the answer, the generated WAV (or None), a note for the user."""

    text: str
    wav: Optional[str]
    note: str


@dataclasses.dataclass(frozen=True)
class TurnFailed:
    """A turn that failed: the message to show (the session's history is unchanged)."""

    message: str


DemoEvent = Union[AnswerSoFar, Answer, TurnFailed]


class ChatService:
    """The loaded model plus the demo's turn and session policy. Per-user data lives in the
    DemoSession objects (held by gradio's per-session state); the service only indexes the live
    ones by session hash, so a closing tab can end its own session and no other."""

    def __init__(self, engine: LoadedModel, root: Path, description: str = "",
                 stale_after: float = SESSION_TTL_SECONDS,
                 on_end: Optional[Callable[[str], None]] = None) -> None:
        """`stale_after`: seconds after which gradio's empty leftovers are swept (the session
        lifetime); `on_end(key)`: called after a session ended (the page drops gradio's own
        per-session record there)."""
        self.engine = engine
        self.root = root
        self.description = description or engine.description
        self.sessions: dict[str, DemoSession] = {}
        self.stale_after = stale_after
        self.on_end = on_end
        self._lock = threading.Lock()
        self._orphans: set[Path] = set()  # uploads of ended sessions, not deleted yet
        self._janitor: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def start_janitor(self) -> None:
        """A daemon thread that, every min(stale_after, 300) seconds, deletes the ended
        sessions' uploads that became due, sweeps gradio's empty leftovers and returns freed heap
        memory: what the last sessions leave behind has nobody else to clean it (a session's end
        only deletes and sweeps what was already old then)."""
        if self._janitor is not None:
            return
        interval = min(float(self.stale_after), 300.0)

        def run() -> None:
            while not self._stop.wait(interval):
                self.delete_unused_uploads()
                swept = sweep_empty_leftovers(self.stale_after)
                trim_heap()
                if swept:
                    log.info("janitor: %d empty leftover(s) deleted", swept)

        self._janitor = threading.Thread(target=run, name="demo-janitor", daemon=True)
        self._janitor.start()

    def stop_janitor(self) -> None:
        self._stop.set()

    def new_session(self, key: str = "") -> DemoSession:
        self.root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="session-", dir=self.root))
        session = DemoSession(ChatSession(self.engine, folder), key=key or folder.name)
        with self._lock:
            self.sessions[session.key] = session
        return session

    def session_for(self, state: Any, request: Any) -> DemoSession:
        """The session in `state`, or a new one for this browser session / API client
        (`request`: gradio's Request, whose session_hash identifies the browser session)."""
        if isinstance(state, DemoSession) and not state.closed:
            return state
        key = getattr(request, "session_hash", None) or ""
        with self._lock:
            known = self.sessions.get(key) if key else None
        return known if known is not None else self.new_session(key)

    def end_session(self, session: Optional[DemoSession]) -> None:
        """Delete the session's folder and hand its uploads to `delete_unused_uploads`
        (idempotent; called when the tab closes and when gradio drops the expired state)."""
        if not isinstance(session, DemoSession):
            return
        with self._lock:
            if self.sessions.get(session.key) is session:
                del self.sessions[session.key]
            session.closed = True
            self._orphans |= session.uploads
            session.uploads = set()
        session.chat.close()
        removed = self.delete_unused_uploads()
        swept = sweep_empty_leftovers(self.stale_after)
        if self.on_end is not None:
            self.on_end(session.key)
        trimmed = trim_heap()
        log.info("session %s ended: folder, %d upload(s) and %d empty leftover(s) deleted%s",
                 session.key, removed, swept, ", freed heap returned" if trimmed else "")

    def delete_unused_uploads(self) -> int:
        """Delete the ended sessions' uploads that no live session uses and that nobody uploaded
        again in the last `stale_after` seconds; returns how many went (the rest wait for the
        janitor). Why the wait: gradio stores uploads by content, so two users who upload the
        same file share one path, and the second user's request may still wait in the queue
        (not yet recorded by `remember_uploads`) when the first user's session ends. A new
        upload of the same bytes replaces the file, so its modification time is the last upload.
        Gradio's own cache sweep deletes uploads older than `stale_after` too."""
        cutoff = time.time() - self.stale_after
        with self._lock:
            in_use = set().union(*(s.uploads for s in self.sessions.values()))
            due = {p for p in self._orphans - in_use if _modified(p) <= cutoff}
            self._orphans -= due
        removed = sum(remove_upload(path) for path in due)
        self.engine.forget_media(due)
        return removed

    def end_by_key(self, key: Optional[str]) -> None:
        """End the live session of gradio session hash `key` (no-op when there is none)."""
        with self._lock:
            session = self.sessions.get(key or "")
        self.end_session(session)

    def remember_uploads(self, session: DemoSession, req: TurnRequest) -> None:
        """Record the uploads a turn used, so they go when the session ends."""
        with self._lock:
            session.uploads.update(Path(p) for p in req.files)

    def settings(self, values: dict[str, Any]):
        """Validated settings from UI values; a decoder knob only for the decoder that has it
        (the other's slider is hidden, its value meaningless)."""
        kind = self.engine.model.cfg.decoder.kind
        values = dict(values)
        if kind != "musicgen":
            values["guidance_scale"] = None
        if kind != "audioldm2":
            values["num_inference_steps"] = None
        return self.engine.settings(values)

    def turn(self, session: DemoSession, req: TurnRequest) -> Iterator[DemoEvent]:
        """AnswerSoFar events, then an Answer or a TurnFailed. The session's history changes only
        when the turn succeeded; files a turn writes after its session ended are deleted when it
        finishes."""
        try:
            settings = self.settings(req.settings)
            media = {"audio": req.audio or None, "image": req.image or None,
                     "video": req.video or None}
            shown = ""
            for event in session.chat.stream(req.text, media=media, settings=settings,
                                             music=req.music,
                                             edit_last_music=req.edit_last_music):
                if isinstance(event, TurnResult):
                    wav = str(event.wav) if event.wav else None
                    yield Answer(event.reply.text, wav, event.note)
                else:
                    shown += event.text
                    yield AnswerSoFar(shown)
        except bad_input_errors() as err:
            yield TurnFailed(hide_paths(one_line(err), req))
        except Exception:  # noqa: BLE001 - a demo must answer, not die; logged in full
            ref = uuid.uuid4().hex[:8]
            log.exception("chat turn failed (reference %s)", ref)
            yield TurnFailed(f"internal error (reference {ref}); the details are in the server "
                             "log")
        finally:
            if session.closed:  # the tab closed (or the state expired) while this turn ran
                session.chat.close()


def _modified(path: Path) -> float:
    """The file's modification time; -inf when it is gone (nothing left to wait for)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return float("-inf")


def remove_upload(path: Path) -> bool:
    """Delete an upload and its now-empty folder, only if it lies in gradio's upload folder
    (API callers may name files elsewhere: those are never ours to delete)."""
    from gradio.utils import get_upload_folder

    upload_root = Path(get_upload_folder()).resolve()
    try:
        resolved = path.resolve()
    except OSError:
        return False
    if upload_root not in resolved.parents or not resolved.is_file():
        return False
    resolved.unlink(missing_ok=True)
    parent = resolved.parent
    if parent != upload_root and not any(parent.iterdir()):
        parent.rmdir()
    return True


def sweep_empty_leftovers(older_than: float) -> int:
    """Delete, in gradio's upload folder, the empty files directly in it and the empty folders,
    last changed more than `older_than` seconds ago; returns how many went. Gradio leaves both:
    each request with a file input creates an empty temporary file there that nothing deletes
    (gradio 6's gr.File preprocessing), and its cache sweep deletes files but not their folders.
    Only empty entries go, and only old ones: an upload being received is never touched."""
    from gradio.utils import get_upload_folder

    root = Path(get_upload_folder())
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than
    gone = 0
    for entry in root.iterdir():
        try:
            info = entry.lstat()
            if info.st_mtime > cutoff:
                continue
            if entry.is_file() and not entry.is_symlink() and info.st_size == 0:
                entry.unlink()
                gone += 1
            elif entry.is_dir() and not entry.is_symlink() and not any(entry.iterdir()):
                entry.rmdir()
                gone += 1
        except OSError:  # raced with gradio's own sweep, or refilled meanwhile: left alone
            continue
    return gone


@functools.lru_cache(maxsize=1)
def _libc() -> Optional[ctypes.CDLL]:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def trim_heap() -> bool:
    """Return the heap memory freed so far to the system (glibc's malloc_trim); False where
    there is no glibc. A server that ran many turns at once otherwise keeps its peak RSS."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before the server's threads start). By default glibc gives
    busy threads arenas of their own (up to 8 per core); after concurrent turns their freed
    memory stays scattered over them and the server keeps it (docs/DEMO.md: 16 sessions at
    concurrency 4 left +15.6% over the idle RSS, +9.3% with 2 arenas). A MALLOC_ARENA_MAX set
    in the environment wins. False where there is no glibc or it refused."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    return bool(mallopt(_M_ARENA_MAX, arenas)) if mallopt is not None else False


def hide_paths(message: str, req: TurnRequest) -> str:
    """Name uploads by their file name: server-side temp paths mean nothing to the user."""
    for path in req.files:
        message = message.replace(str(path), Path(path).name)
    return message
