"""Deriving a version that leaves out given samples, or every sample conditioned on a given source.

    derive(ws, "digits@1.0.0", "1.1.0", exclude_samples=["digits-7-000003-..."], reason="subject request")

The new version is a release like any other (``registry.releases.publish``: signed, committed, tagged,
DVC), made from the parent's released files, not from the workspace: its manifest is the parent's without
the excluded rows (accepted and rejected alike), its shards are the parent's (a shard that lost members is
rewritten without them, the others are shared byte for byte: hard-linked to the parent's file where the
file system allows, so that they take no second copy on disk), and its recipe is the parent's without the
excluded sources. The policy packs of ``params.yaml`` are checked again on the new manifest (removing
samples can unbalance it); a failing error rule stops the derivation and nothing is written. The record
names its parent, what was excluded, how many rows that removed, and why (``Release.derived_from``).

A sample depends on a source when the source conditioned its identity (a ``conditioning`` source with
``identities``). A source that conditioned every identity, trained the generator or is training data
underlies every image: excluding it would leave nothing, which is refused with what to do instead.
Filtering and evaluation sources made no image, so excluding one removes nothing and is refused too; and
a source that conditioned some identities but has another role (filtering, say) is refused, because the
new version would still depend on it. The parent is verified first (signature, record, every image).
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from registry.core import allocator, duck
from registry.core.errors import ReleaseError
from registry.core.fsio import Stamp, read_stamped
from registry.core.names import check_line, read_id_file, shown
from registry.records.config import ValidateParams
from registry.records.dataset import Recipe
from registry.records.policy import PolicyReport
from registry.records.release import Derivation, Release
from registry.releases.publish import assemble, check_new_version, publish, resumed
from registry.releases.verify import verify
from registry.store import manifest as mf
from registry.store.journal import DERIVE_TMP_PREFIX, scratch_lock
from registry.store.releases import RELEASES, load_release, release_folder
from registry.store.shards import members_from_bytes, tar_bytes
from registry.trust.signing import load_signer


def excluded_identities(recipe: Recipe, source: str, ref: str) -> set[str]:
    """The identities whose images depend on ``source`` (by name, any case), or a ReleaseError saying
    why excluding it cannot work. Only a source that conditioned named identities, and has no other role
    in the version, can be excluded: any other use would leave the new version depending on it."""
    key = source.casefold()
    named = [s for s in [*recipe.sources, *recipe.generator.training_sources] if s.name.casefold() == key]
    if not named:
        known = sorted({s.name for s in [*recipe.sources, *recipe.generator.training_sources]})
        raise ReleaseError(f"{ref} has no source {source!r}; its sources are {', '.join(known) or 'none'}")
    source = named[0].name  # as the recipe spells it
    roles = sorted({s.role for s in named})
    everything = [
        s
        for s in named
        if s.role in ("generator-training", "training") or (s.role == "conditioning" and s.identities is None)
    ]
    if everything:
        what = {
            "generator-training": f"trained generator {recipe.generator.name}, which made every image of",
            "training": "is training data behind",
            "conditioning": "conditioned every identity of",
        }[everything[0].role]
        raise ReleaseError(
            f"source {source!r} {what} {ref}; nothing would be left. Withdraw the version "
            "(`synthreg withdraw`) and generate again without it"
        )
    conditioned = {i for s in named if s.role == "conditioning" for i in s.identities or []}
    others = [r for r in roles if r != "conditioning"]
    if not conditioned:
        raise ReleaseError(
            f"source {source!r} ({', '.join(roles)}) made no image of {ref}, so excluding it removes no "
            "sample; to stop using it, change the recipe and release a new version"
        )
    if others:
        raise ReleaseError(
            f"source {source!r} conditioned identities {sorted(conditioned)} of {ref} but is also used for "
            f"{', '.join(others)} by every sample, so a version without those identities would still depend "
            "on it; withdraw the version and generate again without it"
        )
    return conditioned


class ParentShards:
    """The parent's content-addressed shards by the name the manifest calls them (``shard``), a
    ``publish.ShardSource``.

    Called with a shard and the image members to keep, it gives a tar of those images, in their order
    (the shard itself when it holds nothing else). ``linkable(shard, data)`` then names the parent's
    file when ``data``, the shard as assembled with its sidecars, is that file's bytes as read, so
    that ``assemble`` links it rather than writing a copy (a shard that lost nothing, issue 22)."""

    def __init__(self, parent_dir: Path, parent: Release) -> None:
        self.by_source = {s.source: parent_dir / "data" / s.path for s in parent.shards}
        self.ref = f"{parent.name}@{parent.version}"
        self.last: tuple[str, bytes, Stamp] | None = None  # the last shard read: its file's bytes, stamp

    def __call__(self, shard: str, members: set[str]) -> bytes:
        path = self.by_source.get(shard)
        if path is None or not path.is_file():
            raise ReleaseError(
                f"shard {shard} of {self.ref} is missing; run `dvc checkout` (or `dvc pull`), then "
                f"`synthreg verify {self.ref}`"
            )
        data, stamp = read_stamped(path)
        try:
            found = members_from_bytes(data)
        except (tarfile.TarError, EOFError) as e:
            raise ReleaseError(
                f"shard {shard} of {self.ref} cannot be read ({e}); run `synthreg verify {self.ref}`"
            ) from e
        self.last = (shard, data, stamp) if stamp is not None else None
        if set(found) == members:
            return data
        return tar_bytes([(m, bytes(found[m])) for m in found if m in members])

    def linkable(self, shard: str, data: bytes) -> Stamp | None:
        last, self.last = self.last, None
        return last[2] if last is not None and last[0] == shard and data == last[1] else None


def _digest_prefix(generator: str) -> str | None:
    """``generator`` as a weights digest prefix (8+ hex, lowercased), or None when it is a name."""
    return generator.lower() if re.fullmatch(r"[0-9a-fA-F]{8,64}", generator) else None


@dataclass(frozen=True)
class Criteria:
    """What else made a sample: leave out every sample whose prompt matches one of ``prompts`` (regular
    expressions), made by one of ``generators`` (a name, or a weights digest prefix of 8+ hex), or of one
    of ``identities`` (issue 19)."""

    prompts: tuple[str, ...] = ()
    generators: tuple[str, ...] = ()
    identities: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.prompts or self.generators or self.identities)

    def check(self, parent: Release, parent_ref: str) -> None:
        """A ReleaseError for a bad regex, or a generator or identity the parent does not have."""
        for p in self.prompts:
            try:
                re.compile(p)
            except re.error as e:
                raise ReleaseError(
                    f"--exclude-prompt {shown(p)} is not a valid regular expression: {e}"
                ) from None
        for g in self.generators:
            hexed = _digest_prefix(g)
            if not any(
                u.name == g or (hexed and u.weights_digest.startswith(hexed)) for u in parent.generators
            ):
                known = ", ".join(f"{u.name} ({u.weights_digest[:12]})" for u in parent.generators)
                raise ReleaseError(
                    f"--exclude-generator {shown(g)} made no sample of {parent_ref}; its generators: {known}"
                )
        unknown = sorted(set(self.identities) - set(parent.counts.per_identity))
        if unknown:
            raise ReleaseError(
                f"--exclude-identity {shown(unknown[0])} is not an identity of {parent_ref} "
                f"({', '.join(sorted(parent.counts.per_identity))})"
            )

    def sample_ids(self, manifest: Path) -> list[str]:
        """The ids of the samples a prompt or generator criterion selects (identities go by identity)."""
        if not (self.prompts or self.generators):
            return []

        hexed = [d for g in self.generators if (d := _digest_prefix(g))]
        con = duck.connect()
        try:
            rows = con.execute(
                "SELECT sample_id FROM read_parquet($m) WHERE "
                "list_bool_or([regexp_matches(prompt, p) for p in $prompts]) "
                "OR list_contains($names, generator_name) "
                "OR list_bool_or([starts_with(weights_digest, d) for d in $digests]) ORDER BY sample_id",
                {
                    "m": str(manifest),
                    "prompts": list(self.prompts) or [""],
                    "names": list(self.generators),
                    "digests": hexed or ["-"],
                },
            ).fetchall()
        finally:
            con.close()
        if self.prompts and not rows and not self.generators:
            raise ReleaseError(
                f"no prompt of the parent matches --exclude-prompt {', '.join(map(shown, self.prompts))}"
            )
        return [r[0] for r in rows]


def _exclusions(
    exclude_samples: list[str] | None,
    exclude_sources: list[str] | None,
    exclude_file: Path | None,
    reason: str,
    criteria: Criteria = Criteria(),
) -> tuple[list[str], list[str], set[str]]:
    """(sample ids, source names, the ids read from ``exclude_file``), or a ReleaseError for nothing to
    exclude or no reason."""
    from_file = set(read_id_file(exclude_file)) if exclude_file is not None else set()
    samples = sorted(set(exclude_samples or []) | from_file)
    sources = list({s.casefold(): s for s in exclude_sources or []}.values())
    if not samples and not sources and not criteria:
        raise ReleaseError(
            "nothing to exclude; give --exclude-sample ID (or --exclude-samples FILE), --exclude-source, "
            "--exclude-prompt, --exclude-generator or --exclude-identity"
        )
    if not reason.strip():
        raise ReleaseError(
            "say why the samples are excluded (--reason); the record and the audit log keep it"
        )
    return samples, sources, from_file


def _derivation(
    parent: Release,
    samples: list[str],
    sources: list[str],
    removed_rows: int,
    removed_accepted: int,
    reason: str,
    criteria: Criteria = Criteria(),
) -> tuple[Recipe, Derivation]:
    """The derived version's recipe (without the excluded conditioning sources) and its derivation."""
    assert parent.recipe is not None  # derive refused a parent without one
    parent_ref = f"{parent.name}@{parent.version}"
    recipe = parent.recipe.model_copy(
        update={
            "sources": [
                s
                for s in parent.recipe.sources
                if not (s.role == "conditioning" and s.name.casefold() in {x.casefold() for x in sources})
            ]
        }
    )
    derivation = Derivation(
        parent=parent_ref,
        parent_manifest_sha256=parent.manifest_sha256,
        excluded_sample_ids=samples,
        excluded_sources=sources,
        excluded_prompts=list(criteria.prompts),
        excluded_generators=list(criteria.generators),
        excluded_identities=list(criteria.identities),
        removed=removed_rows,
        removed_accepted=removed_accepted,
        reason=reason.strip(),
    )

    return recipe, derivation


