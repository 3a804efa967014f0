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
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import AwareDatetime, Field, ValidationError

from registry import audit, journal
from registry.digests import sha256_bytes
from registry.errors import ReleaseError, SigningError, UntrustedSignerError
from registry.models import Sha256, Strict
from registry.trust import ROLES, Role, Trust, TrustedKey

SIGNOFF_TYPE = "application/vnd.synthreg.signoff+json"
ENVELOPE = "release.dsse.json"
SIGNOFFS = "signoffs.json"


class SignOff(Strict):
    """What one signer signs besides the statement itself: who, in which roles, when, over what."""

    release: str = Field(description="NAME@X.Y.Z")
    statement_sha256: Sha256 = Field(description="sha256 of the release envelope's payload")
    keyid: Sha256
    name: str
    roles: list[Role] = Field(min_length=1)
    time: AwareDatetime
    checkpoint: audit.Checkpoint | None = Field(description="the audit log's head when this was signed")


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
        return f"approved by {have} of {need} ({parts}){mode}"

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "thresholds": self.thresholds,
            "counted": self.counted,
            "signers": [s.to_json() for s in self.signers],
            "problems": self.problems,
        }


def approval_state(trust: Trust, ref: str, envelope: dict, signoffs: list[dict]) -> ApprovalState:
    """Check every sign-off and envelope signature against the trust root; count them per role."""
    from registry.signing import PAYLOAD_TYPE, payload_of, signature_verifies

    state = ApprovalState(ref=ref, thresholds=dict(trust.thresholds), trust_solo=trust.solo)
    payload = payload_of(envelope, PAYLOAD_TYPE)
    digest = sha256_bytes(payload)
    signed_keyids = {s.get("keyid") for s in envelope.get("signatures", [])}
    covered: set[str] = set()
    for i, env in enumerate(signoffs):
        try:
            so = SignOff.model_validate_json(payload_of(env, SIGNOFF_TYPE))
        except (SigningError, ValidationError, ValueError) as e:
            state.problems.append(f"sign-off {i} in {SIGNOFFS} is not a valid sign-off: {str(e)[:200]}")
            continue
        who = f"the sign-off by {so.name} (key {so.keyid[:16]})"
        if so.release != ref:
            state.problems.append(f"{who} approves {so.release}, not {ref} (replayed from another release)")
            continue
        if so.statement_sha256 != digest:
            state.problems.append(
                f"the release signature does not verify: {who} signs another statement than {ref}'s "
                "(the statement was edited, or an approval replayed from another release)"
            )
            continue
        key = trust.root.key(so.keyid)
        signer = Signer(so.keyid, so.name, list(so.roles), so.time)
        state.signers.append(signer)
        covered.add(so.keyid)
        if key is None:
            signer.why_untrusted = f"key {so.keyid[:16]} is not in the trust root {trust.path}"
            continue
        if key.name != so.name:
            signer.name = f"{key.name} (signed as {so.name!r})"
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
    for keyid in sorted(k for k in signed_keyids - covered if k):
        state.problems.append(
            f"the envelope holds a signature by key {str(keyid)[:16]} with no sign-off (who, role, when)"
        )
    trusted = [s for s in state.signers if s.trusted]
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


def make_signoff(ws: Path, ref: str, payload: bytes, signer, key: TrustedKey, roles: list[Role]) -> dict:
    from registry.signing import sign

    so = SignOff(
        release=ref,
        statement_sha256=sha256_bytes(payload),
        keyid=key.keyid,
        name=key.name,
        roles=roles,
        time=datetime.now(UTC),
        checkpoint=audit.head(ws),
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
    proc = subprocess.run(["git", "show", f"{tag}:{rel}"], cwd=ws, capture_output=True)
    tagged = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}"], cwd=ws, capture_output=True
    )
    if tagged.returncode != 0:
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


