"""Save a tiny Stable Diffusion pipeline (random weights, built from configs, nothing downloaded) to a
folder, to try the diffusers backend offline on a CPU in seconds:

    python examples/make_tiny_pipeline.py models/pets-sd
    synthreg init pets --identity cat --identity dog --generator models/pets-sd ...   # see below
    dvc repro validate@pets

Its images are noise: it shows the pipeline (provenance, filter, validate, release, train, trace),
not image quality. Point `synthreg init --generator` at a real pipeline folder the same way
(docs/guide/datasets.md walks it from init to a traced model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Save a tiny Stable Diffusion pipeline (random weights, nothing downloaded) to a folder."
    )
    parser.add_argument(
        "folder",
        nargs="?",
        default="models/tiny-sd",
        type=Path,
        help="where to save it (default: %(default)s)",
    )
    parser.add_argument("--force", action="store_true", help="replace a folder that already holds files")
    args = parser.parse_args(argv)  # `--help` prints this and exits; it never becomes a folder name
    folder: Path = args.folder
    if folder.exists() and any(folder.iterdir()) and not args.force:
        print(f"error: {folder} already holds files; pass --force to replace them", file=sys.stderr)
        return 1
    from generators.tiny_sd import save_tiny_sd_pipeline  # torch and diffusers only once there is work

    folder = save_tiny_sd_pipeline(folder)
    weights = ", ".join(p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*.safetensors")))
    print(f"tiny pipeline saved to {folder}; weights: {weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
