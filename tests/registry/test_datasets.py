"""Issue 19: a dataset's own settings (params.yaml's ``datasets.NAME``), ``synthreg init``, packs that fit
any dataset, leakage that is not applicable without an evaluation source, and recipe edits without dead
ends (declarations accepted at release and named in its record; shaping edits refused with the command)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import ConfigError, PolicyError, ReleaseError
from registry.records.config import Params, load_params, load_recipe
from registry.records.dataset import recipe_changes
from registry.releases.release import release
from tests.conftest import REPO, write_yaml
from tests.registry.conftest import FILTERED, RECIPE, Built, commit_all, validate_ws

runner = CliRunner()

INIT = [
    "init",
    "pets",
    "--identity",
    "cat",
    "--identity",
    "dog",
    "--attribute",
    "setting=indoor,outdoor",
    "--generator",
    "models/pets-sd",
    "--generator-licence",
    "CreativeML-OpenRAIL-M",
    "--licence",
    "CC-BY-4.0",
    "--use",
    "research",
    "--use",
    "training-a-model",
]


def repo_workspace(tmp_path: Path) -> Path:
    """The repository's params.yaml, recipes and policies in a bare folder (no data)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(REPO / "params.yaml", ws / "params.yaml")
    shutil.copytree(REPO / "recipes", ws / "recipes")
    shutil.copytree(REPO / "policies", ws / "policies", ignore=shutil.ignore_patterns("__pycache__"))
    return ws


def files(ws: Path) -> dict[str, bytes]:
    return {p.relative_to(ws).as_posix(): p.read_bytes() for p in sorted(ws.rglob("*")) if p.is_file()}


# --- params.yaml: one entry a dataset ----------------------------------------------------------------------


def test_the_repository_params_hold_digits_as_one_entry_of_datasets():
    p = load_params(REPO / "params.yaml")
    assert p.names == ["digits"] and p.only() == "digits"
    digits = p.dataset("digits")
    assert digits.recipe == "recipes/digits.yaml" and digits.train.dataset == "digits@working"
    assert digits.validate_.packs == ["policies/packs/default.yaml", "policies/packs/digits.yaml"]
    assert load_recipe(REPO / digits.recipe).generator.path == digits.generator


def test_each_dataset_has_its_own_thresholds_and_trains_itself():
    p = Params.model_validate(
        {
            "datasets": {
                "digits": {"recipe": "a.yaml", "generator": "g", "filter": {"min_contrast": 0.1}},
                "pets": {"recipe": "b.yaml", "generator": "h", "filter": {"min_contrast": 0.0}},
            }
        }
    )
    assert p.dataset("digits").filter.min_contrast == 0.1 and p.dataset("pets").filter.min_contrast == 0.0
    assert p.dataset("pets").train.dataset == "pets@working"  # not the digits default
    with pytest.raises(ConfigError, match="has 2 datasets \\(digits, pets\\); name the one you mean"):
        p.only()
    with pytest.raises(ConfigError, match=r"no settings for dataset 'cars'.*run `synthreg init cars`"):
        p.dataset("cars")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"recipe": "r.yaml", "datasets": {}}, "top-level recipe beside `datasets:`"),
        ({"datasets": {"Pets": {"recipe": "r", "generator": "g"}}}, "dataset name 'Pets' must be"),
        (
            {"datasets": {"pets": {"recipe": "r", "generator": "g", "train": {"dataset": "digits@1.0.0"}}}},
            "datasets.pets.train.dataset names 'digits'",
        ),
    ],
)
def test_params_that_mix_forms_or_names_are_refused(data: dict, message: str):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        Params.model_validate(data)


# --- synthreg init ----------------------------------------------------------------------------------------


