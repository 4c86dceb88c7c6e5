"""Web demo for M2UGen (gradio 6): multi-turn chat about music, images and video, and music out.

    python gradio_app.py                          # trained tiny checkpoint, or random weights
    python gradio_app.py --preset m2ugen-musicgen-small --llama_dir ckpts/LLaMA-2 --model DIR

What differs from the published demo, and why:
- the chat history is really fed to the model (oldest turns dropped to fit the context, and the
  chat says so), instead of answering every message as if it were the first;
- every browser session has its own state (gr.State holding an `app.session.ChatSession`:
  history, last generated music, a private folder); nothing is shared between users. When the
  tab closes (`demo.unload`) or the session has been idle for --session_ttl seconds (the state's
  time_to_live), its folder and the uploads it used are deleted; gradio's own copies of uploads
  and outputs are swept after the same time (`delete_cache`) and at shutdown;
- editing the last generated music is an explicit checkbox, never a silent swap of the upload;
- it listens on 127.0.0.1 unless told otherwise; a public share link is opt-in (--share), and
  it or any non-loopback --host requires --auth user:pass;
- uploads are size-limited, audio/video longer than --max_media_seconds is refused from its
  header before decoding, the queue runs a bounded number of jobs at once, and errors become chat
  messages (the app keeps serving): bad input is named, internal errors show only a reference
  whose details are in the server log;
- with no trained checkpoint it still starts, on random weights, and the page says so.

Setting defaults (sliders and API) come from `llama.m2ugen.GenerationSettings` and the decoder's
configuration, like the CLI's. A named API endpoint `chat` serves programs (gradio_client):
(text, audio, image, video files, settings...) -> (reply text, generated WAV file or None). The
session's history applies there too.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import ipaddress
import logging
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

import gradio as gr

from app import args as app_args
from app import session as app_session
from app.errors import InputError, bad_input_errors, fail, one_line
from app.logs import setup_logging

log = logging.getLogger("m2ugen.gradio_app")

SESSION_TTL_SECONDS = 6 * 3600  # idle sessions (and their WAV files) are dropped after this
CONCURRENCY_ID = "m2ugen-model"  # the UI and API events share one bounded pool of model workers
PROG = "gradio_app.py"
PAGE_CSS = ("#random-weights-notice {background: #fef3c7; border: 1px solid #f59e0b; "
            "border-radius: 6px; padding: 4px 12px;}")


@dataclasses.dataclass
class DemoSession:
    """What one browser session (or one API client) owns: its chat, the displayed messages, and
    the uploaded files its turns used (deleted with it)."""

    chat: app_session.ChatSession
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    key: str = ""  # gradio's session hash
    uploads: set[Path] = dataclasses.field(default_factory=set)
    closed: bool = False


@dataclasses.dataclass
class TurnRequest:
    text: str
    audio: Optional[str]
    image: Optional[str]
    video: Optional[str]
    edit_last_music: bool
    music: str
    settings: dict[str, Any]


class ChatService:
    """The loaded model plus the demo's turn and session policy. Per-user data lives in the
    DemoSession objects (held by gradio's per-session state); the service only indexes the live
    ones by session hash, so a closing tab can end its own session and no other."""

    def __init__(self, engine: app_session.LoadedModel, root: Path, description: str = "") -> None:
        self.engine = engine
        self.root = root
        self.description = description or engine.description
        self.sessions: dict[str, DemoSession] = {}
        self._lock = threading.Lock()

    def new_session(self, key: str = "") -> DemoSession:
        self.root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="session-", dir=self.root))
        session = DemoSession(app_session.ChatSession(self.engine, folder),
                              key=key or folder.name)
        with self._lock:
            self.sessions[session.key] = session
        return session

    def session_for(self, state: Any, request: Optional[gr.Request]) -> DemoSession:
        """The session in `state`, or a new one for this browser session / API client."""
        if isinstance(state, DemoSession) and not state.closed:
            return state
        key = getattr(request, "session_hash", None) or ""
        with self._lock:
            known = self.sessions.get(key) if key else None
        return known if known is not None else self.new_session(key)

    def end_session(self, session: Optional[DemoSession]) -> None:
        """Delete the session's folder and the uploads no other live session uses (idempotent;
        called when the tab closes and when gradio drops the expired state)."""
        if not isinstance(session, DemoSession):
            return
        with self._lock:
            if self.sessions.get(session.key) is session:
                del self.sessions[session.key]
            session.closed = True
            in_use = set().union(*(s.uploads for s in self.sessions.values()))
            uploads, session.uploads = session.uploads - in_use, set()
        session.chat.close()
        removed = sum(_remove_upload(path) for path in uploads)
        log.info("session %s ended: folder and %d upload(s) deleted", session.key, removed)

    def end_by_key(self, key: Optional[str]) -> None:
        """End the live session of gradio session hash `key` (no-op when there is none)."""
        with self._lock:
            session = self.sessions.get(key or "")
        self.end_session(session)

    def remember_uploads(self, session: DemoSession, req: "TurnRequest") -> None:
        """Record the uploads a turn used, so they go when the session ends."""
        with self._lock:
            session.uploads.update(Path(p) for p in (req.audio, req.image, req.video) if p)

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

    def turn(self, session: DemoSession, req: TurnRequest) -> Iterator[tuple[str, Any]]:
        """Events: ("delta", text so far), then ("done", (text, wav path|None, note)) or
        ("error", message). The session's history changes only when the turn succeeded; files
        a turn writes after its session ended are deleted when it finishes."""
        try:
            if not req.text or not req.text.strip():
                raise InputError("the message is empty")
            settings = self.settings(req.settings)
            media = {"audio": req.audio or None, "image": req.image or None,
                     "video": req.video or None}
            shown = ""
            for item in session.chat.stream(req.text, media=media, settings=settings,
                                            music=req.music, edit_last_music=req.edit_last_music):
                if isinstance(item, str):
                    shown += item
                    yield "delta", shown
                else:
                    wav = str(item.wav) if item.wav else None
                    yield "done", (item.reply.text, wav, item.note)
        except bad_input_errors() as err:
            yield "error", _hide_paths(one_line(err), req)
        except Exception:  # noqa: BLE001 - a demo must answer, not die; logged in full
            ref = uuid.uuid4().hex[:8]
            log.exception("chat turn failed (reference %s)", ref)
            yield "error", (f"internal error (reference {ref}); the details are in the server "
                            "log")
        finally:
            if session.closed:  # the tab closed (or the state expired) while this turn ran
                session.chat.close()


def _remove_upload(path: Path) -> bool:
    """Delete an upload and its now-empty folder, only if it lies in gradio's upload folder
    (API callers may name files elsewhere: those are never ours to delete)."""
    upload_root = Path(gr.utils.get_upload_folder()).resolve()
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


def _hide_paths(message: str, req: TurnRequest) -> str:
    """Name uploads by their file name: server-side temp paths mean nothing to the user."""
    for path in (req.audio, req.image, req.video):
        if path:
            message = message.replace(str(path), Path(path).name)
    return message


def _user_message(req: TurnRequest) -> str:
    parts = [req.text]
    attached = [f"{kind}: {Path(p).name}" for kind, p in
                (("music", req.audio), ("image", req.image), ("video", req.video)) if p]
    if req.edit_last_music:
        attached.append("music: the last generated music")
    if attached:
        parts.append("📎 " + ", ".join(attached))
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Event handlers


SETTING_INPUTS = ("temperature", "top_p", "max_new_tokens", "audio_seconds", "guidance_scale",
                  "num_inference_steps", "music_conditioning")


def make_respond(service: ChatService):
    """UI handler: streams the answer into the chat; the status line says when it is done."""

    def respond(text, audio, image, video, edit_last, music, temperature, top_p, max_new_tokens,
                audio_seconds, guidance, steps, cond, session, request: gr.Request):
        session = service.session_for(session, request)
        knobs = (temperature, top_p, max_new_tokens, audio_seconds, guidance, steps, cond)
        req = TurnRequest(text or "", audio, image, video, bool(edit_last), music,
                          dict(zip(SETTING_INPUTS, knobs)))
        service.remember_uploads(session, req)
        skip = gr.skip()
        if not req.text.strip():
            yield skip, session, skip, skip, skip, "Type a message first."
            return
        started = time.monotonic()
        msgs = session.messages
        msgs.append({"role": "user", "content": _user_message(req)})
        msgs.append({"role": "assistant", "content": "…"})
        yield list(msgs), session, skip, skip, "", "⏳ Generating…"
        for kind, value in service.turn(session, req):
            if kind == "delta":
                msgs[-1] = {"role": "assistant", "content": value}
                yield list(msgs), session, skip, skip, skip, skip
            elif kind == "error":
                msgs[-1] = {"role": "assistant", "content": f"⚠️ Error: {value}"}
                yield (list(msgs), session, skip, skip, skip,
                       "⚠️ The last turn failed (see the chat).")
            else:
                reply_text, wav, note = value
                body = reply_text or ("*(music)*" if wav else "*(the model gave an empty answer)*")
                msgs[-1] = {"role": "assistant", "content": body}
                if wav:
                    msgs.append({"role": "assistant",
                                 "content": {"path": wav, "mime_type": "audio/wav"}})
                if note:
                    msgs.append({"role": "assistant", "content": f"*{note}*"})
                status = f"✓ Done in {time.monotonic() - started:.1f} s" + (
                    " (music below)" if wav else "")
                yield list(msgs), session, wav or skip, wav or skip, skip, status

    return respond


def make_api_chat(service: ChatService):
    """API handler: (text, media files, settings) -> (reply text, WAV file or None).
    Settings left empty (None) take the same defaults as the CLI."""

    def api_chat(text: str, audio: Optional[str] = None, image: Optional[str] = None,
                 video: Optional[str] = None, temperature: Optional[float] = None,
                 top_p: Optional[float] = None, max_new_tokens: Optional[int] = None,
                 audio_seconds: Optional[float] = None, guidance_scale: Optional[float] = None,
                 num_inference_steps: Optional[int] = None,
                 music_conditioning: Optional[str] = None, music: str = "auto",
                 edit_last_music: bool = False, session=None, request: gr.Request = None):
        session = service.session_for(session, request)
        knobs = (temperature, top_p, max_new_tokens, audio_seconds, guidance_scale,
                 num_inference_steps, music_conditioning)
        req = TurnRequest(text or "", audio, image, video, bool(edit_last_music), music,
                          dict(zip(SETTING_INPUTS, knobs)))
        service.remember_uploads(session, req)
        for kind, value in service.turn(session, req):
            if kind == "delta":
                yield value, None, session
            elif kind == "error":
                yield f"Error: {value}", None, session
            else:
                reply_text, wav, _ = value
                yield reply_text, wav, session

    return api_chat


def clear(session):
    """New chat: forget the conversation and the displayed messages."""
    if isinstance(session, DemoSession):
        session.chat.reset()
        session.messages.clear()
    return [], session, None, None, "Ready."


# ---------------------------------------------------------------------------------------------
# Page layout


def _chat_column() -> dict[str, Any]:
    """Chat, prompt, status and the generated-music player."""
    ui: dict[str, Any] = {}
    ui["chatbot"] = gr.Chatbot(label="Chat", height=480, elem_id="chatbot", buttons=["copy"])
    with gr.Row():
        ui["prompt"] = gr.Textbox(placeholder="Ask about the music / image / video, or ask for "
                                  "music…", show_label=False, scale=5, lines=1, elem_id="prompt")
        ui["send"] = gr.Button("Send", variant="primary", scale=1, elem_id="send")
    with gr.Row():
        ui["status"] = gr.Markdown("Ready.", elem_id="turn-status")
        ui["new_chat"] = gr.Button("New chat", size="sm", elem_id="new-chat", scale=0)
    gr.Markdown("### Generated music")
    ui["player"] = gr.Audio(label="Last generated music", type="filepath", interactive=False,
                            elem_id="music-player")
    ui["download"] = gr.File(label="Download WAV", interactive=False, elem_id="music-download")
    return ui


def _input_column(engine: app_session.LoadedModel) -> dict[str, Any]:
    """Media inputs, music mode and the settings sliders (defaults: the library's)."""
    from app.settings import default_guidance, default_steps, defaults

    cfg, d = engine.model.cfg, defaults()
    kind = cfg.decoder.kind
    max_tokens_cap = max(16, cfg.llama.max_seq_len // 2)
    ui: dict[str, Any] = {}
    gr.Markdown("### Inputs (optional, kept until you remove them)")
    ui["audio"] = gr.Audio(label="Music", type="filepath", sources=["upload", "microphone"],
                           format=None)
    ui["image"] = gr.File(label="Image", file_types=["image"], type="filepath")
    ui["video"] = gr.Video(label="Video", sources=["upload"], format=None)
    ui["edit_last"] = gr.Checkbox(label="Edit the last generated music (use it as the music "
                                  "input)", value=False, elem_id="edit-last")
    ui["music"] = gr.Radio(list(app_args.MUSIC_MODES), value="auto", label="Music output",
                           info="auto: when the model asks for it; always: every answer; "
                                "never: text only")
    with gr.Accordion("Text generation", open=False):
        ui["temperature"] = gr.Slider(0.0, 2.0, value=d.temperature, step=0.05,
                                      label="Temperature")
        ui["top_p"] = gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="Top-p")
        ui["max_new_tokens"] = gr.Slider(1, max_tokens_cap, step=1, label="Max new tokens",
                                         value=min(d.max_new_tokens, max_tokens_cap))
    with gr.Accordion("Music decoder", open=False):
        ui["audio_seconds"] = gr.Slider(1.0, cfg.decoder.max_seconds, value=d.audio_seconds,
                                        step=0.5, label="Music length (seconds)")
        ui["guidance_scale"] = gr.Slider(1.0, 10.0, value=default_guidance(cfg.decoder),
                                         step=0.5, label="Guidance scale (MusicGen)",
                                         visible=kind == "musicgen")
        ui["num_inference_steps"] = gr.Slider(1, 400, value=default_steps(cfg.decoder), step=1,
                                              label="Diffusion steps (AudioLDM2)",
                                              visible=kind == "audioldm2")
        ui["music_conditioning"] = gr.Radio(
            ["projector", "text"], value=d.music_conditioning, label="Decoder conditioning",
            info="projector: the model's [AUD] states (default); text: re-prompt the decoder "
                 "with the answer (published code)")
    return ui


def _api_components() -> dict[str, Any]:
    """Hidden components of the `chat` endpoint: it takes plain files and returns the WAV."""
    with gr.Column(visible=False):
        return {
            "text": gr.Textbox(label="text"),
            "audio": gr.File(label="audio", type="filepath"),
            "image": gr.File(label="image", type="filepath"),
            "video": gr.File(label="video", type="filepath"),
            "edit": gr.Checkbox(label="edit_last_music", value=False),
            "reply": gr.Textbox(label="reply"),
            "music": gr.File(label="music"),
            "button": gr.Button("api"),
        }


def _wire(service: ChatService, ui: dict[str, Any], api: dict[str, Any], session) -> None:
    """Connect the page's events (UI and API share one bounded pool of model workers)."""
    knobs = [ui[name] for name in SETTING_INPUTS]
    inputs = [ui["prompt"], ui["audio"], ui["image"], ui["video"], ui["edit_last"], ui["music"],
              *knobs, session]
    outputs = [ui["chatbot"], session, ui["player"], ui["download"], ui["prompt"], ui["status"]]
    respond = make_respond(service)
    for trigger in (ui["send"].click, ui["prompt"].submit):
        trigger(respond, inputs, outputs, api_visibility="undocumented",
                concurrency_id=CONCURRENCY_ID)
    for trigger in (ui["new_chat"].click, ui["chatbot"].clear):  # the chat's own trash icon too
        trigger(clear, [session],
                [ui["chatbot"], session, ui["player"], ui["download"], ui["status"]],
                api_visibility="undocumented")
    api["button"].click(
        make_api_chat(service),
        [api["text"], api["audio"], api["image"], api["video"], *knobs, ui["music"],
         api["edit"], session],
        [api["reply"], api["music"], session],
        api_name="chat", concurrency_id=CONCURRENCY_ID,
    )


def build_app(engine: app_session.LoadedModel, *, description: str = "",
              root: Optional[Path] = None, session_ttl: int = SESSION_TTL_SECONDS) -> gr.Blocks:
    """The demo page for a loaded model. Session folders go under `root` (default: a temp dir);
    a session idle for `session_ttl` seconds is ended, and gradio's copies of uploads and
    outputs older than that are swept (every `session_ttl` seconds, at most hourly)."""
    if session_ttl < 1:
        raise InputError(f"--session_ttl must be >= 1 second, got {session_ttl}")
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="m2ugen-demo-"))
        atexit.register(shutil.rmtree, root, True)
    service = ChatService(engine, root, description)
    sweep = (min(int(session_ttl), 3600), int(session_ttl))
    with gr.Blocks(title="M2UGen demo", fill_height=False, delete_cache=sweep) as app:
        gr.Markdown(f"# M2UGen: music understanding and generation\n{service.description}")
        if not engine.model.trained:
            gr.Markdown(
                "⚠️ **No trained checkpoint was found: this demo runs on RANDOM weights, so its "
                "answers and music are meaningless.** Train the tiny model with `make demo`, or "
                "start with `--model CHECKPOINT_DIR`.",
                elem_id="random-weights-notice",
            )
        session = gr.State(None, time_to_live=session_ttl, delete_callback=service.end_session)
        with gr.Row():
            with gr.Column(scale=3):
                ui = _chat_column()
            with gr.Column(scale=2):
                ui.update(_input_column(engine))
        api = _api_components()
        _wire(service, ui, api, session)
        app.unload(_make_unload(service))
    app.chat_service = service  # what tests and operators inspect: the live sessions
    return app


