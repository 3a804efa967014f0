"""Commands that make, sign and move releases: keygen, release, derive, verify, withdraw, pull, approve,
waive, doctor."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from registry.cli.common import (
    C2paTrustOpt,
    KeyOpt,
    NoPushOpt,
    ParamsOpt,
    TrustOpt,
    Workspace,
    errors,
    load_trust_root,
    progress_bar,
    workspace_root,
)

if TYPE_CHECKING:
    from registry.records.release import Derivation


def keygen(
    key: KeyOpt = None,
    force: Annotated[bool, typer.Option(help="replace an existing private key")] = False,
    name: Annotated[
        str | None, typer.Option(help="your name: also add the key to the trust root (--trust) under it")
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(help="role in the trust root: releaser, approver (repeat; default both)"),
    ] = None,
    trust: TrustOpt = None,
    c2pa: Annotated[
        Path | None,
        typer.Option(
            "--c2pa",
            help="instead: make a TEST C2PA chain (root.pem, chain.pem, signer.key) in this folder",
        ),
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Create an ed25519 signing key outside the workspace, or in a PKCS#11 token (--key pkcs11:...); its
    public key goes to keys/<keyid>.pub.json.

    The public key file names its owner (--name; asked for at a terminal). With --name, the key is also
    added to an unversioned trust root (made solo when new and holding both roles); a versioned root
    (`synthreg trust`) changes only by `synthreg trust init` or `trust add`.
    With --c2pa DIR, make a TEST root and C2PA signer certificate in DIR instead (not for production)."""
    with errors():
        if c2pa is not None:
            from registry.trust.credentials import TEST_CHAIN_WARNING, keygen_c2pa

            c = keygen_c2pa(workspace_root(workspace), c2pa, force)
            typer.echo(f"warning: {TEST_CHAIN_WARNING}")
            typer.echo(f"trust anchor {c.root} (give it to verifiers: SYNTHREG_C2PA_TRUST)")
            typer.echo(f"chain        {c.chain} (SYNTHREG_C2PA_CHAIN)")
            typer.echo(f"signing key  {c.key} (mode 0600; never commit it: SYNTHREG_C2PA_KEY)")
            return
        import sys

        from registry.trust.signing import keygen as run

        add = name is not None
        if name is None and sys.stdin.isatty():  # issue 20: a public key file names its owner
            name = typer.prompt("your name (written into the public key file)")
        r = run(workspace_root(workspace), key, force, name, role, trust, add_to_trust=add)
        where = (
            f"private key {r.private} (mode 0600; never commit it)"
            if isinstance(r.private, Path)
            else f"private key in the token: {r.private} (sensitive, not extractable)"
        )
        typer.echo(f"{where}\npublic key  {r.public} (commit it)")
        if r.trust:
            typer.echo(f"trust root  {r.trust}: key {r.keyid[:16]} added for {name}")
        else:
            typer.echo(
                "trust root  unchanged: start one with `synthreg trust init`, or have its keepers run "
                f"`synthreg trust add --from keys/{r.public.name} --role ...`"
            )


def release(
    name: Annotated[str, typer.Argument(help="dataset name")],
    version: Annotated[str, typer.Option("--version", help="semantic version X.Y.Z")],
    key: KeyOpt = None,
    actor: Annotated[str | None, typer.Option(help="who releases (default: git user.name)")] = None,
    recipe: Annotated[Path | None, typer.Option(help="recipe (default: params.yaml's recipe)")] = None,
    trust: TrustOpt = None,
    no_push: NoPushOpt = False,
    workspace: Workspace = None,
) -> None:
    """Release the filtered manifest of NAME as an immutable, signed version and push its data to the
    workspace's default DVC remote: a candidate until approved (`synthreg approve`), final (tag
    NAME@vX.Y.Z) at once in solo mode."""
    with errors():
        from registry.lineage.openlineage import File, Manifest, ReleaseRef, stage
        from registry.lineage.report import models_seen
        from registry.releases.catalog import release_status
        from registry.releases.release import recheck_summary
        from registry.releases.release import release as run
        from registry.trust.admission import ReleaseStatus

        ws = workspace_root(workspace)
        data = Path("data") / name
        with stage("release", ws, name) as lineage:
            lineage.input(Manifest(data / "filtered" / "manifest.parquet"))
            lineage.input(File(data / "policy" / "report.json", kind="POLICY_REPORT"))
            with progress_bar("release", "shard") as progress:
                r = run(
                    name,
                    version,
                    ws,
                    key,
                    actor,
                    recipe_path=recipe,
                    trust=trust,
                    no_push=no_push,
                    progress=progress,
                    models=models_seen,
                )
            lineage.output(ReleaseRef(r.name, r.version, trust))
        status = release_status(ws, r.name, r.version, load_trust_root(ws, trust))
        what = (
            f"tag {r.name}@v{r.version} ({status})"
            if status.state is not ReleaseStatus.CANDIDATE
            else f"a {status}; approve it with `synthreg approve {r.name}@{r.version}`"
        )
        typer.echo(
            f"released {r.name}@{r.version}: {r.counts.accepted}/{r.counts.total} accepted, "
            f"{len(r.shards)} shard(s), manifest sha256 {r.manifest_sha256}; {what}"
        )
        if (rechecked := recheck_summary(ws, r.name, r.version)) is not None:
            typer.echo(rechecked)


