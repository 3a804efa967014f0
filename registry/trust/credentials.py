"""C2PA content credentials on generated PNGs, for recipes with ``marking: {c2pa: true}`` (issue 12).

    creds = load_credentials(key_path, chain_path)       # checked once, before anything is written
    png = sign_png(encode_png(image, marking), marking, creds)  # after the XMP marking
    (registry.store.marking)
    credential_problems(png, expected_marking, anchors)  # -> [] when present, valid, trusted and agreeing
    keygen_c2pa(ws, folder)                              # a TEST root and signer (not for production)

The manifest holds a ``c2pa.actions`` assertion (``c2pa.created``, digitalSourceType
trainedAlgorithmicMedia, as the XMP says) and ``dev.synthreg.sample`` (sample id, generator, weights
digest). It is signed by c2pa-python (c2pa-rs) with the organisation's X.509 key and chain, offline:
no timestamp authority, no remote trust list; no thumbnail (a 16x16 image would carry a JPEG larger
than itself). The image's sha256 in the manifest is taken after signing, so the digests cover it.

Not byte-reproducible: c2pa-rs salts every assertion hash with 16 random bytes and names the manifest
and instance with random UUIDs, and ECDSA signatures are randomised; so a C2PA image regenerated from its
record differs from the recorded one inside its ``caBX`` chunk only. ``synthreg reproduce`` compares the
image with that chunk removed (:func:`strip_c2pa`), bit for bit.

Trust is what the verifier configures, never what the image carries: the anchors (PEM root
certificates) come from ``--c2pa-trust`` or ``$SYNTHREG_C2PA_TRUST``. c2pa-python is imported inside the
functions that need it, so the CLI and the verification of releases without C2PA never load it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from registry.core.errors import CredentialsError
from registry.core.images import PNG_SIGNATURE
from registry.store.marking import DIGITAL_SOURCE_TYPE, Marking, walk_chunks

ASSERTION = "dev.synthreg.sample"
ENV_KEY, ENV_CHAIN, ENV_TRUST = "SYNTHREG_C2PA_KEY", "SYNTHREG_C2PA_CHAIN", "SYNTHREG_C2PA_TRUST"
C2PA_CHUNK = b"caBX"  # where C2PA puts its JUMBF manifest store in a PNG (C2PA 2.1, A.3.3)
_C2PA_TYPE = re.compile(re.escape(C2PA_CHUNK))
# Settings for c2pa-rs: no thumbnail (it would be larger than our images), nothing fetched.
_SIGN_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}, "verify": {"ocsp_fetch": False}}
NO_KEY_HINT = (
    "pass --c2pa-key and --c2pa-chain, or set SYNTHREG_C2PA_KEY and SYNTHREG_C2PA_CHAIN "
    "(`synthreg keygen --c2pa DIR` makes a test chain)"
)


def _c2pa():
    try:
        import c2pa
    except ImportError as e:
        raise CredentialsError(
            f"C2PA content credentials need c2pa-python ({e}); install it: pip install 'synthreg[c2pa]'"
        ) from None
    return c2pa


# --- the organisation's key and chain ------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """A checked signing key and certificate chain, small and picklable (a Ray worker gets a copy)."""

    alg: str  # "es256" or "ed25519": what the key is
    chain_pem: str  # the signer's certificate first, then any intermediates
    key_pem: str = field(repr=False)
    signer_sha256: str  # sha256 of the signer certificate (DER): names the signer in the plan digest
    signer: str  # the signer certificate's subject, for messages


def _inside(path: Path, ws: Path | None) -> bool:
    """Whether ``path`` lies inside the workspace ``ws`` (symlinks resolved, as registry.trust.root decides);
    False when ``ws`` is None: not checked."""
    return ws is not None and path.resolve().is_relative_to(ws.resolve())


def load_credentials(
    key: Path | str | None = None, chain: Path | str | None = None, ws: Path | None = None
) -> Credentials:
    """The key and chain at ``key``/``chain`` (else ``$SYNTHREG_C2PA_KEY``/``$SYNTHREG_C2PA_CHAIN``),
    checked as C2PA asks of a signer: a PEM chain whose first certificate is in date, no CA, usable for
    digital signatures, and holds the public half of the key (P-256 ECDSA or Ed25519). A key inside the
    workspace ``ws`` is refused, as keygen_c2pa refuses to write one there (None: not checked)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
        load_pem_private_key,
    )

    key = key or os.environ.get(ENV_KEY) or None
    chain = chain or os.environ.get(ENV_CHAIN) or None
    if key is None or chain is None:
        missing = " and ".join(
            w for w, v in (("signing key", key), ("certificate chain", chain)) if v is None
        )
        raise CredentialsError(f"no C2PA {missing} given: {NO_KEY_HINT}")
    key_path, chain_path = Path(key).expanduser(), Path(chain).expanduser()
    for path, what in ((chain_path, "certificate chain"), (key_path, "signing key")):
        if not path.is_file():
            raise CredentialsError(f"C2PA {what} {path} does not exist; {NO_KEY_HINT}")
    if _inside(key_path, ws):
        raise CredentialsError(
            f"C2PA signing key {key_path} is inside the workspace {ws}, where `git add` could publish it; "
            "keep it outside (e.g. ~/.config/synthreg/c2pa) and pass --c2pa-key or set SYNTHREG_C2PA_KEY"
        )
    chain_bytes = chain_path.read_bytes()
    try:
        certs = x509.load_pem_x509_certificates(chain_bytes)
    except ValueError as e:
        raise CredentialsError(
            f"C2PA certificate chain {chain_path} is not PEM certificates ({e}); give the signer's "
            "certificate then its intermediates, PEM-encoded"
        ) from None
    try:
        private = load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise CredentialsError(
            f"C2PA signing key {key_path} is not an unencrypted PEM private key ({e})"
        ) from None
    if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1):
        alg = "es256"
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        alg = "ed25519"
    else:
        raise CredentialsError(
            f"C2PA signing key {key_path} is a {type(private).__name__.removeprefix('_')}; "
            "use a P-256 ECDSA (es256) or Ed25519 key"
        )
    leaf = certs[0]
    pub = PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(Encoding.DER, pub) != private.public_key().public_bytes(
        Encoding.DER, pub
    ):
        raise CredentialsError(
            f"C2PA signing key {key_path} does not belong to the first certificate of {chain_path} "
            f"({leaf.subject.rfc4514_string()}); give the key and chain of one signer"
        )
    problems = _signer_problems(leaf)
    if problems:
        raise CredentialsError(
            f"C2PA certificate {leaf.subject.rfc4514_string()} in {chain_path} cannot sign: "
            + "; ".join(problems)
        )
    from cryptography.hazmat.primitives import hashes

    return Credentials(
        alg=alg,
        chain_pem="".join(c.public_bytes(Encoding.PEM).decode() for c in certs),
        # The key parsed above, written back: what was checked is what signs (the file is read once).
        key_pem=private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode(),
        signer_sha256=leaf.fingerprint(hashes.SHA256()).hex(),
        signer=leaf.subject.rfc4514_string(),
    )


