"""Save a tiny Stable Diffusion pipeline (random weights, built from configs, nothing downloaded) to a
folder, to try the diffusers backend offline on a CPU in seconds:

    python examples/make_tiny_pipeline.py models/tiny-sd
    synthreg generate recipes/tiny-sd.yaml

Its images are noise: it shows the pipeline (provenance, filter, validate, release, train, trace),
not image quality. Point a recipe at a real pipeline folder the same way (see README).
"""

from __future__ import annotations

import sys
from pathlib import Path

from generators.tiny_sd import save_tiny_sd_pipeline

if __name__ == "__main__":
    folder = save_tiny_sd_pipeline(Path(sys.argv[1] if len(sys.argv) > 1 else "models/tiny-sd"))
    weights = ", ".join(p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*.safetensors")))
    print(f"tiny pipeline saved to {folder}; weights: {weights}")
