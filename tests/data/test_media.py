"""data.media: every format decodes correctly; every kind of bad file gives MediaError, fast."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image, ImageFile

from data.media import MediaError, load_audio, load_image, load_video, write_wav

SECONDS = 1.5
TONE = 440.0


def _tone(sr: int, seconds: float = SECONDS, freq: float = TONE, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_av_audio(path: Path, codec: str, fmt: str, sr: int, channels: int, video: bool) -> None:
    """Audio (optionally with a video track) through FFmpeg: m4a/aac/mp4 files."""
    with av.open(str(path), "w", format=fmt) as c:
        if video:
            vs = c.add_stream("libx264", rate=8)
            vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream(codec, rate=sr)
        a.layout = "stereo" if channels == 2 else "mono"
        if video:
            for i in range(int(SECONDS * 8)):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 10, np.uint8), "rgb24")
                for p in vs.encode(frame):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
        x = np.stack([_tone(sr)] * channels)
        for i in range(0, x.shape[1], 1024):
            fr = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(x[:, i : i + 1024]), format="fltp", layout=a.layout.name
            )
            fr.sample_rate, fr.pts = sr, i
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def _write_video(path: Path, n: int, fps: int = 8, h: int = 32, w: int = 48, fmt=None) -> None:
    """Frame i is a flat grey of value 10 + 20 * i (so decoded frames can be identified)."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.full((h, w, 3), 10 + 20 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _frame_ids(video: np.ndarray) -> list[int]:
    return [int(round((f.mean() - 10) / 20)) for f in video]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    out: dict[str, Path] = {}

    def p(name: str) -> Path:
        out[name] = d / name
        return out[name]

    stereo = np.stack([_tone(44100), np.zeros(int(SECONDS * 44100), np.float32)], 1)
    sf.write(p("a.wav"), stereo, 44100)  # left = tone, right = silence -> mono amplitude 0.25
    sf.write(p("a.flac"), _tone(22050), 22050)
    sf.write(p("a.ogg"), _tone(48000), 48000, format="OGG", subtype="VORBIS")
    sf.write(p("a.opus"), _tone(48000), 48000, format="OGG", subtype="OPUS")
    sf.write(p("a.mp3"), _tone(44100), 44100, format="MP3")
    _write_av_audio(p("a.m4a"), "aac", "ipod", 44100, 2, video=False)
    _write_av_audio(p("a.aac"), "aac", "adts", 32000, 1, video=False)
    _write_av_audio(p("av.mp4"), "aac", "mp4", 48000, 2, video=True)
    sf.write(p("silence.wav"), np.zeros(24000, np.float32), 24000)
    sf.write(p("short.wav"), _tone(16000, seconds=0.1), 16000)
    sf.write(p("loud.wav"), np.full(8000, 1.5, np.float32), 16000, subtype="FLOAT")
    sf.write(p("nan.wav"), np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    # 12 kHz tone at 44.1 kHz: must vanish when band-limited to 16 kHz (Nyquist 8 kHz).
    sf.write(p("hf.wav"), _tone(44100, freq=12000.0), 44100)

    Image.fromarray(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)).save(p("rgb.png"))
    _write_video(p("v.mp4"), 12)
    return out


# ---------------------------------------------------------------------------------------------
# Audio


@pytest.mark.parametrize(
    "name, exact",
    [
        ("a.wav", True),
        ("a.flac", True),
        ("a.ogg", False),
        ("a.opus", False),
        ("a.mp3", False),
        ("a.m4a", False),
        ("a.aac", False),
        ("av.mp4", False),
    ],
)
@pytest.mark.parametrize("sr", [16000, 24000])
def test_audio_formats_decode_to_mono_at_rate(files, name: str, exact: bool, sr: int) -> None:
    x = load_audio(files[name], sr)
    assert x.dtype == np.float32 and x.ndim == 1
    assert np.abs(x).max() <= 1.0
    expected = SECONDS * sr
    # lossy codecs add encoder delay / frame padding: allow 60 ms
    assert abs(len(x) - expected) <= (1 if exact else 0.06 * sr), (len(x), expected)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    peak_hz = np.argmax(spectrum) * sr / len(x)
    assert abs(peak_hz - TONE) < 5, peak_hz


def test_audio_stereo_is_averaged(files) -> None:
    x = load_audio(files["a.wav"], 44100)
    assert np.abs(x).max() == pytest.approx(0.25, abs=0.01)


