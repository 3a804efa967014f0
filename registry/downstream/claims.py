"""Whether a run's claim to have trained on a dataset version matches a signed record (issue 24).

An MLflow run is written by whoever can reach the tracking store: a run that merely logs
``digits@1.0.0`` with the release's digest claims to have trained on it, and nothing in MLflow is
signed. So every trace, impact and ``models`` row says how far the claim is backed:

``signed``
    synthreg's own ``train`` or ``log_dataset`` recorded, in the audit log, that this run logged this
    input with this manifest sha256, the sha256 is the release record's, and a signed audit checkpoint
    (in a release sign-off, withdrawal or waiver, verified against the trust root) covers that event on
    an intact chain. That proves synthreg logged the input for that run id at that time; it does not
    prove what the training code then read.
``recorded``
    the audit event is there on an intact chain, but no signed checkpoint covers it yet (it is later
    than the last one, or no trust root is configured): a log rewrite could have added it.
``unsigned``
    only the run's MLflow record says so (no matching audit event, the log does not verify, or the
    sha256 differs from the release's).

What was checked is said in words (``ClaimCheck.why``). The release record's own signature is not
checked here: ``synthreg verify`` does that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from registry.records.lineage import ClaimCheck

KINDS = ("train", "log-dataset")


@dataclass
class Claims:
    """The audit log's record of which runs synthreg itself logged which inputs for."""

    events: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)  # (event hash, sha)
    covered: set[str] = field(default_factory=set)  # event hashes a verified signed checkpoint covers
    problem: str | None = None  # why no event counts (the log does not verify, ...)
    checkpoint_note: str = ""

    def check(self, run_id: str | None, name: str, manifest_sha256: str | None) -> ClaimCheck:
        """The claim that run ``run_id`` trained on input ``name`` (NAME@X.Y.Z or NAME@working) whose
        manifest sha256 should be ``manifest_sha256``."""
        if self.problem:
            return ClaimCheck(status="unsigned", why=f"only the MLflow run says so: {self.problem}")
        recorded = self.events.get((run_id or "", name), [])
        if not recorded:
            return ClaimCheck(
                status="unsigned",
                why="only the MLflow run says so: no train or log-dataset event for this run and input "
                "in the audit log (it was not logged by synthreg's train or log_dataset)",
            )
        same = [h for h, sha in recorded if manifest_sha256 and sha == manifest_sha256]
        if not same:
            return ClaimCheck(
                status="unsigned",
                why="only the MLflow run says so: the audit log records this run and input with another "
                "manifest sha256 than the release's",
            )
        signed = [h for h in same if h in self.covered]
        if signed:
            return ClaimCheck(
                status="signed",
                why=f"audit event {signed[0][:12]} (synthreg's own train/log_dataset) records this run and "
                "input with the release's manifest sha256, covered by a signed checkpoint; this shows "
                "synthreg logged the input for the run, not what the training code read",
            )
        return ClaimCheck(
            status="recorded",
            why=f"audit event {same[0][:12]} records this run and input with the release's manifest sha256, "
            f"but no signed checkpoint covers it yet ({self.checkpoint_note})",
        )


def load(ws: Path) -> Claims:
    """The audit log's train and log-dataset events, and how far signed checkpoints cover them."""
    from registry.core.errors import SynthregError
    from registry.store import audit

    try:
        problems = audit.verify(ws)
        events = audit.read(ws) if not problems else []
    except (SynthregError, OSError, ValueError) as err:
        return Claims(problem=f"the audit log cannot be read ({err})")
    if problems:
        return Claims(problem=f"the audit log does not verify ({problems[0]})")
    out = Claims()
    for e in events:
        if e.kind not in KINDS:
            continue
        run_id, sha = e.details.get("run_id"), e.details.get("manifest_sha256")
        name = e.details.get("dataset") if e.kind == "train" else e.subject
        if isinstance(run_id, str) and isinstance(name, str) and isinstance(sha, str):
            out.events.setdefault((run_id, name), []).append((e.hash, sha))
    out.covered, out.checkpoint_note = _covered(ws)
    return out


def _covered(ws: Path) -> tuple[set[str], str]:
    """(the events verified signed checkpoints cover, in the audit DAG; a note on why none when empty)."""
    from registry.core.errors import SynthregError
    from registry.store import audit
    from registry.trust.checkpoints import verify_log
    from registry.trust.root import load_trust

    try:
        trust = load_trust(ws, strict=False)
    except SynthregError as e:
        return set(), f"no trust root to check checkpoints against: {str(e)[:160]}"
    try:
        checked = verify_log(ws, trust)
        if checked.problems:
            return set(), f"the signed checkpoints do not match the log: {checked.problems[0]}"
        from registry.trust.checkpoints import signed_checkpoints

        heads = [h for cp, _ in signed_checkpoints(ws, trust) for h in cp.head_hashes]
        covered = audit.load(ws).closure(heads)
    except (SynthregError, OSError, ValueError) as e:
        return set(), f"the signed checkpoints cannot be read: {str(e)[:160]}"
    if not heads:
        return set(), "no signed record holds a checkpoint"
    return covered, f"{checked.uncovered} event(s) are not covered by a signed checkpoint yet"
