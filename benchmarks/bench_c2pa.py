"""Bytes and time C2PA content credentials add per image, beside the XMP marking every image gets.

    python benchmarks/bench_c2pa.py [--images 200]

Images are made the way ``generate`` makes them, from the tiny-digits model (16x16 grayscale, the
default recipe's first requests), encoded plain, with the XMP marking (``encode_png``), and then signed
with a fresh TEST chain (``keygen_c2pa``: P-256 ECDSA, the signer's certificate in the manifest, no
thumbnail, no timestamp). Reports the median size of each and the signing time per image (one signer
reused, as a batch does). Everything lives in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=200)
    n = ap.parse_args().images

    from generators.backends import load_backend
    from generators.plan import iter_plan
    from generators.shard import encode_png
    from registry.records.config import load_recipe
    from registry.store.marking import Marking
    from registry.trust.credentials import PngSigner, keygen_c2pa, load_credentials

    repo = Path(__file__).resolve().parents[1]
    recipe = load_recipe(repo / "recipes" / "digits.yaml")
    backend = load_backend(recipe.generator, repo, "cpu")
    requests = list(iter_plan(recipe, 0, n))
    images = backend.generate(requests)
    spec = backend.spec
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "ws").mkdir()
        chain = keygen_c2pa(Path(tmp) / "ws", Path(tmp) / "keys")
        signer = PngSigner(load_credentials(chain.key, chain.chain))
        plain, marked, signed, seconds = [], [], [], []
        for req, image in zip(requests, images, strict=True):
            m = Marking(req.sample_id, spec.name, spec.weights_digest)
            xmp = encode_png(image, m)
            plain.append(len(encode_png(image)))
            marked.append(len(xmp))
            t = time.perf_counter()
            signed.append(len(signer.sign(xmp, m)))
            seconds.append(time.perf_counter() - t)
        signer.close()
    med = statistics.median
    xmp_added = med(m - p for m, p in zip(marked, plain, strict=True))
    c2pa_added = med(s - m for s, m in zip(signed, marked, strict=True))
    ms = med(seconds) * 1000
    print(f"{n} images {images[0].shape[1]}x{images[0].shape[0]} from {spec.name}")
    print(f"plain PNG           median {med(plain):.0f} bytes")
    print(f"+ XMP marking       median {med(marked):.0f} bytes (+{xmp_added:.0f})")
    print(f"+ C2PA credentials  median {med(signed):.0f} bytes (+{c2pa_added:.0f})")
    print(f"C2PA signing        median {ms:.2f} ms per image, mean {statistics.fmean(seconds) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
