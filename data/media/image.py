"""Image decoding: any file PIL reads -> uint8 RGB (H, W, 3), EXIF orientation applied; the pixel
count is checked from the header before any pixel is decoded (decompression bombs)."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps

from data.media.errors import MediaError, PathLike, check_file

#: Images above this many pixels are refused before decoding (50 MP ~ 150 MB as RGB).
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000

# What PIL raises for malformed input (documented or observed); caught narrowly.
_PIL_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes PIL.UnidentifiedImageError and "image file is truncated"
    ValueError,
    SyntaxError,  # some PIL plugins signal a bad header this way
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def load_image(
    path: PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    min_side: int = 8,
) -> np.ndarray:
    """Decode `path` to uint8 RGB (H, W, 3).

    - The pixel count is read from the header and checked against `max_pixels` before decoding,
      so decompression bombs cost neither time nor memory. (PIL's own global limit,
      `Image.MAX_IMAGE_PIXELS`, still applies as a backstop: raising `max_pixels` above twice that
      value also needs that global raised.)
    - EXIF orientation is applied; grey, palette, CMYK, 16-bit and float images are converted;
      transparency is composited over white (dropping alpha would expose arbitrary hidden colours).
    - Degenerate sizes (a side shorter than `min_side`, e.g. 1x1) are stretched to `min_side` on
      that side with nearest-neighbour resampling: encoder processors resize to a fixed square
      anyway, and arrays like (1, 1, 3) or (3, W, 3) would make transformers' image processors
      guess the channel axis wrongly. Multi-frame files (GIF, TIFF) give their first frame.
    """
    p = check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:  # reads the header only
                w, h = im.size
                if w <= 0 or h <= 0:
                    raise MediaError(path, f"invalid image size {w}x{h}")
                if w * h > max_pixels:
                    raise MediaError(
                        path,
                        f"image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                        "(refused before decoding: possible decompression bomb)",
                    )
                im.load()
                im = ImageOps.exif_transpose(im)
                rgb = _to_rgb(im)
    except Image.DecompressionBombError as e:
        raise MediaError(path, f"refused before decoding: {e}") from e
    except _PIL_ERRORS as e:
        raise MediaError(path, f"cannot decode image ({type(e).__name__}: {e})") from e
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        im = Image.fromarray(rgb).resize(
            (max(w, min_side), max(h, min_side)), Image.Resampling.NEAREST
        )
        rgb = np.asarray(im)
    return np.array(rgb, dtype=np.uint8, order="C")  # a writable copy, never PIL's buffer


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 (H, W, 3)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im, dtype=np.float64)
        grey = np.clip(a / 257.0, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        grey = np.clip(a * scale, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))