def derive(
    ws: Path,
    ref: str,
    version: str,
    reason: str,
    exclude_samples: list[str] | None = None,
    exclude_sources: list[str] | None = None,
    key: Path | str | None = None,
    actor: str | None = None,
    params_path: Path | str = "params.yaml",
    today: date | None = None,
    exclude_file: Path | None = None,
    no_push: bool = False,
    progress: Callable[..., None] | None = None,
    criteria: Criteria = Criteria(),
) -> Release:
    """Release ``NAME@version``: the version ``ref`` without the excluded samples and sources (and, by
    ``criteria``, prompts, generators and identities).

    ``exclude_file`` is a file of sample ids, one a line, read only and possibly outside the workspace:
    no message repeats its content. Refused, like a release, while params.yaml, the policy packs or
    waivers are not committed, and with no DVC remote to push to unless ``no_push``."""
    from registry.records.config import load_params
    from registry.releases import inputs as source
    from registry.releases import remote

    check_line(reason, "--reason")
    check_line(actor, "--actor")
    samples, sources, from_file = _exclusions(
        exclude_samples, exclude_sources, exclude_file, reason, criteria
    )
    parent = load_release(ws, ref)
    parent_ref = f"{parent.name}@{parent.version}"
    if parent.recipe is None:
        raise ReleaseError(
            f"{parent_ref} was released before releases kept their recipe, which deriving needs; "
            "release the dataset again from the workspace (`synthreg release`)"
        )
    name = parent.name
    if (finished := resumed(ws, ("derive",), name, version)) is not None:
        return finished
    check_new_version(ws, name, version)
    criteria.check(parent, parent_ref)
    identities: set[str] = set(criteria.identities)
    for s in sources:
        identities |= excluded_identities(parent.recipe, s, parent_ref)
    validate = load_params(ws / params_path, ws).dataset(name, str(params_path)).validate_
    source.require_committed(ws, source.dependencies(ws, name, None, str(params_path)))
    signer = load_signer(key, ws)  # before anything is written
    pushed_to = remote.require(ws, no_push)

    parent_dir = release_folder(ws, name, parent.version)
    parent_manifest = parent_dir / parent.manifest_path
    checked = verify(ws, parent_ref)  # signature, record, manifest, every image: nothing unsigned is copied
    if not checked.ok:
        first = [*(f"sample {k}: {v}" for k, v in sorted(checked.bad_samples.items())), *checked.problems][0]
        raise ReleaseError(f"{parent_ref} does not verify ({first}); run `synthreg verify {parent_ref}`")
    allocator.give_back()  # what verify's passes freed, before the next (issue 22)
    selected = sorted(set(samples) | set(criteria.sample_ids(parent_manifest)))  # by prompt or generator
    removed_rows, removed_accepted = _removed(
        parent_manifest, parent_ref, selected, identities, from_file, exclude_file
    )
    recipe, derivation = _derivation(
        parent, samples, sources, removed_rows, removed_accepted, reason, criteria
    )

    shards = ParentShards(parent_dir, parent)
    parent_filter, parent_manifest_path = parent.filter, parent.manifest_path
    del parent, checked  # the parent's record (18 MB at 10,000 shards) is not held through publish (issue 22)
    tmp_root = ws / ".dvc" / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=f"{DERIVE_TMP_PREFIX}{os.getpid()}-", dir=tmp_root) as tmp,
        scratch_lock(Path(tmp)),  # recovery judges the folder by this lock, not by its pid (issue 24)
    ):
        manifest = Path(tmp) / "manifest.parquet"
        _write_kept(parent_manifest, manifest, selected, identities)
        allocator.give_back()
        report = _checked(ws, manifest, recipe, validate, today, name, version, parent_manifest_path)
        report_text = report.to_json()

        def build(staging: Path) -> tuple[Release, PolicyReport, str]:
            record = assemble(
                ws,
                name,
                version,
                manifest,
                report,
                report_text,
                recipe,
                staging,
                actor,
                shards,
                derivation,
                progress=progress,
            ).model_copy(update={"remote": pushed_to, "no_push": no_push, "filter": parent_filter})
            return record, report, report_text

        return publish(
            ws,
            name,
            version,
            signer,
            build,
            f"Derive {name}@{version} from {parent_ref}: {reason.strip()}",
            op="derive",
        )


