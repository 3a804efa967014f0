"""The trust root: which keys may sign what, pinned outside the workspace (TUF's root, REFERENCE §11).

    trust = load_trust(ws)                     # --trust FILE, else $SYNTHREG_TRUST, else ~/.config/...
    trust.check_signer(keyid, "approver", at)  # -> (key, None) or (key or None, why it is not trusted)
    trust.version, trust.at_version(2)         # a versioned root: its version; the root as it was at v2
    save_root(file, envelope, root)            # the ONE way a new root version is written

Anyone who can push to the repository can put a public key in it, so no key is trusted because the
repository holds it: the verifier reads ``trust.yaml`` from a path it controls and refuses one inside the
workspace. The file names each key by its securesystemslib keyid, with the person's name, the roles it
may sign in (``releaser``, ``approver``), a validity window and a revocation, and pins the thresholds a
release needs. A repository's ``policies/release.yaml`` may raise a threshold, never lower it (an insider
could lower a repository-held one). ``solo: true`` lets one key holding both roles satisfy both.

A signature made inside a key's validity window stays valid after the window closes (rotation: the old
key is retired, its releases still verify). A revoked key is never trusted again, whatever time its
signatures claim, because whoever holds a compromised key can also backdate.

Versioned roots (issue 20, TUF's root metadata). ``synthreg trust`` keeps every version of the root as a
DSSE envelope in ``trust.roots/<N>.root.json`` beside ``trust.yaml`` (which holds the newest version, for
people to read). Version 1 is what the verifier pinned (it came over a channel the verifier trusts);
every later version must be signed by ``thresholds.root`` distinct keys of the version before it, so a
root changes only when the old root approves. Each load re-checks the whole chain, and a ``trust.yaml``
that differs from its signed version (edited by hand) is refused. A root with no ``issued`` time and no
history is an *unversioned* root (written by hand or by ``keygen --name``), read exactly as before.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from registry.core.errors import TrustError
from registry.records.trust import ROLES, ROOT_TYPE, ReleasePolicy, Role, Thresholds, TrustedKey, TrustRoot

DEFAULT_TRUST = Path("~/.config/synthreg/trust.yaml")
RELEASE_POLICY = Path("policies") / "release.yaml"
GET_ROOT = (
    "To verify a team's releases, get its trust root from whoever keeps it, over a channel you trust "
    "(never from the repository): they run `synthreg trust export FILE`, you run `synthreg trust init "
    "--verifier --from FILE` (or pass a trust.yaml with --trust FILE / SYNTHREG_TRUST)"
)


class Trust:
    """A loaded trust root, where it was read from, and the thresholds in force for a workspace.

    ``version`` is None for an unversioned root; for a versioned one ``history`` holds every version
    (checked: each signed by the one before), ``policy`` the workspace's raised thresholds and
    ``unreachable`` why no set of keys could meet the thresholds now (None when they can)."""

    def __init__(
        self,
        root: TrustRoot,
        path: Path,
        thresholds: dict[str, int],
        history: dict[int, TrustRoot] | None = None,
        policy: dict[str, int] | None = None,
        unreachable: str | None = None,
    ) -> None:
        self.root, self.path, self.thresholds = root, path, thresholds
        self.history = history or {}
        self.policy = policy or {}
        self.unreachable = unreachable

    @property
    def solo(self) -> bool:
        return self.root.solo

    @property
    def version(self) -> int | None:
        """The root's version when it is versioned (signed history), else None."""
        return self.root.version if self.history else None

    def check_signer(self, keyid: str, role: Role, when: datetime) -> tuple[TrustedKey | None, str | None]:
        return self.root.check_signer(keyid, role, when)

    def issued(self, version: int) -> datetime | None:
        root = self.history.get(version)
        return root.issued if root else None

    def at_version(self, version: int) -> Trust | None:
        """The root as it was at ``version`` (its keys, roles and thresholds, the workspace policy's raise
        applied), with what the current root says since: a key revoked or retired now is revoked or
        retired there too (revocation is never undone by judging under an older root). None when the
        history holds no such version."""
        old = self.history.get(version)
        if old is None:
            return None
        now = {k.keyid: k for k in self.root.keys}
        keys = []
        for k in old.keys:
            cur = now.get(k.keyid)
            if cur is not None:
                k = k.model_copy(update={"revoked": cur.revoked, "valid_until": cur.valid_until})
            keys.append(k)
        root = old.model_copy(update={"keys": keys})
        thresholds: dict[str, int] = {
            r: max(getattr(old.thresholds, r), self.policy.get(r, 0)) for r in ROLES
        }
        return Trust(root, self.path, thresholds, self.history, self.policy)

    def signing_key(self, keyid: str, role: Role) -> TrustedKey:
        """The trust root's entry for a key about to sign as ``role`` now; refused before anything is
        written when the key is unknown, revoked, retired, or lacks the role."""
        key, why = self.check_signer(keyid, role, datetime.now(UTC))
        if why:
            index = next((i for i, k in enumerate(self.root.keys) if k.keyid == keyid), None)
            field = "" if index is None else f" (keys[{index}])"
            raise TrustError(f"cannot sign as {role}: {why}{field} in {self.path}")
        assert key is not None
        return key


