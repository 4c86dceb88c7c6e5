"""Serving hardening: media length limits, one-line model-load errors, demo exposure rules, and
per-session state under concurrent turns.

Long media is written quickly: 11 minutes of int16 zeros at 8 kHz (~10 MB, header-declared length)
and a raw MPEG-4 video stream whose container declares no duration (measured by its packets).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

import gradio_app
import inference
from app import session as app_session
from app.args import DEFAULT_MAX_MEDIA_SECONDS
from app.errors import InputError, ModelLoadError
from data import media as media_mod
from data.media import media_duration

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def exit_status(main, argv: list[str]) -> int:
    """A CLI's exit status, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hardening-media")
    sf.write(root / "long.wav", np.zeros(8000 * 660, np.int16), 8000, subtype="PCM_16")
    sf.write(root / "short.wav", np.zeros(8000, np.float32), 8000)
    with av.open(str(root / "raw.m4v"), "w", format="m4v") as container:  # no duration header
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(40):  # 5 s
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (root / "junk.bin").write_bytes(bytes(range(256)) * 20)
    return {p.stem: p for p in root.iterdir()}


@pytest.fixture(scope="module")
def engine() -> app_session.LoadedModel:
    return app_session.load_model(app_session.ModelChoice(None, "tiny", {}, "cpu", "float32"))


# ---------------------------------------------------------------------------------------------
# Media length


def test_duration_comes_from_the_header_or_from_packets_up_to_the_limit(files):
    assert media_duration(files["long"]) == pytest.approx(660.0)
    assert media_duration(files["short"]) == pytest.approx(1.0)
    assert media_duration(files["raw"]) == pytest.approx(5.0, abs=0.2)
    stopped = media_duration(files["raw"], limit=2.0)
    assert 2.0 < stopped < 3.0  # demuxing stopped just past the limit
    assert media_duration(files["junk"]) is None  # the loader will say why