def _removed(
    parent_manifest: Path,
    parent_ref: str,
    samples: list[str],
    identities: set[str],
    from_file: set[str],
    exclude_file: Path | None,
) -> tuple[int, int]:
    """(rows, accepted rows) that leaving out ``samples`` and ``identities`` removes from the parent;
    a ReleaseError for an unknown sample, for nothing removed, or for nothing accepted left."""
    # The parent verified above. Its rows are streamed, a batch of the three columns that decide what
    # is left out at a time (issue 22: the whole columns, and a hash set of every sample id, took about
    # 80 bytes a row); only the ids to exclude are held, with whether a batch named each.
    wanted, idents = _lists(samples, identities)  # looked up in Arrow: no Python set of a million ids
    seen = pa.array([False] * len(samples), pa.bool_())
    removed_rows = removed_accepted = kept_accepted = 0
    columns = ["sample_id", "identity", "decision"]
    for batch in mf.batches(parent_manifest, 65536, columns):
        table = pa.Table.from_batches([batch])
        seen = pc.or_(seen, pc.is_in(wanted, value_set=table["sample_id"]))
        drop = _drop(table, wanted, idents)
        accepted = pc.equal(table["decision"], "accepted")
        removed_rows += pc.sum(drop).as_py() or 0
        removed_accepted += pc.sum(pc.and_(drop, accepted)).as_py() or 0
        kept_accepted += pc.sum(pc.and_(pc.invert(drop), accepted)).as_py() or 0
    unknown = sorted(pc.filter(wanted, pc.invert(seen)).to_pylist())
    if unknown:
        raise ReleaseError(
            f"{len(unknown)} sample(s) to exclude are not in {parent_ref}, first "
            f"{'one from ' + str(exclude_file) if unknown[0] in from_file else shown(unknown[0])}; "
            f"check the ids (`synthreg impact --sample ID` finds the versions that hold one)"
        )
    if removed_rows == 0:
        raise ReleaseError(
            f"{parent_ref} holds no sample of identities {sorted(identities)}, so there is nothing to leave "
            "out; check the source (`synthreg impact --source NAME`)"
        )
    if kept_accepted == 0:
        raise ReleaseError(
            f"excluding {removed_rows} sample(s) leaves no accepted sample of {parent_ref}; "
            "withdraw the version (`synthreg withdraw`) instead"
        )
    return removed_rows, removed_accepted


