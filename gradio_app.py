"""Web demo for M2UGen (gradio 6): multi-turn chat about music, images and video, and music out.

    python gradio_app.py                          # trained tiny checkpoint, or random weights
    python gradio_app.py --preset m2ugen-musicgen-small --llama_dir ckpts/LLaMA-2 --model DIR

What differs from the published demo, and why:
- the chat history is really fed to the model (oldest turns dropped to fit the context, and the
  chat says so), instead of answering every message as if it were the first;
- every browser session has its own state (gr.State: history, last generated music, a private temp
  folder deleted when the session ends); nothing is shared between users;
- editing the last generated music is an explicit checkbox, never a silent swap of the upload;
- it listens on 127.0.0.1 unless told otherwise, and a public share link is opt-in (--share);
- uploads are size-limited, the queue runs a bounded number of jobs at once, and errors become chat
  messages (the app keeps serving);
- with no trained checkpoint it still starts, on random weights, and the page says so.

A named API endpoint `chat` serves programs (gradio_client): (text, audio, image, video files,
settings...) -> (reply text, generated WAV file or None). The session's history applies there too.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import gradio as gr

import inference

if TYPE_CHECKING:
    from llama.m2ugen import M2UGen

log = logging.getLogger("m2ugen.gradio_app")

SESSION_TTL_SECONDS = 6 * 3600  # idle sessions (and their WAV files) are dropped after this
CONCURRENCY_ID = "m2ugen-model"  # the UI and API events share one bounded pool of model workers
PROG = "gradio_app.py"
PAGE_CSS = ("#random-weights-notice {background: #fef3c7; border: 1px solid #f59e0b; "
            "border-radius: 6px; padding: 4px 12px;}")


@dataclasses.dataclass
class Session:
    """Everything one browser session (or one API client) owns."""

    folder: Path
    history: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # as fed to the model
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # as displayed
    last_music: Optional[str] = None
    turns: int = 0


def _delete_session(session: Optional[Session]) -> None:
    """gr.State delete callback: the session's generated files go with it."""
    if isinstance(session, Session):
        shutil.rmtree(session.folder, ignore_errors=True)


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
    """The model plus the per-session turn logic; holds no per-user data itself."""

    def __init__(self, model: "M2UGen", root: Path, description: str = "") -> None:
        self.model = model
        self.root = root
        self.description = description or f"{model.cfg.name} ({model.cfg.decoder.kind} decoder)"

    def new_session(self) -> Session:
        self.root.mkdir(parents=True, exist_ok=True)
        return Session(folder=Path(tempfile.mkdtemp(prefix="session-", dir=self.root)))

    def settings(self, values: dict[str, Any]):
        """GenerationSettings from UI values; decoder knobs only for the decoder that has them."""
        kind = self.model.cfg.decoder.kind
        values = dict(values)
        if kind != "musicgen":
            values["guidance_scale"] = None
        if kind != "audioldm2":
            values["num_inference_steps"] = None
        if values.get("max_new_tokens") is not None:
            values["max_new_tokens"] = int(values["max_new_tokens"])
        if values.get("num_inference_steps") is not None:
            values["num_inference_steps"] = int(values["num_inference_steps"])
        if values.get("seed") is not None:
            values["seed"] = int(values["seed"])
        return inference.make_settings(**values)

    def turn(self, session: Session, req: TurnRequest) -> Iterator[tuple[str, Any]]:
        """Events: ("delta", text so far), then ("done", (text, wav path|None, note)) or
        ("error", message). The session's history changes only when the turn succeeded."""
        from llama.m2ugen import ChatReply, MediaInput

        try:
            if not req.text or not req.text.strip():
                raise inference.InputError("the message is empty")
            audio = req.audio
            if req.edit_last_music:
                if req.audio:
                    raise inference.InputError(
                        "either upload music or tick 'edit the last generated music', not both"
                    )
                if session.last_music is None or not Path(session.last_music).is_file():
                    raise inference.InputError("there is no generated music to edit yet")
                audio = session.last_music
            settings = self.settings(req.settings)
            media = MediaInput(audio=audio or None, image=req.image or None,
                               video=req.video or None)
            shown = ""
            reply: Optional[ChatReply] = None
            for item in inference.stream_turn(self.model, req.text, history=session.history,
                                              media=media, settings=settings, music=req.music):
                if isinstance(item, str):
                    shown += item
                    yield "delta", shown
                else:
                    reply = item
            assert reply is not None
            wav = None
            if reply.music is not None:
                session.turns += 1
                wav = str(inference.write_wav(session.folder / f"music-{session.turns}.wav",
                                              reply.music, reply.sample_rate))
                session.last_music = wav
            session.history.append((req.text, inference.history_answer(reply)))
            note = ""
            if reply.dropped_history_turns:
                note = (f"(the {reply.dropped_history_turns} oldest turn(s) no longer fit the "
                        "context and were left out)")
            yield "done", (reply.text, wav, note)
        except inference.input_error_types() as err:
            yield "error", _hide_paths(inference.one_line(err), req)
        except Exception as err:  # noqa: BLE001 - a demo must answer, not die; logged in full
            log.exception("chat turn failed")
            yield "error", f"internal error ({type(err).__name__}): {inference.one_line(err)}"


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


