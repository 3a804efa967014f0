from generators.plan import derive_seed, plan
from registry.models import Recipe
from tests.conftest import small_recipe


def test_plan_is_deterministic_and_covers_the_grid():
    recipe = Recipe.model_validate(small_recipe())
    a, b = plan(recipe), plan(recipe)
    assert a == b
    assert len(a) == 3 * 4
    assert len({r.sample_id for r in a}) == len(a)
    assert len({r.seed for r in a}) == len(a)
    for identity in recipe.identities:
        strokes = [r.attributes["stroke"] for r in a if r.identity == identity]
        assert strokes.count("thin") == strokes.count("bold") == 2
    first = a[0]
    assert first.prompt == "a handwritten digit 1 with a thin stroke"
    assert first.sample_id.startswith("digits-1-000000-")
    assert first.seed == derive_seed(recipe.seed, "1", 0)


def test_adding_identities_or_images_keeps_existing_samples():
    small = plan(Recipe.model_validate(small_recipe()))
    bigger = plan(Recipe.model_validate(small_recipe(identities=["1", "4", "7", "9"], images_per_identity=6)))
    by_id = {r.sample_id: r for r in bigger}
    for r in small:
        assert by_id[r.sample_id].seed == r.seed
        assert by_id[r.sample_id].prompt == r.prompt


def test_changing_what_shapes_an_image_changes_its_id():
    base = plan(Recipe.model_validate(small_recipe()))[0]
    assert plan(Recipe.model_validate(small_recipe(steps=9)))[0].sample_id != base.sample_id
    assert plan(Recipe.model_validate(small_recipe(seed=1)))[0].sample_id != base.sample_id


def test_templates_cycle_after_the_grid():
    recipe = Recipe.model_validate(small_recipe(prompt_templates=["a {identity}", "b {stroke}"]))
    prompts = [r.prompt for r in plan(recipe) if r.identity == "1"]
    assert prompts == ["a 1", "a 1", "b thin", "b bold"]
