"""Issue 24, family 8: retired keys and the unsigned tail.

- A key past its ``valid_until`` can still sign, and claim any earlier time: a retired approver could
  backdate an approval (a candidate became final) or a waiver (validate passed). Its records now count
  only when an audit checkpoint signed before the retirement, by another live key, covers them.
- A withdrawal deleted together with the log's events after the last signed checkpoint silently
  un-withdrew the release; the withdrawal's tag now keeps it withdrawn (untrusted, with how to restore).
- A forged ``release`` event appended with a valid hash and parents passed ``log --verify``; an event
  at the tail that claims a signed record now needs one.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.core.digests import sha256_bytes
from registry.records.audit import Checkpoint
from registry.records.signed import CHECKPOINT_TYPE, LogCheckpoint
from registry.releases.approve import approve
from registry.releases.catalog import list_status
from registry.releases.checkpoint import sign_checkpoint
from registry.releases.doctor import doctor
from registry.releases.loader import open_release
from registry.releases.release import release
from registry.releases.verify import verify
from registry.releases.waive import waive
from registry.releases.withdraw import withdraw
from registry.store import audit
from registry.trust.approvals import signers_of
from registry.trust.checkpoints import CHECKPOINTS, verify_log
from registry.trust.root import load_trust
from registry.trust.signing import load_signer, sign
from registry.trust.waivers import load_signed
from registry.trust.withdrawals import is_withdrawn
from tests.conftest import TrustSetup
from tests.registry.conftest import commit_all, folder, sh, tags
from tests.registry.test_trust import Team, make_team

runner = CliRunner()
RULE = "bias.observed-collapse"


@pytest.fixture
def team(tmp_path: Path, solo_trust: TrustSetup, monkeypatch: pytest.MonkeyPatch) -> Team:
    t = make_team(tmp_path / "team", solo_trust)
    monkeypatch.setenv("SYNTHREG_TRUST", str(t.trust))
    return t


def retire(team: Team, who: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> datetime:
    """A new trust root in which ``who``'s key is retired as of now; made the one in force."""
    doc = yaml.safe_load(team.trust.read_text())
    until = datetime.now(UTC)
    for k in doc["keys"]:
        if k["keyid"] == team.ids[who]:
            k["valid_until"] = until.isoformat()
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("SYNTHREG_TRUST", str(out))
    return until


def bob_of(state) -> str:
    return next(s.why_untrusted or "" for s in state.signers if s.name == "Bob")


