"""The filter stage: score every candidate, record a decision and a reason, keep rejected rows.

Checks, in the order a reason is chosen (the first failing check names the reason):

``bad_marking``        the image's XMP marking is missing or names another sample (a forged copy)
``low_contrast``       pixel standard deviation / 255 below ``min_contrast``: blank or washed-out
``identity_mismatch``  an identity classifier trained on the real train split predicts another identity
``low_confidence``     ... or predicts the intended one below ``identity_threshold`` (Diff-Person's re-ID
                       confidence filter, arXiv 2406.06045)
``memorised_copy``     RMS pixel distance to the nearest real train image below ``memorised_distance``
                       (a recipe's embedding model: cosine similarity to the nearest real reference
                       image at least ``memorised_similarity``, default 0.95)
``low_clip_score``     the CLIP score (cosine similarity of the image's and its prompt's embeddings, from a
                       recipe's CLIP model) below ``min_clip_score``; unset, the score is recorded in every
                       row's reason and nothing is rejected for it (filter-info.json says so)
``near_duplicate``     perceptual-hash Hamming distance to an earlier accepted image of the same identity
                       at most ``duplicate_distance`` (-1 disables)
``near_duplicate_embedding``  cosine similarity of image embeddings (a recipe's embedding model) to an
                       earlier accepted image of the same identity at least ``duplicate_similarity``
                       (default 0.97)

The identity, memorised-copy, embedding and CLIP checks need a domain: classifiers, an embedding model and
real reference images. A recipe names its own local models in ``domain`` (``generators.domain.ModelDomain``);
the embedded tiny-digits generator has a built-in one (``DigitsDomain``), with the same interface. Without
one those checks are not run, their scores stay empty, and the summary says so instead of pretending they
passed. A threshold set for a check that cannot run is refused before any image is scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from generators.duplicates import Duplicates, Names
from generators.scoring import DomainKey, Scores, chunk_rows, domain_key, load_domain, measure
from registry.core.digests import sha256_file
from registry.core.errors import ConfigError, ManifestError
from registry.core.fsio import atomic_write_text
from registry.core.locks import folder_lock
from registry.core.names import check_manifest, shown
from registry.core.workspace import inside, relative
from registry.records.dataset import FilterParams, Recipe
from registry.store import audit
from registry.store import manifest as mf

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FilterResult:
    manifest: Path
    total: int
    accepted: int
    reasons: dict[str, int]
    not_checked: tuple[str, ...] = ()  # checks that did not run, with why (also in filter-info.json)
    nodes: dict[str, int] = dataclasses.field(default_factory=dict)  # chunks per Ray node id (Ray only)


def filter_manifest(
    candidates: Path | str,
    ws: Path,
    out: Path | str,
    params: FilterParams | None = None,
    progress: Progress | None = None,
    recipe: Recipe | None = None,
) -> FilterResult:
    """Score ``candidates/manifest.parquet``; write ``out/manifest.parquet``, ``out/filter.json`` (the
    counts, numbers only, for `dvc metrics`) and ``out/filter-info.json`` (what they were measured with).

    Streams: the manifest is read and written ``CHUNK`` rows at a time, so memory does not grow with the
    number of images (the exact near-duplicate index, 20 bytes an accepted image at distance 0, goes to
    disk in full runs; at a larger distance, or with embeddings, it is held: ``generators.duplicates``).
    Names and identities are checked first, over the whole file in DuckDB, before any name becomes a
    path."""
    params = params or FilterParams()
    in_dir, out_dir = inside(ws, candidates, "candidates folder"), inside(ws, out, "output folder")
    in_path = in_dir / "manifest.parquet"
    audit.log_path(ws)  # refused before anything is written
    # The lock is taken first, so two runs started together really serialise: the second refuses, naming
    # the first, rather than loading the domain, then finding the folder free once the first is done.
    with folder_lock(ws, out_dir, "filter"):  # a second run into out_dir refuses (registry.core.locks)
        return _checked_filter(ws, in_path, out_dir, params, progress, recipe)


def _checked_filter(
    ws: Path,
    in_path: Path,
    out_dir: Path,
    params: FilterParams,
    progress: Progress | None,
    recipe: Recipe | None,
) -> FilterResult:
    """Check the candidates (names, identities, thresholds), then filter them; the caller holds the lock."""
    source = _open_manifest(in_path)
    n = source.metadata.num_rows
    if n == 0:
        raise ManifestError(f"manifest {in_path} has no rows; nothing to filter")
    con = mf.connect(in_path)
    try:
        _check_columns(source, in_path)
        check_manifest(con, f"manifest {in_path}")
        rows = con.execute("SELECT DISTINCT generator_backend FROM manifest").fetchall()
        backends = sorted(b for (b,) in rows)
        key = domain_key(backends[0], recipe) if len(backends) == 1 else None
        if recipe is not None and recipe.domain is not None and key is None:
            raise ManifestError(
                f"manifest {in_path} mixes backends {backends}; one recipe's domain cannot score it"
            )
        domain = load_domain(ws, key) if key is not None else None  # models checked before any image
        if domain is not None:  # an edited manifest may name identities the generator never makes
            found = {i for (i,) in con.execute("SELECT DISTINCT identity FROM manifest").fetchall()}
            unknown = sorted(found - domain.identities, key=str)
            if unknown:
                first = con.execute(
                    "SELECT sample_id FROM manifest WHERE identity IS NOT DISTINCT FROM ? "
                    "ORDER BY index LIMIT 1",
                    [unknown[0]],
                ).fetchall()[0][0]
                raise ManifestError(
                    f"manifest {in_path}: sample {shown(first)} has identity {shown(unknown[0])}, which "
                    f"{domain.name} does not make ({len(unknown)} unknown identities); regenerate it"
                )
    finally:
        con.close()
    _check_thresholds(params, domain)
    return _filter(ws, in_path, out_dir, source, n, backends, (key, domain), params, progress)


def _filter(
    ws: Path,
    in_path: Path,
    out_dir: Path,
    source: pq.ParquetFile,
    n: int,
    backends: list[str],
    keyed: tuple[DomainKey | None, Any],
    params: FilterParams,
    progress: Progress | None,
) -> FilterResult:
    domain = keyed[1]
    counts: Counter[str] = Counter()
    # Full runs of the exact index go to disk beside the output (an unnamed file; the writer below makes
    # the folder before the first run is full), so the index holds under MAX_RUN images in memory.
    dedup = Duplicates(params.duplicate_distance, params.duplicate_cosine, Names(source), spill_to=out_dir)
    done = 0
    out_path = out_dir / "manifest.parquet"
    created = not out_dir.exists()
    try:
        chunks = (_chunk(batch, in_path) for batch in mf.batches(source, CHUNK))
        scored, per_node = _scored(ws, chunks, keyed, params)
        # <= mf.MAX_GROUPS groups, in small pages where they are large
        with mf.grouped_writer(out_path, mf.SCHEMA, mf.group_rows(n), manifest_rows=n) as writer:
            for table, scores in scored:
                table, reasons = _decide(table, scores, params, dedup, done)
                writer.write(table)
                counts.update(r.split(":")[0] for r in reasons)
                done += table.num_rows
                if progress:
                    progress(done, n)
    except BaseException:
        # The index's file first: where O_TMPFILE is missing (NFS), an open file keeps a name there.
        dedup.close()
        if created:  # a failed first run leaves no empty output folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    dedup.close()  # the index's file on disk, if any, goes (it has no name in the folder)

    nodes = dict(sorted(per_node.items()))
    counts = Counter(dict(sorted(counts.items())))
    accepted = counts.get("ok", 0)
    clip = domain is not None and domain.clip_problem is None
    not_checked = _not_checked(domain, backends, params)
    params_dump = params.applied(domain is not None and domain.embeds, clip)
    # Two files, DVC's way (issue 23): filter.json holds numbers only, so `dvc metrics` and `dvc exp show`
    # read it as a table; what the numbers were measured with (paths, digests, settings, the scoring
    # models, the checks that did not run) is in filter-info.json, a plain output beside it.
    metrics = {
        "total": n,
        "accepted": accepted,
        "rejected": n - accepted,
        "accepted_share": round(accepted / n, 4),
        "reasons": dict(counts),
    }
    info = {
        "candidates": relative(ws, in_path),
        "candidates_sha256": sha256_file(in_path),
        "params": params_dump,
        "domain": domain.describe() if domain is not None else None,
        "not_checked": not_checked,
    }
    atomic_write_text(out_dir / INFO, json.dumps(info, indent=2) + "\n")
    atomic_write_text(out_dir / METRICS, json.dumps(metrics, indent=2) + "\n")
    audit.append(
        ws,
        "filter",
        relative(ws, out_dir),
        {
            "candidates_sha256": info["candidates_sha256"],
            "manifest_sha256": sha256_file(out_path),
            "accepted": accepted,
            "total": n,
            "reasons": dict(counts),
            "params": params_dump,
            **({"nodes": nodes} if nodes else {}),  # a Ray run: chunks per node id
        },
    )
    return FilterResult(out_path, n, accepted, dict(counts), tuple(not_checked), nodes)


def _scored(
    ws: Path, chunks: Iterator[pa.Table], keyed: tuple[DomainKey | None, Any], params: FilterParams
) -> tuple[Iterator[tuple[pa.Table, Scores]], Counter[str]]:
    """Each chunk with its scores, in manifest order, measured here or by Ray actors; and the chunks
    measured per Ray node, counted as the iterator runs (none for the local executor)."""
    key, domain = keyed
    if params.executor != "ray":
        return ((t, measure(ws, *chunk_rows(t), domain)) for t in chunks), Counter()
    from generators.ray_executor import ScorePool

    pool = ScorePool(ws, key if domain is not None else None, params)
    return pool.map(chunks), pool.nodes


def _not_checked(domain: Any, backends: list[str], params: FilterParams) -> list[str]:
    """The checks that did not run (or ran and could reject nothing), with why."""
    if domain is None:
        return [
            "identity, memorised-copy, embedding near-duplicate and prompt-image (CLIP score) checks: "
            f"no domain for backend(s) {backends}"
        ]
    out = domain.not_checked()
    if domain.clip_problem is None and params.min_clip_score is None:
        out.append(
            "prompt-image agreement filter: each row's CLIP score is recorded in its reason, but "
            "min_clip_score is not set, so no image was rejected for it"
        )
    return out


CHUNK = mf.ROW_GROUP  # rows scored at a time
METRICS = "filter.json"  # numbers only: dvc.yaml's metrics of the filter stage
INFO = "filter-info.json"  # candidates path and sha256, settings, scoring domain, checks not run


def _chunk(batch: pa.RecordBatch, path: Path) -> pa.Table:
    try:
        return pa.Table.from_batches([batch]).select(mf.SCHEMA.names).cast(mf.SCHEMA)
    except (ValueError, pa.ArrowInvalid) as e:  # e.g. nulls where synthreg always writes a value
        raise ManifestError(
            f"manifest {path} does not fit synthreg's schema ({str(e)[:160]}); "
            "it was not written by synthreg: regenerate it"
        ) from None


def _check_columns(source: pq.ParquetFile, path: Path) -> None:
    """Every column has the type synthreg writes (a hand-made manifest may hold numbers where ids go)."""
    for field in mf.SCHEMA:
        found = source.schema_arrow.field(field.name).type
        if pa.types.is_map(field.type):  # map layouts differ between writers; pyarrow casts them
            ok = pa.types.is_map(found)
        else:
            ok = found == field.type or pa.types.is_null(found) or found == pa.large_string()
        if not ok:
            raise ManifestError(
                f"manifest {path}: column {field.name} is {found}, not {field.type}; "
                "it was not written by synthreg: regenerate it"
            )


def _open_manifest(path: Path) -> pq.ParquetFile:
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; run `synthreg generate` (or `dvc repro`) first")
    try:
        source = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(f"manifest {path} is not a readable Parquet file ({e}); regenerate it") from e
    missing = [name for name in mf.SCHEMA.names if name not in source.schema_arrow.names]
    if missing:
        raise ManifestError(f"manifest {path} lacks columns {missing}; it was not written by synthreg")
    return source


def _check_thresholds(params: FilterParams, domain: Any) -> None:
    """A threshold set for a check that cannot run is refused before any image is scored: it would
    otherwise read as a filter that was applied."""
    if params.min_clip_score is not None:
        why = domain.clip_problem if domain is not None else "no domain scores this dataset"
        if why is not None:
            raise ConfigError(
                f"min_clip_score is {params.min_clip_score}, but no CLIP score can be measured ({why}); "
                "name a CLIP model folder saved with its tokenizer in the recipe's domain.embedding, or "
                "unset min_clip_score"
            )
    if params.duplicate_similarity is not None and not (domain is not None and domain.embeds):
        raise ConfigError(
            f"duplicate_similarity is {params.duplicate_similarity}, but no embedding model scores this "
            "dataset; name one in the recipe's domain.embedding, or unset duplicate_similarity"
        )


def _reason(i: int, identity: str, scores: Scores, params: FilterParams) -> str | None:
    """Why row ``i`` is rejected by a check that needs no earlier image (None: it passed them all)."""
    c, d = scores.conf[i], scores.nn[i]
    bad_mark = scores.marking[i] if scores.marking else None
    if bad_mark is not None:  # issue 24: a forged or missing marking, whatever else the image is
        return f"bad_marking: {bad_mark}"
    if scores.contrast[i] < params.min_contrast:
        return f"low_contrast: pixel std {scores.contrast[i]:.3f} < {params.min_contrast}"
    if scores.pred[i] is not None and scores.pred[i] != identity:
        return f"identity_mismatch: classifier says {scores.pred[i]}, not {identity}"
    if c is not None and c < params.identity_threshold:
        return f"low_confidence: {c:.3f} < {params.identity_threshold}"
    similar = params.memorised_cosine
    if d is not None and scores.nn_metric == "cosine" and 1 - d >= similar:
        return f"memorised_copy: cosine similarity {1 - d:.4f} to a real reference image >= {similar}"
    if d is not None and scores.nn_metric == "rms" and d < params.memorised_distance:
        return f"memorised_copy: RMS {d:.4f} to a real train image < {params.memorised_distance}"
    floor = params.min_clip_score
    if scores.clip is not None and floor is not None and scores.clip[i] < floor:
        return f"low_clip_score: {scores.clip[i]:.4f} < {floor}"
    return None


def _decide(
    table: pa.Table, scores: Scores, params: FilterParams, dedup: Duplicates, first_row: int
) -> tuple[pa.Table, list[str]]:
    """Decision and reason for one chunk (manifest rows ``first_row``..), in plan order (near-duplicates
    depend on earlier chunks)."""
    ids, identities = table["sample_id"].to_pylist(), table["identity"].to_pylist()
    n = len(ids)
    reasons: list[str] = []
    duplicate_of: list[str | None] = [None] * n
    dedup.start(first_row, ids, identities, table["phash"].to_pylist())
    for i in range(n):
        reason = _reason(i, identities[i], scores, params)
        if reason is None:
            # Near-duplicates among images that passed so far, per identity, in plan order.
            emb = scores.embedding[i] if scores.embedding is not None else None
            dup = dedup.check(i, emb)
            if dup:
                reason, duplicate_of[i] = dup
        reason = reason or "ok: passed every check"
        if scores.clip is not None and not reason.startswith("low_clip_score"):
            # The per-row CLIP score lives in the reason: the manifest has no column for it (issue 21).
            unset = " (no min_clip_score: not a filter)" if params.min_clip_score is None else ""
            reason += f"; clip score {scores.clip[i]:.4f}{unset}"
        reasons.append(reason)
    dedup.end()

    decision = ["rejected" if not r.startswith("ok:") else "accepted" for r in reasons]
    updates = {
        "identity_pred": pa.array(scores.pred, pa.string()),
        "identity_confidence": pa.array(scores.conf, pa.float64()),
        "contrast": pa.array(scores.contrast, pa.float64()),
        "nn_distance": pa.array(scores.nn, pa.float64()),
        "duplicate_of": pa.array(duplicate_of, pa.string()),
        "observed_attributes": pa.array(
            [list(o.items()) if o is not None else None for o in scores.observed],
            mf.SCHEMA.field("observed_attributes").type,
        ),
        "decision": pa.array(decision, pa.string()),
        "reason": pa.array(reasons, pa.string()),
    }
    for name, values in updates.items():
        table = table.set_column(table.schema.get_field_index(name), mf.SCHEMA.field(name), values)
    return table, reasons
