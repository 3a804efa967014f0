"""Releasing a dataset version: gate on the policy report, copy content-addressed, sign, commit, tag.

    release("digits", "1.0.0", ws)   # -> releases/digits/1.0.0/ + git tag digits@v1.0.0

Layout of ``releases/<name>/<version>/`` (all in git except ``data/``, which DVC tracks)::

    release.json           the Release record
    release.dsse.json      DSSE envelope: in-toto Statement v1, subjects = manifest + shards, signed
    policy-report.json     the report the release was gated on (and policy-report.md, to read)
    card.md  croissant.json  prov.json
    report.html            the HTML audit report as at release (registry.exports.report_html)
    README.md              the card again, where Hugging Face `datasets` looks: load_dataset(folder) works
    data.dvc               DVC pointer to data/: manifest.parquet and shards/<sha256>.tar (WebDataset:
                           each image with its .json and .cls sidecar, registry/webdataset.py)

The manifest is released byte for byte as validated (its digest is the report's), and shards are
stored under their own sha256, so a version names its content and two versions share identical
shards. Releases are serialised by a lock on ``.dvc/tmp/synthreg-release.lock`` (ignored by git); the
version folder is assembled under a temporary name (``.X.Y.Z.tmp-<pid>``, which readers skip) and
renamed, then committed and tagged; on any failure it is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from registry import audit
from registry import manifest as mf
from registry.digests import sha256_bytes, sha256_file
from registry.errors import ReleaseError
from registry.fsio import atomic_write_text
from registry.models import DATASET_NAME, Recipe, SourceRef
from registry.policy import PolicyReport
from registry.release_record import Counts, Derivation, GeneratorUse, Release, ShardRef
from registry.shards import check_members
from registry.signing import load_signer, sign, statement
from registry.webdataset import with_sidecars

RELEASES = Path("releases")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name@X.Y.Z`` (or ``name@vX.Y.Z``, or ``name``) -> (name, version or None)."""
    name, _, version = ref.partition("@")
    return name, (version.removeprefix("v") or None)


def versions(ws: Path, name: str) -> list[str]:
    import semver

    folder = ws / RELEASES / name
    found = (
        [p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / "release.json").is_file()]
        if folder.is_dir()
        else []
    )
    return sorted(found, key=semver.Version.parse)


