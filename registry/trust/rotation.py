"""Changing a versioned trust root (``synthreg trust``): each change is a new version signed by the old.

    init_solo(file, signer, name)                      # version 1: one key, both roles, threshold 1
    init_team(file, signer, members, thresholds)       # version 1: the given keys, roles and thresholds
    add(file, signers, pub_file, roles)                # version N+1, signed by version N's keys
    remove(file, signers, who) / revoke(file, signers, who, reason) / set_threshold(file, signers, role, n)
    export(file) -> bundle; init_verifier(file, bundle); update(file, bundle)

Every change is built as a whole new ``TrustRoot`` (version + 1, issued now), checked
(:func:`root_problems`: names unique and printable, a releaser left, every threshold reachable), signed
by the ``signers`` given (keys of the current version; ``thresholds.root`` of them are needed), and
written by ``registry.trust.root.save_root``, which re-checks the signatures against the current
version. A refused change writes nothing: the old root stays byte for byte as it was.

A bundle (``synthreg trust export``) is every signed version in order: what a verifier installs once
over a channel it trusts, and later updates from (each new version must be signed by the one before,
and a bundle that rolls back or forks the versions it holds already is refused).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from registry.core.errors import TrustError
from registry.records.trust import (
    ROLES,
    ROOT_TYPE,
    PublicKeyFile,
    Role,
    Thresholds,
    TrustedKey,
    TrustRoot,
)
from registry.trust.root import (
    check_next,
    history_dir,
    load_trust,
    read_history,
    root_of,
    root_payload,
    root_signers,
    save_root,
    unreachable,
)

BUNDLE_FORMAT = "synthreg-trust-root-bundle/1"


@dataclass(frozen=True)
class Member:
    """A key to put in a root: its public key file and the roles it holds."""

    pub_file: Path
    roles: list[Role]
    name: str | None = None  # overrides (or supplies) the name in the file


def read_public_key(path: Path, name: str | None = None) -> tuple[str, str, str]:
    """(keyid, name, hex public key) from ``keys/<keyid>.pub.json``, refused when the file's keyid is not
    its key's (a wrong or edited file) or no name is known."""
    from registry.records.trust import keyid_of

    try:
        pub = PublicKeyFile.model_validate_json(Path(path).read_bytes())
    except OSError as e:
        raise TrustError(f"public key file {path} cannot be read: {e}") from None
    except ValidationError as e:
        raise TrustError(
            f"public key file {path} is not an ed25519 public key file as `synthreg keygen` writes it: "
            f"{str(e).splitlines()[0]}"
        ) from None
    actual = keyid_of(pub.keytype, pub.scheme, dict(pub.keyval))
    if pub.keyid != actual:
        raise TrustError(
            f"public key file {path} names keyid {pub.keyid[:16]}, but its key's keyid is {actual[:16]}: "
            "the file was edited or mixed up; ask its owner for the file `synthreg keygen` wrote"
        )
    who = name or pub.name
    if not who:
        raise TrustError(f"public key file {path} names no owner (made before names were kept); pass --name")
    return pub.keyid, who, pub.keyval["public"]


def _entry(member: Member) -> TrustedKey:
    keyid, name, public = read_public_key(member.pub_file, member.name)
    _check_name(name)
    roles = list(dict.fromkeys(member.roles))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise TrustError(f"role(s) {unknown or '(none)'} for {name}: a key may be releaser and/or approver")
    return TrustedKey(keyid=keyid, name=name, roles=roles, public=public, valid_from=None)


def _check_name(name: str) -> None:
    if not name.strip() or not name.isprintable():
        raise TrustError(
            f"key owner name {name!r} is empty or holds a newline or control character; give a plain name"
        )


def root_problems(root: TrustRoot, file: Path) -> list[str]:
    """Why ``root`` must not be written: duplicate or unprintable names, no releaser left, a threshold
    no set of valid keys can meet."""
    problems = []
    names = [k.name for k in root.keys]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(
            f"two keys are named {dup!r}: each person holds one key in the root (remove or revoke the old "
            "one first, or give another --name)"
        )
    for n in names:
        if not n.isprintable():
            problems.append(f"key owner name {n!r} holds a newline or control character")
    live = [k for k in root.keys if not k.revoked]
    if not any("releaser" in k.roles for k in live):
        problems.append("no unrevoked key would hold the role releaser: nobody could release; keep one")
    why = unreachable(root, root.thresholds.of_roles(), file, None)
    if why:
        problems.append(why)
    return problems