def test_init_writes_a_recipe_a_pack_and_a_params_entry_that_validate(tmp_path: Path):
    ws = repo_workspace(tmp_path)
    before = (ws / "params.yaml").read_text()
    res = runner.invoke(app, [*INIT, "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert "wrote recipes/pets.yaml" in res.output and "next: dvc repro validate@pets" in res.output
    recipe = load_recipe(ws / "recipes/pets.yaml")
    assert (recipe.dataset, recipe.identities, recipe.attributes) == (
        "pets",
        ["cat", "dog"],
        {"setting": ["indoor", "outdoor"]},
    )
    assert recipe.prompt_templates == ["a photo of a {identity}, {setting}"]
    pack = yaml.safe_load((ws / "policies/packs/pets.yaml").read_text())
    assert [r["id"] for r in pack["rules"]] == [
        "bias.setting.requested-balance",
        "bias.setting.observed-balance",
        "bias.setting.observed-collapse",
    ]
    p = load_params(ws / "params.yaml")
    assert p.names == ["digits", "pets"]
    assert p.dataset("pets").validate_.packs == ["policies/packs/default.yaml", "policies/packs/pets.yaml"]
    assert p.dataset("pets").generator == "models/pets-sd"
    # The digits entry and every comment are as they were: init only added lines.
    after = (ws / "params.yaml").read_text()
    assert after.startswith(before.rstrip("\n")) and "  pets:\n" in after[len(before.rstrip()) :]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "digits"}, "dataset 'digits' already exists in params.yaml's datasets"),
        ({"name": "../x"}, "dataset name '../x' must be 1-64 lowercase letters"),
        ({"name": "pets", "plant": "recipes/pets.yaml"}, "recipes/pets.yaml already exists"),
        ({"name": "pets", "plant": "data/pets/candidates/x"}, "data/pets already exists"),
        ({"name": "pets", "attribute": "setting"}, "--attribute 'setting' is not NAME=VALUE,VALUE"),
        ({"name": "pets", "prompt": "a {colour} {identity}"}, "uses ['colour'], which is neither"),
        ({"name": "yes"}, "dataset name 'yes' reads as a keyword, a YAML boolean"),
        ({"name": "working"}, "dataset name 'working' reads as a keyword"),
        ({"name": "pets", "replace": ("models/pets-sd", "../outside")}, "--generator ../outside escapes"),
        (
            {"name": "pets", "replace": ("CC-BY-4.0", "cc-by-4.0")},
            "not in policies/licenses.yaml; did you mean CC-BY-4.0?",
        ),
        ({"name": "pets", "replace": ("cat", "ca\nt")}, "--identity"),
        ({"name": "pets", "add": ["--attribute", "setting=a,b"]}, "--attribute setting is given twice"),
        ({"name": "pets", "replace": ("setting=indoor,outdoor", "setting=a,,b")}, "with no empty value"),
        ({"name": "pets", "plant": "recipes"}, "recipes is not a folder"),
    ],
)
def test_init_refuses_a_taken_or_unsafe_name_and_writes_nothing(tmp_path: Path, change: dict, message: str):
    ws = repo_workspace(tmp_path)
    if "plant" in change:
        if change["plant"] == "recipes":
            shutil.rmtree(ws / "recipes")
        (ws / change["plant"]).parent.mkdir(parents=True, exist_ok=True)
        (ws / change["plant"]).write_text("mine\n")
    before = files(ws)
    args = [a if a != "pets" else change["name"] for a in INIT]
    if "attribute" in change:
        args[args.index("setting=indoor,outdoor")] = change["attribute"]
    if "prompt" in change:
        args += ["--prompt", change["prompt"]]
    if "replace" in change:
        args = [change["replace"][1] if a == change["replace"][0] else a for a in args]
    args += change.get("add", [])
    res = runner.invoke(app, [*args, "-w", str(ws)])
    assert res.exit_code == 1, res.output
    assert message in " ".join(res.output.split()), res.output
    assert files(ws) == before