def _git(ws: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReleaseError(f"`git {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _dvc(ws: Path, *args: str) -> None:
    import sys

    dvc = Path(sys.executable).with_name("dvc")
    proc = subprocess.run(
        [str(dvc) if dvc.exists() else "dvc", *args], cwd=ws, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise ReleaseError(f"`dvc {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")


@contextlib.contextmanager
def _lock(ws: Path) -> Iterator[None]:
    path = ws / ".dvc" / "tmp" / "synthreg-release.lock"  # ignored by git (.dvc/.gitignore), unlike releases/
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _gate(ws: Path, name: str, manifest: Path, report_path: Path, today: date) -> tuple[PolicyReport, str]:
    """The policy report the release is gated on, and its text as written (released byte for byte)."""
    if not manifest.is_file():
        raise ReleaseError(f"no filtered manifest for {name} at {manifest}; run `dvc repro` first")
    if not report_path.is_file():
        raise ReleaseError(f"no policy report for {name} at {report_path}; run `synthreg validate` first")
    text = report_path.read_text()
    report = PolicyReport.model_validate_json(text)
    digest = sha256_file(manifest)
    if report.manifest_sha256 != digest:
        raise ReleaseError(
            f"the policy report is stale: made for manifest {report.manifest_sha256[:12]}, "
            f"but the manifest is {digest[:12]}; run `synthreg validate` again"
        )
    failing = [r.rule_id for r in report.results if r.status == "fail"]
    if failing:
        raise ReleaseError(
            f"the policy report has failing error rules without a waiver: {', '.join(failing)}"
        )
    expired = [r.rule_id for r in report.results if r.waiver and r.waiver.expires < today]
    if expired:
        raise ReleaseError(
            f"waivers for {', '.join(expired)} expired since validation; renew them and validate again"
        )
    return report, text


# Recipe fields that declare things about the dataset without shaping any image: they may change
# between generation and release (validate and release read them from the current recipe).
DECLARATIONS = {"description", "licence", "intended_use"}


def _current_recipe(ws: Path, name: str, generation: Path, recipe_path: Path | str | None) -> Recipe:
    """The recipe file as it is now, refused if anything that shapes the images changed since generation."""
    from registry.config import load_params, load_recipe
    from registry.workspace import inside

    if not generation.is_file():
        raise ReleaseError(f"no generation record at {generation}; regenerate the dataset")
    recorded = Recipe.model_validate(json.loads(generation.read_text())["recipe"])
    current = load_recipe(inside(ws, recipe_path or load_params(ws / "params.yaml").recipe, "recipe"))
    if current.dataset != name:
        raise ReleaseError(f"the recipe is for dataset {current.dataset!r}, not {name!r}; pass --recipe")
    changed = sorted(
        k
        for k in Recipe.model_fields
        if k not in DECLARATIONS and getattr(current, k) != getattr(recorded, k)
    )
    if changed:
        raise ReleaseError(
            f"the recipe changed since the images were generated ({', '.join(changed)}); "
            "run `dvc repro` to regenerate, filter and validate, then release"
        )
    return current


def release(
    name: str,
    version: str,
    ws: Path,
    key: Path | str | None = None,
    actor: str | None = None,
    today: date | None = None,
    recipe_path: Path | str | None = None,
    progress: Callable[..., None] | None = None,
) -> Release:
    check_new_version(ws, name, version)
    data = ws / "data" / name
    manifest = data / "filtered" / "manifest.parquet"
    report, report_text = _gate(ws, name, manifest, data / "policy" / "report.json", today or date.today())
    recipe = _current_recipe(ws, name, data / "candidates" / "generation.json", recipe_path)
    if recipe.licence is None:
        raise ReleaseError(f"recipe for {name} declares no licence for the dataset; add `licence:` to it")
    signer = load_signer(key)  # before anything is written

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
            _workspace_shard(ws),
            progress=progress,
        )
        return record, report, report_text

    return publish(ws, name, version, signer, build, f"Release {name}@{version}")


def check_new_version(ws: Path, name: str, version: str) -> None:
    """Refuse a bad name or version, a workspace without git and DVC, and a version that exists or is
    not above the latest (checked first, and again under the lock in ``publish``)."""
    import semver

    if not DATASET_NAME.fullmatch(name):
        raise ReleaseError(f"dataset name {name!r} is not valid (lowercase letters, digits, '-', '_')")
    try:
        semver.Version.parse(version)
    except ValueError:
        raise ReleaseError(f"version {version!r} is not semantic (X.Y.Z, e.g. 1.0.0)") from None
    if not (ws / ".git").exists() or not (ws / ".dvc").is_dir():
        raise ReleaseError(f"workspace {ws} must be a git repository with DVC initialised (`dvc init`)")
    existing = versions(ws, name)
    if version in existing:
        raise ReleaseError(f"{name}@{version} exists already and releases are immutable; pick a new version")
    if existing and semver.Version.parse(version) <= semver.Version.parse(existing[-1]):
        raise ReleaseError(f"version {version} is not greater than the latest, {name}@{existing[-1]}")


def publish(
    ws: Path,
    name: str,
    version: str,
    signer: Any,
    build: Callable[[Path], tuple[Release, PolicyReport, str]],
    message: str,
) -> Release:
    """Make ``releases/NAME/VERSION`` under the release lock: ``build(staging)`` writes the data and
    returns the record, the policy report and its text; then sign, write the exports, rename into place,
    ``dvc add``, audit, commit, tag. On a failure the version's folder is removed and unstaged; the audit
    log is append-only, so an event appended before a failed commit or tag stays (its subject names a
    version that was not made)."""
    with _lock(ws):
        check_new_version(ws, name, version)
        final = ws / RELEASES / name / version
        staging = ws / RELEASES / name / f".{version}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            record, report, report_text = build(staging)
            subjects = {"data/manifest.parquet": record.manifest_sha256} | {
                f"data/{s.path}": s.sha256 for s in record.shards
            }
            payload = record.model_dump(mode="json")
            atomic_write_text(staging / "release.json", json.dumps(payload, indent=2, sort_keys=True) + "\n")
            envelope = sign(statement(subjects, payload), signer)
            atomic_write_text(staging / "release.dsse.json", json.dumps(envelope, indent=2) + "\n")
            _write_exports(staging, record, report, report_text)
            os.replace(staging, final)
            rel = final.relative_to(ws).as_posix()
            _dvc(ws, "add", "-q", f"{rel}/data")
            details: dict[str, Any] = {
                "manifest_sha256": record.manifest_sha256,
                "policy_report_sha256": record.policy_report_sha256,
            }
            if record.derived_from:  # validated by derive itself, not by a validate stage
                audit.append_validation(ws, report, f"{name}@{version}", record.policy_report_sha256)
                details["derived_from"] = record.derived_from.model_dump(mode="json")
            audit.append(ws, "derive" if record.derived_from else "release", f"{name}@{version}", details)
            _git(ws, "add", rel, "audit/events.jsonl")
            _git(ws, "commit", "-q", "-m", message, "--", rel, "audit/events.jsonl")
            _git(ws, "tag", f"{name}@v{version}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if final.exists() and not _tagged(ws, f"{name}@v{version}"):
                shutil.rmtree(final, ignore_errors=True)
                with contextlib.suppress(ReleaseError):
                    _git(ws, "reset", "-q", "--", final.relative_to(ws).as_posix())
            raise
    return record


def _tagged(ws: Path, tag: str) -> bool:
    try:
        return bool(_git(ws, "tag", "--list", tag))
    except ReleaseError:
        return False


def assemble(
    ws: Path,
    name: str,
    version: str,
    manifest: Path,
    report: PolicyReport,
    report_text: str,
    recipe: Recipe,
    out: Path,
    actor: str | None,
    read_shard: ShardReader,
    derivation: Derivation | None = None,
    progress: Callable[..., None] | None = None,
) -> Release:
    """Copy the manifest and content-addressed shards into ``out/data``; build the record.

    ``read_shard(shard, members)`` gives the bytes of the tar the manifest calls ``shard``, holding the
    ``members`` it names. Everything is checked on the copies, under the release lock: the manifest copy
    must be the one the policy report validated (a filter run since the gate would change it), and every
    image in every copied shard must match its recorded sha256, so a corrupt shard is never signed.
    """
    (out / "data" / "shards").mkdir(parents=True)
    released = out / "data" / "manifest.parquet"
    shutil.copyfile(manifest, released)
    manifest_sha256 = sha256_file(released)
    if manifest_sha256 != report.manifest_sha256:
        raise ReleaseError("the filtered manifest changed after validation; run `synthreg validate` again")
    con = mf.connect(released)
    expected: dict[str, dict[str, tuple[str, str]]] = {}
    for sid, shard, member, sha in con.execute(
        "SELECT sample_id, shard, member, image_sha256 FROM manifest"
    ).fetchall():
        expected.setdefault(shard, {})[member] = (sid, sha)
    sidecar_rows = _sidecar_rows(con)
    shards = []
    for i, shard in enumerate(sorted(expected)):
        if progress:  # (shards copied and checked, shards)
            progress(i, len(expected))
        data = read_shard(shard, set(expected[shard]))
        problems, bad_samples = check_members(data, expected[shard], shard)
        if problems:  # e.g. a truncated tar
            raise ReleaseError(f"{problems[0]}; restore the shard (`dvc checkout`) or regenerate")
        if bad_samples:
            bad = sorted(bad_samples)
            raise ReleaseError(
                f"shard {shard} does not hold the recorded images for {len(bad)} sample(s), first {bad[0]}; "
                "restore the shard (`dvc checkout`) or regenerate"
            )
        members = len(expected[shard])
        data = with_sidecars(data, sidecar_rows[shard], list(recipe.identities))  # WebDataset .json/.cls
        digest = sha256_bytes(data)
        (out / "data" / "shards" / f"{digest}.tar").write_bytes(data)  # in staging: renamed whole
        shards.append(
            ShardRef(
                path=f"shards/{digest}.tar",
                source=shard,
                sha256=digest,
                size=len(data),
                members=members,
            )
        )
    if progress:
        progress(len(expected), len(expected))
    per_identity: dict[str, dict[str, int]] = {}
    for identity, decision, n in con.execute(
        "SELECT identity, coalesce(decision, 'unfiltered'), count(*) FROM manifest GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        per_identity.setdefault(identity, {})[decision] = n
    reasons = Counter(
        {
            r: n
            for r, n in con.execute(
                "SELECT split_part(coalesce(reason, 'unfiltered'), ':', 1), count(*) FROM manifest GROUP BY 1"
            ).fetchall()
        }
    )
    total = sum(sum(d.values()) for d in per_identity.values())
    accepted = sum(d.get("accepted", 0) for d in per_identity.values())
    generators = [
        GeneratorUse(
            name=g, backend=b, weights_digest=w, licence=lic, pipeline_class=p, scheduler=s, images=n
        )
        for g, b, w, lic, p, s, n in con.execute(
            "SELECT generator_name, generator_backend, weights_digest, generator_licence, pipeline_class, "
            "scheduler, count(*) FROM manifest GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    ]
    attribution: list[dict] = next(
        (r.evidence.details.get("duties", []) for r in report.results if r.kind == "attribution"), []
    )
    sources: list[SourceRef] = list(recipe.sources) + list(recipe.generator.training_sources)
    return Release(
        name=name,
        version=version,
        manifest_sha256=manifest_sha256,
        shards=shards,
        counts=Counts(
            total=total,
            accepted=accepted,
            rejected=total - accepted,
            per_identity=per_identity,
            reasons=dict(sorted(reasons.items())),
        ),
        generators=generators,
        sources=sources,
        prompt_templates=recipe.prompt_templates,
        seed=recipe.seed,
        policy_report_sha256=sha256_bytes(report_text.encode()),
        policy_passed=report.passed,
        policy_results={r.rule_id: r.status for r in report.results},
        waivers=[r.waiver for r in report.results if r.waiver],
        intended_use=report.intended_use,
        dataset_licence=recipe.licence or "",
        attribution=list(dict.fromkeys(d["text"] for d in attribution)),  # a source may serve two roles
        git_commit=_git(ws, "rev-parse", "HEAD") if _has_commits(ws) else "none",
        created_at=datetime.now(UTC),
        actor=actor or audit.actor_name(ws),
        recipe=recipe,
        derived_from=derivation,
    )


ShardReader = Callable[[str, set[str]], bytes]


def _sidecar_rows(con: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """shard -> member -> the manifest fields a WebDataset sidecar carries."""
    from registry.webdataset import SIDECAR_FIELDS

    cols = ", ".join(SIDECAR_FIELDS)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    cur = con.execute(f"SELECT shard, member, {cols} FROM manifest")
    for shard, member, *values in cur.fetchall():
        out.setdefault(shard, {})[member] = dict(zip(SIDECAR_FIELDS, values, strict=True))
    return out


def _workspace_shard(ws: Path) -> ShardReader:
    def read(shard: str, members: set[str]) -> bytes:
        src = ws / shard
        if not src.is_file():
            raise ReleaseError(f"shard {shard} is missing; restore it (`dvc checkout`) or regenerate")
        return src.read_bytes()

    return read


def _has_commits(ws: Path) -> bool:
    return (
        subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=ws, capture_output=True).returncode
        == 0
    )


def _write_exports(out: Path, record: Release, report: PolicyReport, report_text: str) -> None:
    atomic_write_text(out / "policy-report.json", report_text)
    from registry.exports import croissant_jsonld, prov_json, release_html, render_card, render_markdown

    atomic_write_text(out / "policy-report.md", render_markdown(report))  # the same report, for people
    atomic_write_text(out / "card.md", render_card(record, report))
    atomic_write_text(out / "README.md", render_card(record, report))  # the same card, where `datasets` looks
    atomic_write_text(out / "croissant.json", json.dumps(croissant_jsonld(record, report), indent=2) + "\n")
    atomic_write_text(out / "prov.json", prov_json(record) + "\n")
    atomic_write_text(out / "report.html", release_html(out, record, report))


def load_release(ws: Path, ref: str) -> Release:
    name, version = parse_ref(ref)
    if version is None:
        found = versions(ws, name)
        if not found:
            raise ReleaseError(f"no releases of {name!r}; see `synthreg list`")
        version = found[-1]
    path = ws / RELEASES / name / version / "release.json"
    if not path.is_file():
        raise ReleaseError(f"{name}@{version} is not released; see `synthreg list`")
    try:
        return Release.model_validate_json(path.read_text())
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise ReleaseError(f"{path} is not a valid release record ({e}); restore it from git") from None
