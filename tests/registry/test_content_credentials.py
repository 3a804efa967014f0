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

from generators.shard import encode_png
from registry.cli import app
from registry.core.errors import CredentialsError
from registry.lineage.image import trace_credentials
from registry.releases.release import release
from registry.store.marking import Marking, read_marking
from registry.store.releases import load_release
from registry.store.shards import members_from_bytes, tar_bytes
from registry.trust.credentials import (
    C2PA_CHUNK,
    Found,
    Reader,
    credential_problems,
    has_c2pa,
    keygen_c2pa,
    load_anchors,
    load_credentials,
    problems_of,
    sign_png,
    strip_c2pa,
)
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


def test_keys_and_anchors_inside_the_workspace_are_refused(chain, tmp_path: Path, monkeypatch) -> None:
    """As registry.trust.root refuses a release trust root there: whoever can commit could vouch for their
    own signer (root.pem) or publish the key."""
    ws = tmp_path / "ws"
    ws.mkdir()
    key, root = ws / "signer.key", ws / "root.pem"
    key.write_bytes(chain.key.read_bytes())
    root.write_bytes(chain.root.read_bytes())
    (tmp_path / "outside.pem").symlink_to(root)  # a link from outside to inside is inside
    for path in (root, tmp_path / "outside.pem"):
        with pytest.raises(CredentialsError, match=r"^C2PA trust anchors .* are inside the workspace, where"):
            load_anchors(path, ws)
    monkeypatch.setenv("SYNTHREG_C2PA_TRUST", str(root))
    with pytest.raises(CredentialsError, match=rf"^C2PA trust anchors {root} are inside the workspace"):
        load_anchors(None, ws)
    assert load_anchors(None) == load_anchors(chain.root, ws)  # ws None: not checked (old call sites)
    with pytest.raises(CredentialsError, match=rf"^C2PA signing key {key} is inside the workspace {ws}, "):
        load_credentials(key, chain.chain, ws)
    assert (
        load_credentials(key, chain.chain).signer_sha256
        == load_credentials(chain.key, chain.chain, ws).signer_sha256
    )


def test_the_key_is_read_once_and_what_was_checked_signs(chain, monkeypatch) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    reads: list[Path] = []
    read_bytes, read_text = Path.read_bytes, Path.read_text
    monkeypatch.setattr(Path, "read_bytes", lambda p: (reads.append(p), read_bytes(p))[1])
    monkeypatch.setattr(Path, "read_text", lambda p, *a, **k: (reads.append(p), read_text(p, *a, **k))[1])
    creds = load_credentials(chain.key, chain.chain)
    assert reads.count(chain.key) == 1
    private = load_pem_private_key(creds.key_pem.encode(), password=None)
    original = load_pem_private_key(read_bytes(chain.key), password=None)
    assert private.private_numbers() == original.private_numbers()  # type: ignore[union-attr]


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


def found(state: str, failures: list[str] | None = None, trust_checked: bool = False) -> Found:
    sample = {"sample_id": MARK.sample_id, "generator": MARK.generator, "weights_digest": MARK.weights_digest}
    return Found(state, failures or [], [MARK.digital_source_type], sample, "signer", trust_checked)


UNTRUSTED = (
    "its C2PA signer (signer) does not chain to the configured trust anchor (--c2pa-trust / "
    "$SYNTHREG_C2PA_TRUST)"
)


def test_problems_follow_c2pa_rs_overall_state() -> None:
    """c2pa-python 0.38.1 says Invalid, Valid (untrusted, or trust unchecked) or Trusted."""
    assert problems_of(found("Valid"), MARK) == []  # no anchors: Valid is all one can ask
    assert problems_of(found("Trusted", trust_checked=True), MARK) == []
    assert problems_of(found("Invalid"), MARK) == [
        "its C2PA manifest does not validate (c2pa-rs judges it Invalid)"
    ]
    assert problems_of(found("Invalid", trust_checked=True), MARK) == [
        "its C2PA manifest does not validate (c2pa-rs judges it Invalid)"
    ]
    assert problems_of(found("Valid", trust_checked=True), MARK) == [UNTRUSTED]  # anchors: Trusted only
    untrusted = ["signingCredential.untrusted: signing certificate untrusted"]
    assert problems_of(found("Valid", untrusted, trust_checked=True), MARK) == [UNTRUSTED]
    assert problems_of(found("Invalid", ["assertion.dataHash.mismatch: x"]), MARK) == [
        "its C2PA manifest does not validate (assertion.dataHash.mismatch: x)"
    ]


