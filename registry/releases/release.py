"""`synthreg release`: gate a dataset on its policy report, re-check it, then publish it signed.

    release("digits", "1.0.0", ws)   # -> releases/digits/1.0.0/ + git tag digits@v1.0.0

Refused, before anything is written, when the report fails or is stale, when the recipe changed since
generation in anything that shapes the images, when a file the release depends on is not committed, when
the key is not a releaser's in the pinned trust root, or when a fresh policy check disagrees with the
report. The folder's layout and the journalled publication are ``registry.releases.publish``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import date
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from registry.core import stack
from registry.core.digests import sha256_file
from registry.core.errors import ReleaseError
from registry.core.names import check_line
from registry.core.workspace import inside
from registry.records.dataset import Recipe
from registry.records.policy import PolicyReport
from registry.records.release import FilterSettings, Release
from registry.releases.publish import assemble, check_new_version, publish, resumed
from registry.releases.report import ModelsReader
from registry.trust.signing import load_signer

T = TypeVar("T")

if TYPE_CHECKING:
    from policies.engine import Recheck


def _gate(ws: Path, name: str, manifest: Path, report_path: Path, today: date) -> tuple[PolicyReport, str]:
    """The policy report the release is gated on, and its text as written (released byte for byte)."""
    if not manifest.is_file():
        raise ReleaseError(f"no filtered manifest for {name} at {manifest}; run `dvc repro` first")
    if not report_path.is_file():
        raise ReleaseError(f"no policy report for {name} at {report_path}; run `synthreg validate` first")
    text = report_path.read_text()
    try:
        report = PolicyReport.model_validate_json(text)
    except ValueError:  # pydantic's ValidationError; e.g. a report written by an older synthreg
        raise ReleaseError(
            f"{report_path} is not a policy report this synthreg can read (edited, or written by an older "
            "version); run `synthreg validate` (or `dvc repro`) again"
        ) from None
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


def _recipe_file(ws: Path, name: str, recipe_path: Path | str | None) -> Path:
    from registry.core.workspace import inside
    from registry.records.config import load_params

    return inside(ws, recipe_path or load_params(ws / "params.yaml", ws).dataset(name).recipe, "recipe")


def _current_recipe(
    ws: Path, name: str, generation: Path, recipe_path: Path | str | None
) -> tuple[Recipe, list[str]]:
    """The recipe file as it is now and the declarations changed since generation; refused if anything
    that shapes the images changed (with the one command that regenerates)."""
    from registry.records.config import load_params, load_recipe
    from registry.records.dataset import recipe_changes

    if not generation.is_file():
        raise ReleaseError(f"no generation record at {generation}; regenerate the dataset")
    recorded = Recipe.model_validate(json.loads(generation.read_text())["recipe"])
    current = load_recipe(_recipe_file(ws, name, recipe_path))
    if current.dataset != name:
        raise ReleaseError(f"the recipe is for dataset {current.dataset!r}, not {name!r}; pass --recipe")
    shaping, declared = recipe_changes(recorded, current)
    if shaping:
        staged = name in load_params(ws / "params.yaml", ws).names
        redo = (
            f"`dvc repro validate@{name}`"
            if staged
            else f"`synthreg generate {_recipe_file(ws, name, recipe_path).relative_to(ws.resolve())}`, "
            f"`synthreg filter data/{name}/candidates` and `synthreg validate data/{name}/filtered`"
        )
        raise ReleaseError(
            f"the recipe changed since the images were generated, in what shapes them "
            f"({', '.join(shaping)}); "
            f"run {redo} to regenerate, filter and validate, then release"
        )
    return current, declared


def release(
    name: str,
    version: str,
    ws: Path,
    key: Path | str | None = None,
    actor: str | None = None,
    today: date | None = None,
    recipe_path: Path | str | None = None,
    trust: Path | str | None = None,
    no_push: bool = False,
    progress: Callable[..., None] | None = None,
    models: ModelsReader | None = None,
) -> Release:
    """Release ``data/<name>/filtered`` as ``name@version``. Refused, before anything is written, when a
    file it depends on is not committed (``registry.releases.inputs``), when the key is not a releaser's in
    the pinned trust root, when report.json disagrees with a fresh check of the manifest, and when there
    is no DVC remote to push to unless ``no_push``. ``models`` reads the MLflow store for the report
    (``registry.lineage.report.models_seen``, the CLI's; None: the report says it was not asked)."""
    check_line(actor, "--actor")
    from registry.releases import inputs as source
    from registry.releases import remote
    from registry.trust.root import load_trust

    if (finished := resumed(ws, ("release",), name, version)) is not None:
        return finished
    check_new_version(ws, name, version)
    data = ws / "data" / name
    manifest = data / "filtered" / "manifest.parquet"
    report, report_text = _gate(ws, name, manifest, data / "policy" / "report.json", today or date.today())
    recipe, declared = _current_recipe(ws, name, data / "candidates" / "generation.json", recipe_path)
    if recipe.licence is None:
        raise ReleaseError(f"recipe for {name} declares no licence for the dataset; add `licence:` to it")
    source.require_committed(ws, source.dependencies(ws, name, _recipe_file(ws, name, recipe_path)))
    source.require_manifest_recorded(ws, manifest)
    signer = load_signer(key, ws)  # before anything is written, and before the slower re-check
    trusted = load_trust(ws, trust)
    trusted.signing_key(signer.public_key.keyid, "releaser")
    pushed_to = remote.require(ws, no_push)
    rechecked = _recheck(ws, name, manifest, recipe, report, report_text, today or date.today())
    # Once the re-check has passed, the MLflow store is asked on a thread while the shards are copied,
    # and the report waits for its answer (issue 22: MLflow's import and its store check were 3-4 s of a
    # release at 100,000 images, one after the other with the rest). A refusal never asks it, and a
    # release that fails or is interrupted does not wait for it. A store that hangs keeps the release
    # lock until MLflow gives up (its own timeouts), since the report is written under that lock.
    seen = _aside(partial(models, ws, name)) if models is not None else None

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
            WorkspaceShards(ws),
            progress=progress,
        ).model_copy(
            update={
                "remote": pushed_to,
                "no_push": no_push,
                "recipe_changes": declared,
                "filter": _filter_settings(data / "filtered"),
            }
        )
        return record, report, report_text

    return publish(
        ws,
        name,
        version,
        signer,
        build,
        f"Release {name}@{version}",
        trust=trusted,
        models=seen,
        details={"policy_recheck": {"reused": rechecked.reused, "ran": rechecked.ran, "why": rechecked.why}},
    )