def test_init_adopts_a_recipe_written_by_hand(tmp_path: Path):
    """A recipe written by hand is not a dead end: init --recipe makes its pack and params entry."""
    ws = repo_workspace(tmp_path)
    recipe = yaml.safe_load((REPO / "recipes/digits.yaml").read_text()) | {"dataset": "three"}
    write_yaml(ws / "recipes/three.yaml", recipe)
    res = runner.invoke(app, ["init", "three", "--recipe", "recipes/three.yaml", "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert "wrote recipes/three.yaml" not in res.output and "wrote policies/packs/three.yaml" in res.output
    entry = load_params(ws / "params.yaml").dataset("three")
    assert (entry.recipe, entry.generator) == ("recipes/three.yaml", "generators/tiny_digits/model")
    res = runner.invoke(app, ["init", "four", "--recipe", "recipes/three.yaml", "-w", str(ws)])
    assert res.exit_code == 1 and "recipes/three.yaml is already datasets.three's recipe" in res.output
    write_yaml(ws / "recipes/five.yaml", recipe)  # a recipe of another dataset under a new name
    res = runner.invoke(app, ["init", "four", "--recipe", "recipes/five.yaml", "-w", str(ws)])
    assert res.exit_code == 1 and "is for dataset 'three', not 'four'" in res.output


def test_init_edits_a_flow_style_params_file_and_refuses_a_duplicate_key(tmp_path: Path):
    ws = repo_workspace(tmp_path)
    (ws / "params.yaml").write_text(
        "generate: {batch_size: 8}\ndatasets: {digits: {recipe: recipes/digits.yaml, generator: g}}\n"
    )
    res = runner.invoke(app, [*INIT, "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert load_params(ws / "params.yaml").names == ["digits", "pets"]
    (ws / "params.yaml").write_text("datasets: {}\ndatasets: {}\n")
    (ws / "recipes/pets.yaml").unlink()
    (ws / "policies/packs/pets.yaml").unlink()
    before = files(ws)
    res = runner.invoke(app, [*INIT, "-w", str(ws)])
    assert res.exit_code == 1 and "cannot be edited in place" in res.output, res.output
    assert files(ws) == before


def test_train_working_means_the_settings_own_dataset():
    from registry.cli.pipeline import _train_settings

    p = Params.model_validate(
        {
            "datasets": {
                "digits": {"recipe": "a", "generator": "g"},
                "other": {"recipe": "b", "generator": "h"},
            }
        }
    )
    assert _train_settings(p, "other", "working", "params.yaml")[1] == "other@working"
    with pytest.raises(ConfigError, match=r"--dataset digits@1\.0\.0 is dataset digits, but the train"):
        _train_settings(p, "other", "digits@1.0.0", "params.yaml")


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"two": {"recipe": "recipes/digits.yaml"}}, "datasets.two.recipe is datasets.digits.recipe too"),
        (
            {"two": {"train": {"metrics": "data/digits/train/metrics.json"}}},
            "is in the folder of dataset digits",
        ),
        ({"two": {"train": {"registered_model": "digits-classifier"}}}, "is another dataset's model name"),
    ],
)
def test_one_dataset_cannot_use_anothers_recipe_metrics_or_model(entries: dict, message: str):
    from pydantic import ValidationError

    datasets = {"digits": {"recipe": "recipes/digits.yaml", "generator": "g"}}
    for name, extra in entries.items():
        datasets[name] = {"recipe": f"recipes/{name}.yaml", "generator": "g"} | extra
    with pytest.raises(ValidationError, match=message):
        Params.model_validate({"datasets": datasets})


def test_init_refuses_a_one_dataset_params_file(tmp_path: Path):
    ws = repo_workspace(tmp_path)
    write_yaml(ws / "params.yaml", {"recipe": "recipes/digits.yaml"})
    before = files(ws)
    res = runner.invoke(app, [*INIT, "-w", str(ws)])
    assert res.exit_code == 1 and "move them under `datasets: {NAME: ...}` first" in res.output
    assert files(ws) == before


# --- packs that fit the dataset ---------------------------------------------------------------------------


def test_a_pack_measuring_an_attribute_the_recipe_lacks_is_refused(fresh: Path):
    recipe = yaml.safe_load((fresh / RECIPE).read_text())
    recipe["attributes"] = {"colour": ["black", "white"]}
    recipe["prompt_templates"] = ["a {colour} digit {identity}"]
    write_yaml(fresh / RECIPE, recipe)
    with pytest.raises(PolicyError) as e:
        validate_ws(fresh)
    assert str(e.value) == (
        "policy pack digits.yaml rule bias.requested-balance measures attribute 'stroke', which the recipe "
        "of digits does not declare (it declares: colour); use a pack made for this dataset (`synthreg init` "
        "writes one) or drop the rule"
    )


# --- leakage: not applicable, verified, or declared -------------------------------------------------------


def _leakage(ws: Path) -> tuple[str, str, dict]:
    [r] = [r for r in validate_ws(ws).results if r.rule_id == "leakage.eval-split"]
    return r.status, r.message, r.evidence.details


def test_leakage_without_an_evaluation_source_is_not_applicable(fresh: Path):
    recipe = yaml.safe_load((fresh / RECIPE).read_text())
    recipe["sources"] = [s for s in recipe["sources"] if s["role"] != "evaluation"]
    write_yaml(fresh / RECIPE, recipe)
    status, message, _ = _leakage(fresh)
    assert status == "not applicable"
    assert message.startswith("not applicable: the recipe declares no evaluation source")


def test_a_declared_digest_is_checked_against_its_files_when_they_are_at_hand(fresh: Path):
    import hashlib

    held_out = fresh / "real" / "held-out.npy"
    held_out.parent.mkdir()
    held_out.write_bytes(b"the held-out split")
    recipe = yaml.safe_load((fresh / RECIPE).read_text())
    [evaluation] = [s for s in recipe["sources"] if s["role"] == "evaluation"]
    evaluation["path"] = "real/held-out.npy"
    write_yaml(fresh / RECIPE, recipe)
    status, message, details = _leakage(fresh)  # the recipe's digest is not this file's
    assert status == "fail" and "is not what its files at real/held-out.npy hash to" in message
    assert details["digest_mismatch"][0]["found"] == hashlib.sha256(b"the held-out split").hexdigest()

    evaluation["digest"] = hashlib.sha256(b"the held-out split").hexdigest()
    write_yaml(fresh / RECIPE, recipe)
    status, message, details = _leakage(fresh)
    assert status == "pass" and f"checked against their files: {evaluation['name']}" in message
    assert "declared, not verified" in message  # the training source has no files at hand
    assert details["verified"] == [evaluation["name"]]


