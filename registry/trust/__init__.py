"""Who may sign what, and whether a release may be read: signing (DSSE, keys), root (the pinned trust
root), approvals (sign-offs and thresholds, pure), withdrawals and waivers (signed records, read and
checked), credentials (C2PA), admission (the one check a reader makes before serving a release).

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "approvals",
    "checkpoints",
    "credentials",
    "root",
    "signing",
    "waivers",
    "withdrawals",
]
