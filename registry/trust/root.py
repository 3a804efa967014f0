"""The trust root: which keys may sign what, pinned outside the workspace (TUF's root, REFERENCE §11).

    trust = load_trust(ws)                     # --trust FILE, else $SYNTHREG_TRUST, else ~/.config/...
    trust.check_signer(keyid, "approver", at)  # -> (key, None) or (key or None, why it is not trusted)

Anyone who can push to the repository can put a public key in it, so no key is trusted because the
repository holds it: the verifier reads ``trust.yaml`` from a path it controls and refuses one inside the
workspace. The file names each key by its securesystemslib keyid, with the person's name, the roles it
may sign in (``releaser``, ``approver``), a validity window and a revocation, and pins the thresholds a
release needs. A repository's ``policies/release.yaml`` may raise a threshold, never lower it (an insider
could lower a repository-held one). ``solo: true`` lets one key holding both roles satisfy both.

A signature made inside a key's validity window stays valid after the window closes (rotation: the old
key is retired, its releases still verify). A revoked key is never trusted again, whatever time its
signatures claim, because whoever holds a compromised key can also backdate.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from registry.core.errors import TrustError
from registry.records.trust import ROLES, ReleasePolicy, Role, Thresholds, TrustedKey, TrustRoot

DEFAULT_TRUST = Path("~/.config/synthreg/trust.yaml")
RELEASE_POLICY = Path("policies") / "release.yaml"


class Trust:
    """A loaded trust root, where it was read from, and the thresholds in force for a workspace."""

    def __init__(self, root: TrustRoot, path: Path, thresholds: dict[str, int]) -> None:
        self.root, self.path, self.thresholds = root, path, thresholds

    @property
    def solo(self) -> bool:
        return self.root.solo

    def check_signer(self, keyid: str, role: Role, when: datetime) -> tuple[TrustedKey | None, str | None]:
        return self.root.check_signer(keyid, role, when)

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


def load_trust(ws: Path | None, path: Path | str | None = None) -> Trust:
    """The pinned trust root (refused when it lies inside ``ws``), with the workspace's thresholds."""
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
            f"no trust root at {file}. To verify a team's releases, get its trust root (trust.yaml) from "
            "whoever keeps it, over a channel you trust (never from the repository), and pass --trust FILE "
            "or set SYNTHREG_TRUST. To sign releases yourself, alone, create one with `synthreg keygen "
            "--name NAME` (a solo root trusts only your own key)"
        )
    root = load_yaml_model(file, TrustRoot, "trust root", TrustError)
    thresholds: dict[str, int] = dict(root.thresholds.model_dump())
    policy = ws / RELEASE_POLICY if ws is not None else None
    if policy is not None and policy.is_file():
        raised = load_yaml_model(policy, ReleasePolicy, "release policy", TrustError).thresholds
        thresholds = {r: max(thresholds[r], raised.get(r, 0)) for r in ROLES}
    _reachable(root, thresholds, file, policy)
    return Trust(root, file, thresholds)


def _reachable(root: TrustRoot, thresholds: dict[str, int], file: Path, policy: Path | None) -> None:
    """A threshold no set of valid keys could meet is an error naming it."""
    now = datetime.now(UTC)
    live = [k for k in root.keys if not k.revoked and not (k.valid_until and k.valid_until < now)]
    for role in ROLES:
        n = sum(role in k.roles for k in live)
        if n < thresholds[role]:
            where = f"{file} (thresholds.{role}={root.thresholds.model_dump()[role]})"
            if thresholds[role] > root.thresholds.model_dump()[role] and policy is not None:
                where = f"{policy} (thresholds.{role}={thresholds[role]})"
            raise TrustError(
                f"threshold {role}={thresholds[role]} in {where} cannot be met: only {n} valid, unrevoked "
                f"key(s) hold the role {role} in {file}; add keys or lower the threshold"
            )
    if not root.solo and len({k.keyid for k in live}) < thresholds["releaser"] + thresholds["approver"]:
        raise TrustError(
            f"thresholds releaser={thresholds['releaser']} + approver={thresholds['approver']} in {file} "
            f"need that many distinct keys (solo is off), but only {len(live)} are valid; add keys or set "
            "solo: true"
        )


def add_key(file: Path, key: TrustedKey, solo: bool | None = None) -> TrustRoot:
    """Add ``key`` to the trust root at ``file`` (created when missing); returns the new root."""
    import yaml

    from registry.core.fsio import atomic_write_text
    from registry.records.config import load_yaml_model

    if file.is_file():
        root = load_yaml_model(file, TrustRoot, "trust root", TrustError)
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
    return new
