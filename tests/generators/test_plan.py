from generators.plan import derive_seed, plan
from registry.records.dataset import Recipe
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


def test_request_at_and_the_streamed_plan_digest_match_the_whole_plan(tmp_path):
    """A plan is rebuilt shard by shard on workers and digested without being held in memory:
    both must equal what the whole list gives, or a resumed run would not recognise its own plan."""
    from types import SimpleNamespace

    from generators.generate import plan_job
    from generators.plan import iter_plan, request_at
    from registry.core.digests import sha256_json
    from registry.records.dataset import GenerateParams

    recipe = Recipe.model_validate(small_recipe())
    whole = plan(recipe)
    assert [request_at(recipe, i) for i in range(len(whole))] == whole
    assert list(iter_plan(recipe, 5, 9)) == whole[5:9]

    # plan_job asks the backend only for its name (the marking it checks), digests and check()
    spec = SimpleNamespace(name="fake", weights_digest="a" * 64, scheduler_config_digest="b" * 64)
    backend = SimpleNamespace(spec=spec, check=lambda req: None)
    params = GenerateParams(batch_size=3, shard_size=7)
    job = plan_job(tmp_path, tmp_path / "out", recipe, params, backend)
    assert job.plan_digest == sha256_json(
        {
            "requests": [r.model_dump() for r in whole],
            "weights": "a" * 64,
            "scheduler": "b" * 64,
            "batch_size": 3,
            "shard_size": 7,
        }
    )
    assert job.shards == 2 and job.shard_batches(1) == [(3, 7, 10), (4, 10, 12)]
