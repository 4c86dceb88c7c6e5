"""The web demo, driven through gradio_client against a real server on 127.0.0.1.

The tiny model runs on random weights; a spy records what each turn fed the model (prompt,
history, prompt token count) and which media files were turned into features, so the tests check
behaviour, not just that a reply came back. The main server runs two jobs at once
(--concurrency 2), so per-session state is checked under concurrent turns; a second server with a
login and a 2-second session lifetime checks --auth and session expiry.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from PIL import Image

import gradio_app
from app.engine import LoadedModel
from app.errors import InputError
from app.loading import ModelChoice, load_model


def write_media(folder: Path) -> dict[str, Path]:
    """A short sine WAV, a PNG, an MP4, and a corrupt PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    sr = 24000
    t = np.arange(sr // 2) / sr
    sf.write(folder / "tone.wav", (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), sr)
    Image.fromarray(np.full((48, 48, 3), (0, 0, 200), np.uint8)).save(folder / "blue.png")
    with av.open(str(folder / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(12):
            frame = np.full((64, 64, 3), 20 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    return {"audio": folder / "tone.wav", "image": folder / "blue.png",
            "video": folder / "clip.mp4", "bad_image": folder / "broken.png"}


class Spy:
    """Wraps the model's build_prompt and the media front end to record what every turn used."""

    def __init__(self, engine: LoadedModel) -> None:
        self.prompts: list[dict] = []
        self.media: list[tuple[str, list]] = []
        model = engine.model
        build, features = model.build_prompt, engine.features.item_features

        def build_prompt(prompt, history, max_new_tokens):
            ids, dropped = build(prompt, history, max_new_tokens)
            self.prompts.append({"prompt": prompt, "history": list(history), "n_tokens": len(ids),
                                 "text": model.tokenizer.decode(ids)})
            return ids, dropped

        def item_features(modality, item):
            self.media.append((modality, [str(item)]))
            return features(modality, item)

        model.build_prompt = build_prompt
        engine.features.item_features = item_features

    def for_prompt(self, prompt: str) -> dict:
        (hit,) = [p for p in self.prompts if p["prompt"] == prompt]
        return hit


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return write_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    engine = load_model(ModelChoice(None, "tiny", {}, "cpu", "float32"))
    spy = Spy(engine)
    root = tmp_path_factory.mktemp("sessions")
    app = gradio_app.build_app(engine, root=root)
    gradio_app.launch(app, host="127.0.0.1", port=0, block=False, quiet=True, concurrency=2)
    try:
        yield app, spy, root
    finally:
        app.close()


@pytest.fixture
def client(served) -> Client:
    return Client(served[0].local_url, verbose=False)


SHORT = dict(max_new_tokens=6, temperature=0.0, api_name="/chat")


def test_listens_on_localhost_and_page_says_random_weights(served):
    app, _, _ = served
    assert app.local_url.startswith("http://127.0.0.1:")
    assert app.share_url is None
    assert app.max_file_size == 100 * 1024 * 1024  # uploads are size-limited
    config = httpx.get(app.local_url + "config", timeout=10).text
    assert "RANDOM weights" in config and "random-weights-notice" in config


def test_page_loads_and_api_connections_do_not_copy_the_model(served, monkeypatch):
    # gradio deep-copies the page config on every page load and API connection; a bound method
    # in it (gr.State's delete_callback) took the service, and with it the model, along
    from llama.m2ugen import M2UGen

    copies = []
    monkeypatch.setattr(M2UGen, "__deepcopy__", lambda self, memo: copies.append(1) or self,
                        raising=False)
    app = served[0]
    for path in ("", "config", "gradio_api/info"):
        assert httpx.get(app.local_url + path, timeout=30).status_code == 200, path
    Client(app.local_url, verbose=False).close()
    assert copies == []


def test_setting_defaults_are_the_librarys(served):
    """Sliders start at GenerationSettings' defaults and the decoder configuration's guidance."""
    from llama.config import get_preset
    from llama.m2ugen import GenerationSettings

    app, _, _ = served
    config = httpx.get(app.local_url + "config", timeout=10).json()
    values = {c["props"].get("label"): c["props"].get("value") for c in config["components"]}
    d = GenerationSettings()
    assert values["Temperature"] == d.temperature and values["Top-p"] == d.top_p
    assert values["Max new tokens"] == d.max_new_tokens
    assert values["Music length (seconds)"] == d.audio_seconds
    assert values["Guidance scale (MusicGen)"] == get_preset("tiny").decoder.guidance_scale


def test_cli_defaults_are_safe():
    args = gradio_app.build_parser().parse_args([])
    assert (args.host, args.share, args.concurrency) == ("127.0.0.1", False, 1)
    assert args.max_file_size


def test_demo_has_the_limit_flag():
    args = gradio_app.build_parser().parse_args(["--max_media_seconds", "30"])
    assert args.max_media_seconds == 30.0
    assert gradio_app.build_parser().parse_args([]).max_media_seconds == 600.0


def exit_status(main, argv: list[str]) -> int:
    """A CLI's exit status, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize("argv, expected", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from other machines: also give --auth "
                            "USER:PASS (or listen on 127.0.0.1)"),
    (["--host", "example.org"], "--host example.org is reachable from other machines: also give "
                                "--auth USER:PASS (or listen on 127.0.0.1)"),
    (["--share"], "--share publishes the demo on the internet: also give --auth USER:PASS"),
    (["--auth", "nopassword"], "argument --auth: expected USER:PASS with both parts non-empty "
                               "(see --help)"),
])
def test_exposed_demo_requires_auth(argv, expected, capsys, monkeypatch):
    monkeypatch.setattr(gradio_app, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert exit_status(gradio_app.main, argv) == 2
    assert capsys.readouterr().err.strip() == f"gradio_app.py: error: {expected}"


def test_loopback_rules():
    for host in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
        assert gradio_app.is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "demo.example.org", ""):
        assert not gradio_app.is_loopback(host), host
    assert gradio_app.parse_auth("ann:se:cret") == ("ann", "se:cret")
    gradio_app.check_exposure("0.0.0.0", False, ("ann", "pw"))  # allowed with a login
    with pytest.raises(InputError):
        gradio_app.launch(None, host="0.0.0.0")  # refused before anything is served


def test_text_turn_streams(client, served):
    _, spy, _ = served
    job = client.submit(text="Tell me about the blues", music="never", **SHORT)
    reply, music = job.result(timeout=60)
    assert isinstance(reply, str) and not reply.startswith("Error") and music is None
    outputs = job.outputs()
    assert len(outputs) >= 2  # partial texts arrived before the final answer
    assert spy.for_prompt("Tell me about the blues")["history"] == []


@pytest.mark.parametrize("modality", ["audio", "image", "video"])
def test_turn_with_each_modality(modality, client, served, media):
    _, spy, _ = served
    before = len(spy.media)
    reply, music = client.predict(text=f"What does this {modality} suggest?",
                                  music="never", **{modality: handle_file(str(media[modality]))},
                                  **SHORT)
    assert not reply.startswith("Error"), reply
    new = spy.media[before:]
    assert [m for m, _ in new] == [modality]
    assert Path(new[0][1][0]).name == media[modality].name


def test_music_turn_returns_wav(client):
    reply, music = client.predict(text="Compose a slow piano piece", music="always",
                                  audio_seconds=1.0, **SHORT)
    assert not reply.startswith("Error"), reply
    data, sr = sf.read(music)
    assert Path(music).suffix == ".wav" and sr > 0
    assert abs(len(data) / sr - 1.0) <= 0.05 and np.isfinite(data).all()


def test_second_turn_sees_the_first(client, served):
    _, spy, _ = served
    client.predict(text="My favourite instrument is the flute", music="never", **SHORT)
    client.predict(text="Which instrument did I name?", music="never", **SHORT)
    first = spy.for_prompt("My favourite instrument is the flute")
    second = spy.for_prompt("Which instrument did I name?")
    assert first["history"] == []
    assert [q for q, _ in second["history"]] == ["My favourite instrument is the flute"]
    assert "flute" in second["text"]
    assert second["n_tokens"] > first["n_tokens"]


def test_two_clients_keep_separate_histories(served):
    _, spy, root = served
    url = served[0].local_url
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    a.predict(text="alpha says a low organ drone", music="never", **SHORT)
    b.predict(text="beta says a high flute trill", music="never", **SHORT)
    a.predict(text="alpha asks again", music="never", **SHORT)
    b.predict(text="beta asks again", music="never", **SHORT)
    assert [q for q, _ in spy.for_prompt("alpha asks again")["history"]] == [
        "alpha says a low organ drone"]
    assert [q for q, _ in spy.for_prompt("beta asks again")["history"]] == [
        "beta says a high flute trill"]
    assert len([p for p in root.iterdir() if p.name.startswith("session-")]) >= 2


def test_corrupt_upload_is_an_error_message_and_app_keeps_serving(client, served, media):
    _, spy, _ = served
    reply, music = client.predict(text="Describe this picture",
                                  image=handle_file(str(media["bad_image"])), **SHORT)
    assert reply.startswith("Error:") and "broken.png" in reply and music is None
    assert "/tmp/" not in reply  # server paths are not shown
    reply, _ = client.predict(text="Are you still there?", music="never", **SHORT)
    assert not reply.startswith("Error"), reply
    # The failed turn is not part of the conversation.
    assert spy.for_prompt("Are you still there?")["history"] == []


def test_edit_last_generated_music_is_explicit(client, served):
    _, spy, _ = served
    reply, _ = client.predict(text="Make it faster", edit_last_music=True, **SHORT)
    assert reply.startswith("Error:") and "no generated music" in reply
    _, music = client.predict(text="Compose a guitar riff", music="always", audio_seconds=1.0,
                              **SHORT)
    before = len(spy.media)
    reply, _ = client.predict(text="Now make it faster", edit_last_music=True, music="never",
                              **SHORT)
    assert not reply.startswith("Error"), reply
    ((modality, items),) = spy.media[before:]
    assert modality == "audio" and Path(items[0]).name == Path(music).name
    # Without the tick the generated music is NOT used as input.
    before = len(spy.media)
    client.predict(text="Describe jazz", music="never", **SHORT)
    assert spy.media[before:] == []


@pytest.mark.parametrize("argv, expected", [
    (["--mert_path", "./no/mert"], "--mert_path ./no/mert: no such file or folder"),
    (["--concurrency", "0"], "--concurrency must be >= 1"),
])
def test_bad_flags_are_one_line_before_serving(argv, expected, capsys):
    assert gradio_app.main(argv) == 2
    assert capsys.readouterr().err.strip() == f"gradio_app.py: error: {expected}"


def test_concurrent_sessions_keep_their_own_state(served):
    """Two clients' turns run at the same time (--concurrency 2); neither sees the other's."""
    app, spy, _ = served
    a, b = Client(app.local_url, verbose=False), Client(app.local_url, verbose=False)
    a.predict(text="gamma likes cellos", music="never", **SHORT)
    b.predict(text="delta likes drums", music="never", **SHORT)
    jobs = [a.submit(text="gamma asks now", music="always", audio_seconds=1.0, **SHORT),
            b.submit(text="delta asks now", music="always", audio_seconds=1.0, **SHORT)]
    (_, wav_a), (_, wav_b) = [job.result(timeout=120) for job in jobs]
    for asked, said in (("gamma asks now", "gamma likes cellos"),
                        ("delta asks now", "delta likes drums")):
        built = [p for p in spy.prompts if p["prompt"] == asked]  # answer, then music prompt
        assert built and all([q for q, _ in p["history"]] == [said] for p in built)
    sessions = {s.chat.history[0][0]: s for s in app.chat_service.sessions.values()
                if s.chat.history}
    ga, de = sessions["gamma likes cellos"], sessions["delta likes drums"]
    assert ga.key != de.key and ga.chat.folder != de.chat.folder
    for s in (ga, de):
        assert s.chat.last_music.parent == s.chat.folder
    assert Path(wav_a).read_bytes() == ga.chat.last_music.read_bytes()
    assert Path(wav_b).read_bytes() == de.chat.last_music.read_bytes()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with a login whose sessions expire after 2 idle seconds."""
    engine = load_model(ModelChoice(None, "tiny", {}, "cpu", "float32"))
    root = tmp_path_factory.mktemp("guarded-sessions")
    app = gradio_app.build_app(engine, root=root, session_ttl=2)
    gradio_app.launch(app, host="127.0.0.1", port=0, block=False, quiet=True,
                      auth=("ann", "s3cret"))
    try:
        yield app, root
    finally:
        app.close()


def test_login_is_required_when_auth_is_given(guarded):
    app, _ = guarded
    assert httpx.get(app.local_url + "config", timeout=10).status_code == 401
    with pytest.raises(ValueError, match="login"):  # gradio_client's AuthenticationError
        Client(app.local_url, auth=("ann", "wrong"), verbose=False)
    reply, _ = Client(app.local_url, auth=("ann", "s3cret"), verbose=False).predict(
        text="hello", music="never", **SHORT)
    assert not reply.startswith("Error"), reply


def test_idle_session_expires_with_its_files_and_uploads(guarded, media):
    app, root = guarded
    service = app.chat_service
    client = Client(app.local_url, auth=("ann", "s3cret"), verbose=False)
    _, wav = client.predict(text="Describe and answer with music", music="always",
                            audio=handle_file(str(media["audio"])), audio_seconds=1.0, **SHORT)
    (session,) = [s for s in service.sessions.values()
                  if [q for q, _ in s.chat.history] == ["Describe and answer with music"]]
    (upload,) = session.uploads
    folder = session.chat.folder
    assert upload.is_file() and folder.is_dir() and any(folder.iterdir())
    assert str(upload).startswith(gradio_app.gr.utils.get_upload_folder())
    deadline = time.monotonic() + 30  # gradio sweeps expired state every second
    # the sweep runs on a server thread: it drops the session, then deletes its files
    while ((session.key in service.sessions or folder.exists() or upload.exists())
           and time.monotonic() < deadline):
        time.sleep(0.5)
    assert session.key not in service.sessions, "the idle session was not ended"
    assert session.closed and not folder.exists() and not upload.exists()
    # The same client simply starts a new session (its old state is gone).
    reply, _ = client.predict(text="Hello again", music="never", **SHORT)
    assert not reply.startswith("Error"), reply
    (fresh,) = [s for s in service.sessions.values()
                if [q for q, _ in s.chat.history] == ["Hello again"]]
    assert fresh is not session and fresh.chat.folder != folder


def test_an_ended_session_leaves_no_record_in_gradio(served):
    app = served[0]
    client = Client(app.local_url, verbose=False)
    client.predict(text="epsilon says hello", music="never", **SHORT)
    (key,) = [k for k, s in app.chat_service.sessions.items()
              if s.chat.history and s.chat.history[0][0] == "epsilon says hello"]
    assert key in app.state_holder.session_data
    app.chat_service.end_by_key(key)  # what the expiry of its state (or closing the tab) does
    assert key not in app.state_holder.session_data and key not in app.chat_service.sessions
