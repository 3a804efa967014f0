"""Recipe -> GenerationRequests. Pure and deterministic: the plan is known before any image exists.

Each identity gets ``images_per_identity`` samples; sample k takes attribute combination
``k mod |grid|`` and prompt template ``(k div |grid|) mod |templates|``, so the grid is covered evenly.
A sample's seed is a hash of (recipe seed, identity, k): adding an identity or raising the count leaves
every existing sample's seed, and so its image, unchanged. Its id is readable (dataset, identity, k)
and ends in a hash of everything that shapes the image, so two different requests never share an id.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator

from registry.core.digests import sha256_json
from registry.records.dataset import GenerationRequest, Recipe


def _slug(identity: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", identity)[:32]


def derive_seed(base_seed: int, identity: str, k: int) -> int:
    digest = hashlib.sha256(f"{base_seed}/{identity}/{k}".encode()).hexdigest()
    return int(digest[:15], 16)  # 60 bits: fits int64 and torch.Generator.manual_seed


def _grid(recipe: Recipe) -> list[dict[str, str]]:
    names = list(recipe.attributes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*recipe.attributes.values())]


def plan_size(recipe: Recipe) -> int:
    return len(recipe.identities) * recipe.images_per_identity


def request_at(recipe: Recipe, index: int, grid: list[dict[str, str]] | None = None) -> GenerationRequest:
    """Plan entry ``index`` alone, without building the others (identity-major order, as ``plan``)."""
    grid = grid if grid is not None else _grid(recipe)
    identity = recipe.identities[index // recipe.images_per_identity]
    k = index % recipe.images_per_identity
    attrs = grid[k % len(grid)]
    template = recipe.prompt_templates[(k // len(grid)) % len(recipe.prompt_templates)]
    shaping = {
        "generator": recipe.generator.name,
        "identity": identity,
        "attributes": attrs,
        "prompt": template.format(identity=identity, **attrs),
        "negative_prompt": recipe.negative_prompt,
        "seed": derive_seed(recipe.seed, identity, k),
        "steps": recipe.steps,
        "guidance": recipe.guidance,
        "size": recipe.size,
    }
    return GenerationRequest(
        sample_id=f"{recipe.dataset}-{_slug(identity)}-{k:06d}-{sha256_json(shaping)[:8]}",
        index=index,
        identity=identity,
        attributes=attrs,
        prompt=shaping["prompt"],
        negative_prompt=recipe.negative_prompt,
        seed=shaping["seed"],
        steps=recipe.steps,
        guidance=recipe.guidance,
        width=recipe.size,
        height=recipe.size,
    )


def iter_plan(recipe: Recipe, start: int = 0, stop: int | None = None) -> Iterator[GenerationRequest]:
    """Plan entries ``start`` to ``stop`` one at a time: a million-image plan never sits in memory."""
    grid = _grid(recipe)
    for index in range(start, plan_size(recipe) if stop is None else stop):
        yield request_at(recipe, index, grid)


def plan(recipe: Recipe) -> list[GenerationRequest]:
    return list(iter_plan(recipe))