def trust_path(path: Path | str | None = None) -> Path:
    return Path(path or os.environ.get("SYNTHREG_TRUST") or DEFAULT_TRUST).expanduser()


def history_dir(file: Path) -> Path:
    """Where the signed versions of the root at ``file`` are kept: ``trust.yaml`` -> ``trust.roots/``."""
    return file.with_name(f"{file.stem}.roots")


def load_trust(ws: Path | None, path: Path | str | None = None, strict: bool = True) -> Trust:
    """The pinned trust root (refused when it lies inside ``ws``), with the workspace's thresholds.

    ``strict`` (what signers use) refuses a root whose thresholds no set of valid keys could meet;
    readers (list, show, log, verify, the loader) pass False and get the reason in ``unreachable``:
    a release final under an earlier root version must still read (issue 20)."""
    from registry.records.config import load_yaml_model

    file = trust_path(path)
    if ws is not None and file.resolve().is_relative_to(ws.resolve()):
        raise TrustError(
            f"trust root {file} is inside the workspace, where anyone who can write the repository could "
            "edit it; keep it outside (e.g. ~/.config/synthreg/trust.yaml) and pass --trust or "
            "SYNTHREG_TRUST"
        )
    if not file.is_file():
        raise TrustError(  # issue 20: a verifier told to make a solo key then trusted nobody
            f"no trust root at {file}. {GET_ROOT}. To sign releases yourself, alone, create one with "
            "`synthreg keygen --name NAME` then `synthreg trust init` (a solo root trusts only your own key)"
        )
    root = load_yaml_model(file, TrustRoot, "trust root", TrustError)
    history: dict[int, TrustRoot] = {}
    if root.issued is not None or history_dir(file).is_dir():
        history = read_history(file)
        latest = history[max(history)]
        if root != history.get(root.version):
            raise TrustError(
                f"trust root {file} (version {root.version}) differs from its signed version in "
                f"{history_dir(file)}: it was edited by hand. Change a versioned root only with `synthreg "
                "trust` commands; restore it with `synthreg trust show` and the signed history, or get the "
                "root again"
            )
        root = latest  # an interrupted save wrote the history first: the newest signed version holds
    policy_raise: dict[str, int] = {}
    thresholds = root.thresholds.of_roles()
    policy = ws / RELEASE_POLICY if ws is not None else None
    if policy is not None and policy.is_file():
        raised = load_yaml_model(policy, ReleasePolicy, "release policy", TrustError).thresholds
        policy_raise = {str(r): n for r, n in raised.items()}
        thresholds = {r: max(thresholds[r], policy_raise.get(r, 0)) for r in ROLES}
    why = unreachable(root, thresholds, file, policy)
    if why and strict:
        raise TrustError(why)
    return Trust(root, file, thresholds, history, policy_raise, why)