def sign_root(root: TrustRoot, signers: list) -> dict:
    """A DSSE envelope (``ROOT_TYPE``) over ``root``, signed by each signer."""
    from registry.trust.signing import add_signature, sign

    if not signers:
        raise TrustError("no key given to sign the root; pass --key (repeat it for several keys)")
    envelope = sign(root_payload(root), signers[0], ROOT_TYPE)
    for s in signers[1:]:
        envelope = add_signature(envelope, s)
    return envelope


def _write(
    file: Path, root: TrustRoot, signers: list, prev: TrustRoot | None, propose: Path | None = None
) -> TrustRoot:
    """Check, sign and save ``root``; with ``propose``, a change short of signatures is written there
    instead (the root unchanged), for the other signers' `synthreg trust sign`."""
    problems = root_problems(root, file)
    if problems:
        raise TrustError(f"refused, {file} is unchanged: " + "; ".join(problems))
    envelope = sign_root(root, signers)
    if prev is not None:  # a clear word before save_root's own check
        signed = root_signers(prev, envelope, root.issued or datetime.now(UTC))
        if len(signed) < prev.thresholds.root and propose is not None:
            from registry.core.fsio import atomic_write_text

            atomic_write_text(propose, json.dumps(envelope, indent=2) + "\n")
            return root
        if len(signed) < prev.thresholds.root:
            have = ", ".join(signed) or "none of its keys"
            raise TrustError(
                f"refused, {file} is unchanged: root version {root.version} needs {prev.thresholds.root} "
                f"signature(s) by unrevoked keys of version {prev.version} (signed by: {have}); pass "
                "--key once for each signer"
            )
    return save_root(file, envelope)


def _absent(file: Path) -> None:
    if file.exists() or history_dir(file).exists():
        raise TrustError(
            f"a trust root exists at {file} already; change it with `synthreg trust add|remove|revoke|"
            "set-threshold`, or pass another --trust"
        )


def init_solo(file: Path, signer, name: str) -> TrustRoot:
    """Version 1 of a solo root: the local key as releaser and approver, every threshold 1."""
    _absent(file)
    _check_name(name)
    pub = signer.public_key
    key = TrustedKey(keyid=pub.keyid, name=name, roles=["releaser", "approver"], public=pub.keyval["public"])
    root = TrustRoot(version=1, issued=_now(), solo=True, thresholds=Thresholds(), keys=[key])
    return _write(file, root, [signer], None)


def init_team(file: Path, signer, members: list[Member], thresholds: dict[str, int]) -> TrustRoot:
    """Version 1 of a team root: the given keys and roles, the given thresholds (default 1 each; the
    root's own threshold defaults to 2 when two keys or more can sign). Signed by ``signer``, which must
    be one of the keys."""
    _absent(file)
    keys = [_entry(m) for m in members]
    if signer.public_key.keyid not in {k.keyid for k in keys}:
        raise TrustError("the signing key (--key) must be one of the team's keys (--releaser/--approver)")
    _unique_ids(keys)
    t = {"releaser": 1, "approver": 1, "root": min(2, len(keys))} | thresholds
    root = TrustRoot(version=1, issued=_now(), solo=False, thresholds=Thresholds(**t), keys=keys)
    return _write(file, root, [signer], None)


def _unique_ids(keys: list[TrustedKey]) -> None:
    ids = [k.keyid for k in keys]
    dupes = sorted({i[:16] for i in ids if ids.count(i) > 1})
    if dupes:
        raise TrustError(f"key {', '.join(dupes)} is given more than once")


def _change(
    file: Path, signers: list, edit: Callable[[TrustRoot], TrustRoot], propose: Path | None = None
) -> TrustRoot:
    trust = load_trust(None, file, strict=False)
    if trust.version is None:
        raise TrustError(
            f"trust root {file} is unversioned (written by hand or by `keygen --name`); make a versioned "
            "one with `synthreg trust init` (another --trust path), then move the team to it"
        )
    current = trust.root
    try:
        new = edit(current)
        new = TrustRoot.model_validate(new.model_dump() | {"version": current.version + 1, "issued": _now()})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise TrustError(f"refused, {file} is unchanged: {where}: {first['msg']}") from None
    return _write(file, new, signers, current, propose)