def _signer_problems(cert) -> list[str]:
    """What C2PA's certificate profile (2.1, 14.5.1) forbids in a signer certificate that we can see."""
    from cryptography import x509

    out = []
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        out.append(f"it is valid only from {start:%Y-%m-%d} to {end:%Y-%m-%d}")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            out.append("it is a CA certificate (a signer must not be)")
    except x509.ExtensionNotFound:
        pass
    try:
        if not cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            out.append("its key usage lacks digitalSignature")
    except x509.ExtensionNotFound:
        pass
    return out


# --- signing ---------------------------------------------------------------------------------------


def manifest_definition(m: Marking) -> dict:
    """The manifest c2pa-rs builds for ``m``: created by a trained model, and which sample it is."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("synthreg")
    except PackageNotFoundError:
        ours = "unknown"
    return {
        "claim_generator_info": [{"name": "synthreg", "version": ours}],
        "title": f"{m.sample_id}.png",
        "format": "image/png",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {"actions": [{"action": "c2pa.created", "digitalSourceType": m.digital_source_type}]},
            },
            {
                "label": ASSERTION,
                "data": {
                    "sample_id": m.sample_id,
                    "generator": m.generator,
                    "weights_digest": m.weights_digest,
                },
            },
        ],
    }


class PngSigner:
    """One c2pa signer and context for many images (a batch): making them costs more than a signature."""

    def __init__(self, creds: Credentials) -> None:
        c2pa = _c2pa()
        self._c2pa = c2pa
        try:
            self._signer = c2pa.Signer.from_info(
                c2pa.C2paSignerInfo(
                    creds.alg.encode(), creds.chain_pem.encode(), creds.key_pem.encode(), None
                )
            )
            self._context = c2pa.Context.from_dict(_SIGN_SETTINGS)
        except c2pa.C2paError as e:
            raise CredentialsError(
                f"c2pa-python refused the C2PA key and chain of {creds.signer}: {e}"
            ) from None

    def sign(self, png: bytes, m: Marking) -> bytes:
        import io

        dest = io.BytesIO()
        try:
            with self._c2pa.Builder(manifest_definition(m), self._context) as builder:
                builder.sign(self._signer, "image/png", io.BytesIO(png), dest)
        except self._c2pa.C2paError as e:
            raise CredentialsError(f"C2PA signing of sample {m.sample_id} failed: {e}") from None
        return dest.getvalue()

    def close(self) -> None:
        self._signer.close()
        self._context.close()


def sign_png(png: bytes, m: Marking, creds: Credentials) -> bytes:
    """``png`` with a C2PA manifest for ``m`` (see :class:`PngSigner` to sign many)."""
    signer = PngSigner(creds)
    try:
        return signer.sign(png, m)
    finally:
        signer.close()


# --- reading and checking ------------------------------------------------------------------------


def has_c2pa(png: bytes | memoryview) -> bool:
    """Whether ``png`` has a C2PA chunk: a walk over chunk headers, without c2pa-python (and none at all
    when the chunk type's four bytes are nowhere in the file, as in every image without credentials).
    A memoryview (verify's members are slices of their shard) is searched in place, not copied: re
    reads any contiguous buffer (50 MB: 15 ms, where a copy then bytes.find took 60 ms)."""
    data = png if isinstance(png, bytes) or png.c_contiguous else bytes(png)
    if _C2PA_TYPE.search(data) is None:
        return False
    return any(kind == C2PA_CHUNK for _, kind, _ in walk_chunks(png))


def strip_c2pa(png: bytes | memoryview) -> bytes:
    """``png`` without its C2PA chunk: what it was before signing (c2pa-rs inserts one chunk, no more)."""
    data = bytes(png)
    out, last = bytearray(data[:8]), 8
    for pos, kind, length in walk_chunks(data):
        if kind != C2PA_CHUNK:
            out += data[pos : pos + 12 + length]
        last = pos + 12 + length
    return bytes(out + data[last:]) if data[:8] == PNG_SIGNATURE else data


def load_anchors(path: Path | str | None = None, ws: Path | None = None) -> str | None:
    """The PEM trust anchors at ``path`` (else ``$SYNTHREG_C2PA_TRUST``); None when none is configured.
    Anchors inside the workspace ``ws`` are refused, as registry.trust.root refuses the release trust root
    there: whoever can commit could vouch for their own signer (None: not checked)."""
    path = path or os.environ.get(ENV_TRUST) or None
    if path is None:
        return None
    from cryptography import x509

    p = Path(path).expanduser()
    if _inside(p, ws):
        raise CredentialsError(
            f"C2PA trust anchors {p} are inside the workspace, where anyone who can write the repository "
            "could replace them; keep them outside (e.g. ~/.config/synthreg/c2pa/root.pem) and pass "
            "--c2pa-trust or set SYNTHREG_C2PA_TRUST"
        )
    if not p.is_file():
        raise CredentialsError(
            f"C2PA trust anchors {p} do not exist; pass --c2pa-trust or set SYNTHREG_C2PA_TRUST to the "
            "organisation's root certificate(s), PEM"
        )
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        certs = x509.load_pem_x509_certificates(p.read_bytes())
    except ValueError as e:
        raise CredentialsError(f"C2PA trust anchors {p} are not PEM certificates ({e})") from None
    # The certificates parsed, written back: what was checked is what c2pa-rs trusts (one read).
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


@dataclass
class Found:
    """What a PNG's active C2PA manifest says, and what c2pa-rs made of it."""

    state: str  # c2pa-rs: Trusted (valid and chains to an anchor), Valid, Invalid
    failures: list[str]  # "code: explanation" of each failed check
    digital_source_types: list[str]  # of its c2pa.created actions
    sample: dict  # the dev.synthreg.sample assertion ({} when absent)
    signer: str
    trust_checked: bool

    def to_json(self) -> dict:
        return self.__dict__.copy()


class Reader:
    """Reads C2PA manifests with one c2pa context (trust anchors loaded once): one per thread.

    ``required=False`` (the release did not ask for C2PA, the image merely carries a ``caBX`` chunk):
    without c2pa-python :meth:`problems` returns a note saying the manifest was not checked, where
    ``required=True`` raises CredentialsError as soon as the reader is made."""

    def __init__(self, anchors: str | None, required: bool = True) -> None:
        self.anchors = anchors
        self.missing: str | None = None  # why c2pa-python could not be loaded (required=False only)
        try:
            c2pa = _c2pa()
        except CredentialsError as e:
            if required:
                raise
            self.missing = str(e)
            return
        self._c2pa = c2pa
        settings: dict = {"verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}}
        if anchors:
            settings["verify"]["verify_trust"] = True
            settings["trust"] = {"trust_anchors": anchors}
        else:
            settings["verify"]["verify_trust"] = False
        self._context = c2pa.Context.from_dict(settings)

    def read(self, png: bytes | memoryview) -> Found | None:
        import io

        if self.missing is not None:
            raise CredentialsError(self.missing)
        if not has_c2pa(png):
            return None
        # Any call may raise C2paError on a damaged store, not only the constructor: a hostile image is
        # an Invalid manifest, never an exception that ends verify (it would come out of future.result()).
        try:
            with self._c2pa.Reader("image/png", io.BytesIO(bytes(png)), None, self._context) as reader:
                manifest = reader.get_active_manifest() or {}
                results = reader.get_validation_results() or {}
                state = reader.get_validation_state() or "Invalid"
        except self._c2pa.C2paError as e:
            return Found("Invalid", [f"unreadable: {e}"], [], {}, "", bool(self.anchors))
        failures = [
            f"{f.get('code')}: {f.get('explanation', '')}".rstrip(": ")
            for f in results.get("activeManifest", {}).get("failure", [])
        ]
        types, sample = [], {}
        for a in manifest.get("assertions", []):
            if a.get("label", "").startswith("c2pa.actions"):
                types += [
                    act.get("digitalSourceType", "")
                    for act in a.get("data", {}).get("actions", [])
                    if act.get("action") == "c2pa.created"
                ]
            elif a.get("label") == ASSERTION:
                sample = dict(a.get("data", {}))
        sig = manifest.get("signature_info", {})
        signer = ", ".join(x for x in (sig.get("common_name"), sig.get("issuer")) if x)
        return Found(state, failures, types, sample, signer, bool(self.anchors))

    def problems(self, png: bytes | memoryview, expected: Marking | None) -> list[str]:
        """:func:`problems_of` what :meth:`read` finds; without c2pa-python (``required=False``), a note
        that the manifest went unchecked."""
        if self.missing is not None:
            return [f"carries a C2PA manifest that was not checked: {self.missing}"] if has_c2pa(png) else []
        return problems_of(self.read(png), expected)

    def close(self) -> None:
        if self.missing is None:
            self._context.close()


def problems_of(found: Found | None, expected: Marking | None) -> list[str]:
    """What is wrong with ``found`` against the record's marking (``expected``; None: only the manifest)."""
    if found is None:
        return ["carries no C2PA manifest (stripped, or never signed)"]
    out = []
    untrusted = [f for f in found.failures if f.startswith("signingCredential.untrusted")]
    broken = [f for f in found.failures if f not in untrusted]
    # c2pa-rs's overall state (Invalid, Valid, Trusted) is the verdict; the failures say why. A state
    # of Invalid with no failure listed is still invalid, and with anchors only Trusted will do.
    if broken:
        out.append("its C2PA manifest does not validate (" + "; ".join(broken) + ")")
    elif found.state == "Invalid" and not (untrusted and found.trust_checked):
        out.append("its C2PA manifest does not validate (c2pa-rs judges it Invalid)")
    if found.trust_checked and (untrusted or found.state not in ("Trusted", "Invalid")):
        out.append(
            f"its C2PA signer ({found.signer}) does not chain to the configured trust anchor "
            f"(--c2pa-trust / ${ENV_TRUST})"
        )
    if DIGITAL_SOURCE_TYPE not in found.digital_source_types:
        out.append(
            f"its C2PA c2pa.created action names {found.digital_source_types or 'no'} digital source type"
        )
    if expected is not None:
        for key, want in (
            ("sample_id", expected.sample_id),
            ("generator", expected.generator),
            ("weights_digest", expected.weights_digest),
        ):
            got = found.sample.get(key)
            if got != want:
                out.append(f"its C2PA {ASSERTION} names {key} {got!r} but the record says {want!r}")
    return out


def credential_problems(png: bytes | memoryview, expected: Marking | None, anchors: str | None) -> list[str]:
    """[] when ``png`` carries a C2PA manifest that validates, chains to ``anchors`` (unchecked when
    None) and says what the record says."""
    reader = Reader(anchors)
    try:
        return problems_of(reader.read(png), expected)
    finally:
        reader.close()


def describe(found: Found | None) -> str:
    if found is None:
        return "no C2PA manifest"
    if found.state == "Invalid":
        verdict = "INVALID"
    elif found.state == "Trusted":
        verdict = "valid, chains to the trust anchor"
    elif found.trust_checked:
        verdict = "valid, NOT chaining to the trust anchor"
    else:
        verdict = "valid, trust not checked (no --c2pa-trust / $SYNTHREG_C2PA_TRUST)"
    s = found.sample
    return (
        f"C2PA {verdict}: signed by {found.signer or 'unknown'}; "
        f"sample {s.get('sample_id')}, generator {s.get('generator')}, weights {s.get('weights_digest')}"
    )


# --- a test chain --------------------------------------------------------------------------------


@dataclass(frozen=True)
class C2paKeygenResult:
    folder: Path
    root: Path  # the trust anchor: give it to verifiers (--c2pa-trust / $SYNTHREG_C2PA_TRUST)
    chain: Path  # the signer's certificate (the chain to pass with --c2pa-chain)
    key: Path  # the signer's private key, 0600


TEST_CHAIN_WARNING = (
    "this is a TEST chain made by synthreg, not for production: its root is trusted by nobody but you; "
    "sign real datasets with a key and chain your organisation issues"
)


def keygen_c2pa(ws: Path, folder: Path | str, force: bool = False, days: int = 365) -> C2paKeygenResult:
    """A TEST root CA and a signer certificate under it, in ``folder`` (outside the workspace):
    ``root.pem`` (the trust anchor), ``chain.pem`` (the signer's certificate: the root stays out, it is
    what the verifier brings) and ``signer.key`` (0600). P-256 ECDSA (es256): what C2PA signers most
    use; its signatures are randomised, which makes no difference here (the salts already are)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from registry.trust.signing import write_private

    out = Path(folder).expanduser()
    if _inside(out, ws):
        raise CredentialsError(
            f"C2PA key folder {out} is inside the workspace {ws}, where `git add` could publish the "
            "private key; keep it outside (e.g. ~/.config/synthreg/c2pa)"
        )
    paths = C2paKeygenResult(out, out / "root.pem", out / "chain.pem", out / "signer.key")
    taken = [p for p in (paths.root, paths.chain, paths.key) if p.exists()]
    if taken and not force:
        raise CredentialsError(f"{taken[0]} exists already; pass --force to replace the test chain")

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "synthreg test chain (not for production)"),
            ]
        )

    now = datetime.now(UTC)
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=not sign,
            crl_sign=not sign,
            encipher_only=False,
            decipher_only=False,
        )

    def base(subject: str, key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name("synthreg test C2PA root"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))  # a little slack for clocks
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )

    root = (
        base("synthreg test C2PA root", root_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign=False), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        base("synthreg test C2PA signer", leaf_key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign=True), critical=True)
        # C2PA 2.1 14.5.1: a signer's EKU must be one it accepts; emailProtection is one of them.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in taken:
        p.unlink()
    write_private(paths.key, leaf_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    paths.chain.write_bytes(leaf.public_bytes(Encoding.PEM))
    paths.root.write_bytes(root.public_bytes(Encoding.PEM))
    return paths


__all__ = [
    "ASSERTION",
    "C2PA_CHUNK",
    "ENV_CHAIN",
    "ENV_KEY",
    "ENV_TRUST",
    "TEST_CHAIN_WARNING",
    "C2paKeygenResult",
    "Credentials",
    "Found",
    "PngSigner",
    "Reader",
    "credential_problems",
    "describe",
    "has_c2pa",
    "keygen_c2pa",
    "load_anchors",
    "load_credentials",
    "manifest_definition",
    "problems_of",
    "sign_png",
    "strip_c2pa",
]
