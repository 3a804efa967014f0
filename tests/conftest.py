"""Shared fixtures: small real workspaces on tmp_path built from the repo's own model and recipe."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "generators" / "tiny_digits" / "model"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def small_recipe(**overrides) -> dict:
    """The default recipe, shrunk: 3 digits x 2 strokes, 4 images each, 8 DDIM steps."""
    recipe = yaml.safe_load((REPO / "recipes" / "digits.yaml").read_text())
    recipe["generator"]["path"] = "model"
    recipe.update(identities=["1", "4", "7"], images_per_identity=4, steps=8)
    recipe.update(overrides)
    return recipe


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace with a copy of the tiny-digits model at ``model/`` and ``recipe.yaml``."""
    shutil.copytree(MODEL, tmp_path / "model")
    write_yaml(tmp_path / "recipe.yaml", small_recipe())
    return tmp_path
