"""The Ray executor: the generate stage's shards made by an actor pool, one shard per task, and the
filter's images read and measured by another (decisions stay in the driver, in manifest order).

Each actor loads the pipeline once (``num_gpus = gpus_per_worker``, ``num_cpus = cpus_per_worker``
from params.yaml) and calls :func:`generators.generate.make_shard`, the very function the local executor
calls, so records, image digests and shard bytes are the same whoever runs them. A worker writes its
shard and manifest part straight into the output folder: on a cluster the workspace must be on a
shared filesystem at the same path on every node (NFS, a mounted bucket).

Faults. A worker process that dies is restarted by Ray and its shard retried (``max_retries``); the
shard's checkpointed batches make the retry resume mid-shard. A shard that fails on every try stops the
run with the shard named; what was written is only finished shards (atomic writes), never a manifest,
and a rerun resumes. Progress is counted in the driver as shards come back from every worker.

Where the work ran. Each shard (and each filter chunk) comes back with the id of the Ray node that made
it; the pools count them (``nodes``), and the run's result and audit event carry the counts, so a run on
a cluster shows that every node took part (tests/generators/test_ray_cluster.py asserts two).

Ray is imported only here, and only when ``executor: ray`` is asked for (``pip install synthreg[ray]``).
"""

from __future__ import annotations

import logging
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from generators.shard import Job, make_shard
from registry.core import allocator
from registry.core.errors import GeneratorError, SynthregError
from registry.records.dataset import FilterParams, GenerateParams

Progress = Callable[[int, int], None]
CONNECT_TIMEOUT_S = 5.0


def connect(address: str | None) -> Any:
    """The ``ray`` module, initialised: a local Ray (None), the one on this machine ('auto'), a head
    node's GCS (HOST:PORT) or a Ray client server (ray://HOST:PORT). Refuses an unreachable address
    within seconds rather than Ray's minute of retries."""
    try:
        import ray
    except ImportError as e:
        raise GeneratorError("executor 'ray' needs Ray: pip install 'synthreg[ray]'") from e
    if address and address != "auto":
        hostport = address.removeprefix("ray://")
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise GeneratorError(
                f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or 'auto'; fix --address"
            )
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as e:
            raise GeneratorError(
                f"cannot reach Ray at {address} ({e.strerror or e}); start the cluster "
                "(`ray start --head`) or fix --address"
            ) from e
    if ray.is_initialized():  # a caller (a test, a notebook) already chose the cluster
        return ray
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise GeneratorError(
            f"cannot start or join Ray at {address or 'a new local instance'}: {e}; "
            "start the cluster (`ray start --head`) or fix --address"
        ) from e
    return ray


def worker_env(ray: Any) -> dict[str, Any]:
    """The ``runtime_env`` of the pool's actors: Arrow's allocator as this process has it (the
    ``synthreg`` command sets it, ``registry.core.allocator``), else as this machine's pyarrow would have
    it. A local Ray's workers inherit this process's environment, but a cluster's have the environment
    their node was started with (``ray start``), where Arrow's default, mimalloc, keeps what a pass frees
    for Arrow alone (issue 22). Ray merges an actor's variables with the job's, the actor's winning a
    clash, so a job that names the allocator itself (``ray.init(runtime_env={"env_vars": ...})``) is
    left its choice: nothing is passed then. A variable set on ``ray start`` alone is overridden. A node
    whose pyarrow lacks the named allocator uses mimalloc, with a warning in the worker's log: the same
    bytes, more memory. Each actor then starts through Ray's runtime-env agent, a little slower (once
    on a busy 2-core machine: about 0.9 s an actor against 0.2-0.6 s), once a pool."""
    job = (ray.get_runtime_context().runtime_env or {}).get("env_vars") or {}
    if allocator.POOL_VARIABLE in job:
        return {}
    return {"env_vars": {allocator.POOL_VARIABLE: allocator.arrow_pool()}}


class ShardWorker:
    """One Ray actor: the backend loaded once, then any number of shards."""

    def __init__(self, job: Job, params: GenerateParams) -> None:
        from generators.backends import load_backend
        from generators.shard import library_versions

        if job.recipe.generator.backend != "synthetic-pattern":
            import torch

            # as many torch threads as CPUs reserved: generate.threads is the local process's, and
            # two actors of one CPU each with two threads apiece would oversubscribe the node
            torch.set_num_threads(max(1, int(params.cpus_per_worker)))
        self.job = job
        self.backend = load_backend(job.recipe.generator, job.ws, params.device)
        if self.backend.spec.weights_digest != job.weights_digest:
            # a node with other weights (or other code, for synthetic-pattern) would mix two generators
            raise GeneratorError(
                f"worker on {socket.gethostname()} loaded weights {self.backend.spec.weights_digest}, "
                f"not the planned {job.weights_digest}; give every node the same generator folder"
            )
        self.versions = library_versions()
        self.node = _node_id()

    def shard(self, j: int) -> tuple[int, str]:
        """The images made for shard ``j``, and the Ray node that made them."""
        return make_shard(self.job, self.backend, j, self.versions), self.node