def test_audio_resampling_is_band_limited(files) -> None:
    x = load_audio(files["hf.wav"], 16000)
    # naive decimation would alias 12 kHz to 4 kHz at full amplitude (0.5)
    assert np.sqrt(np.mean(x[1000:-1000] ** 2)) < 0.01


def test_audio_silence_is_valid_and_short_clips_raise(files) -> None:
    s = load_audio(files["silence.wav"], 24000)
    assert s.shape == (24000,) and not s.any()
    assert load_audio(files["short.wav"], 24000).shape == (2400,)
    with pytest.raises(MediaError, match="too short"):
        load_audio(files["short.wav"], 24000, min_seconds=0.5)


def test_audio_values_clipped_and_nan_refused(files) -> None:
    assert load_audio(files["loud.wav"], 16000).max() == 1.0
    with pytest.raises(MediaError, match="NaN"):
        load_audio(files["nan.wav"], 16000)


def test_audio_too_long_refused(files) -> None:
    with pytest.raises(MediaError, match="too long"):
        load_audio(files["a.wav"], 16000, max_seconds=1.0)
    with pytest.raises(MediaError, match="too long"):
        load_audio(files["a.m4a"], 16000, max_seconds=1.0)


# ---------------------------------------------------------------------------------------------
# Failure kinds (every loader)


