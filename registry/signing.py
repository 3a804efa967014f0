"""Signing releases: ed25519 keys, in-toto Statement v1 payloads in DSSE envelopes.

The envelope and key handling come from securesystemslib (DSSE, ``CryptoSigner``, ``SSlibKey``) and
the Statement from in-toto-attestation, so the files verify with any in-toto tooling. The private key
never enters the workspace: it is read from ``$SYNTHREG_SIGNING_KEY`` or a path given on the command
line (default ``~/.config/synthreg/release.key``); the public key is kept in the workspace at
``keys/release.pub.json`` so anyone with the repo can verify.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from registry.errors import SigningError
from registry.fsio import atomic_write_bytes, atomic_write_text
from registry.release_record import PAYLOAD_TYPE, PREDICATE_TYPE

PUBLIC_KEY = Path("keys") / "release.pub.json"
DEFAULT_PRIVATE = Path("~/.config/synthreg/release.key")


def private_key_path(path: Path | str | None = None) -> Path:
    return Path(path or os.environ.get("SYNTHREG_SIGNING_KEY") or DEFAULT_PRIVATE).expanduser()


def keygen(ws: Path, private: Path | str | None = None, force: bool = False) -> tuple[Path, Path]:
    """Write a new ed25519 key pair: the private key (PKCS#8 PEM, mode 0600) and the workspace public key."""
    from securesystemslib.signer import CryptoSigner

    priv = private_key_path(private)
    if priv.exists() and not force:
        raise SigningError(
            f"{priv} exists already; pass --force to replace it (old releases stay verifiable "
            "only with the old public key)"
        )
    signer = CryptoSigner.generate_ed25519()
    priv.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(priv, signer.private_bytes)
    os.chmod(priv, 0o600)
    return priv, write_public_key(ws, signer)


def _public_json(signer) -> str:
    return json.dumps({"keyid": signer.public_key.keyid, **signer.public_key.to_dict()}, indent=2) + "\n"


def check_public_key(ws: Path, signer) -> bool:
    """Whether the workspace lacks the signer's public key (a release then adds and commits it).
    A different public key there is refused: replacing it would leave older releases unverifiable."""
    pub = ws / PUBLIC_KEY
    if not pub.is_file():
        return True
    try:
        found = json.loads(pub.read_text())
        keyid = found.get("keyid")
    except (ValueError, AttributeError):
        found = keyid = None
    if found != json.loads(_public_json(signer)):
        raise SigningError(
            f"{PUBLIC_KEY} holds key {str(keyid)[:16]}, not the signing key {signer.public_key.keyid[:16]}; "
            "sign with the matching private key (--key or SYNTHREG_SIGNING_KEY), or restore the public key "
            "from git"
        )
    return False


def write_public_key(ws: Path, signer) -> Path:
    pub = ws / PUBLIC_KEY
    atomic_write_text(pub, _public_json(signer))
    return pub


def load_signer(private: Path | str | None = None):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    priv = private_key_path(private)
    if not priv.is_file():
        raise SigningError(
            f"no signing key at {priv}; create one with `synthreg keygen` or set SYNTHREG_SIGNING_KEY"
        )
    try:
        return CryptoSigner(load_pem_private_key(priv.read_bytes(), password=None))
    except (ValueError, TypeError) as e:
        raise SigningError(f"{priv} is not a PEM ed25519 private key: {e}") from e


def load_public_key(ws: Path):
    from securesystemslib.signer import SSlibKey

    pub = ws / PUBLIC_KEY
    if not pub.is_file():
        raise SigningError(f"no public key at {pub}; run `synthreg keygen` in this workspace")
    data = json.loads(pub.read_text())
    return SSlibKey.from_dict(data.pop("keyid"), data)


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


def sign(payload: bytes, signer) -> dict:
    from securesystemslib.dsse import Envelope

    env = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    env.sign(signer)
    return env.to_dict()


def open_envelope(envelope: dict, key) -> dict:
    """Verify the envelope with ``key``; return the Statement it carries."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    try:
        env = Envelope.from_dict(envelope)
        env.verify([key], 1)
    except (VerificationError, KeyError, ValueError) as e:
        raise SigningError(f"the release signature does not verify: {e}") from e
    if env.payload_type != PAYLOAD_TYPE:
        raise SigningError(f"unexpected payload type {env.payload_type!r}")
    return json.loads(env.payload)
