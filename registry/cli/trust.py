"""``synthreg trust``: make, change, show and hand over a versioned trust root (issue 20).

Every change (``add``, ``remove``, ``revoke``, ``set-threshold``) writes a new version of the root,
signed by the keys given with ``--key`` (they must be keys of the current version, as many as its
``root`` threshold); a refused change leaves the root byte for byte as it was. The library is
``registry.trust.rotation``; the one writer, ``registry.trust.root.save_root``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from registry.cli.common import TrustOpt, Workspace, errors, workspace_root

KeysOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--key",
        help="private key of the current root that signs the change (repeat for each signer; default "
        "$SYNTHREG_SIGNING_KEY or ~/.config/synthreg/release.key)",
    ),
]


def _repo(ws: Path) -> Path | None:
    """``ws`` when it is a repository, else None. The workspace defaults to the current folder, and
    `trust` is often run elsewhere (a home folder holds ~/.config/synthreg/), where neither the root nor
    a private key under it is 'inside the workspace'."""
    markers = (".git", ".dvc", "dvc.yaml", "params.yaml")
    return ws if any((ws / m).exists() for m in markers) else None


def _file(ws: Path, trust: Path | None) -> Path:
    from registry.core.errors import TrustError
    from registry.trust.root import trust_path

    file = trust_path(trust)
    repo = _repo(ws)
    if repo is not None and file.resolve().is_relative_to(repo.resolve()):
        raise TrustError(
            f"trust root {file} is inside the workspace, where anyone who can write the repository could "
            "edit it; keep it outside (e.g. ~/.config/synthreg/trust.yaml) and pass --trust"
        )
    return file


def _signers(ws: Path, keys: list[Path] | None) -> list:
    from registry.trust.signing import load_signer

    return [load_signer(k, _repo(ws)) for k in (keys or [None])]  # type: ignore[list-item]


ProposeOpt = Annotated[
    Path | None,
    typer.Option(
        help="when the keys given are too few to sign the change, write it to this file for the other "
        "signers (`synthreg trust sign FILE`) instead of refusing",
    ),
]


def _done(root, file: Path, propose: Path | None = None) -> None:
    from registry.trust.root import load_trust

    if propose is not None and load_trust(None, file, strict=False).root.version < root.version:
        typer.echo(
            f"proposed root version {root.version} in {propose}: more signatures are needed; each signer "
            f"runs `synthreg trust sign {propose} --key KEY` (the root is unchanged until then)"
        )
        return
    typer.echo(f"trust root {file}: version {root.version}, {len(root.keys)} key(s)")


def init(
    name: Annotated[
        str | None, typer.Option(help="solo: your name (default: the name in your key's file)")
    ] = None,
    team: Annotated[
        bool, typer.Option("--team", help="start a team root from --releaser/--approver keys")
    ] = False,
    releaser: Annotated[
        list[Path] | None, typer.Option(help="team: a releaser's keys/<keyid>.pub.json (repeat)")
    ] = None,
    approver: Annotated[
        list[Path] | None, typer.Option(help="team: an approver's keys/<keyid>.pub.json (repeat)")
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(help="team: ROLE=N for releaser, approver or root (repeat; default 1, root 2)"),
    ] = None,
    verifier: Annotated[
        bool, typer.Option("--verifier", help="a machine that only verifies: install --from a team's root")
    ] = False,
    from_: Annotated[
        Path | None, typer.Option("--from", help="verifier: the bundle `synthreg trust export` wrote")
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", help="your private key, which signs version 1 (not for --verifier)"),
    ] = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Make version 1 of a trust root: solo (your key as releaser and approver, thresholds 1), --team
    (the given keys, roles and thresholds), or --verifier (install a team's root; no private key)."""
    with errors():
        from registry.core.errors import TrustError
        from registry.trust import rotation

        ws = workspace_root(workspace)
        file = _file(ws, trust)
        if verifier:
            if from_ is None:
                raise TrustError(
                    "--verifier needs --from FILE: the trust root bundle of the team whose releases you "
                    "verify. Ask whoever keeps the root to run `synthreg trust export FILE` and send it over "
                    "a channel you trust (never through the repository); no key of your own is needed"
                )
            root = rotation.init_verifier(file, from_)
            _done(root, file)
            typer.echo(
                "a verifier: no private key was read or made; verify with `synthreg verify NAME@X.Y.Z`"
            )
            return
        (signer,) = _signers(ws, [key] if key else None)
        if team:
            members = [rotation.Member(p, ["releaser"]) for p in releaser or []]
            members += [rotation.Member(p, ["approver"]) for p in approver or []]
            root = rotation.init_team(file, signer, members, _thresholds(threshold or []))
        else:
            root = rotation.init_solo(file, signer, name or _own_name(ws, signer.public_key.keyid))
        _done(root, file)


def _own_name(ws: Path, keyid: str) -> str:
    from registry.core.errors import TrustError
    from registry.trust.rotation import read_public_key
    from registry.trust.signing import KEYS

    pub = ws / KEYS / f"{keyid}.pub.json"
    if pub.is_file():
        try:
            return read_public_key(pub)[1]
        except TrustError:
            pass
    raise TrustError(
        f"no name for key {keyid[:16]}: pass --name (or make the key with `synthreg keygen --name`)"
    )


def _thresholds(given: list[str]) -> dict[str, int]:
    from registry.core.errors import TrustError

    out = {}
    for item in given:
        role, _, n = item.partition("=")
        if role not in ("releaser", "approver", "root") or not n.isdigit():
            raise TrustError(f"--threshold {item!r}: give ROLE=N, ROLE releaser, approver or root")
        out[role] = int(n)
    return out


