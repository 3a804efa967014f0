"""Keys where teams keep them, and release tags plain git verifies (issue 20); the release commit's body
(issue 23).

- file and envvar key URIs, through securesystemslib's Signer.from_priv_key_uri;
- a real SoftHSM2 token (Debian ``softhsm2``, installed by .ci/run): keygen in the token, release,
  approve, verify; the keys stay sensitive and unextractable; skipped, saying why, without SoftHSM2;
- ``git tag -v`` in a fresh clone with the allowed_signers file synthreg writes: a release tag verifies,
  a tag signed by a key outside the trust root does not.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import SigningError
from registry.releases.approve import approve
from registry.releases.release import release
from registry.releases.verify import verify
from registry.trust.gitsign import UNSIGNED, allowed_signers, make_tag
from registry.trust.root import load_trust
from registry.trust.signers import SOFTHSM2_MODULE, parse_pkcs11
from registry.trust.signing import keygen, load_signer
from tests.conftest import TrustSetup
from tests.registry.conftest import Built, sh, tags

runner = CliRunner()
PIN = "4321"


def _verifies(signer, data: bytes = b"payload") -> bool:
    from securesystemslib.exceptions import UnverifiedSignatureError

    try:
        signer.public_key.verify_signature(signer.sign(data), data)
        return True
    except UnverifiedSignatureError:
        return False


# --- file and envvar URIs ---------------------------------------------------------------------------


def test_a_key_file_signs_by_path_file_uri_and_envvar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    r = keygen(ws, tmp_path / "k" / "me.pem")
    by_path = load_signer(r.private, ws)
    by_uri = load_signer(f"file:{r.private}", ws)
    monkeypatch.setenv("CI_RELEASE_KEY", Path(r.private).read_text())
    by_env = load_signer("envvar:CI_RELEASE_KEY", ws)
    assert {by_path.public_key.keyid, by_uri.public_key.keyid, by_env.public_key.keyid} == {r.keyid}
    assert type(by_env).__name__ == "EnvVarSigner"  # dispatched by SIGNER_FOR_URI_SCHEME["envvar"]
    assert all(_verifies(s) for s in (by_path, by_uri, by_env))
    monkeypatch.setenv("SYNTHREG_SIGNING_KEY", "envvar:CI_RELEASE_KEY")  # what a CI job sets
    assert load_signer(None, ws).public_key.keyid == r.keyid


def test_bad_key_uris_are_refused_saying_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ws = tmp_path / "ws"
    (ws / "secret").mkdir(parents=True)
    inside = keygen(ws, tmp_path / "k.pem")  # made outside, then copied in by mistake
    shutil.copy(inside.private, ws / "secret" / "k.pem")
    with pytest.raises(SigningError, match=r"is inside the workspace .*; move it outside"):
        load_signer(f"file:{ws / 'secret' / 'k.pem'}", ws)
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(SigningError, match=r"^key envvar:NOPE: environment variable NOPE is not set"):
        load_signer("envvar:NOPE", ws)
    monkeypatch.setenv("NOT_PEM", "hello")
    with pytest.raises(SigningError, match=r"^\$NOT_PEM is not a PEM ed25519 private key"):
        load_signer("envvar:NOT_PEM", ws)
    with pytest.raises(SigningError, match=r"^key URI scheme hsm: is not one synthreg signs with"):
        load_signer("hsm:2?label=x", ws)
    with pytest.raises(SigningError, match=r"^keygen cannot create a key in an environment variable"):
        keygen(ws, "envvar:X")
    with pytest.raises(SigningError, match=r"pin-value puts the PIN in shell history"):
        parse_pkcs11("pkcs11:token=t;object=k?pin-value=1234")
    with pytest.raises(SigningError, match=r"must name the token and the key"):
        parse_pkcs11("pkcs11:object=k")
    with pytest.raises(SigningError, match=r"^PKCS#11 module /nonexistent.so does not exist"):
        parse_pkcs11("pkcs11:token=t;object=k?module-path=/nonexistent.so")


# --- git verifies release tags --------------------------------------------------------------------------


def _allowed(trust: Path, tmp: Path) -> Path:
    out = tmp / "allowed_signers"
    out.write_text(allowed_signers(load_trust(None, trust).root))
    return out


def _tag_v(ws: Path, allowed: Path, tag: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "tag", "-v", tag],
        cwd=ws,
        capture_output=True,
        text=True,
    )


def test_plain_git_verifies_a_release_tag_and_refuses_an_untrusted_one(
    released: Built, solo_trust: TrustSetup, tmp_path: Path
):
    from securesystemslib.signer import CryptoSigner

    out = runner.invoke(
        app, ["keys", "allowed-signers", "--out", str(tmp_path / "as"), "-w", str(released.ws)]
    )
    assert out.exit_code == 0, out.output
    allowed = tmp_path / "as"
    assert allowed.read_text().splitlines()[1].startswith('Solo_Tester namespaces="git" ssh-ed25519 AAAA')
    inside = runner.invoke(
        app, ["keys", "allowed-signers", "--out", str(released.ws / "as"), "-w", str(released.ws)]
    )
    assert inside.exit_code != 0 and "is inside the workspace" in inside.output

    fresh = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(released.ws), str(fresh))
    assert sh(fresh, "git", "cat-file", "-t", "digits@v1.0.0") == "tag"  # annotated
    message = sh(fresh, "git", "tag", "-l", "--format=%(contents:body)", "digits@v1.0.0")
    record = released.record
    assert record is not None
    assert f"What:     digits@1.0.0, manifest sha256 {record.manifest_sha256}" in message
    assert f"Who:      released by Solo Tester (key {solo_trust.keyid[:16]})" in message
    assert "Status:   final" in message
    good = _tag_v(fresh, allowed, "digits@v1.0.0")
    assert good.returncode == 0, good.stderr
    assert 'Good "git" signature for Solo_Tester with ED25519 key' in good.stderr

    # A tag on the same commit, signed by a key the trust root does not hold.
    rogue = CryptoSigner.generate_ed25519()
    commit = sh(fresh, "git", "rev-parse", "digits@v1.0.0^{commit}")
    make_tag(fresh, "digits@v9.9.9", commit, "digits@9.9.9 final\n", rogue)
    bad = _tag_v(fresh, allowed, "digits@v9.9.9")
    assert bad.returncode != 0 and "No principal matched" in bad.stderr, bad.stderr
    # ... and an unsigned one (what recovery makes without a key) proves nothing either.
    make_tag(fresh, "digits@v9.9.8", commit, f"Tag: {UNSIGNED}\n")
    assert _tag_v(fresh, allowed, "digits@v9.9.8").returncode != 0

    # The release commit says what, who and the status in its body (issue 23).
    body = sh(fresh, "git", "log", "-1", "--format=%B", "digits@v1.0.0")
    assert body.splitlines()[0] == "Release digits@1.0.0"
    assert f"What:     digits@1.0.0, manifest sha256 {record.manifest_sha256}" in body
    assert (
        "Status:   final, approved by 2 of 2 (releaser 1/1, approver 1/1) (solo: one key holds both roles)"
        in body
    )
    assert "Signed:   Solo Tester as releaser+approver (key " in body


def test_hostile_names_cannot_add_lines_or_patterns(tmp_path: Path, solo_trust: TrustSetup):
    from registry.records.trust import TrustRoot

    root = load_trust(None, solo_trust.trust).root
    entry = root.keys[0].model_copy(update={"name": "*,evil\nroot ssh-ed25519 AAAA"})
    text = allowed_signers(TrustRoot(solo=True, thresholds=root.thresholds, keys=[entry]))
    line = text.splitlines()[1]
    assert len(text.splitlines()) == 2 and line.startswith('evil_root_ssh-ed25519_AAAA namespaces="git" ')


# --- a PKCS#11 token (SoftHSM2) --------------------------------------------------------------------------

needs_softhsm = pytest.mark.skipif(
    shutil.which("softhsm2-util") is None or not SOFTHSM2_MODULE.is_file(),
    reason="SoftHSM2 is not installed (Debian: apt-get install softhsm2; .ci/run installs it)",
)


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SoftHSM2 token ``team`` in a temporary token folder (its own SOFTHSM2_CONF), PIN in
    $SYNTHREG_PKCS11_PIN; the base of its keys' URIs."""
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (pip install 'synthreg[pkcs11]')")
    from registry.trust import signers

    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    monkeypatch.setenv("SYNTHREG_PKCS11_PIN", PIN)
    # PKCS#11 initialises a module once per process and reads SOFTHSM2_CONF then: start afresh.
    monkeypatch.setattr(signers, "_LIBS", {})
    sh(
        tmp_path,
        "softhsm2-util",
        "--init-token",
        "--free",
        "--label",
        "team",
        "--pin",
        PIN,
        "--so-pin",
        "8765",
    )
    return f"pkcs11:token=team;object={{}}?module-path={SOFTHSM2_MODULE}"


