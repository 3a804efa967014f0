"""Issue 21: the filter's identity, memorisation and observed-attribute checks from a recipe's own local
models (``generators.domain``), for a dataset that is not digits. Tiny random `transformers` models are
built in a temporary folder (nothing downloaded); each check is shown to act: a classifier that always
answers a wrong label rejects everything, a biased one rejects exactly the other identity, an image
copied into the reference set is caught as memorised, and bad models or references are refused before
any image is scored."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest
import torch
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


def save_clip(folder: Path, tokenizer: bool = True) -> None:
    """A tiny random CLIP (image and text towers), with a tiny letter-by-letter tokenizer unless
    ``tokenizer`` is False."""
    import string

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    torch.manual_seed(0)
    tower = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        # the text tower pools at the end-of-text token: its id must be the tokenizer's
        text_config={**tower, "vocab_size": 64, "max_position_embeddings": 16}
        | {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**tower, "image_size": 32, "patch_size": 16},
        projection_dim=8,
    )
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    if tokenizer:
        vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
        for c in string.ascii_lowercase:
            vocab |= {c: len(vocab), f"{c}</w>": len(vocab) + 1}
        CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16).save_pretrained(folder)


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
        ({"identity": {"model": "models/absent"}}, "identity classifier models/absent does not exist"),
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


# --- TorchScript classifiers, near-duplicates by embedding, the CLIP score (issue 21) ---------------------


class Always(torch.nn.Module):
    """Always answers class ``k`` of ``n``, and refuses any input but (N, channels, size, size): a
    TorchScript classifier that shows the recipe's ``preprocess`` was followed."""

    def __init__(self, k: int, n: int, channels: int, size: int) -> None:
        super().__init__()
        self.k, self.n, self.channels, self.size = k, n, channels, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels or x.shape[2] != self.size or x.shape[3] != self.size:
            raise RuntimeError("wrong input shape")
        out = torch.zeros(x.shape[0], self.n) + 0.0 * x.mean()
        out[:, self.k] = 10.0
        return out


def save_script(path: Path, k: int, n: int, channels: int = 3, size: int = 224) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(Always(k, n, channels, size)).save(str(path))


@pytest.fixture(scope="module")
def scripted(made: Path) -> Path:
    save_script(made / "models/wrong.pt", k=2, n=3, channels=1, size=8)  # classes cat, dog, fox: fox
    save_script(made / "models/default-input.pt", k=0, n=2)  # 224 x 224 RGB: the default preprocess
    (made / "models/garbage.pt").write_bytes(b"not a TorchScript archive")
    save_clip(made / "models/clip-no-tokenizer", tokenizer=False)
    return made


GREY = {"size": 8, "channels": 1, "mean": [0.5], "std": [0.5]}
WRONG = {"model": "models/wrong.pt", "classes": ["cat", "dog", "fox"], "preprocess": GREY}


def test_a_torchscript_classifier_that_always_answers_a_wrong_identity_rejects_everything(scripted: Path):
    rows = run(scripted, {"identity": WRONG}, "data/pets/f-script")
    assert len(rows) == 16
    assert all(r == f"identity_mismatch: classifier says fox, not {i}" for i, _, r, *_ in rows.values()), rows
    summary = json.loads((scripted / "data/pets/f-script/filter-info.json").read_text())
    model = summary["domain"]["identity_classifier"]
    assert model["model"] == "models/wrong.pt" and model["format"] == "torchscript"
    assert model["sha256"] == hashlib.sha256((scripted / "models/wrong.pt").read_bytes()).hexdigest()
    assert model["preprocess"]["size"] == 8 and model["preprocess"]["channels"] == 1


def test_a_torchscript_attribute_classifier_with_a_label_map_and_the_default_input(scripted: Path):
    attribute = {"model": "models/default-input.pt", "classes": ["in", "out"]}
    attribute |= {"labels": {"indoor": "in", "outdoor": "out"}}
    rows = run(scripted, {"attributes": {"setting": attribute}}, "data/pets/f-script-attr")
    assert {tuple(sorted(dict(o).items())) for *_, o in rows.values()} == {(("setting", "indoor"),)}


def reference(ws: Path, folder: str = "real/other") -> str:
    """A reference set of one random 32 x 32 RGB image that no candidate resembles."""
    import numpy as np
    from PIL import Image

    (ws / folder).mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(ws / folder / "one.png")
    return folder