def build_app(model: "M2UGen", *, description: str = "",
              root: Optional[Path] = None) -> gr.Blocks:
    """The demo page for `model`. Generated files go under `root` (default: a new temp dir)."""
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="m2ugen-demo-"))
        atexit.register(shutil.rmtree, root, True)
    service = ChatService(model, root, description)
    cfg = model.cfg
    kind = cfg.decoder.kind
    max_tokens_cap = max(16, cfg.llama.max_seq_len // 2)
    # A quarter of the context by default, so that a few turns of history still fit beside it.
    default_max_new = min(256, max(16, cfg.llama.max_seq_len // 4))

    def settings_of(temperature, top_p, max_new_tokens, audio_seconds, guidance, steps, cond):
        return dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                    audio_seconds=audio_seconds, guidance_scale=guidance,
                    num_inference_steps=steps, music_conditioning=cond)

    def respond(text, audio, image, video, edit_last, music, temperature, top_p, max_new_tokens,
                audio_seconds, guidance, steps, cond, session):
        """UI handler: streams the answer into the chat; the status line says when it is done."""
        session = session if isinstance(session, Session) else service.new_session()
        req = TurnRequest(text or "", audio, image, video, bool(edit_last), music,
                          settings_of(temperature, top_p, max_new_tokens, audio_seconds,
                                      guidance, steps, cond))
        if not req.text.strip():
            yield gr.skip(), session, gr.skip(), gr.skip(), gr.skip(), "Type a message first."
            return
        started = time.monotonic()
        msgs = session.messages
        msgs.append({"role": "user", "content": _user_message(req)})
        msgs.append({"role": "assistant", "content": "…"})
        skip = gr.skip()
        yield list(msgs), session, skip, skip, "", "⏳ Generating…"
        for kind_, value in service.turn(session, req):
            if kind_ == "delta":
                msgs[-1] = {"role": "assistant", "content": value}
                yield list(msgs), session, skip, skip, skip, skip
            elif kind_ == "error":
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
                yield (list(msgs), session, wav or skip, wav or skip, skip, status)

    def api_chat(text: str, audio: Optional[str] = None, image: Optional[str] = None,
                 video: Optional[str] = None, temperature: float = 0.6, top_p: float = 0.8,
                 max_new_tokens: Optional[int] = None, audio_seconds: float = 5.0,
                 guidance_scale: Optional[float] = None, num_inference_steps: Optional[int] = None,
                 music_conditioning: str = "projector", music: str = "auto",
                 edit_last_music: bool = False, session=None):
        """API handler: (text, media files, settings) -> (reply text, WAV file or None)."""
        session = session if isinstance(session, Session) else service.new_session()
        max_new_tokens = default_max_new if max_new_tokens is None else max_new_tokens
        req = TurnRequest(text or "", audio, image, video, bool(edit_last_music), music,
                          settings_of(temperature, top_p, max_new_tokens, audio_seconds,
                                      guidance_scale, num_inference_steps, music_conditioning))
        for kind_, value in service.turn(session, req):
            if kind_ == "delta":
                yield value, None, session
            elif kind_ == "error":
                yield f"Error: {value}", None, session
            else:
                reply_text, wav, note = value
                yield reply_text, wav, session

    def clear(session):
        if isinstance(session, Session):
            session.history.clear()
            session.messages.clear()
            session.last_music = None
        return [], session, None, None, "Ready."

    with gr.Blocks(title="M2UGen demo", fill_height=False) as app:
        gr.Markdown(f"# M2UGen: music understanding and generation\n{service.description}")
        if not model.trained:
            gr.Markdown(
                "⚠️ **No trained checkpoint was found: this demo runs on RANDOM weights, so its "
                "answers and music are meaningless.** Train the tiny model with `make demo`, or "
                "start with `--model CHECKPOINT_DIR`.",
                elem_id="random-weights-notice",
            )
        session = gr.State(None, time_to_live=SESSION_TTL_SECONDS, delete_callback=_delete_session)
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=480, elem_id="chatbot",
                                     buttons=["copy"])
                with gr.Row():
                    prompt = gr.Textbox(placeholder="Ask about the music / image / video, or ask "
                                        "for music…", show_label=False, scale=5, lines=1,
                                        elem_id="prompt")
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                with gr.Row():
                    status = gr.Markdown("Ready.", elem_id="turn-status")
                    new_chat = gr.Button("New chat", size="sm", elem_id="new-chat", scale=0)
                gr.Markdown("### Generated music")
                player = gr.Audio(label="Last generated music", type="filepath",
                                  interactive=False, elem_id="music-player")
                download = gr.File(label="Download WAV", interactive=False,
                                   elem_id="music-download")
            with gr.Column(scale=2):
                gr.Markdown("### Inputs (optional, kept until you remove them)")
                audio_in = gr.Audio(label="Music", type="filepath",
                                    sources=["upload", "microphone"], format=None)
                image_in = gr.File(label="Image", file_types=["image"], type="filepath")
                video_in = gr.Video(label="Video", sources=["upload"], format=None)
                edit_last = gr.Checkbox(
                    label="Edit the last generated music (use it as the music input)",
                    value=False, elem_id="edit-last",
                )
                music_mode = gr.Radio(
                    list(inference.MUSIC_MODES), value="auto", label="Music output",
                    info="auto: when the model asks for it; always: every answer; never: text only",
                )
                with gr.Accordion("Text generation", open=False):
                    temperature = gr.Slider(0.0, 2.0, value=0.6, step=0.05, label="Temperature")
                    top_p = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="Top-p")
                    max_new = gr.Slider(1, max_tokens_cap, value=default_max_new, step=1,
                                        label="Max new tokens")
                with gr.Accordion("Music decoder", open=False):
                    seconds = gr.Slider(1.0, 30.0, value=5.0, step=0.5,
                                        label="Music length (seconds)")
                    guidance = gr.Slider(0.0, 10.0, value=cfg.decoder.guidance_scale, step=0.5,
                                         label="Guidance scale (MusicGen)",
                                         visible=kind == "musicgen")
                    steps = gr.Slider(1, 400, value=cfg.decoder.num_inference_steps, step=1,
                                      label="Diffusion steps (AudioLDM2)",
                                      visible=kind == "audioldm2")
                    cond = gr.Radio(["projector", "text"], value="projector",
                                    label="Decoder conditioning",
                                    info="projector: the model's [AUD] states (default); text: "
                                         "re-prompt the decoder with the answer (published code)")
        # API-only components (hidden): the `chat` endpoint takes plain files and returns the WAV.
        with gr.Column(visible=False):
            api_text = gr.Textbox(label="text")
            api_audio = gr.File(label="audio", type="filepath")
            api_image = gr.File(label="image", type="filepath")
            api_video = gr.File(label="video", type="filepath")
            api_edit = gr.Checkbox(label="edit_last_music", value=False)
            api_reply = gr.Textbox(label="reply")
            api_music = gr.File(label="music")
            api_button = gr.Button("api")

        inputs = [prompt, audio_in, image_in, video_in, edit_last, music_mode, temperature, top_p,
                  max_new, seconds, guidance, steps, cond, session]
        outputs = [chatbot, session, player, download, prompt, status]
        for trigger in (send.click, prompt.submit):
            trigger(respond, inputs, outputs, api_visibility="undocumented",
                    concurrency_id=CONCURRENCY_ID)
        for trigger in (new_chat.click, chatbot.clear):  # the chat's own trash icon too
            trigger(clear, [session], [chatbot, session, player, download, status],
                    api_visibility="undocumented")
        api_button.click(
            api_chat,
            [api_text, api_audio, api_image, api_video, temperature, top_p, max_new, seconds,
             guidance, steps, cond, music_mode, api_edit, session],
            [api_reply, api_music, session],
            api_name="chat", concurrency_id=CONCURRENCY_ID,
        )
    return app