def derive(
    ref: Annotated[str, typer.Argument(help="the parent version, NAME@X.Y.Z")],
    version: Annotated[str, typer.Option("--version", help="the new version X.Y.Z")],
    reason: Annotated[str, typer.Option(help="why (kept in the record, the audit log and the commit)")],
    exclude_sample: Annotated[
        list[str] | None, typer.Option("--exclude-sample", help="a sample id to leave out (repeat)")
    ] = None,
    exclude_samples: Annotated[
        Path | None, typer.Option("--exclude-samples", help="a file of sample ids to leave out, one a line")
    ] = None,
    exclude_source: Annotated[
        list[str] | None,
        typer.Option("--exclude-source", help="leave out every sample conditioned on this source (repeat)"),
    ] = None,
    exclude_prompt: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-prompt", help="leave out every sample whose prompt matches this regex (repeat)"
        ),
    ] = None,
    exclude_generator: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-generator",
            help="leave out every sample this generator made: name or weights digest prefix",
        ),
    ] = None,
    exclude_identity: Annotated[
        list[str] | None,
        typer.Option("--exclude-identity", help="leave out every sample of this identity (repeat)"),
    ] = None,
    key: KeyOpt = None,
    actor: Annotated[str | None, typer.Option(help="who derives (default: git user.name)")] = None,
    no_push: NoPushOpt = False,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
) -> None:
    """Release a new version of a released one without some samples: by id, or every sample of a source,
    prompt pattern, generator or identity.

    Made from the parent's released files; checked again by params.yaml's policy packs; signed and tagged."""
    with errors():
        from registry.lineage.openlineage import ReleaseRef, stage
        from registry.records.dataset import DATASET_NAME
        from registry.releases.derive import Criteria
        from registry.releases.derive import derive as run

        ws = workspace_root(workspace)
        ids = list(exclude_sample or [])
        parent_name, _, parent_version = ref.partition("@")
        named = DATASET_NAME.fullmatch(parent_name) is not None
        # --exclude-samples is read only, so it may be anywhere (a list of ids is often personal)
        with stage("derive", ws, parent_name if named else None) as lineage:
            if named and parent_version:  # NAME alone (the latest version) is known once derive resolves it
                lineage.input(ReleaseRef(parent_name, parent_version))
            with progress_bar("derive", "shard") as progress:
                r = run(
                    ws,
                    ref,
                    version,
                    reason,
                    ids,
                    exclude_source,
                    key,
                    actor,
                    params,
                    exclude_file=exclude_samples,
                    no_push=no_push,
                    progress=progress,
                    criteria=Criteria(
                        tuple(exclude_prompt or ()),
                        tuple(exclude_generator or ()),
                        tuple(exclude_identity or ()),
                    ),
                )
            d = r.derived_from
            assert d is not None
            lineage.input(parent := ReleaseRef(r.name, d.parent.partition("@")[2]))
            lineage.output(ReleaseRef(r.name, r.version, derived_from=parent, left_out_by=_read_by(d)))
        typer.echo(
            f"derived {r.name}@{r.version} from {d.parent}: {d.removed} sample(s) left out "
            f"({d.removed_accepted} accepted), {r.counts.accepted}/{r.counts.total} accepted remain, "
            f"{len(r.shards)} shard(s); tag {r.name}@v{r.version}"
        )


def _read_by(d: Derivation) -> tuple[str, ...]:
    """The manifest columns the derive criteria read to leave rows out (column lineage's FILTER)."""
    used = (
        ("sample_id", d.excluded_sample_ids),
        ("prompt", d.excluded_prompts),
        ("generator_name", d.excluded_generators),
        ("weights_digest", d.excluded_generators),
        ("identity", d.excluded_identities or d.excluded_sources),  # a source conditioned some identities
    )
    return tuple(column for column, criteria in used if criteria)


