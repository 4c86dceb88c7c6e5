"""One loaded model: typed stream events, the input checks made once at its boundary, media
paths -> features, and the media length limit.

Long media is written quickly: 11 minutes of int16 zeros at 8 kHz (~10 MB, header-declared length)
and a raw MPEG-4 video stream whose container declares no duration (measured by its packets).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

import inference
from app import engine as app_engine
from app.args import DEFAULT_MAX_MEDIA_SECONDS
from app.engine import FinalReply, LoadedModel, TextDelta
from app.errors import InputError, bad_input_errors
from app.loading import ModelChoice, load_model
from data import media as media_mod
from data.media import media_duration

pytestmark = pytest.mark.usefixtures("one_thread")


def exit_status(main, argv: list[str]) -> int:
    """A CLI's exit status, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.fixture(scope="module")
def engine() -> LoadedModel:
    return load_model(ModelChoice(None, "tiny", {}, "cpu", "float32"))


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "tone.wav"
    t = np.arange(12000) / 24000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 24000)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("length-media")
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


# ---------------------------------------------------------------------------------------------
# Stream events


def test_a_turn_streams_text_deltas_then_one_final_reply(engine):
    settings = engine.settings({"max_new_tokens": 8, "temperature": 0.0})
    events = list(engine.stream_turn("describe a slow piano piece", settings=settings,
                                     music="never"))
    *deltas, final = events
    assert isinstance(final, FinalReply)
    assert deltas and all(type(e) is TextDelta for e in deltas)
    assert "".join(e.text for e in deltas).strip() == final.reply.text
    assert final.reply.token_ids and final.reply.music is None
    again = engine.run_turn("describe a slow piano piece", settings=settings, music="never")
    assert again.token_ids == final.reply.token_ids  # run_turn returns the same final reply


def test_music_always_ends_with_music_in_the_final_reply(engine):
    settings = engine.settings({"max_new_tokens": 3, "audio_seconds": 0.3})
    *_, final = engine.stream_turn("compose", settings=settings, music="always")
    assert isinstance(final, FinalReply) and final.reply.music is not None
    aud = list(engine.model.tokenizer.aud_ids)
    assert final.reply.generated_ids[-len(aud):] == aud


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_refused_at_the_engine_before_any_work(engine, prompt, monkeypatch):
    monkeypatch.setattr(engine.model, "build_prompt", lambda *a, **k: pytest.fail("model ran"))
    settings = engine.settings({"max_new_tokens": 2})
    with pytest.raises(InputError, match="the prompt is empty"):
        engine.stream_turn(prompt, settings=settings)  # raised by the call, not on iteration
    with pytest.raises(InputError, match="the prompt is empty"):
        engine.run_turn(prompt, settings=settings)


def test_unknown_music_mode_is_refused_before_any_work(engine, monkeypatch):
    monkeypatch.setattr(engine.model, "build_prompt", lambda *a, **k: pytest.fail("model ran"))
    with pytest.raises(InputError, match="music must be one of"):
        engine.stream_turn("hi", settings=engine.settings({}), music="sometimes")


def test_a_bug_in_the_model_is_not_bad_input(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a bug deep inside the model")

    monkeypatch.setattr(engine.model, "stream_chat", broken)
    with pytest.raises(ValueError, match="a bug deep inside") as exc:
        engine.run_turn("hi", settings=engine.settings({"max_new_tokens": 2}))
    assert not isinstance(exc.value, bad_input_errors())


# ---------------------------------------------------------------------------------------------
# Media


def test_paths_become_features_and_arrays_pass_through(engine, tone, tmp_path):
    media = engine.media_input({"audio": str(tone), "image": None})
    assert isinstance(media.audio, torch.Tensor) and media.image is None
    assert engine.media_input({"audio": str(tone)}).audio is media.audio  # memoised
    pixels = np.zeros((32, 32, 3), np.uint8)
    assert engine.media_input({"image": pixels}).image is pixels
    with pytest.raises(InputError, match="no such file"):
        engine.media_input({"video": str(tmp_path / "none.mp4")})
    with pytest.raises(InputError, match="unknown modality"):
        engine.media_input({"smell": str(tone)})


def test_unusable_media_content_is_bad_input(engine, tmp_path):
    tiny_clip = tmp_path / "blip.wav"
    sf.write(tiny_clip, np.zeros(8, np.float32), 24000)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    for modality, path in (("audio", tiny_clip), ("image", broken)):
        with pytest.raises(bad_input_errors()) as exc:
            engine.media_input({modality: str(path)})
        assert path.name in str(exc.value)


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
    app_engine.check_media_length({"audio": str(files["long"])}, None)


def test_unreadable_file_is_left_to_its_loader(files):
    app_engine.check_media_length({"audio": str(files["junk"])}, 1.0)  # no error from the probe


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
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    argv = [a.format(**files) for a in argv]
    assert exit_status(inference.main, ["--prompt", "hi", *argv]) == 2
    assert capsys.readouterr().err.strip() == "inference.py: error: " + expected.format(**files)


def test_cli_refuses_an_empty_prompt_before_loading_a_model(monkeypatch, capsys):
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert exit_status(inference.main, ["--prompt", "  "]) == 2
    assert capsys.readouterr().err.strip() == "inference.py: error: the prompt is empty"
