"""C2PA content credentials (issue 12): a recipe with ``marking: {c2pa: true}`` signs every PNG with the
organisation's key and chain; `verify` and `trace image` check that each image carries a manifest that
validates, chains to the configured anchor and names its record; bad input is refused before anything is
written; `reproduce` compares everything outside the (randomly salted) manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("c2pa", reason="c2pa-python is not installed (pip install 'synthreg[c2pa]')")

from generators.generate import encode_png
from registry.cli import app
from registry.content_credentials import (
    C2PA_CHUNK,
    credential_problems,
    has_c2pa,
    keygen_c2pa,
    load_anchors,
    load_credentials,
    sign_png,
    strip_c2pa,
)
from registry.errors import CredentialsError
from registry.marking import Marking, read_marking
from registry.release import load_release, release
from registry.shards import members_from_bytes, tar_bytes
from tests.conftest import TrustSetup, write_yaml
from tests.registry.conftest import Built, build_base, clone, folder, table_rows

runner = CliRunner()
MARK = Marking("digits-000001", "tiny-digits", "ab" * 32)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory):
    top = tmp_path_factory.mktemp("c2pa")
    (top / "ws").mkdir()
    return keygen_c2pa(top / "ws", top / "keys")


@pytest.fixture(scope="module")
def other_chain(tmp_path_factory: pytest.TempPathFactory):
    top = tmp_path_factory.mktemp("c2pa-other")
    (top / "ws").mkdir()
    return keygen_c2pa(top / "ws", top / "keys")


def signed_png(chain) -> tuple[bytes, bytes]:
    plain = encode_png((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8), MARK)
    return plain, sign_png(plain, MARK, load_credentials(chain.key, chain.chain))


def chunk_body_at(png: bytes, kind: bytes) -> int:
    return png.index(kind) + 4


# --- the library -----------------------------------------------------------------------------------


def test_a_signed_image_round_trips(chain) -> None:
    plain, signed = signed_png(chain)
    assert has_c2pa(signed) and not has_c2pa(plain)
    assert read_marking(signed) == MARK  # the XMP marking is still there, beside the manifest
    assert credential_problems(signed, MARK, load_anchors(chain.root)) == []
    assert strip_c2pa(signed) == plain  # c2pa-rs adds one chunk and changes nothing else


def test_stripped_edited_and_foreign_credentials_are_reported(chain, other_chain) -> None:
    _plain, signed = signed_png(chain)
    anchors = load_anchors(chain.root)
    assert credential_problems(strip_c2pa(signed), MARK, anchors) == [
        "carries no C2PA manifest (stripped, or never signed)"
    ]
    pixels = bytearray(signed)
    pixels[chunk_body_at(signed, b"IDAT") + 3] ^= 1  # one bit of the image data
    (problem,) = credential_problems(bytes(pixels), MARK, anchors)
    assert problem.startswith("its C2PA manifest does not validate (assertion.dataHash.mismatch")
    claim = bytearray(signed)
    at = signed.index(b"digits-000001", signed.index(C2PA_CHUNK))  # inside the signed assertion
    claim[at : at + 13] = b"digits-000002"
    (problem, *_rest) = credential_problems(bytes(claim), MARK, anchors)
    assert problem.startswith("its C2PA manifest does not validate (assertion.hashedURI.mismatch")
    assert credential_problems(signed, MARK, load_anchors(other_chain.root)) == [
        "its C2PA signer (synthreg test C2PA signer, synthreg test chain (not for production)) does not "
        "chain to the configured trust anchor (--c2pa-trust / $SYNTHREG_C2PA_TRUST)"
    ]
    assert credential_problems(signed, Marking("digits-000009", "tiny-digits", "ab" * 32), anchors) == [
        "its C2PA dev.synthreg.sample names sample_id 'digits-000001' but the record says 'digits-000009'"
    ]


def test_bad_credentials_are_refused_with_what_to_do(chain, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SYNTHREG_C2PA_KEY", raising=False)
    monkeypatch.delenv("SYNTHREG_C2PA_CHAIN", raising=False)
    with pytest.raises(CredentialsError, match=r"^no C2PA signing key and certificate chain given: pass"):
        load_credentials()
    with pytest.raises(CredentialsError, match=r"C2PA certificate chain .*/nope.pem does not exist; pass"):
        load_credentials(chain.key, tmp_path / "nope.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    with pytest.raises(CredentialsError, match=r"garbage.pem is not PEM certificates"):
        load_credentials(chain.key, garbage)
    with pytest.raises(CredentialsError, match=r"root.pem \(.*\); give the key and chain of one signer"):
        load_credentials(chain.key, chain.root)  # a key that the first certificate does not hold


def test_keygen_c2pa_makes_a_test_chain_outside_the_workspace(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    res = runner.invoke(app, ["keygen", "--c2pa", str(ws / "c2pa"), "-w", str(ws)])
    assert res.exit_code == 1
    assert res.stderr.startswith(f"error: C2PA key folder {ws / 'c2pa'} is inside the workspace")
    assert not (ws / "c2pa").exists()
    res = runner.invoke(app, ["keygen", "--c2pa", str(tmp_path / "keys"), "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("warning: this is a TEST chain made by synthreg, not for production")
    assert (tmp_path / "keys" / "signer.key").stat().st_mode & 0o777 == 0o600
    creds = load_credentials(tmp_path / "keys" / "signer.key", tmp_path / "keys" / "chain.pem")
    assert creds.alg == "es256"
    res = runner.invoke(app, ["keygen", "--c2pa", str(tmp_path / "keys"), "-w", str(ws)])
    assert res.exit_code == 1 and "exists already; pass --force" in res.stderr


# --- generate refuses before writing ----------------------------------------------------------------


@pytest.mark.parametrize("what", ["no key", "missing chain", "garbage chain"])
def test_generate_refuses_bad_c2pa_input_and_writes_nothing(
    what: str, workspace: Path, chain, monkeypatch
) -> None:
    monkeypatch.delenv("SYNTHREG_C2PA_KEY", raising=False)
    monkeypatch.delenv("SYNTHREG_C2PA_CHAIN", raising=False)
    import yaml

    recipe = yaml.safe_load((workspace / "recipe.yaml").read_text())
    write_yaml(workspace / "recipe.yaml", {**recipe, "marking": {"c2pa": True}})
    garbage = workspace.parent / "garbage.pem"
    garbage.write_text("this is not a certificate\n")
    args = {
        "no key": [],
        "missing chain": ["--c2pa-key", str(chain.key), "--c2pa-chain", str(workspace.parent / "no.pem")],
        "garbage chain": ["--c2pa-key", str(chain.key), "--c2pa-chain", str(garbage)],
    }[what]
    before = sorted(p.name for p in workspace.iterdir())
    res = runner.invoke(app, ["generate", "recipe.yaml", "--out", "out", "-w", str(workspace), *args])
    assert res.exit_code == 1, res.output
    expected = {
        "no key": "error: recipe recipe.yaml asks for C2PA content credentials (marking: {c2pa: true}) but "
        "no C2PA signing key and certificate chain are given: pass --c2pa-key and --c2pa-chain, or set "
        "SYNTHREG_C2PA_KEY and SYNTHREG_C2PA_CHAIN (`synthreg keygen --c2pa DIR` makes a test chain)",
        "missing chain": f"error: C2PA certificate chain {workspace.parent / 'no.pem'} does not exist; pass",
        "garbage chain": f"error: C2PA certificate chain {garbage} is not PEM certificates",
    }[what]
    assert res.stderr.splitlines()[0].startswith(expected), res.stderr
    assert len(res.stderr.splitlines()) == 1
    assert sorted(p.name for p in workspace.iterdir()) == before  # no output folder, no audit log


# --- a released C2PA dataset: verify, trace, reproduce ----------------------------------------------


@pytest.fixture(scope="module")
def c2pa_released(tmp_path_factory: pytest.TempPathFactory, solo_trust: TrustSetup, chain) -> Built:
    built = build_base(
        tmp_path_factory.mktemp("c2pa-release"),
        solo_trust,
        {"marking": {"c2pa": True}},
        c2pa_key=chain.key,
        c2pa_chain=chain.chain,
    )
    record = release("digits", "1.0.0", built.ws, key=built.key)
    assert record.recipe is not None and record.recipe.c2pa
    return Built(built.ws, built.key, record)


def first_image(ws: Path) -> tuple[Path, str, bytes, list]:
    shard = folder(ws, "1.0.0") / "data" / load_release(ws, "digits@1.0.0").shards[0].path
    members = [(m, bytes(d)) for m, d in members_from_bytes(shard.read_bytes()).items()]
    member, png = next((m, d) for m, d in members if m.endswith(".png"))
    return shard, member, png, members


def test_verify_checks_every_image_against_the_anchor(c2pa_released: Built, chain, other_chain) -> None:
    ws = c2pa_released.ws
    args = ["verify", "digits@1.0.0", "-w", str(ws)]
    res = runner.invoke(app, [*args, "--c2pa-trust", str(chain.root)])
    assert res.exit_code == 0, res.output
    assert "  C2PA content credentials checked on every image, against the trust anchor" in res.stdout
    res = runner.invoke(app, args)  # no anchor configured: who signed is unchecked, so not verified
    assert res.exit_code == 1
    assert "but no C2PA trust anchor is configured, so who signed them is unchecked" in res.stdout
    res = runner.invoke(app, [*args, "--c2pa-trust", str(other_chain.root), "--json"])
    assert res.exit_code == 1
    bad = json.loads(res.stdout)["bad_samples"]
    assert len(bad) == 12 and all("does not chain to the configured trust anchor" in v for v in bad.values())


def test_verify_reports_a_stripped_manifest(c2pa_released: Built, chain, tmp_path: Path) -> None:
    ws = clone(c2pa_released.ws, tmp_path / "ws")
    shard, member, _png, members = first_image(ws)
    shard.unlink()  # DVC may link it to its cache: replace the file, never write through it
    shard.write_bytes(tar_bytes([(m, strip_c2pa(d) if m == member else d) for m, d in members]))
    res = runner.invoke(app, ["verify", "digits@1.0.0", "--c2pa-trust", str(chain.root), "-w", str(ws)])
    assert res.exit_code == 1
    sid = member.removesuffix(".png")
    assert (
        f"  sample {sid}: corrupted: image bytes in {shard.name} do not match the recorded sha256; its "
        "marking is intact; C2PA: carries no C2PA manifest (stripped, or never signed)"
    ) in res.stdout.splitlines()


def test_verify_without_c2pa_does_not_load_it(released: Built, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "c2pa", None)  # an import would fail
    res = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(released.ws)])
    assert res.exit_code == 0, res.output
    assert "C2PA" not in res.stdout


def test_trace_image_reads_the_credentials(c2pa_released: Built, chain, tmp_path: Path) -> None:
    ws = c2pa_released.ws
    _, member, png, _ = first_image(ws)
    sid = member.removesuffix(".png")
    signed, stripped = tmp_path / "signed.png", tmp_path / "stripped.png"
    signed.write_bytes(png)
    stripped.write_bytes(strip_c2pa(png))
    trust = ["--c2pa-trust", str(chain.root), "-w", str(ws)]
    res = runner.invoke(app, ["trace", "image", str(signed), *trust])
    assert res.exit_code == 0, res.output
    found = c2pa_rows(res.stdout)
    assert list(found) == ["C2PA"]  # and no "C2PA problem"
    assert found["C2PA"].startswith(
        "C2PA valid, chains to the trust anchor: signed by synthreg test C2PA signer"
    )
    assert f"sample {sid}, generator tiny-digits" in found["C2PA"]
    res = runner.invoke(app, ["trace", "image", str(stripped), *trust])
    assert res.exit_code == 0, res.output
    assert c2pa_rows(res.stdout) == {
        "C2PA": "no C2PA manifest",
        "C2PA problem": "carries no C2PA manifest (stripped, or never signed)",
    }


def c2pa_rows(text: str) -> dict[str, str]:
    """The C2PA rows of `trace image`'s table, each cell's folded lines joined."""
    out: dict[str, str] = {}
    last = ""
    for row in table_rows(text):
        field, value = [*row, ""][:2]
        if field:
            last = field
            if field.startswith("C2PA"):
                out[field] = value
        elif last.startswith("C2PA"):
            out[last] += " " + value
    return out


def test_reproduce_compares_all_but_the_salted_manifest(c2pa_released: Built, tmp_path: Path) -> None:
    ws = c2pa_released.ws
    _, member, _png, _ = first_image(ws)
    sid = member.removesuffix(".png")
    res = runner.invoke(app, ["reproduce", sid, "-w", str(ws)])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[-1] == (
        f"{sid}: bit-identical outside its C2PA manifest (C2PA salts it at random)"
    )