class ShardPool:
    """The actor pool for one job; created before anything is written, so a bad address writes nothing."""

    def __init__(self, job: Job, params: GenerateParams) -> None:
        self.ray = ray = connect(params.ray_address)
        self.job, self.params = job, params
        resources = ray.cluster_resources()
        if params.gpus_per_worker:
            fits = int(resources.get("GPU", 0) // params.gpus_per_worker)
            if fits == 0:
                raise GeneratorError(
                    f"gpus_per_worker is {params.gpus_per_worker} but the Ray cluster has "
                    f"{resources.get('GPU', 0)} GPU(s); lower generate.gpus_per_worker or add GPU nodes"
                )
        else:
            fits = max(1, int(resources.get("CPU", 1) // params.cpus_per_worker))
        self.size = min(params.workers or fits, job.shards)
        actor = ray.remote(ShardWorker).options(
            num_cpus=params.cpus_per_worker,
            num_gpus=params.gpus_per_worker,
            max_restarts=params.max_retries,
            max_task_retries=params.max_retries,
            runtime_env=worker_env(ray),
        )
        self.actors = [actor.remote(job, params) for _ in range(self.size)]
        self.nodes: Counter[str] = Counter()  # shards made per Ray node id, for the run's audit event

    def run(self, progress: Progress | None = None) -> int:
        """Make every shard not yet done; return the images generated."""
        ray, job = self.ray, self.job
        todo = [j for j in range(job.shards) if not job.part(j).is_file()]
        done = sum(_shard_len(job, j) for j in range(job.shards)) - sum(_shard_len(job, j) for j in todo)
        if progress:
            progress(done, job.images)
        pending: dict[Any, tuple[int, Any]] = {}
        idle = list(self.actors)
        generated = 0
        try:
            while todo or pending:
                while todo and idle:
                    actor, j = idle.pop(), todo.pop(0)
                    pending[actor.shard.remote(j)] = (j, actor)
                [ref], _ = ray.wait(list(pending), num_returns=1)
                j, actor = pending.pop(ref)
                try:
                    made, node = ray.get(ref)
                except ray.exceptions.RayError as e:
                    raise GeneratorError(
                        f"shard {j} ({job.shard_rel(j)}) failed on every try "
                        f"({self.params.max_retries + 1}): {_cause(ray, e)}; finished shards are kept, "
                        "rerun to resume"
                    ) from e
                generated += made
                self.nodes[node] += 1
                idle.append(actor)
                done += _shard_len(job, j)
                if progress:
                    progress(done, job.images)
        finally:
            for actor in self.actors:
                ray.kill(actor)
        return generated


def _node_id() -> str:
    """The Ray node this actor runs on (hex id); recorded so a run shows where its work went."""
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _shard_len(job: Job, j: int) -> int:
    batches = job.shard_batches(j)
    return batches[-1][2] - batches[0][1]


def _cause(ray: Any, e: Exception) -> str:
    """What went wrong in the worker in one line, not Ray's page of advice."""
    if isinstance(e, ray.exceptions.RayActorError):
        return "its worker process died (killed, out of memory or crashed)"
    cause = getattr(e, "cause", None)
    text = str(cause if cause is not None else e).strip().splitlines()
    return text[-1] if text else type(e).__name__


class ScoreWorker:
    """One Ray actor for the filter: the domain (a recipe's own models, or a backend's built-in
    classifier and real references) loaded once."""

    def __init__(self, ws: Path, key: Any) -> None:
        from generators.scoring import load_domain

        self.ws = ws
        self.domain = load_domain(ws, key) if key else None
        self.node = _node_id()

    def measure(
        self, rows: list[tuple[str, str, str, str]], identities: list[str], prompts: list[str]
    ) -> tuple[Any, str]:
        """The chunk's scores, and the Ray node that measured them."""
        from generators.scoring import measure

        return measure(self.ws, rows, identities, prompts, self.domain), self.node


class ScorePool:
    """Measures the filter's chunks on Ray actors and hands them back in manifest order, so decisions
    (near-duplicates look back at earlier images) stay in the driver and equal the local executor's."""

    def __init__(self, ws: Path, key: Any, params: FilterParams) -> None:
        self.ray = ray = connect(params.ray_address)
        fits = max(1, int(ray.cluster_resources().get("CPU", 1) // params.cpus_per_worker))
        actor = ray.remote(ScoreWorker).options(
            num_cpus=params.cpus_per_worker, max_restarts=2, max_task_retries=2, runtime_env=worker_env(ray)
        )
        self.actors = [actor.remote(ws, key) for _ in range(params.workers or fits)]
        self.nodes: Counter[str] = Counter()  # chunks measured per Ray node id

    def map(self, chunks: Iterator[Any]) -> Iterator[tuple[Any, Any]]:
        """(chunk, scores) for every chunk, in order; at most two chunks per actor in flight."""
        from generators.scoring import chunk_rows

        ray = self.ray
        window: deque[tuple[Any, Any]] = deque()
        try:
            for n, table in enumerate(chunks):
                actor = self.actors[n % len(self.actors)]
                window.append((table, actor.measure.remote(*chunk_rows(table))))
                if len(window) >= 2 * len(self.actors):
                    table, ref = window.popleft()
                    yield table, self._get(ray, ref)
            while window:
                table, ref = window.popleft()
                yield table, self._get(ray, ref)
        finally:
            for actor in self.actors:
                ray.kill(actor)

    def _get(self, ray: Any, ref: Any) -> Any:
        try:
            scores, node = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the worker's own error (a corrupted shard ...): as is
            if isinstance(e.cause, SynthregError):
                raise e.cause from None
            raise GeneratorError(f"a filter worker failed: {_cause(ray, e)}; rerun") from e
        except ray.exceptions.RayError as e:
            raise GeneratorError(f"a filter worker failed on every try: {_cause(ray, e)}; rerun") from e
        self.nodes[node] += 1
        return scores