def add(
    from_: Annotated[Path, typer.Option("--from", help="the new key's keys/<keyid>.pub.json")],
    role: Annotated[list[str], typer.Option(help="releaser or approver (repeat for both)")],
    name: Annotated[str | None, typer.Option(help="the owner's name (default: the name in the file)")] = None,
    key: KeysOpt = None,
    propose: ProposeOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Add a colleague's key (from the public key file `synthreg keygen` wrote) in a new root version."""
    with errors():
        from registry.trust import rotation

        ws = workspace_root(workspace)
        file = _file(ws, trust)
        member = rotation.Member(from_, role, name)  # type: ignore[arg-type]
        _done(rotation.add(file, _signers(ws, key), member, propose), file, propose)


def remove(
    who: Annotated[str, typer.Argument(help="the key's owner name, or a keyid prefix (8+ hex digits)")],
    key: KeysOpt = None,
    propose: ProposeOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Remove a key (its past signatures still count under the root versions that held it)."""
    with errors():
        from registry.trust import rotation

        ws = workspace_root(workspace)
        file = _file(ws, trust)
        _done(rotation.remove(file, _signers(ws, key), who, propose), file, propose)


def revoke(
    who: Annotated[str, typer.Argument(help="the key's owner name, or a keyid prefix (8+ hex digits)")],
    reason: Annotated[str, typer.Option(help="why (kept in the root)")],
    key: KeysOpt = None,
    propose: ProposeOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Revoke a compromised key: nothing it signed is trusted any more, whatever time it claims."""
    with errors():
        from registry.trust import rotation

        ws = workspace_root(workspace)
        file = _file(ws, trust)
        _done(rotation.revoke(file, _signers(ws, key), who, reason, propose=propose), file, propose)


def set_threshold(
    role: Annotated[str, typer.Argument(help="releaser, approver or root")],
    n: Annotated[int, typer.Argument(help="how many distinct keys must sign")],
    key: KeysOpt = None,
    propose: ProposeOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Set a threshold in a new root version; releases already final stay final (not retroactive)."""
    with errors():
        from registry.trust import rotation

        ws = workspace_root(workspace)
        file = _file(ws, trust)
        _done(rotation.set_threshold(file, _signers(ws, key), role, n, propose), file, propose)


def sign(
    proposal: Annotated[Path, typer.Argument(help="the proposed version (a change's --propose FILE)")],
    key: KeysOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Sign a proposed root version; once enough keys of the current version have signed, it is saved."""
    with errors():
        from registry.trust import rotation
        from registry.trust.root import load_trust

        ws = workspace_root(workspace)
        file = _file(ws, trust)
        new, signed = rotation.sign_proposal(file, proposal, _signers(ws, key))
        if load_trust(None, file, strict=False).root.version == new.version:
            typer.echo(f"trust root {file}: version {new.version}, signed by {', '.join(signed)}")
        else:
            typer.echo(f"{proposal}: signed by {', '.join(signed)}; more signatures are needed")


def show(
    as_json: Annotated[bool, typer.Option("--json", help="the root record as JSON")] = False,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Show the trust root: version, thresholds, each key with its owner, roles and state."""
    with errors():
        import json

        from registry.core.names import shown
        from registry.trust.root import load_trust

        t = load_trust(_repo(workspace_root(workspace)), trust, strict=False)
        if as_json:
            doc = {"path": str(t.path), "versioned": t.version is not None, "unreachable": t.unreachable}
            typer.echo(json.dumps(doc | {"root": t.root.model_dump(mode="json")}, indent=2))
            return
        r = t.root
        what = f"version {r.version}, {len(t.history)} signed version(s)" if t.version else "unversioned"
        typer.echo(f"trust root {t.path} ({what}{', solo' if r.solo else ''})")
        th = r.thresholds
        typer.echo(f"  thresholds: releaser {th.releaser}, approver {th.approver}, root {th.root}")
        for k in r.keys:
            state = (
                f"REVOKED {k.revoked.time:%Y-%m-%d}: {k.revoked.reason}"
                if k.revoked and k.revoked.reason.isprintable()
                else f"REVOKED {k.revoked.time:%Y-%m-%d}: {shown(k.revoked.reason)}"
                if k.revoked
                else f"retired after {k.valid_until:%Y-%m-%d}"
                if k.valid_until
                else "valid"
            )
            who = k.name if k.name.isprintable() else shown(k.name)  # a hostile name stays one line
            typer.echo(f"  {k.keyid[:16]} {who}: {'+'.join(k.roles)}, {state}")
        if t.unreachable:
            typer.echo(f"  warning: {t.unreachable}")


def export(
    out: Annotated[Path, typer.Argument(help="the bundle to write (give it to verifiers)")],
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Write every signed version of the root to one file, for `trust init --verifier` or `trust update`."""
    with errors():
        import json

        from registry.core.fsio import atomic_write_text
        from registry.trust import rotation

        file = _file(workspace_root(workspace), trust)
        bundle = rotation.export(file)
        atomic_write_text(out, json.dumps(bundle, indent=2) + "\n")
        typer.echo(f"wrote {out}: {len(bundle['versions'])} root version(s)")


def update(
    from_: Annotated[Path, typer.Option("--from", help="a newer bundle (`synthreg trust export`)")],
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Accept newer root versions, each only if signed by the version before it (no rollback, no fork)."""
    with errors():
        from registry.trust import rotation

        file = _file(workspace_root(workspace), trust)
        root, added = rotation.update(file, from_)
        typer.echo(f"trust root {file}: version {root.version} ({added} new version(s) accepted)")


COMMANDS = (
    ("init", init),
    ("add", add),
    ("remove", remove),
    ("revoke", revoke),
    ("set-threshold", set_threshold),
    ("sign", sign),
    ("show", show),
    ("export", export),
    ("update", update),
)