def test_an_error_after_the_reader_opens_is_an_invalid_manifest(chain, monkeypatch) -> None:
    import c2pa

    _plain, signed = signed_png(chain)

    class Broken:
        def __init__(self, *args) -> None:
            pass

        def __enter__(self) -> Broken:
            return self

        def __exit__(self, *exc) -> None:
            pass

        def get_active_manifest(self) -> dict:
            raise c2pa.C2paError("manifest store is damaged")

    monkeypatch.setattr(c2pa, "Reader", Broken)
    reader = Reader(None)
    try:
        got = reader.read(signed)
    finally:
        reader.close()
    assert got is not None and (got.state, got.failures) == (
        "Invalid",
        ["unreadable: manifest store is damaged"],
    )
    assert problems_of(got, MARK)[0] == (
        "its C2PA manifest does not validate (unreadable: manifest store is damaged)"
    )


def test_without_c2pa_python_an_unasked_manifest_is_a_note(chain, monkeypatch) -> None:
    import sys

    _plain, signed = signed_png(chain)
    monkeypatch.setitem(sys.modules, "c2pa", None)  # as if the extra were not installed
    with pytest.raises(CredentialsError, match=r"need c2pa-python"):
        Reader(None)  # the release asked for C2PA: an error
    reader = Reader(None, required=False)
    (note,) = reader.problems(signed, MARK)
    assert note.startswith("carries a C2PA manifest that was not checked: C2PA content credentials need ")
    assert reader.problems(strip_c2pa(signed), MARK) == []
    reader.close()
    traced = trace_credentials(Path("."), signed, [], None, None)
    assert traced.problems == [] and traced.found is None
    assert traced.summary.startswith("a C2PA manifest, not checked: C2PA content credentials need ")


def test_has_c2pa_searches_a_memoryview_slice_in_place() -> None:
    """verify's images are memoryview slices of their shard: only the slice counts, and it is not copied."""
    import tracemalloc

    plain = encode_png((np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8), MARK)
    iend = plain.rindex(b"IEND") - 4
    marked = plain[:iend] + b"\0\0\0\4" + C2PA_CHUNK + b"abcd\0\0\0\0" + plain[iend:]  # CRC unchecked
    assert has_c2pa(marked) and not has_c2pa(plain)
    view = memoryview(C2PA_CHUNK + plain + C2PA_CHUNK + marked + C2PA_CHUNK)  # the type beside each slice
    a = len(C2PA_CHUNK)
    b = a + len(plain) + len(C2PA_CHUNK)
    assert not has_c2pa(view[a : a + len(plain)])
    assert has_c2pa(view[b : b + len(marked)])
    assert not has_c2pa(view[::-1])  # not contiguous: copied, and still right
    big = memoryview(plain + bytes(20_000_000) + C2PA_CHUNK)[: len(plain) + 20_000_000]
    tracemalloc.start()
    try:
        assert not has_c2pa(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # bytes(big) would be 20 MB


# --- generate refuses before writing ----------------------------------------------------------------


@pytest.mark.parametrize("what", ["no key", "missing chain", "garbage chain", "key in workspace"])
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
    inner_key = workspace / "signer.key"
    if what == "key in workspace":
        inner_key.write_bytes(chain.key.read_bytes())
    args = {
        "no key": [],
        "missing chain": ["--c2pa-key", str(chain.key), "--c2pa-chain", str(workspace.parent / "no.pem")],
        "garbage chain": ["--c2pa-key", str(chain.key), "--c2pa-chain", str(garbage)],
        "key in workspace": ["--c2pa-key", str(inner_key), "--c2pa-chain", str(chain.chain)],
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
        "key in workspace": f"error: C2PA signing key {inner_key} is inside the workspace",
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
    assert "C2PA content credentials checked" not in res.stdout
    assert "    not run   c2pa: the recipe did not ask for C2PA content credentials" in res.stdout


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
    assert list(found) == ["C2PA", "C2PA required by"]  # and no "C2PA problem"
    assert found["C2PA required by"] == "digits@1.0.0"
    assert found["C2PA"].startswith(
        "C2PA valid, chains to the trust anchor: signed by synthreg test C2PA signer"
    )
    assert f"sample {sid}, generator tiny-digits" in found["C2PA"]
    res = runner.invoke(app, ["trace", "image", str(stripped), *trust])
    assert res.exit_code == 0, res.output
    assert c2pa_rows(res.stdout) == {
        "C2PA": "no C2PA manifest",
        "C2PA required by": "digits@1.0.0",
        "C2PA problem": "carries no C2PA manifest (stripped, or never signed)",
    }
    inner = ws / "root.pem"  # a trust anchor anyone who can commit could replace
    inner.write_bytes(chain.root.read_bytes())
    try:
        res = runner.invoke(app, ["trace", "image", str(signed), "--c2pa-trust", str(inner), "-w", str(ws)])
    finally:
        inner.unlink()
    assert res.exit_code == 1
    assert res.stderr.startswith(f"error: C2PA trust anchors {inner} are inside the workspace"), res.stderr


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
