"""Every error synthreg raises on purpose. Only the CLI turns them into exit codes.

SynthregError                  base: a message a person can act on
├── ConfigError                a recipe, params file or other YAML input is malformed
│   └── RecipeError            a recipe is malformed or asks for something impossible
├── WorkspaceError             a path is missing, unreadable, or escapes the workspace
│   └── FolderBusyError        another generate or filter run is writing into the same folder
├── GeneratorError             a generator cannot be loaded or cannot serve a request
├── ManifestError              a manifest or shard is missing, corrupted or inconsistent
├── ReproduceError             a sample cannot be regenerated from its record
├── PolicyError                a policy pack, licence base or waiver file is malformed, or validate
│                              cannot run (a failing rule is not an error: it is in the report, and
│                              the CLI exits with POLICY_FAILED_EXIT)
├── AuditError                 the audit log cannot be read or extended (damaged, edited)
├── ReleaseError               a release is refused (gate, version, workspace) or cannot be read
├── SigningError               no usable signing key, or a signature that does not verify
│   ├── TrustError             the trust root is missing, malformed, inside the workspace, or a key
│   │                          may not sign what it is asked to (unknown, retired, lacks the role)
│   ├── UntrustedSignerError   a record carries a signature by a key the trust root does not trust
│   │                          (unknown, revoked, wrong role, outside its window): exit UNTRUSTED_EXIT
│   └── CredentialsError       C2PA content credentials cannot be made or read: no key or chain given,
│                              a missing or malformed certificate or key, c2pa-python not installed
├── RemoteError                no DVC remote configured, or one that is unreachable, refuses the
│                              credentials, or lacks or damages an object a release needs
└── TrackingError              MLflow cannot be reached, or a run, model or version does not exist

Exit codes: 0 done; 1 a SynthregError (bad input, refused); 2 a usage error (typer); 3 a failing policy
(POLICY_FAILED_EXIT); 5 a signer the pinned trust root does not trust (UNTRUSTED_EXIT); for `synthreg
verify` of an intact release, 6 a candidate (CANDIDATE_EXIT), 7 a withdrawn one (WITHDRAWN_EXIT) and, with
`--require current`, 8 a release final under an older trust root version only (OLDER_ROOT_EXIT); 70 an
internal error (INTERNAL_ERROR_EXIT): any other exception, reported as one line with the path of its
saved traceback (registry/core/crash.py), never as a traceback.
"""

from __future__ import annotations

# `synthreg validate` exits with this when an error rule fails without a waiver: distinct from 1 (an
# input error) and 2 (a usage error), so `dvc repro` and CI can tell a policy failure apart.
POLICY_FAILED_EXIT = 3
# Any exception that is not a SynthregError: a bug. EX_SOFTWARE in BSD sysexits.h.
INTERNAL_ERROR_EXIT = 70
# `synthreg verify` (and the loader, train, log --verify) exit with this when a signature comes from a key
# the pinned trust root does not trust or has revoked: a forgery or a compromise, not a damaged file.
UNTRUSTED_EXIT = 5
# `synthreg verify` of a release whose signatures and bytes check out but that a CI gate must not take as a
# final release: a candidate (approvals missing), or a withdrawn release. `--require signed` exits 0 for them.
CANDIDATE_EXIT = 6
WITHDRAWN_EXIT = 7
# `synthreg verify --require current` of an intact release that is final under an earlier version of a
# versioned trust root but short of the current root's thresholds (issue 20: thresholds are not
# retroactive, so `--require final` accepts it; a gate that wants today's thresholds asks for current).
OLDER_ROOT_EXIT = 8


class SynthregError(Exception):
    """Base class: the message names the bad value and says what to do next."""

    exit_code = 1


class ConfigError(SynthregError):
    pass


class RecipeError(ConfigError):
    pass


class WorkspaceError(SynthregError):
    pass


class FolderBusyError(WorkspaceError):
    pass


class GeneratorError(SynthregError):
    pass


class ManifestError(SynthregError):
    pass


class ReproduceError(SynthregError):
    pass


class PolicyError(SynthregError):
    pass


class ReleaseError(SynthregError):
    pass


class SigningError(SynthregError):
    pass


class TrustError(SigningError):
    pass


class UntrustedSignerError(SigningError):
    exit_code = UNTRUSTED_EXIT


class CredentialsError(SigningError):
    pass


class RemoteError(SynthregError):
    pass


class AuditError(SynthregError):
    pass


class TrackingError(SynthregError):
    pass