def _checked(
    ws: Path,
    manifest: Path,
    recipe: Recipe,
    validate: ValidateParams,
    today: date | None,
    name: str,
    version: str,
    manifest_path: str,
) -> PolicyReport:
    """The policy check of the derived manifest, refused when an error rule fails without a waiver."""
    from policies.engine import check

    report = check(
        ws,
        manifest,
        recipe,
        validate.packs,
        validate.waivers,
        validate.licences,
        today=today,
        manifest_name=(RELEASES / name / version / manifest_path).as_posix(),
    )
    failing = [r for r in report.results if r.status == "fail"]
    if failing:
        raise ReleaseError(
            f"{name}@{version} would fail error rules without a waiver: "
            + "; ".join(f"{r.rule_id}: {r.message}" for r in failing)
            + ". Exclude less, or waive the rule (`synthreg waive`), then derive again"
        )

    return report


def _drop(table: pa.Table, samples: pa.Array, identities: pa.Array) -> pa.ChunkedArray:
    """True for the rows to leave out: the listed samples and every sample of the listed identities."""
    return pc.or_(
        pc.is_in(table["sample_id"], value_set=samples),
        pc.is_in(table["identity"], value_set=identities),
    )


def _lists(samples: list[str], identities: set[str]) -> tuple[pa.Array, pa.Array]:
    """The sample ids and identities to leave out, as Arrow arrays (made once, used a batch at a time)."""
    return pa.array(samples, pa.string()), pa.array(sorted(identities), pa.string())


