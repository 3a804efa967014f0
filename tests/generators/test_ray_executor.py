"""The Ray executor: the same records and shard bytes as the local executor, resume after a killed run
or a killed worker, a clear stop when a shard's worker dies on every try, a fast refusal of an
unreachable address. A local Ray (2 CPUs) takes ~10 s to start here, so the pool tests are slow."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tarfile
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from generators.generate import generate
from registry.cli import app
from registry.core.errors import GeneratorError
from registry.records.dataset import GenerateParams
from tests.conftest import REPO, write_yaml
from tests.generators.test_generate import contents
from tests.generators.test_synthetic_pattern import load_test_recipe

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'synthreg[ray]'")

LOCAL = GenerateParams(batch_size=1, shard_size=3, threads=1)  # 12 images: 4 shards of 3 batches
RAY = LOCAL.model_copy(update={"executor": "ray", "workers": 2})


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def same(a: Path, b: Path) -> bool:
    """The same ids, image digests, members and shard bytes (the shard column names its own folder)."""
    ca, cb = contents(a), contents(b)
    rows = [(i, sha, m) for i, sha, _, m in ca["rows"]] == [(i, sha, m) for i, sha, _, m in cb["rows"]]
    return rows and ca["shards"] == cb["shards"]


def workers(method: str = "") -> list[int]:
    """Pids of the pool's worker processes (Ray titles them ray::ShardWorker[.method])."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, UnicodeDecodeError):
            continue
        if title.startswith("ray::ShardWorker") and (not method or title.endswith(f".{method}")):
            pids.append(int(proc.name))
    return pids


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_unreachable_address_is_refused_within_seconds_and_writes_nothing(workspace: Path):
    write_yaml(workspace / "params.yaml", {"recipe": "recipe.yaml"})
    started = time.monotonic()
    res = CliRunner().invoke(
        app,
        [
            "generate",
            "-w",
            str(workspace),
            "--out",
            "data/r",
            "--executor",
            "ray",
            "--address",
            "127.0.0.1:9",
        ],
    )
    assert res.exit_code == 1
    assert res.output.strip() == (
        "error: cannot reach Ray at 127.0.0.1:9 (Connection refused); start the cluster "
        "(`ray start --head`) or fix --address"
    )
    # Not a speed target: Ray's own connect waits minutes; this bounds the refusal (most of it is loading
    # the model, not waiting on Ray), generously so a busy machine does not fail it.
    assert time.monotonic() - started < 90
    assert not (workspace / "data/r").exists()
    bad = CliRunner().invoke(app, ["generate", "-w", str(workspace), "--executor", "spark"])
    assert (bad.exit_code, bad.output.strip()) == (1, "error: --executor 'spark' is not one of: local, ray")


