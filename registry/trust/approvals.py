"""Who signed a release, in which role, and whether that is enough: sign-offs, thresholds, binding.

    state = approval_state(trust, "digits@1.0.0", envelope, signoffs)   # -> ApprovalState
    approve(ws, "digits@1.0.0", key)                                   # an approver signs; final at threshold

Each signer adds two things, both over the exact release statement: a signature in the release's DSSE
envelope (``release.dsse.json``, so any DSSE tool sees k signatures over one payload), and a *sign-off*
(``signoffs.json``: one DSSE envelope each) whose payload names the release, the sha256 of the
statement, the key, the person, the roles, the time and a checkpoint of the audit log. The sign-off is
what makes role and time signed by the signer; its statement digest is what stops an approval of one
release being replayed onto another.

A release is a *candidate* until the sign-offs trusted by the pinned trust root meet the thresholds
(distinct keys; a key that signed as releaser never counts as approver unless the trust root is solo);
then it is *final* and tagged ``NAME@vX.Y.Z``. Only final releases are loaded or trained on.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from registry.core import vcs
from registry.core.digests import sha256_bytes
from registry.core.errors import SigningError, UntrustedSignerError
from registry.core.names import one_line, shown
from registry.records.signed import SIGNOFF_TYPE, SIGNOFFS, SignOff
from registry.records.trust import Role, TrustedKey
from registry.store import audit
from registry.trust.checkpoints import Retirement
from registry.trust.root import Trust

ENVELOPE = "release.dsse.json"


@dataclass
class Signer:
    keyid: str
    name: str
    roles: list[str]
    time: datetime
    why_untrusted: str | None = None

    @property
    def trusted(self) -> bool:
        return self.why_untrusted is None

    def line(self) -> str:
        state = "trusted" if self.trusted else f"NOT TRUSTED: {self.why_untrusted}"
        return (
            f"{'+'.join(self.roles)} {self.name} key {self.keyid[:16]} at {self.time:%Y-%m-%d %H:%M:%S} UTC: "
            + state
        )

    def to_json(self) -> dict:
        return {
            "keyid": self.keyid,
            "name": self.name,
            "roles": self.roles,
            "time": self.time.isoformat(),
            "trusted": self.trusted,
            "why_untrusted": self.why_untrusted,
        }


@dataclass
class ApprovalState:
    ref: str
    thresholds: dict[str, int]
    signers: list[Signer] = field(default_factory=list)
    counted: dict[str, list[str]] = field(default_factory=dict)  # role -> keyids counted for it
    problems: list[str] = field(default_factory=list)  # bad signatures, replays, missing sign-offs
    trust_solo: bool = False
    # Issue 20: the version of the (versioned) trust root these thresholds are of, and the current one;
    # both None for an unversioned root. A release final under an older version than the current stays
    # final (thresholds are not retroactive): ``older_root``.
    root_version: int | None = None
    current_version: int | None = None
    current_thresholds: dict[str, int] = field(default_factory=dict)
    late: list[str] = field(default_factory=list)  # names of signers not counted under an older root

    @property
    def older_root(self) -> bool:
        """Final under an earlier root version than the current one (which may ask for more)."""
        return (
            self.met
            and self.root_version is not None
            and self.current_version is not None
            and self.root_version < self.current_version
        )

    @property
    def root_note(self) -> str:
        """``root v2`` (and what the current root asks, when judged under an older one); '' unversioned."""
        if self.root_version is None:
            return ""
        if not self.older_root:
            return f"root v{self.root_version}"
        now = ", ".join(f"{r} {n}" for r, n in self.current_thresholds.items())
        return f"root v{self.root_version}; the current root v{self.current_version} asks for {now}"

    @property
    def untrusted(self) -> list[Signer]:
        return [s for s in self.signers if not s.trusted]

    @property
    def met(self) -> bool:
        return not self.problems and all(
            len(self.counted.get(r, [])) >= n for r, n in self.thresholds.items()
        )

    @property
    def solo(self) -> bool:
        return self.met and len({s.keyid for s in self.signers if s.trusted}) == 1

    @property
    def status(self) -> str:
        return "solo" if self.solo else "final" if self.met else "candidate"

    def summary(self) -> str:
        need = sum(self.thresholds.values())
        have = sum(min(len(self.counted.get(r, [])), n) for r, n in self.thresholds.items())
        parts = ", ".join(f"{r} {len(self.counted.get(r, []))}/{n}" for r, n in self.thresholds.items())
        mode = " (solo: one key holds both roles)" if self.solo else ""
        under = f", final under root v{self.root_version}" if self.older_root else ""
        return f"approved by {have} of {need} ({parts}){mode}{under}"

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "thresholds": self.thresholds,
            "counted": self.counted,
            "signers": [s.to_json() for s in self.signers],
            "problems": self.problems,
            "root_version": self.root_version,
            "current_root_version": self.current_version,
            "final_under_older_root": self.older_root,
        }


def approval_state(
    trust: Trust, ref: str, envelope: dict, signoffs: list[dict], retirement: Retirement | None = None
) -> ApprovalState:
    """Check every sign-off and envelope signature against the trust root; count them per role.

    A sign-off by a key retired since (past its ``valid_until``) counts only when ``retirement`` (over
    the workspace's audit log) finds a checkpoint made before the retirement by another key that covers
    it; without one it is reported, not counted (issue 24: a retired key can backdate).

    Thresholds are not retroactive (issue 20). Under a versioned root, a release short of the current
    thresholds is judged again under the root version its sign-offs name (the highest one, when older
    than the current): if that version's thresholds were met by sign-offs made before the next version
    was issued, the release is final under it (``older_root``), keys revoked since still failing it.
    Sign-offs that name no version (made under an unversioned root, or before issue 20) are judged
    against the current root, as before."""
    retirement = retirement or Retirement(None, trust)
    state = _judge(trust, ref, envelope, signoffs, retirement)
    state.root_version = state.current_version = trust.version
    state.current_thresholds = dict(trust.thresholds)
    if state.met or trust.version is None:
        return state
    named = [_named_version(env) for env in signoffs]
    older = max((v for v in named if v is not None and v < trust.version), default=None)
    then = trust.at_version(older) if older is not None else None
    if then is None or older is None:
        return state
    old = _judge(then, ref, envelope, signoffs, retirement, before=trust.issued(older + 1))
    if not old.met or old.untrusted:
        return state
    old.root_version, old.current_version = older, trust.version
    old.current_thresholds = dict(trust.thresholds)
    return old


def _named_version(env: dict) -> int | None:
    """The root version a sign-off names (None: none, or unreadable: the full check says why)."""
    from registry.trust.signing import payload_of

    try:
        return SignOff.model_validate_json(payload_of(env, SIGNOFF_TYPE)).root_version
    except (SigningError, ValidationError, ValueError):
        return None


def _judge(
    trust: Trust,
    ref: str,
    envelope: dict,
    signoffs: list[dict],
    retirement: Retirement,
    before: datetime | None = None,
) -> ApprovalState:
    """The approval state under ``trust`` alone; with ``before``, sign-offs made at or after it are
    checked but not counted (they came after the root version judged was replaced)."""
    from registry.trust.signing import PAYLOAD_TYPE, payload_of, signature_verifies

    state = ApprovalState(ref=ref, thresholds=dict(trust.thresholds), trust_solo=trust.solo)
    payload = payload_of(envelope, PAYLOAD_TYPE)
    digest = sha256_bytes(payload)
    signed_keyids = {s.get("keyid") for s in envelope.get("signatures", [])}
    covered: set[str] = set()
    for i, env in enumerate(signoffs):
        try:
            so_payload = payload_of(env, SIGNOFF_TYPE)
            so = SignOff.model_validate_json(so_payload)
        except (SigningError, ValidationError, ValueError) as e:
            state.problems.append(f"sign-off {i} in {SIGNOFFS} is not a valid sign-off: {str(e)[:200]}")
            continue
        # A name with a newline, from any key, would forge a line of verify's output (issue 24).
        name = one_line(so.name)
        who = f"the sign-off by {name} (key {so.keyid[:16]})"
        if so.release != ref:
            state.problems.append(
                f"{who} approves {one_line(so.release)}, not {ref} (replayed from another release)"
            )
            continue
        if so.statement_sha256 != digest:
            state.problems.append(
                f"the release signature does not verify: {who} signs another statement than {ref}'s "
                "(the statement was edited, or an approval replayed from another release)"
            )
            continue
        key = trust.root.key(so.keyid)
        signer = Signer(so.keyid, name, list(so.roles), so.time)
        state.signers.append(signer)
        covered.add(so.keyid)
        if key is None:
            signer.why_untrusted = f"key {so.keyid[:16]} is not in the trust root {trust.path}"
            continue
        if key.name != so.name:
            signer.name = f"{key.name} (signed as {shown(so.name)})"
        sslib = key.sslib_key()
        if not signature_verifies(env, so.keyid, sslib):
            state.problems.append(f"the release signature does not verify: {who} is forged or edited")
            signer.why_untrusted = "the sign-off's signature does not verify"
            continue
        if not signature_verifies(envelope, so.keyid, sslib):
            state.problems.append(
                f"the release signature does not verify: the envelope holds no valid signature by {who}"
            )
            signer.why_untrusted = "no valid signature over the statement"
            continue
        for role in so.roles:
            _, why = trust.check_signer(so.keyid, role, so.time)
            if why:
                signer.why_untrusted = why
                break
        else:
            signer.why_untrusted = retirement.why_not(key, sha256_bytes(so_payload))
    for keyid in sorted(k for k in signed_keyids - covered if k):
        state.problems.append(
            f"the envelope holds a signature by key {str(keyid)[:16]} with no sign-off (who, role, when)"
        )
    trusted = [s for s in state.signers if s.trusted]
    if before is not None:
        state.late = [s.name for s in trusted if s.time >= before]
        trusted = [s for s in trusted if s.time < before]
    releasers = list(dict.fromkeys(s.keyid for s in trusted if "releaser" in s.roles))
    approvers = list(dict.fromkeys(s.keyid for s in trusted if "approver" in s.roles))
    if not trust.solo:  # nobody approves their own release
        approvers = [k for k in approvers if k not in releasers]
    state.counted = {"releaser": releasers, "approver": approvers}
    return state


def read_signed(folder: Path) -> tuple[dict, list[dict]]:
    """The release envelope and its sign-offs, as stored."""
    try:
        envelope = json.loads((folder / ENVELOPE).read_text())
    except (OSError, ValueError) as e:
        raise SigningError(f"{folder / ENVELOPE} cannot be read: {e}") from e
    path = folder / SIGNOFFS
    try:
        signoffs = json.loads(path.read_text()) if path.is_file() else []
    except (OSError, ValueError) as e:
        raise SigningError(f"{path} cannot be read: {e}") from e
    if not isinstance(signoffs, list):
        raise SigningError(f"{path} must hold a list of DSSE envelopes")
    return envelope, signoffs


def make_signoff(
    ws: Path,
    ref: str,
    payload: bytes,
    signer,
    key: TrustedKey,
    roles: list[Role],
    root_version: int | None = None,
) -> dict:
    """A signed sign-off by ``signer`` (``key`` in the trust root) over the statement ``payload``, naming
    the version of the trust root it is made under (``root_version``; None for an unversioned root)."""
    from registry.trust.signing import sign

    so = SignOff(
        release=ref,
        statement_sha256=sha256_bytes(payload),
        keyid=key.keyid,
        name=key.name,
        roles=roles,
        time=datetime.now(UTC),
        checkpoint=audit.head(ws),
        root_version=root_version,
    )
    return sign(json.dumps(so.model_dump(mode="json"), sort_keys=True).encode(), signer, SIGNOFF_TYPE)


def releaser_roles(trust: Trust, key: TrustedKey) -> list[Role]:
    """The roles a releaser's sign-off claims: both in solo mode when the key holds both."""
    return ["releaser", "approver"] if trust.solo and "approver" in key.roles else ["releaser"]


def tag_name(name: str, version: str) -> str:
    return f"{name}@v{version}"


def binding_problems(ws: Path, name: str, version: str, statement: dict, state: ApprovalState) -> list[str]:
    """The signed statement is the release asked for, in the folder it sits in, and the tag (present
    exactly when final) points at a commit whose tree holds this very record."""
    problems = []
    pred = statement.get("predicate", {})
    if (pred.get("name"), pred.get("version")) != (name, version):
        problems.append(
            f"the signed statement is for {pred.get('name')}@{pred.get('version')}, not {name}@{version} "
            f"(a signed release copied to releases/{name}/{version}?)"
        )
    tag = tag_name(name, version)
    rel = f"releases/{name}/{version}/release.json"
    proc = vcs.run_git(ws, "show", f"{tag}:{rel}", text=False)
    if not vcs.git_ok(ws, "rev-parse", "-q", "--verify", f"refs/tags/{tag}"):
        if state.met:
            problems.append(f"{name}@{version} is approved but has no tag {tag}; it is not final")
        return problems
    if not state.met:
        problems.append(f"tag {tag} exists but {name}@{version} is not approved ({state.summary()})")
    if proc.returncode != 0:
        problems.append(f"tag {tag} points at a commit without {rel}")
        return problems
    with contextlib.suppress(OSError):
        if proc.stdout != (ws / rel).read_bytes():
            problems.append(f"tag {tag} points at a commit whose {rel} differs from this one")
    return problems


def require_untrusted_free(state: ApprovalState) -> None:
    if state.untrusted:
        s = state.untrusted[0]
        raise UntrustedSignerError(f"{state.ref} is signed by an untrusted key: {s.why_untrusted}")


def signers_of(ws: Path, name: str, version: str, trust: Trust) -> ApprovalState:
    """The approval state of a stored release (signatures checked against ``trust``)."""
    from registry.store.releases import release_folder

    envelope, signoffs = read_signed(release_folder(ws, name, version))
    return approval_state(trust, f"{name}@{version}", envelope, signoffs, Retirement(ws, trust))


# ---------------------------------------------------------------------------------------------------
# approve as a journalled transaction (registry.store.journal): write, audit, commit, tag
