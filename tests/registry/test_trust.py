"""Trust against anyone who can write the repository (issue 10): a pinned trust root outside the workspace,
candidate releases approved by other keys, signed waivers and withdrawals, audit checkpoints, binding.

Every attack is played as an insider with write access to the repository (not to the trust root, which
lives outside it, nor to anyone else's private key) and must be detected with a message naming what is
wrong. The honest paths (two approvers, solo, rotation, revocation after signing) must work.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import (
    CANDIDATE_EXIT,
    WITHDRAWN_EXIT,
    ManifestError,
    PolicyError,
    ReleaseError,
    SigningError,
    TrustError,
)
from registry.records.signed import WAIVER_TYPE, SignedWaiver
from registry.records.trust import TrustedKey
from registry.releases.approve import approve
from registry.releases.catalog import list_status
from registry.releases.checkpoint import sign_checkpoint
from registry.releases.loader import open_release
from registry.releases.release import release
from registry.releases.verify import verify
from registry.releases.waive import waive
from registry.releases.withdraw import withdraw
from registry.store import audit
from registry.store.releases import load_release
from registry.trust.admission import ReleaseStatus
from registry.trust.approvals import (
    ENVELOPE,
    SIGNOFFS,
    approval_state,
    make_signoff,
    read_signed,
)
from registry.trust.checkpoints import check_checkpoints
from registry.trust.root import load_trust
from registry.trust.signing import add_signature, keygen, load_signer, payload_of, sign, statement
from registry.trust.withdrawals import is_withdrawn
from tests.conftest import TrustSetup
from tests.registry.conftest import Built, commit_all, folder, sh, table_rows, tags, validate_ws

runner = CliRunner()


# --- trust roots ------------------------------------------------------------------------------------------


def _entry(trust_file: Path, keyid: str) -> dict:
    return next(k for k in yaml.safe_load(trust_file.read_text())["keys"] if k["keyid"] == keyid)


def write_trust(path: Path, keys: list[dict], solo: bool = False, **thresholds: int) -> Path:
    doc = {
        "version": 1,
        "solo": solo,
        "thresholds": {"releaser": 1, "approver": 1} | thresholds,
        "keys": keys,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass(frozen=True)
class Team:
    trust: Path
    alice: Path  # releaser
    bob: Path  # approver
    carol: Path  # approver
    ids: dict[str, str]


def make_team(top: Path, solo_trust: TrustSetup, approvers: int = 1) -> Team:
    """Alice releases, Bob and Carol approve; the session's key stays an approver (it signed the fixture's
    waivers). Solo is off: nobody approves their own release."""
    top.mkdir(parents=True, exist_ok=True)
    scratch = top / "scratch.yaml"
    ids = {}
    for name, roles in (("Alice", ["releaser"]), ("Bob", ["approver"]), ("Carol", ["approver"])):
        ids[name] = keygen(top / "pub", top / f"{name}.pem", name=name, roles=roles, trust=scratch).keyid
    keys = yaml.safe_load(scratch.read_text())["keys"]
    solo = _entry(solo_trust.trust, solo_trust.keyid) | {"roles": ["approver"]}
    trust = write_trust(top / "team.yaml", [*keys, solo], approver=approvers)
    return Team(trust, top / "Alice.pem", top / "Bob.pem", top / "Carol.pem", ids)


@pytest.fixture
def team(tmp_path: Path, solo_trust: TrustSetup, monkeypatch: pytest.MonkeyPatch) -> Team:
    t = make_team(tmp_path / "team", solo_trust)
    monkeypatch.setenv("SYNTHREG_TRUST", str(t.trust))
    return t


def clean(ws: Path) -> tuple[str, str]:
    return sh(ws, "git", "rev-parse", "HEAD"), sh(ws, "git", "status", "--porcelain", "--untracked-files=all")


# --- the honest paths -----------------------------------------------------------------------------------


def test_a_release_is_a_candidate_until_another_key_approves(fresh: Path, team: Team):
    ws = fresh
    r = release("digits", "1.0.0", ws, key=team.alice)
    assert tags(ws) == []  # a candidate: committed, not tagged
    assert sh(ws, "git", "status", "--porcelain") == ""
    assert list_status(ws) == {
        "digits": [("1.0.0", "candidate, approved by 1 of 2 (releaser 1/1, approver 0/1)")]
    }
    with pytest.raises(ReleaseError, match=r"^digits@1\.0\.0 is a candidate, not a final release"):
        open_release(ws, "digits@1.0.0")
    assert verify(ws, "digits@1.0.0").ok  # its content verifies; it is just not final
    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])  # a CI gate is not fooled
    assert out.exit_code == CANDIDATE_EXIT and out.stdout.endswith(
        "a CANDIDATE, not final: approvals missing\n"
    )
    assert runner.invoke(app, ["verify", "digits@1.0.0", "--require", "signed", "-w", str(ws)]).exit_code == 0
    for args in (["doctor"], ["doctor", "--repair"]):  # a healthy candidate is not unfinished (issue 24)
        doc = runner.invoke(app, [*args, "-w", str(ws)])
        assert (doc.exit_code, doc.output) == (0, "doctor: nothing to repair\n"), doc.output
    assert tags(ws) == []

    before = clean(ws)
    with pytest.raises(
        TrustError, match=r"cannot sign as approver: key .* \(Alice\) does not hold the role approver"
    ):
        approve(ws, "digits@1.0.0", team.alice)
    assert clean(ws) == before

    cli = runner.invoke(app, ["approve", "digits@1.0.0", "--key", str(team.bob), "-w", str(ws)])
    assert cli.exit_code == 0, cli.output
    assert cli.stdout.splitlines()[0] == "digits@1.0.0: approved by 2 of 2 (releaser 1/1, approver 1/1)"
    assert cli.stdout.splitlines()[-1] == "final: tag digits@v1.0.0"
    state = approval_state(load_trust(ws), "digits@1.0.0", *read_signed(folder(ws, "1.0.0")))
    assert state.met and state.status == "final"
    assert tags(ws) == ["digits@v1.0.0"]
    assert [(s.name, s.roles, s.trusted) for s in state.signers] == [
        ("Alice", ["releaser"], True),
        ("Bob", ["approver"], True),
    ]
    envelope = json.loads((folder(ws, "1.0.0") / ENVELOPE).read_text())
    assert {s["keyid"] for s in envelope["signatures"]} == {team.ids["Alice"], team.ids["Bob"]}
    assert len(open_release(ws, "digits@1.0.0")) == r.counts.accepted
    event = audit.read(ws)[-1]
    assert (event.kind, event.subject, event.details["name"], event.details["status"]) == (
        "approval",
        "digits@1.0.0",
        "Bob",
        "final",
    )

    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == "digits@1.0.0: approved by 2 of 2 (releaser 1/1, approver 1/1)"
    assert lines[1].startswith(f"  signed by releaser Alice key {team.ids['Alice'][:16]} at ")
    assert lines[1].endswith(" UTC: trusted")
    assert lines[2].startswith(f"  signed by approver Bob key {team.ids['Bob'][:16]} at ")
    assert lines[-1] == "digits@1.0.0: OK (12 samples in 2 shards)"
    show = runner.invoke(app, ["show", "digits@1.0.0", "-w", str(ws)])
    rows = table_rows(show.stdout)
    assert ["release status", "final"] in rows
    assert ["signatures", "approved by 2 of 2 (releaser 1/1, approver 1/1)"] in rows

    before = clean(ws)
    with pytest.raises(ReleaseError, match=r"^digits@1\.0\.0 is final already \(approved by 2 of 2"):
        approve(ws, "digits@1.0.0", team.carol)
    with pytest.raises(ReleaseError, match=r"^digits@9\.9\.9 is not a candidate release"):
        approve(ws, "digits@9.9.9", team.carol)
    assert clean(ws) == before
    ok = runner.invoke(app, ["log", "--verify", "-w", str(ws)])
    assert ok.exit_code == 0 and ok.stdout.startswith("audit log: intact"), ok.output


def test_a_repository_policy_raises_the_threshold_but_never_lowers_it(
    fresh: Path, team: Team, solo_trust: TrustSetup, tmp_path: Path
):
    ws = fresh
    (ws / "policies/release.yaml").write_text("thresholds:\n  approver: 2\n")
    sh(ws, "git", "add", "policies/release.yaml")
    sh(ws, "git", "commit", "-q", "-m", "Two approvers")
    release("digits", "1.0.0", ws, key=team.alice)
    assert not approve(ws, "digits@1.0.0", team.bob).met
    assert tags(ws) == []
    state = approve(ws, "digits@1.0.0", team.carol)
    assert state.met and state.summary() == "approved by 3 of 3 (releaser 1/1, approver 2/2)"
    assert tags(ws) == ["digits@v1.0.0"]

    # the trust root pins approver: 2; a repository file saying 1 changes nothing
    strict = make_team(tmp_path / "strict", solo_trust, approvers=2)
    (ws / "policies/release.yaml").write_text("thresholds:\n  approver: 1\n")
    assert load_trust(ws, strict.trust).thresholds == {"releaser": 1, "approver": 2}


def test_solo_mode_finalises_at_once_and_says_so(released: Built):
    ws = released.ws
    assert tags(ws) == ["digits@v1.0.0"]
    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code == 0
    assert out.stdout.splitlines()[0] == (
        "digits@1.0.0: approved by 2 of 2 (releaser 1/1, approver 1/1) (solo: one key holds both roles)"
    )
    assert runner.invoke(app, ["list", "-w", str(ws)]).stdout == "digits: 1.0.0 (solo)\n"


def test_a_retired_key_still_verifies_what_it_signed_in_its_window(
    released_copy: Path, solo_trust: TrustSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ws = released_copy
    new = keygen(tmp_path / "pub", tmp_path / "new.pem", name="New Key", trust=tmp_path / "scratch.yaml")
    old, fresh = _entry(solo_trust.trust, solo_trust.keyid), _entry(tmp_path / "scratch.yaml", new.keyid)
    # Retired with nothing to vouch for the time its sign-off claims: reported, not counted (issue 24:
    # a retired key can sign a backdated sign-off as easily as a real one).
    retired = old | {"valid_until": datetime.now(UTC).isoformat()}
    monkeypatch.setenv(
        "SYNTHREG_TRUST", str(write_trust(tmp_path / "early.yaml", [retired, fresh], solo=True))
    )
    early = verify(ws, "digits@1.0.0")
    assert not early.ok and early.approval is not None and early.approval.status == "candidate"
    why = early.approval.signers[0].why_untrusted or ""
    assert why.startswith(f"key {solo_trust.keyid[:16]} (") and "was retired on " in why
    assert "no audit checkpoint signed before then by another trusted key covers this record" in why
    # The rotation as it should be done: the new key signs the log (covering the release) first...
    monkeypatch.setenv("SYNTHREG_TRUST", str(write_trust(tmp_path / "both.yaml", [old, fresh], solo=True)))
    sign_checkpoint(ws, key=tmp_path / "new.pem")
    # ... then the old key is retired: what it signed inside its window still verifies.
    retired = old | {"valid_until": datetime.now(UTC).isoformat()}
    rotated = write_trust(tmp_path / "rotated.yaml", [retired, fresh], solo=True)
    monkeypatch.setenv("SYNTHREG_TRUST", str(rotated))
    assert verify(ws, "digits@1.0.0").ok  # signed inside the old key's window, and vouched for
    assert len(open_release(ws, "digits@1.0.0")) > 0
    # ... but the retired key signs nothing new: refused before anything is written (bad input: expired key)
    before = clean(ws)
    with pytest.raises(TrustError) as e:
        release("digits", "1.1.0", ws, key=solo_trust.key)
    assert "cannot sign as releaser: signed at " in str(e.value)
    assert f"after the key's valid_until {retired['valid_until'][:10]}" in str(e.value)
    assert str(e.value).endswith(f"(keys[0]) in {rotated}")
    assert clean(ws) == before


def test_a_key_revoked_after_signing_fails_verify_with_its_own_exit_code(
    released_copy: Path, solo_trust: TrustSetup, tmp_path: Path
):
    revoked = _entry(solo_trust.trust, solo_trust.keyid) | {
        "revoked": {"time": datetime.now(UTC).isoformat(), "reason": "laptop stolen"}
    }
    spare = keygen(tmp_path / "pub", tmp_path / "spare.pem", name="Spare", trust=tmp_path / "scratch.yaml")
    trust = write_trust(
        tmp_path / "t.yaml", [revoked, _entry(tmp_path / "scratch.yaml", spare.keyid)], solo=True
    )
    out = runner.invoke(app, ["verify", "digits@1.0.0", "--trust", str(trust), "-w", str(released_copy)])
    assert out.exit_code == 5, out.output
    assert f"was revoked on {datetime.now(UTC):%Y-%m-%d}: laptop stolen" in out.stdout
    assert out.stdout.splitlines()[-1] == "digits@1.0.0: FAILED (12 samples in 2 shards)"


# --- attacks by someone who can write the repository ----------------------------------------------------


def _resign(ws: Path, version: str, key: Path, edit) -> str:
    """What an insider can do with their own key: edit the record, sign it again, write a sign-off."""
    out = folder(ws, version)
    record = json.loads((out / "release.json").read_text())
    edit(record)
    (out / "release.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    st = json.loads(payload_of(json.loads((out / ENVELOPE).read_text())))
    signer = load_signer(key)
    env = sign(statement({s["name"]: s["digest"]["sha256"] for s in st["subject"]}, record), signer)
    rogue = TrustedKey(
        keyid=signer.public_key.keyid,
        name="Release Tester",
        roles=["releaser", "approver"],
        public=signer.public_key.keyval["public"],
    )
    so = make_signoff(ws, f"digits@{version}", payload_of(env), signer, rogue, ["releaser", "approver"])
    (out / ENVELOPE).write_text(json.dumps(env) + "\n")
    (out / SIGNOFFS).write_text(json.dumps([so]) + "\n")
    return signer.public_key.keyid


def test_replacing_the_public_key_and_resigning_an_edited_release_is_untrusted(
    released_copy: Path, tmp_path: Path
):
    ws = released_copy
    rogue = keygen(tmp_path / "pub", tmp_path / "rogue.pem")
    for old in (ws / "keys").glob("*.pub.json"):
        old.unlink()
    shutil.copy(rogue.public, ws / "keys" / rogue.public.name)  # the repository's key is now the rogue's
    _resign(ws, "1.0.0", tmp_path / "rogue.pem", lambda r: r["counts"].update(accepted=12))
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "-m", "nothing to see")
    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code == 5, out.output
    assert f"  signed by releaser+approver Release Tester key {rogue.keyid[:16]} at " in out.stdout
    assert f"NOT TRUSTED: key {rogue.keyid[:16]} is not in the trust root" in out.stdout
    with pytest.raises(SigningError, match=r"is signed by an untrusted key: key .* is not in the trust root"):
        open_release(ws, "digits@1.0.0")
    assert list_status(ws)["digits"][0][1].startswith("UNTRUSTED: key ")


def test_an_edited_record_with_the_tag_moved_to_it_is_still_caught(released_copy: Path):
    ws = released_copy
    path = folder(ws, "1.0.0") / "release.json"
    record = json.loads(path.read_text())
    record["counts"]["accepted"] += 5  # "1,000 accepted" where the signed record says 995
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    sh(ws, "git", "commit", "-q", "-am", "fix counts")
    sh(ws, "git", "tag", "-f", "digits@v1.0.0")  # the insider moves the tag too
    expected = "release.json differs from the signed record (edited after signing)"
    assert verify(ws, "digits@1.0.0").problems == [expected]
    assert list_status(ws) == {"digits": [("1.0.0", f"INVALID: {expected}")]}
    with pytest.raises(ReleaseError, match=r"release\.json differs from the signed record"):
        open_release(ws, "digits@1.0.0")


def test_a_rogue_signature_added_to_the_envelope_is_named(released_copy: Path, tmp_path: Path):
    ws = released_copy
    keygen(tmp_path / "pub", tmp_path / "rogue.pem")
    path = folder(ws, "1.0.0") / ENVELOPE
    path.write_text(
        json.dumps(add_signature(json.loads(path.read_text()), load_signer(tmp_path / "rogue.pem")))
    )
    result = verify(ws, "digits@1.0.0")
    assert not result.ok
    assert result.problems[0].startswith("the envelope holds a signature by key ")
    assert result.problems[0].endswith(" with no sign-off (who, role, when)")


def test_copying_a_signed_release_over_another_version_or_name_is_caught(released_copy: Path):
    ws = released_copy
    for target in ("digits/9.9.9", "letters/1.0.0"):
        shutil.copytree(folder(ws, "1.0.0"), ws / "releases" / target)
    result = verify(ws, "digits@9.9.9")
    assert result.problems[0].endswith(
        "approves digits@1.0.0, not digits@9.9.9 (replayed from another release)"
    )
    assert (
        "the signed statement is for digits@1.0.0, not digits@9.9.9 (a signed release copied to"
        in " ".join(result.problems)
    )
    with pytest.raises(ReleaseError):
        open_release(ws, "digits@9.9.9")
    status = list_status(ws)
    assert status["letters"][0][1].startswith("INVALID: ")
    assert "the signed statement is for digits@1.0.0, not letters@1.0.0" in status["letters"][0][1]
    show = runner.invoke(app, ["show", "letters@1.0.0", "-w", str(ws)])
    assert show.exit_code == 1
    assert show.stderr.startswith(
        f"error: {ws / 'releases/letters/1.0.0/release.json'} is the record of digits@1.0.0, "
        "not letters@1.0.0"
    )


def test_replaying_an_approval_onto_another_release_is_caught(released_copy: Path, tmp_path: Path):
    from registry.releases.derive import derive

    ws = released_copy
    first = sh(ws, "git", "ls-files", "releases/digits/1.0.0/signoffs.json")
    assert first
    rows = pq.read_table(folder(ws, "1.0.0") / "data/manifest.parquet").column("sample_id").to_pylist()
    derive(ws, "digits@1.0.0", "1.1.0", "drop one", exclude_samples=rows[:1])
    # paste 1.0.0's sign-off (and its envelope signature) onto 1.1.0
    old = json.loads((folder(ws, "1.0.0") / SIGNOFFS).read_text())
    path = folder(ws, "1.1.0") / SIGNOFFS
    path.write_text(json.dumps(old))
    result = verify(ws, "digits@1.1.0")
    assert result.problems[0].startswith("the sign-off by Solo Tester (key ")
    assert result.problems[0].endswith(
        "approves digits@1.0.0, not digits@1.1.0 (replayed from another release)"
    )

    # and once the parent is withdrawn, trace names what was derived from it
    from registry.lineage.trace import release_info

    withdraw(ws, "digits@1.0.0", "consent withdrawn")
    info = release_info(ws, load_release(ws, "digits@1.0.0"), None, {})
    assert "derived from the withdrawn digits@1.0.0: digits@1.1.0" in info.warnings


def test_an_edited_report_is_not_released(fresh: Path, base: Built):
    ws = fresh
    shutil.rmtree(ws / "waivers")
    report = validate_ws(ws, waivers=None)
    assert not report.passed
    commit_all(ws, "no waivers")  # the release's inputs are committed: only the report is edited below
    path = ws / "data/digits/policy/report.json"
    doc = json.loads(path.read_text())
    for r in doc["results"]:
        r["status"] = "pass" if r["status"] == "fail" else r["status"]
    doc["passed"] = True
    path.write_text(json.dumps(doc, indent=2) + "\n")
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", ws, key=base.key)
    assert str(e.value) == (
        "report.json says rule bias.observed-collapse is pass, but checking the manifest again gives fail; "
        "the report was edited or is out of date: run `synthreg validate` again"
    )
    assert tags(ws) == [] and not (ws / "releases/digits/1.0.0").exists()


def test_an_edited_manifest_or_shard_is_not_served(released_copy: Path):
    ws = released_copy
    manifest = folder(ws, "1.0.0") / "data/manifest.parquet"
    original = manifest.read_bytes()
    table = pq.read_table(manifest)
    manifest.chmod(0o644)
    pq.write_table(table.slice(0, 6), manifest)  # "fewer rejected": rows removed after release
    with pytest.raises(
        ManifestError, match=r"does not match the sha256 in the signed record of digits@1\.0\.0"
    ):
        open_release(ws, "digits@1.0.0")
    manifest.write_bytes(original)
    record = load_release(ws, "digits@1.0.0")
    shard = folder(ws, "1.0.0") / "data" / record.shards[0].path
    shard.chmod(0o644)
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # padding: every image still matches, the shard does not
    shard.write_bytes(bytes(data))
    reader = open_release(ws, "digits@1.0.0", accepted_only=False)
    with pytest.raises(ManifestError, match=r"does not match its signed sha256"):
        [reader.image_bytes(i) for i in range(len(reader))]


def _forge_waiver(ws: Path, key: Path, name: str, rule: str = "bias.requested-balance") -> None:
    signer = load_signer(key)
    w = SignedWaiver(
        rule_id=rule,
        scope="digits",
        reason="looks fine to me",
        expires=date(2099, 1, 1),
        approver=name,
        keyid=signer.public_key.keyid,
        signed_at=datetime.now(UTC),
        checkpoint=audit.head(ws),
    )
    payload = json.dumps(w.model_dump(mode="json")).encode()
    (ws / "waivers" / f"{rule}--forged.dsse.json").write_text(json.dumps(sign(payload, signer, WAIVER_TYPE)))


def test_forged_self_approved_and_unknown_rule_waivers_are_ignored_with_why(
    fresh: Path, team: Team, tmp_path: Path
):
    ws = fresh
    shutil.rmtree(ws / "waivers")
    (ws / "waivers").mkdir()
    keygen(tmp_path / "pub", tmp_path / "rogue.pem")
    _forge_waiver(ws, tmp_path / "rogue.pem", "QA Lead")  # a key nobody trusts
    _forge_waiver(ws, team.alice, "Alice", "bias.observed-collapse")  # a releaser approving their own
    _forge_waiver(ws, team.bob, "Bob", "no.such-rule")  # a real approver, an unknown rule
    before = clean(ws)
    with pytest.raises(
        TrustError, match=r"cannot sign as approver: key .* \(Alice\) does not hold the role approver"
    ):
        waive(ws, "bias.observed-collapse", "digits", "mine", date(2099, 1, 1), key=team.alice)
    with pytest.raises(PolicyError, match=r"rule 'no.such-rule' is in none of the policy packs"):
        waive(ws, "no.such-rule", "digits", "x", date(2099, 1, 1), key=team.bob)
    with pytest.raises(PolicyError, match=r"waiver expiry 2000-01-01 is in the past"):
        waive(ws, "bias.observed-collapse", "digits", "x", date(2000, 1, 1), key=team.bob)
    for scope in ("dig*", "Digits", "*digits", ""):  # a pattern matched nothing, silently (issue 24)
        with pytest.raises(PolicyError, match=r"waiver scope .* is not a dataset name or '\*'"):
            waive(ws, "bias.observed-collapse", scope, "x", date(2099, 1, 1), key=team.bob)
    assert clean(ws) == before
    report = validate_ws(ws, waivers=None)
    assert not report.passed
    why = {w.rule_id: w.why for w in report.ignored_waivers}
    assert why["bias.requested-balance"].startswith("not signed by a trusted approver: key ")
    assert why["bias.requested-balance"].endswith("is not in the trust root")
    assert why["bias.observed-collapse"].endswith("(Alice) does not hold the role approver in the trust root")
    assert why["no.such-rule"] == "rule 'no.such-rule' is in none of the loaded policy packs"
    # an honest one counts, and the log shows who signed it
    cli = runner.invoke(
        app,
        [
            *("waive", "bias.observed-collapse", "--scope", "digits", "--reason", "toy set"),
            *("--expires", "2099-01-01", "--key", str(team.bob), "-w", str(ws)),
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert cli.stdout.startswith(
        "waived bias.observed-collapse for digits until 2099-01-01, signed by Bob "
        f"(approver key {team.ids['Bob'][:16]})"
    )
    report = validate_ws(ws, waivers=None)
    [r] = [r for r in report.results if r.rule_id == "bias.observed-collapse"]
    assert r.status == "waived" and r.waiver is not None and r.waiver.approver_keyid == team.ids["Bob"]
    out = runner.invoke(app, ["log", "-w", str(ws)])
    assert f"signed by Bob key {team.ids['Bob'][:16]}" in out.stdout


def _rewrite(ws: Path, change) -> None:
    """Rewrite every event with ``change`` and recompute every hash, parent and file name."""
    renamed: dict[str, str] = {}
    for e in audit.read(ws):  # oldest first: parents are renamed before their children
        path = ws / audit.EVENTS / f"{e.hash}.json"
        event = json.loads(path.read_text())
        path.unlink()
        change(event)
        event["parents"] = sorted(renamed[p] for p in event["parents"])
        event["hash"] = renamed[e.hash] = audit.content_hash(event)
        text = json.dumps(event, sort_keys=True, separators=(",", ":")) + "\n"
        (ws / audit.EVENTS / f"{event['hash']}.json").write_text(text)


def test_a_rewritten_or_truncated_log_is_caught_by_the_signed_checkpoints(released_copy: Path):
    ws = released_copy
    events = audit.read(ws)
    trust = load_trust(ws)
    checked, problems = check_checkpoints(ws, trust)
    assert checked >= 4 and problems == []

    saved = {p.name: p.read_bytes() for p in (ws / audit.EVENTS).iterdir()}
    _rewrite(ws, lambda e: e.update(actor="Mallory"))  # every hash valid again
    assert audit.verify(ws) == []
    _, problems = check_checkpoints(ws, trust)
    assert problems and " which the log does not hold (removed, rewritten, or the signer's" in problems[0]
    out = runner.invoke(app, ["log", "--verify", "-w", str(ws)])
    assert out.exit_code == 1 and "the sign-off of digits@1.0.0 signed by Solo Tester" in out.stdout

    shutil.rmtree(ws / audit.EVENTS)
    (ws / audit.EVENTS).mkdir()
    for e in events[:2]:  # truncated below the release's checkpoint
        (ws / audit.EVENTS / f"{e.hash}.json").write_bytes(saved[f"{e.hash}.json"])
    assert audit.verify(ws) == []
    _, problems = check_checkpoints(ws, trust)
    assert any(
        p.startswith("the sign-off of digits@1.0.0 signed by Solo Tester") and "the log does not hold" in p
        for p in problems
    )


def test_a_withdrawal_is_signed_shown_everywhere_and_cannot_be_deleted_quietly(released_copy: Path):
    ws = released_copy
    w = withdraw(ws, "digits@1.0.0", "consent withdrawn")
    assert (w.signer, w.role, w.trusted) == ("Solo Tester", "releaser", True)
    with pytest.raises(
        ReleaseError, match=r"^digits@1\.0\.0 was withdrawn on .*: consent withdrawn; pass allow_withdrawn"
    ):
        open_release(ws, "digits@1.0.0")
    assert open_release(ws, "digits@1.0.0", allow_withdrawn=True).withdrawn.reason == "consent withdrawn"
    assert list_status(ws) == {"digits": [("1.0.0", "solo, withdrawn")]}
    status = list_status(ws)["digits"][0][1]  # typed: no caller parses the words (issue 18)
    assert (status.state, status.withdrawn) == (ReleaseStatus.SOLO, True)
    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code == WITHDRAWN_EXIT and "  WITHDRAWN on " in out.stdout  # a CI gate is not fooled
    out = runner.invoke(app, ["verify", "digits@1.0.0", "--require", "signed", "-w", str(ws)])
    assert out.exit_code == 0 and out.stdout.splitlines()[-1].startswith("digits@1.0.0: OK")

    (folder(ws, "1.0.0") / "withdrawal.dsse.json").unlink()  # the insider deletes it
    gone = is_withdrawn(ws, "digits", "1.0.0")
    assert gone is not None and not gone.trusted
    assert gone.why_untrusted.startswith(
        "the withdrawal record releases/digits/1.0.0/withdrawal.dsse.json was deleted"
    )
    with pytest.raises(ReleaseError, match="was withdrawn"):
        open_release(ws, "digits@1.0.0")
    assert any(
        "was deleted, but the audit log records the withdrawal" in p
        for p in verify(ws, "digits@1.0.0").problems
    )


# --- keys -------------------------------------------------------------------------------------------------


def test_keygen_writes_the_private_key_0600_outside_the_workspace_and_never_replaces(
    fresh: Path, tmp_path: Path
):
    ws = fresh
    r = keygen(ws, tmp_path / "k" / "me.pem")
    assert stat.S_IMODE(os.stat(r.private).st_mode) == 0o600
    assert r.public == ws / "keys" / f"{r.keyid}.pub.json"
    with pytest.raises(SigningError, match=r"exists already; pass --force"):
        keygen(ws, tmp_path / "k" / "me.pem")
    with pytest.raises(SigningError, match=r"is inside the workspace .* where `git add` could publish it"):
        keygen(ws, ws / "keys" / "release.key")
    assert not (ws / "keys" / "release.key").exists()
    out = runner.invoke(app, ["keygen", "--key", str(ws / "x.pem"), "-w", str(ws)])
    assert out.exit_code == 1 and out.stderr.startswith(
        f"error: private key {ws / 'x.pem'} is inside the workspace"
    )
    assert sh(Path(__file__).parents[2], "git", "check-ignore", "-q", "keys/release.key") == ""


def test_release_refuses_a_key_that_is_not_a_trusted_ed25519_releaser(fresh: Path, tmp_path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ws = fresh
    before = clean(ws)
    for name, key in (
        ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ec", ec.generate_private_key(ec.SECP256R1())),
    ):
        pem = tmp_path / f"{name}.pem"
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        with pytest.raises(SigningError, match=r"releases are signed with ed25519 keys only"):
            release("digits", "1.0.0", ws, key=pem)
    keygen(tmp_path / "pub", tmp_path / "stranger.pem")
    with pytest.raises(
        TrustError, match=r"cannot sign as releaser: key [0-9a-f]{16} is not in the trust root"
    ):
        release("digits", "1.0.0", ws, key=tmp_path / "stranger.pem")
    assert clean(ws) == before and not (ws / "releases").exists()


# --- bad trust roots: a message naming file and field, nothing written ----------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: "keys: [\n", "is not valid YAML"),
        (lambda d: d | {"keys": [d["keys"][0] | {"roles": ["admin"]}]}, "keys.0.roles.0"),
        (lambda d: d | {"thresholds": {"releaser": 1, "approver": 2}}, "threshold approver=2 in "),
        (lambda d: d | {"keys": [d["keys"][0] | {"keyid": "0" * 64}]}, "is not the keyid of its public key"),
        (lambda d: d | {"shoe_size": 44}, "shoe_size"),
    ],
    ids=["yaml", "unknown-role", "unreachable-threshold", "wrong-keyid", "unknown-field"],
)
def test_a_bad_trust_root_is_refused_naming_file_and_field(
    fresh: Path, solo_trust: TrustSetup, tmp_path: Path, edit, message: str
):
    doc = yaml.safe_load(solo_trust.trust.read_text())
    changed = edit(doc)
    bad = tmp_path / "bad.yaml"
    bad.write_text(changed if isinstance(changed, str) else yaml.safe_dump(changed))
    before = clean(fresh)
    with pytest.raises(TrustError) as e:
        release("digits", "1.0.0", fresh, trust=bad)
    assert str(bad) in str(e.value) and message in str(e.value)
    assert clean(fresh) == before and not (fresh / "releases").exists()
    out = runner.invoke(app, ["verify", "digits@1.0.0", "--trust", str(bad), "-w", str(fresh)])
    assert out.exit_code == 1 and out.stderr.startswith("error: ")


def test_a_trust_root_inside_the_workspace_is_refused(released_copy: Path, solo_trust: TrustSetup):
    inside = released_copy / "trust.yaml"
    shutil.copy(solo_trust.trust, inside)
    out = runner.invoke(app, ["verify", "digits@1.0.0", "--trust", str(inside), "-w", str(released_copy)])
    assert out.exit_code == 1
    assert out.stderr.startswith(
        f"error: trust root {inside} is inside the workspace, where anyone who can write"
    )


@pytest.mark.parametrize("how", ["--key", "env", "symlink"])
def test_a_private_key_inside_the_workspace_is_refused_wherever_it_is_named(
    released_copy: Path, solo_trust: TrustSetup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str
) -> None:
    """Issue 24: keygen refused to write a key into the workspace, but withdraw, waive, approve, release
    and derive signed with one found there (where `git add` commits it). Each refuses it, by --key, by
    $SYNTHREG_SIGNING_KEY, or through a symlink outside that points in; nothing is written."""
    ws = released_copy
    inside = ws / "keys" / "release.key"
    shutil.copy(solo_trust.key, inside)
    key = inside
    if how == "symlink":
        key = tmp_path / "outside.key"
        key.symlink_to(inside)
    before = clean(ws)
    args = ["withdraw", "digits@1.0.0", "--reason", "x", "-w", str(ws)]
    if how == "env":
        monkeypatch.setenv("SYNTHREG_SIGNING_KEY", str(key))
    else:
        args += ["--key", str(key)]
    out = runner.invoke(app, args)
    assert out.exit_code == 1 and "is inside the workspace" in out.stderr, out.output
    with pytest.raises(SigningError, match=r"private key .* is inside the workspace"):
        waive(ws, "bias.requested-balance", "digits", "r", date(2099, 1, 1), key=key)
    assert clean(ws) == before
    assert is_withdrawn(ws, "digits", "1.0.0") is None


@pytest.mark.parametrize(
    ("args", "env", "what"),
    [
        (["--reason", "consent\ndigits: 1.0.0 (solo)"], {}, "--reason"),
        (["--reason", "x", "--actor", "Eve\r\n0 release digits@9.9.9"], {}, "--actor"),
        (["--reason", "x"], {"SYNTHREG_ACTOR": "Eve\x1b[2J"}, "$SYNTHREG_ACTOR"),
    ],
)
def test_a_newline_or_control_character_cannot_forge_a_line(
    released_copy: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict, what: str
) -> None:
    """Issue 24: a newline in withdraw's --actor or --reason forged a line of `synthreg log`, `list` and
    `show`. It is refused where it enters, before anything is written."""
    ws = released_copy
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = clean(ws)
    out = runner.invoke(app, ["withdraw", "digits@1.0.0", *args, "-w", str(ws)])
    assert out.exit_code == 1 and out.stderr.startswith(f"error: {what} "), out.output
    assert "holds a newline or control character" in out.stderr and out.stderr.count("\n") == 1
    assert clean(ws) == before and is_withdrawn(ws, "digits", "1.0.0") is None


def test_a_reference_with_an_empty_version_is_refused(released: Built) -> None:
    """Issue 24: `show digits@` exited 0, showing the latest version for a reference that names none."""
    out = runner.invoke(app, ["show", "digits@", "-w", str(released.ws)])
    assert out.exit_code == 1 and "is not a release reference" in out.stderr


def test_a_verifier_without_a_root_is_told_to_get_the_teams_not_to_make_a_key(tmp_path: Path):
    """Issue 20: a machine that only verifies, told to create a solo key, then trusted nobody."""
    from registry.trust.root import load_trust

    with pytest.raises(TrustError) as e:
        load_trust(None, tmp_path / "absent.yaml")
    said = str(e.value)
    assert "To verify a team's releases, get its trust root from whoever keeps it" in said
    assert "`synthreg trust init --verifier --from FILE`" in said
    assert "never from the repository" in said and "a solo root trusts only your own key" in said