def _bad_files(files: dict[str, Path], d: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """name -> (path, loaders that must refuse it)."""
    AUD, IMG, VID = "audio", "image", "video"
    out: dict[str, tuple[Path, tuple[str, ...]]] = {}

    def put(name: str, data: bytes, kinds: tuple[str, ...]) -> None:
        (d / name).write_bytes(data)
        out[name] = (d / name, kinds)

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 20000, dtype=np.uint8).tobytes()
    wav, png = files["a.wav"].read_bytes(), files["rgb.png"].read_bytes()
    mp4 = files["v.mp4"].read_bytes()
    for ext, kinds in ((".wav", (AUD,)), (".png", (IMG,)), (".mp4", (VID,))):
        put("empty" + ext, b"", kinds)
        put("random" + ext, noise, kinds)
    put("trunc.wav", wav[: len(wav) // 2], (AUD,))
    put("trunc_head.wav", wav[:40], (AUD,))
    flac = files["a.flac"].read_bytes()
    put("trunc.flac", flac[: len(flac) // 2], (AUD,))
    put("trunc.png", png[: len(png) - 30], (IMG,))
    put("trunc.mp4", mp4[: len(mp4) // 2], (VID,))
    put("png_as.wav", png, (AUD, VID))
    put("wav_as.png", wav, (IMG, VID))
    put("wav_as.mp4", wav, (VID, IMG))
    put("png_as.mp4", png, (VID,))
    put("text.mp3", b"hello, this is not audio at all\n" * 10, (AUD, IMG, VID))
    # unsupported codecs: an unknown WAV format tag, an unknown MP4 video fourcc
    bad_tag = bytearray(wav)
    i = bad_tag.index(b"fmt ")
    bad_tag[i + 8 : i + 10] = struct.pack("<H", 0x7777)
    put("codec.wav", bytes(bad_tag), (AUD,))
    assert mp4.count(b"avc1") >= 1
    put("codec.mp4", mp4.replace(b"avc1", b"zzzz"), (VID,))
    return out


LOADERS = {
    "audio": lambda p: load_audio(p, 16000),
    "image": load_image,
    "video": lambda p: load_video(p, 4),
}


def test_every_failure_kind_raises_media_error(files, tmp_path) -> None:
    cases = _bad_files(files, tmp_path)
    cases["missing.wav"] = (tmp_path / "missing.wav", ("audio", "image", "video"))
    cases["folder"] = (tmp_path, ("audio", "image", "video"))
    checked = 0
    for name, (path, kinds) in cases.items():
        for kind in kinds:
            with pytest.raises(MediaError) as info:
                LOADERS[kind](path)
            assert str(path) in str(info.value) and info.value.reason, (name, kind)
            checked += 1
    assert checked >= 28


def test_corrupted_files_give_arrays_or_media_error_only(files, tmp_path) -> None:
    """Byte-level damage anywhere: either a valid array or MediaError, never another exception."""
    rng = np.random.default_rng(1)
    sources = {
        "a.wav": "audio",
        "a.flac": "audio",
        "a.mp3": "audio",
        "a.m4a": "audio",
        "rgb.png": "image",
        "v.mp4": "video",
    }
    for name, kind in sources.items():
        data = files[name].read_bytes()
        for trial in range(6):
            buf = bytearray(data)
            if trial % 2 == 0:
                buf = buf[: int(rng.integers(1, len(buf)))]
            else:
                for pos in rng.integers(0, len(buf), size=8):
                    buf[pos] = int(rng.integers(0, 256))
            path = tmp_path / f"{trial}_{name}"
            path.write_bytes(bytes(buf))
            try:
                out = LOADERS[kind](path)
            except MediaError:
                continue
            assert isinstance(out, np.ndarray) and out.size > 0


# ---------------------------------------------------------------------------------------------
# Images


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def test_image_modes_convert_to_rgb(tmp_path, files) -> None:
    rgb = load_image(files["rgb.png"], min_side=1)
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3) and rgb.flags.writeable
    assert np.array_equal(rgb, np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))

    grey = load_image(_save(Image.new("L", (10, 9), 77), tmp_path / "g.png"))
    assert grey.shape == (9, 10, 3) and (grey == 77).all()

    pal = Image.new("P", (10, 10))
    pal.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    pal.paste(1, (0, 0, 10, 10))
    assert (load_image(_save(pal, tmp_path / "p.png")) == [200, 10, 20]).all()

    rgba = Image.new("RGBA", (10, 10), (10, 20, 30, 0))
    assert (load_image(_save(rgba, tmp_path / "t.png")) == 255).all()  # transparent -> white

    deep = Image.fromarray(np.full((10, 10), 65535, np.uint16))
    assert (load_image(_save(deep, tmp_path / "d.png")) == 255).all()

    cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))
    out = load_image(_save(cmyk, tmp_path / "c.jpg", quality=95))
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_image_exif_orientation_applied(tmp_path) -> None:
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = (255, 0, 0)  # left half red, right half blue
    arr[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = _save(Image.fromarray(arr), tmp_path / "o.jpg", exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (20, 10, 3)
    assert out[:8, :, 0].mean() > 200 and out[:8, :, 2].mean() < 60  # left became top
    assert out[12:, :, 2].mean() > 200


def test_tiny_images_are_stretched(tmp_path) -> None:
    one = load_image(_save(Image.new("RGB", (1, 1), (1, 2, 3)), tmp_path / "1.png"))
    assert one.shape == (8, 8, 3) and (one == [1, 2, 3]).all()
    thin = load_image(_save(Image.new("RGB", (50, 1), (9, 9, 9)), tmp_path / "thin.png"))
    assert thin.shape == (8, 50, 3)


def _png_bomb(path: Path, side: int = 30000) -> int:
    """A genuine 1-bit greyscale PNG of side x side pixels whose IDAT is zlib-compressed zeros."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    block = row * 1000
    parts = [comp.compress(block) for _ in range(side // 1000)]
    parts.append(comp.flush())
    idat = b"".join(parts)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return len(data)


def test_decompression_bomb_refused_without_decoding(tmp_path, monkeypatch) -> None:
    size = _png_bomb(tmp_path / "bomb.png")
    assert size < 1_000_000  # "a few hundred KB"

    def forbidden(*args, **kwargs):
        raise AssertionError("the bomb was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)
    with pytest.raises(MediaError, match="bomb"):  # refused from the header: `load` never runs
        load_image(tmp_path / "bomb.png")
    # our own limit (below PIL's) is checked from the header too
    Image.new("RGB", (100, 100)).save(tmp_path / "100.png")
    with pytest.raises(MediaError, match="exceeds the limit"):
        load_image(tmp_path / "100.png", max_pixels=5000)


# ---------------------------------------------------------------------------------------------
# Video


def test_video_uniform_sampling(files) -> None:
    v = load_video(files["v.mp4"], 4)
    assert v.dtype == np.uint8 and v.shape == (4, 32, 48, 3)
    assert _frame_ids(v) == [1, 4, 7, 10]  # middles of 4 equal segments of 12 frames


def test_video_fewer_frames_than_requested_repeats(files) -> None:
    v = load_video(files["v.mp4"], 32)
    ids = _frame_ids(v)
    assert v.shape[0] == 32 and sorted(ids) == ids and set(ids) == set(range(12))


def test_video_window_sampling(files) -> None:
    assert _frame_ids(load_video(files["v.mp4"], 4, "window")) == [4, 5, 6, 7]
    assert _frame_ids(load_video(files["v.mp4"], 4, "window", frame_stride=3)) == [1, 4, 7, 10]
    # window longer than the clip: the last frame repeats
    long_window = load_video(files["v.mp4"], 8, "window", frame_stride=2)
    assert _frame_ids(long_window) == [0, 2, 4, 6, 8, 10, 11, 11]
    starts = set()
    for seed in range(8):
        ids = _frame_ids(load_video(files["v.mp4"], 3, "window", seed=seed))
        assert ids == list(range(ids[0], ids[0] + 3)) and 0 <= ids[0] <= 9  # consecutive
        assert _frame_ids(load_video(files["v.mp4"], 3, "window", seed=seed)) == ids  # reproducible
        starts.add(ids[0])
    assert len(starts) > 1  # the seed does move the window


def test_video_sampling_spec_loads_what_it_names_and_keys_differ(files) -> None:
    from data.media import VideoSampling

    centred = VideoSampling("window")
    assert _frame_ids(centred.load(files["v.mp4"], 4)) == [4, 5, 6, 7]
    assert _frame_ids(VideoSampling().load(files["v.mp4"], 4)) == [1, 4, 7, 10]
    drawn = _frame_ids(VideoSampling("window", seed=3).load(files["v.mp4"], 4))
    assert drawn == _frame_ids(load_video(files["v.mp4"], 4, "window", seed=3))
    keys = [VideoSampling().cache_params(), centred.cache_params(),
            VideoSampling("window", 3).cache_params(), VideoSampling("window", 4).cache_params()]
    assert len({str(k) for k in keys}) == 4
    assert VideoSampling(seed=3).cache_params() == VideoSampling().cache_params()  # unused seed
    with pytest.raises(ValueError, match="video sampling"):
        VideoSampling("random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        load_video(files["v.mp4"], 4, seed=1)


def test_video_variable_frame_rate_is_sampled_in_time(tmp_path) -> None:
    path = tmp_path / "vfr.mkv"
    times_ms = [0, 100, 200, 300, 2000, 2100, 2200, 2300]  # a burst, a 1.7 s still, a burst
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            fr = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 + 20 * i, np.uint8), "rgb24")
            fr.pts, fr.time_base = t, Fraction(1, 1000)
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    ids = _frame_ids(load_video(path, 4))
    # by time, the long-lived frame 3 is on screen at the 2nd and 3rd quarter marks;
    # index-uniform sampling would give [1, 3, 5, 7]
    assert ids[0] in (1, 2) and ids[1] == ids[2] == 3 and ids[3] in (4, 5), ids


def test_video_resize_and_pixel_limit(files) -> None:
    assert load_video(files["v.mp4"], 2, size=(16, 24)).shape == (2, 16, 24, 3)
    with pytest.raises(MediaError, match="exceeds"):
        load_video(files["v.mp4"], 2, max_pixels=1000)


def test_video_argument_errors(files) -> None:
    with pytest.raises(ValueError):
        load_video(files["v.mp4"], 0)
    with pytest.raises(ValueError):
        load_video(files["v.mp4"], 4, sampling="random")  # type: ignore[arg-type]


def _write_avi(path: Path, n: int, declared: int | None = None, damage_from: int | None = None):
    """A cinepak AVI of n frames (frame i grey 10 + 20 * i). `declared` rewrites the header's
    frame counts (avih dwTotalFrames, strh dwLength) the way a writer that never fixed its header
    leaves them; frames from `damage_from` on get their payload overwritten with junk."""
    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream("cinepak", rate=8)
        s.width, s.height, s.pix_fmt = 48, 32, "rgb24"
        for i in range(n):
            img = np.full((32, 48, 3), 10 + 20 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = bytearray(path.read_bytes())
    if declared is not None:
        struct.pack_into("<I", data, data.index(b"avih") + 8 + 16, declared)
        struct.pack_into("<I", data, data.index(b"strh") + 8 + 32, declared)
    if damage_from is not None:
        pos, end, k = data.index(b"movi") + 4, data.index(b"idx1"), 0
        while pos + 8 <= end:
            size = struct.unpack_from("<I", data, pos + 4)[0]
            if data[pos + 2 : pos + 4] == b"dc":
                if k >= damage_from:
                    data[pos + 8 : pos + 8 + size] = b"\xff" * size
                k += 1
            pos += 8 + size + (size & 1)
    path.write_bytes(bytes(data))


def test_video_header_declaring_more_frames_is_used_with_a_warning(tmp_path, caplog) -> None:
    path = tmp_path / "liar.avi"
    _write_avi(path, 12, declared=444)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 444  # the header really disagrees
    with caplog.at_level("WARNING", logger="data.media"):
        v = load_video(path, 4)
    assert _frame_ids(v) == [1, 4, 7, 10]  # sampled over the 12 frames that are there
    assert "declares 444 frames, only 12 present" in caplog.text


def test_video_undecodable_frames_replaced_and_none_refused(tmp_path, caplog) -> None:
    half = tmp_path / "half.avi"
    _write_avi(half, 12, damage_from=6)
    with caplog.at_level("WARNING", logger="data.media"):
        ids = _frame_ids(load_video(half, 4))
    assert ids == [1, 4, 5, 5]  # 7 and 10 did not decode: the last decodable frame stands in
    assert "did not decode" in caplog.text
    dead = tmp_path / "dead.avi"
    _write_avi(dead, 12, damage_from=0)
    with pytest.raises(MediaError, match="no frame of the video stream could be decoded"):
        load_video(dead, 4)


# ---------------------------------------------------------------------------------------------
# Writing WAV


def test_write_wav_round_trip_float_keeps_loud_values(tmp_path) -> None:
    x = _tone(16000) * 3  # peak 1.5: kept exactly, not clipped
    out = write_wav(tmp_path / "sub" / "loud.wav", x, 16000)
    assert out == tmp_path / "sub" / "loud.wav"
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "FLOAT")
    back, _ = sf.read(out, dtype="float32")
    assert np.array_equal(back, x)
    stereo = np.stack([x, -x])  # (channels, n)
    back, sr = sf.read(write_wav(tmp_path / "st.wav", stereo, 24000), dtype="float32")
    assert sr == 24000 and back.shape == (x.shape[0], 2) and np.array_equal(back.T, stereo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st.wav", "sub"]  # no temp files


def test_write_wav_pcm16_refuses_to_clip(tmp_path) -> None:
    x = _tone(16000)
    back, _ = sf.read(write_wav(tmp_path / "q.wav", x, 16000, subtype="PCM_16"), dtype="float32")
    assert sf.info(tmp_path / "q.wav").subtype == "PCM_16" and np.abs(back - x).max() < 1e-4
    with pytest.raises(MediaError, match="exceeds 1.0"):
        write_wav(tmp_path / "q.wav", x * 3, 16000, subtype="PCM_16")
    assert np.array_equal(sf.read(tmp_path / "q.wav", dtype="float32")[0], back)  # untouched


def test_write_wav_refuses_nan_and_bad_arguments(tmp_path) -> None:
    x = _tone(16000)
    x[100] = np.nan
    with pytest.raises(MediaError, match="NaN") as info:
        write_wav(tmp_path / "nan.wav", x, 16000)
    assert str(tmp_path / "nan.wav") in str(info.value)
    with pytest.raises(MediaError, match="NaN"):
        write_wav(tmp_path / "inf.wav", np.array([0.0, np.inf], np.float32), 16000)
    with pytest.raises(MediaError, match="no samples"):
        write_wav(tmp_path / "e.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="sample rate"):
        write_wav(tmp_path / "r.wav", _tone(16000), 0)
    with pytest.raises(ValueError, match="channels, samples"):
        write_wav(tmp_path / "t.wav", np.zeros((16000, 2), np.float32), 16000)
    with pytest.raises(ValueError, match="float"):
        write_wav(tmp_path / "i.wav", np.zeros(10, np.int16), 16000)
    assert list(tmp_path.iterdir()) == []


def test_compressed_audio_shorter_than_its_header_is_used_with_a_warning(tmp_path, caplog):
    """mp3 length headers are estimates: like every player, decode what is there (warn)."""
    import soundfile as sf

    from data.media import load_audio

    sr = 16000
    t = np.arange(sr * 4) / sr
    full = tmp_path / "a.mp3"
    sf.write(full, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, format="MP3")
    cut = tmp_path / "cut.mp3"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    with caplog.at_level("WARNING", logger="data.media"):
        wave = load_audio(cut, sr)
    assert 1.5 < len(wave) / sr < 3.5
    assert "header declares" in caplog.text
