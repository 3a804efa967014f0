"""Issue 22: generate and filter on a real two-node Ray cluster (a head and a second node on this
machine, one CPU each, tests/ray_nodes.py), through the CLI with ``--executor ray --address``: the same
bytes as the local executor, and work done on both nodes (one actor fits a node, so two actors are on
two nodes; the run's audit events and output name them)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.core import allocator
from registry.records.dataset import FilterParams
from tests.conftest import MODEL, small_recipe, write_yaml

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'synthreg[ray]'")

from tests.ray_nodes import ray_command, two_nodes  # noqa: E402  (after the skip: it needs `ray start`)

# 12 images in 4 shards of 3; the filter scores chunks of 3 rows, so each stage has work for both nodes.
PARAMS = {
    "recipe": "recipe.yaml",
    "generate": {"batch_size": 1, "shard_size": 3, "threads": 1, "workers": 2},
    "filter": {"workers": 2},
}
RUN_SPECIFIC = ("executor", "ray_address")  # the params that name who ran it, in the two .json records


def workspace_at(root: Path) -> Path:
    shutil.copytree(MODEL, root / "model")
    write_yaml(root / "recipe.yaml", small_recipe())
    write_yaml(root / "params.yaml", PARAMS)
    return root


def run(ws: Path, *args: str) -> str:
    res = CliRunner().invoke(app, [*args, "-w", str(ws)])
    assert res.exit_code == 0, res.output
    return res.output


def stages(ws: Path, *extra: str) -> tuple[str, str]:
    gen = run(ws, "generate", "--out", "data/digits/candidates", *extra)
    filt = run(ws, "filter", "data/digits/candidates", *extra)
    return gen, filt


def files(ws: Path) -> dict[str, bytes]:
    return {str(p.relative_to(ws)): p.read_bytes() for p in sorted((ws / "data").rglob("*")) if p.is_file()}


def without_executor(text: bytes) -> dict:
    record = json.loads(text)
    for key in RUN_SPECIFIC:
        record["params"].pop(key)
    return record


def nodes_of(ws: Path, kind: str) -> dict[str, int]:
    from registry.store import audit

    [event] = [e for e in audit.read(ws) if e.kind == kind]
    return event.details.get("nodes", {})


def arrow_pools(ws: Path, address: str) -> dict:
    """Arrow's allocator in a bare Ray task, and in each actor of a filter's pool (one a node)."""
    import pyarrow as pa

    from generators.ray_executor import ScorePool

    def backend(_actor: object = None) -> tuple[str, str]:
        return pa.default_memory_pool().backend_name, ray.get_runtime_context().get_node_id()

    pool = ScorePool(ws, None, FilterParams(executor="ray", ray_address=address, workers=2))
    try:
        named = ray.get([a.__ray_call__.remote(backend) for a in pool.actors])
    finally:
        for actor in pool.actors:
            ray.kill(actor)
    bare = ray.get(ray.remote(num_cpus=0)(backend).remote())[0]
    return {"bare task": bare, "actors": {n for n, _ in named}, "nodes": {node for _, node in named}}


@pytest.mark.slow
def test_generate_and_filter_on_two_nodes_write_the_local_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    if ray_command() is None:
        pytest.skip("the `ray` console script is not installed, so no node can be started")
    from generators import filter as filt

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)  # the actors get this pyarrow's choice
    monkeypatch.setattr(filt, "CHUNK", 3)  # 4 chunks: the filter's work spreads over both nodes too
    local_ws, ray_ws = workspace_at(tmp_path / "local"), workspace_at(tmp_path / "ray")
    stages(local_ws)

    # Short: Ray's socket paths under the temp folder must stay within 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="ray-"))
    try:
        with two_nodes(folder) as cluster:
            try:
                gen, filt_out = stages(ray_ws, "--executor", "ray", "--address", cluster.address)
                alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
                pools = arrow_pools(ray_ws, cluster.address)
            finally:
                ray.shutdown()  # the CLI joined the cluster in this process; leave it before it stops
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    assert len(alive) == 2
    # The nodes were started without ARROW_DEFAULT_MEMORY_POOL: a bare task there has Arrow's default,
    # the pool's actors on both nodes the allocator this machine's pyarrow is given (issue 22).
    assert pools["bare task"] == "mimalloc", pools
    assert pools["actors"] == {allocator.arrow_backend()} and len(pools["nodes"]) == 2, pools
    made, measured = nodes_of(ray_ws, "generate"), nodes_of(ray_ws, "filter")
    assert sorted(made) == sorted(alive) and sum(made.values()) == 4, made  # 4 shards over both nodes
    assert sorted(measured) == sorted(alive) and sum(measured.values()) == 4, measured  # 4 chunks
    assert gen.count("shards per Ray node: ") == 1 and filt_out.count("chunks per Ray node: ") == 1
    assert not nodes_of(local_ws, "generate") and not nodes_of(local_ws, "filter")

    local, remote = files(local_ws), files(ray_ws)
    assert sorted(local) == sorted(remote)
    assert len([p for p in local if p.endswith(".tar")]) == 4
    records = ("data/digits/candidates/generation.json", "data/digits/filtered/filter-info.json")
    for path in records:  # the same record but for who ran it
        assert without_executor(remote.pop(path)) == without_executor(local.pop(path)), path
        # ... and that it says so
    assert json.loads((ray_ws / records[0]).read_text())["params"]["ray_address"] == cluster.address
    for path in local:  # shards, both manifests, filter.json: byte for byte
        assert remote[path] == local[path], path