def _aside(ask: Callable[[], T]) -> Callable[[], T]:
    """Start ``ask`` on a daemon thread; the function returned waits for its answer, or raises its error.
    Nothing joins the thread, so a release refused or interrupted meanwhile exits without waiting."""
    answer: Future[T] = Future()

    def run() -> None:
        try:
            answer.set_result(ask())
        except BaseException as e:  # handed to whoever waits, in the release's own thread
            answer.set_exception(e)

    threading.Thread(target=stack.deep, args=(run,), name="models-seen", daemon=True).start()
    return answer.result


def _recheck(
    ws: Path, name: str, manifest: Path, recipe: Recipe, report: PolicyReport, report_text: str, today: date
) -> Recheck:
    """Run the policy check again on the manifest, with the dataset's own settings, and refuse when
    ``report.json`` says otherwise: the report is a file anyone with write access can edit, the check is
    not. Settings that differ from the ones the report was made with are named first. A rule's outcome is
    reused from validate only when validate wrote exactly ``report_text`` from the same inputs
    (``policies.reuse``); its waiver is decided again."""
    from policies.engine import recheck
    from registry.records.config import load_params

    v = load_params(ws / "params.yaml").dataset(name).validate_
    fresh, rechecked = recheck(ws, manifest, recipe, report_text, v.packs, v.waivers, v.licences, today)
    same_settings(report, fresh, f"params.yaml's datasets.{name}.validate")
    said = {r.rule_id: (r.status, r.waiver) for r in report.results}
    found = {r.rule_id: (r.status, r.waiver) for r in fresh.results}
    for rule in sorted(set(said) | set(found)):
        if said.get(rule) != found.get(rule):
            s, f = said.get(rule, ("absent", None)), found.get(rule, ("absent", None))
            how = f"{s[0]}" + (f" (waived by {s[1].approver})" if s[1] else "")
            raise ReleaseError(
                f"report.json says rule {rule} is {how}, but checking the manifest again gives {f[0]}"
                + (f" (waived by {f[1].approver})" if f[1] else "")
                + "; the report was edited or is out of date: run `synthreg validate` again"
            )
    return rechecked


