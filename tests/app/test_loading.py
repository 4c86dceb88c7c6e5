"""Model choice and loading: flags -> ModelChoice, and load failures by type.

A component that cannot be loaded from what the user named is one line naming the component,
its source and its flag (exit 2 from the CLIs); anything else raised while loading is a bug and
keeps its traceback (it is never turned into "bad input").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

import gradio_app
import inference
from app import loading
from app.args import add_model_arguments
from app.engine import LoadedModel
from app.errors import InputError, ModelLoadError, bad_input_errors, one_line

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    return p.parse_args(list(argv))


def tiny_choice(**kw) -> loading.ModelChoice:
    return loading.ModelChoice(None, "tiny", kw.pop("overrides", {}), "cpu", "float32", **kw)


@pytest.fixture(scope="module")
def engine() -> LoadedModel:
    return loading.load_model(tiny_choice())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A 1 s WAV and a 5 s raw MPEG-4 video stream."""
    root = tmp_path_factory.mktemp("loading-media")
    sf.write(root / "short.wav", np.zeros(8000, np.float32), 8000)
    with av.open(str(root / "raw.m4v"), "w", format="m4v") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return {p.stem: p for p in root.iterdir()}


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("notice: ")]


# ---------------------------------------------------------------------------------------------
# Choosing


def test_decoder_flag_picks_the_matching_preset():
    assert loading.resolve_preset("tiny", "audioldm2") == "tiny-audioldm2"
    assert loading.resolve_preset("tiny-audioldm2", "musicgen") == "tiny"
    assert loading.resolve_preset("m2ugen-musicgen-small", "audioldm2") == "m2ugen-audioldm2"
    assert loading.resolve_preset("m2ugen-musicgen-medium", "musicgen") == (
        "m2ugen-musicgen-medium")


def test_default_checkpoint_is_used_when_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "REPO", tmp_path)
    assert loading.choose_model(parse()).checkpoint is None
    stage3 = tmp_path / "ckpts" / "tiny" / "stage3"
    stage3.mkdir(parents=True)
    (stage3 / "config.json").write_text("{}")
    assert loading.choose_model(parse()).checkpoint is None  # no weights: incomplete
    (stage3 / "model.safetensors").write_bytes(b"")
    assert loading.choose_model(parse()).checkpoint == str(stage3)


def test_missing_local_component_paths_are_reported_before_loading():
    with pytest.raises(InputError, match="--mert_path ./no/mert: no such file or folder"):
        loading.choose_model(parse("--mert_path", "./no/mert"))
    with pytest.raises(InputError, match="--model no/such: no such checkpoint folder"):
        loading.choose_model(parse("--model", "no/such"))
    # Hub ids and built-in names are the loaders' business.
    choice = loading.choose_model(parse("--mert_path", "m-a-p/MERT-v1-330M",
                                        "--music_decoder_path", "tiny"))
    assert choice.overrides == {"mert_path": "m-a-p/MERT-v1-330M", "music_decoder_path": "tiny"}


def test_llama_dir_published_layout(tmp_path):
    (tmp_path / "7B").mkdir()
    (tmp_path / "tokenizer.model").write_bytes(b"")
    assert loading.resolve_llama_dir(str(tmp_path)) == (
        str(tmp_path / "7B"), str(tmp_path / "tokenizer.model"))
    with pytest.raises(InputError, match="no such folder"):
        loading.resolve_llama_dir(str(tmp_path / "missing"))


def test_devices_that_cannot_be_used_are_bad_input():
    assert loading.resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="--device gpu7"):
        loading.resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            loading.resolve_device("cuda:1")


def test_cache_reuses_the_loaded_model(engine):
    cache = {engine.choice.key: engine}
    assert loading.load_model(tiny_choice(), cache) is engine
    other = tiny_choice(feature_cache="/x")
    assert other.key != engine.choice.key


# ---------------------------------------------------------------------------------------------
# A component that cannot be loaded: one line naming it


