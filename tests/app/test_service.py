"""The demo's serving policy without a browser: typed turn events, per-session state under
concurrent turns, uploads deleted with their session, errors as messages."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.engine import LoadedModel
from app.loading import ModelChoice, load_model
from app.service import (
    Answer,
    AnswerSoFar,
    ChatService,
    DemoEvent,
    TurnFailed,
    TurnRequest,
    hide_paths,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine() -> LoadedModel:
    return load_model(ModelChoice(None, "tiny", {}, "cpu", "float32"))


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("service-media") / "short.wav"
    sf.write(path, np.zeros(8000, np.float32), 8000)
    return path


def _request(text: str, **kw) -> TurnRequest:
    return TurnRequest(text, kw.get("audio"), None, None, False, kw.get("music", "never"),
                       {"max_new_tokens": kw.get("max_new_tokens", 3), "temperature": 0.0,
                        "audio_seconds": kw.get("audio_seconds")})


def _turn(service, session, text, **kw) -> DemoEvent:
    req = _request(text, **kw)
    service.remember_uploads(session, req)
    return list(service.turn(session, req))[-1]


# ---------------------------------------------------------------------------------------------
# Turn events


def test_a_turn_shows_growing_text_then_the_answer(engine, tmp_path):
    service = ChatService(engine, tmp_path)
    session = service.new_session("hash-a")
    events = list(service.turn(session, _request("describe a harp", max_new_tokens=8)))
    *partial, last = events
    assert isinstance(last, Answer) and last.wav is None and last.note == ""
    assert partial and all(type(e) is AnswerSoFar for e in partial)
    texts = [e.text for e in partial]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:]))  # each shows more
    assert texts[-1].strip() == last.text
    assert [q for q, _ in session.chat.history] == ["describe a harp"]


def test_music_answer_names_its_wav_in_the_session_folder(engine, tmp_path):
    service = ChatService(engine, tmp_path)
    session = service.new_session("hash-m")
    answer = _turn(service, session, "compose", music="always", audio_seconds=0.5)
    assert isinstance(answer, Answer) and Path(answer.wav).parent == session.chat.folder


def test_an_empty_message_is_a_failed_turn_that_is_not_remembered(engine, tmp_path):
    service = ChatService(engine, tmp_path)
    session = service.new_session("hash-e")
    (event,) = list(service.turn(session, _request("   ")))
    assert event == TurnFailed("the prompt is empty")
    assert session.chat.history == []


def test_bad_input_names_uploads_by_file_name():
    req = TurnRequest("x", "/srv/gradio/abc/song.wav", None, None, False, "auto", {})
    assert hide_paths("audio /srv/gradio/abc/song.wav: corrupt", req) == "audio song.wav: corrupt"


# ---------------------------------------------------------------------------------------------
# Sessions


def test_two_sessions_in_parallel_keep_their_own_history_and_files(engine, tmp_path):
    """Two threads chat at once through one service (what --concurrency 2 does)."""
    service = ChatService(engine, tmp_path)
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
        assert [type(e) for e in results[name]] == [Answer, Answer], results[name]
        assert [q for q, _ in s.chat.history] == [f"{name} turn 0", f"{name} turn 1"]
        wavs = sorted(p.name for p in s.chat.folder.iterdir())
        assert wavs == ["music-1.wav", "music-2.wav"]
        assert all(Path(e.wav).parent == s.chat.folder for e in results[name])
    assert sessions["ann"].chat.folder != sessions["bob"].chat.folder


def test_ending_a_session_deletes_its_folder_and_unshared_uploads(engine, tmp_path, short_wav,
                                                                   monkeypatch):
    uploads = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    mine, shared, outside = (uploads / "h1" / "mine.wav", uploads / "h2" / "shared.wav",
                             tmp_path / "user-owned.wav")
    service = ChatService(engine, tmp_path / "sessions", stale_after=60)
    for p in (mine, shared, outside):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(short_wav.read_bytes())
        os.utime(p, (time.time() - 61, time.time() - 61))  # uploaded a while ago
    ann, bob = service.new_session("hash-ann"), service.new_session("hash-bob")
    for path in (mine, shared, outside):
        assert isinstance(_turn(service, ann, "describe", audio=str(path)), Answer)
    assert isinstance(_turn(service, bob, "describe", audio=str(shared)), Answer)
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


def test_an_upload_someone_sent_again_just_now_outlives_the_session_that_used_it(
        engine, tmp_path, short_wav, monkeypatch):
    # gradio stores uploads by content: a second user's identical upload shares the path and may
    # still wait in the queue when the first user's session ends
    uploads = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    clip = uploads / "h1" / "same.wav"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(short_wav.read_bytes())
    service = ChatService(engine, tmp_path / "sessions", stale_after=60)
    ann = service.new_session("hash-ann")
    assert isinstance(_turn(service, ann, "describe", audio=str(clip)), Answer)
    service.end_by_key("hash-ann")
    assert clip.exists()  # uploaded less than stale_after ago: somebody may be about to use it
    assert service.delete_unused_uploads() == 0 and clip.exists()
    os.utime(clip, (time.time() - 61, time.time() - 61))
    assert service.delete_unused_uploads() == 1  # what the janitor does on its next round
    assert not clip.exists() and not clip.parent.exists()


def test_turn_finishing_after_its_session_ended_leaves_no_files(engine, tmp_path):
    service = ChatService(engine, tmp_path)
    session = service.new_session("hash-gone")
    stream = session.chat.stream

    def end_midway(*args, **kwargs):
        service.end_by_key("hash-gone")  # the tab closes while the model is generating
        yield from stream(*args, **kwargs)

    session.chat.stream = end_midway
    assert isinstance(_turn(service, session, "compose", music="always", audio_seconds=0.5),
                      Answer)
    assert session.closed and not session.chat.folder.exists()


def test_internal_error_shows_a_reference_and_logs_the_details(engine, tmp_path, monkeypatch,
                                                               caplog):
    service = ChatService(engine, tmp_path)
    session = service.new_session("hash-x")

    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail /srv/models/x")

    monkeypatch.setattr(session.chat, "stream", boom)
    with caplog.at_level("ERROR", logger="m2ugen.service"):
        event = _turn(service, session, "hello")
    assert isinstance(event, TurnFailed)
    message = event.message
    assert message.startswith("internal error (reference ") and "server log" in message
    assert "secret" not in message and "RuntimeError" not in message
    ref = message.split("reference ")[1].split(")")[0]
    assert any(ref in r.getMessage() and r.exc_info for r in caplog.records)
    assert "secret internal detail" in caplog.text


# ---------------------------------------------------------------------------------------------
# What an ended session leaves behind


def test_an_ended_session_forgets_its_uploads_features_and_calls_back(engine, tmp_path,
                                                                     short_wav, monkeypatch):
    uploads = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    clip = uploads / "h3" / "clip.wav"
    clip.parent.mkdir(parents=True)
    clip.write_bytes(short_wav.read_bytes())
    os.utime(clip, (time.time() - 61, time.time() - 61))
    ended: list[str] = []
    service = ChatService(engine, tmp_path / "sessions", stale_after=60, on_end=ended.append)
    ann = service.new_session("hash-ann")
    assert isinstance(_turn(service, ann, "describe", audio=str(clip)), Answer)
    memo = engine.features._memo
    assert any(key[1] == str(clip.resolve()) for key in memo)
    service.end_session(ann)
    assert not any(key[1] == str(clip.resolve()) for key in memo) and ended == ["hash-ann"]


def test_sweep_deletes_only_old_empty_leftovers_of_gradio(tmp_path, monkeypatch):
    from app.service import sweep_empty_leftovers, trim_heap

    root = tmp_path / "gradio-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(root))
    old_empty, new_empty, old_full = root / "tmpold", root / "tmpnew", root / "tmpfull"
    old_dir, full_dir = root / "abc123", root / "def456"
    for d in (old_dir, full_dir):
        d.mkdir(parents=True)
    (full_dir / "kept.wav").write_bytes(b"RIFF")
    old_empty.touch()
    new_empty.touch()
    old_full.write_bytes(b"data")
    hour_ago = time.time() - 3600
    for p in (old_empty, old_full, old_dir, full_dir):
        os.utime(p, (hour_ago, hour_ago))
    assert sweep_empty_leftovers(older_than=60) == 2
    assert not old_empty.exists() and not old_dir.exists()
    assert new_empty.exists() and old_full.exists() and (full_dir / "kept.wav").exists()
    assert isinstance(trim_heap(), bool)


def test_malloc_arenas_are_capped_unless_the_environment_says_otherwise(monkeypatch):
    from app.service import limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is True  # glibc here: mallopt accepted the cap
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # the operator's setting wins