def _make_unload(service: ChatService):
    """demo.unload handler: the closing tab's session ends now, not when its state expires."""

    def on_unload(request: gr.Request) -> None:
        service.end_by_key(getattr(request, "session_hash", None))

    return on_unload


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = app_args.OneLineParser(prog=PROG, description="M2UGen web demo.")
    app_args.add_model_arguments(p)
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it on the "
                        "network)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free)")
    s.add_argument("--share", action="store_true",
                   help="opt in to a public gradio.live link (requires --auth)")
    s.add_argument("--auth", default=None, type=parse_auth, metavar="USER:PASS",
                   help="require this login; required with --share or a non-loopback --host")
    s.add_argument("--session_ttl", type=int, default=SESSION_TTL_SECONDS,
                   help="seconds an idle session (its files, its uploads) is kept "
                        f"(default {SESSION_TTL_SECONDS})")
    s.add_argument("--max_file_size", default="100mb", help="upload size limit (default 100mb)")
    s.add_argument("--concurrency", type=int, default=1,
                   help="generation jobs run at once (default 1; more only helps on a GPU)")
    s.add_argument("--queue_size", type=int, default=32, help="waiting jobs before refusing")
    s.add_argument("--verbose", action="store_true")
    app_args.add_media_arguments(p)
    return p


