"""The one way synthreg opens an image it did not just make (issue 24, family 4): bounded and strict.

    img = decode(png, f"sample {sample_id}", mode="L")

A byte limit, a pixel limit checked from the header before any pixel is decoded (a 30000 x 30000
decompression bomb is refused, never expanded), a PNG signature check where a PNG is expected, and a full
decode (a truncated file is refused, not half-read). Every failure is a ``ManifestError`` naming what was
being read: a bad image is a named problem, never a traceback. The filter, the domain models, the
loader, the downstream classifier and the HTML report's thumbnails all open images here.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Any

from registry.core.errors import ManifestError

MAX_BYTES = 64 << 20
MAX_PIXELS = 4096 * 4096  # a recipe's largest size (recipe.size <= 4096)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(
    data: bytes, what: str, mode: str | None = None, png: bool = True, max_pixels: int = MAX_PIXELS
) -> Any:
    """``data`` decoded whole (converted to ``mode`` when given), as a PIL image; refused, named by
    ``what``, when too large, not a PNG (with ``png``), or unreadable."""
    from PIL import Image

    if len(data) > MAX_BYTES:
        raise ManifestError(f"{what}: the image is {len(data)} bytes, over synthreg's limit of {MAX_BYTES}")
    if png and not data.startswith(PNG_SIGNATURE):
        raise ManifestError(f"{what}: the image is not a PNG (no PNG signature); regenerate it")
    if png and data[12:16] == b"IHDR":  # the size, from the header PIL has not read yet
        width, height = struct.unpack(">II", data[16:24])
        _check_size(width, height, what, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"] if png else None) as im:
                _check_size(im.size[0], im.size[1], what, max_pixels)
                im.load()  # the whole file: a truncated one fails here
                return im.convert(mode) if mode else im.copy()
    except ManifestError:
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as e:
        raise ManifestError(
            f"{what}: the image is not readable ({type(e).__name__}: {str(e)[:120]}); regenerate it"
        ) from None


def png_problem(data: bytes | memoryview, max_pixels: int = MAX_PIXELS) -> str | None:
    """What makes ``data`` a PNG ``decode`` would refuse, judged from its chunk headers alone (no pixel is
    decoded), or None: the byte limit, the signature, an IHDR first with the pixel limit, and every chunk
    whole up to IEND (a truncated file ends before it). Cheap enough for every image of a release:
    release and verify run it on each image they check against its row (``shards.check_members``); before
    issue 24 a bomb, a truncated file or a non-PNG with its digest updated reached a release whenever the
    report's thumbnails (``decode``, a few images) did not happen to include it."""
    view = memoryview(data)
    if len(view) > MAX_BYTES:
        return f"the image is {len(view)} bytes, over synthreg's limit of {MAX_BYTES}"
    if view[:8] != PNG_SIGNATURE:
        return "the image is not a PNG (no PNG signature)"
    at = 8
    while at + 8 <= len(view):
        length, kind = struct.unpack_from(">I4s", view, at)
        if at + 12 + length > len(view):
            break
        if at == 8:
            if kind != b"IHDR" or length != 13:
                return "the image is not a PNG (it does not start with an IHDR chunk)"
            width, height = struct.unpack_from(">II", view, at + 8)
            if width * height > max_pixels:
                return (
                    f"the image is {width}x{height} pixels, over synthreg's limit of {max_pixels} (a "
                    "decompression bomb, or not an image synthreg made)"
                )
        if kind == b"IEND":
            return None
        at += 12 + length
    return "the image is truncated (its PNG chunks end before IEND)"


def _check_size(width: int, height: int, what: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ManifestError(
            f"{what}: the image is {width}x{height} pixels, over synthreg's limit of {max_pixels} (a "
            "decompression bomb, or not an image synthreg made)"
        )
