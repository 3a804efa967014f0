"""Issue 21: the filter's identity, memorisation and observed-attribute checks from a recipe's own local
models (``generators.domain``), for a dataset that is not digits. Tiny random `transformers` models are
built in a temporary folder (nothing downloaded); each check is shown to act: a classifier that always
answers a wrong label rejects everything, a biased one rejects exactly the other identity, an image
copied into the reference set is caught as memorised, and bad models or references are refused before
any image is scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
import yaml

from generators.filter import filter_manifest
from generators.generate import generate
from registry.core.errors import ConfigError
from registry.records.config import load_recipe
from registry.records.dataset import FilterParams, GenerateParams
from tests.conftest import REPO, write_yaml

IDENTITIES = ["cat", "dog"]


def save_classifier(folder: Path, labels: list[str], favour: str) -> None:
    """A tiny ViT image classifier whose answer is always ``favour`` (zero weights, one large bias)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=16,
        num_channels=3,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )
    model = ViTForImageClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([10.0 if lab == favour else 0.0 for lab in labels]))
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def save_clip(folder: Path) -> None:
    """A tiny random CLIP (image and text towers)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    tower = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**tower, "vocab_size": 64, "max_position_embeddings": 16},
        vision_config={**tower, "image_size": 32, "patch_size": 16},
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with 16 generated pattern images of cats and dogs (4 each per setting), and models."""
    ws = tmp_path_factory.mktemp("domain").resolve()
    shutil.copytree(REPO / "generators/synthetic_pattern", ws / "generators/synthetic_pattern")
    recipe = yaml.safe_load((REPO / "recipes/load-test.yaml").read_text())
    recipe.update(
        dataset="pets",
        identities=IDENTITIES,
        attributes={"setting": ["indoor", "outdoor"]},
        prompt_templates=["a {setting} pattern for {identity}"],
        images_per_identity=8,
        size=32,
    )
    write_yaml(ws / "recipe.yaml", recipe)
    generate(Path("recipe.yaml"), ws, "data/pets/candidates", GenerateParams(batch_size=8, shard_size=8))
    save_classifier(ws / "models/wrong", [*IDENTITIES, "fox"], favour="fox")
    save_classifier(ws / "models/cat-lover", ["tabby", "beagle"], favour="tabby")
    save_classifier(ws / "models/indoor", ["indoor", "outdoor"], favour="indoor")
    save_clip(ws / "models/clip")
    return ws


def with_domain(ws: Path, domain: dict) -> object:
    recipe = yaml.safe_load((ws / "recipe.yaml").read_text())
    recipe["domain"] = domain
    write_yaml(ws / "recipe.yaml", recipe)
    return load_recipe(ws / "recipe.yaml")


def run(ws: Path, domain: dict, out: str, **params: object) -> dict[str, tuple]:
    recipe = with_domain(ws, domain)
    filter_manifest("data/pets/candidates", ws, out, FilterParams(min_contrast=0.0, **params), recipe=recipe)
    rows = duckdb.sql(
        f"SELECT sample_id, identity, decision, reason, identity_pred, nn_distance, observed_attributes "
        f"FROM '{ws / out}/manifest.parquet' ORDER BY index"
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_a_classifier_that_always_answers_a_wrong_label_rejects_everything(made: Path):
    rows = run(made, {"identity": {"model": "models/wrong"}}, "data/pets/f-wrong")
    assert len(rows) == 16
    assert all(d == "rejected" and r.startswith("identity_mismatch") for _, d, r, *_ in rows.values()), rows
    summary = json.loads((made / "data/pets/f-wrong/filter-info.json").read_text())
    assert summary["domain"]["identity_classifier"]["model"] == "models/wrong"
    assert len(summary["domain"]["identity_classifier"]["sha256"]) == 64
    assert "memorised-copy check: the recipe's domain names no embedding model" in summary["not_checked"][0]


def test_a_label_map_ties_model_labels_to_identities_and_only_dogs_are_rejected(made: Path):
    domain = {"identity": {"model": "models/cat-lover", "labels": {"cat": "tabby", "dog": "beagle"}}}
    rows = run(made, domain, "data/pets/f-cats")
    for identity, decision, reason, pred, *_ in rows.values():
        assert pred == "cat"
        if identity == "cat":
            assert decision == "accepted", reason
        else:
            assert reason == "identity_mismatch: classifier says cat, not dog"


def test_an_image_copied_from_the_reference_set_is_caught_as_memorised(made: Path, tmp_path: Path):
    [(sample, shard, member)] = duckdb.sql(
        f"SELECT sample_id, shard, member FROM '{made}/data/pets/candidates/manifest.parquet' "
        "ORDER BY index LIMIT 1 OFFSET 5"
    ).fetchall()
    import tarfile

    with tarfile.open(made / shard) as tar:
        png = tar.extractfile(member).read()  # type: ignore[union-attr]
    reference = made / "real/pets"
    reference.mkdir(parents=True, exist_ok=True)
    (reference / "copied.png").write_bytes(png)
    domain = {"embedding": {"model": "models/clip", "reference": "real/pets"}}
    rows = run(made, domain, "data/pets/f-memorised", memorised_similarity=0.9999)
    memorised = [s for s, (_, d, r, *_) in rows.items() if r.startswith("memorised_copy")]
    assert memorised == [sample]
    assert rows[sample][2].startswith("memorised_copy: cosine similarity 1.0000 to a real reference image")
    assert all(nn is not None for *_, nn, _ in rows.values())  # measured on every row, so the rate counts


def test_an_attribute_classifier_fills_the_observed_side(made: Path):
    rows = run(made, {"attributes": {"setting": {"model": "models/indoor"}}}, "data/pets/f-observed")
    assert {tuple(sorted(dict(o).items())) for *_, o in rows.values()} == {(("setting", "indoor"),)}


@pytest.mark.parametrize(
    "domain, message",
    [
        ({"identity": {"model": "models/absent"}}, "identity classifier models/absent is not a folder"),
        ({"identity": {"model": "models/cat-lover"}}, "do not cover cat, dog; map them with `labels:`"),
        ({"identity": {"model": "real"}}, "cannot be loaded as a transformers image classifier"),
        ({"embedding": {"model": "models/clip", "reference": "models/wrong"}}, "holds no image"),
        ({"attributes": {"colour": {"model": "models/indoor"}}}, "names colour, which the recipe does not"),
    ],
)
def test_bad_models_and_references_are_refused_before_any_image_is_scored(
    made: Path, domain: dict, message: str
):
    (made / "real").mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(made, domain, "data/pets/f-bad")
    assert not (made / "data/pets/f-bad").exists()