def verify(
    ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    trust: TrustOpt = None,
    c2pa_trust: C2paTrustOpt = None,
    require: Annotated[
        str,
        typer.Option(
            help="final: exit 0 only for a final release that is not withdrawn (a CI gate), final under "
            "the root version it was approved under; current: also final under the current trust root "
            "version (else exit 8); signed: exit 0 for any intact release, candidate or withdrawn"
        ),
    ] = "final",
    workspace: Workspace = None,
) -> None:
    """Check who signed a release (against the pinned trust root), that it is the version asked for,
    its manifest digest and every image in every shard (and its C2PA credentials, when asked for).

    Exits 1 if anything fails, 5 (UNTRUSTED_EXIT) when a signer is unknown, revoked or out of role; for an
    intact release, 6 (CANDIDATE_EXIT) when it is a candidate and 7 (WITHDRAWN_EXIT) when it is withdrawn,
    unless --require signed; with --require current, 8 (OLDER_ROOT_EXIT) when it is final only under an
    older version of the trust root (thresholds are not retroactive: --require final accepts it)."""
    with errors():
        import json

        from registry.core.errors import SynthregError

        if require not in ("final", "current", "signed"):
            raise SynthregError(f"--require {require!r} is not final, current or signed")
        from registry.releases.verify import verify as run

        with progress_bar("verify") as progress:
            res = run(workspace_root(workspace), ref, trust=trust, progress=progress, c2pa_trust=c2pa_trust)
        if as_json:
            typer.echo(json.dumps(res.to_json(), indent=2))
        else:
            if res.approval:
                typer.echo(f"{res.ref}: {res.approval.summary()}")
                for s in res.approval.signers:
                    typer.echo(f"  signed by {s.line()}")
            if res.withdrawn:
                w = res.withdrawn
                typer.echo(f"  WITHDRAWN on {w.day} by {w.actor}: {w.reason}")
            for p in res.problems:
                typer.echo(f"  problem: {p}")
            from registry.core.names import shown

            def sid_(sid: str) -> str:  # a hostile id (a newline, say) is shown escaped, never raw
                return sid if sid.isprintable() else shown(sid)

            for sid, what in sorted(res.bad_samples.items()):
                typer.echo(f"  sample {sid_(sid)}: {what}")
            final = res.approval is not None and res.approval.met
            if res.unmarked:  # bytes as signed, but no or another marking: made before images were marked
                first = min(res.unmarked)
                n = len(res.unmarked)
                typer.echo(f"  note: {n} image(s) not marked as synthetic, first {sid_(first)}: "
                           f"{res.unmarked[first]}")  # fmt: skip
            if res.c2pa_asked:
                typer.echo(
                    "  C2PA content credentials checked on every image"
                    + (", against the trust anchor" if res.c2pa_trust_checked else " (signer unchecked)")
                )
            typer.echo("  checks:")  # every check, and whether it ran (`--json`: checks)
            for c in res.checklist():
                detail = c["detail"] if c["detail"].isprintable() else shown(c["detail"])
                typer.echo(f"    {c['status']:9} {c['check']}" + (f": {detail}" if detail else ""))
            typer.echo(
                f"{res.ref}: {'OK' if res.ok else 'FAILED'} ({res.samples} samples in {res.shards} shards)"
                + ("" if final or not res.ok else "; a CANDIDATE, not final: approvals missing")
            )
        _verify_exit(res, require)


def _verify_exit(res, require: str) -> None:
    """The exit code of `verify` for a CI gate: 5 untrusted, 1 failed; for an intact release under
    --require final or current, 7 withdrawn, 6 a candidate; under current, 8 final only under an older
    trust root version (issue 20)."""
    from registry.core.errors import CANDIDATE_EXIT, OLDER_ROOT_EXIT, UNTRUSTED_EXIT, WITHDRAWN_EXIT

    if res.untrusted:
        raise typer.Exit(UNTRUSTED_EXIT)
    if not res.ok:
        raise typer.Exit(1)
    gate = require in ("final", "current")
    if gate and res.withdrawn:
        raise typer.Exit(WITHDRAWN_EXIT)
    if gate and not (res.approval is not None and res.approval.met):
        raise typer.Exit(CANDIDATE_EXIT)
    if require == "current" and res.approval is not None and res.approval.older_root:
        raise typer.Exit(OLDER_ROOT_EXIT)


