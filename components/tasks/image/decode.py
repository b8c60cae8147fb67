"""Reading and decoding one image, safely: the one way tuneops turns a file or request bytes into pixels.

Every image tuneops touches (training files, validation, evaluation, serving requests) comes through
here, so the defences live in one place:
- only regular files are opened (a FIFO or ``/dev/urandom`` named ``x.png`` would hang or never end),
  and no more than ``max_bytes`` is ever read;
- the pixel count is read from the file header before any pixel is decoded, so a decompression bomb
  (a 40 KB PNG of 30000x30000 pixels) is refused without being expanded;
- truncated, corrupt and non-image files are refused with a one-line reason;
- every mode (grayscale, palette, RGBA, CMYK, 16-bit) is converted to RGB deliberately, and the
  header says which mode the file had, so validation can report the conversion.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Formats tuneops accepts; Pillow can open more (EPS runs Ghostscript, for one), which a training
# folder or a request never needs.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
# File names of those formats, as found in a folder of class folders (matched in any case).
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageProblem(ValueError):
    """Why one input is not a usable image; the message is one line.

    ``kind`` says which defence refused it: ``file`` (missing, not regular, empty, too many bytes),
    ``format`` (not an image tuneops reads), ``pixels`` (over the pixel limit, size known),
    ``bomb`` (over Pillow's own limit: refused before even the size was known), ``size`` (a side
    out of bounds) or ``decode`` (corrupt or truncated pixel data).
    """

    def __init__(self, message: str, kind: str = "decode") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on one image: bytes of the file, pixels of the picture, and its sides."""

    max_bytes: int
    max_pixels: int
    min_side: int = 1
    max_side: int = 100_000


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image file says, read without decoding its pixels."""

    format: str
    width: int
    height: int
    #: the file's own mode ("RGB", "L", "RGBA", "P", "CMYK", "I;16"...), before conversion to RGB
    mode: str
    bytes: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


@functools.cache
def default_limits() -> ImageLimits:
    """The limits of ``ValidationConfig``'s defaults, without a minimum side: what every read of an
    image after validation is bounded by (the model's inputs, the floor, descriptors, behaviour).
    Validation applies the configured limits first; serving its own, with these sides."""
    from tuneops.components.config import ValidationConfig

    defaults = ValidationConfig()
    return ImageLimits(max_bytes=defaults.max_image_bytes, max_pixels=defaults.max_image_pixels,
                       min_side=1, max_side=defaults.max_image_side)


def read_image_bytes(value: Any, limits: ImageLimits) -> bytes:
    """The bytes of an image given as a path (``str`` / ``Path``) or as ``bytes``.

    A path must name a regular file of at most ``limits.max_bytes``; the read is bounded even if the
    file grows while it is read. Raises ImageProblem otherwise.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if len(data) > limits.max_bytes:
            raise ImageProblem(f"image of {len(data):,} bytes is over the limit of {limits.max_bytes:,}", "file")
        return data
    if not isinstance(value, (str, os.PathLike)):
        raise ImageProblem(f"not an image path or bytes ({type(value).__name__})", "file")
    path = Path(value)
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ImageProblem(f"{path.name}: file not found", "file") from None
    except OSError as error:
        raise ImageProblem(f"{path.name}: cannot be read ({error.strerror or error})", "file") from None
    if not stat.S_ISREG(status.st_mode):
        raise ImageProblem(f"{path.name}: not a regular file", "file")
    if status.st_size == 0:
        raise ImageProblem(f"{path.name}: empty file (0 bytes)", "file")
    if status.st_size > limits.max_bytes:
        raise ImageProblem(f"{path.name}: {status.st_size:,} bytes is over the limit of {limits.max_bytes:,}", "file")
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO after the check, open does not hang.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as handle:
            data = handle.read(limits.max_bytes + 1)
    except OSError as error:
        raise ImageProblem(f"{path.name}: cannot be read ({error.strerror or error})", "file") from None
    if len(data) > limits.max_bytes:
        raise ImageProblem(f"{path.name}: over the limit of {limits.max_bytes:,} bytes", "file")
    return data


def image_header(data: bytes, limits: ImageLimits) -> ImageHeader:
    """Format, size and mode from the header of ``data`` (no pixel is decoded).

    Raises ImageProblem when the bytes are not an image in one of ``FORMATS`` or its size is
    outside ``limits``.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageProblem("empty image (0 bytes)", "file")
    try:
        with warnings.catch_warnings():
            # Pillow warns (and errors at 2x) on large images; tuneops applies its own limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                header = ImageHeader(format=image.format or "?", width=int(image.width), height=int(image.height),
                                     mode=image.mode, bytes=len(data))
    except UnidentifiedImageError:
        raise ImageProblem(f"not an image in a supported format ({', '.join(FORMATS)})", "format") from None
    except Image.DecompressionBombError:
        raise ImageProblem(f"image over the limit of {limits.max_pixels:,} pixels (decompression bomb)", "bomb") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageProblem(f"unreadable image header: {_first_line(error)}", "format") from None
    _check_size(header, limits)
    return header


def decode_image(value: Any, limits: ImageLimits):
    """The fully decoded image of a path or bytes, converted to RGB (a ``PIL.Image.Image``).

    Raises ImageProblem for anything that is not a whole, decodable image within ``limits``.
    """
    data = read_image_bytes(value, limits)
    return decode_bytes(data, limits, name=_name(value))


def decode_bytes(data: bytes, limits: ImageLimits, name: str = ""):
    """``decode_image`` of bytes already read; ``name`` prefixes the error message."""
    from PIL import Image

    prefix = f"{name}: " if name else ""
    try:
        header = image_header(data, limits)
    except ImageProblem as problem:
        raise ImageProblem(prefix + str(problem), problem.kind) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                # load() decodes every pixel: truncated or corrupt data fails here, not later.
                image.load()
                return _to_rgb(image, header.mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageProblem(f"{prefix}cannot be decoded: {_first_line(error)}") from None


def content_hash(data: bytes) -> str:
    """``sha256:<hex>`` of the file's bytes: identical files, identical hashes (duplicates, leakage, logs)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _to_rgb(image, mode: str):
    if mode == "RGB":
        return image.copy()
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels over white, as a person sees the image in a viewer, not over black.
        from PIL import Image

        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit and float grayscale: scale to 8 bits by the image's own range.
        import numpy as np
        from PIL import Image

        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = np.zeros_like(values) if high <= low else (values - low) * (255.0 / (high - low))
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


def _check_size(header: ImageHeader, limits: ImageLimits) -> None:
    if header.pixels > limits.max_pixels:
        raise ImageProblem(f"{header.width}x{header.height} pixels is over the limit of {limits.max_pixels:,} "
                           "pixels (decompression bomb?)", "pixels")
    if min(header.width, header.height) < limits.min_side:
        raise ImageProblem(f"{header.width}x{header.height} pixels is under the minimum side of {limits.min_side}", "size")
    if max(header.width, header.height) > limits.max_side:
        raise ImageProblem(f"{header.width}x{header.height} pixels is over the maximum side of {limits.max_side}", "size")


def _name(value: Any) -> str:
    return Path(value).name if isinstance(value, (str, os.PathLike)) else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
