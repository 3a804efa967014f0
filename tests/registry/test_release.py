"""Releases end to end in a real temporary git + DVC workspace: a tiny digits dataset generated, filtered
and validated by the library (no `dvc repro`), released, signed, verified byte by byte, tampered with,
raced, diffed, and read back through the CLI. The workspaces (fixtures ``base``, ``released``, ``fresh``,
``released_copy``) are built in tests/registry/conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.core.digests import sha256_bytes
from registry.core.errors import ReleaseError
from registry.records.policy import PolicyReport
from registry.records.release import Release
from registry.records.signed import SIGNOFF_TYPE, SIGNOFFS
from registry.releases.catalog import diff, list_releases
from registry.releases.release import release
from registry.releases.verify import STEPS, verify
from registry.store import audit
from registry.store import manifest as mf
from registry.store.releases import EXPORTS, load_release
from registry.trust.signing import keygen, payload_of
from tests.conftest import REPO, TrustSetup
from tests.registry.conftest import (
    ACTOR,
    CANDIDATES,
    DVC,
    EXPIRES,
    FILTERED,
    POLICY,
    RELEASE_FILES,
    WAIVED,
    Built,
    commit_all,
    folder,
    sh,
    sha256,
    strays,
    table_rows,
    tags,
    tree_digests,
    validate_ws,
)

runner = CliRunner()


# --- a release and what it leaves behind ----------------------------------------------------------------


def test_release_writes_signs_commits_tags_and_verifies(released: Built, solo_trust: TrustSetup):
    ws, record = released.ws, released.record
    assert record is not None
    out = folder(ws, "1.0.0")
    assert sorted(p.name for p in out.iterdir() if p.is_file() and p.name != ".gitignore") == RELEASE_FILES
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "manifest-flat.parquet",
        "manifest.parquet",
        "shards",
    ]
    assert sorted(p.name for p in (out / "data" / "shards").iterdir()) == sorted(
        f"{s.sha256}.tar" for s in record.shards
    )

    # data/ is DVC's, not git's: ignored by git, tracked by a data.dvc whose content is in the cache
    assert (out / ".gitignore").read_text().splitlines() == ["/data"]
    sh(ws, "git", "check-ignore", "-q", "releases/digits/1.0.0/data/manifest.parquet")
    [dvc_out] = yaml.safe_load((out / "data.dvc").read_text())["outs"]
    assert dvc_out["path"] == "data" and dvc_out["nfiles"] == 4 and dvc_out["md5"].endswith(".dir")
    md5 = dvc_out["md5"]
    assert (ws / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).is_file()
    committed = sh(ws, "git", "ls-files", "releases").splitlines()
    assert committed == [f"releases/digits/1.0.0/{f}" for f in sorted([".gitignore", *RELEASE_FILES])]

    assert tags(ws) == ["digits@v1.0.0"]
    assert sh(ws, "git", "rev-parse", "digits@v1.0.0^{commit}") == sh(ws, "git", "rev-parse", "HEAD")
    assert sh(ws, "git", "log", "-1", "--format=%s") == "Release digits@1.0.0"
    assert sh(ws, "git", "status", "--porcelain", "--untracked-files=all") == ""
    assert record.git_commit == sh(ws, "git", "rev-parse", "HEAD~1")  # what it was released from

    report = PolicyReport.model_validate_json((ws / POLICY / "report.json").read_text())
    assert record.manifest_sha256 == report.manifest_sha256 == sha256(out / "data/manifest.parquet")
    assert record.policy_report_sha256 == sha256(ws / POLICY / "report.json")
    assert (out / "policy-report.json").read_text() == (ws / POLICY / "report.json").read_text()
    assert [w.rule_id for w in record.waivers] == WAIVED
    assert {w.expires for w in record.waivers} == {EXPIRES}
    assert (record.counts.total, len(record.shards), record.actor) == (12, 2, ACTOR)
    assert json.loads((out / "release.json").read_text()) == record.model_dump(mode="json")

    envelope = json.loads((out / "release.dsse.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == {
        "data/manifest.parquet": record.manifest_sha256
    } | {f"data/shards/{s.sha256}.tar": s.sha256 for s in record.shards} | {
        "data/manifest-flat.parquet": sha256(out / "data/manifest-flat.parquet")
    } | {e: sha256(out / e) for e in EXPORTS}  # README.md is what `datasets` obeys: signed
    assert statement["predicate"] == record.model_dump(mode="json")

    result = verify(ws, "digits@1.0.0")
    assert (result.ok, result.problems, result.bad_samples) == (True, [], {})
    assert (result.samples, result.shards) == (12, 2)
    assert list_releases(ws) == {"digits": ["1.0.0"]}
    assert load_release(ws, "digits") == load_release(ws, "digits@v1.0.0") == record

    events = audit.read(ws)
    assert events[-1].kind == "release" and events[-1].subject == "digits@1.0.0"
    assert events[-1].details == {
        "manifest_sha256": record.manifest_sha256,
        "policy_report_sha256": record.policy_report_sha256,
        "remote": record.remote,
        "no_push": False,
        "status": "solo",
        "signer": {"keyid": solo_trust.keyid, "name": "Solo Tester"},
        # the releaser's sign-off, which a checkpoint over this event vouches for (issue 24, family 8)
        "record_sha256": sha256_bytes(payload_of(json.loads((out / SIGNOFFS).read_text())[0], SIGNOFF_TYPE)),
        # validate wrote this report from these inputs: only the two rules that read other files ran
        # again (tests/registry/test_release_recheck.py)
        "policy_recheck": {
            "reused": [r.rule_id for r in report.results if r.kind not in ("source-withdrawn", "leakage")],
            "ran": ["sources.not-withdrawn", "leakage.eval-split"],
            "why": None,
        },
    }
    assert record.remote is not None and record.remote.startswith("storage /") and not record.no_push
    assert [e.kind for e in events].count("release") == 1
    assert audit.verify(ws) == []


def test_a_released_version_is_immutable(released_copy: Path, released: Built):
    ws = released_copy
    before = tree_digests(folder(ws, "1.0.0"))
    head, log = sh(ws, "git", "rev-parse", "HEAD"), tree_digests(ws / audit.LOG)
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", ws, key=released.key)
    assert str(e.value) == "digits@1.0.0 exists already and releases are immutable; pick a new version"
    with pytest.raises(ReleaseError) as e:
        release("digits", "0.9.0", ws, key=released.key)
    assert str(e.value) == "version 0.9.0 is not greater than the latest, digits@1.0.0"
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0", ws, key=released.key)
    assert str(e.value) == "version '1.0' is not semantic (X.Y.Z, e.g. 1.0.0, each number below 10^9)"

    assert tree_digests(folder(ws, "1.0.0")) == before
    assert sorted(p.name for p in (ws / "releases/digits").iterdir()) == ["1.0.0"]
    assert tags(ws) == ["digits@v1.0.0"]
    assert sh(ws, "git", "rev-parse", "HEAD") == head
    assert tree_digests(ws / audit.LOG) == log
    assert sh(ws, "git", "status", "--porcelain", "--untracked-files=all") == ""


def test_a_crashed_releases_staging_folder_is_not_a_version(released_copy: Path):
    # A SIGKILLed release leaves .X.Y.Z.tmp-<pid>/ with a release.json in it; readers must skip it.
    ws = released_copy
    stray = ws / "releases/digits/.1.1.0.tmp-99999"
    stray.mkdir()
    shutil.copy(folder(ws, "1.0.0") / "release.json", stray / "release.json")
    assert list_releases(ws) == {"digits": ["1.0.0"]}
    assert load_release(ws, "digits").version == "1.0.0"
    result = runner.invoke(app, ["list", "-w", str(ws)])
    assert (result.exit_code, result.output) == (0, "digits: 1.0.0 (solo)\n")


# --- the gate --------------------------------------------------------------------------------------------


def assert_nothing_released(ws: Path) -> None:
    assert not (ws / "releases/digits").exists() or not any((ws / "releases/digits").iterdir())
    assert tags(ws) == []
    assert [e.kind for e in audit.read(ws)].count("release") == 0


def test_gate_refuses_without_a_policy_report(fresh: Path, base: Built):
    (fresh / POLICY / "report.json").unlink()
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", fresh, key=base.key)
    assert str(e.value) == (
        f"no policy report for digits at {fresh / POLICY / 'report.json'}; run `synthreg validate` first"
    )
    assert_nothing_released(fresh)


def test_gate_refuses_a_stale_report(fresh: Path, base: Built):
    path = fresh / FILTERED / "manifest.parquet"
    validated = sha256(path)
    table = mf.read_table(path)
    reasons = table.column("reason").to_pylist()
    reasons[0] = reasons[0] + " (edited)"
    mf.write_table(
        table.set_column(table.schema.get_field_index("reason"), "reason", pa.array(reasons)), path
    )
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", fresh, key=base.key)
    assert str(e.value) == (
        f"the policy report is stale: made for manifest {validated[:12]}, but the manifest is "
        f"{sha256(path)[:12]}; run `synthreg validate` again"
    )
    assert_nothing_released(fresh)


def test_gate_refuses_a_report_with_failing_error_rules(fresh: Path, base: Built):
    shutil.rmtree(fresh / "waivers")  # the signed waivers
    report = validate_ws(fresh, waivers=None)
    failing = [r.rule_id for r in report.results if r.status == "fail"]
    assert failing == WAIVED and not report.passed
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", fresh, key=base.key)
    assert str(e.value) == f"the policy report has failing error rules without a waiver: {', '.join(WAIVED)}"
    assert_nothing_released(fresh)


def test_gate_refuses_when_a_waiver_expired_since_validation(fresh: Path, base: Built):
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", fresh, key=base.key, today=date(2100, 1, 1))
    assert str(e.value) == (
        f"waivers for {', '.join(WAIVED)} expired since validation; renew them and validate again"
    )
    assert_nothing_released(fresh)
    # ... and on its expiry day it still holds
    assert release("digits", "1.0.0", fresh, key=base.key, today=EXPIRES).version == "1.0.0"


# --- verify: image bytes, shards, record, signature, key ------------------------------------------------


def writable_private_copy(path: Path) -> None:
    """DVC may leave a released file read-only, or as a link into its cache: make it a private, writable
    file first, so damaging it cannot damage the cache."""
    if path.is_symlink() or path.stat().st_nlink > 1:
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)
    path.chmod(0o644)


def sample_of(ws: Path, record: Release, shard_sha: str, member: str) -> str:
    source = next(s.source for s in record.shards if s.sha256 == shard_sha)
    con = mf.connect(folder(ws, record.version) / "data/manifest.parquet")
    [(sid,)] = con.execute(
        "SELECT sample_id FROM manifest WHERE shard = ? AND member = ?", [source, member]
    ).fetchall()
    return sid


def test_the_flat_manifest_is_a_signed_subject_that_verify_checks(released_copy: Path) -> None:
    """data/manifest-flat.parquet (for Hugging Face `datasets`) is signed like the manifest: an edited
    or missing copy fails verify and is named as damaged (what a pull discards)."""
    from registry.trust.signing import payload_of

    ws = released_copy
    flat = folder(ws, "1.0.0") / "data" / mf.FLAT
    envelope = json.loads((folder(ws, "1.0.0") / "release.dsse.json").read_text())
    subjects = {s["name"]: s["digest"]["sha256"] for s in json.loads(payload_of(envelope))["subject"]}
    assert subjects[f"data/{mf.FLAT}"] == sha256(flat)
    assert verify(ws, "digits@1.0.0").ok
    writable_private_copy(flat)
    flat.write_bytes(flat.read_bytes() + b"\0")
    result = verify(ws, "digits@1.0.0")
    assert result.problems == [
        f"data/{mf.FLAT} does not match its signed sha256; run `dvc checkout` or `dvc pull`"
    ]
    assert result.damaged == [f"data/{mf.FLAT}"]
    flat.unlink()
    assert verify(ws, "digits@1.0.0").problems == [
        f"data/{mf.FLAT} is missing; run `dvc checkout` or `dvc pull`"
    ]


def test_one_flipped_byte_in_one_image_names_that_sample(released_copy: Path, released: Built):
    ws, record = released_copy, released.record
    assert record is not None
    shard = folder(ws, "1.0.0") / "data" / record.shards[1].path
    with tarfile.open(shard) as tar:
        member = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".png")][2]
    sid = sample_of(ws, record, record.shards[1].sha256, member.name)
    writable_private_copy(shard)
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x01
    shard.write_bytes(bytes(data))

    result = verify(ws, "digits@1.0.0")
    assert not result.ok
    assert list(result.bad_samples) == [sid]
    # (then what the damaged image's marking says, registry.store.marking; here the flip lands in it)
    assert result.bad_samples[sid].startswith(
        f"corrupted: image bytes in {shard.name} do not match the recorded sha256; its marking"
    )
    assert result.problems == [f"shard {shard.name} does not match its signed sha256"]
    assert (result.samples, result.shards) == (12, 2)

    cli = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert cli.exit_code == 1
    lines = cli.stdout.splitlines()
    assert f"  sample {sid}: {result.bad_samples[sid]}" in lines
    assert lines[-1] == "digits@1.0.0: FAILED (12 samples in 2 shards)"
    cli = runner.invoke(app, ["verify", "digits@1.0.0", "--json", "-w", str(ws)])
    assert cli.exit_code == 1
    doc = json.loads(cli.stdout)
    assert doc["ok"] is False and list(doc["bad_samples"]) == [sid]
    assert (doc["samples_checked"], doc["shards_checked"]) == (12, 2)
    # the checklist: every check, what it establishes, and whether it ran (issue 20)
    checks = {c["check"]: c for c in doc["checks"]}
    assert list(checks) == [step for step, _ in STEPS]
    assert {k: c["status"] for k, c in checks.items() if c["status"] != "pass"} == {
        "images": "fail",
        "c2pa": "not run",
    }
    assert checks["images"]["detail"] == f"shard {shard.name} does not match its signed sha256"
    assert checks["c2pa"]["detail"] == "the recipe did not ask for C2PA content credentials"
    assert "    fail      images: shard " in cli_text(ws)
    # the cache still holds the good bytes: checking out restores the release
    sh(ws, DVC, "checkout", "-q", "--force", "releases/digits/1.0.0/data.dvc")
    assert verify(ws, "digits@1.0.0").ok
    assert {c["check"]: c["status"] for c in verify(ws, "digits@1.0.0").checklist()}["images"] == "pass"

    # a manifest not as signed: the image checks did not run, and say why
    manifest = ws / "releases/digits/1.0.0/data/manifest.parquet"
    manifest.unlink()
    checks = {c["check"]: c for c in verify(ws, "digits@1.0.0").checklist()}
    assert checks["manifest"]["status"] == "fail"
    assert (checks["images"]["status"], checks["names"]["status"]) == ("not run", "not run")
    assert checks["images"]["detail"].startswith("the manifest is missing or not as signed")
    sh(ws, DVC, "checkout", "-q", "--force", "releases/digits/1.0.0/data.dvc")


def cli_text(ws: Path) -> str:
    return runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)]).stdout


def test_a_deleted_shard_reports_every_sample_in_it_missing(released_copy: Path, released: Built):
    ws, record = released_copy, released.record
    assert record is not None
    ref = record.shards[0]
    shard = folder(ws, "1.0.0") / "data" / ref.path
    shard.unlink()
    con = mf.connect(folder(ws, "1.0.0") / "data/manifest.parquet")
    sids = [
        r[0] for r in con.execute("SELECT sample_id FROM manifest WHERE shard = ?", [ref.source]).fetchall()
    ]
    assert len(sids) == ref.members == 6
    result = verify(ws, "digits@1.0.0")
    assert result.problems == [f"shard {shard.name} is missing"]
    assert result.bad_samples == {sid: f"missing: shard {shard.name} is missing" for sid in sids}


def test_an_edited_record_is_caught(released_copy: Path):
    path = folder(released_copy, "1.0.0") / "release.json"
    doc = json.loads(path.read_text())
    doc["actor"] = "Mallory"
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    result = verify(released_copy, "digits@1.0.0")
    assert result.problems == [
        "release.json differs from the signed record (edited after signing)",
        "tag digits@v1.0.0 points at a commit whose releases/digits/1.0.0/release.json differs from this one",
    ]
    assert result.bad_samples == {}


def _tamper_payload(env: dict) -> None:
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["actor"] = "Mallory"
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


def _tamper_signature(env: dict) -> None:
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[0] ^= 0x01
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()


@pytest.mark.parametrize("tamper", [_tamper_payload, _tamper_signature], ids=["payload", "signature"])
def test_a_tampered_envelope_does_not_verify(released_copy: Path, tamper):
    path = folder(released_copy, "1.0.0") / "release.dsse.json"
    env = json.loads(path.read_text())
    tamper(env)
    path.write_text(json.dumps(env, indent=2) + "\n")
    result = verify(released_copy, "digits@1.0.0")
    assert not result.ok
    assert result.problems[0].startswith("the release signature does not verify: ")


def test_a_key_in_the_workspace_is_not_what_verify_trusts(released_copy: Path, tmp_path: Path):
    # Another key in keys/ changes nothing: verify reads the pinned trust root, never the repository's keys.
    keygen(released_copy, tmp_path / "other.pem")
    assert len(list((released_copy / "keys").glob("*.pub.json"))) == 2  # the old public key is kept
    assert verify(released_copy, "digits@1.0.0").ok


# --- the audit log through the CLI -------------------------------------------------------------------------


def _edit(ws: Path, events: list) -> list[str]:
    path = ws / audit.EVENTS / f"{events[1].hash}.json"
    path.write_text(path.read_text().replace(f'"actor":"{events[1].actor}"', '"actor":"Mallory"'))
    return [
        f"audit/events/{events[1].hash}.json: {audit.describe(events[1])}'s hash does not match its content"
    ]


def _drop(ws: Path, events: list) -> list[str]:
    (ws / audit.EVENTS / f"{events[1].hash}.json").unlink()
    return [f"{audit.describe(events[2])} follows event {events[1].hash[:12]}, which is missing (removed?)"]


@pytest.mark.parametrize("damage", [_edit, _drop], ids=["edited", "dropped"])
def test_a_damaged_audit_log_fails_log_verify(released_copy: Path, damage):
    ws = released_copy
    ok = runner.invoke(app, ["log", "--verify", "-w", str(ws)])
    assert ok.exit_code == 0 and ok.stdout.startswith("audit log: intact"), ok.output
    events = audit.read(ws)
    assert len(events) >= 4
    expected = damage(ws, events)
    result = runner.invoke(app, ["log", "--verify", "-w", str(ws)])
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    assert all(line.startswith(p) for line, p in zip(out, [f"  {e}" for e in expected], strict=False)), out
    # and the signed checkpoints that cover the damaged event name it (see test_audit_merge.py)
    assert any(f"event {events[1].hash[:12]} " in line and " covers it" in line for line in out)
    [summary] = [line for line in out if line.startswith("audit log: ")]
    assert summary.startswith(f"audit log: {len(out) - 3} problem(s) ({ws / audit.LOG}): ")
    assert out[-2].startswith(("unsigned: ", "signed: "))
    assert out[-1] == f"FAIL: the audit log has {len(out) - 3} problem(s), listed above"


# --- two releases at once -----------------------------------------------------------------------------------


def test_two_releases_started_together_end_consistent(fresh: Path, base: Built):
    ws = fresh
    env = os.environ | {"SYNTHREG_SIGNING_KEY": str(base.key), "SYNTHREG_ACTOR": ACTOR}
    cmd = [sys.executable, "-m", "registry.cli", "release", "digits", "-w", str(ws), "--version"]
    procs = {
        v: subprocess.Popen(
            [*cmd, v], cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for v in ("1.0.0", "1.1.0")
    }
    done = {v: (*p.communicate(timeout=120), p.returncode) for v, p in procs.items()}
    done = {v: (rc, out, err) for v, (out, err, rc) in done.items()}
    ok = sorted(v for v, (rc, _, _) in done.items() if rc == 0)
    print("concurrent releases succeeded:", ok)

    if ok == ["1.0.0", "1.1.0"]:  # 1.0.0 took the lock first: both released, in order
        pass
    else:  # 1.1.0 took it first: 1.0.0 is refused cleanly, and leaves nothing behind
        assert ok == ["1.1.0"], done
        rc, out, err = done["1.0.0"]
        assert (rc, out, err) == (
            1,
            "",
            "error: version 1.0.0 is not greater than the latest, digits@1.1.0\n",
        )
        assert not folder(ws, "1.0.0").exists()
    for v in ok:
        assert done[v][1].startswith(f"released digits@{v}: ")
        assert verify(ws, f"digits@{v}").ok
    assert tags(ws) == [f"digits@v{v}" for v in ok]
    assert list_releases(ws) == {"digits": ok}
    assert strays(ws) == []
    assert sorted(p.name for p in (ws / "releases/digits").iterdir()) == ok
    assert sh(ws, "git", "status", "--porcelain", "--untracked-files=all") == ""
    assert [e.subject for e in audit.read(ws) if e.kind == "release"] == [f"digits@{v}" for v in ok]
    assert audit.verify(ws) == []
    # the two versions name the same content: identical shards
    if len(ok) == 2:
        a, b = (load_release(ws, f"digits@{v}") for v in ok)
        assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]


# --- diff, show, list ----------------------------------------------------------------------------------


def test_diff_after_a_stricter_filter(released_copy: Path, released: Built):
    from generators.filter import filter_manifest
    from registry.records.dataset import FilterParams

    ws = released_copy
    filter_manifest(CANDIDATES, ws, FILTERED, FilterParams(identity_threshold=0.9))
    report = validate_ws(ws)
    assert report.passed
    commit_all(ws, "Stricter identity threshold")
    release("digits", "1.1.0", ws, key=released.key)

    a, b = (str(folder(ws, v) / "data/manifest.parquet") for v in ("1.0.0", "1.1.0"))
    con = duckdb.connect()
    con.execute(f"CREATE VIEW a AS SELECT * FROM read_parquet('{a}')")
    con.execute(f"CREATE VIEW b AS SELECT * FROM read_parquet('{b}')")
    [(added, removed)] = con.execute(
        "SELECT (SELECT count(*) FROM b WHERE sample_id NOT IN (SELECT sample_id FROM a)),"
        "       (SELECT count(*) FROM a WHERE sample_id NOT IN (SELECT sample_id FROM b))"
    ).fetchall()
    accepted = {
        i: {"a": na, "b": nb}
        for i, na, nb in con.execute(
            "SELECT identity, count(*) FILTER (WHERE a.decision = 'accepted'),"
            "       count(*) FILTER (WHERE b.decision = 'accepted')"
            " FROM a JOIN b USING (sample_id, identity) GROUP BY identity ORDER BY identity"
        ).fetchall()
        if na != nb
    }
    assert accepted, "a stricter threshold should have rejected something"
    assert all(c["b"] < c["a"] for c in accepted.values())

    d = diff(ws, "digits@1.0.0", "digits@1.1.0")
    assert (d.a, d.b) == ("digits@1.0.0", "digits@1.1.0")
    assert (d.samples.added, d.samples.removed) == (added, removed) == (0, 0)  # rows are kept
    assert {i: c.model_dump() for i, c in d.accepted_per_identity.items()} == accepted
    assert d.generators.model_dump() == {"added": [], "removed": []}
    assert d.sources.model_dump() == {"added": [], "removed": []}
    assert d.policy["quality.accepted-share"].model_dump() == {"a": "pass", "b": "waived"}

    cli = runner.invoke(app, ["diff", "digits@1.0.0", "digits@1.1.0", "--json", "-w", str(ws)])
    assert cli.exit_code == 0 and json.loads(cli.stdout) == d.model_dump(mode="json")
    cli = runner.invoke(app, ["diff", "digits@1.0.0", "digits@1.1.0", "-w", str(ws)])
    assert cli.exit_code == 0, cli.output
    rows = table_rows(cli.stdout)
    assert ["added", "0", ""] in rows and ["removed", "0", ""] in rows
    assert ["quality.accepted-share", "pass", "waived"] in rows
    changed = [[i, str(c["a"]), str(c["b"])] for i, c in accepted.items()]
    assert changed == [row for row in rows if row[0] in accepted]


def test_show_and_list(released: Built, solo_trust: TrustSetup):
    ws, r = released.ws, released.record
    assert r is not None
    result = runner.invoke(app, ["show", "digits@1.0.0", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert result.stdout.startswith("digits@1.0.0")
    assert ["released", f"{r.created_at:%Y-%m-%d %H:%M} UTC by {ACTOR}"] in rows
    assert ["manifest sha256", r.manifest_sha256] in rows  # whole, not cut
    [g] = r.generators
    assert ["tiny-digits", "CC-BY-4.0", g.weights_digest, "12"] in rows
    roles = {"filtering", "evaluation", "conditioning", "generator-training", "training"}
    assert [row for row in rows if len(row) == 5 and row[1] in roles] == [
        ["sklearn-digits", "filtering", "active", "CC-BY-4.0", "all"],
        ["sklearn-digits-held-out", "evaluation", "active", "CC-BY-4.0", "all"],
        ["volunteer-sevens", "conditioning", "active", "CC-BY-4.0", "7"],
        ["sklearn-digits", "generator-training", "active", "CC-BY-4.0", "all"],
    ]
    assert ["policy", "passed"] in rows and ["bias.observed-collapse", "waived"] in rows
    waiver = [
        "bias.requested-balance",
        "Solo Tester",
        solo_trust.keyid[:16],
        "2099-12-31",
        "12 toy images are too few for this rule",
    ]
    assert waiver in rows
    shown = runner.invoke(app, ["show", "digits@1.0.0", "--json", "-w", str(ws)])
    assert json.loads(shown.stdout) == r.model_dump(mode="json")
    result = runner.invoke(app, ["list", "-w", str(ws)])
    assert (result.exit_code, result.stdout) == (0, "digits: 1.0.0 (solo)\n")


def test_a_corrupt_workspace_shard_is_never_signed(fresh: Path, base: Built):
    """The images are checked on the copies made under the release lock, not only by verify later."""
    shard = sorted((fresh / "data/digits/candidates/shards").glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        first = next(m for m in tar if m.isfile())
    data = bytearray(shard.read_bytes())
    data[first.offset_data + 20] ^= 0xFF
    writable_private_copy(shard)
    shard.write_bytes(bytes(data))
    with pytest.raises(
        ReleaseError, match=r"does not hold the recorded images for 1 sample\(s\), first digits-"
    ):
        release("digits", "1.0.0", fresh, key=base.key)
    assert_nothing_released(fresh)
    assert strays(fresh) == []


# --- reading a release, and the whole chain end to end ------------------------------------------------


def test_the_loader_reads_images_from_the_shards(released: Built):
    from registry.releases.loader import open_release

    reader = open_release(released.ws, "digits@1.0.0")
    assert released.record is not None
    assert len(reader) == released.record.counts.accepted
    record, image = next(iter(reader))
    assert record["decision"] == "accepted" and image.size == (16, 16)
    assert hashlib.sha256(reader.image_bytes(0)).hexdigest() == record["image_sha256"]
    x, label = reader.torch_dataset()[0]
    assert tuple(x.shape) == (1, 16, 16) and reader.identities[label] == record["identity"]
    assert len(open_release(released.ws, "digits@1.0.0", accepted_only=False)) == 12
    assert not list(released.ws.glob("releases/digits/1.0.0/data/*.png"))  # nothing unpacked


def test_the_docs_loader_snippet_runs_as_written(released: Built, monkeypatch: pytest.MonkeyPatch):
    """Issue 23: `open_release(Path("."), ...)` refused its own audit log ("escapes the workspace ."):
    a relative workspace is resolved once, at the boundary. The snippet of docs/guide/releases.md, as
    written, in the workspace."""
    text = (REPO / "docs/guide/releases.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "open_release" in b]
    assert 'open_release(Path("."), ' in snippet
    monkeypatch.chdir(released.ws)
    scope: dict = {}
    exec(compile(snippet, "docs/guide/releases.md", "exec"), scope)  # the snippet, unchanged
    assert released.record is not None and len(scope["reader"]) == released.record.counts.accepted
    images, labels = next(iter(scope["loader"]))
    assert tuple(images.shape[1:]) == (1, 16, 16) and len(labels) == len(images)


def test_generate_filter_validate_release_train_trace_impact(released_copy: Path, monkeypatch):
    """Issue 5's proof: a registered model traced back to its samples' generator weights digest, and
    impact on that generator finds the model and the run."""
    from registry.downstream.train import train
    from registry.lineage.impact import impact
    from registry.lineage.trace import trace_model
    from registry.records.config import TrainParams

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{released_copy / 'mlflow.db'}")
    params = TrainParams(dataset="digits@1.0.0", synthetic_share=0.5, train_size=60, epochs=1, threads=1)
    result = train(released_copy, params)
    record = load_release(released_copy, "digits@1.0.0")
    weights = record.generators[0].weights_digest

    traced = trace_model(released_copy, f"digits-classifier/{result.model_version}").model_dump_json()
    assert "digits@1.0.0" in traced and weights in traced and result.run_id in traced

    hit = impact(released_copy, generator=weights[:12]).model_dump_json()
    assert "digits@1.0.0" in hit and result.run_id in hit and "digits-classifier" in hit


def test_a_truncated_workspace_shard_is_a_clear_refusal(fresh: Path, base: Built):
    shard = sorted((fresh / "data/digits/candidates/shards").glob("*.tar"))[0]
    data = shard.read_bytes()
    writable_private_copy(shard)
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReleaseError, match=r"shard-00000.tar .*; restore the shard \(`dvc checkout`\)"):
        release("digits", "1.0.0", fresh, key=base.key)
    assert_nothing_released(fresh)
    assert strays(fresh) == []


def test_a_file_added_to_data_after_signing_fails_verify_and_is_named(released_copy: Path) -> None:
    """An insider's extra shard (which `load_dataset(folder)` would read with the signed ones, as the
    card's configs glob data/shards/*.tar) is not signed: verify fails and names it as damaged, so a
    pull discards it."""
    ws = released_copy
    extra = folder(ws, "1.0.0") / "data" / "shards" / "evil.tar"
    extra.parent.chmod(0o755)
    extra.write_bytes(b"not signed")
    result = verify(ws, "digits@1.0.0")
    assert "data/shards/evil.tar is not signed: no release file may be added after signing" in result.problems
    assert result.damaged == ["data/shards/evil.tar"]
    files_only = verify(ws, "digits@1.0.0", images=False)  # what pull runs
    assert files_only.damaged == ["data/shards/evil.tar"] and not files_only.ok


def test_an_edited_card_fails_verify(released_copy: Path) -> None:
    """README.md is what Hugging Face `datasets` obeys (its configs: name the files it loads): signed."""
    ws = released_copy
    card = folder(ws, "1.0.0") / "README.md"
    writable_private_copy(card)
    card.write_text(card.read_text().replace("data/shards/*.tar", "data/other/*.tar"))
    assert verify(ws, "digits@1.0.0").problems == [
        "README.md does not match its signed sha256; restore it from git (`git checkout -- README.md`)"
    ]


def test_the_loader_names_an_unreadable_envelope_before_a_missing_trust_root(
    released_copy: Path, tmp_path: Path
):
    """The one admission check (registry.trust.admission) keeps each reader's order of refusals: the
    loader reads the envelope before it loads the trust root, as before issue 18's move."""
    from registry.core.errors import SigningError
    from registry.releases.loader import admit

    (folder(released_copy, "1.0.0") / "release.dsse.json").unlink()
    with pytest.raises(SigningError, match=r"release\.dsse\.json cannot be read"):
        admit(released_copy, "digits@1.0.0", trust=tmp_path / "no-trust-root.yaml")