@pytest.mark.parametrize(
    "domain, message",
    [
        (
            {"identity": WRONG | {"model": "models/absent.pt"}},
            "identity classifier models/absent.pt does not exist",
        ),
        ({"identity": WRONG | {"model": "models/garbage.pt"}}, "cannot be loaded as TorchScript"),
        ({"identity": {"model": "models/wrong.pt"}}, "is a file, read as TorchScript: list its labels"),
        (
            {"identity": WRONG | {"classes": ["cat", "fox", "owl"]}},
            "do not cover dog; map them with `labels:`",
        ),
        ({"identity": WRONG | {"classes": ["cat", "dog"]}}, "returns (1, 3) for one image, not one score"),
        ({"identity": WRONG | {"preprocess": GREY | {"size": 16}}}, "refuses a (1, 1, 16, 16) float batch"),
        ({"identity": WRONG | {"sha256": "0" * 64}}, "has sha256 "),
        ({"identity": {"model": "models/cat-lover", "sha256": "f" * 64}}, "it changed since the recipe"),
        (
            {"embedding": {"model": "models/clip", "reference": "real/other", "sha256": "f" * 64}},
            "embedding model models/clip has sha256",
        ),
        (
            {"identity": {"model": "models/cat-lover", "classes": ["tabby", "beagle"]}},
            "`classes` and `preprocess` are for a TorchScript file",
        ),
    ],
)
def test_bad_torchscript_models_and_changed_digests_are_refused_before_any_image_is_scored(
    scripted: Path, domain: dict, message: str
):
    reference(scripted)
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(scripted, domain, "data/pets/f-bad-script")
    assert not (scripted / "data/pets/f-bad-script").exists()


def test_the_recipe_pin_accepts_the_model_it_names(scripted: Path):
    digest = hashlib.sha256((scripted / "models/wrong.pt").read_bytes()).hexdigest()
    rows = run(scripted, {"identity": WRONG | {"sha256": digest}}, "data/pets/f-pinned")
    assert len(rows) == 16