def withdraw(
    ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z")],
    reason: Annotated[str, typer.Option(help="why it is withdrawn (recorded and committed)")],
    actor: Annotated[str | None, typer.Option(help="who withdraws (default: git user.name)")] = None,
    key: KeyOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Withdraw a release: a signed withdrawal.dsse.json beside the signed record (left as is), audit
    event, git commit. The key must be a releaser's or an approver's in the trust root."""
    with errors():
        from registry.lineage.openlineage import ReleaseRef, stage
        from registry.records.dataset import DATASET_NAME
        from registry.releases.withdraw import withdraw as run

        ws = workspace_root(workspace)
        name, _, version = ref.partition("@")
        known = DATASET_NAME.fullmatch(name) is not None
        with stage("withdraw", ws, name if known else None) as lineage:
            if known:
                lineage.input(ReleaseRef(name, version, trust))
            w = run(ws, ref, reason, actor, key, trust)
            lineage.output(ReleaseRef(name, version, trust))
        typer.echo(f"withdrew {w.release} ({w.time:%Y-%m-%dT%H:%M:%S} by {w.actor}): {w.reason}")


def approve(
    ref: Annotated[str, typer.Argument(help="the candidate release, NAME@X.Y.Z")],
    key: KeyOpt = None,
    role: Annotated[
        str, typer.Option(help="the role you sign in: approver (default) or releaser")
    ] = "approver",
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Add your signature to a candidate release; when the thresholds are met it becomes final (tagged)."""
    with errors():
        from registry.releases.approve import approve as run

        state = run(workspace_root(workspace), ref, key, trust, role)  # type: ignore[arg-type]
        typer.echo(f"{state.ref}: {state.summary()}")
        for s in state.signers:
            typer.echo(f"  signed by {s.line()}")
        name, _, version = state.ref.partition("@")
        typer.echo(
            f"final: tag {name}@v{version}" if state.met else "still a candidate: more approvals needed"
        )


def waive(
    rule_id: Annotated[str, typer.Argument(help="the rule to waive, as the policy report names it")],
    scope: Annotated[str, typer.Option(help="dataset name the waiver covers, or '*' for every dataset")],
    reason: Annotated[str, typer.Option(help="why (kept in the signed waiver, the report and the card)")],
    expires: Annotated[str, typer.Option(help="last day the waiver applies, YYYY-MM-DD")],
    key: KeyOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Sign a waiver with an approver's key: waivers/*.dsse.json, audit event, git commit.

    validate and release count only signed waivers by a trusted approver that have not expired."""
    with errors():
        from datetime import date

        from registry.core.errors import PolicyError
        from registry.releases.waive import waive as run

        try:
            until = date.fromisoformat(expires)
        except ValueError:
            raise PolicyError(f"--expires {expires!r} is not a date (YYYY-MM-DD)") from None
        path, w = run(workspace_root(workspace), rule_id, scope, reason, until, key, trust)
        typer.echo(
            f"waived {w.rule_id} for {w.scope} until {w.expires}, signed by {w.approver} "
            f"(approver key {w.keyid[:16]}): {path}"
        )


def pull(
    ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z, as `synthreg list` shows it")],
    workspace: Workspace = None,
) -> None:
    """Fetch exactly one release's data from the default DVC remote into this clone, then check its
    signature and every file against its signed sha256 (exit 1, with the missing or damaged files
    removed, if anything is wrong); `synthreg verify` then checks each image inside the shards.
    Progress on stderr: files fetched, then files checked (counted in images)."""
    with errors():
        from registry.releases.remote import pull as run

        ws = workspace_root(workspace)
        with progress_bar("pull", "file") as fetched, progress_bar("verify") as verified:
            res = run(ws, ref, progress=fetched, verify_progress=verified)
        typer.echo(
            f"pulled {res.ref} from {res.remote}: {res.samples} samples in {res.shards} shards, signature "
            f"and every file match what was signed; `synthreg verify {res.ref}` checks each image"
        )


def doctor(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="finish or roll back interrupted operations, finish half-made versions that verify, "
            "remove stale temp folders",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    workspace: Workspace = None,
) -> None:
    """Report unfinished operations, stale temporary folders and half-made versions (exit 1 if any left)."""
    with errors():
        import json

        from registry.releases.doctor import doctor as run

        res = run(workspace_root(workspace), repair)
        if as_json:
            typer.echo(json.dumps(res.to_json(), indent=2))
        else:
            for f in res.findings:
                state = (
                    f"repaired: {f.hint}" if f.repaired and f.hint else "repaired" if f.repaired else f.hint
                )
                typer.echo(f"  {f.kind}: {f.what}" + (f" ({state})" if state else ""))
            left = len(res.unrepaired)
            typer.echo(
                "doctor: nothing to repair"
                if not res.findings
                else f"doctor: {len(res.findings)} problem(s), {left} left"
                + ("" if repair or not left else "; run `synthreg doctor --repair`")
            )
        if res.unrepaired:
            raise typer.Exit(1)
