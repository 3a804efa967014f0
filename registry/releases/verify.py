"""Verifying a release byte by byte: signature, record, manifest, every shard and every image.

Shards are read once each, on worker processes (one a CPU, or ``threads``; issue 22), and the results
merged in shard order, so the output is the same whatever the number of workers: the file's sha256 is
checked against the signed subject, and the tar is parsed once from the same bytes (plain ustar headers
by hand, ``registry.store.shards.scan``) to check every member against the manifest's ``image_sha256``,
its XMP marking (compared byte for byte with the chunk generation writes) and its WebDataset sidecars
(compared byte for byte with what the manifest row makes, built only for a shard that holds them). A
shard's manifest rows reach its worker as Arrow columns. Measured with benchmarks/bench_verify.py and
bench_e2e.py: see benchmarks/README.md (issue 22: 0.89x ``sha256sum``'s throughput at 1,000,000 images
and 0.93x at 10,000,000 on a 2-core AMD EPYC, 2026-12-06; 0.72x on an Intel Xeon before the batch
check's C2PA search and sidecar comparison were cut).

C2PA (issue 12). When the release's recipe asked for C2PA content credentials, every image must carry a
manifest that validates, chains to the organisation's anchor (``--c2pa-trust`` /
``$SYNTHREG_C2PA_TRUST``) and names the sample, generator and weights of its record; an image that does
not fails the release. An image that carries one unasked is checked too, and its problems noted. Either
way c2pa-python is loaded only for an image that has a C2PA chunk or must have one, so a release
without C2PA verifies as fast as before.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from registry.core.digests import sha256_file
from registry.core.errors import ReleaseError, SigningError
from registry.core.fsio import read_soon
from registry.core.names import shown, unsafe_rows
from registry.records.lineage import WithdrawalState
from registry.releases.shard_check import COLUMNS, C2pa, shard_job, to_ipc
from registry.store import manifest as mf
from registry.store.flat_check import flat_differences
from registry.store.releases import EXPORTS, load_release, parse_ref, release_folder
from registry.trust.admission import EDITED, admission
from registry.trust.approvals import ApprovalState
from registry.trust.credentials import load_anchors
from registry.trust.root import load_trust

# What verify checks, in order: (step, what it establishes). The checklist (`verify` prints it, `--json`
# has it) says of each whether it passed, failed or did not run, and why.
STEPS = [
    ("signatures", "every sign-off verifies against a key the pinned trust root trusts, in its role"),
    ("approvals", "the sign-offs meet the trust root's thresholds: a final release, not a candidate"),
    ("withdrawal", "no withdrawal is recorded (one is: its signature is checked)"),
    ("record", "release.json is the record as signed"),
    ("binding", "the signed statement names this version, and the tag points at a commit holding it"),
    ("manifest", "data/manifest.parquet matches its signed sha256"),
    (
        "signed-files",
        "the flat manifest and the exports match their signed sha256; no file in data/ is unsigned",
    ),
    ("names", "every sample id, member and shard name in the manifest is safe to extract"),
    ("images", "every image in every shard matches its manifest digest, marking and sidecars"),
    ("c2pa", "every image's C2PA content credentials verify, and chain to the trust anchor"),
]


class Shard(NamedTuple):
    """What verify needs of a record's ``ShardRef``. Issue 22: a ``ShardRef`` is about 1.8 KB of Python
    objects (18 MB for a release of 10,000 shards, held through the image checks), this about 0.4 KB."""

    source: str
    path: str
    sha256: str
    members: int


@dataclass
class VerifyResult:
    ref: str
    problems: list[str] = field(default_factory=list)
    # step -> the problems it found ([]: passed); a step not here did not run
    steps: dict[str, list[str]] = field(default_factory=dict)
    # why the steps after an early stop did not run
    stopped: str | None = None
    bad_samples: dict[str, str] = field(default_factory=dict)  # sample id -> what is wrong
    # files (relative to the release folder) missing or unlike their signed sha256: what a pull discards
    damaged: list[str] = field(default_factory=list)
    # sample id -> what is wrong with the synthetic-media marking of an image whose bytes are as signed
    # (made before synthreg marked images): reported, not a failure, since the signature covers the bytes
    unmarked: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    shards: int = 0
    approval: ApprovalState | None = None
    withdrawn: WithdrawalState | None = None
    c2pa_asked: bool = False  # the recipe asked for C2PA: every image's manifest was checked
    c2pa_trust_checked: bool = False  # against a configured trust anchor

    @property
    def ok(self) -> bool:
        return not self.problems and not self.bad_samples and not self.untrusted

    @property
    def untrusted(self) -> bool:
        return bool(self.approval and self.approval.untrusted)

    def mark(self, step: str, since: int) -> None:
        """``step`` ran; the problems it found are those added since ``since``."""
        self.steps[step] = self.problems[since:]

    def checklist(self) -> list[dict[str, str]]:
        """Every check of ``STEPS``: ``pass``, ``fail`` (with the first problem), ``not run`` (with why),
        or, for a check that ran and passed but says the release is not usable as final, ``candidate`` /
        ``withdrawn``."""
        out = []
        for step, what in STEPS:
            found = self.steps.get(step)
            if found is None:
                status, detail = "not run", self.stopped or "not part of this check"
                if step == "c2pa" and not self.c2pa_asked and self.stopped is None:
                    detail = "the recipe did not ask for C2PA content credentials"
            elif found:
                status, detail = (
                    "fail",
                    found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""),
                )
            elif step == "approvals" and not (self.approval and self.approval.met):
                status, detail = "candidate", self.approval.summary() if self.approval else "no sign-off"
            elif step == "approvals" and self.approval and self.approval.root_version is not None:
                # issue 20: the checklist names the root version the thresholds were met under
                status, detail = "pass", f"final under {self.approval.root_note}"
            elif step == "withdrawal" and self.withdrawn:
                status, detail = (
                    "withdrawn",
                    f"on {self.withdrawn.day} by {self.withdrawn.actor}: {self.withdrawn.reason}",
                )
            elif step == "images":
                status, detail = "pass", f"{self.samples} samples in {self.shards} shards"
            elif step == "c2pa" and not self.c2pa_trust_checked:
                status, detail = "pass", "valid on every image; the signer is unchecked (no trust anchor)"
            else:
                status, detail = "pass", ""
            out.append({"check": step, "what": what, "status": status, "detail": detail})
        return out

    def to_json(self) -> dict:
        return {
            "ref": self.ref,
            "ok": self.ok,
            "checks": self.checklist(),
            "problems": self.problems,
            "bad_samples": self.bad_samples,
            "unmarked": self.unmarked,
            "samples_checked": self.samples,
            "shards_checked": self.shards,
            "approval": self.approval.to_json() if self.approval else None,
            "withdrawn": self.withdrawn.model_dump(mode="json") if self.withdrawn else None,
            "c2pa": {"asked": self.c2pa_asked, "trust_checked": self.c2pa_trust_checked},
        }


def _workers(threads: int | None) -> int:
    """Worker processes for checking shards: as asked, else one a CPU (issue 22: parsing a tar and the
    per-image checks hold the GIL, so threads did not add up)."""
    return threads or os.cpu_count() or 1


def _pool(workers: int) -> Executor:
    """Processes (forked where the platform can: no start-up import) for more than one worker; a single
    thread otherwise, which costs nothing to start."""
    if workers <= 1:
        return ThreadPoolExecutor(max_workers=1)
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    # Forked now, before the checks start DuckDB's work (the names query on a thread, the manifest
    # stream): the process's other threads (DuckDB's scheduler, Arrow's and BLAS's pools) are idle, so
    # no worker inherits a lock one of them holds mid-query. The workers never use DuckDB.
    # gc.freeze: a worker's collections then never walk the objects it inherited (a ``Shard`` a shard,
    # and every module), so their pages stay shared rather than copied into each worker.
    gc.freeze()
    try:
        pool.submit(int).result()
    finally:
        gc.unfreeze()
    return pool


def verify(
    ws: Path,
    ref: str,
    threads: int | None = None,
    trust: Path | str | None = None,
    progress: Callable[..., None] | None = None,
    images: bool = True,
    c2pa_trust: Path | str | None = None,
) -> VerifyResult:
    """Every signature against the pinned trust root, the binding of the signed statement to the
    reference and the tag, then the manifest and every image (``progress(images checked, images)`` per
    shard). A candidate (approvals short of the thresholds) verifies its content but is reported as not
    final; it fails only on a problem. C2PA credentials are checked against the anchors at
    ``c2pa_trust`` (else ``$SYNTHREG_C2PA_TRUST``).

    ``images=False`` (what ``pull`` runs after a transfer) checks the signatures and each file whole
    against its signed sha256, and opens nothing: every byte is then what was signed, while what the
    bytes say (safe names, each image against the manifest's digest, its marking and C2PA credentials,
    the flat copy) is left to a full ``verify``."""
    name, version = parse_ref(ref)
    if version is None:
        raise ReleaseError(f"give a version to verify: {name}@X.Y.Z")
    trusted = load_trust(ws, trust, strict=False)  # a final release under an older root still verifies
    result = VerifyResult(ref=f"{name}@{version}")
    record = load_release(ws, ref, bound=False)  # the binding is checked below, as a problem
    asked = bool(record.recipe and record.recipe.c2pa)
    classes = list(record.recipe.identities) if record.recipe else None
    shards = [Shard(s.source, s.path, s.sha256, s.members) for s in record.shards]
    del record  # what is checked below is only ``shards`` and ``classes`` of it (issue 22)
    # Loaded only for a release that asked for C2PA (a bad $SYNTHREG_C2PA_TRUST does not break every
    # verify); an anchor the workspace holds is refused (an insider could commit one).
    anchors = load_anchors(c2pa_trust, ws) if images and asked else None
    c2pa = C2pa(asked, anchors)
    result.c2pa_asked = c2pa.asked and images  # pull (images=False) opens no image
    result.c2pa_trust_checked = result.c2pa_asked and anchors is not None
    folder = release_folder(ws, name, version, "data").parent
    try:
        a = admission(ws, name, version, trusted)  # registry.trust.admission: the one check
    except (SigningError, OSError, ValueError) as e:
        result.problems.append(f"the release signature does not verify: {e}")
        result.mark("signatures", 0)
        result.stopped = "the release signature does not verify, so nothing it signs can be checked"
        return result
    since = len(result.problems)
    state = a.approval
    result.approval = state
    result.problems += state.problems
    if not state.signers and not state.problems:
        result.problems.append("the release signature does not verify: no sign-off by any key")
    result.mark("signatures", since)
    result.mark("approvals", len(result.problems))  # a candidate is a status, not a problem
    since = len(result.problems)
    result.withdrawn = a.withdrawal
    if result.withdrawn and not result.withdrawn.trusted:
        result.problems.append(
            f"withdrawn, but the withdrawal cannot be trusted: {result.withdrawn.why_untrusted}"
        )
    result.mark("withdrawal", since)
    since = len(result.problems)
    if not a.record_matches:
        result.problems.append(EDITED)
    result.mark("record", since)
    since = len(result.problems)
    result.problems += a.binding
    result.mark("binding", since)
    subjects = a.subjects
    # The signed statement holds the whole record again as parsed JSON (11.5 MB at 10,000 shards, issue
    # 22): nothing below needs more of it than ``subjects``.
    del a
    manifest = folder / "data" / "manifest.parquet"
    since = len(result.problems)
    if not manifest.is_file():
        result.problems.append("data/manifest.parquet is missing; run `dvc checkout` or `dvc pull`")
        result.damaged.append("data/manifest.parquet")
    elif sha256_file(manifest) != subjects.get("data/manifest.parquet"):
        result.problems.append("data/manifest.parquet does not match its signed sha256")
        result.damaged.append("data/manifest.parquet")
    result.mark("manifest", since)
    if "data/manifest.parquet" in result.damaged:
        result.stopped = "the manifest is missing or not as signed, so no image can be checked against it"
        return result
    since = len(result.problems)
    _check_signed_files(folder, shards, subjects, result)
    # The flat copy's rows against the manifest's: read beside the image checks (about 4 s of reading
    # both manifests at 1,000,000 rows, issue 22), and its problem added to this step once known.
    flat_rows = images and f"data/{mf.FLAT}" in subjects and f"data/{mf.FLAT}" not in result.damaged
    result.mark("signed-files", since)
    if not images:  # a transfer's check: every byte as signed; what the bytes say is verify's to check
        result.stopped = (
            "a transfer's check (pull): each file whole against its signed sha256; no image opened"
        )
        return _check_files(folder, shards, subjects, result, threads, progress)
    checked = VerifyResult(ref=result.ref)
    with _connection(manifest) as con, _connection(manifest, threads=1) as other:

        def beside() -> tuple[Any, str | None]:  # run while the workers check the images
            found = unsafe_rows(other)  # DuckDB's query
            return found, _flat_problem(manifest, folder / "data" / mf.FLAT, shards) if flat_rows else None

        (n_unsafe, unsafe), flat_problem = _check_images(
            con, folder, shards, classes, subjects, checked, c2pa, threads, progress, beside
        )
    if flat_problem:  # the signed-files step's, found beside the images
        result.problems.append(flat_problem)
        result.steps["signed-files"].append(flat_problem)
    since = len(result.problems)
    if n_unsafe:  # signed or not, a name that extraction would place outside its folder is a failure
        result.problems.append(f"{n_unsafe} sample(s) have unsafe names or digests in the manifest")
        result.bad_samples.update({shown(sid): problem for sid, problem in unsafe})
    result.mark("names", since)
    since = len(result.problems)
    result.problems += checked.problems
    result.bad_samples.update(checked.bad_samples)
    result.unmarked.update(checked.unmarked)
    result.damaged += checked.damaged
    result.samples, result.shards = checked.samples, checked.shards
    result.mark("images", since)
    if c2pa.asked:
        since = len(result.problems)
        if anchors is None:
            result.problems.append(
                f"{result.ref}'s recipe asks for C2PA content credentials, but no C2PA trust anchor is "
                "configured, so who signed them is unchecked: pass --c2pa-trust or set SYNTHREG_C2PA_TRUST "
                "to the organisation's root certificate (PEM)"
            )
        result.mark("c2pa", since)
    return result


def _flat_problem(manifest: Path, flat: Path, shards: list[Shard]) -> str | None:
    """What is wrong with the signed flat copy's rows: signed, so as the releaser made it, but it must
    say what the manifest says (``flat_check.flat_differences``); None when it does."""
    n = flat_differences(manifest, flat, mf.released_shards(shards))
    if n and flat_differences(manifest, flat, None) == 0:
        n = 0  # made before issue 23's released shard paths: the workspace's, as the signature says
    if not n:
        return None
    return (
        f"data/{mf.FLAT} differs from the signed manifest in {n} row(s); it must be the manifest's flat "
        "copy: release again"
    )


@contextlib.contextmanager
def _connection(manifest: Path, threads: int | None = None) -> Iterator[Any]:
    """A DuckDB connection of its own (its own database, memory cap and spill folder) to ``manifest``,
    closed after. verify opens two: the image checks stream the manifest on one, and the name and
    duplicate-id check runs beside them on the other. On one connection they shared one cap, and the
    stream, paused while its shards are checked, holds the row group it reads pinned in memory; with
    large row groups the duplicate-id aggregate could neither get memory nor spill, and failed (issue
    22: the derived 10,000,000-image release, written in row groups of 65,536 rows, at the default cap
    on 2 cores). Two caps bound verify's DuckDB memory at twice one, and neither query starves.

    The side one has one thread (``threads=1``), so a cap of ``duck.PER_THREAD_MB``: it runs beside the
    workers, which keep the cores busy. Its duplicate-id aggregate, the process's peak above its start
    (issue 22, 2026-12-07): 1,000,000 rows 86 -> 57 MB, 10,000,000 rows 132 -> 85 MB (spilling), in
    0.3 -> 0.5 s and 3.7 -> 4.4 s alone. 32 MB failed at 10M, 48 MB too. Since it groups hashes in
    passes of about a million ids (``names.duplicate_ids``), +37 MB at 1M and +38 MB at 10M (4.5 s)."""
    con = mf.connect(manifest, threads=threads)
    try:
        yield con
    finally:
        con.close()


def _check_signed_files(
    folder: Path, shards: list[Shard], subjects: dict[str, str], result: VerifyResult
) -> None:
    """The signed files beside the manifest and the shards (the flat manifest, the exports) against their
    sha256, and no file in ``data/`` that nobody signed."""
    shard_subjects = {f"data/{s.path}" for s in shards}
    for rel, sha in sorted(subjects.items()):  # other signed files: data/manifest-flat.parquet, the exports
        if rel == "data/manifest.parquet" or rel in shard_subjects:
            continue
        inside = rel.startswith("data/") and ".." not in Path(rel).parts
        if not inside and rel not in EXPORTS:  # never hash a file outside data/ but the named exports
            result.problems.append(f"signed subject {rel!r} is not a file inside data/")
            continue
        path = folder / rel
        if not path.is_file() or sha256_file(path) != sha:
            what = "is missing" if not path.is_file() else "does not match its signed sha256"
            fix = (
                f"restore it from git (`git checkout -- {rel}`)"
                if not inside
                else "run `dvc checkout` or `dvc pull`"
            )
            result.problems.append(f"{rel} {what}; {fix}")
            if inside:  # DVC data, which a pull discards; the exports are git's
                result.damaged.append(rel)
    # A file in data/ that nobody signed (an insider's extra shard, which `load_dataset(folder)` would
    # read with the signed ones) fails the release and, for pull, is discarded like a damaged one.
    for path in sorted((folder / "data").rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if (path.is_file() or path.is_symlink()) and rel not in subjects:
            result.problems.append(f"{rel} is not signed: no release file may be added after signing")
            result.damaged.append(rel)
    unsigned = [e for e in EXPORTS if e not in subjects and (folder / e).exists()]
    if unsigned and any(e in subjects for e in EXPORTS):  # a release that signs its exports signs all
        result.problems.append(f"{', '.join(unsigned)} not signed with the other exports")


def _check_images(
    con: Any,
    folder: Path,
    shards: list[Shard],
    classes: list[str] | None,
    subjects: dict[str, str],
    result: VerifyResult,
    c2pa: C2pa,
    threads: int | None,
    progress: Callable[..., None] | None,
    beside: Callable[[], Any],
) -> Any:
    """Every shard of the manifest, a few in flight on worker processes (``shard_job``), then the
    record and the manifest naming the same shards with as many rows. ``beside`` runs on a thread
    meanwhile, once the workers are started; returns its answer."""
    by_source = {s.source: s for s in shards}
    if len(by_source) < len(shards) or len({s.path for s in shards}) < len(shards):
        result.problems.append("the record lists a shard twice (same source or same file)")
    visited: dict[str, int] = {}
    result.samples = con.execute("SELECT count(*) FROM manifest").fetchall()[0][0]
    workers = _workers(threads)
    pending: deque[tuple[str, Path, int, Future]] = deque()
    answers: dict[str, tuple[Path, list[str], dict, dict]] = {}  # the shards with a finding
    checked = 0

    def collect() -> None:
        nonlocal checked
        source, path, n, future = pending.popleft()
        problems, bad, unmarked, visited[source] = future.result()
        if problems or bad or unmarked:  # a clean shard adds nothing (issue 22: 7.7 MB at 10,000 shards)
            answers[source] = (path, problems, bad, unmarked)
        checked += n
        if progress:
            progress(checked, result.samples)

    # Shard by shard, a few in flight on worker processes: each shard's rows go to its worker as Arrow
    # columns (an IPC stream: a pickled slice carries its whole batch), so the whole manifest is never
    # held as Python objects (~1.8 KB an image, issue 13) and the main process makes none a row (issue
    # 22). The shards come in manifest order; their answers are merged in shard name order.
    unsigned = []
    with _pool(min(workers, max(1, len(shards)))) as pool, ThreadPoolExecutor(1) as side:
        answer = side.submit(beside)
        send = to_ipc if isinstance(pool, ProcessPoolExecutor) else (lambda t: t)
        for shard, table in mf.tables_by_shard(con, COLUMNS):
            ref_ = by_source.get(shard) if shard is not None else None
            if ref_ is None or subjects.get(f"data/{ref_.path}") != ref_.sha256:
                unsigned.append(shard)
                continue
            path = folder / "data" / ref_.path
            read_soon(path)  # off the disk while the workers check the shards before it
            job = pool.submit(shard_job, path, ref_.sha256, send(table), classes, c2pa)
            pending.append((ref_.source, path, table.num_rows, job))
            result.shards += 1
            while len(pending) > 2 * workers:
                collect()
        while pending:
            collect()
    for shard in sorted(unsigned, key=lambda s: (s is None, s or "")):
        result.problems.append(f"shard {shard} is not among the signed subjects")
    for source in sorted(answers):
        path, problems, bad, unmarked = answers[source]
        result.problems += problems
        result.bad_samples.update(bad)
        result.unmarked.update(unmarked)
        if problems:
            result.damaged.append(path.relative_to(folder).as_posix())
    for ref_ in shards:  # the record and the manifest must name the same shards, with as many rows
        if ref_.source not in visited:
            result.problems.append(f"shard {ref_.source} is in the record but no manifest row names it")
        elif visited[ref_.source] != ref_.members:
            result.problems.append(
                f"shard {ref_.source}: the record says {ref_.members} members, the manifest names "
                f"{visited[ref_.source]}"
            )
    return answer.result()


def _check_files(
    folder: Path,
    shards: list[Shard],
    subjects: dict[str, str],
    result: VerifyResult,
    threads: int | None,
    progress: Callable[..., None] | None,
) -> VerifyResult:
    """Each signed shard file whole against its signed sha256 (``verify(images=False)``)."""

    def digest(path: Path) -> str | None:
        return sha256_file(path) if path.is_file() else None

    jobs = []
    for ref_ in shards:
        if subjects.get(f"data/{ref_.path}") != ref_.sha256:
            result.problems.append(f"shard {ref_.source} is not among the signed subjects")
            continue
        jobs.append(ref_)
    result.samples = sum(r.members for r in jobs)
    done = 0
    with ThreadPoolExecutor(max_workers=_workers(threads)) as pool:
        for ref_, got in zip(jobs, pool.map(lambda r: digest(folder / "data" / r.path), jobs), strict=True):
            name = Path(ref_.path).name
            if got is None:
                result.problems.append(f"shard {name} is missing")
            elif got != ref_.sha256:
                result.problems.append(f"shard {name} does not match its signed sha256")
            if got != ref_.sha256:
                result.damaged.append(f"data/{ref_.path}")
            done += ref_.members
            if progress:
                progress(done, result.samples)
    result.shards = len(jobs)
    return result
