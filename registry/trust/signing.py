"""Signing releases: ed25519 keys, in-toto Statement v1 payloads in DSSE envelopes.

The envelope and key handling come from securesystemslib (DSSE, ``CryptoSigner``, ``SSlibKey``) and
the Statement from in-toto-attestation, so the files verify with any in-toto tooling. The private key
never enters the workspace: it is named by ``--key`` or ``$SYNTHREG_SIGNING_KEY`` (default
``~/.config/synthreg/release.key``) as a file path, ``envvar:NAME`` or a ``pkcs11:`` token URI
(:mod:`registry.trust.signers`), and a key file inside the workspace is refused. Public keys are
kept in the workspace at ``keys/<keyid>.pub.json`` for convenience only: what a verifier trusts is the
trust root it pins outside the workspace (:mod:`registry.trust.root`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from registry.core.errors import SigningError
from registry.core.fsio import atomic_write_text
from registry.records.release import PAYLOAD_TYPE, PREDICATE_TYPE
from registry.trust.signers import file_path, scheme_of

KEYS = Path("keys")  # public keys, ``keys/<keyid>.pub.json``: a convenience, never a source of trust
DEFAULT_PRIVATE = Path("~/.config/synthreg/release.key")


def key_location(key: Path | str | None = None) -> str:
    """Where the signing key is: ``key``, else ``$SYNTHREG_SIGNING_KEY``, else the default file; a path,
    ``file:PATH``, ``envvar:NAME`` or ``pkcs11:...`` (registry.trust.signers)."""
    loc = str(key or os.environ.get("SYNTHREG_SIGNING_KEY") or DEFAULT_PRIVATE)
    return loc if ":" in loc and scheme_of(loc) != "file" else str(file_path(loc))


@dataclass(frozen=True)
class KeygenResult:
    private: Path | str  # the private key file, or the pkcs11: URI of the key in its token
    public: Path
    keyid: str
    trust: Path | None  # the trust root the key was added to, if any


def keygen(
    ws: Path,
    private: Path | str | None = None,
    force: bool = False,
    name: str | None = None,
    roles: list[str] | None = None,
    trust: Path | str | None = None,
    add_to_trust: bool = True,
) -> KeygenResult:
    """A new ed25519 key pair. In a file: the private key (PKCS#8 PEM) created mode 0600 from its first
    byte, outside the workspace. In a PKCS#11 token (``pkcs11:`` URI): generated there, sensitive and
    not extractable, so no private byte ever reaches this process (registry.trust.signers). The public
    key goes to ``keys/<keyid>.pub.json`` (a new file: an existing public key is never replaced), naming
    its owner ``name``. With ``name`` (and ``add_to_trust``), the key is also added to an unversioned
    trust root with ``roles`` (default both; a new trust root holding one key with both roles is made
    solo). A versioned root (``synthreg trust``) is left alone: its changes are signed, with
    ``synthreg trust init`` or ``trust add`` (``trust`` is then None in the result)."""
    from securesystemslib.signer import CryptoSigner

    from registry.core.workspace import no_links
    from registry.records.trust import TrustedKey
    from registry.trust.root import add_key, history_dir, trust_path

    loc = key_location(private)
    scheme = scheme_of(loc)
    if scheme == "envvar":
        raise SigningError(
            f"keygen cannot create a key in an environment variable ({loc}); make a file key, then "
            "export its contents into the variable where it is needed (e.g. a CI secret)"
        )
    priv: Path | str = loc if scheme == "pkcs11" else Path(loc)
    if isinstance(priv, Path):
        _refuse_inside(priv, ws, "keep it outside (default ~/.config/synthreg/release.key)")
        if priv.exists() and not force:
            raise SigningError(
                f"{priv} exists already; pass --force to replace it (old releases stay verifiable "
                "as long as the trust root keeps the old key)"
            )
    no_links(ws, KEYS, "keys folder")  # linked elsewhere: refused before any key is made (issue 24)
    tfile = trust_path(trust) if name and add_to_trust else None
    if tfile is not None and history_dir(tfile).is_dir():
        tfile = None  # a versioned root changes only by signed versions (`synthreg trust add`)
    if tfile is not None and tfile.resolve().is_relative_to(ws.resolve()):
        raise SigningError(f"trust root {tfile} is inside the workspace; keep it outside (pass --trust)")
    if name is not None and (not name.strip() or not name.isprintable()):
        raise SigningError(f"--name {name!r} is empty or holds a newline or control character")
    unknown = sorted(set(roles or []) - {"releaser", "approver"})
    if unknown:
        raise SigningError(f"unknown role(s) {', '.join(unknown)}: a key may be releaser and/or approver")
    if isinstance(priv, Path):
        signer = CryptoSigner.generate_ed25519()
        public = signer.public_key
    else:
        public = _token_keygen(priv)
    entry = None
    if name:
        entry = TrustedKey(
            keyid=public.keyid,
            name=name,
            roles=list(dict.fromkeys(roles or ["releaser", "approver"])),
            public=public.keyval["public"],
        )
    if isinstance(priv, Path):
        write_private(priv, signer.private_bytes)
    pub = no_links(ws, KEYS / f"{public.keyid}.pub.json", "public key file")
    atomic_write_text(pub, public_key_text(public, name))
    if entry is not None and tfile is not None:
        add_key(tfile, entry, solo=len(entry.roles) == 2 if not tfile.exists() else None)
    return KeygenResult(priv, pub, public.keyid, tfile)


def _token_keygen(uri: str):
    from registry.trust.signers import token_keygen

    try:
        return token_keygen(uri)
    except ImportError as e:
        raise SigningError(
            f"keys in a PKCS#11 token need python-pkcs11 ({e}); install it: pip install 'synthreg[pkcs11]'"
        ) from None


def public_key_text(public, name: str | None = None) -> str:
    """A public key file's text, naming its owner when ``name`` is given (issue 20;
    ``registry.records.trust.PublicKeyFile``)."""
    owner = {"name": name} if name else {}
    return json.dumps({"keyid": public.keyid, **owner, **public.to_dict()}, indent=2) + "\n"


def public_key_file(signer, name: str | None = None) -> dict[str, str]:
    """The signer's public key file as a release commits it (issue 9: a release commit holds the key that
    signed it): ``{"path": "keys/<keyid>.pub.json", "text": ...}``, naming its owner when ``name`` is
    given (issue 20; ``registry.records.trust.PublicKeyFile``). A convenience copy, never trusted."""
    keyid = signer.public_key.keyid
    return {
        "path": (KEYS / f"{keyid}.pub.json").as_posix(),
        "text": public_key_text(signer.public_key, name),
    }


def write_private(path: Path, data: bytes) -> None:
    """Created 0600 (O_EXCL, so never an existing file's mode), written, fsynced, renamed into place:
    no moment at which another user could read it, and a crash leaves no half key under its name."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _refuse_inside(priv: Path, ws: Path, fix: str) -> None:
    """A SigningError when the private key ``priv`` lies inside the workspace ``ws`` (symlinks resolved),
    where `git add` could publish it: what keygen writes and every signer reads."""
    if priv.resolve().is_relative_to(Path(ws).resolve()):
        raise SigningError(
            f"private key {priv} is inside the workspace {ws}, where `git add` could publish it; {fix}"
        )


def load_signer(private: Path | str | None = None, ws: Path | None = None):
    """The ed25519 Signer for the key at ``private`` (else ``$SYNTHREG_SIGNING_KEY``, else the default
    file): a PEM file (path or ``file:``), ``envvar:NAME`` or a ``pkcs11:`` token key, each through
    securesystemslib's ``Signer.from_priv_key_uri`` (registry.trust.signers). Any other kind of key is
    refused (releases are ed25519), and so is a key file inside the workspace ``ws`` (symlinks
    resolved), wherever it was named (issue 24: release, withdraw, waive and approve took one)."""
    from registry.trust.signers import open_signer

    loc = key_location(private)
    if ws is not None and scheme_of(loc) == "file":
        _refuse_inside(
            Path(loc),
            ws,
            "move it outside (e.g. ~/.config/synthreg/) and pass --key or set SYNTHREG_SIGNING_KEY",
        )
    return open_signer(loc)


def statement(subjects: dict[str, str], predicate: dict) -> bytes:
    """An in-toto Statement v1 (canonical JSON bytes): subjects name -> sha256, predicate the record."""
    from google.protobuf.json_format import MessageToDict
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    descriptors = [ResourceDescriptor(name=n, digest={"sha256": d}).pb for n, d in subjects.items()]
    st = Statement(descriptors, PREDICATE_TYPE, predicate)
    st.validate()
    # protobuf turns numbers into floats; keep the predicate exactly as the record says it.
    doc = MessageToDict(st.pb) | {"predicate": predicate}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _envelope(envelope: dict):
    # Envelope.from_dict pops keys out of the dicts it is given: parse a copy.
    import copy

    from securesystemslib.dsse import Envelope

    return Envelope.from_dict(copy.deepcopy(envelope))


def sign(payload: bytes, signer, payload_type: str = PAYLOAD_TYPE) -> dict:
    from securesystemslib.dsse import Envelope

    env = Envelope(payload=payload, payload_type=payload_type, signatures={})
    env.sign(signer)
    return env.to_dict()


def add_signature(envelope: dict, signer) -> dict:
    """The envelope with one more signature over the same payload (PAE binds the payload type too)."""

    env = _envelope(envelope)
    env.sign(signer)
    return env.to_dict()


def payload_of(envelope: dict, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """The envelope's payload bytes, refused when its type is not ``payload_type``."""

    try:
        env = _envelope(envelope)
    except (KeyError, ValueError, TypeError) as e:
        raise SigningError(f"not a DSSE envelope: {e}") from e
    if env.payload_type != payload_type:
        raise SigningError(f"unexpected payload type {env.payload_type!r}, expected {payload_type!r}")
    return env.payload


def signature_verifies(envelope: dict, keyid: str, key) -> bool:
    """Whether the envelope carries a valid signature by ``key`` (its keyid hint must name it)."""
    from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError

    env = _envelope(envelope)
    pae = env.pae()
    for sig in env.signatures.values():
        if sig.keyid != keyid:
            continue
        try:
            key.verify_signature(sig, pae)
            return True
        except (UnverifiedSignatureError, VerificationError):
            return False
    return False
