"""The inference CLI: every request shape, music output, batch files, and each bad-input case.

Runs in-process through `inference.main(argv, model_cache=...)` so the tiny random model is built
once; one real subprocess checks exit status and that stderr holds only the notice and one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import inference
from app import loading

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Fixtures


def write_media(folder: Path) -> dict[str, Path]:
    """A short sine WAV, a PNG, an MP4, and corrupt files with the same extensions."""
    folder.mkdir(parents=True, exist_ok=True)
    sr = 24000
    t = np.arange(sr) / sr
    sf.write(folder / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(folder / "red.png")
    with av.open(str(folder / "clip.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(16):
            frame = np.full((64, 64, 3), i * 15, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    rng = np.random.default_rng(0)
    paths = {"audio": folder / "tone.wav", "image": folder / "red.png",
             "video": folder / "clip.mp4"}
    for kind, name in (("audio", "bad.wav"), ("image", "bad.png"), ("video", "bad.mp4")):
        (folder / name).write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        paths[f"bad_{kind}"] = folder / name
    return paths


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    return write_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def cache() -> dict:
    """Shared across this module: the tiny model is built once (random weights, no checkpoint)."""
    return {}


@pytest.fixture(autouse=True)
def no_trained_checkpoint(monkeypatch, tmp_path):
    """Tests must not depend on whether ckpts/tiny/stage3 exists in the work tree."""
    monkeypatch.setattr(loading, "REPO", tmp_path / "repo")


def run(argv: list[str], capsys, cache: dict) -> tuple[int, str, str]:
    try:
        rc = inference.main(argv, model_cache=cache)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


FAST = ["--max_new_tokens", "8", "--seed", "0"]


# ---------------------------------------------------------------------------------------------
# Successful requests


def test_text_only_json(capsys, cache):
    rc, out, err = run(["--prompt", "Describe a slow piano melody", "--json", "--music", "never",
                        *FAST], capsys, cache)
    assert rc == 0, err
    result = json.loads(out)
    assert isinstance(result["text"], str)
    assert result["audio"] is None and result["trained"] is False
    assert "[AUD" not in result["text"]
    assert "RANDOM" in err  # the notice about untrained weights


def test_text_streams_to_stdout(capsys, cache):
    rc, out, err = run(["--prompt", "Name an instrument", "--music", "never", *FAST], capsys, cache)
    assert rc == 0, err
    assert out.endswith("\n") and "{" not in out


@pytest.mark.parametrize("modality", ["audio", "image", "video"])
def test_each_modality_is_encoded(modality, media, capsys, cache, monkeypatch):
    run(["--prompt", "warm up", "--music", "never", "--max_new_tokens", "1"], capsys, cache)
    (engine,) = cache.values()
    seen: list[str] = []
    original = engine.features.item_features

    def spy(mod, item):
        seen.append(mod)
        return original(mod, item)

    monkeypatch.setattr(engine.features, "item_features", spy)
    rc, out, err = run(["--prompt", f"What is in this {modality}?", f"--{modality}_file",
                        str(media[modality]), "--json", "--music", "never", *FAST], capsys, cache)
    assert rc == 0, err
    assert seen == [modality]
    assert isinstance(json.loads(out)["text"], str)


def test_music_writes_playable_wav_of_requested_length(tmp_path, capsys, cache):
    out_dir = tmp_path / "out"
    rc, out, err = run(["--prompt", "Compose a fast guitar tune", "--music", "always",
                        "--audio_seconds", "0.8", "--out_dir", str(out_dir), "--json", *FAST],
                       capsys, cache)
    assert rc == 0, err
    result = json.loads(out)
    wav = Path(result["audio"])
    assert wav.parent == out_dir and wav.suffix == ".wav"
    data, sr = sf.read(wav)
    assert sr == result["sample_rate"] > 0
    assert abs(len(data) / sr - 0.8) <= 0.05
    assert np.isfinite(data).all() and np.abs(data).max() > 0
    assert not list(out_dir.glob("*.tmp"))  # atomic write left nothing behind


def test_batch_file_with_bad_entries(tmp_path, media, capsys, cache):
    lines = [
        {"id": "text", "prompt": "Describe jazz", "music": "never"},
        {"id": "img", "prompt": "Music for this picture?", "image": str(media["image"]),
         "music": "never", "temperature": 0.7, "top_p": 0.9},
        {"id": "corrupt", "prompt": "Describe this music", "audio": str(media["bad_audio"])},
        {"id": "missing", "prompt": "Describe this video", "video": "nowhere.mp4"},
        "{not json",
        {"id": "badsetting", "prompt": "hi", "temperature": -1},
        {"id": "empty", "prompt": "  "},
        {"id": "song", "prompt": "Compose a slow organ piece", "music": "always",
         "audio_seconds": 0.5},
        {"id": "relative", "prompt": "Describe it", "audio": "media/tone.wav", "music": "never"},
    ]
    batch = tmp_path / "requests.jsonl"
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "tone.wav").write_bytes(media["audio"].read_bytes())
    batch.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    out_dir = tmp_path / "out"
    rc, out, err = run(["--batch-file", str(batch), "--out_dir", str(out_dir), *FAST],
                       capsys, cache)
    assert rc == 1, err  # some requests failed; the batch itself ran to the end
    results = [json.loads(x) for x in (out_dir / "results.jsonl").read_text().splitlines()]
    assert len(results) == len(lines)
    by_id = {r["id"]: r for r in results if r["id"] is not None}
    for ok in ("text", "img", "song", "relative"):
        assert by_id[ok]["error"] is None, by_id[ok]
        assert isinstance(by_id[ok]["text"], str)
    assert by_id["text"]["audio"] is None
    data, sr = sf.read(by_id["song"]["audio"])
    assert abs(len(data) / sr - 0.5) <= 0.05
    assert "bad.wav" in by_id["corrupt"]["error"]
    assert "nowhere.mp4" in by_id["missing"]["error"]
    assert "temperature" in by_id["badsetting"]["error"]
    assert "prompt" in by_id["empty"]["error"]
    (bad_json,) = [r for r in results if r["id"] is None]
    assert bad_json["line"] == 5 and "invalid JSON" in bad_json["error"]
    assert all(set(r) >= {"id", "text", "token_ids", "audio", "error"} for r in results)
    for ok in ("text", "img", "song", "relative"):
        ids = by_id[ok]["token_ids"]
        assert ids and all(isinstance(t, int) for t in ids)
    assert by_id["corrupt"]["token_ids"] is None


def test_batch_token_ids_decode_to_the_text(tmp_path, capsys, cache):
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"id": 1, "prompt": "Describe jazz", "music": "never"}) + "\n")
    rc, out, err = run(["--batch-file", str(batch), "--out_dir", str(tmp_path), *FAST],
                       capsys, cache)
    assert rc == 0, err
    (result,) = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    engine = next(e for e in cache.values() if e.choice.checkpoint is None)
    assert engine.model.tokenizer.decode(result["token_ids"]).strip() == result["text"]


# ---------------------------------------------------------------------------------------------
# Bad input: exit status 2 and one line naming the problem


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("notice:")]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--prompt", "x", "--audio_file", "missing.wav"], "--audio_file missing.wav"),
        (["--prompt", "x", "--image_file", "missing.png"], "--image_file missing.png"),
        (["--prompt", "x", "--video_file", "missing.mp4"], "--video_file missing.mp4"),
        (["--prompt", "x", "--preset", "huge"], "--preset"),
        (["--prompt", "x", "--music_decoder", "wavenet"], "--music_decoder"),
        (["--prompt", "x", "--top_p", "3"], "top_p"),
        (["--prompt", "x", "--temperature", "-1"], "temperature"),
        (["--prompt", "x", "--audio_seconds", "0"], "audio_seconds"),
        (["--prompt", "x", "--max_new_tokens", "many"], "--max_new_tokens"),
        (["--prompt", "   "], "empty"),
        ([], "--prompt is required"),
        (["--prompt", "x", "--model", "no/such/ckpt"], "no/such/ckpt"),
        (["--batch-file", "none.jsonl"], "none.jsonl"),
        (["--prompt", "x", "--bogus"], "--bogus"),
        (["--prompt", "x", "--device", "gpu7"], "--device gpu7"),
    ],
)
def test_bad_flags_fail_with_one_line(argv, expected, capsys, cache):
    rc, out, err = run(argv, capsys, cache)
    assert rc == 2
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("inference.py: error:") and expected in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("modality", ["audio", "image", "video"])
def test_corrupt_media_fails_with_one_line(modality, media, capsys, cache):
    path = media[f"bad_{modality}"]
    rc, out, err = run(["--prompt", "x", f"--{modality}_file", str(path), *FAST], capsys, cache)
    assert rc == 2
    lines = error_lines(err)
    assert len(lines) == 1 and path.name in lines[0], err


def test_prompt_longer_than_context(capsys, cache):
    rc, out, err = run(["--prompt", "music " * 700, *FAST], capsys, cache)
    assert rc == 2
    (line,) = error_lines(err)
    assert "prompt too long" in line and "tokens" in line


def test_trained_checkpoint_is_loaded(tmp_path, capsys, cache):
    from llama import checkpoint as ckpt

    run(["--prompt", "warm up", "--music", "never", "--max_new_tokens", "1"], capsys, cache)
    model = next(iter(cache.values())).model
    folder = ckpt.write_checkpoint(
        tmp_path / "stage3",
        weights=ckpt.tuned_state_dict(model, model.tuned_parameter_names()),
        config={"m2ugen": model.config_dict(), "stage": 3},
    )
    rc, out, err = run(["--model", str(folder), "--prompt", "hi", "--json", "--music", "never",
                        *FAST], capsys, cache)
    assert rc == 0, err
    assert json.loads(out)["trained"] is True and "RANDOM" not in err
    rc, out, err = run(["--model", str(folder), "--prompt", "hi", "--music_decoder", "audioldm2"],
                       capsys, cache)
    assert rc == 2
    (line,) = error_lines(err)
    assert "--music_decoder audioldm2" in line and "musicgen" in line


@pytest.mark.parametrize("flag, value, media_flag, what", [
    ("--music_decoder_path", "facebook/musicgen-small", None, "music decoder"),
    ("--mert_path", "m-a-p/MERT-v1-330M", "--audio_file", "music encoder"),
    ("--vit_path", "google/vit-base-patch16-224", "--image_file", "image encoder"),
])
def test_component_that_cannot_be_loaded_is_one_line(flag, value, media_flag, what, media,
                                                      capsys, cache):
    """A hub id while offline: exit 2, one line naming the component, its source and the flag."""
    argv = ["--prompt", "x", flag, value, "--music", "never", *FAST]
    if media_flag:
        argv += [media_flag, str(media[media_flag.split("_")[0][2:]])]
    rc, out, err = run(argv, capsys, cache)
    assert rc == 2, err
    (line,) = error_lines(err)
    assert line.startswith(f"inference.py: error: cannot load the {what} '{value}' ({flag})")
    assert "Traceback" not in err


def test_internal_bug_is_not_reported_as_bad_input(capsys, cache, monkeypatch):
    run(["--prompt", "warm up", "--music", "never", "--max_new_tokens", "1"], capsys, cache)
    engine = next(e for e in cache.values() if e.choice.checkpoint is None)

    def broken(*args, **kwargs):
        raise ValueError("a bug deep inside the model")

    monkeypatch.setattr(engine.model, "stream_chat", broken)
    with pytest.raises(ValueError, match="a bug deep inside"):
        inference.main(["--prompt", "hi", *FAST], model_cache=cache)


def test_subprocess_exit_status_and_clean_stderr(media, tmp_path):
    """A real process: corrupt video -> status 2, stderr = the random-weights notice + one line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "inference.py"), "--prompt", "What happens in this clip?",
         "--video_file", str(media["bad_video"]), "--max_new_tokens", "4"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(error_lines(proc.stderr)) == 1, proc.stderr
    assert lines[-1].startswith("inference.py: error:") and "bad.mp4" in lines[-1]
    assert "Traceback" not in proc.stderr
