"""Reproducing one sample from its manifest record: library API and ``synthreg reproduce``.

A module fixture generates 2 digits x 2 images once. The module runs torch on one thread: on a busy
2-core machine that is several times faster than two, and the images are the same.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded

import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from generators.generate import generate
from generators.reproduce import reproduce
from registry.cli import app
from registry.core.digests import sha256_bytes
from registry.core.errors import GeneratorError, ManifestError, ReproduceError
from registry.records.dataset import GenerateParams
from registry.store import manifest as mf
from registry.store.shards import read_members

REPO = Path(__file__).resolve().parents[2]
MANIFEST = "data/digits/candidates/manifest.parquet"
WEIGHTS = "model/unet/diffusion_pytorch_model.safetensors"
UNKNOWN = "digits-9-000042-deadbeef"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """A workspace with the tiny-digits model at ``model/`` and a small run in data/digits/candidates.

    Tests that only read it share it; tests that change it take a copy (``ws``).
    """
    ws = tmp_path_factory.mktemp("reproduce").resolve()
    shutil.copytree(REPO / "generators" / "tiny_digits" / "model", ws / "model")
    recipe = yaml.safe_load((REPO / "recipes" / "digits.yaml").read_text())
    recipe["generator"]["path"] = "model"
    recipe.update(identities=["2", "6"], images_per_identity=2, steps=8)
    (ws / "recipes").mkdir()
    (ws / "recipes" / "digits.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    generate(Path("recipes/digits.yaml"), ws, params=GenerateParams(batch_size=4, threads=1))
    return ws


@pytest.fixture
def ws(generated, tmp_path) -> Path:
    dst = (tmp_path / "ws").resolve()
    shutil.copytree(generated, dst)
    return dst


@pytest.fixture(scope="module")
def records(generated) -> list:
    return mf.records(mf.read_table(generated / MANIFEST))


def two_samples(records) -> list:
    """The first sample of each identity."""
    return [records[0], next(r for r in records if r.identity != records[0].identity)]


def test_reproduce_finds_the_manifest_and_matches(generated, records):
    for rec in two_samples(records):
        res = reproduce(rec.sample_id, generated)
        assert res.match
        assert res.sample_id == rec.sample_id
        assert res.manifest == generated / MANIFEST
        assert res.recorded_sha256 == res.reproduced_sha256 == rec.image_sha256
        # ... which is also the digest of the image actually stored in the shard.
        assert sha256_bytes(read_members(generated / rec.shard)[rec.member]) == rec.image_sha256


def test_reproduce_with_an_explicit_manifest(generated, records):
    rec = records[-1]
    res = reproduce(rec.sample_id, generated, manifest=MANIFEST)
    assert res.match and res.manifest == generated / MANIFEST
    assert reproduce(rec.sample_id, generated, manifest=Path(MANIFEST)).match


def test_reproduce_also_searches_filtered_manifests(ws, records):
    """A sample only in data/*/filtered is found there (the candidates manifest is gone)."""
    rec = records[1]
    filtered = ws / "data" / "digits" / "filtered"
    filtered.mkdir()
    (ws / MANIFEST).rename(filtered / "manifest.parquet")
    res = reproduce(rec.sample_id, ws)
    assert res.match and res.manifest == filtered / "manifest.parquet"


def test_unknown_sample_is_an_error_naming_it(generated):
    with pytest.raises(ReproduceError, match=re.escape(repr(UNKNOWN))):
        reproduce(UNKNOWN, generated)
    with pytest.raises((ReproduceError, ManifestError), match=re.escape(UNKNOWN)):
        reproduce(UNKNOWN, generated, manifest=MANIFEST)


def test_a_missing_manifest_is_an_error(generated, records):
    with pytest.raises(ManifestError, match="does not exist"):
        reproduce(records[0].sample_id, generated, manifest="data/digits/nowhere/manifest.parquet")


def test_changed_weights_are_refused_against_the_recorded_pin(ws, records):
    rec = records[0]
    weights = ws / WEIGHTS
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0x01  # tensor data: the safetensors header is at the start
    weights.write_bytes(bytes(raw))
    with pytest.raises(GeneratorError, match="pins") as e:
        reproduce(rec.sample_id, ws)
    assert rec.weights_digest in str(e.value)


def test_a_record_that_does_not_match_its_image_is_reported(ws, records):
    """A manifest whose recorded digest is not what the request makes: no match (not an exception)."""
    rec = records[2]
    path = ws / MANIFEST
    table = mf.read_table(path)
    col = table["image_sha256"].to_pylist()
    col[rec.index] = "0" * 64
    field = mf.SCHEMA.field("image_sha256")
    table = table.set_column(table.schema.get_field_index("image_sha256"), field, pa.array(col, field.type))
    mf.write_table(table, path)

    res = reproduce(rec.sample_id, ws)
    assert not res.match
    assert (res.recorded_sha256, res.reproduced_sha256) == ("0" * 64, rec.image_sha256)

    out = CliRunner().invoke(app, ["reproduce", rec.sample_id, "--workspace", str(ws)])
    assert out.exit_code == 1, out.output
    assert f"reproduced sha256 {rec.image_sha256}" in out.output
    assert any(line.startswith("error:") and "bit-identically" in line for line in out.output.splitlines())


# --- the command line ----------------------------------------------------------------------------


def test_cli_reproduce(generated, records):
    rec = records[1]
    out = CliRunner().invoke(app, ["reproduce", rec.sample_id, "--workspace", str(generated)])
    assert out.exit_code == 0, out.output
    assert f"recorded   sha256 {rec.image_sha256}" in out.output
    assert f"reproduced sha256 {rec.image_sha256}" in out.output
    assert f"{rec.sample_id}: bit-identical" in out.output.splitlines()

    out = CliRunner().invoke(
        app, ["reproduce", rec.sample_id, "--manifest", MANIFEST, "--workspace", str(generated)]
    )
    assert out.exit_code == 0, out.output
    assert "bit-identical" in out.output


def test_cli_unknown_sample(generated):
    out = CliRunner().invoke(app, ["reproduce", UNKNOWN, "--workspace", str(generated)])
    assert out.exit_code == 1, out.output
    errors = [line for line in out.output.splitlines() if line.startswith("error:")]
    assert errors and UNKNOWN in errors[0]
    assert "Traceback" not in out.output
