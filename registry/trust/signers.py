"""Where a private key lives, named by a URI, behind securesystemslib's ``Signer`` interface (issue 20).

    open_signer("/home/me/.config/synthreg/release.key")        # a PEM file (also ``file:PATH``)
    open_signer("envvar:RELEASE_KEY")                           # the PEM text in $RELEASE_KEY (CI secrets)
    open_signer("pkcs11:token=team;object=alice")               # an ed25519 key in a PKCS#11 token
    token_keygen("pkcs11:token=team;object=alice")              # -> its public key; the private half stays

Each form is dispatched by ``Signer.from_priv_key_uri`` through ``SIGNER_FOR_URI_SCHEME``: ``file2`` is
securesystemslib's own ``CryptoSigner``; ``envvar`` and ``pkcs11`` are registered here.

Token keys are ed25519 (PKCS#11 3.0 ``CKM_EC_EDWARDS_KEY_PAIR_GEN`` / ``CKM_EDDSA``, which SoftHSM2 2.6
offers), so the trust root, DSSE envelopes and git's SSH signatures treat them exactly as file keys.
securesystemslib's own ``HSMSigner`` (``hsm:``) signs ECDSA P-256/P-384 only, and the trust root holds
ed25519 keys only, so it is not used: :class:`Pkcs11Signer` speaks PKCS#11 through python-pkcs11, the
library ``HSMSigner`` itself uses.

The PKCS#11 URI follows RFC 7512::

    pkcs11:token=<token label>;object=<key label>[;id=<%-encoded id>]
           [?module-path=<PKCS#11 module>][&pin-source=env:<VARIABLE>]

``module-path`` defaults to ``$SYNTHREG_PKCS11_MODULE``, then ``$PYKCS11LIB`` (securesystemslib's), then
SoftHSM2's ``/usr/lib/softhsm/libsofthsm2.so``. The user PIN is read from the environment variable that
``pin-source=env:NAME`` names (default ``$SYNTHREG_PKCS11_PIN``), never from the URI itself: URIs end up
in shell history and logs, so ``pin-value`` is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from registry.core.errors import SigningError

ENV_MODULE, ENV_PIN = "SYNTHREG_PKCS11_MODULE", "SYNTHREG_PKCS11_PIN"
SOFTHSM2_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
ED25519_OID = "1.3.101.112"  # RFC 8410: the curve named in a PKCS#11 3.0 EC_EDWARDS key's CKA_EC_PARAMS
# securesystemslib's other schemes need a public key from elsewhere or sign with other key types.
FOREIGN_SCHEMES = ("file2", "hsm", "gcpkms", "awskms", "azurekms", "hv", "gnupg", "tkey", "sigstore")
URI_HELP = (
    "a PEM file path (or file:PATH), envvar:NAME (the PEM in $NAME) or "
    "pkcs11:token=LABEL;object=KEY[?module-path=...&pin-source=env:VAR]"
)


def scheme_of(location: str) -> str:
    """``file``, ``envvar`` or ``pkcs11`` for a key location (a bare path is ``file``); another
    securesystemslib scheme is refused, naming the ones synthreg signs with."""
    head, sep, _ = location.partition(":")
    if sep and head in ("file", "envvar", "pkcs11"):
        return head
    if sep and head in FOREIGN_SCHEMES:
        raise SigningError(
            f"key URI scheme {head}: is not one synthreg signs with (releases are signed with ed25519 "
            f"keys); give {URI_HELP}"
        )
    return "file"


def file_path(location: str) -> Path:
    return Path(location.removeprefix("file:")).expanduser()


def _ed25519_public(raw: bytes):
    """The SSlibKey of a raw 32-byte ed25519 public key, keyid as securesystemslib computes it."""
    from securesystemslib.signer import SSlibKey

    from registry.records.trust import keyid_of

    keyval = {"public": raw.hex()}
    return SSlibKey(keyid_of("ed25519", "ed25519", keyval), "ed25519", "ed25519", keyval)


# --- envvar: ---------------------------------------------------------------------------------------


def _load_pem_ed25519(data: bytes, where: str):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"{where} is not a PEM ed25519 private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(
            f"{where} is a {type(key).__name__.removeprefix('_')} key; releases are signed with ed25519 "
            "keys only (make one with `synthreg keygen`)"
        )
    return key


def _envvar_signer_class():
    from securesystemslib.signer import CryptoSigner

    class EnvVarSigner(CryptoSigner):
        """``envvar:NAME``: a PEM PKCS#8 ed25519 private key held in the environment variable NAME (a CI
        secret), never written to disk by synthreg."""

        SCHEME = "envvar"

        @classmethod
        def from_priv_key_uri(cls, priv_key_uri, public_key, secrets_handler=None):
            name = priv_key_uri.partition(":")[2]
            key = _load_pem_ed25519(os.environ[name].encode(), f"${name}")
            signer = cls(key, public_key)
            return signer

    return EnvVarSigner


def envvar_public(location: str):
    name = location.partition(":")[2]
    if not name or name not in os.environ:
        raise SigningError(
            f"key {location}: environment variable {name or '(none named)'} is not set; export the PEM "
            "private key in it, or give another key"
        )
    from securesystemslib.signer import CryptoSigner

    return CryptoSigner(_load_pem_ed25519(os.environ[name].encode(), f"${name}")).public_key


# --- pkcs11: ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenKey:
    """A parsed ``pkcs11:`` URI."""

    uri: str
    token: str
    label: str | None
    id: bytes | None
    module: Path
    pin_env: str


def parse_pkcs11(uri: str) -> TokenKey:
    """The RFC 7512 URI's token label, key label or id, module and PIN variable; a clear error for
    anything missing or unsafe."""
    parts = urlsplit(uri)
    if parts.scheme != "pkcs11":
        raise SigningError(f"{uri!r} is not a pkcs11: URI")
    attrs: dict[str, bytes] = {}
    for item in filter(None, parts.path.split(";")):
        k, sep, v = item.partition("=")
        if not sep:
            raise SigningError(f"PKCS#11 URI attribute {item!r} has no value (write name=value; RFC 7512)")
        attrs[k] = unquote_to_bytes(v)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "pin-value" in query:
        raise SigningError(
            "a PKCS#11 URI with pin-value puts the PIN in shell history and logs; use "
            f"pin-source=env:VARIABLE (default ${ENV_PIN}) instead"
        )
    unknown = sorted(set(attrs) - {"token", "object", "id", "type"}) + sorted(
        set(query) - {"module-path", "pin-source"}
    )
    if unknown:
        raise SigningError(f"PKCS#11 URI {uri!r} has attributes synthreg does not use: {', '.join(unknown)}")
    if "token" not in attrs or not ("object" in attrs or "id" in attrs):
        raise SigningError(
            f"PKCS#11 URI {uri!r} must name the token and the key: pkcs11:token=LABEL;object=KEY_LABEL"
        )
    pin_source = query.get("pin-source", f"env:{ENV_PIN}")
    if not pin_source.startswith("env:") or not pin_source[4:]:
        raise SigningError(f"pin-source={pin_source!r}: synthreg reads the PIN from env:VARIABLE only")
    default = os.environ.get(ENV_MODULE) or os.environ.get("PYKCS11LIB") or str(SOFTHSM2_MODULE)
    module = Path(query.get("module-path") or default)
    if not module.is_file():
        raise SigningError(
            f"PKCS#11 module {module} does not exist; install the token's module (SoftHSM2: "
            f"apt-get install softhsm2) and name it with module-path= or ${ENV_MODULE}"
        )
    return TokenKey(
        uri,
        attrs["token"].decode(),
        attrs["object"].decode() if "object" in attrs else None,
        attrs.get("id"),
        module,
        pin_source[4:],
    )


_LIBS: dict[Path, Any] = {}  # one C_Initialize per module and process (PKCS#11 allows no second)


def _token(key: TokenKey):
    import pkcs11
    from pkcs11.exceptions import NoSuchToken

    lib = _LIBS.get(key.module)
    if lib is None:
        lib = _LIBS[key.module] = pkcs11.lib(str(key.module))
    try:
        return lib.get_token(token_label=key.token)
    except NoSuchToken:
        raise SigningError(
            f"no PKCS#11 token labelled {key.token!r} in {key.module}; list them with "
            "`softhsm2-util --show-slots` (SoftHSM2) or the token's own tool"
        ) from None


def _pin(key: TokenKey, secrets_handler=None) -> str:
    pin = os.environ.get(key.pin_env)
    if pin is None and secrets_handler is not None:
        pin = secrets_handler("pin")
    if not pin:
        raise SigningError(f"no PIN for PKCS#11 token {key.token!r}: set ${key.pin_env} to the user PIN")
    return pin


def _session(key: TokenKey, secrets_handler=None, rw: bool = False):
    from pkcs11.exceptions import PinIncorrect

    try:
        return _token(key).open(rw=rw, user_pin=_pin(key, secrets_handler))
    except PinIncorrect:
        raise SigningError(f"the PIN in ${key.pin_env} is wrong for PKCS#11 token {key.token!r}") from None


def _find(session, key: TokenKey, cls):
    from pkcs11 import Attribute, KeyType

    template: dict = {Attribute.CLASS: cls, Attribute.KEY_TYPE: KeyType.EC_EDWARDS}
    if key.label is not None:
        template[Attribute.LABEL] = key.label
    if key.id is not None:
        template[Attribute.ID] = key.id
    return list(session.get_objects(template))


def _one(session, key: TokenKey, cls, what: str):
    found = _find(session, key, cls)
    if len(found) != 1:
        how = "none" if not found else f"{len(found)} (name it by id= as well)"
        raise SigningError(
            f"PKCS#11 token {key.token!r} holds {how} ed25519 {what} matching {key.uri}; create one with "
            "`synthreg keygen --key URI`"
        )
    return found[0]


def _raw_point(point: bytes) -> bytes:
    """CKA_EC_POINT of an Edwards key: the 32 key bytes, DER-wrapped in an OCTET STRING (PKCS#11 3.0
    2.3.5) or bare (some tokens)."""
    if len(point) == 34 and point[:2] == b"\x04\x20":
        return point[2:]
    if len(point) == 32:
        return point
    raise SigningError(f"unexpected ed25519 public key encoding in the token ({len(point)} bytes)")


def token_public(location: str, secrets_handler=None):
    """The SSlibKey of the token key that ``location`` names (its public object, read from the token)."""
    from pkcs11 import Attribute, ObjectClass

    key = parse_pkcs11(location)
    with _session(key, secrets_handler) as s:
        _one(s, key, ObjectClass.PRIVATE_KEY, "private key")
        pub = _one(s, key, ObjectClass.PUBLIC_KEY, "public key")
        return _ed25519_public(_raw_point(pub[Attribute.EC_POINT]))


def _pkcs11_signer_class():
    from securesystemslib.signer import Signature, Signer

    class Pkcs11Signer(Signer):
        """Signs with an ed25519 key that never leaves its PKCS#11 token (CKM_EDDSA, pure ed25519, so
        the signature is the one a file key would make). One logged-in session per signature."""

        SCHEME = "pkcs11"

        def __init__(self, key: TokenKey, public_key, secrets_handler=None) -> None:
            self.key, self._public_key, self.secrets_handler = key, public_key, secrets_handler

        @property
        def public_key(self):
            return self._public_key

        @classmethod
        def from_priv_key_uri(cls, priv_key_uri, public_key, secrets_handler=None):
            if public_key.keytype != "ed25519":
                raise SigningError(f"{priv_key_uri}: token keys are ed25519, not {public_key.keytype}")
            return cls(parse_pkcs11(priv_key_uri), public_key, secrets_handler)

        def sign(self, payload: bytes) -> Signature:
            from pkcs11 import Mechanism, ObjectClass

            with _session(self.key, self.secrets_handler) as s:
                priv = _one(s, self.key, ObjectClass.PRIVATE_KEY, "private key")
                sig = priv.sign(payload, mechanism=Mechanism.EDDSA)
            return Signature(self.public_key.keyid, bytes(sig).hex())

    return Pkcs11Signer


def token_keygen(location: str):
    """A new ed25519 key pair in the token ``location`` names: the private half TOKEN, PRIVATE,
    SENSITIVE and not EXTRACTABLE (checked after generation: a token that ignored the template loses
    the key again), the public half readable. Refused when the label or id is taken. Its SSlibKey."""
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.util.ec import encode_named_curve_parameters

    key = parse_pkcs11(location)
    if key.label is None:
        raise SigningError(f"give the new key a label: {location};object=NAME")
    with _session(key, rw=True) as s:
        taken = [o for c in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY) for o in _find(s, key, c)]
        if taken:
            raise SigningError(
                f"PKCS#11 token {key.token!r} holds a key labelled {key.label!r} already; a token key is "
                "never replaced by synthreg: choose another object= label"
            )
        key_id = key.id or os.urandom(8)
        pub, priv = s.generate_keypair(
            KeyType.EC_EDWARDS,
            mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            store=True,
            label=key.label,
            id=key_id,
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)},
            private_template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.PRIVATE: True,
                Attribute.SIGN: True,
            },
        )
        if not priv[Attribute.SENSITIVE] or priv[Attribute.EXTRACTABLE]:
            priv.destroy()
            pub.destroy()
            raise SigningError(f"token {key.token!r} made the key extractable; it was destroyed again")
        return _ed25519_public(_raw_point(pub[Attribute.EC_POINT]))


def register() -> None:
    """Put the ``envvar`` and ``pkcs11`` signers in securesystemslib's ``SIGNER_FOR_URI_SCHEME``."""
    from securesystemslib.signer import SIGNER_FOR_URI_SCHEME

    SIGNER_FOR_URI_SCHEME.setdefault("envvar", _envvar_signer_class())
    SIGNER_FOR_URI_SCHEME.setdefault("pkcs11", _pkcs11_signer_class())