def forge_checkpoint(ws: Path, key: Path, name: str, keyid: str, when: datetime) -> None:
    """A log checkpoint signed by ``key`` that claims ``when``: what a retired key's holder can make."""
    record = LogCheckpoint(
        checkpoint=audit.head(ws) or Checkpoint(heads=["0" * 64]),
        events=len(audit.read(ws)),
        time=when,
        keyid=keyid,
        name=name,
        role="approver",
    )
    payload = json.dumps(record.model_dump(mode="json"), sort_keys=True).encode()
    text = json.dumps(sign(payload, load_signer(key, ws), CHECKPOINT_TYPE), indent=2) + "\n"
    (ws / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    (ws / CHECKPOINTS / f"{sha256_bytes(text.encode())}.dsse.json").write_text(text)


def test_a_retired_approvers_signoff_counts_only_under_an_earlier_checkpoint_by_another_key(
    fresh: Path, team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ws = fresh
    release("digits", "1.0.0", ws, key=team.alice)
    assert approve(ws, "digits@1.0.0", team.bob).met and tags(ws) == ["digits@v1.0.0"]
    event = audit.read(ws)[-1]
    assert event.kind == "approval" and len(event.details["record_sha256"]) == 64

    # Bob's key is retired now. Nothing signed by another key shows his sign-off existed before: to a
    # verifier it is exactly what a sign-off backdated after the retirement looks like.
    until = retire(team, "Bob", tmp_path / "retired.yaml", monkeypatch)
    state = signers_of(ws, "digits", "1.0.0", load_trust(ws, strict=False))
    assert state.status == "candidate" and state.counted["approver"] == []
    assert bob_of(state).startswith(f"key {team.ids['Bob'][:16]} (Bob) was retired on ")
    assert "no audit checkpoint signed before then by another trusted key covers this record" in bob_of(state)
    assert not verify(ws, "digits@1.0.0").ok
    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code != 0 and "NOT TRUSTED: key " in out.stdout and "was retired on" in out.stdout
    with pytest.raises(Exception, match=r"not approved|candidate|untrusted"):
        open_release(ws, "digits@1.0.0")

    # Bob vouching for himself with a checkpoint dated before his retirement counts for nothing.
    forge_checkpoint(ws, team.bob, "Bob", team.ids["Bob"], until - timedelta(minutes=5))
    assert signers_of(ws, "digits", "1.0.0", load_trust(ws, strict=False)).status == "candidate"

    # Carol signs the log while Bob's key is live (as a rotation should go), then Bob is retired: his
    # sign-off is covered by a checkpoint made before the retirement, by another key, and counts.
    monkeypatch.setenv("SYNTHREG_TRUST", str(team.trust))
    sign_checkpoint(ws, key=team.carol)
    retire(team, "Bob", tmp_path / "retired-later.yaml", monkeypatch)
    state = signers_of(ws, "digits", "1.0.0", load_trust(ws, strict=False))
    assert state.status == "final" and state.counted["approver"] == [team.ids["Bob"]]
    assert verify(ws, "digits@1.0.0").ok
    assert len(open_release(ws, "digits@1.0.0")) > 0


def test_a_retired_approvers_waiver_counts_only_under_an_earlier_checkpoint(
    fresh: Path, team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ws = fresh
    shutil.rmtree(ws / "waivers")
    path, _ = waive(ws, RULE, "digits", "a toy set", date(2099, 1, 1), key=team.bob)
    assert len(audit.read(ws)[-1].details["record_sha256"]) == 64

    def loaded() -> tuple[list, list]:
        return load_signed(ws, {RULE}, date.today(), load_trust(ws, strict=False))

    assert [w.rule_id for w in loaded()[0]] == [RULE]
    retire(team, "Bob", tmp_path / "retired.yaml", monkeypatch)
    applied, ignored = loaded()
    assert applied == [] and [i.rule_id for i in ignored] == [RULE]
    assert ignored[0].why.startswith(f"not counted: key {team.ids['Bob'][:16]} (Bob) was retired on ")

    monkeypatch.setenv("SYNTHREG_TRUST", str(team.trust))
    sign_checkpoint(ws, key=team.carol)  # before the retirement, by another key
    retire(team, "Bob", tmp_path / "retired-later.yaml", monkeypatch)
    applied, ignored = loaded()
    assert [w.rule_id for w in applied] == [RULE] and ignored == []
    assert path.is_file()


def test_a_withdrawal_deleted_with_the_unsigned_tail_stays_withdrawn_by_its_tag(released_copy: Path):
    ws = released_copy
    w = withdraw(ws, "digits@1.0.0", "consent withdrawn")
    assert "withdrawn/digits@v1.0.0" in sh(ws, "git", "tag", "--list")
    message = sh(ws, "git", "for-each-ref", "--format=%(contents)", "refs/tags/withdrawn/digits@v1.0.0")
    assert "Reason:   consent withdrawn" in message and "-----BEGIN SSH SIGNATURE-----" in message
    assert doctor(ws).findings == []  # the withdrawn tag is not a release tag without a folder

    # The insider deletes the record and every event no checkpoint covers (the withdrawal's among them),
    # and commits: nothing in the log or the folder speaks of the withdrawal any more.
    uncovered = [e for e in audit.read(ws) if e.time >= w.time]
    assert [e.kind for e in uncovered] == ["withdrawal"]
    for e in uncovered:
        (ws / audit.EVENTS / f"{e.hash}.json").unlink()
    (folder(ws, "1.0.0") / "withdrawal.dsse.json").unlink()
    commit_all(ws, "tidy up")
    assert verify_log(ws, load_trust(ws)).intact  # the tail could go: no signature covered it

    gone = is_withdrawn(ws, "digits", "1.0.0")
    assert gone is not None and not gone.trusted and gone.reason == "consent withdrawn"
    assert "the tag withdrawn/digits@v1.0.0 records the withdrawal; restore them from git" in (
        gone.why_untrusted or ""
    )
    assert list_status(ws)["digits"][0][1].withdrawn
    with pytest.raises(Exception, match="was withdrawn"):
        open_release(ws, "digits@1.0.0")
    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code != 0 and "WITHDRAWN" in out.stdout
    found = doctor(ws).findings
    assert [f.kind for f in found] == ["withdrawal-without-record"]
    assert found[0].hint.startswith("restore it from git")


def test_a_forged_event_at_the_tail_that_claims_a_signed_record_is_named(released_copy: Path):
    ws = released_copy
    trust = load_trust(ws)
    assert verify_log(ws, trust).intact
    forged = audit.append(ws, "release", "digits@9.9.9", {"manifest_sha256": "0" * 64})
    report = verify_log(ws, trust)
    assert not report.intact
    assert any(p.startswith(f"event {forged.hash[:12]} (release digits@9.9.9, ") for p in report.problems)
    assert any("is not signed: no checkpoint covers it" in p for p in report.problems)
    out = runner.invoke(app, ["log", "--verify", "-w", str(ws)])
    assert out.exit_code == 1 and "is not signed" in out.stdout

    # one that names a record digest no signed record has is named the same way
    (ws / audit.EVENTS / f"{forged.hash}.json").unlink()
    audit.append(ws, "approval", "digits@1.0.0", {"record_sha256": "ab" * 32})
    assert any(
        "its record (sha256 abababababab) is not in the workspace" in p
        for p in verify_log(ws, trust).problems
    )

    # a real release at the tail (its record present and signed) is not
    (ws / audit.EVENTS / f"{audit.read(ws)[-1].hash}.json").unlink()
    assert verify_log(ws, trust).intact


def test_a_signoff_name_with_newlines_from_any_key_forges_no_line_of_verify(
    released_copy: Path, tmp_path: Path
):
    """Issue 24, family 5: a sign-off is signed by whoever holds a key, trusted or not, and its name is
    theirs to choose; verify printed it raw."""
    from registry.records.signed import SIGNOFF_TYPE, SIGNOFFS, SignOff
    from registry.trust.approvals import ENVELOPE
    from registry.trust.signing import add_signature, keygen, payload_of

    ws = released_copy
    keygen(tmp_path / "pub", tmp_path / "rogue.pem")
    rogue = load_signer(tmp_path / "rogue.pem")
    release_dir = folder(ws, "1.0.0")
    envelope = json.loads((release_dir / ENVELOPE).read_text())
    forged = "Eve\ndigits@1.0.0: OK, approved by 9 of 9\r"
    so = SignOff(
        release="digits@1.0.0",
        statement_sha256=sha256_bytes(payload_of(envelope)),
        keyid=rogue.public_key.keyid,
        name=forged,
        roles=["approver"],
        time=datetime.now(UTC),
        checkpoint=audit.head(ws),
    )
    payload = json.dumps(so.model_dump(mode="json"), sort_keys=True).encode()
    signoffs = [*json.loads((release_dir / SIGNOFFS).read_text()), sign(payload, rogue, SIGNOFF_TYPE)]
    (release_dir / SIGNOFFS).write_text(json.dumps(signoffs))
    (release_dir / ENVELOPE).write_text(json.dumps(add_signature(envelope, rogue)))
    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code != 0
    assert not any(line.startswith("digits@1.0.0: OK") for line in out.stdout.splitlines())
    assert "'Eve\\ndigits@1.0.0: OK, approved by 9 of 9\\r'" in out.stdout
