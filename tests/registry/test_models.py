from pathlib import Path

import pytest

from registry.core.errors import ConfigError, RecipeError
from registry.records.config import load_params, load_recipe
from tests.conftest import REPO, small_recipe, write_yaml


def test_default_recipe_and_params_load():
    recipe = load_recipe(REPO / "recipes" / "digits.yaml")
    assert recipe.dataset == "digits"
    assert len(recipe.identities) * recipe.images_per_identity == 1000
    params = load_params(REPO / "params.yaml")
    assert params.recipe == "recipes/digits.yaml"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"colour": "red"}, "  colour: unknown key"),
        ({"images_per_identity": -5}, "  images_per_identity: Input should be greater than 0 (got -5)"),
        ({"dataset": "../evil"}, "  dataset: Value error, dataset name '../evil' must be 1-64 lowercase"),
        ({"dataset": "a/b"}, "  dataset: Value error, dataset name 'a/b' must be"),
        ({"identities": ["1", "1"]}, "  identities: Value error, identities listed more than once: ['1']"),
        ({"prompt_templates": ["a {colour} digit"]}, "uses ['colour'], which is neither 'identity'"),
        ({"attributes": {"stroke": []}}, "attribute 'stroke' needs one or more distinct values"),
        (
            {"sources": [{"name": "s", "licence": "MIT", "role": "conditioning", "identities": ["9"]}]},
            "source 's' names identities ['9'] that the recipe does not generate",
        ),
        (
            {"sources": [{"name": "s", "licence": "MIT", "role": "filtering", "identities": ["1"]}]},
            "source 's' has role 'filtering' but lists identities",
        ),
        (
            {"sources": [{"name": "s", "licence": "MIT", "identities": []}]},
            "source 's' lists no identities; omit `identities` to mean all",
        ),
    ],
)
def test_malformed_recipe_names_the_problem(tmp_path: Path, change: dict, expected: str):
    path = write_yaml(tmp_path / "bad.yaml", small_recipe(**change))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert str(e.value).startswith(f"recipe {path} is invalid:")
    assert expected in str(e.value)


def test_unknown_nested_key_is_refused(tmp_path: Path):
    recipe = small_recipe()
    recipe["generator"]["weigths_digest"] = "0" * 64
    with pytest.raises(RecipeError, match=r"generator.weigths_digest: unknown key"):
        load_recipe(write_yaml(tmp_path / "bad.yaml", recipe))


def test_recipe_that_is_not_yaml_or_missing(tmp_path: Path):
    (tmp_path / "r.yaml").write_text("dataset: [unclosed")
    with pytest.raises(RecipeError, match="is not valid YAML"):
        load_recipe(tmp_path / "r.yaml")
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_params_typo_is_an_error(tmp_path: Path):
    write_yaml(tmp_path / "params.yaml", {"filter": {"identity_treshold": 0.5}})
    with pytest.raises(ConfigError, match=r"filter.identity_treshold: unknown key"):
        load_params(tmp_path / "params.yaml")
