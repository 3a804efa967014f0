"""The writers of ``releases/``, one module per verb (release, derive, approve, withdraw, waive, doctor,
remote for pull and push), publish (the journalled transaction they share), and the readers that
check what was written: verify, loader, catalog. inputs: what a release depends on in git;
report: what the HTML report of a version shows, gathered from the workspace.

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "approve",
    "catalog",
    "derive",
    "doctor",
    "inputs",
    "loader",
    "publish",
    "release",
    "remote",
    "report",
    "verify",
    "waive",
    "withdraw",
]