def parse_auth(text: str) -> tuple[str, str]:
    """argparse type for --auth: "user:pass", both parts non-empty (the password may hold ':')."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("expected USER:PASS with both parts non-empty")
    return user, password


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


def check_exposure(host: str, share: bool, auth: Optional[tuple[str, str]]) -> None:
    """Refuse to serve beyond this machine without a login."""
    if auth is None and share:
        raise InputError("--share publishes the demo on the internet: also give --auth USER:PASS")
    if auth is None and not is_loopback(host):
        raise InputError(f"--host {host} is reachable from other machines: also give "
                         "--auth USER:PASS (or listen on 127.0.0.1)")


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           max_file_size: str | int = "100mb", concurrency: int = 1, queue_size: int = 32,
           block: bool = True, quiet: bool = False,
           auth: Optional[tuple[str, str]] = None) -> gr.Blocks:
    """Queue + launch with the demo's safe defaults; returns the app (URL: `app.local_url`).
    Raises InputError when asked to serve beyond this machine without `auth`."""
    check_exposure(host, share, auth)
    if port == 0:
        port = _free_port(host)
    app.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    app.launch(server_name=host, server_port=port, share=share, max_file_size=max_file_size,
               prevent_thread_lock=not block, quiet=quiet, show_error=False, auth=auth,
               theme=gr.themes.Soft(), css=PAGE_CSS)
    return app


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        if args.concurrency < 1:
            raise InputError("--concurrency must be >= 1")
        if args.session_ttl < 1:
            raise InputError("--session_ttl must be >= 1")
        check_exposure(args.host, args.share, args.auth)
        choice = app_session.choose_model(args)
        notice = app_session.random_weights_notice(choice)
        if notice:
            print(notice, file=sys.stderr)
        engine = app_session.load_model(choice)
    except bad_input_errors() as err:
        return fail(PROG, err)
    engine.max_media_seconds = args.max_media_seconds
    app = build_app(engine, session_ttl=args.session_ttl)
    print(f"M2UGen demo: {engine.description}", file=sys.stderr)
    launch(app, host=args.host, port=args.port, share=args.share,
           max_file_size=args.max_file_size, concurrency=args.concurrency,
           queue_size=args.queue_size, auth=args.auth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
