"""`synthreg trace image`: an image file -> its sample record and every released version holding it
(by exact sha256, else by perceptual hash), and what its synthetic-media marking and C2PA content
credentials say."""

from __future__ import annotations

import hashlib
from pathlib import Path

from registry.core.errors import ReleaseError, WorkspaceError
from registry.lineage.common import (
    all_releases,
    deny_list,
    manifest_paths,
    query_manifests,
    release_info,
    release_ref,
)
from registry.records.lineage import CredentialsCheck, ImageMatch, ImageTrace, ImageVersion, ReleaseFacts
from registry.records.release import Release
from registry.store.marking import Marking
from registry.trust.credentials import ENV_TRUST, Reader, describe, has_c2pa, problems_of

PHASH_DISTANCE = 4  # max Hamming distance (of 64 bits) for a perceptual match

MAX_IMAGES = 50  # distinct images listed by trace_image


def _images(
    ws: Path, rows: list[tuple], cols: str, paths: dict[str, str], by_ref: dict[str, Release]
) -> list[ImageMatch]:
    """One entry per distinct image matched, with every version holding it (decision, withdrawal,
    sources)."""
    names = [*cols.split(", ")[1:], "distance"]
    images: dict[tuple[str, str], ImageMatch] = {}
    deny = deny_list(ws)
    info: dict[str, ReleaseFacts] = {}
    for row in rows:
        ref = paths[row[0]]
        rec = dict(zip(names, row[1:-1], strict=True))
        key = (rec["sample_id"], rec["image_sha256"])
        if key not in images:
            images[key] = ImageMatch(**{k: v for k, v in rec.items() if k not in ("decision", "reason")})
        if ref not in info:
            info[ref] = release_info(ws, by_ref[ref], None, deny)
        images[key].versions.append(
            ImageVersion(
                release=ref,
                decision=rec["decision"],
                reason=rec["reason"],
                withdrawn=info[ref].withdrawn,
                sources=info[ref].sources,
            )
        )
    return list(images.values())


def trace_image(ws: Path, path: Path | str) -> ImageTrace:
    """An image file -> its sample record(s), the sources of their releases, and every version holding it.

    Exact match on the file's sha256 first; else a perceptual match (phash Hamming distance <= 4)."""
    file = Path(path)
    if not file.is_file():
        raise WorkspaceError(f"image {file} does not exist; pass an image file")
    data = file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    releases = all_releases(ws)
    by_ref = {release_ref(r): r for r in releases}
    paths, missing = manifest_paths(ws, releases)
    cols = (
        "filename, sample_id, image_sha256, phash, dataset, identity, prompt, negative_prompt, seed, "
        "steps, guidance, width, height, generator_name, weights_digest, generator_licence, scheduler, "
        "shard, member, decision, reason"
    )
    # The MAX_IMAGES closest distinct images, with every row (version) of each; `matched` counts all rows.
    first = f"QUALIFY dense_rank() OVER (ORDER BY distance, image_sha256) <= {MAX_IMAGES}"
    rows = query_manifests(
        paths,
        f"{cols}, 0 AS distance, count(*) OVER () AS matched",
        f"WHERE image_sha256 = $sha {first} ORDER BY sample_id",
        {"sha": sha},
    )
    match, phash = "exact", None
    if not rows:
        from registry.core.digests import perceptual_hash

        try:
            phash = perceptual_hash(data)
        except Exception as e:  # PIL raises several types for bytes that are not an image
            raise ReleaseError(f"{file} is not a readable image ({e}); it is in no released version") from e
        match = "perceptual"
        dist = "bit_count(xor(('0x' || phash)::UBIGINT, $phash::UBIGINT))"
        rows = query_manifests(
            paths,
            f"{cols}, {dist} AS distance, count(*) OVER () AS matched",
            f"WHERE {dist} <= {PHASH_DISTANCE} {first} ORDER BY distance, sample_id",
            {"phash": int(phash, 16)},
        )
    if not rows:
        where = f"{len(paths)} released version(s)" + (
            f"; {len(missing)} manifest(s) not on disk" if missing else ""
        )
        raise ReleaseError(
            f"image {file} (sha256 {sha[:16]}..., phash {phash}) is in no released version: no exact "
            f"copy and nothing within perceptual distance {PHASH_DISTANCE} in {where}"
        )
    found = _images(ws, rows, cols, paths, by_ref)
    refs = sorted({v.release for im in found for v in im.versions})
    warnings = [
        f"WITHDRAWN: {v.release} (holding {im.sample_id}) was withdrawn: {v.withdrawn.reason}"
        for im in found
        for v in im.versions
        if v.withdrawn
    ] + missing
    return ImageTrace(
        file=str(file),
        sha256=sha,
        phash=phash,
        match=match,
        images=found,
        versions=refs,
        matched_rows=rows[0][-1],
        images_listed_max=MAX_IMAGES,
        warnings=list(dict.fromkeys(warnings)),
    )


def trace_credentials(
    ws: Path, png: bytes, versions: list[str], image: ImageMatch | None, anchors: str | None
) -> CredentialsCheck:
    """What ``trace image`` adds about C2PA: the file's manifest (read whenever there is one) and, when
    a release holding the matched image asked for C2PA, what is wrong with it. ``versions`` and ``image``
    (the closest match) are from :func:`trace_image`."""
    from registry.store.releases import load_release

    asked = []
    for ref in versions:
        recipe = load_release(ws, ref, bound=False).recipe
        if recipe is not None and recipe.c2pa:
            asked.append(ref)
    found, problems, summary, unchecked = None, [], None, None
    if has_c2pa(png) or asked:
        reader = Reader(anchors, required=bool(asked))  # only a release that asked needs c2pa-python
        try:
            if reader.missing is not None:
                unchecked = reader.missing
                summary = f"a C2PA manifest, not checked: {unchecked}"
            else:
                found = reader.read(png)
        finally:
            reader.close()
        expected = Marking(image.sample_id, image.generator_name, image.weights_digest) if image else None
        if reader.missing is None:
            problems = problems_of(found, expected)
        if asked and anchors is None:
            problems.append(
                f"its signer is unchecked: no C2PA trust anchor is configured (--c2pa-trust / ${ENV_TRUST})"
            )
    return CredentialsCheck(
        asked_by=asked,
        summary=summary or describe(found),
        problems=problems,
        found=found.to_json() if found else None,
        unchecked=unchecked,  # why a manifest the file carries was not read (c2pa-python missing)
    )
