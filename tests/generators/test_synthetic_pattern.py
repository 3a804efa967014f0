"""The synthetic-pattern load-test backend: deterministic, no model, the same records as any backend,
and named so that nobody mistakes its output for data."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from generators.generate import generate
from registry.cli import app
from registry.records.dataset import LOAD_TEST_WARNING, GenerateParams
from tests.conftest import REPO, write_yaml

PARAMS = GenerateParams(batch_size=5, shard_size=10)


def load_test_recipe(**overrides) -> dict:
    recipe = yaml.safe_load((REPO / "recipes" / "load-test.yaml").read_text())
    recipe.update(identities=["a", "b"], images_per_identity=8)
    recipe.update(overrides)
    return recipe


@pytest.fixture
def pattern_ws(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "generators/synthetic_pattern", tmp_path / "generators/synthetic_pattern")
    write_yaml(tmp_path / "recipe.yaml", load_test_recipe())
    write_yaml(tmp_path / "params.yaml", {"recipe": "recipe.yaml"})
    return tmp_path


def rows(out: Path) -> list[tuple]:
    return duckdb.sql(
        f"SELECT sample_id, image_sha256, phash, shard, member FROM '{out}/manifest.parquet' ORDER BY index"
    ).fetchall()


def test_records_name_the_load_test_and_digest_config_and_source(pattern_ws: Path):
    res = generate(Path("recipe.yaml"), pattern_ws, "data/a", PARAMS)
    assert (res.images, res.shards, res.backend) == (16, 2, "synthetic-pattern")
    meta = duckdb.sql(
        f"SELECT DISTINCT generator_backend, pipeline_class, generator_licence, weights_digest, scheduler, "
        f"device FROM '{pattern_ws}/data/a/manifest.parquet'"
    ).fetchall()
    config = pattern_ws / "generators/synthetic_pattern/pattern.json"
    source = REPO / "generators/backends/synthetic_pattern.py"
    listing = (
        f"{hashlib.sha256(config.read_bytes()).hexdigest()}  pattern.json\n"
        f"{hashlib.sha256(source.read_bytes()).hexdigest()}  synthetic_pattern.py\n"
    )
    digest = hashlib.sha256(listing.encode()).hexdigest()
    assert meta == [
        ("synthetic-pattern", "LoadTestPattern", "LicenseRef-synthreg-load-test", digest, "none", "cpu")
    ]
    assert res.weights_digest == digest
    # Editing the config changes the digest: a pinned recipe would refuse the changed algorithm.
    config.write_text(config.read_text().replace('"noise_std": 0.12', '"noise_std": 0.2'))
    assert generate(Path("recipe.yaml"), pattern_ws, "data/b", PARAMS).weights_digest != digest


def test_images_depend_only_on_the_request(pattern_ws: Path):
    generate(Path("recipe.yaml"), pattern_ws, "data/a", PARAMS)
    generate(Path("recipe.yaml"), pattern_ws, "data/b", GenerateParams(batch_size=3, shard_size=10))
    a, b = rows(pattern_ws / "data/a"), rows(pattern_ws / "data/b")
    assert [r[:3] for r in a] == [r[:3] for r in b]
    for name in ("shard-00000.tar", "shard-00001.tar"):
        assert (pattern_ws / "data/a/shards" / name).read_bytes() == (
            pattern_ws / "data/b/shards" / name
        ).read_bytes()
    assert len({r[1] for r in a}) == 16  # every image differs


def test_patterns_vary_by_identity_and_attributes(pattern_ws: Path):
    from generators.backends import load_backend
    from generators.plan import plan
    from registry.records.config import load_recipe

    recipe = load_recipe(pattern_ws / "recipe.yaml")
    backend = load_backend(recipe.generator, pattern_ws)
    reqs = plan(recipe)
    images = backend.generate(reqs)
    assert images[0].shape == (16, 16) and images[0].dtype == np.uint8
    assert images[0].std() / 255 > 0.1  # passes the filter's contrast check
    same_req = backend.generate([reqs[0]])[0]
    assert np.array_equal(images[0], same_req)
    # the noiseless pattern differs between identities (a vs b) for the same attributes
    a, b = reqs[0], reqs[8]
    assert a.attributes == b.attributes and a.identity != b.identity
    backend.noise = 0.0
    assert not np.array_equal(backend.draw(a), backend.draw(b))


def test_cli_warns_that_the_output_is_not_data(pattern_ws: Path):
    res = CliRunner().invoke(app, ["generate", "-w", str(pattern_ws), "--out", "data/c"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == f"warning: {LOAD_TEST_WARNING}"


def test_refuses_a_size_it_cannot_draw(pattern_ws: Path):
    write_yaml(pattern_ws / "recipe.yaml", load_test_recipe(size=4))
    res = CliRunner().invoke(app, ["generate", "-w", str(pattern_ws), "--out", "data/c"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        "error: synthetic-pattern draws 8 to 512 pixels a side; got width 4: change the recipe's size"
    )
    assert not (pattern_ws / "data/c").exists()


def test_refuses_a_folder_without_its_config(pattern_ws: Path):
    (pattern_ws / "generators/synthetic_pattern/pattern.json").unlink()
    res = CliRunner().invoke(app, ["generate", "-w", str(pattern_ws), "--out", "data/c"])
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"error: {pattern_ws / 'generators/synthetic_pattern'} has no pattern.json, so it is not a "
        "synthetic-pattern folder; point generator.path at generators/synthetic_pattern"
    )


def test_licence_refuses_training_on_load_test_images(pattern_ws: Path):
    from generators.filter import filter_manifest
    from policies.engine import validate

    generate(Path("recipe.yaml"), pattern_ws, "data/cand", PARAMS)
    res = filter_manifest("data/cand", pattern_ws, "data/filt")
    assert res.total == 16
    recipe = load_test_recipe()
    recipe["intended_use"]["purposes"] = ["research", "training-a-model"]
    write_yaml(pattern_ws / "train.yaml", recipe)
    for part in ("policies/packs/default.yaml", "policies/licenses.yaml"):
        (pattern_ws / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / part, pattern_ws / part)
    report = validate(
        "data/filt",
        pattern_ws,
        "train.yaml",
        ["policies/packs/default.yaml"],
        licences="policies/licenses.yaml",
    )
    failed = {r.rule_id: r for r in report.results if r.status == "fail"}
    licence_rules = [k for k in failed if k.startswith("licen")]
    assert licence_rules, [(r.rule_id, r.status, r.message) for r in report.results]
    assert "training-a-model" in failed[licence_rules[0]].message


def test_the_dataset_card_of_a_load_test_says_it_is_not_data():
    from registry.exports import render_card
    from registry.records.release import GeneratorUse
    from tests.registry.test_exports import make_release, make_report

    report = make_report()
    plain = render_card(make_release(report), report)
    assert LOAD_TEST_WARNING not in plain
    pattern = GeneratorUse(
        name="synthetic-pattern",
        backend="synthetic-pattern",
        weights_digest="c" * 64,
        licence="LicenseRef-synthreg-load-test",
        pipeline_class="LoadTestPattern",
        scheduler="none",
        images=1000,
    )
    card = render_card(make_release(report, generators=[pattern]), report)
    summary = card.split("### Dataset Summary\n\n", 1)[1]
    assert summary.startswith(f"> **{LOAD_TEST_WARNING}**\n")


def test_a_batch_is_the_bytes_and_rows_of_the_image_by_image_path(pattern_ws: Path):
    """Issue 22: ``run_batch`` encodes once and splices the marking in, hashes a batch's pixels at once
    and builds its rows as columns. Its PNGs and rows are exactly what the image-by-image path made
    before: Pillow with the marking in a PngInfo, imagehash over the decoded PNG, a SampleRecord a row."""
    import io

    import imagehash
    from PIL import Image, PngImagePlugin

    from generators.backends import load_backend
    from generators.plan import plan
    from generators.shard import library_versions, run_batch
    from registry.core.digests import sha256_bytes
    from registry.records.config import load_recipe
    from registry.records.dataset import SampleRecord
    from registry.store import manifest as mf
    from registry.store.marking import XMP_KEYWORD, Marking, xmp_packet

    recipe = load_recipe(pattern_ws / "recipe.yaml")
    backend = load_backend(recipe.generator, pattern_ws)
    spec, versions, shard = backend.spec, library_versions(), "data/a/shards/shard-00000.tar"
    requests = plan(recipe)[3:9]
    table = run_batch(backend, requests, 1, recipe, shard, versions)

    records, pngs = [], []
    for req, pixels in zip(requests, backend.generate(requests), strict=True):
        info = PngImagePlugin.PngInfo()
        info.add_itxt(
            XMP_KEYWORD, xmp_packet(Marking(req.sample_id, spec.name, spec.weights_digest)), zip=False
        )
        buf = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buf, format="PNG", pnginfo=info)
        png = buf.getvalue()
        pngs.append(png)
        records.append(
            SampleRecord(
                dataset=recipe.dataset,
                **req.model_dump(),
                generator_name=spec.name,
                generator_backend=spec.backend,
                generator_source=spec.source,
                weights_digest=spec.weights_digest,
                generator_licence=spec.licence,
                pipeline_class=spec.pipeline_class,
                scheduler=spec.scheduler,
                scheduler_config_digest=spec.scheduler_config_digest,
                image_sha256=sha256_bytes(png),
                phash=str(imagehash.phash(Image.open(io.BytesIO(png)))),
                shard=shard,
                member=f"{req.sample_id}.png",
                batch=1,
                batch_size=len(requests),
                library_versions=versions,
                device=backend.device,
            )
        )
    assert table["png"].to_pylist() == pngs
    assert table.drop_columns(["png"]).equals(mf.to_table(records))
