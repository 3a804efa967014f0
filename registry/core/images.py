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


def all_whole(
    data: bytes,
    starts: Any,
    sizes: Any,
    max_pixels: int = MAX_PIXELS,
    rounds: int = 16,
    without: bytes | None = None,
) -> bool:
    """Whether ``png_problem`` finds nothing in any of the images held in ``data`` at ``starts`` (numpy
    offsets) with ``sizes``: the same walk over chunk headers, one step for every image at once (issue
    22: verify checks each image of a release). False when any image fails, and when one has more than
    ``rounds`` chunks before IEND (the caller then asks ``png_problem`` image by image).

    ``without``: a chunk type no image may hold (verify's C2PA ``caBX``, which only the image-by-image
    check reads). Then an image must also end with its IEND, so that the walk has seen every chunk a
    walk of the whole file (``marking.walk_chunks``) would."""
    import numpy as np

    buf = np.frombuffer(data, np.uint8)
    starts, ends = np.asarray(starts, np.int64), np.asarray(starts, np.int64) + np.asarray(sizes, np.int64)
    if not len(starts):
        return True
    if (ends - starts > MAX_BYTES).any() or (ends - starts < 8 + 25 + 12).any():
        return False
    if (
        buf[starts[:, None] + np.arange(16)] != np.frombuffer(PNG_SIGNATURE + b"\0\0\0\rIHDR", np.uint8)
    ).any():
        return False

    def word(at: Any) -> Any:  # big-endian uint32 at each offset
        b = buf[at[:, None] + np.arange(4)].astype(np.int64)
        return (b[:, 0] << 24) | (b[:, 1] << 16) | (b[:, 2] << 8) | b[:, 3]

    width, height = word(starts + 16), word(starts + 20)
    if (width > max_pixels).any() or (height > max_pixels).any() or (width * height > max_pixels).any():
        return False
    at, end = starts + 8, ends
    iend = int.from_bytes(b"IEND", "big")
    refused = None if without is None else int.from_bytes(without, "big")
    for _ in range(rounds):
        if (at + 8 > end).any():
            return False
        length = word(at)
        if (at + 12 + length > end).any():
            return False
        kind = word(at + 4)
        done = kind == iend
        if refused is not None and ((kind == refused).any() or (at + 12 + length != end)[done].any()):
            return False
        at, end = at[~done] + 12 + length[~done], end[~done]
        if not len(at):
            return True
    return False


def _check_size(width: int, height: int, what: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ManifestError(
            f"{what}: the image is {width}x{height} pixels, over synthreg's limit of {max_pixels} (a "
            "decompression bomb, or not an image synthreg made)"
        )
