"""Who may sign what, and whether a release may be read: signing (DSSE, keys), root (the pinned trust
root), rotation (versioned roots: each change signed by the version before), approvals (sign-offs and
thresholds, pure), withdrawals and waivers (signed records, read and checked), credentials (C2PA),
signers (key URIs: file, envvar, pkcs11), gitsign (SSH-signed release tags, allowed_signers), admission
(the one check a reader makes before serving a release).

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "approvals",
    "checkpoints",
    "credentials",
    "gitsign",
    "root",
    "rotation",
    "signers",
    "signing",
    "waivers",
    "withdrawals",
]
