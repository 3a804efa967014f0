"""The floor of ``synthreg generate`` with the load-test backend: a bare loop doing only the bytes' work.

Run from the repository root::

    python benchmarks/floor_generate.py [--images N]

For every planned image the loop makes the pixels with the synthetic-pattern backend's arithmetic
(written out here, not synthreg's backend), encodes them as a PNG with Pillow, inserts the XMP marking
chunk after IHDR, takes the sha256 and appends the PNG to a shard with Python's ``tarfile`` (PAX
format, fixed member metadata), 1,000 images a shard. Its inputs (the plan's sample ids, identities,
attributes and seeds, the pattern config and the weights digest) are read from synthreg before the
clock starts, as the bare diffusers loop of bench_generate.py gets its seeds. What it does not do is
the provenance synthreg adds: the plan digest, perceptual hashes, manifest rows and Parquet, resume
checkpoints, fsync, the audit event. The shards it writes are byte for byte synthreg's
(``bench_generate.py`` checks that before it prints a ratio), so both sides make the same bytes.

Alone, this script prints the floor's time and images/s. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import struct
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
LOAD_TEST_RECIPE = REPO / "recipes" / "load-test.yaml"
SHARD_SIZE = 1000
_IHDR_END = 33  # PNG signature (8) + IHDR chunk (4 length + 4 type + 13 data + 4 CRC)


@dataclass(frozen=True)
class FloorInputs:
    """Everything the floor needs, read from synthreg before timing: one tuple an image."""

    requests: list[tuple[str, str, str, int, int, int]]  # sample id, identity, attributes JSON, seed, w, h
    amplitude: float
    noise: float
    generator: str
    weights_digest: str


def load_test_recipe(images: int) -> dict:
    """recipes/load-test.yaml with 100 identities and ``images`` / 100 images each (as bench_e2e.py)."""
    recipe = yaml.safe_load(LOAD_TEST_RECIPE.read_text())
    recipe["identities"] = [f"id{i:03d}" for i in range(100)]
    recipe["images_per_identity"] = images // 100
    return recipe


def floor_inputs(recipe_path: Path, ws: Path) -> FloorInputs:
    from generators.backends import load_backend
    from generators.plan import iter_plan
    from registry.records.config import load_recipe

    recipe = load_recipe(recipe_path)
    backend = load_backend(recipe.generator, ws)
    requests = [
        (r.sample_id, r.identity, json.dumps(r.attributes, sort_keys=True), r.seed, r.width, r.height)
        for r in iter_plan(recipe)
    ]
    spec = backend.spec
    return FloorInputs(requests, backend.amplitude, backend.noise, spec.name, spec.weights_digest)


def _unit(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16)


def draw(identity: str, attributes: str, seed: int, width: int, height: int, amplitude: float, noise: float):
    """The synthetic-pattern backend's arithmetic for one image (generators/backends/synthetic_pattern.py)."""
    h = _unit(identity)
    fx, fy = 1 + h % 5, 1 + (h >> 8) % 5
    phase = (_unit(attributes) % 360) * np.pi / 180
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = 0.5 + amplitude * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    pixels = base + np.random.default_rng(seed).normal(0, noise, base.shape)
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def marking_chunk(sample_id: str, generator: str, weights_digest: str) -> bytes:
    """The uncompressed iTXt chunk holding the XMP packet synthreg writes (registry/store/marking.py)."""
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about=""'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        ' xmlns:synthreg="https://synthreg.dev/xmp/1.0/"'
        ' Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"'
        f" synthreg:sampleId={quoteattr(sample_id)}"
        f" synthreg:generator={quoteattr(generator)}"
        f" synthreg:weightsDigest={quoteattr(weights_digest)}/>"
        "</rdf:RDF></x:xmpmeta>"
        '<?xpacket end="r"?>'
    )
    body = b"iTXt" + b"XML:com.adobe.xmp\0\0\0\0\0" + packet.encode()
    return struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))


def run_floor(inputs: FloorInputs, out: Path) -> list[str]:
    """Make, encode, mark, hash and tar every image into ``out``/shard-NNNNN.tar; return the sha256s."""
    out.mkdir(parents=True, exist_ok=True)
    digests = []
    reqs = inputs.requests
    for j, start in enumerate(range(0, len(reqs), SHARD_SIZE)):
        with tarfile.open(out / f"shard-{j:05d}.tar", "w", format=tarfile.PAX_FORMAT) as tar:
            for sample_id, identity, attributes, seed, width, height in reqs[start : start + SHARD_SIZE]:
                pixels = draw(identity, attributes, seed, width, height, inputs.amplitude, inputs.noise)
                buf = io.BytesIO()
                Image.fromarray(pixels, mode="L").save(buf, format="PNG")
                png = buf.getvalue()
                mark = marking_chunk(sample_id, inputs.generator, inputs.weights_digest)
                png = png[:_IHDR_END] + mark + png[_IHDR_END:]
                digests.append(hashlib.sha256(png).hexdigest())
                info = tarfile.TarInfo(f"{sample_id}.png")
                info.size, info.mtime, info.mode = len(png), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(png))
    return digests


def make_workspace(root: Path, images: int) -> tuple[Path, Path]:
    """A throwaway workspace with the pattern config and the load-test recipe at ``images`` images."""
    import shutil

    ws = root / "ws"
    shutil.copytree(REPO / "generators/synthetic_pattern", ws / "generators/synthetic_pattern")
    recipe = ws / "recipes" / "load-test.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(yaml.safe_dump(load_test_recipe(images), sort_keys=False))
    return ws, recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20_000, help="a multiple of 100 (100 identities)")
    args = ap.parse_args()
    if args.images < 100 or args.images % 100:
        ap.error("--images must be a positive multiple of 100 (100 identities x images each)")
    with tempfile.TemporaryDirectory(prefix="synthreg-floor-") as tmp:
        ws, recipe = make_workspace(Path(tmp), args.images)
        inputs = floor_inputs(recipe, ws)
        start = time.perf_counter()
        run_floor(inputs, Path(tmp) / "floor")
        wall = time.perf_counter() - start
    print(f"floor: {args.images} images in {wall:.2f} s, {args.images / wall:.0f} images/s")


if __name__ == "__main__":
    main()
