import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import duckdb
import pytest

from generators.generate import generate
from registry.core.errors import GeneratorError, RecipeError, WorkspaceError
from registry.records.dataset import GenerateParams
from tests.conftest import small_recipe, write_yaml

# 12 images -> 2 shards of 6, 6 batches of 2: every kill point below has batches after it, so the
# process cannot finish before the test sees the marker and kills it.
PARAMS = GenerateParams(batch_size=2, shard_size=6)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contents(out: Path) -> dict:
    rows = duckdb.sql(
        f"SELECT sample_id, image_sha256, shard, member FROM '{out}/manifest.parquet' ORDER BY index"
    ).fetchall()
    shards = {p.name: digest(p) for p in sorted((out / "shards").glob("*.tar"))}
    return {"rows": rows, "shards": shards}


def test_generate_writes_shards_and_a_complete_manifest(workspace: Path):
    res = generate(Path("recipe.yaml"), workspace, "data/small", PARAMS)
    assert (res.images, res.shards, res.generated) == (12, 2, 12)
    out = workspace / "data/small"
    assert sorted(p.name for p in out.iterdir()) == ["generation.json", "manifest.parquet", "shards"]
    row = duckdb.sql(f"SELECT * FROM '{out}/manifest.parquet' ORDER BY index LIMIT 1").to_arrow_table()
    row = {k: v[0] for k, v in row.to_pydict().items()}
    row["library_versions"] = dict(row["library_versions"])
    assert row["weights_digest"] == res.weights_digest
    assert row["prompt"] == "a handwritten digit 1 with a thin stroke"
    assert row["scheduler"] == "DDIMScheduler" and row["steps"] == 8 and row["guidance"] == 2.0
    assert row["shard"] == "data/small/shards/shard-00000.tar"
    assert row["library_versions"]["torch"].startswith("2.13") and row["device"] == "cpu"
    assert row["decision"] is None
    # Every image is in its shard under its member name, with the recorded digest.
    for sample_id, sha, shard, member in contents(out)["rows"]:
        with tarfile.open(workspace / shard) as tar, tar.extractfile(member) as f:
            data = f.read()
        assert hashlib.sha256(data).hexdigest() == sha, sample_id
    summary = json.loads((out / "generation.json").read_text())
    assert summary["generator"]["weights_digest"] == res.weights_digest

    again = generate(Path("recipe.yaml"), workspace, "data/small", PARAMS)
    assert again.generated == 0  # already complete: nothing regenerated


def test_changed_recipe_replaces_the_output(workspace: Path):
    generate(Path("recipe.yaml"), workspace, "data/small", PARAMS)
    write_yaml(workspace / "recipe.yaml", small_recipe(identities=["2"], images_per_identity=3))
    res = generate(Path("recipe.yaml"), workspace, "data/small", PARAMS)
    assert res.images == 3
    assert [p.name for p in (workspace / "data/small/shards").iterdir()] == ["shard-00000.tar"]


def _run_cli_until(workspace: Path, out: str, marker: str) -> None:
    """Start `synthreg generate` in a subprocess and SIGKILL it once ``marker`` files exist."""
    write_yaml(workspace / "params.yaml", {"generate": PARAMS.model_dump()})
    cmd = [
        sys.executable,
        "-m",
        "registry.cli",
        "generate",
        "recipe.yaml",
        "--out",
        out,
        "-w",
        str(workspace),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list((workspace / out).glob(marker)):
            assert proc.poll() is None, f"generate ended before the kill point: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "kill point never reached"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()  # reaps the process and closes its pipe


@pytest.mark.slow  # 30-50 s a case on 2 cores; CI runs it in .ci/run's slow list
@pytest.mark.parametrize(
    "marker",
    [".work/batches/batch-000000.parquet", ".work/parts/shard-00000.parquet", ".work/batches/batch-000004*"],
)
def test_sigkill_then_resume_equals_an_uninterrupted_run(workspace: Path, marker: str):
    generate(Path("recipe.yaml"), workspace, "data/clean", PARAMS)
    _run_cli_until(workspace, "data/killed", marker)
    assert not (workspace / "data/killed/manifest.parquet").exists()
    res = generate(Path("recipe.yaml"), workspace, "data/killed", PARAMS)
    assert res.generated < 12  # it resumed, it did not start over
    assert contents(workspace / "data/killed") == {
        "rows": [
            (i, s, sh.replace("data/clean", "data/killed"), m)
            for i, s, sh, m in contents(workspace / "data/clean")["rows"]
        ],
        "shards": contents(workspace / "data/clean")["shards"],
    }
    assert not (workspace / "data/killed/.work").exists()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"images_per_identity": -1}, RecipeError, "images_per_identity: Input should be greater than 0"),
        ({"identities": ["1", "11"]}, GeneratorError, "identity '11' is not known to generator tiny-digits"),
        ({"size": 32}, GeneratorError, "set the recipe's size to 16"),
        ({"dataset": "../x"}, RecipeError, "dataset name '../x' must be"),
    ],
)
def test_bad_recipe_leaves_no_output(workspace: Path, change: dict, error: type, message: str):
    write_yaml(workspace / "recipe.yaml", small_recipe(**change))
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate(Path("recipe.yaml"), workspace, None, PARAMS)
    assert not (workspace / "data").exists()


def test_missing_generator_folder_and_escaping_paths(workspace: Path):
    recipe = small_recipe()
    recipe["generator"]["path"] = "nowhere"
    write_yaml(workspace / "recipe.yaml", recipe)
    with pytest.raises(GeneratorError, match="generator folder nowhere does not exist"):
        generate(Path("recipe.yaml"), workspace, None, PARAMS)
    recipe["generator"]["path"] = "../../etc"
    write_yaml(workspace / "recipe.yaml", recipe)
    with pytest.raises(WorkspaceError, match=r"generator path ../../etc escapes the workspace"):
        generate(Path("recipe.yaml"), workspace, None, PARAMS)
    with pytest.raises(WorkspaceError, match="output folder /tmp escapes the workspace"):
        generate(Path("recipe.yaml"), workspace, "/tmp", PARAMS)
    assert not (workspace / "data").exists()


def test_shards_shrink_so_a_small_run_still_has_min_shards(workspace: Path):
    """Issue 12: a 1,000-image run was one shard, so a DataLoader with 2 workers had nothing for one."""
    assert [
        GenerateParams(shard_size=1000, min_shards=8).shard_size_for(n) for n in (1000, 12, 5, 100_000)
    ] == [
        125,
        2,
        1,
        1000,
    ]
    params = GenerateParams(batch_size=6, shard_size=1000, min_shards=4, threads=1)
    res = generate(Path("recipe.yaml"), workspace, "out", params)
    assert (res.images, res.shards) == (12, 4)
    members = []
    for path in sorted((workspace / "out/shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            members.append(len(tar.getnames()))
    assert members == [3, 3, 3, 3]


def test_a_marking_too_large_to_read_back_is_refused_before_anything_is_written(workspace: Path):
    """A packet over registry.store.marking's _MAX_PACKET is cut by readers, so it would read back as other
    values than generation wrote while the fast path of marking_problems said OK."""
    recipe = small_recipe()
    recipe["generator"]["name"] = "g" * 70_000
    write_yaml(workspace / "recipe.yaml", recipe)
    with pytest.raises(
        GeneratorError, match=r"its marking would be 70[0-9]{3} bytes, over the 65536 a reader"
    ):
        generate(Path("recipe.yaml"), workspace, None, PARAMS)
    assert not (workspace / "data").exists()
