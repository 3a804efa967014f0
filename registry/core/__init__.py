"""The bottom layer: what every other layer may use, and which imports nothing of synthreg's.

errors (the error tree and exit codes), fsio (atomic writes), digests, yamlio (bounded YAML), names
(safe names and how a value is shown), workspace (paths inside it), locks, crash (saved tracebacks),
vcs (the only module that starts git or dvc).

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "crash",
    "digests",
    "errors",
    "fsio",
    "locks",
    "names",
    "vcs",
    "workspace",
    "yamlio",
]
