"""Release tags that plain git can verify: annotated, SSH-signed, and an ``allowed_signers`` file from the
trust root (issue 20).

    make_tag(ws, "digits@v1.0.0", commit, message, signer)   # a signed annotated tag; None: unsigned
    allowed_signers(trust.root)                               # the text of an allowed_signers file
    # then, anywhere:  git -c gpg.ssh.allowedSignersFile=FILE tag -v digits@v1.0.0

The tag object is written with ``git mktag`` and its signature made here, in OpenSSH's SSHSIG format
(PROTOCOL.sshsig: namespace ``git``, sha512), by the same securesystemslib ``Signer`` that signs the
release. That is what ``git tag -s`` with ``gpg.format=ssh`` would produce through ``ssh-keygen -Y sign``,
but it needs no private key file for ssh-keygen to read: a key in a PKCS#11 token signs its tag as it
signs its envelope, and a file key is never copied to a temporary OpenSSH-format file. ed25519
signatures are deterministic, so a tag is a function of its text.

The ``allowed_signers`` file names every unrevoked key of the root with its holder's name as principal
(only ``git`` signatures, within the key's validity window). Revoked keys are left out entirely, as
:mod:`registry.trust.root` never trusts them again (a tagger date, like any signed time, can be
backdated). Like the root it comes from, the file must be kept outside the repository.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from registry.core import vcs
from registry.core.errors import ReleaseError, SigningError
from registry.records.trust import TrustRoot

NAMESPACE = b"git"
BEGIN, END = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+@-]+")  # outside this, a principal could be read as a pattern or split
UNSIGNED = "UNSIGNED (finished by recovery, without a key)"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def ssh_public_blob(public_hex: str) -> bytes:
    return _string(b"ssh-ed25519") + _string(bytes.fromhex(public_hex))


def ssh_public_key(public_hex: str) -> str:
    """``ssh-ed25519 AAAA...``: the OpenSSH form of a raw ed25519 public key (RFC 8709)."""
    return "ssh-ed25519 " + base64.b64encode(ssh_public_blob(public_hex)).decode()


def sshsig(data: bytes, signer) -> str:
    """An armored SSHSIG signature of ``data`` by ``signer`` (an ed25519 securesystemslib Signer), as
    ``ssh-keygen -Y sign -n git`` writes it."""
    key = signer.public_key
    if key.keytype != "ed25519":
        raise SigningError(f"git tags are signed with ed25519 keys; this key is {key.keytype}")
    digest = hashlib.sha512(data).digest()
    to_sign = b"SSHSIG" + _string(NAMESPACE) + _string(b"") + _string(b"sha512") + _string(digest)
    sig = bytes.fromhex(signer.sign(to_sign).signature)
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(ssh_public_blob(key.keyval["public"]))
        + _string(NAMESPACE)
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(b"ssh-ed25519") + _string(sig))
    )
    b64 = base64.b64encode(blob).decode()
    return "\n".join([BEGIN, *(b64[i : i + 70] for i in range(0, len(b64), 70)), END]) + "\n"


def one_line(text: str) -> str:
    """``text`` with control characters (newlines too) replaced: a name cannot add lines to a message."""
    return _CONTROL.sub(" ", text).strip()


@dataclass(frozen=True)
class TagInfo:
    """What a release tag's message says: what, who, status."""

    ref: str  # NAME@X.Y.Z
    manifest_sha256: str
    releaser: str  # "name (key 0123abcd...)"
    status: str  # final / candidate
    signers: list[str]  # every sign-off: "name as role+role (key ...)"


def tag_message(info: TagInfo, tagged_by: str | None) -> str:
    """The tag's message: a subject line, then what, who and status, one fact a line."""
    lines = [
        f"{one_line(info.ref)} {info.status}",
        "",
        f"What:     {one_line(info.ref)}, manifest sha256 {info.manifest_sha256}",
        f"Who:      released by {one_line(info.releaser)}",
        f"Status:   {info.status}",
        *(f"Signed:   {one_line(s)}" for s in info.signers),
        f"Tag:      {'signed by ' + one_line(tagged_by) if tagged_by else UNSIGNED}",
    ]
    return "\n".join(lines) + "\n"


def make_tag(ws: Path, tag: str, commit: str, message: str, signer=None) -> str:
    """Create the annotated tag ``refs/tags/TAG`` on ``commit`` with ``message``, SSH-signed by
    ``signer`` (unsigned with None); refused when the tag exists. Returns the tag object's id."""
    ident = vcs.git(ws, "var", "GIT_COMMITTER_IDENT")
    body = f"object {commit}\ntype commit\ntag {tag}\ntagger {ident}\n\n{message}"
    if not body.endswith("\n"):
        body += "\n"
    if signer is not None:
        body += sshsig(body.encode(), signer)
    proc = vcs.run_git(ws, "mktag", input=body)
    if proc.returncode != 0:
        raise ReleaseError(f"`git mktag` refused the tag {tag}: {proc.stderr.strip()}")
    obj = proc.stdout.strip()
    # An empty old value: created only when absent, never moved (git update-ref's create-only form).
    vcs.git(ws, "update-ref", f"refs/tags/{tag}", obj, "")
    return obj


def allowed_signers(root: TrustRoot) -> str:
    """An ``allowed_signers`` file (ssh-keygen(1) ALLOWED SIGNERS) for the root's unrevoked keys: principal
    = the holder's name (characters a principal pattern would read specially become ``_``), limited to
    git signatures and to the key's validity window."""
    lines = ["# synthreg allowed_signers, written from the trust root: keep it outside the repository"]
    for key in root.keys:
        if key.revoked is not None:
            continue
        principal = _UNSAFE.sub("_", key.name).strip("_") or key.keyid[:16]
        options = ['namespaces="git"']
        if key.valid_from:
            options.append(f'valid-after="{key.valid_from.astimezone(UTC):%Y%m%d%H%M%S}Z"')
        if key.valid_until:
            options.append(f'valid-before="{key.valid_until.astimezone(UTC):%Y%m%d%H%M%S}Z"')
        comment = f"synthreg:{key.keyid[:16]}:{'+'.join(key.roles)}"
        lines.append(f"{principal} {','.join(options)} {ssh_public_key(key.public)} {comment}")
    return "\n".join(lines) + "\n"


def write_allowed_signers(root: TrustRoot, out: Path, ws: Path | None = None) -> Path:
    """Write :func:`allowed_signers` to ``out`` atomically; refused inside the workspace ``ws``, where
    anyone who can push could add their own key to it."""
    from registry.core.fsio import atomic_write_text

    if ws is not None and out.resolve().is_relative_to(ws.resolve()):
        raise SigningError(
            f"{out} is inside the workspace, where anyone who can write the repository could add a key to "
            "it; write it outside (e.g. ~/.config/synthreg/allowed_signers)"
        )
    atomic_write_text(out, allowed_signers(root))
    return out


__all__ = [
    "TagInfo",
    "allowed_signers",
    "make_tag",
    "one_line",
    "ssh_public_key",
    "sshsig",
    "tag_message",
    "write_allowed_signers",
]