def _token_keys_stay_inside(uri: str) -> None:
    from pkcs11 import Attribute, ObjectClass
    from pkcs11.exceptions import AttributeSensitive

    from registry.trust import signers

    key = signers.parse_pkcs11(uri)
    with signers._session(key) as s:
        priv = signers._one(s, key, ObjectClass.PRIVATE_KEY, "private key")
        assert priv[Attribute.SENSITIVE] and not priv[Attribute.EXTRACTABLE] and priv[Attribute.TOKEN]
        with pytest.raises(AttributeSensitive):
            priv[Attribute.VALUE]


@needs_softhsm
def test_token_keys_release_approve_and_verify(
    fresh: Path, token: str, solo_trust: TrustSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ws = fresh
    trust = tmp_path / "team.yaml"
    rel, app_ = token.format("rel"), token.format("app")
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    for uri, name, role in ((rel, "Rel", "releaser"), (app_, "App", "approver")):
        args = ["keygen", "--key", uri, "--name", name, "--role", role, "--trust", str(trust), "-w", str(ws)]
        out = runner.invoke(app, args)
        assert out.exit_code == 0, out.output
        assert "private key in the token: pkcs11:token=team;object=" in out.output
    again = runner.invoke(app, ["keygen", "--key", rel, "-w", str(ws)])
    assert again.exit_code != 0 and "holds a key labelled 'rel' already" in again.output
    # The session's key signed the fixture's waivers: it stays an approver.
    doc = yaml.safe_load(trust.read_text())
    solo = next(
        k for k in yaml.safe_load(solo_trust.trust.read_text())["keys"] if k["keyid"] == solo_trust.keyid
    )
    doc["keys"].append(solo | {"roles": ["approver"]})
    trust.write_text(yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.setenv("SYNTHREG_TRUST", str(trust))

    sh(ws, "git", "add", "keys")
    sh(ws, "git", "commit", "-q", "-m", "Team keys")
    release("digits", "1.0.0", ws, key=rel)
    assert tags(ws) == []  # a candidate
    state = approve(ws, "digits@1.0.0", app_)
    assert state.met and tags(ws) == ["digits@v1.0.0"]
    result = verify(ws, "digits@1.0.0")
    assert result.ok, result.problems
    assert runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(ws)]).exit_code == 0

    # The key never left the token: sensitive, unextractable, and no private key written anywhere.
    for uri in (rel, app_):
        _token_keys_stay_inside(uri)
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert not [p for p in written if b"PRIVATE KEY" in p.read_bytes() and "tokens" not in p.parts]

    # The tag is signed in the token by the approver who made it final; plain git verifies it.
    allowed = _allowed(trust, tmp_path)
    fresh_clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(ws), str(fresh_clone))
    good = _tag_v(fresh_clone, allowed, "digits@v1.0.0")
    assert good.returncode == 0 and 'Good "git" signature for App' in good.stderr, good.stderr
    message = sh(fresh_clone, "git", "tag", "-l", "--format=%(contents:body)", "digits@v1.0.0")
    assert "Who:      released by Rel (key " in message and "Tag:      signed by App (key " in message
    release_commit = sh(fresh_clone, "git", "log", "-1", "--format=%H", "--grep=^Release digits@1.0.0")
    body = sh(fresh_clone, "git", "log", "-1", "--format=%B", release_commit)
    assert (
        "Status:   candidate, approved by 1 of 2 (releaser 1/1, approver 0/1)" in body
        and "Who:      released by Rel (key " in body
    )


@needs_softhsm
def test_a_wrong_pin_or_unknown_key_is_named(token: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    ws = tmp_path / "ws"
    ws.mkdir()
    with pytest.raises(SigningError, match=r"holds none ed25519 private key matching"):
        load_signer(token.format("nobody"), ws)
    keygen(ws, token.format("k"))
    assert _verifies(load_signer(token.format("k"), ws))
    monkeypatch.setenv("SYNTHREG_PKCS11_PIN", "0000")
    with pytest.raises(SigningError, match=r"the PIN in \$SYNTHREG_PKCS11_PIN is wrong"):
        load_signer(token.format("k"), ws)
    monkeypatch.delenv("SYNTHREG_PKCS11_PIN")
    with pytest.raises(SigningError, match=r"no PIN for PKCS#11 token 'team': set \$SYNTHREG_PKCS11_PIN"):
        load_signer(token.format("k"), ws)
