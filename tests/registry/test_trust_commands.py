"""`synthreg trust` (issue 20): a versioned trust root made and changed by commands, each version signed by
the one before (TUF's root rotation), thresholds that are not retroactive, a machine that only verifies,
and bad input refused with the old root kept byte for byte."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import CANDIDATE_EXIT, OLDER_ROOT_EXIT, UNTRUSTED_EXIT, TrustError
from registry.records.trust import ROOT_TYPE, TrustRoot
from registry.releases.approve import approve
from registry.releases.catalog import list_status
from registry.releases.release import release
from registry.trust import rotation
from registry.trust.root import history_dir, load_trust, root_payload, save_root
from registry.trust.signing import keygen, load_signer, sign
from tests.conftest import TrustSetup
from tests.registry.conftest import tags

runner = CliRunner()


@dataclass(frozen=True)
class People:
    top: Path
    trust: Path  # the team's versioned root (outside the workspace)
    keys: dict[str, Path]  # name -> private key
    pubs: dict[str, Path]  # name -> keys/<keyid>.pub.json


def make_people(top: Path, names: tuple[str, ...] = ("Alice", "Bob", "Carol", "Dan")) -> People:
    """Keys made as a new user makes them: `keygen --name` writes the name into the public key file."""
    keys, pubs = {}, {}
    for name in names:
        r = keygen(top / "pub", top / f"{name}.pem", name=name, add_to_trust=False)
        keys[name], pubs[name] = r.private, r.public
    return People(top, top / "cfg" / "trust.yaml", keys, pubs)


def team_root(p: People, root_threshold: int = 1, also: TrustSetup | None = None) -> None:
    """Alice releases, Bob and Carol approve; version 1 signed by Alice. ``also``: the session's key as a
    further approver (it signed the fixture workspace's waivers, which the release gate checks)."""
    extra = ["--approver", str(also.public)] if also else []
    out = runner.invoke(
        app,
        [
            "trust", "init", "--team", "--key", str(p.keys["Alice"]), "--trust", str(p.trust),
            "--releaser", str(p.pubs["Alice"]), "--approver", str(p.pubs["Bob"]),
            "--approver", str(p.pubs["Carol"]), "--threshold", f"root={root_threshold}",
            "-w", str(p.top / "pub"), *extra,
        ],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert out.stdout == f"trust root {p.trust}: version 1, {3 + bool(also)} key(s)\n"


def snapshot(trust: Path) -> dict[str, bytes]:
    """Every byte of the root and its signed history."""
    files = [trust, *sorted(history_dir(trust).glob("*"))]
    return {f.name: f.read_bytes() for f in files if f.is_file()}


@pytest.fixture
def people(tmp_path: Path) -> People:
    return make_people(tmp_path / "people")


# --- the commands ------------------------------------------------------------------------------------------


def test_keygen_writes_the_owner_name_and_old_files_without_one_still_read(people: People, tmp_path: Path):
    doc = json.loads(people.pubs["Bob"].read_text())
    assert doc["name"] == "Bob" and doc["keyid"] == people.pubs["Bob"].name.removesuffix(".pub.json")
    old = tmp_path / "old.pub.json"
    old.write_text(json.dumps({k: v for k, v in doc.items() if k != "name"}))
    assert rotation.read_public_key(old, "Robert")[1] == "Robert"
    with pytest.raises(TrustError, match=r"names no owner \(made before names were kept\); pass --name"):
        rotation.read_public_key(old)


def test_solo_init_trusts_the_local_key_in_both_roles(people: People):
    out = runner.invoke(
        app,
        [
            "trust",
            "init",
            "--key",
            str(people.keys["Alice"]),
            "--trust",
            str(people.trust),
            "-w",
            str(people.top / "pub"),
        ],
    )  # fmt: skip  (-w: the workspace holding keys/, where the name is read)
    assert out.exit_code == 0, out.output
    t = load_trust(None, people.trust)
    assert (t.version, t.solo, t.thresholds) == (1, True, {"releaser": 1, "approver": 1})
    assert [(k.name, k.roles) for k in t.root.keys] == [("Alice", ["releaser", "approver"])]
    assert (history_dir(people.trust) / "1.root.json").is_file()
    again = runner.invoke(
        app,
        ["trust", "init", "--name", "A", "--key", str(people.keys["Alice"]), "--trust", str(people.trust)],
    )
    assert again.exit_code == 1 and "a trust root exists at" in again.stderr


def test_add_remove_revoke_set_threshold_and_show_each_make_a_signed_version(people: People):
    p = people
    team_root(p)
    base = ["--key", str(p.keys["Alice"]), "--trust", str(p.trust), "-w", str(p.top / "pub")]
    steps = [
        ["add", "--from", str(p.pubs["Dan"]), "--role", "approver"],
        ["set-threshold", "approver", "2"],
        ["revoke", "Carol", "--reason", "laptop stolen"],
        ["remove", "Carol"],
    ]
    for i, args in enumerate(steps, start=2):
        out = runner.invoke(app, ["trust", *args, *base])
        assert out.exit_code == 0, out.output
        assert out.stdout.startswith(f"trust root {p.trust}: version {i}, ")
    t = load_trust(None, p.trust)
    assert t.version == 5 and sorted(t.history) == [1, 2, 3, 4, 5]
    assert [k.name for k in t.root.keys] == ["Alice", "Bob", "Dan"] and t.thresholds["approver"] == 2
    assert t.history[4].key(t.history[3].keys[2].keyid).revoked.reason == "laptop stolen"  # type: ignore[union-attr]
    # Every root change rewrites git's allowed_signers beside the root (plain `git tag -v` trusts it).
    principals = [
        line.split()[0] for line in (p.trust.parent / "allowed_signers").read_text().splitlines()[1:]
    ]
    assert principals == ["Alice", "Bob", "Dan"]
    show = runner.invoke(app, ["trust", "show", "--trust", str(p.trust)])
    assert show.exit_code == 0, show.output
    lines = show.stdout.splitlines()
    assert lines[0] == f"trust root {p.trust} (version 5, 5 signed version(s))"
    assert lines[1] == "  thresholds: releaser 1, approver 2, root 1"
    assert lines[2].endswith(" Alice: releaser, valid") and lines[4].endswith(" Dan: approver, valid")
    as_json = json.loads(runner.invoke(app, ["trust", "show", "--json", "--trust", str(p.trust)]).stdout)
    assert as_json["root"]["version"] == 5 and as_json["versioned"] is True


def test_a_change_needs_the_root_threshold_of_the_previous_versions_keys(people: People):
    p = people
    team_root(p, root_threshold=2)
    before = snapshot(p.trust)
    alone = runner.invoke(
        app,
        ["trust", "set-threshold", "approver", "2", "--key", str(p.keys["Alice"]), "--trust", str(p.trust)],
    )
    assert alone.exit_code == 1
    assert (
        "root version 2 needs 2 signature(s) by unrevoked keys of version 1 (signed by: Alice)"
        in alone.stderr
    )
    stranger = runner.invoke(
        app, ["trust", "set-threshold", "approver", "2", "--key", str(p.keys["Alice"]),
              "--key", str(p.keys["Dan"]), "--trust", str(p.trust)],
    )  # fmt: skip
    assert stranger.exit_code == 1 and "(signed by: Alice)" in stranger.stderr
    assert snapshot(p.trust) == before
    both = runner.invoke(
        app, ["trust", "set-threshold", "approver", "2", "--key", str(p.keys["Alice"]),
              "--key", str(p.keys["Bob"]), "--trust", str(p.trust)],
    )  # fmt: skip
    assert both.exit_code == 0, both.output
    assert load_trust(None, p.trust).version == 2


def test_signers_on_different_machines_sign_a_proposed_version_in_turn(people: People, tmp_path: Path):
    """With thresholds.root 2 and each key on its own laptop: Alice proposes, Bob signs, then it holds."""
    p = people
    team_root(p, root_threshold=2)
    before = snapshot(p.trust)
    proposal = tmp_path / "proposal.json"
    out = runner.invoke(
        app, ["trust", "set-threshold", "approver", "2", "--key", str(p.keys["Alice"]),
              "--propose", str(proposal), "--trust", str(p.trust)],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert out.stdout.startswith(f"proposed root version 2 in {proposal}: more signatures are needed")
    assert snapshot(p.trust) == before and proposal.is_file()
    stranger = runner.invoke(
        app, ["trust", "sign", str(proposal), "--key", str(p.keys["Dan"]), "--trust", str(p.trust)]
    )
    assert stranger.exit_code == 1 and "is not a key of root version 1" in stranger.stderr
    signed = runner.invoke(
        app, ["trust", "sign", str(proposal), "--key", str(p.keys["Bob"]), "--trust", str(p.trust)]
    )
    assert signed.exit_code == 0, signed.output
    assert signed.stdout == f"trust root {p.trust}: version 2, signed by Alice, Bob\n"
    assert load_trust(None, p.trust).thresholds["approver"] == 2
    stale = runner.invoke(
        app, ["trust", "sign", str(proposal), "--key", str(p.keys["Carol"]), "--trust", str(p.trust)]
    )
    assert stale.exit_code == 1 and "it is stale" in stale.stderr


# --- bad input: refused, the old root byte for byte as it was -----------------------------------------


def _forged_next(p: People, signer: str, version: int = 2) -> dict:
    current = load_trust(None, p.trust).root
    from datetime import UTC, datetime

    new = current.model_copy(update={"version": version, "issued": datetime.now(UTC)})
    new = TrustRoot.model_validate(
        new.model_dump() | {"thresholds": {"releaser": 1, "approver": 1, "root": 1}}
    )
    return sign(root_payload(new), load_signer(p.keys[signer]), ROOT_TYPE)


@pytest.mark.parametrize(
    "case",
    [
        "unsigned-by-previous",
        "rollback",
        "wrong-keyid",
        "same-name",
        "last-releaser",
        "threshold",
        "hand-edit",
    ],
)
def test_bad_input_is_refused_and_the_old_root_is_kept_byte_for_byte(people: People, case: str):
    p = people
    team_root(p)
    alice = [load_signer(p.keys["Alice"])]
    rotation.set_threshold(p.trust, alice, "releaser", 1)  # version 2, so a rollback has somewhere to go
    before = snapshot(p.trust)
    if case == "unsigned-by-previous":  # signed by Dan, who is not in version 2
        with pytest.raises(
            TrustError, match=r"root version 3 is not signed by the previous root: it needs 1"
        ):
            save_root(p.trust, _forged_next(p, "Dan", 3))
    elif case == "rollback":  # version 2 again, properly signed
        with pytest.raises(TrustError, match=r"root version 2 is a rollback: version 2 is trusted already"):
            save_root(p.trust, _forged_next(p, "Alice", 2))
    elif case == "wrong-keyid":
        doc = json.loads(p.pubs["Dan"].read_text())
        bad = p.top / "bad.pub.json"
        bad.write_text(json.dumps(doc | {"keyid": json.loads(p.pubs["Bob"].read_text())["keyid"]}))
        out = runner.invoke(
            app, ["trust", "add", "--from", str(bad), "--role", "approver", "--key", str(p.keys["Alice"]),
                  "--trust", str(p.trust)],
        )  # fmt: skip
        assert out.exit_code == 1 and "but its key's keyid is" in out.stderr, out.output
    elif case == "same-name":
        out = runner.invoke(
            app, ["trust", "add", "--from", str(p.pubs["Dan"]), "--name", "Bob", "--role", "approver",
                  "--key", str(p.keys["Alice"]), "--trust", str(p.trust)],
        )  # fmt: skip
        assert out.exit_code == 1 and "two keys are named 'Bob'" in out.stderr, out.output
    elif case == "last-releaser":
        out = runner.invoke(
            app, ["trust", "remove", "Alice", "--key", str(p.keys["Alice"]), "--trust", str(p.trust)]
        )
        assert out.exit_code == 1 and "Alice holds the last releaser key" in out.stderr, out.output
    elif case == "threshold":
        out = runner.invoke(
            app,
            [
                "trust",
                "set-threshold",
                "approver",
                "3",
                "--key",
                str(p.keys["Alice"]),
                "--trust",
                str(p.trust),
            ],
        )
        assert out.exit_code == 1, out.output
        assert "threshold approver=3 in " in out.stderr and "cannot be met: only 2 valid" in out.stderr
    elif case == "hand-edit":  # trust.yaml edited by hand: refused on load, never silently used
        doc = yaml.safe_load(p.trust.read_text())
        doc["thresholds"]["approver"] = 1
        doc["solo"] = True
        p.trust.write_text(yaml.safe_dump(doc))
        with pytest.raises(TrustError, match=r"differs from its signed version .* it was edited by hand"):
            load_trust(None, p.trust)
        return
    assert snapshot(p.trust) == before
    assert load_trust(None, p.trust).version == 2


def test_a_save_killed_between_history_and_trust_yaml_leaves_a_usable_root(
    people: People, monkeypatch: pytest.MonkeyPatch
):
    """save_root adds the signed version first, then replaces trust.yaml: killed in between, the new
    version (signed, in the history) is the root, and the next change goes on from it."""
    import registry.core.fsio as fsio

    p = people
    team_root(p)
    alice = [load_signer(p.keys["Alice"])]
    real = fsio.atomic_write_text
    calls = []

    def dies_on_trust_yaml(path: Path, text: str) -> None:
        calls.append(path.name)
        if path == p.trust:
            raise KeyboardInterrupt  # the kill, after the history file was written
        real(path, text)

    monkeypatch.setattr(fsio, "atomic_write_text", dies_on_trust_yaml)
    with pytest.raises(KeyboardInterrupt):
        rotation.set_threshold(p.trust, alice, "approver", 2)
    monkeypatch.setattr(fsio, "atomic_write_text", real)
    assert calls == ["2.root.json", "trust.yaml"]
    assert yaml.safe_load(p.trust.read_text())["version"] == 1  # trust.yaml as it was
    t = load_trust(None, p.trust)
    assert (t.version, t.thresholds["approver"]) == (2, 2)  # the signed version 2 holds
    rotation.set_threshold(p.trust, alice, "approver", 1)
    assert yaml.safe_load(p.trust.read_text())["version"] == 3 and load_trust(None, p.trust).version == 3


def test_trust_commands_run_from_a_folder_that_is_not_a_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The workspace defaults to the current folder; run from a home folder, the root under
    ~/.config is not 'inside the workspace'. Inside a repository it still is, and is refused."""
    home = tmp_path / "home"
    home.mkdir()
    r = keygen(tmp_path / "pub", tmp_path / "k.pem", name="Ann", add_to_trust=False)
    out = runner.invoke(app, ["trust", "init", "--name", "Ann", "--key", str(r.private),
                              "--trust", str(home / ".config" / "trust.yaml"), "-w", str(home)])  # fmt: skip
    assert out.exit_code == 0, out.output
    (home / ".git").mkdir()
    out = runner.invoke(
        app, ["trust", "show", "--trust", str(home / ".config" / "trust.yaml"), "-w", str(home)]
    )
    assert out.exit_code == 1 and "is inside the workspace" in out.stderr


def test_a_verifier_accepts_a_rotated_root_only_when_the_old_root_signed_it(people: People, tmp_path: Path):
    p = people
    team_root(p)
    v = tmp_path / "verifier" / "trust.yaml"
    bundle1 = tmp_path / "v1.json"
    assert runner.invoke(app, ["trust", "export", str(bundle1), "--trust", str(p.trust)]).exit_code == 0
    assert (
        runner.invoke(
            app, ["trust", "init", "--verifier", "--from", str(bundle1), "--trust", str(v)]
        ).exit_code
        == 0
    )

    # a forged version 2 (signed by Dan, a stranger to version 1) appended to the bundle: refused
    forged = json.loads(bundle1.read_text())
    forged["versions"].append(_forged_next(p, "Dan"))
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    before = snapshot(v)
    out = runner.invoke(app, ["trust", "update", "--from", str(tmp_path / "forged.json"), "--trust", str(v)])
    assert out.exit_code == 1 and "is not signed by the previous root" in out.stderr, out.output
    assert snapshot(v) == before

    # the team rotates properly (version 2, signed by Alice of version 1): accepted
    rotation.add(p.trust, [load_signer(p.keys["Alice"])], rotation.Member(p.pubs["Dan"], ["approver"]))
    bundle2 = tmp_path / "v2.json"
    runner.invoke(app, ["trust", "export", str(bundle2), "--trust", str(p.trust)])
    out = runner.invoke(app, ["trust", "update", "--from", str(bundle2), "--trust", str(v)])
    assert out.exit_code == 0 and out.stdout == f"trust root {v}: version 2 (1 new version(s) accepted)\n"
    assert load_trust(None, v).root == load_trust(None, p.trust).root

    # an old bundle is a rollback: refused, nothing changes
    before = snapshot(v)
    out = runner.invoke(app, ["trust", "update", "--from", str(bundle1), "--trust", str(v)])
    assert out.exit_code == 1 and "older than the version 2 trusted here (a rollback)" in out.stderr
    assert snapshot(v) == before


# --- thresholds that are not retroactive --------------------------------------------------------


def test_raising_a_threshold_leaves_past_final_releases_final_and_applies_to_new_ones(
    fresh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, solo_trust: TrustSetup
):
    p = make_people(tmp_path / "people")
    team_root(p, root_threshold=2, also=solo_trust)
    monkeypatch.setenv("SYNTHREG_TRUST", str(p.trust))
    ws = fresh
    release("digits", "1.0.0", ws, key=p.keys["Alice"])
    state = approve(ws, "digits@1.0.0", p.keys["Bob"])
    assert state.met and state.root_version == 1 and tags(ws) == ["digits@v1.0.0"]
    assert list_status(ws)["digits"] == [("1.0.0", "final, root v1")]

    raised = runner.invoke(
        app, ["trust", "set-threshold", "approver", "2", "--key", str(p.keys["Alice"]),
              "--key", str(p.keys["Bob"]), "-w", str(ws)],
    )  # fmt: skip
    assert raised.exit_code == 0, raised.output

    # the past final release stays final, names the root version it met, and passes the CI gate
    assert list_status(ws)["digits"] == [("1.0.0", "final, root v1")]
    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[0] == (
        "digits@1.0.0: approved by 2 of 2 (releaser 1/1, approver 1/1), final under root v1"
    )
    assert (
        "    pass      approvals: final under root v1; the current root v2 asks for releaser 1, approver 2"
        in out.stdout.splitlines()
    )
    checks = json.loads(runner.invoke(app, ["verify", "digits@1.0.0", "--json", "-w", str(ws)]).stdout)
    assert checks["approval"]["root_version"] == 1 and checks["approval"]["final_under_older_root"] is True
    current = runner.invoke(app, ["verify", "digits@1.0.0", "--require", "current", "-w", str(ws)])
    assert current.exit_code == OLDER_ROOT_EXIT, current.output
    show = runner.invoke(app, ["show", "digits@1.0.0", "-w", str(ws)])
    assert show.exit_code == 0 and "final, root v1" in show.stdout

    # a new release needs two approvers now
    release("digits", "1.1.0", ws, key=p.keys["Alice"])
    assert not approve(ws, "digits@1.1.0", p.keys["Bob"]).met
    gate = runner.invoke(app, ["verify", "digits@1.1.0", "-w", str(ws)])
    assert gate.exit_code == CANDIDATE_EXIT, gate.output
    final = approve(ws, "digits@1.1.0", p.keys["Carol"])
    assert final.met and final.root_version == 2 and not final.older_root
    assert list_status(ws)["digits"] == [("1.0.0", "final, root v1"), ("1.1.0", "final, root v2")]
    ok = runner.invoke(app, ["verify", "digits@1.1.0", "--require", "current", "-w", str(ws)])
    assert ok.exit_code == 0, ok.output

    # revocation is never undone by judging under an older root: Bob's key revoked, 1.0.0 is untrusted
    rotation.revoke(
        p.trust, [load_signer(p.keys["Alice"]), load_signer(p.keys["Carol"])], "Bob", "compromised"
    )
    out = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)])
    assert out.exit_code == UNTRUSTED_EXIT, out.output
    assert "was revoked on" in out.stdout and "compromised" in out.stdout
    # and `list` never fails because of the root's contents: statuses are shown
    listed = runner.invoke(app, ["list", "-w", str(ws)])
    assert listed.exit_code == 0 and listed.stdout.startswith("digits: 1.0.0 (UNTRUSTED: key "), listed.output


def test_list_show_and_log_never_fail_because_of_the_trust_root(released_copy: Path, tmp_path: Path):
    ws = released_copy
    absent = tmp_path / "absent.yaml"
    listed = runner.invoke(app, ["list", "--trust", str(absent), "-w", str(ws)])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith("digits: 1.0.0 (UNCHECKED: no trust root at ")
    show = runner.invoke(app, ["show", "digits@1.0.0", "--trust", str(absent), "-w", str(ws)])
    assert show.exit_code == 0 and "UNCHECKED: no trust root at" in show.stdout, show.output
    assert runner.invoke(app, ["log", "-w", str(ws)]).exit_code == 0
    # a root whose thresholds no keys can meet: list still works and shows each release's status. This root
    # is unversioned (hand-kept), so its raised threshold is judged as before issue 20, retroactively;
    # a versioned root keeps the release final (test_raising_a_threshold_leaves_past_final_releases_final)
    doc = yaml.safe_load(Path(__import__("os").environ["SYNTHREG_TRUST"]).read_text())
    doc["thresholds"]["approver"] = 2
    high = tmp_path / "high.yaml"
    high.write_text(yaml.safe_dump(doc))
    listed = runner.invoke(app, ["list", "--trust", str(high), "-w", str(ws)])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.startswith(
        "digits: 1.0.0 (INVALID: tag digits@v1.0.0 exists but digits@1.0.0 is not "
    )


# --- a machine that only verifies ---------------------------------------------------------------------------


def test_a_verifier_only_machine_verifies_with_the_teams_root_and_holds_no_private_key(
    fresh: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, solo_trust: TrustSetup
):
    p = make_people(tmp_path / "people")
    team_root(p, also=solo_trust)
    monkeypatch.setenv("SYNTHREG_TRUST", str(p.trust))
    release("digits", "1.0.0", fresh, key=p.keys["Alice"])
    approve(fresh, "digits@1.0.0", p.keys["Bob"])
    bundle = tmp_path / "team-root.json"
    assert runner.invoke(app, ["trust", "export", str(bundle), "-w", str(fresh)]).exit_code == 0

    home = tmp_path / "verifier-home"  # the second machine: its own config, no signing key at all
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SYNTHREG_TRUST")
    monkeypatch.setenv("SYNTHREG_SIGNING_KEY", str(home / "no-such.key"))

    no_root = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(fresh)])
    assert no_root.exit_code == 1, no_root.output
    assert "synthreg trust init --verifier --from FILE" in no_root.stderr
    assert "get its trust root from whoever keeps it" in no_root.stderr

    out = runner.invoke(app, ["trust", "init", "--verifier", "--from", str(bundle), "-w", str(fresh)])
    assert out.exit_code == 0, out.output
    assert "no private key was read or made" in out.stdout
    ok = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(fresh)])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.splitlines()[-1] == "digits@1.0.0: OK (12 samples in 2 shards)"
    held = [f for f in home.rglob("*") if f.is_file()]
    assert held and not any(b"PRIVATE KEY" in f.read_bytes() for f in held)
    assert not (home / "no-such.key").exists()