def unreachable(root: TrustRoot, thresholds: dict[str, int], file: Path, policy: Path | None) -> str | None:
    """Why no set of valid keys could meet a threshold (naming it), or None."""
    now = datetime.now(UTC)
    live = [k for k in root.keys if not k.revoked and not (k.valid_until and k.valid_until < now)]
    own = root.thresholds.of_roles()
    for role in ROLES:
        n = sum(role in k.roles for k in live)
        if n < thresholds[role]:
            where = f"{file} (thresholds.{role}={own[role]})"
            if thresholds[role] > own[role] and policy is not None:
                where = f"{policy} (thresholds.{role}={thresholds[role]})"
            return (
                f"threshold {role}={thresholds[role]} in {where} cannot be met: only {n} valid, unrevoked "
                f"key(s) hold the role {role} in {file}; add keys or lower the threshold"
            )
    if not root.solo and len({k.keyid for k in live}) < thresholds["releaser"] + thresholds["approver"]:
        return (
            f"thresholds releaser={thresholds['releaser']} + approver={thresholds['approver']} in {file} "
            f"need that many distinct keys (solo is off), but only {len(live)} are valid; add keys or set "
            "solo: true"
        )
    if root.issued is not None and len(live) < root.thresholds.root:
        return (
            f"threshold root={root.thresholds.root} in {file} cannot be met: only {len(live)} valid, "
            "unrevoked key(s); nobody could sign the next version of the root"
        )
    return None


# --- the signed history ---------------------------------------------------------------------------------


def root_payload(root: TrustRoot) -> bytes:
    """The bytes a root version's signatures cover: canonical JSON of the record."""
    return json.dumps(root.model_dump(mode="json", exclude_none=True), sort_keys=True).encode()


def root_of(envelope: dict, where: str) -> TrustRoot:
    """The root version inside a signed envelope (not yet checked against anything)."""
    import copy

    from pydantic import ValidationError
    from securesystemslib.dsse import Envelope

    try:
        env = Envelope.from_dict(copy.deepcopy(envelope))  # from_dict pops what it reads: parse a copy
        if env.payload_type != ROOT_TYPE:
            raise ValueError(f"payload type {env.payload_type!r}, expected {ROOT_TYPE!r}")
        return TrustRoot.model_validate_json(env.payload)
    except (KeyError, TypeError, ValidationError, ValueError) as e:
        raise TrustError(f"{where} is not a signed trust root version: {str(e)[:300]}") from None


def root_signers(prev: TrustRoot, envelope: dict, when: datetime) -> list[str]:
    """Names of the distinct keys of ``prev`` whose signatures over ``envelope`` verify and who could
    sign at ``when`` (listed, unrevoked, inside their validity window)."""
    import copy

    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError

    env = Envelope.from_dict(copy.deepcopy(envelope))
    pae = env.pae()
    names = []
    # Not registry.trust.signing.signature_verifies: signing imports this module (keygen adds to a root).
    for k in prev.keys:
        sig = env.signatures.get(k.keyid)
        if k.revoked or k.valid_at(when) is not None or sig is None:
            continue
        try:
            k.sslib_key().verify_signature(sig, pae)
        except (UnverifiedSignatureError, VerificationError):
            continue
        names.append(k.name)
    return names


def check_next(prev: TrustRoot | None, envelope: dict, where: str) -> TrustRoot:
    """``envelope``'s root, accepted as the version after ``prev`` (None: it is the first, pinned by
    whoever installed it, and must be signed by one of its own keys): the next number, issued after
    ``prev``, and signed by ``prev.thresholds.root`` of ``prev``'s keys. Else a TrustError saying which."""
    new = root_of(envelope, where)
    if new.issued is None:
        raise TrustError(f"{where}: root version {new.version} names no issued time; it is not a signed root")
    if prev is None:
        if new.version != 1 or not root_signers(new, envelope, new.issued):
            raise TrustError(
                f"{where}: the first root version must be version 1, signed by one of its own keys "
                f"(got version {new.version})"
            )
        return new
    if new.version <= prev.version:
        raise TrustError(
            f"{where}: root version {new.version} is a rollback: version {prev.version} is trusted already; "
            "a root only moves forward"
        )
    if new.version != prev.version + 1:
        raise TrustError(
            f"{where}: root version {new.version} skips version(s) after {prev.version}; every version in "
            "between is needed, each signed by the one before"
        )
    if prev.issued is not None and new.issued < prev.issued:
        raise TrustError(f"{where}: root version {new.version} is issued before version {prev.version}")
    signed = root_signers(prev, envelope, new.issued)
    if len(signed) < prev.thresholds.root:
        raise TrustError(
            f"{where}: root version {new.version} is not signed by the previous root: it needs "
            f"{prev.thresholds.root} signature(s) by keys of version {prev.version}, has {len(signed)}"
            + (f" ({', '.join(signed)})" if signed else "")
            + "; it was not approved by the old root, so it is refused"
        )
    return new