def _find(root: TrustRoot, who: str) -> TrustedKey:
    """A key by its name or a keyid prefix of 8 or more hex digits."""
    found = [k for k in root.keys if k.name == who or (len(who) >= 8 and k.keyid.startswith(who.lower()))]
    if len(found) != 1:
        names = ", ".join(f"{k.name} ({k.keyid[:16]})" for k in root.keys)
        what = "no key" if not found else "more than one key"
        raise TrustError(f"{what} in the trust root matches {who!r}; the keys are: {names}")
    return found[0]


def add(file: Path, signers: list, member: Member, propose: Path | None = None) -> TrustRoot:
    key = _entry(member)

    def edit(root: TrustRoot) -> TrustRoot:
        if root.key(key.keyid):
            raise TrustError(f"refused, {file} is unchanged: key {key.keyid[:16]} is in the root already")
        return root.model_copy(update={"keys": [*root.keys, key]})

    return _change(file, signers, edit, propose)


def remove(file: Path, signers: list, who: str, propose: Path | None = None) -> TrustRoot:
    def edit(root: TrustRoot) -> TrustRoot:
        key = _find(root, who)
        left = [k for k in root.keys if k.keyid != key.keyid]
        if not any("releaser" in k.roles and not k.revoked for k in left):
            raise TrustError(
                f"refused, {file} is unchanged: {key.name} holds the last releaser key; add another "
                "releaser first"
            )
        if not left:
            raise TrustError(f"refused, {file} is unchanged: a root keeps at least one key")
        return root.model_copy(update={"keys": left})

    return _change(file, signers, edit, propose)


def revoke(
    file: Path,
    signers: list,
    who: str,
    reason: str,
    when: datetime | None = None,
    propose: Path | None = None,
) -> TrustRoot:
    """The key is never trusted again: everything it signed fails verify (a compromised key can backdate)."""
    from registry.records.trust import Revocation

    if not reason.strip() or not reason.isprintable():
        raise TrustError("--reason is empty or holds a newline or control character")

    def edit(root: TrustRoot) -> TrustRoot:
        key = _find(root, who)
        if key.revoked:
            raise TrustError(f"refused, {file} is unchanged: {key.name}'s key is revoked already")
        gone = key.model_copy(update={"revoked": Revocation(time=when or _now(), reason=reason)})
        return root.model_copy(update={"keys": [gone if k.keyid == key.keyid else k for k in root.keys]})

    return _change(file, signers, edit, propose)


def set_threshold(file: Path, signers: list, role: str, n: int, propose: Path | None = None) -> TrustRoot:
    if role not in (*ROLES, "root"):
        raise TrustError(f"unknown threshold {role!r}: releaser, approver or root")
    if not 1 <= n <= 100:
        raise TrustError(f"refused, {file} is unchanged: threshold {role}={n}: give a number from 1 to 100")

    def edit(root: TrustRoot) -> TrustRoot:
        t = root.thresholds.model_dump() | {role: n}
        return root.model_copy(update={"thresholds": Thresholds.model_validate(t)})

    return _change(file, signers, edit, propose)