def open_signer(location: str, secrets_handler=None):
    """The Signer for a key location (path, ``file:``, ``envvar:``, ``pkcs11:``), by
    ``Signer.from_priv_key_uri``; an ed25519 key, or a SigningError saying what is wrong."""
    from securesystemslib.signer import CryptoSigner, Signer

    register()
    scheme = scheme_of(location)
    if scheme == "file":
        path = file_path(location)
        if not path.is_file():
            raise SigningError(
                f"no signing key at {path}; create one with `synthreg keygen` or set SYNTHREG_SIGNING_KEY"
            )
        public = CryptoSigner(_load_pem_ed25519(path.read_bytes(), str(path))).public_key
        return Signer.from_priv_key_uri(f"file2:{path}", public, secrets_handler)
    if scheme == "envvar":
        return Signer.from_priv_key_uri(location, envvar_public(location), secrets_handler)
    try:
        return Signer.from_priv_key_uri(location, token_public(location, secrets_handler), secrets_handler)
    except ImportError as e:
        raise SigningError(
            f"keys in a PKCS#11 token need python-pkcs11 ({e}); install it: pip install 'synthreg[pkcs11]'"
        ) from None


__all__ = [
    "ENV_MODULE",
    "ENV_PIN",
    "URI_HELP",
    "TokenKey",
    "file_path",
    "open_signer",
    "parse_pkcs11",
    "register",
    "scheme_of",
    "token_keygen",
    "token_public",
]
