"""Web demo for M2UGen (gradio 6): multi-turn chat about music, images and video, and music out.

    python gradio_app.py                          # trained tiny checkpoint, or random weights
    python gradio_app.py --preset m2ugen-musicgen-small --llama_dir ckpts/LLaMA-2 --model DIR

What differs from the published demo, and why:
- the chat history is really fed to the model (oldest turns dropped to fit the context, and the
  chat says so), instead of answering every message as if it were the first;
- every browser session has its own state (gr.State holding an `app.service.DemoSession`:
  history, last generated music, a private folder); nothing is shared between users. When the
  tab closes (`demo.unload`) or the session has been idle for --session_ttl seconds (the state's
  time_to_live), its folder, the uploads it used and their remembered features are deleted,
  gradio's record of it is dropped and the freed heap memory is returned; gradio's own copies of
  uploads and outputs (and the empty files and folders it leaves) are swept after the same time
  and at shutdown (app/service.py; measured under load: docs/DEMO.md);
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

This file is the page and the command line only: what a session owns, what happens to uploads
and when sessions expire is `app.service`; a turn itself is `app.chat` over `app.engine`.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import ipaddress
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import gradio as gr

from app import args as app_args
from app.engine import LoadedModel, check_prompt
from app.errors import InputError, bad_input_errors, fail
from app.loading import choose_model, load_model, random_weights_notice
from app.logs import setup_logging
from app.service import (
    SESSION_TTL_SECONDS,
    Answer,
    AnswerSoFar,
    ChatService,
    DemoSession,
    TurnFailed,
    TurnRequest,
    limit_malloc_arenas,
)

CONCURRENCY_ID = "m2ugen-model"  # the UI and API events share one bounded pool of model workers
PROG = "gradio_app.py"
PAGE_CSS = ("#random-weights-notice {background: #fef3c7; border: 1px solid #f59e0b; "
            "border-radius: 6px; padding: 4px 12px;}")


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
        try:
            check_prompt(req.text)  # the engine's rule, checked before the chat shows anything
        except InputError:
            yield skip, session, skip, skip, skip, "Type a message first."
            return
        started = time.monotonic()
        msgs = session.messages
        msgs.append({"role": "user", "content": _user_message(req)})
        msgs.append({"role": "assistant", "content": "…"})
        yield list(msgs), session, skip, skip, "", "⏳ Generating…"
        for event in service.turn(session, req):
            if isinstance(event, AnswerSoFar):
                msgs[-1] = {"role": "assistant", "content": event.text}
                yield list(msgs), session, skip, skip, skip, skip
            elif isinstance(event, TurnFailed):
                msgs[-1] = {"role": "assistant", "content": f"⚠️ Error: {event.message}"}
                yield (list(msgs), session, skip, skip, skip,
                       "⚠️ The last turn failed (see the chat).")
            else:
                shown, wav, status = _show_answer(msgs, event, time.monotonic() - started)
                yield shown, session, wav or skip, wav or skip, skip, status

    return respond


def _show_answer(msgs: list[dict[str, Any]], answer: Answer,
                 seconds: float) -> tuple[list[dict[str, Any]], Optional[str], str]:
    """(messages, WAV, status line) after a finished turn; the music is shown below the answer."""
    wav = answer.wav
    body = answer.text or ("*(music)*" if wav else "*(the model gave an empty answer)*")
    msgs[-1] = {"role": "assistant", "content": body}
    if wav:
        msgs.append({"role": "assistant", "content": {"path": wav, "mime_type": "audio/wav"}})
    if answer.note:
        msgs.append({"role": "assistant", "content": f"*{answer.note}*"})
    status = f"✓ Done in {seconds:.1f} s" + (" (music below)" if wav else "")
    return list(msgs), wav, status


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
        for event in service.turn(session, req):
            if isinstance(event, AnswerSoFar):
                yield event.text, None, session
            elif isinstance(event, TurnFailed):
                yield f"Error: {event.message}", None, session
            else:
                yield event.text, event.wav, session

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


def _input_column(engine: LoadedModel) -> dict[str, Any]:
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


def build_app(engine: LoadedModel, *, description: str = "",
              root: Optional[Path] = None, session_ttl: int = SESSION_TTL_SECONDS) -> gr.Blocks:
    """The demo page for a loaded model. Session folders go under `root` (default: a temp dir);
    a session idle for `session_ttl` seconds is ended, and gradio's copies of uploads and
    outputs older than that are swept (every `session_ttl` seconds, at most hourly)."""
    if session_ttl < 1:
        raise InputError(f"--session_ttl must be >= 1 second, got {session_ttl}")
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="m2ugen-demo-"))
        atexit.register(shutil.rmtree, root, True)
    service = ChatService(engine, root, description, stale_after=session_ttl)
    sweep = (min(int(session_ttl), 3600), int(session_ttl))
    with gr.Blocks(title="M2UGen demo", fill_height=False, delete_cache=sweep) as app:
        gr.Markdown(f"# M2UGen: music understanding and generation\n{service.description}")
        if not engine.model.trained:
            gr.Markdown(
                "⚠️ **No trained checkpoint was found: this demo runs on RANDOM weights, so its "
                "answers and music are meaningless.** Start with `--model CHECKPOINT_DIR` (`make "
                "demo` serves the trained tiny checkpoint assets/tiny_m2ugen).",
                elem_id="random-weights-notice",
            )
        session = gr.State(None, time_to_live=session_ttl,
                           delete_callback=_make_state_expiry(service))
        with gr.Row():
            with gr.Column(scale=3):
                ui = _chat_column()
            with gr.Column(scale=2):
                ui.update(_input_column(engine))
        api = _api_components()
        _wire(service, ui, api, session)
        app.unload(_make_unload(service))
    service.on_end = functools.partial(forget_gradio_session, app)
    service.start_janitor()
    app.chat_service = service  # what tests and operators inspect: the live sessions
    return app


def forget_gradio_session(app: gr.Blocks, key: str) -> None:
    """Drop gradio's own record of an ended session (a copy of the page's configuration per
    session hash, kept until 10,000 sessions otherwise: only the State's value expires)."""
    holder = getattr(app, "state_holder", None)
    if holder is None:
        return
    with holder.lock:
        holder.session_data.pop(key, None)
        holder.time_last_used.pop(key, None)


def _make_state_expiry(service: ChatService):
    """gr.State's delete_callback, as a plain function: gradio keeps it in the page config, which
    it deep-copies on every page load and API connection, and a bound method would take its
    object along (the service, hence the whole model, on every connection: docs/DEMO.md, "Where
    the memory went"). A function is copied by reference."""

    def end_expired_session(session: Optional[DemoSession]) -> None:
        service.end_session(session)

    return end_expired_session


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
                   help="generation jobs run at once (default 1; measured: docs/DEMO.md)")
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
    limit_malloc_arenas()
    try:
        if args.concurrency < 1:
            raise InputError("--concurrency must be >= 1")
        if args.session_ttl < 1:
            raise InputError("--session_ttl must be >= 1")
        check_exposure(args.host, args.share, args.auth)
        choice = choose_model(args)
        notice = random_weights_notice(choice)
        if notice:
            print(notice, file=sys.stderr)
        engine = load_model(choice)
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
