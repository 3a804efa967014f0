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
``near_duplicate``     perceptual-hash Hamming distance to an earlier accepted image of the same identity
                       at most ``duplicate_distance`` (-1 disables)

The identity and memorised-copy checks need a domain: a classifier and real reference images. A recipe
names its own local models in ``domain`` (``generators.domain.ModelDomain``); the embedded tiny-digits
generator has a built-in one (``DigitsDomain``), with the same interface. Without one those checks are
not run, their scores stay empty, and the summary says so instead of pretending they passed.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from generators.scoring import DomainKey, Scores, chunk_rows, domain_key, load_domain, measure
from registry.core.digests import sha256_file
from registry.core.errors import ManifestError
from registry.core.fsio import atomic_path, atomic_write_text
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
    number of images (only the near-duplicate index does, by 8 bytes an accepted image). Names and
    identities are checked first, over the whole file in DuckDB, before any name becomes a path."""
    params = params or FilterParams()
    in_dir, out_dir = inside(ws, candidates, "candidates folder"), inside(ws, out, "output folder")
    in_path = in_dir / "manifest.parquet"
    audit.log_path(ws)  # refused before anything is written
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
    with folder_lock(ws, out_dir, "filter"):  # a second run into out_dir refuses (registry.core.locks)
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
    key, domain = keyed
    counts: Counter[str] = Counter()
    dedup = _Duplicates(params.duplicate_distance)
    done = 0
    out_path = out_dir / "manifest.parquet"
    created = not out_dir.exists()
    try:
        chunks = (_chunk(batch, in_path) for batch in source.iter_batches(batch_size=CHUNK))
        if params.executor == "ray":
            from generators.ray_executor import ScorePool

            scored = ScorePool(ws, key if domain is not None else None, params).map(chunks)
        else:
            scored = ((t, measure(ws, *chunk_rows(t), domain)) for t in chunks)
        with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, mf.SCHEMA, compression="zstd") as writer:
            for table, scores in scored:
                table, reasons = _decide(table, scores, params, dedup)
                writer.write_table(table)
                counts.update(r.split(":")[0] for r in reasons)
                done += table.num_rows
                if progress:
                    progress(done, n)
    except BaseException:
        if created:  # a failed first run leaves no empty output folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise

    counts = Counter(dict(sorted(counts.items())))
    accepted = counts.get("ok", 0)
    not_checked = (
        domain.not_checked()
        if domain is not None
        else [f"identity and memorised-copy checks: no domain for backend(s) {backends}"]
    )
    params_dump = params.model_dump()
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
        },
    )
    return FilterResult(out_path, n, accepted, dict(counts), tuple(not_checked))


CHUNK = 4096  # rows scored at a time
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


class _Duplicates:
    """Accepted images' perceptual hashes per identity, in plan order: the first of a near-duplicate stays.

    At distance 0 (the default) a dict finds an equal hash in O(1); a larger distance compares with every
    earlier accepted image of the identity, which grows as images x accepted-per-identity."""

    def __init__(self, distance: int) -> None:
        self.distance = distance
        self.exact: dict[tuple[str, str], str] = {}
        self.kept: dict[str, tuple[list[str], list[np.ndarray]]] = {}

    def check(self, identity: str, phash: str, sample_id: str) -> tuple[str, int] | None:
        """(the earlier image, distance) if this one is a near-duplicate, or None (then it is remembered)."""
        if self.distance < 0:
            return None
        if self.distance == 0:
            first = self.exact.setdefault((identity, phash), sample_id)
            return None if first == sample_id else (first, 0)
        ids, bits = self.kept.setdefault(identity, ([], []))
        mine = np.frombuffer(bytes.fromhex(phash), dtype=np.uint8)
        if bits:
            dist = np.unpackbits(np.stack(bits) ^ mine, axis=1).sum(axis=1)
            k = int(dist.argmin())
            if dist[k] <= self.distance:
                return ids[k], int(dist[k])
        ids.append(sample_id)
        bits.append(mine)
        return None


def _decide(
    table: pa.Table, scores: Scores, params: FilterParams, dedup: _Duplicates
) -> tuple[pa.Table, list[str]]:
    """Decision and reason for one chunk, in plan order (near-duplicates depend on earlier chunks)."""
    ids, identities = table["sample_id"].to_pylist(), table["identity"].to_pylist()
    contrast, pred, conf, nn, observed = scores.contrast, scores.pred, scores.conf, scores.nn, scores.observed
    n = len(ids)
    reasons: list[str] = []
    duplicate_of: list[str | None] = [None] * n
    similar = params.memorised_similarity if params.memorised_similarity is not None else 0.95
    for i, phash in enumerate(table["phash"].to_pylist()):
        c, d = conf[i], nn[i]
        bad_mark = scores.marking[i] if scores.marking else None
        if bad_mark is not None:  # issue 24: a forged or missing marking, whatever else the image is
            reason = f"bad_marking: {bad_mark}"
        elif contrast[i] < params.min_contrast:
            reason = f"low_contrast: pixel std {contrast[i]:.3f} < {params.min_contrast}"
        elif pred[i] is not None and pred[i] != identities[i]:
            reason = f"identity_mismatch: classifier says {pred[i]}, not {identities[i]}"
        elif c is not None and c < params.identity_threshold:
            reason = f"low_confidence: {c:.3f} < {params.identity_threshold}"
        elif d is not None and scores.nn_metric == "cosine" and 1 - d >= similar:
            reason = f"memorised_copy: cosine similarity {1 - d:.4f} to a real reference image >= {similar}"
        elif d is not None and scores.nn_metric == "rms" and d < params.memorised_distance:
            reason = f"memorised_copy: RMS {d:.4f} to a real train image < {params.memorised_distance}"
        else:
            # Near-duplicates among images that passed so far, per identity, in plan order.
            dup = dedup.check(identities[i], phash, ids[i])
            if dup:
                duplicate_of[i] = dup[0]
                reason = f"near_duplicate: of {dup[0]} (phash distance {dup[1]})"
            else:
                reason = ""
        reasons.append(reason or "ok: passed every check")

    decision = ["rejected" if not r.startswith("ok:") else "accepted" for r in reasons]
    updates = {
        "identity_pred": pa.array(pred, pa.string()),
        "identity_confidence": pa.array(conf, pa.float64()),
        "contrast": pa.array(contrast, pa.float64()),
        "nn_distance": pa.array(nn, pa.float64()),
        "duplicate_of": pa.array(duplicate_of, pa.string()),
        "observed_attributes": pa.array(
            [list(o.items()) if o is not None else None for o in observed],
            mf.SCHEMA.field("observed_attributes").type,
        ),
        "decision": pa.array(decision, pa.string()),
        "reason": pa.array(reasons, pa.string()),
    }
    for name, values in updates.items():
        table = table.set_column(table.schema.get_field_index(name), mf.SCHEMA.field(name), values)
    return table, reasons