def copy_among_candidates(ws: Path, out: str) -> tuple[str, str]:
    """Candidates in ``out`` where a later image of the same identity is an exact copy of an earlier one's
    pixels (carrying its own marking, so only a duplicate check can catch it): (original, copy)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from generators.shard import encode_png
    from registry.store.marking import read_marking
    from registry.store.shards import read_members, write_shard

    table = pq.read_table(ws / "data/pets/candidates/manifest.parquet")
    rows = table.to_pylist()
    a = rows[1]
    j, b = next((j, r) for j, r in enumerate(rows) if j > 1 and r["identity"] == a["identity"])
    png_a = read_members(ws / a["shard"])[a["member"]]
    png_b = read_members(ws / b["shard"])[b["member"]]
    copy = encode_png(np.asarray(Image.open(io.BytesIO(png_a))), read_marking(png_b))
    (ws / out).mkdir(parents=True, exist_ok=True)
    write_shard(ws / out / "copy.tar", [(b["member"], copy)])
    for column, value in (("shard", f"{out}/copy.tar"), ("image_sha256", hashlib.sha256(copy).hexdigest())):
        values = table[column].to_pylist()
        values[j] = value
        table = table.set_column(
            table.schema.get_field_index(column), table.schema.field(column), pa.array(values)
        )
    pq.write_table(table, ws / out / "manifest.parquet")
    return a["sample_id"], b["sample_id"]


def test_an_exact_copy_among_candidates_is_caught_as_an_embedding_near_duplicate(made: Path):
    original, copy = copy_among_candidates(made, "data/pets/dup")
    recipe = with_domain(made, {"embedding": {"model": "models/clip", "reference": reference(made)}})
    params = FilterParams(min_contrast=0.0, duplicate_distance=-1, duplicate_similarity=0.9999)
    params = params.model_copy(update={"memorised_similarity": 0.9999})  # a tiny random CLIP: all alike
    filter_manifest("data/pets/dup", made, "data/pets/f-dup", params, recipe=recipe)
    query = "SELECT sample_id, reason, duplicate_of FROM '{}/manifest.parquet' ORDER BY index"
    rows = duckdb.sql(query.format(made / "data/pets/f-dup")).fetchall()
    caught = [(s, d) for s, r, d in rows if r.startswith("near_duplicate_embedding")]
    assert caught == [(copy, original)], rows
    [reason] = [r for s, r, _ in rows if s == copy]
    assert reason.startswith(f"near_duplicate_embedding: of {original} (cosine similarity 1.0000 >= 0.9999)")
    summary = json.loads((made / "data/pets/f-dup/filter-info.json").read_text())
    assert summary["params"]["duplicate_similarity"] == 0.9999
    assert summary["params"]["memorised_similarity"] == 0.9999


# A tiny random CLIP finds every image alike: only exact copies count as copies and duplicates here.
ONLY_CLIP = {"duplicate_similarity": 0.9999, "memorised_similarity": 0.9999}


def clip_scores(rows: dict[str, tuple]) -> list[float]:
    return [float(re.search(r"clip score (-?[0-9.]+)", r)[1]) for _, _, r, *_ in rows.values()]  # type: ignore[index]


def test_the_clip_score_is_recorded_and_a_threshold_above_it_rejects_every_image(made: Path):
    domain = {"embedding": {"model": "models/clip", "reference": reference(made)}}
    rows = run(made, domain, "data/pets/f-clip-off", **ONLY_CLIP)
    scores = clip_scores(rows)
    assert len(scores) == 16 and len(set(scores)) > 1  # measured per image, against its own prompt
    assert all("(no min_clip_score: not a filter)" in r for _, _, r, *_ in rows.values())
    summary = json.loads((made / "data/pets/f-clip-off/filter-info.json").read_text())
    assert summary["params"]["min_clip_score"] is None
    assert any("min_clip_score is not set, so no image was rejected" in w for w in summary["not_checked"])
    assert summary["domain"]["embedding"]["text_tower"] is True

    above = round(max(scores) + 0.01, 4)
    rows = run(made, domain, "data/pets/f-clip-on", **ONLY_CLIP, min_clip_score=above)
    assert all(r.startswith("low_clip_score: ") and d == "rejected" for _, d, r, *_ in rows.values()), rows
    below = round(min(scores) - 0.01, 4)
    rows = run(made, domain, "data/pets/f-clip-low", **ONLY_CLIP, min_clip_score=below)
    assert not any(r.startswith("low_clip_score") for _, _, r, *_ in rows.values())


@pytest.mark.parametrize(
    "model, why",
    [
        ("models/indoor", "has no text tower (ViTModel, not a CLIP model)"),
        ("models/clip-no-tokenizer", "has a text tower but no tokenizer"),
    ],
)
def test_no_clip_score_without_a_text_tower_is_reported_not_run_and_a_threshold_is_refused(
    scripted: Path, model: str, why: str
):
    domain = {"embedding": {"model": model, "reference": reference(scripted)}}
    rows = run(scripted, domain, "data/pets/f-no-text", memorised_similarity=0.9999)
    assert not any("clip score" in r for _, _, r, *_ in rows.values())
    summary = json.loads((scripted / "data/pets/f-no-text/filter-info.json").read_text())
    assert summary["params"]["duplicate_similarity"] == 0.97  # the default it applied, written out
    assert "min_clip_score" not in summary["params"]
    [line] = [w for w in summary["not_checked"] if w.startswith("prompt-image agreement")]
    assert why in line
    with pytest.raises(ConfigError, match=r"min_clip_score is 0\.2, but no CLIP score can be measured"):
        run(scripted, domain, "data/pets/f-no-text-2", min_clip_score=0.2)
    assert not (scripted / "data/pets/f-no-text-2").exists()


def test_without_an_embedding_model_the_embedding_checks_are_not_run_and_a_threshold_is_refused(made: Path):
    rows = run(made, {"identity": {"model": "models/wrong"}}, "data/pets/f-no-emb")
    assert not any("clip score" in r for _, _, r, *_ in rows.values())
    summary = json.loads((made / "data/pets/f-no-emb/filter-info.json").read_text())
    assert any(
        w.startswith("near-duplicate check by embedding: the recipe's domain names no embedding")
        for w in summary["not_checked"]
    )
    assert "duplicate_similarity" not in summary["params"]
    with pytest.raises(ConfigError, match=r"duplicate_similarity is 0\.9, but no embedding model"):
        run(made, {"identity": {"model": "models/wrong"}}, "data/pets/f-no-emb-2", duplicate_similarity=0.9)