def test_actors_get_the_commands_arrow_allocator_unless_the_job_names_one(monkeypatch: pytest.MonkeyPatch):
    """``worker_env``: the driver's ARROW_DEFAULT_MEMORY_POOL, else this pyarrow's choice; nothing when
    the job's own runtime_env names one (Ray would let the actor's value win that clash)."""
    from types import SimpleNamespace

    from generators.ray_executor import worker_env
    from registry.core import allocator

    def ray_with(job: dict) -> SimpleNamespace:
        return SimpleNamespace(get_runtime_context=lambda: SimpleNamespace(runtime_env=job))

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    chosen = {"env_vars": {"ARROW_DEFAULT_MEMORY_POOL": allocator.arrow_backend()}}
    assert worker_env(ray_with({})) == chosen
    assert worker_env(ray_with({"env_vars": {"OTHER": "1"}})) == chosen
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    assert worker_env(ray_with({})) == {"env_vars": {"ARROW_DEFAULT_MEMORY_POOL": "system"}}
    assert worker_env(ray_with({"env_vars": {"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}})) == {}


@pytest.mark.slow
def test_ray_writes_the_same_records_and_shards_as_local(workspace: Path, local_ray):
    seen: list[int] = []
    generate(Path("recipe.yaml"), workspace, "data/local", LOCAL)
    res = generate(Path("recipe.yaml"), workspace, "data/ray", RAY, lambda done, total: seen.append(done))
    assert (res.images, res.shards, res.generated) == (12, 4, 12)
    assert same(workspace / "data/ray", workspace / "data/local")  # records and byte-identical tars
    assert seen[0] == 0 and seen[-1] == 12 and seen == sorted(seen)  # progress over both workers


@pytest.mark.slow
def test_resume_after_a_killed_worker_and_after_a_killed_run(workspace: Path, local_ray):
    generate(Path("recipe.yaml"), workspace, "data/local", LOCAL)

    killed: list[int] = []

    def kill_a_busy_worker(done: int, total: int) -> None:
        if 0 < done < total and not killed:  # a shard is back; the other worker is mid-shard
            killed.extend(workers("shard") or workers())
            kill(killed[:1])

    generate(Path("recipe.yaml"), workspace, "data/ray", RAY, kill_a_busy_worker)
    assert killed, "no worker was found to kill"
    assert same(workspace / "data/ray", workspace / "data/local")

    # A run stopped after two shards (its .work kept), then resumed: the same output again.
    shutil.rmtree(workspace / "data/ray")

    class Stop(Exception):
        pass

    def stop_after_two_shards(done: int, total: int) -> None:
        if done >= 6:
            raise Stop

    with pytest.raises(Stop):
        generate(Path("recipe.yaml"), workspace, "data/ray", RAY, stop_after_two_shards)
    assert not (workspace / "data/ray/manifest.parquet").exists()
    res = generate(Path("recipe.yaml"), workspace, "data/ray", RAY)
    assert res.generated < 12
    assert same(workspace / "data/ray", workspace / "data/local")


@pytest.mark.slow
def test_a_worker_dying_on_every_try_stops_the_run_naming_the_shard(tmp_path: Path, local_ray):
    shutil.copytree(REPO / "generators/synthetic_pattern", tmp_path / "generators/synthetic_pattern")
    write_yaml(tmp_path / "recipe.yaml", load_test_recipe(images_per_identity=400))
    params = GenerateParams(batch_size=50, shard_size=200, executor="ray", workers=2, max_retries=1)
    stop = threading.Event()

    def killer() -> None:  # every worker that starts a shard dies, on every try
        while not stop.is_set():
            kill(workers("shard"))
            time.sleep(0.005)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        with pytest.raises(GeneratorError) as err:
            generate(Path("recipe.yaml"), tmp_path, "data/k", params)
    finally:
        stop.set()
        thread.join()
    assert re.fullmatch(
        r"shard (\d+) \(data/k/shards/shard-0*\1\.tar\) failed on every try \(2\): its worker process "
        r"died \(killed, out of memory or crashed\); "
        r"finished shards are kept, rerun to resume",
        str(err.value),
    ), str(err.value)
    out = tmp_path / "data/k"
    assert not (out / "manifest.parquet").exists() and not (out / "generation.json").exists()
    # Whatever shard tars exist are whole (atomic writes): nothing half-written looks done.
    for tar in (out / "shards").glob("shard-*.tar"):
        with tarfile.open(tar) as f:
            assert len(f.getnames()) == 200, tar
    res = generate(Path("recipe.yaml"), tmp_path, "data/k", params)  # resumes once the fault is gone
    assert res.images == 800 and (out / "manifest.parquet").is_file()
    assert not list((out / "shards").glob(".*.tmp"))


@pytest.mark.slow
def test_filter_on_ray_decides_as_the_local_filter(
    tmp_path: Path, local_ray, monkeypatch: pytest.MonkeyPatch
):
    from generators import filter as filt
    from registry.records.dataset import FilterParams

    shutil.copytree(REPO / "generators/synthetic_pattern", tmp_path / "generators/synthetic_pattern")
    write_yaml(tmp_path / "recipe.yaml", load_test_recipe(images_per_identity=40))
    generate(Path("recipe.yaml"), tmp_path, "data/c", GenerateParams(batch_size=10, shard_size=20))
    monkeypatch.setattr(filt, "CHUNK", 7)  # 12 chunks over 2 workers, straddling shards
    loose = {"duplicate_distance": 24}  # near-duplicates: decisions that depend on earlier chunks
    local = filt.filter_manifest("data/c", tmp_path, "data/local", FilterParams(**loose))
    seen: list[int] = []
    remote = filt.filter_manifest(
        "data/c",
        tmp_path,
        "data/ray",
        FilterParams(**loose, executor="ray", workers=2),
        lambda d, t: seen.append(d),
    )
    assert (remote.total, remote.accepted, remote.reasons) == (local.total, local.accepted, local.reasons)
    assert local.reasons.get("near_duplicate", 0) > 0
    q = "SELECT sample_id, decision, reason, duplicate_of, contrast FROM '{}/manifest.parquet' ORDER BY index"
    import duckdb

    assert (
        duckdb.sql(q.format(tmp_path / "data/ray")).fetchall()
        == duckdb.sql(q.format(tmp_path / "data/local")).fetchall()
    )
    assert seen[-1] == 80 and seen == sorted(seen)


@pytest.mark.slow
def test_ray_scores_with_a_recipes_own_models_as_the_local_filter(tmp_path: Path, local_ray):
    """Issue 21: the recipe's domain models (an identity classifier, CLIP against a reference set and
    each image's prompt) are loaded on each worker and score as in the driver: the same reasons, CLIP
    scores to four decimals included."""
    import duckdb

    from generators import filter as filt
    from registry.records.config import load_recipe
    from registry.records.dataset import FilterParams
    from tests.generators.test_domain import save_classifier, save_clip

    shutil.copytree(REPO / "generators/synthetic_pattern", tmp_path / "generators/synthetic_pattern")
    recipe = load_test_recipe(images_per_identity=12, size=32)
    write_yaml(tmp_path / "recipe.yaml", recipe)
    generate(Path("recipe.yaml"), tmp_path, "data/c", GenerateParams(batch_size=6, shard_size=6))
    save_classifier(tmp_path / "models/id", ["a", "b"], favour="a")
    save_clip(tmp_path / "models/clip")
    (tmp_path / "real").mkdir()
    [(shard, member)] = duckdb.sql(
        f"SELECT shard, member FROM '{tmp_path}/data/c/manifest.parquet' ORDER BY index LIMIT 1 OFFSET 3"
    ).fetchall()
    with tarfile.open(tmp_path / shard) as tar:
        (tmp_path / "real/copy.png").write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
    recipe["domain"] = {
        "identity": {"model": "models/id"},
        "embedding": {"model": "models/clip", "reference": "real"},
    }
    write_yaml(tmp_path / "recipe.yaml", recipe)
    loaded = load_recipe(tmp_path / "recipe.yaml")
    # A tiny random CLIP finds every image alike: only exact copies count as copies and duplicates.
    params: dict = {"min_contrast": 0.0, "memorised_similarity": 0.9999, "duplicate_similarity": 0.9999}
    first = filt.filter_manifest("data/c", tmp_path, "data/first", FilterParams(**params), recipe=loaded)
    assert first.reasons.get("low_clip_score") is None  # min_clip_score unset: recorded, none rejected
    reasons = duckdb.sql(f"SELECT reason FROM '{tmp_path}/data/first/manifest.parquet'").fetchall()
    clip = sorted(float(r.split("clip score ")[1].split()[0]) for (r,) in reasons)
    params["min_clip_score"] = clip[len(clip) // 2]  # rejects the lower half of the passing images
    local = filt.filter_manifest("data/c", tmp_path, "data/local", FilterParams(**params), recipe=loaded)
    remote = filt.filter_manifest(
        "data/c", tmp_path, "data/ray", FilterParams(**params, executor="ray", workers=2), recipe=loaded
    )
    assert (remote.accepted, remote.reasons) == (local.accepted, local.reasons)
    assert set(local.reasons) == {"identity_mismatch", "memorised_copy", "low_clip_score", "ok"}
    q = (
        "SELECT sample_id, decision, reason, identity_pred, round(nn_distance, 5) "
        "FROM '{}/manifest.parquet' ORDER BY index"
    )
    assert (
        duckdb.sql(q.format(tmp_path / "data/ray")).fetchall()
        == duckdb.sql(q.format(tmp_path / "data/local")).fetchall()
    )