def test_limit_is_checked_before_decoding(files, engine, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the long file was decoded")

    monkeypatch.setattr(media_mod, "load_audio", never)
    monkeypatch.setattr(media_mod, "load_video", never)
    assert engine.max_media_seconds == DEFAULT_MAX_MEDIA_SECONDS == 600.0
    with pytest.raises(InputError, match=r"long\.wav: the audio lasts at least 660\.0 s, more "
                                         r"than the limit of 600 s \(--max_media_seconds\)"):
        engine.media_input({"audio": str(files["long"])})
    monkeypatch.setattr(engine, "max_media_seconds", 2.0)
    with pytest.raises(InputError, match=r"raw\.m4v: the video lasts at least 2\.\d s"):
        engine.media_input({"video": str(files["raw"])})


def test_media_within_the_limit_is_used(files, engine, monkeypatch):
    monkeypatch.setattr(engine, "max_media_seconds", 10.0)
    assert engine.media_input({"video": str(files["raw"])}).video is not None
    monkeypatch.setattr(engine, "max_media_seconds", None)  # no limit at all
    app_session.check_media_length({"audio": str(files["long"])}, None)


def test_unreadable_file_is_left_to_its_loader(files):
    app_session.check_media_length({"audio": str(files["junk"])}, 1.0)  # no error from the probe


@pytest.mark.parametrize("argv, expected", [
    (["--audio_file", "{long}"], "--audio_file {long}: the audio lasts at least 660.0 s, more "
                                 "than the limit of 600 s (--max_media_seconds)"),
    (["--video_file", "{raw}", "--max_media_seconds", "2"], "--video_file {raw}: the video lasts "
                                                            "at least 2.1 s, more than the limit "
                                                            "of 2 s (--max_media_seconds)"),
    (["--max_media_seconds", "0"], "argument --max_media_seconds: must be a finite number > 0, "
                                   "got '0' (see --help)"),
])
def test_cli_refuses_long_media_before_loading_a_model(argv, expected, files, monkeypatch, capsys):
    monkeypatch.setattr(app_session, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    argv = [a.format(**files) for a in argv]
    assert exit_status(inference.main, ["--prompt", "hi", *argv]) == 2
    assert capsys.readouterr().err.strip() == "inference.py: error: " + expected.format(**files)


def test_demo_has_the_limit_flag():
    args = gradio_app.build_parser().parse_args(["--max_media_seconds", "30"])
    assert args.max_media_seconds == 30.0
    assert gradio_app.build_parser().parse_args([]).max_media_seconds == 600.0


# ---------------------------------------------------------------------------------------------
# Model components that cannot be loaded


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("notice: ")]


@pytest.mark.parametrize("flags, what", [
    (["--mert_path", "some/missing-hub-id", "--audio_file", "{short}"],
     "cannot load the music encoder 'some/missing-hub-id' (--mert_path): "),
    (["--vivit_path", "some/missing-hub-id", "--video_file", "{raw}"],
     "cannot load the video encoder 'some/missing-hub-id' (--vivit_path): "),
    (["--music_decoder_path", "some/missing-hub-id", "--music", "always"],
     "cannot load the music decoder 'some/missing-hub-id' (--music_decoder_path): "),
])
def test_unloadable_component_is_one_line_exit_2(flags, what, files, capsys):
    flags = [f.format(**files) for f in flags]
    status = inference.main(["--prompt", "hi", "--max_new_tokens", "2", *flags])
    err = capsys.readouterr().err
    assert status == 2
    (line,) = _error_lines(err)
    assert line.startswith("inference.py: error: " + what), line
    assert "Traceback" not in err


def test_demo_refuses_to_start_with_an_unloadable_decoder(capsys, monkeypatch):
    monkeypatch.setattr(gradio_app, "launch", lambda *a, **k: pytest.fail("served"))
    assert gradio_app.main(["--music_decoder_path", "some/missing-hub-id"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("gradio_app.py: error: cannot load the music decoder "
                           "'some/missing-hub-id' (--music_decoder_path): ")


def test_internal_bug_is_not_reported_as_bad_input(monkeypatch):
    from llama.m2ugen import M2UGen

    def broken(*args, **kwargs):
        raise KeyError("a bug in the loader")

    monkeypatch.setattr(M2UGen, "from_pretrained", broken)
    with pytest.raises(KeyError, match="a bug in the loader"):
        inference.main(["--prompt", "hi"])
    monkeypatch.setattr(M2UGen, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(ModelLoadError):
        app_session.load_model(app_session.ModelChoice(None, "tiny", {}, "cpu", "float32"))


@pytest.mark.slow
@pytest.mark.parametrize("script, flags, what", [
    ("inference.py", ["--prompt", "hi", "--mert_path", "some/missing-hub-id", "--audio_file",
                      "{short}"], "cannot load the music encoder 'some/missing-hub-id'"),
    ("gradio_app.py", ["--music_decoder_path", "some/missing-hub-id", "--port", "0"],
     "cannot load the music decoder 'some/missing-hub-id'"),
])
def test_scripts_report_load_errors_without_traceback(script, flags, what, files):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / script), *[f.format(**files) for f in flags]],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert line.startswith(f"{script}: error: {what}"), line


# ---------------------------------------------------------------------------------------------
# Demo exposure


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
    monkeypatch.setattr(app_session, "load_model", lambda *a, **k: pytest.fail("model loaded"))
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


# ---------------------------------------------------------------------------------------------
# Sessions


def _service(engine, root: Path) -> gradio_app.ChatService:
    return gradio_app.ChatService(engine, root)


def _turn(service, session, text, **kw) -> tuple[str, object]:
    req = gradio_app.TurnRequest(text, kw.get("audio"), None, None, False, kw.get("music", "never"),
                                 {"max_new_tokens": 3, "temperature": 0.0,
                                  "audio_seconds": kw.get("audio_seconds")})
    service.remember_uploads(session, req)
    return list(service.turn(session, req))[-1]


def test_two_sessions_in_parallel_keep_their_own_history_and_files(engine, tmp_path):
    """Two threads chat at once through one service (what --concurrency 2 does)."""
    service = _service(engine, tmp_path)
    sessions = {name: service.new_session(f"hash-{name}") for name in ("ann", "bob")}
    start = threading.Barrier(2)
    results: dict[str, list] = {}

    def chat(name: str) -> None:
        start.wait()
        s = sessions[name]
        results[name] = [_turn(service, s, f"{name} turn {i}", music="always", audio_seconds=0.5)
                         for i in range(2)]

    threads = [threading.Thread(target=chat, args=(n,)) for n in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for name, s in sessions.items():
        assert [kind for kind, _ in results[name]] == ["done", "done"], results[name]
        assert [q for q, _ in s.chat.history] == [f"{name} turn 0", f"{name} turn 1"]
        wavs = sorted(p.name for p in s.chat.folder.iterdir())
        assert wavs == ["music-1.wav", "music-2.wav"]
        assert all(Path(v[1]).parent == s.chat.folder for _, v in results[name])
    assert sessions["ann"].chat.folder != sessions["bob"].chat.folder


def test_ending_a_session_deletes_its_folder_and_unshared_uploads(engine, tmp_path, files,
                                                                   monkeypatch):
    uploads = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    mine, shared, outside = (uploads / "h1" / "mine.wav", uploads / "h2" / "shared.wav",
                             tmp_path / "user-owned.wav")
    for p in (mine, shared, outside):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files["short"].read_bytes())
    service = _service(engine, tmp_path / "sessions")
    ann, bob = service.new_session("hash-ann"), service.new_session("hash-bob")
    for path in (mine, shared, outside):
        assert _turn(service, ann, "describe", audio=str(path))[0] == "done"
    assert _turn(service, bob, "describe", audio=str(shared))[0] == "done"
    folder = ann.chat.folder
    service.end_by_key("hash-ann")  # what demo.unload does when ann's tab closes
    assert not folder.exists() and not mine.exists() and not mine.parent.exists()
    assert shared.exists()  # bob still uses it
    assert outside.exists()  # never delete files outside gradio's upload folder
    assert set(service.sessions) == {"hash-bob"} and ann.closed
    service.end_session(ann)  # the state's delete callback later: harmless
    service.end_session(bob)
    assert not shared.exists() and service.sessions == {}
    # A closed session is never reused: the next event of that browser starts afresh.
    fresh = service.session_for(ann, None)
    assert fresh is not ann and fresh.chat.history == []


def test_turn_finishing_after_its_session_ended_leaves_no_files(engine, tmp_path):
    service = _service(engine, tmp_path)
    session = service.new_session("hash-gone")
    stream = session.chat.stream

    def end_midway(*args, **kwargs):
        service.end_by_key("hash-gone")  # the tab closes while the model is generating
        yield from stream(*args, **kwargs)

    session.chat.stream = end_midway
    assert _turn(service, session, "compose", music="always", audio_seconds=0.5)[0] == "done"
    assert session.closed and not session.chat.folder.exists()


def test_internal_error_shows_a_reference_and_logs_the_details(engine, tmp_path, monkeypatch,
                                                               caplog):
    service = _service(engine, tmp_path)
    session = service.new_session("hash-x")

    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail /srv/models/x")

    monkeypatch.setattr(session.chat, "stream", boom)
    with caplog.at_level("ERROR", logger="m2ugen.gradio_app"):
        kind, message = _turn(service, session, "hello")
    assert kind == "error"
    assert message.startswith("internal error (reference ") and "server log" in message
    assert "secret" not in message and "RuntimeError" not in message
    ref = message.split("reference ")[1].split(")")[0]
    assert any(ref in r.getMessage() and r.exc_info for r in caplog.records)
    assert "secret internal detail" in caplog.text
