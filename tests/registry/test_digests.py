"""Content digests: the batched perceptual hash is imagehash's, image for image."""

from __future__ import annotations

import io

import imagehash
import numpy as np
from PIL import Image

from registry.core.digests import perceptual_hash, perceptual_hashes


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_batched_perceptual_hashes_are_imagehash_phash_of_each_image():
    """Issue 22: generation hashes a batch's pixels at once (one DCT, median and hex pass) instead of
    decoding each PNG for imagehash; each hash is imagehash.phash's, and so ``perceptual_hash``'s of
    the PNG, for grey and colour images of any size, flat ones (ties with the median) included."""
    rng = np.random.default_rng(7)
    images = [(rng.random((16, 16)) * 255).astype(np.uint8) for _ in range(200)]
    images += [(rng.random((23, 17, 3)) * 255).astype(np.uint8) for _ in range(20)]
    images += [np.zeros((16, 16), np.uint8), np.full((8, 40), 200, np.uint8)]
    pictures = [Image.fromarray(pixels) for pixels in images]
    hashes = perceptual_hashes(pictures)
    assert hashes == [str(imagehash.phash(p)) for p in pictures]
    assert hashes == [perceptual_hash(png(pixels)) for pixels in images]
    assert perceptual_hashes([]) == []
