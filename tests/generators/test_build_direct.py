"""benchmarks/build_direct.py, which makes bench_e2e.py's 10,000,000-image candidates, writes what
``synthreg generate`` writes: the same shards, manifest and generation.json, byte for byte. Its figures
stand for generate's output only while this holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.build_direct import build
from generators.generate import generate
from registry.records.dataset import GenerateParams
from registry.store import audit
from tests.conftest import REPO, write_yaml
from tests.generators.test_synthetic_pattern import load_test_recipe

# Batches that do not line up with shards, a short last shard, and more shards than workers.
PARAMS = {"batch_size": 7, "shard_size": 20, "min_shards": 1}


def workspace(root: Path, form: str = "one dataset") -> Path:
    shutil.copytree(REPO / "generators/synthetic_pattern", root / "generators/synthetic_pattern")
    write_yaml(root / "recipe.yaml", load_test_recipe(identities=["a", "b", "c"], images_per_identity=30))
    if form == "one dataset":
        params = {"recipe": "recipe.yaml", "generate": PARAMS}
    else:  # as bench_e2e.py writes it
        entry = {"recipe": "recipe.yaml", "generator": "generators/synthetic_pattern"}
        params = {"generate": PARAMS, "datasets": {"load-test": entry}}
    write_yaml(root / "params.yaml", params)
    return root


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("form", ["one dataset", "datasets"])
def test_build_direct_writes_generates_bytes(tmp_path: Path, form: str):
    made = workspace(tmp_path / "generate")
    generate(Path("recipe.yaml"), made, None, GenerateParams(**PARAMS))
    built = workspace(tmp_path / "direct", form)
    out = build(built, workers=2)

    expected = files(made / "data/load-test/candidates")
    assert sorted(expected) == sorted(files(out))
    assert len([k for k in expected if k.endswith(".tar")]) == 5  # 90 images, 20 a shard
    assert files(out) == expected  # shards, manifest.parquet, generation.json
    assert not (out / ".work").exists()

    made_event, built_event = (audit.load(ws).events for ws in (made, built))
    (made_event,), (built_event,) = made_event.values(), built_event.values()
    assert built_event.details["built_by"] == "benchmarks/build_direct.py"
    same = ("images", "generated", "plan_digest", "generator", "weights_digest", "manifest_sha256", "device")
    for key in same:
        assert built_event.details[key] == made_event.details[key], key
    summary = json.loads((out / "generation.json").read_text())
    assert summary["plan_digest"] == made_event.details["plan_digest"]


def test_build_direct_refuses_a_recipe_asking_for_c2pa(tmp_path: Path):
    ws = workspace(tmp_path)
    write_yaml(
        ws / "recipe.yaml",
        load_test_recipe(identities=["a"], images_per_identity=2, marking={"c2pa": True}),
    )
    with pytest.raises(SystemExit, match="C2PA"):
        build(ws, workers=1)
    assert not (ws / "data").exists()


def test_generate_writes_row_groups_of_whole_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Issue 22: a row group a shard made the footer of a 10,000,000-image manifest about 380 MB in the
    reader. Groups now hold whole shards, at least ``mf.ROW_GROUP`` rows each but the last."""
    import pyarrow.parquet as pq

    from registry.store import manifest as mf

    def sizes(ws: Path) -> list[int]:
        meta = pq.ParquetFile(ws / "data/load-test/candidates/manifest.parquet").metadata
        return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]

    one = workspace(tmp_path / "one")
    generate(Path("recipe.yaml"), one, None, GenerateParams(**PARAMS))
    assert sizes(one) == [90]  # five shards of 20 (the last 10), under 4,096 rows: one group
    monkeypatch.setattr(mf, "ROW_GROUP", 30)
    few = workspace(tmp_path / "few")
    generate(Path("recipe.yaml"), few, None, GenerateParams(**PARAMS))
    assert sizes(few) == [40, 40, 10]
    # More than MAX_GROUPS groups of ROW_GROUP rows: groups of whole shards of at least 90 / 2 rows.
    monkeypatch.setattr(mf, "MAX_GROUPS", 2)
    capped = workspace(tmp_path / "capped")
    generate(Path("recipe.yaml"), capped, None, GenerateParams(**PARAMS))
    assert sizes(capped) == [60, 30]
    for ws in (few, capped):
        assert pq.read_table(ws / "data/load-test/candidates/manifest.parquet").equals(
            pq.read_table(one / "data/load-test/candidates/manifest.parquet")
        )


def test_filter_writes_at_most_max_groups_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Issue 22: every row group's metadata is held by every reader (about 100 MB for the 2,440 groups of a
    10,000,000-row manifest). Filter writes groups of ``mf.group_rows`` rows, whatever its chunks: the
    same rows, fewer groups."""
    import pyarrow.parquet as pq

    from generators import filter as filtering
    from registry.store import manifest as mf

    def run(name: str) -> tuple[list[int], object]:
        ws = workspace(tmp_path / name)
        generate(Path("recipe.yaml"), ws, None, GenerateParams(**PARAMS))
        out = filtering.filter_manifest(ws / "data/load-test/candidates", ws, ws / "filtered").manifest
        meta = pq.ParquetFile(out).metadata
        return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)], pq.read_table(out)

    sizes, table = run("one")
    assert sizes == [90]  # under ROW_GROUP rows
    monkeypatch.setattr(filtering, "CHUNK", 7)  # chunks of 7 rows, each once a row group of its own
    monkeypatch.setattr(mf, "ROW_GROUP", 10)
    monkeypatch.setattr(mf, "MAX_GROUPS", 4)
    sizes, capped = run("capped")
    assert sizes == [23, 23, 23, 21]  # ceil(90 / 4) rows a group, the last the rest
    assert capped.equals(table)