def _write_kept(parent: Path, out: Path, samples: list[str], identities: set[str]) -> None:
    """The parent's rows minus the dropped ones, in order, ``mf.ROW_GROUP`` rows at a time (memory flat
    in its size), in row groups of ``mf.group_rows`` rows, as filter writes them (issue 22).

    Read in batches of 65,536 rows of every column from a 10,000,000-row parent's 39,063-row groups, the
    rows held 510 MB; in batches of 4,096, 153 MB. Which rows to drop is decided 16 batches at a time on
    the two columns it needs: pyarrow's ``is_in`` hashes its value set at every call, and 100,000 ids to
    leave out took 19 s over 4,096-row batches at 10M, 1.6 s over 65,536-row ones."""
    source = pq.ParquetFile(parent)
    wanted, idents = _lists(samples, identities)
    per = 16  # row batches a decision covers
    decided = (
        (b.column("sample_id"), pc.invert(_drop(pa.Table.from_batches([b]), wanted, idents)))
        for b in mf.batches(parent, per * mf.ROW_GROUP, ["sample_id", "identity"])
    )
    changed = ReleaseError(f"{parent} changed while derive read it; derive again")
    ids = keep = None
    used = 0
    n = source.metadata.num_rows
    with mf.grouped_writer(out, mf.SCHEMA, mf.group_rows(n), manifest_rows=n) as writer:
        for i, batch in enumerate(mf.batches(source, mf.ROW_GROUP)):
            if i % per == 0:
                ids, keep = next(decided, (None, None))
            at = (i % per) * mf.ROW_GROUP
            # The two reads must be of the same rows: each batch's ids are those its decision was made on.
            if (
                ids is None
                or keep is None
                or not ids.slice(at, batch.num_rows).equals(batch.column("sample_id"))
            ):
                raise changed
            chunk = pa.Table.from_batches([batch]).select(mf.SCHEMA.names).cast(mf.SCHEMA)
            writer.write(chunk.filter(keep.slice(at, chunk.num_rows)))
            used = at + chunk.num_rows
        if (ids is not None and len(ids) != used) or next(decided, None) is not None:
            raise changed