def read_history(file: Path) -> dict[int, TrustRoot]:
    """Every signed version of the root at ``file``, each checked against the one before."""
    folder = history_dir(file)
    paths = sorted(folder.glob("*.root.json"), key=lambda p: _number(p)) if folder.is_dir() else []
    if not paths:
        raise TrustError(
            f"trust root {file} is versioned but its signed history {folder} is missing; {GET_ROOT}"
        )
    history: dict[int, TrustRoot] = {}
    prev = None
    for path in paths:
        try:
            envelope = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise TrustError(f"root version {path} cannot be read: {e}") from None
        prev = check_next(prev, envelope, str(path))
        if _number(path) != prev.version:
            raise TrustError(f"{path} holds root version {prev.version}, not version {_number(path)}")
        history[prev.version] = prev
    return history


def _number(path: Path) -> int:
    head = path.name.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def save_root(file: Path, envelope: dict) -> TrustRoot:
    """Write a new signed root version: THE one function through which every versioned root is written
    (``synthreg trust`` init, add, remove, revoke, set-threshold and update all end here), so work that
    must follow every root change has one place to hook (issue 20: git's ``allowed_signers`` file).

    ``envelope`` must be the version after the current one (or version 1 for a new root), signed by the
    current root's keys (``check_next``). Its envelope is added to the history (a new file; an existing
    version is never replaced), then ``trust.yaml`` is replaced atomically: a crash between the two leaves
    the new version in the history, which ``load_trust`` takes as current. Nothing is written when a
    check fails."""
    import yaml

    from registry.core.fsio import atomic_write_text

    current = read_history(file) if history_dir(file).is_dir() else {}
    prev = current[max(current)] if current else None
    new = check_next(prev, envelope, f"new version of {file}")
    folder = history_dir(file)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{new.version}.root.json"
    if target.exists():
        raise TrustError(f"{target} exists already; a root version is never replaced")
    atomic_write_text(target, json.dumps(envelope, indent=2) + "\n")
    atomic_write_text(file, yaml.safe_dump(new.model_dump(mode="json", exclude_none=True), sort_keys=False))
    from registry.trust.gitsign import write_allowed_signers

    write_allowed_signers(new, allowed_signers_path(file))  # plain `git tag -v` trusts what the root trusts
    return new


def add_key(file: Path, key: TrustedKey, solo: bool | None = None) -> TrustRoot:
    """Add ``key`` to the *unversioned* trust root at ``file`` (created when missing); returns the new
    root. A versioned root is refused: its changes are signed (``synthreg trust add``)."""
    import yaml

    from registry.core.fsio import atomic_write_text
    from registry.records.config import load_yaml_model

    if file.is_file():
        root = load_yaml_model(file, TrustRoot, "trust root", TrustError)
        if root.issued is not None or history_dir(file).is_dir():
            raise TrustError(
                f"trust root {file} is versioned: add the key with `synthreg trust add --from "
                f"keys/{key.keyid}.pub.json --role ROLE`, signed by the root's keys"
            )
        if root.key(key.keyid):
            raise TrustError(f"key {key.keyid[:16]} is in {file} already")
        keys = [*root.keys, key]
        solo_ = root.solo if solo is None else solo
        thresholds = root.thresholds
    else:
        keys, solo_, thresholds = [key], bool(solo), Thresholds()
    new = TrustRoot(solo=solo_, thresholds=thresholds, keys=keys)
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(file, yaml.safe_dump(new.model_dump(mode="json", exclude_none=True), sort_keys=False))
    from registry.trust.gitsign import write_allowed_signers

    write_allowed_signers(new, allowed_signers_path(file))  # plain `git tag -v` trusts what the root trusts
    return new


def allowed_signers_path(file: Path) -> Path:
    """git's ``allowed_signers`` file kept beside the trust root ``file`` (outside the workspace, as the
    root is), rewritten by every root change: ``git config gpg.ssh.allowedSignersFile`` points at it."""
    return file.parent / "allowed_signers"
