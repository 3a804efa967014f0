"""Scoring through a recipe's own models (``generators.domain.ModelDomain.score``) against the bare model
over the same images, at the same batch size (issue 21; target: within 1.2x).

    python benchmarks/bench_scoring.py [--images 256] [--batch-size 64] [--size 64] [--repeats 3]

Three cases, each with tiny random models built in a temporary folder (nothing downloaded):
- a `transformers` ViT identity classifier: ``score`` (image processor, forward, softmax, the label map,
  the confidence in each intended identity) against the processor and forward a plain script would run;
- a TorchScript identity classifier: ``score`` (its declared preprocess: resize, scale, normalise, then
  forward and softmax) against the same preprocessing written out here, then the forward;
- a CLIP embedding model with its tokenizer: ``score`` (image features, nearest of 16 reference images,
  the CLIP score against each image's prompt) against the processor and ``get_image_features``.

Runs alternate (bare, synthreg, ...) after an untimed warm-up; medians of ``--repeats`` are printed with
the load average before and after (the machine is shared), wall and CPU time, and a control row: the bare
ViT loop against itself, the noise floor of the run. torch runs on ``--threads`` threads. Nothing here
asserts on a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from generators import domain as dom
from registry.records.dataset import DomainSpec, Recipe

REPO = Path(__file__).resolve().parents[1]


def vit(folder: Path, size: int) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=size,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        id2label={0: "a", 1: "b"},
        label2id={"a": 0, "b": 1},
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)


def clip(folder: Path, size: int) -> None:
    import string

    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    tower = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": 64, "max_position_embeddings": 32}
        | {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**tower, "image_size": size, "patch_size": 8},
        projection_dim=32,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    ).save_pretrained(folder)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab |= {c: len(vocab), f"{c}</w>": len(vocab) + 1}
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32).save_pretrained(folder)


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(64, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def images(n: int, size: int, seed: int) -> list:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def median_pair(
    bare: Callable[[], object], ours: Callable[[], object], repeats: int
) -> tuple[float, float, float, float]:
    """(bare wall, ours wall, bare CPU, ours CPU) medians; CPU time (all threads) is less sensitive to
    other processes on a shared machine than wall time, though not immune."""
    bare(), ours()  # warm-up at each batch shape
    times: dict[str, list[float]] = {"bw": [], "ow": [], "bc": [], "oc": []}
    for _ in range(repeats):
        for fn, w, c in ((bare, "bw", "bc"), (ours, "ow", "oc")):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[w].append(time.perf_counter() - wall)
            times[c].append(time.process_time() - cpu)
    bw, ow, bc, oc = (statistics.median(times[k]) for k in ("bw", "ow", "bc", "oc"))
    return bw, ow, bc, oc


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--size", type=int, default=64, help="image width and height (a multiple of 8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dom.BATCH = args.batch_size  # ModelDomain's batch: the same as the bare loops'
    b = args.batch_size
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        vit(ws / "models/vit", args.size)
        clip(ws / "models/clip", args.size)
        torch.jit.script(SmallCNN().eval()).save(str(ws / "models/cnn.pt"))
        (ws / "real").mkdir()
        for k, im in enumerate(images(16, args.size, seed=1)):
            im.save(ws / "real" / f"{k}.png")
        recipe = yaml.safe_load((REPO / "recipes/load-test.yaml").read_text())
        recipe.update(identities=["a", "b"], prompt_templates=["a pattern for {identity}"], size=args.size)
        recipe = Recipe.model_validate(recipe)
        pictures = images(args.images, args.size, seed=0)
        grey = np.stack([np.asarray(p.convert("L")) for p in pictures])
        identities = ["a" if k % 2 else "b" for k in range(args.images)]
        prompts = [f"a pattern for {i}" for i in identities]
        rows = []

        def ours(spec: dict) -> Callable[[], object]:
            d = dom.ModelDomain(ws, recipe, DomainSpec.model_validate(spec))
            return lambda: d.score(grey, pictures, identities, prompts)

        # 1. transformers classifier
        c = dom._Classifier(
            ws, DomainSpec.model_validate({"identity": {"model": "models/vit"}}).identity, ["a", "b"], "x"
        )  # type: ignore[arg-type]

        def bare_vit() -> None:
            with torch.inference_mode():
                for i in range(0, len(pictures), b):
                    c.model(**c.processor(images=pictures[i : i + b], return_tensors="pt")).logits.softmax(-1)

        rows.append(
            (
                "transformers ViT classifier",
                *median_pair(bare_vit, ours({"identity": {"model": "models/vit"}}), args.repeats),
            )
        )

        # the noise floor: the bare loop against itself (on a shared machine it is not 1.00)
        rows.append(("control: bare ViT vs itself", *median_pair(bare_vit, bare_vit, args.repeats)))

        # 2. TorchScript classifier, preprocess as declared (default mean/std, the images' own size)
        script = {"model": "models/cnn.pt", "classes": ["a", "b"], "preprocess": {"size": args.size}}
        net = torch.jit.load(str(ws / "models/cnn.pt"), map_location="cpu").eval()
        mean, std = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])

        def bare_script() -> None:
            with torch.inference_mode():
                for i in range(0, len(pictures), b):
                    x = np.stack([np.asarray(p, np.float32) for p in pictures[i : i + b]]) / 255.0
                    x = ((x - mean) / std).transpose(0, 3, 1, 2)
                    net(torch.from_numpy(np.ascontiguousarray(x))).softmax(-1)

        rows.append(
            ("TorchScript classifier", *median_pair(bare_script, ours({"identity": script}), args.repeats))
        )

        # 3. CLIP embedding: memorisation, embeddings for near-duplicates, CLIP score
        e = dom._Embedder(ws, "models/clip", None)

        def bare_clip() -> None:
            with torch.inference_mode():
                for i in range(0, len(pictures), b):
                    pixels = e.processor(images=pictures[i : i + b], return_tensors="pt")["pixel_values"]
                    e.model.get_image_features(pixel_values=pixels)

        spec = {"embedding": {"model": "models/clip", "reference": "real"}}
        rows.append(("CLIP embedding + CLIP score", *median_pair(bare_clip, ours(spec), args.repeats)))
    load_after = os.getloadavg()

    print(
        f"{args.images} images of {args.size}x{args.size}, batch {b}, {args.threads} torch threads, "
        f"median of {args.repeats}"
    )
    print(
        f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )
    head = f"{'case':30} {'bare s':>7} {'domain s':>9} {'ratio':>6}"
    print(f"{head} {'bare CPU s':>11} {'domain CPU s':>13} {'ratio':>6}")
    for name, bw, ow, bc, oc in rows:
        print(f"{name:30} {bw:7.3f} {ow:9.3f} {ow / bw:6.2f} {bc:11.3f} {oc:13.3f} {oc / bc:6.2f}")
    print("target: domain / bare <= 1.2")


if __name__ == "__main__":
    main()
