"""Content digests: sha256 for bytes and files, and one digest for a folder of weight files."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.core.errors import GeneratorError

if TYPE_CHECKING:
    from PIL import Image

# Files that hold learned parameters, whatever the framework wrote them with.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf", ".onnx", ".msgpack")
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Digest of a JSON-able object in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(text.encode())


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def weights_digest(folder: Path) -> str:
    """sha256 over a ``sha256sum``-style listing of every weight file under ``folder``.

    Paths are relative and sorted, so the digest names the weights, not where they were copied.
    """
    files = weight_files(folder)
    if not files:
        raise GeneratorError(
            f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {folder}; "
            "point the recipe's generator.path at a saved model folder"
        )
    try:
        return listing_digest(folder, files)
    except OSError as e:
        raise GeneratorError(
            f"cannot read weight file {e.filename}: {e.strerror}; check its permissions"
        ) from e


def listing_digest(folder: Path, files: list[Path]) -> str:
    """sha256 over the ``sha256sum``-style listing of ``files`` (sorted, paths relative to ``folder``)."""
    lines = [f"{sha256_file(f)}  {f.relative_to(folder).as_posix()}\n" for f in files]
    return sha256_bytes("".join(lines).encode())


def folder_digest(folder: Path) -> str:
    """sha256 over a ``sha256sum``-style listing of every file under ``folder`` (relative paths, sorted;
    symlinks are not followed out of it)."""
    return listing_digest(folder, sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()))


def perceptual_hash(png: bytes) -> str:
    """64-bit DCT perceptual hash (imagehash.phash) of an encoded image, as 16 hex characters."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.open(io.BytesIO(png))))


def perceptual_hashes(images: Sequence[Image.Image]) -> list[str]:
    """``perceptual_hash`` of each image, a batch at a time: imagehash.phash's own steps (grayscale, a
    32x32 Lanczos resize, a 2-D DCT, the 8x8 lowest frequencies against their median), with the DCT,
    the median and the hex text done for the whole batch in numpy rather than image by image (issue 22).
    Generation hashes the pixels it encodes; PNG is lossless, so this equals ``perceptual_hash`` of the
    PNG without decoding it (tests/registry/test_digests.py holds them equal)."""
    import numpy as np
    import scipy.fftpack
    from PIL import Image

    if not images:
        return []
    side = 32  # imagehash.phash: hash_size 8 x highfreq_factor 4
    grey = [im if im.mode == "L" else im.convert("L") for im in images]  # imagehash's convert copies an L
    pixels = np.stack([np.asarray(im.resize((side, side), Image.Resampling.LANCZOS)) for im in grey])
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=1), axis=2)[:, :8, :8].reshape(len(images), 64)
    bits = dct > np.median(dct, axis=1, keepdims=True)
    return [row.tobytes().hex() for row in np.packbits(bits, axis=1)]