def sign_proposal(file: Path, proposal: Path, signers: list) -> tuple[TrustRoot, list[str]]:
    """Add the ``signers``' signatures to a proposed next version (written by a change with
    ``propose``); when ``thresholds.root`` keys of the current version have signed, it is saved as the
    new version. Returns the proposed root and the names that have signed it."""
    from registry.core.fsio import atomic_write_text
    from registry.trust.signing import add_signature

    try:
        envelope = json.loads(Path(proposal).read_text())
    except (OSError, ValueError) as e:
        raise TrustError(f"proposal {proposal} cannot be read: {e}") from None
    new = root_of(envelope, f"proposal {proposal}")
    current = load_trust(None, file, strict=False)
    if current.version is None or new.version != current.root.version + 1:
        raise TrustError(
            f"proposal {proposal} is root version {new.version}, but {file} is at version "
            f"{current.version}: it is stale (or for another root); propose the change again"
        )
    problems = root_problems(new, file)
    if problems:
        raise TrustError(f"refused, {file} is unchanged: " + "; ".join(problems))
    for signer in signers:
        if current.root.key(signer.public_key.keyid) is None:
            raise TrustError(
                f"key {signer.public_key.keyid[:16]} is not a key of root version {current.version}"
            )
        envelope = add_signature(envelope, signer)
    signed = root_signers(current.root, envelope, new.issued or datetime.now(UTC))
    if len(signed) >= current.root.thresholds.root:
        save_root(file, envelope)
    else:
        atomic_write_text(proposal, json.dumps(envelope, indent=2) + "\n")
    return new, signed


# --- bundles: how a root travels to a verifier ------------------------------------------------------------


def export(file: Path) -> dict:
    """Every signed version of the root at ``file``, in order, as one JSON document."""
    load_trust(None, file, strict=False)  # checks the chain and that trust.yaml is as signed
    folder = history_dir(file)
    if not folder.is_dir():
        raise TrustError(f"trust root {file} is unversioned; only a versioned root can be exported")
    read_history(file)
    paths = sorted(folder.glob("*.root.json"), key=lambda p: int(p.name.split(".", 1)[0]))
    return {"format": BUNDLE_FORMAT, "versions": [json.loads(p.read_text()) for p in paths]}


def _bundle(path: Path) -> list[dict]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise TrustError(
            f"{path} cannot be read as a trust root bundle ({e}); ask for the file `synthreg trust export` "
            "writes"
        ) from None
    versions = doc.get("versions") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT or not isinstance(versions, list):
        raise TrustError(
            f"{path} is not a trust root bundle ({BUNDLE_FORMAT}); ask for the file `synthreg trust "
            "export` writes"
        )
    return versions


def init_verifier(file: Path, bundle: Path) -> TrustRoot:
    """Install a team's root on a machine that only verifies: every version of the bundle, each checked
    against the one before. No private key is read or made."""
    _absent(file)
    envelopes = _bundle(bundle)
    prev = None
    for i, env in enumerate(envelopes):  # all checked before anything is written
        prev = check_next(prev, env, f"{bundle} (version #{i + 1})")
    if prev is None:
        raise TrustError(f"{bundle} holds no root version")
    for env in envelopes:
        save_root(file, env)
    return prev


def update(file: Path, bundle: Path) -> tuple[TrustRoot, int]:
    """Accept the newer versions of a bundle: each must be signed by the one before, starting from the
    version pinned here; a bundle that rolls back, or holds another version under a number pinned here,
    is refused. Returns the current root and how many versions were added."""
    if load_trust(None, file, strict=False).version is None:  # no root at all: says how to get one
        raise TrustError(
            f"trust root {file} is unversioned; install a team's root with `trust init --verifier`"
        )
    history = read_history(file)
    current = max(history)
    envelopes = _bundle(bundle)
    roots = [check_next(None, envelopes[0], str(bundle))] if envelopes else []
    for env in envelopes[1:]:
        roots.append(check_next(roots[-1], env, str(bundle)))
    if not roots:
        raise TrustError(f"{bundle} holds no root version")
    latest = roots[-1].version
    if latest < current:
        raise TrustError(
            f"refused, {file} is unchanged: {bundle} ends at root version {latest}, older than the version "
            f"{current} trusted here (a rollback)"
        )
    for r in roots:
        if r.version in history and r != history[r.version]:
            raise TrustError(
                f"refused, {file} is unchanged: {bundle}'s root version {r.version} differs from the one "
                "trusted here (a fork of the root's history)"
            )
    new = [env for env, r in zip(envelopes, roots, strict=True) if r.version > current]
    for env in new:
        save_root(file, env)
    return roots[-1], len(new)


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "BUNDLE_FORMAT",
    "Member",
    "add",
    "export",
    "init_solo",
    "init_team",
    "init_verifier",
    "read_public_key",
    "remove",
    "revoke",
    "root_problems",
    "set_threshold",
    "sign_proposal",
    "sign_root",
    "update",
]