def approve(
    ws: Path,
    ref: str,
    key: Path | str | None = None,
    trust_file: Path | str | None = None,
    role: Role = "approver",
) -> ApprovalState:
    """Add a signature by ``key`` in ``role`` to a candidate release; tag it when the thresholds are met.

    Refused, with nothing written, for an unknown or already final version, a key the trust root does
    not allow in ``role``, a key that signed already, and (unless solo) a releaser approving their own.
    """
    from registry.release import RELEASES, _git, _lock, parse_ref
    from registry.signing import PAYLOAD_TYPE, add_signature, load_signer, payload_of
    from registry.trust import load_trust

    name, version = parse_ref(ref)
    if version is None:
        raise ReleaseError(f"give the version to approve: {name}@X.Y.Z")
    if role not in ROLES:
        raise ReleaseError(f"role {role!r} is not one of {', '.join(ROLES)}")
    ref = f"{name}@{version}"
    folder = ws / RELEASES / name / version
    if not (folder / ENVELOPE).is_file():
        raise ReleaseError(f"{ref} is not a candidate release (no {folder / ENVELOPE}); see `synthreg list`")
    trust = load_trust(ws, trust_file)
    signer = load_signer(key)
    entry = trust.signing_key(signer.public_key.keyid, role)
    with _lock(ws):
        envelope, signoffs = read_signed(folder)
        before = approval_state(trust, ref, envelope, signoffs)
        if journal.finished_here(ws, ("approve",), ref) and any(
            s.keyid == entry.keyid for s in before.signers
        ):
            return before  # a killed run of this very approval, just finished by recovery: report it
        if before.met:
            from registry.release import _tagged

            if not _tagged(ws, tag_name(name, version)):  # approved, but a crash came before the tag
                _git(ws, "tag", tag_name(name, version))
                return before
            raise ReleaseError(f"{ref} is final already ({before.summary()}); nothing to approve")
        require_untrusted_free(before)
        if before.problems:
            raise ReleaseError(f"{ref} cannot be approved: {before.problems[0]}")
        mine = [s for s in before.signers if s.keyid == entry.keyid]
        if any(role in s.roles for s in mine):
            raise ReleaseError(f"key {entry.keyid[:16]} ({entry.name}) has signed {ref} as {role} already")
        if mine and not trust.solo:
            raise ReleaseError(
                f"key {entry.keyid[:16]} ({entry.name}) signed {ref} as {'+'.join(mine[0].roles)}; an "
                f"approval must come from another key (solo is off in {trust.path})"
            )
        payload = payload_of(envelope, PAYLOAD_TYPE)
        new_env = add_signature(envelope, signer)
        new_signoffs = [*signoffs, make_signoff(ws, ref, payload, signer, entry, [role])]
        after = approval_state(trust, ref, new_env, new_signoffs)
        rel = folder.relative_to(ws).as_posix()
        tag = tag_name(name, version)
        state = {
            "folder": rel,
            "files": {
                f"{rel}/{ENVELOPE}": json.dumps(new_env, indent=2) + "\n",
                f"{rel}/{SIGNOFFS}": json.dumps(new_signoffs, indent=2) + "\n",
            },
            "old": {
                f"{rel}/{n}": (folder / n).read_text() if (folder / n).is_file() else None
                for n in (ENVELOPE, SIGNOFFS)
            },
            "events": [
                {
                    "kind": "approval",
                    "subject": ref,
                    "details": {
                        "keyid": entry.keyid,
                        "name": entry.name,
                        "role": role,
                        "status": after.status,
                    },
                }
            ],
            "actor": audit.actor_name(ws),
            "audit_from": len(audit.read(ws)),
            "message": f"Approve {ref} ({role} {entry.name})",
            "tag": tag,
            "tag_now": after.met,
            "tag_existed": bool(_git(ws, "tag", "--list", tag)),
        }
        with journal.transaction(ws, "approve", ref, state):
            pass  # every step is a forward step: the transaction runs them
    return after


def signers_of(ws: Path, name: str, version: str, trust: Trust) -> ApprovalState:
    """The approval state of a stored release (signatures checked against ``trust``)."""
    from registry.release import RELEASES

    envelope, signoffs = read_signed(ws / RELEASES / name / version)
    return approval_state(trust, f"{name}@{version}", envelope, signoffs)