def build_parser() -> argparse.ArgumentParser:
    p = inference.OneLineParser(prog=PROG, description="M2UGen web demo.")
    inference.add_model_arguments(p)
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it on the "
                        "network)")
    s.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free)")
    s.add_argument("--share", action="store_true", help="opt in to a public gradio.live link")
    s.add_argument("--max_file_size", default="100mb", help="upload size limit (default 100mb)")
    s.add_argument("--concurrency", type=int, default=1,
                   help="generation jobs run at once (default 1; more only helps on a GPU)")
    s.add_argument("--queue_size", type=int, default=32, help="waiting jobs before refusing")
    s.add_argument("--verbose", action="store_true")
    return p


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           max_file_size: str | int = "100mb", concurrency: int = 1, queue_size: int = 32,
           block: bool = True, quiet: bool = False) -> gr.Blocks:
    """Queue + launch with the demo's safe defaults; returns the app (URL: `app.local_url`)."""
    if port == 0:
        port = _free_port(host)
    app.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    app.launch(server_name=host, server_port=port, share=share, max_file_size=max_file_size,
               prevent_thread_lock=not block, quiet=quiet, show_error=False,
               theme=gr.themes.Soft(), css=PAGE_CSS)
    return app


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.concurrency < 1:
        return inference.fail(inference.InputError("--concurrency must be >= 1"), PROG)
    try:
        choice = inference.choose_model(args)
    except inference.InputError as err:
        return inference.fail(err, PROG)
    if not args.verbose:
        inference.quiet_libraries()
    try:
        model = inference.load_model(choice)
        inference.check_decoder_choice(model, args.music_decoder)
    except inference.input_error_types() as err:
        return inference.fail(err, PROG)
    app = build_app(model, description=inference.describe_model(model, choice))
    print(f"M2UGen demo: {inference.describe_model(model, choice)}", file=sys.stderr)
    launch(app, host=args.host, port=args.port, share=args.share,
           max_file_size=args.max_file_size, concurrency=args.concurrency,
           queue_size=args.queue_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
