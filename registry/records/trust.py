"""The trust root a verifier pins outside the workspace (TUF's model, DESIGN.md): keys with names, roles,
validity and revocations, the thresholds per role, and the workspace's release policy
(``policies/release.yaml``), which may only raise the thresholds. Loading and checking them is
``registry.trust.root``; changing them, ``registry.trust.rotation``.

A root made by ``synthreg trust`` is *versioned*, like TUF's root metadata (issue 20): it names its
``version`` and when it was ``issued``, and each version is a DSSE envelope (``ROOT_TYPE``) signed by
``thresholds.root`` keys of the version before it. A root written by hand (or by ``keygen --name``)
has no ``issued`` time and no signed history: it is read as before, as one unversioned root.

A public key file (``keys/<keyid>.pub.json``, :class:`PublicKeyFile`) names the key's owner; files
written before names were recorded still read (``name`` is None)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints, model_validator

from registry.records.dataset import Sha256, Strict


class Revocation(Strict):
    time: AwareDatetime = Field(description="when the key was revoked")
    reason: str = Field(min_length=1)


class TrustedKey(Strict):
    keyid: Sha256 = Field(description="securesystemslib keyid (sha256 of the canonical public key)")
    name: str = Field(min_length=1, description="the person (or service) holding the private key")
    roles: list[Role] = Field(min_length=1)
    keytype: Literal["ed25519"] = "ed25519"
    scheme: Literal["ed25519"] = "ed25519"
    public: Hex64 = Field(description="the ed25519 public key, hex")
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = Field(default=None, description="retired after this time")
    revoked: Revocation | None = None

    @model_validator(mode="after")
    def _keyid_matches(self) -> TrustedKey:
        if self.keyid != self.sslib_key().keyid:
            raise ValueError(f"keyid {self.keyid} is not the keyid of its public key")
        return self

    def sslib_key(self):
        from securesystemslib.signer import SSlibKey

        keyval = {"public": self.public}
        return SSlibKey(keyid_of(self.keytype, self.scheme, keyval), self.keytype, self.scheme, keyval)

    def valid_at(self, when: datetime) -> str | None:
        """Why the key was not valid at ``when``, or None."""
        if self.valid_from and when < self.valid_from:
            return f"signed at {when:%Y-%m-%d %H:%M} UTC, before the key's valid_from {self.valid_from}"
        if self.valid_until and when > self.valid_until:
            return f"signed at {when:%Y-%m-%d %H:%M} UTC, after the key's valid_until {self.valid_until}"
        return None


class Thresholds(Strict):
    releaser: int = Field(default=1, ge=1, le=100)
    approver: int = Field(default=1, ge=1, le=100)
    root: int = Field(
        default=1,
        ge=1,
        le=100,
        description="distinct keys of this root that must sign its next version (a versioned root)",
    )

    def of_roles(self) -> dict[str, int]:
        """The thresholds a release must meet, per role (the root's own threshold is not one)."""
        return {r: getattr(self, r) for r in ROLES}


class TrustRoot(Strict):
    version: int = Field(default=1, ge=1, description="this root's version; each change adds one")
    issued: AwareDatetime | None = Field(
        default=None,
        description="when this version was made (set on a versioned root; None: an unversioned, "
        "hand-kept root)",
    )
    solo: bool = Field(default=False, description="one key holding both roles may satisfy both")
    thresholds: Thresholds = Thresholds()
    keys: list[TrustedKey] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TrustRoot:
        ids = [k.keyid for k in self.keys]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"keys listed more than once: {', '.join(dupes)}")
        return self

    def key(self, keyid: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.keyid == keyid), None)

    def check_signer(self, keyid: str, role: Role, when: datetime) -> tuple[TrustedKey | None, str | None]:
        """The key and None when ``keyid`` may sign as ``role`` at ``when``; else why not."""
        key = self.key(keyid)
        if key is None:
            return None, f"key {keyid[:16]} is not in the trust root"
        if key.revoked:
            return key, f"key {keyid[:16]} ({key.name}) was revoked on {key.revoked.time:%Y-%m-%d}: " + (
                key.revoked.reason
            )
        if role not in key.roles:
            return key, f"key {keyid[:16]} ({key.name}) does not hold the role {role} in the trust root"
        return key, key.valid_at(when)


class PublicKeyFile(Strict):
    """``keys/<keyid>.pub.json``: a public key as securesystemslib writes it, with its owner's name.
    A convenience copy for ``synthreg trust add --from``; never a source of trust by itself."""

    keyid: Sha256
    name: str | None = Field(default=None, description="the owner (None in files made before issue 20)")
    keytype: Literal["ed25519"] = "ed25519"
    scheme: Literal["ed25519"] = "ed25519"
    keyval: dict[Literal["public"], Hex64]


ROOT_TYPE = "application/vnd.synthreg.root+json"  # the payload type of a signed root version


class ReleasePolicy(Strict):
    """``policies/release.yaml`` in the repository: may raise the trust root's thresholds."""

    thresholds: dict[Role, Annotated[int, Field(ge=1, le=100)]] = Field(default_factory=dict)


Role = Literal["releaser", "approver"]

ROLES: tuple[Role, ...] = ("releaser", "approver")

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def keyid_of(keytype: str, scheme: str, keyval: dict) -> str:
    # securesystemslib's own keyid: sha256 over the canonical JSON of the public key.
    from securesystemslib.signer._utils import compute_default_keyid

    return compute_default_keyid(keytype, scheme, keyval)
