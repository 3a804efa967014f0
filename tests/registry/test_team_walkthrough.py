"""docs/guide/team.md, "Two people, from nothing to a final release", run through the CLI: Rel (releaser)
and App (approver) on their own machines, each with their own key and trust-root file, a team root made
by `trust init --team` and handed over by `trust export` / `trust init --verifier --from`, a candidate
release, App's approval making it final with a signed tag, a third machine that only verifies
(`verify --require final`), and plain `git tag -v` in a fresh clone with the allowed_signers file that
sits beside the root.

Each "machine" is its own folder: its own workspace copy, its own private key, its own trust root. A
`git push` + `git pull` + `synthreg pull` between them is stood in for by copying the workspace (the
release pushes its data to the fixture's shared DVC remote); the pull into a fresh clone itself is
tested in test_remote.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import CANDIDATE_EXIT
from registry.trust.root import allowed_signers_path
from registry.trust.signing import keygen
from tests.conftest import TrustSetup
from tests.registry.conftest import Built, clone, sh, tags

runner = CliRunner()


def ok(*args: str) -> str:
    out = runner.invoke(app, list(args))
    assert out.exit_code == 0, f"synthreg {' '.join(args)}:\n{out.output}"
    return out.stdout


def test_two_people_from_nothing_to_a_final_release_as_the_guide_says(
    base: Built, solo_trust: TrustSetup, tmp_path: Path
):
    rel_home, app_home, ver_home = (tmp_path / h for h in ("rel", "app", "verifier"))
    rel_trust, app_trust, ver_trust = (h / "cfg" / "trust.yaml" for h in (rel_home, app_home, ver_home))
    rel_ws = clone(base.ws, rel_home / "ws")
    app_ws = clone(base.ws, app_home / "ws")

    # Each makes a key; the public half, with the owner's name, goes to keys/. (`synthreg keygen` asks
    # the name at a terminal; CliRunner has none, so the function it calls is called directly.)
    rel_key = keygen(rel_ws, rel_home / "release.key", name="Rel", add_to_trust=False)
    app_key = keygen(app_ws, app_home / "release.key", name="App", add_to_trust=False)
    assert json.loads(app_key.public.read_text())["name"] == "App"
    # App commits and pushes keys/<keyid>.pub.json; Rel pulls it.
    shutil.copy(app_key.public, rel_ws / "keys" / app_key.public.name)
    sh(rel_ws, "git", "add", "keys")
    sh(rel_ws, "git", "commit", "-q", "-m", "Rel's and App's public keys")

    # Rel makes the team root, version 1, signed by Rel's key. (The fixture's waivers were signed by
    # the session's key: it is an approver too, as a team's own approvers sign its waivers.)
    out = ok(
        "trust", "init", "--team", "--key", str(rel_key.private), "--trust", str(rel_trust),
        "--releaser", str(rel_ws / "keys" / rel_key.public.name),
        "--approver", str(rel_ws / "keys" / app_key.public.name),
        "--approver", str(solo_trust.public), "--threshold", "root=1", "-w", str(rel_ws),
    )  # fmt: skip
    assert out == f"trust root {rel_trust}: version 1, 3 key(s)\n"
    assert allowed_signers_path(rel_trust).is_file()
    shown = ok("trust", "show", "--trust", str(rel_trust), "-w", str(rel_ws))
    assert "Rel" in shown and "App" in shown

    # Rel exports the root; App (and any verifier) installs it, holding no private key of others.
    bundle = tmp_path / "channel" / "team-root.json"
    ok("trust", "export", str(bundle), "--trust", str(rel_trust), "-w", str(rel_ws))
    ok("trust", "init", "--verifier", "--from", str(bundle), "--trust", str(app_trust))
    assert json.loads(ok("trust", "show", "--json", "--trust", str(app_trust)))["root"]["version"] == 1

    # Rel releases: a candidate (no tag), pushed.
    ok("release", "digits", "--version", "1.0.0", "--key", str(rel_key.private),
       "--trust", str(rel_trust), "-w", str(rel_ws))  # fmt: skip
    assert tags(rel_ws) == []
    gate = runner.invoke(app, ["verify", "digits@1.0.0", "--trust", str(rel_trust), "-w", str(rel_ws)])
    assert gate.exit_code == CANDIDATE_EXIT, gate.output

    # App pulls, checks, approves: final, with an annotated tag SSH-signed by App's key.
    shutil.rmtree(app_ws)
    app_ws = clone(rel_ws, app_ws)
    signed = runner.invoke(
        app, ["verify", "digits@1.0.0", "--require", "signed", "--trust", str(app_trust), "-w", str(app_ws)]
    )
    assert signed.exit_code == 0, signed.output
    ok("approve", "digits@1.0.0", "--key", str(app_key.private), "--trust", str(app_trust), "-w", str(app_ws))
    assert tags(app_ws) == ["digits@v1.0.0"]
    ok("verify", "digits@1.0.0", "--require", "final", "--trust", str(app_trust), "-w", str(app_ws))

    # A third machine only verifies: the root from the bundle, no private key, the pushed workspace.
    ok("trust", "init", "--verifier", "--from", str(bundle), "--trust", str(ver_trust))
    assert not [p for p in ver_home.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    ver_ws = clone(app_ws, ver_home / "ws")
    out = ok("verify", "digits@1.0.0", "--require", "final", "--trust", str(ver_trust), "-w", str(ver_ws))
    assert "    pass      approvals: final under root v1" in out.splitlines(), out

    # Plain git, in a fresh clone, with the allowed_signers file beside the verifier's root.
    fresh = ver_home / "clone"
    sh(tmp_path, "git", "clone", "-q", str(app_ws), str(fresh))
    allowed = allowed_signers_path(ver_trust)
    tag_v = subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "tag", "-v", "digits@v1.0.0"],
        cwd=fresh,
        capture_output=True,
        text=True,
    )
    assert tag_v.returncode == 0, tag_v.stderr
    assert 'Good "git" signature for App' in tag_v.stderr, tag_v.stderr