def signed_checkpoints(ws: Path, trust: Trust) -> list[tuple[audit.Checkpoint, str]]:
    """Every audit checkpoint inside a record whose signature verifies against a key of the trust root
    (release sign-offs, waivers, withdrawals), with what signed it. Unverifiable records are skipped
    here: verify, validate and the loader report them."""
    from registry.lineage import WITHDRAWAL, WITHDRAWAL_TYPE, Withdrawal
    from registry.signing import payload_of, signature_verifies
    from registry.waivers import WAIVER_TYPE, WAIVERS, SignedWaiver

    found: list[tuple[audit.Checkpoint, str]] = []

    def take(env: dict, ptype: str, model, what: str) -> None:
        try:
            rec = model.model_validate_json(payload_of(env, ptype))
        except (SigningError, ValidationError, ValueError):
            return
        key = trust.root.key(rec.keyid)
        if key is None or rec.checkpoint is None or not signature_verifies(env, rec.keyid, key.sslib_key()):
            return
        found.append((rec.checkpoint, f"{what} signed by {key.name} (key {rec.keyid[:16]})"))

    for path in sorted((ws / "releases").glob(f"*/*/{SIGNOFFS}")):
        ref = f"{path.parent.parent.name}@{path.parent.name}"
        with contextlib.suppress(OSError, ValueError):
            for env in json.loads(path.read_text()):
                take(env, SIGNOFF_TYPE, SignOff, f"the sign-off of {ref}")
    for path in sorted((ws / "releases").glob(f"*/*/{WITHDRAWAL}")):
        with contextlib.suppress(OSError, ValueError):
            ref = f"{path.parent.parent.name}@{path.parent.name}"
            take(json.loads(path.read_text()), WITHDRAWAL_TYPE, Withdrawal, f"the withdrawal of {ref}")
    for path in sorted((ws / WAIVERS).glob("*.dsse.json")):
        with contextlib.suppress(OSError, ValueError):
            take(json.loads(path.read_text()), WAIVER_TYPE, SignedWaiver, f"the waiver {path.name}")
    return found


def check_checkpoints(ws: Path, trust: Trust) -> tuple[int, list[str]]:
    """(checkpoints checked, problems): each signed checkpoint must lie on the current chain, so a
    whole-log rewrite with valid hashes, a truncation below a checkpoint or a fork is named."""
    hashes: dict[int, str] = {}
    for raw in audit.lines(ws):
        with contextlib.suppress(ValueError, ValidationError):
            event = audit.AuditEvent.model_validate_json(raw)
            hashes.setdefault(event.seq, event.hash)
    last = max(hashes, default=-1)
    problems = []
    checkpoints = signed_checkpoints(ws, trust)
    for cp, what in sorted(checkpoints, key=lambda c: c[0].seq):
        if cp.seq not in hashes:
            if cp.seq > last:
                problems.append(
                    f"the log was truncated: it ends at seq {last}, but {what} checkpoints seq {cp.seq}"
                )
            else:
                problems.append(f"event {cp.seq} is missing, but {what} checkpoints it (removed?)")
        elif hashes[cp.seq] != cp.hash:
            problems.append(
                f"the log was rewritten or forked at or before seq {cp.seq}: event {cp.seq}'s hash is "
                f"{hashes[cp.seq][:16]}, but {what} checkpoints {cp.hash[:16]}"
            )
    return len(checkpoints), problems


# ---------------------------------------------------------------------------------------------------
# approve as a journalled transaction (registry.journal): write, audit, commit, tag


def _step_write(ws: Path, entry: journal.Entry) -> None:
    from registry.fsio import atomic_write_text

    for rel, text in entry.state["files"].items():
        path = ws / rel
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)


def _step_audit(ws: Path, entry: journal.Entry) -> None:
    audit.append_missing(ws, entry.state["events"], entry.state["audit_from"], entry.state["actor"])


def _step_commit(ws: Path, entry: journal.Entry) -> None:
    from registry.release import _git

    files = [*entry.state["files"], audit.LOG.as_posix()]
    _git(ws, "add", *files)
    staged = subprocess.run(["git", "diff", "--cached", "--quiet", "HEAD", "--", *files], cwd=ws)
    if staged.returncode == 0:  # committed already (a recovery after the commit)
        return
    _git(ws, "commit", "-q", "-m", entry.state["message"], "--", *files)


def _step_tag(ws: Path, entry: journal.Entry) -> None:
    from registry.release import _git

    tag = entry.state["tag"]
    if not entry.state["tag_now"] or _git(ws, "tag", "--list", tag):
        return
    rel = f"{entry.state['folder']}/{SIGNOFFS}"
    _git(ws, "tag", tag, _git(ws, "rev-list", "-1", "HEAD", "--", rel))


def _undo_approve(ws: Path, entry: journal.Entry) -> None:
    """Before its audit event there is no approval: put the envelope and sign-offs back as they were."""
    from registry.fsio import atomic_write_text

    for rel, text in entry.state["old"].items():
        path = ws / rel
        if text is None:
            path.unlink(missing_ok=True)
        elif not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)


# Rolled forward once its audit event is in the log (the approval is then on record), back before.
APPROVE = journal.Operation(
    steps=("write", "audit", "commit", "tag"),
    forward={"write": _step_write, "audit": _step_audit, "commit": _step_commit, "tag": _step_tag},
    undo=_undo_approve,
    roll_forward=journal.logged,
    public=journal.logged,
)