@pytest.mark.parametrize("overrides, component, expected", [
    ({"tokenizer_path": "MISSING"}, "tokenizer",
     "cannot load the tokenizer '{MISSING}' (--tokenizer_path)"),
    ({"llama_path": "EMPTY"}, "llama", "cannot load the LLaMA weights '{EMPTY}' (--llama_dir)"),
])  # the music decoder and encoders (hub ids offline): below and tests/test_inference.py
def test_unloadable_component_is_named(overrides, component, expected, tmp_path):
    paths = {"MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path)}
    overrides = {k: paths.get(v, v) for k, v in overrides.items()}
    with pytest.raises(ModelLoadError) as exc:
        loading.load_model(tiny_choice(overrides=overrides))
    assert str(exc.value).startswith(expected.format(**paths)), exc.value
    assert exc.value.component == component
    assert "\n" not in one_line(exc.value)


def _broken_checkpoint(engine: LoadedModel, folder: Path) -> Path:
    """A checkpoint folder whose config is fine and whose weights file is garbage."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"m2ugen": engine.model.config_dict(),
                                                    "stage": 3}))
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    return folder


def test_broken_component_files_are_one_line_exit_2(engine, tmp_path, capsys):
    """Corrupt files the user named: the checkpoint's weights, the tokenizer, the kNN index."""
    ckpt = _broken_checkpoint(engine, tmp_path / "stage3")
    tokenizer = tmp_path / "tokenizer.model"
    tokenizer.write_bytes(b"this is not a sentencepiece model")
    knn = tmp_path / "knn"
    knn.mkdir()
    (knn / "knn.index").write_bytes(b"not a faiss index")
    cases = [
        (["--model", str(ckpt)], f"cannot load the checkpoint '{ckpt}' (--model): "),
        (["--tokenizer_path", str(tokenizer)],
         f"cannot load the tokenizer '{tokenizer}' (--tokenizer_path): "),
        (["--knn_dir", str(knn)], f"cannot load the kNN index '{knn}' (--knn_dir): "),
    ]
    for flags, expected in cases:
        status = inference.main(["--prompt", "hi", "--max_new_tokens", "2", *flags])
        err = capsys.readouterr().err
        assert status == 2, err
        (line,) = _error_lines(err)
        assert line.startswith("inference.py: error: " + expected), line
        assert "Traceback" not in err


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


# ---------------------------------------------------------------------------------------------
# A bug is not bad input


def test_internal_bug_is_not_reported_as_bad_input(monkeypatch):
    from llama.m2ugen import M2UGen

    def broken(*args, **kwargs):
        raise KeyError("a bug in the loader")

    monkeypatch.setattr(M2UGen, "from_pretrained", broken)
    with pytest.raises(KeyError, match="a bug in the loader"):
        inference.main(["--prompt", "hi"])
    monkeypatch.setattr(M2UGen, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(ModelLoadError):  # the system could not supply a file: not our bug
        loading.load_model(tiny_choice())


def test_plain_value_error_inside_a_component_keeps_its_traceback(monkeypatch, capsys):
    """A ValueError raised by code (not by a typed load error) while a component loads is a bug:
    it propagates out of load_model and the CLI (exit 1 with a traceback), never exit 2."""
    import llama.m2ugen

    def buggy_tokenizer(path):
        raise ValueError("a bug: slice indices must be integers")

    monkeypatch.setattr(llama.m2ugen, "load_tokenizer", buggy_tokenizer)
    with pytest.raises(ValueError, match="a bug: slice indices") as exc:
        loading.load_model(tiny_choice())
    assert not isinstance(exc.value, bad_input_errors())
    with pytest.raises(ValueError, match="a bug: slice indices"):
        inference.main(["--prompt", "hi", "--max_new_tokens", "2"])
    assert "inference.py: error:" not in capsys.readouterr().err


def test_plain_value_error_in_a_lazy_encoder_keeps_its_traceback(engine, files, monkeypatch):
    import llama.encoders

    def buggy(*args, **kwargs):
        raise ValueError("a bug in the encoder code")

    monkeypatch.setattr(llama.encoders, "load_music_encoder", buggy)
    monkeypatch.setattr(engine.model, "_encoders", {})
    with pytest.raises(ValueError, match="a bug in the encoder code") as exc:
        engine.media_input({"audio": str(files["short"])})
    assert not isinstance(exc.value, bad_input_errors())


def test_a_bug_exits_1_with_a_traceback_in_a_real_process(tmp_path):
    """The whole path, as a user sees it: a bug in a component loader is a traceback, exit 1."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import llama.m2ugen, inference\n"
        "def bug(path):\n"
        "    raise ValueError('a bug in the tokenizer loader')\n"
        "llama.m2ugen.load_tokenizer = bug\n"
        "sys.exit(inference.main(['--prompt', 'hi', '--max_new_tokens', '2']))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "a bug in the tokenizer loader" in proc.stderr
    assert "inference.py: error:" not in proc.stderr


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