def test_the_loader_compares_the_signed_record_with_the_record_it_loaded(released_copy: Path):
    """A release.json rewritten to the same record in another JSON form (a time as +00:00, not Z): the
    loader compares the signed record with the model it serves, as it always has, so the record passes
    and the tag's commit, which holds other bytes, refuses it (verify names the edited file itself)."""
    from registry.releases.loader import admit

    path = folder(released_copy, "1.0.0") / "release.json"
    data = json.loads(path.read_text())
    data["created_at"] = data["created_at"].replace("Z", "+00:00")
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    with pytest.raises(ReleaseError, match=r"tag digits@v1\.0\.0 points at a commit whose .* differs"):
        admit(released_copy, "digits@1.0.0")


def test_verify_on_worker_processes_says_exactly_what_one_worker_says(released_copy: Path) -> None:
    """Issue 22: shards are checked on worker processes and merged in shard order, so a release with
    damaged shards gets the same result, problems and order included, from one worker or several."""
    ws = released_copy
    shards = sorted((folder(ws, "1.0.0") / "data" / "shards").glob("*.tar"))
    assert len(shards) >= 2
    for path in shards:
        path.chmod(0o644)
    first = bytearray(shards[0].read_bytes())
    first[700] ^= 0xFF  # inside the first image
    shards[0].write_bytes(bytes(first))
    last = shards[-1].read_bytes()
    shards[-1].write_bytes(last[: len(last) // 2])
    one = verify(ws, "digits@1.0.0", threads=1)
    several = verify(ws, "digits@1.0.0", threads=3)
    assert not one.ok and len(one.problems) >= 2 and one.bad_samples
    assert several.to_json() == one.to_json()
    assert several.damaged == one.damaged
