"""Model choice and loading, media paths -> features, and per-session chat state."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from app import session as app_session
from app.args import add_model_arguments
from app.errors import InputError, ModelLoadError, bad_input_errors

pytestmark = pytest.mark.usefixtures("one_thread")


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture(scope="module")
def engine() -> app_session.LoadedModel:
    return app_session.load_model(app_session.ModelChoice(None, "tiny", {}, "cpu", "float32"))


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "tone.wav"
    t = np.arange(12000) / 24000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 24000)
    return path


# ---------------------------------------------------------------------------------------------
# Choosing


def test_decoder_flag_picks_the_matching_preset():
    assert app_session.resolve_preset("tiny", "audioldm2") == "tiny-audioldm2"
    assert app_session.resolve_preset("tiny-audioldm2", "musicgen") == "tiny"
    assert app_session.resolve_preset("m2ugen-musicgen-small", "audioldm2") == "m2ugen-audioldm2"
    assert app_session.resolve_preset("m2ugen-musicgen-medium", "musicgen") == (
        "m2ugen-musicgen-medium")


def test_default_checkpoint_is_used_when_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(app_session, "REPO", tmp_path)
    assert app_session.choose_model(parse()).checkpoint is None
    stage3 = tmp_path / "ckpts" / "tiny" / "stage3"
    stage3.mkdir(parents=True)
    (stage3 / "config.json").write_text("{}")
    assert app_session.choose_model(parse()).checkpoint is None  # no weights: incomplete
    (stage3 / "model.safetensors").write_bytes(b"")
    assert app_session.choose_model(parse()).checkpoint == str(stage3)


def test_missing_local_component_paths_are_reported_before_loading():
    with pytest.raises(InputError, match="--mert_path ./no/mert: no such file or folder"):
        app_session.choose_model(parse("--mert_path", "./no/mert"))
    with pytest.raises(InputError, match="--model no/such: no such checkpoint folder"):
        app_session.choose_model(parse("--model", "no/such"))
    # Hub ids and built-in names are the loaders' business.
    choice = app_session.choose_model(parse("--mert_path", "m-a-p/MERT-v1-330M",
                                            "--music_decoder_path", "tiny"))
    assert choice.overrides == {"mert_path": "m-a-p/MERT-v1-330M", "music_decoder_path": "tiny"}


def test_llama_dir_published_layout(tmp_path):
    (tmp_path / "7B").mkdir()
    (tmp_path / "tokenizer.model").write_bytes(b"")
    assert app_session.resolve_llama_dir(str(tmp_path)) == (
        str(tmp_path / "7B"), str(tmp_path / "tokenizer.model"))
    with pytest.raises(InputError, match="no such folder"):
        app_session.resolve_llama_dir(str(tmp_path / "missing"))


def test_devices_that_cannot_be_used_are_bad_input():
    assert app_session.resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="--device gpu7"):
        app_session.resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            app_session.resolve_device("cuda:1")


# ---------------------------------------------------------------------------------------------
# Loading


@pytest.mark.parametrize("overrides, expected", [
    ({"tokenizer_path": "MISSING"}, "cannot load the tokenizer '{MISSING}' (--tokenizer_path)"),
    ({"llama_path": "EMPTY"}, "cannot load the LLaMA weights '{EMPTY}' (--llama_dir)"),
])  # the music decoder and encoders (hub ids offline): tests/test_inference.py
def test_unloadable_component_is_named(overrides, expected, tmp_path):
    paths = {"MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path)}
    overrides = {k: paths.get(v, v) for k, v in overrides.items()}
    choice = app_session.ModelChoice(None, "tiny", overrides, "cpu", "float32")
    with pytest.raises(ModelLoadError) as exc:
        app_session.load_model(choice)
    assert str(exc.value).startswith(expected.format(**paths)), exc.value
    assert "\n" not in app_session.one_line(exc.value)


def test_cache_reuses_the_loaded_model(engine):
    cache = {engine.choice.key: engine}
    assert app_session.load_model(app_session.ModelChoice(None, "tiny", {}, "cpu", "float32"),
                                  cache) is engine
    other = app_session.ModelChoice(None, "tiny", {}, "cpu", "float32", feature_cache="/x")
    assert other.key != engine.choice.key


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
# Chat sessions


def test_sessions_keep_their_own_history_music_and_folder(engine, tmp_path):
    a = app_session.ChatSession(engine, tmp_path / "a")
    b = app_session.ChatSession(engine, tmp_path / "b")
    settings = engine.settings({"max_new_tokens": 4, "audio_seconds": 0.2})
    with pytest.raises(InputError, match="no generated music to edit"):
        list(a.stream("make it faster", settings=settings, edit_last_music=True))
    assert a.history == []  # a failed turn is not part of the conversation
    *_, done = a.stream("compose a tune", settings=settings, music="always")
    assert done.wav == tmp_path / "a" / "music-1.wav" and a.last_music == done.wav
    assert a.history[0][1].endswith("[AUD7]")  # fed back in the training format
    list(b.stream("hello", settings=settings, music="never"))
    assert [q for q, _ in b.history] == ["hello"] and b.last_music is None
    *_, done = a.stream("now slower", settings=settings, music="never", edit_last_music=True)
    assert len(a.history) == 2 and done.wav is None
    record = app_session.reply_record(done.reply, None)
    assert record["token_ids"] == done.reply.generated_ids and record["audio"] is None
    assert record["token_ids"][: len(done.reply.token_ids)] == done.reply.token_ids
    a.close()
    assert not (tmp_path / "a").exists() and (tmp_path / "b").exists()


def test_image_through_a_session(engine, tmp_path):
    image = tmp_path / "red.png"
    Image.fromarray(np.full((40, 40, 3), (200, 0, 0), np.uint8)).save(image)
    session = app_session.ChatSession(engine, tmp_path / "s")
    settings = engine.settings({"max_new_tokens": 3})
    *_, done = session.stream("what colour?", media={"image": str(image)}, settings=settings,
                              music="never")
    assert isinstance(done.reply.text, str) and session.history[0][0] == "what colour?"