def recheck_summary(ws: Path, name: str, version: str) -> str | None:
    """What the policy re-check of ``name@version`` reused and ran again, in one line, as its release
    event in the audit log records it (None: a release made before the event recorded it)."""
    from policies.engine import Recheck
    from registry.store import audit

    for event in reversed(audit.read(ws)):
        if event.kind == "release" and event.subject == f"{name}@{version}":
            d = event.details.get("policy_recheck")
            return Recheck(d["reused"], d["ran"], d["why"]).summary() if isinstance(d, dict) else None
    return None


def same_settings(report: PolicyReport, fresh: PolicyReport, where: str) -> None:
    """Refuse when ``report`` was made with other packs, another licence base or other waivers than the
    check now (``fresh``): which setting differs, and from where, rather than a rule that disagrees."""
    if report.packs != fresh.packs:
        then, now = sorted(report.packs), sorted(fresh.packs)
        differ = (
            f"{then} before they were edited (their content differs now)"
            if then == now
            else f"{then}, but {where} names {now}"
        )
        raise ReleaseError(
            f"the policy report was made with packs {differ}; run `synthreg validate` (or `dvc repro`) "
            "with the dataset's settings, then release"
        )
    for what, made, named in (
        ("licence base", report.licence_kb_sha256, fresh.licence_kb_sha256),
        ("waivers file", report.waivers_sha256, fresh.waivers_sha256),
    ):
        if made != named:
            raise ReleaseError(
                f"the policy report was made with another {what} (sha256 {str(made)[:12]}) than {where} "
                f"names now ({str(named)[:12]}); run `synthreg validate` again, then release"
            )


def _filter_settings(folder: Path) -> FilterSettings | None:
    """The filter's settings, scoring models and unrun checks, from ``filter-info.json`` beside the
    filtered manifest, or from ``filter.json`` where a filter run before issue 23 kept them there (None
    when there is neither, e.g. a manifest filtered before filter.json existed)."""
    from pydantic import ValidationError

    found: dict = {}
    for name in ("filter.json", "filter-info.json"):  # the side file's values win where both hold one
        path = folder / name
        if not path.is_file():
            continue
        try:
            read = json.loads(path.read_text())
        except ValueError:
            read = None
        if not isinstance(read, dict):
            raise ReleaseError(f"{path} is not the filter's summary; run `synthreg filter` again")
        found |= read
    if not found:
        return None
    try:
        return FilterSettings(
            params=found["params"], domain=found.get("domain"), not_checked=found.get("not_checked", [])
        )
    except (KeyError, TypeError, ValidationError):
        raise ReleaseError(
            f"{folder / 'filter-info.json'} is missing or is not the filter's summary; run `synthreg "
            "filter` (or `dvc repro`) again"
        ) from None


class WorkspaceShards:
    """The workspace's shards, by the path the manifest names (a ``publish.ShardSource``): read whole,
    never linked (a release's shards gain their sidecars)."""

    def __init__(self, ws: Path) -> None:
        self.ws = ws

    def __call__(self, shard: str, members: set[str]) -> bytes:
        src = inside(self.ws, shard, "shard")  # symlinks included
        if not src.is_file():
            raise ReleaseError(f"shard {shard} is missing; restore it (`dvc checkout`) or regenerate")
        return src.read_bytes()

    def linkable(self, shard: str, data: bytes) -> None:
        return None