# --- recipe edits between generation and release ------------------------------------------------------------


def test_recipe_changes_tell_declarations_from_what_shapes_images():
    before = load_recipe(REPO / "recipes/digits.yaml")
    data = before.model_dump(mode="json")
    data["generator"]["training_sources"][0]["digest"] = "0" * 64
    data["licence"] = "CC-BY-SA-4.0"
    data["steps"] = 21
    data["generator"]["name"] = "renamed"
    after = type(before).model_validate(data)
    assert recipe_changes(before, after) == (
        ["generator.name", "steps"],
        ["generator.training_sources", "licence"],
    )


def test_a_declaration_edited_after_generation_is_released_and_named(fresh: Path, base: Built):
    recipe = yaml.safe_load((fresh / RECIPE).read_text())
    recipe["description"] = "edited after generation"
    recipe["sources"][0]["url"] = "https://example.org/moved"
    write_yaml(fresh / RECIPE, recipe)
    validate_ws(fresh)
    commit_all(fresh, "describe the data better")
    record = release("digits", "1.0.0", fresh, key=base.key)
    assert record.recipe_changes == ["description", "sources"]
    assert record.recipe is not None and record.recipe.description == "edited after generation"
    card = (fresh / "releases/digits/1.0.0/README.md").read_text()
    assert "changed between generation and release (declarations only; no image changed): description" in card


def test_a_shaping_edit_is_refused_with_the_command_that_regenerates(fresh: Path, base: Built):
    recipe = yaml.safe_load((fresh / RECIPE).read_text())
    recipe["steps"] += 1
    write_yaml(fresh / RECIPE, recipe)
    commit_all(fresh, "more steps")
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", fresh, key=base.key)
    assert "in what shapes them (steps); run `dvc repro validate@digits`" in str(e.value)


def test_release_names_the_setting_that_differs_from_what_validated(fresh: Path, base: Built):
    params = yaml.safe_load((fresh / "params.yaml").read_text())
    params["datasets"]["digits"]["validate"]["packs"] = ["policies/packs/default.yaml"]
    write_yaml(fresh / "params.yaml", params)
    commit_all(fresh, "drop the digits pack")
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", fresh, key=base.key)
    assert str(e.value) == (
        "the policy report was made with packs ['policies/packs/default.yaml', "
        "'policies/packs/digits.yaml'], but params.yaml's datasets.digits.validate names "
        "['policies/packs/default.yaml']; run `synthreg validate` (or `dvc repro`) with the dataset's "
        "settings, then release"
    )


def test_generate_says_already_complete_only_for_its_own_images(fresh: Path):
    from generators.generate import generate
    from registry.records.dataset import GenerateParams

    params = GenerateParams(batch_size=6, shard_size=6, threads=1)
    candidates = "data/digits/candidates"
    made = json.loads((fresh / candidates / "generation.json").read_text())
    recipe = yaml.safe_load((fresh / RECIPE).read_text())
    recipe["licence"] = "CC-BY-SA-4.0"  # a declaration: no new images
    write_yaml(fresh / RECIPE, recipe)
    res = generate(Path(RECIPE), fresh, candidates, params)
    assert (res.generated, res.declarations_changed) == (0, ("licence",))

    recipe["generator"]["name"] = "tiny-digits-renamed"  # in every image's marking; not in the plan digest
    write_yaml(fresh / RECIPE, recipe)
    res = generate(Path(RECIPE), fresh, candidates, params)
    assert res.generated == 12
    remade = json.loads((fresh / candidates / "generation.json").read_text())
    assert remade["recipe"]["generator"]["name"] == "tiny-digits-renamed"
    assert made["recipe"]["generator"]["name"] == "tiny-digits"


def test_a_recipe_is_not_run_against_another_datasets_folders(fresh: Path):
    params = yaml.safe_load((fresh / "params.yaml").read_text())
    params["datasets"]["pets"] = {"recipe": "recipes/pets.yaml", "generator": "models/pets-sd"}
    write_yaml(fresh / "params.yaml", params)
    res = runner.invoke(app, ["validate", str(FILTERED), "--out", "data/pets/policy", "-w", str(fresh)])
    assert res.exit_code == 1
    assert "report folder data/pets/policy is the folder of dataset pets" in " ".join(res.output.split())
    assert not (fresh / "data/pets").exists()
