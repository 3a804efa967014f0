"""``synthreg doctor``: what interrupted or hand-made publishing left, and its repair.

    doctor(ws)               # -> DoctorReport: unfinished operations, stale temporary folders, version
                             #    folders untracked in git or without tag or audit event, tags without
                             #    folder, withdrawn/ tags whose withdrawal record is gone
    doctor(ws, repair=True)  # finish or roll back unfinished operations (registry.store.journal), remove
                             # stale temporary folders, finish a version folder no journal explains if it
                             # verifies

A folder that does not verify, or names another version, and a tag without its folder are reported with
what to do, never changed: deciding about them needs a person.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from registry.core import vcs
from registry.core.errors import SynthregError
from registry.records.signed import WITHDRAWAL
from registry.store.journal import (
    RELEASES,
    entry_path,
    lock,
    pending,
    recover_one,
    remove_temporary,
    stale_temporaries,
)


@dataclass
class Finding:
    kind: str  # journal, temporary, untracked, untagged, no-audit-event, tag-without-folder,
    # withdrawal-without-record
    what: str
    repaired: bool = False
    hint: str = ""


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def unrepaired(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]

    def to_json(self) -> dict:
        return {
            "ok": not self.unrepaired,
            "findings": [f.__dict__ for f in self.findings],
        }


def doctor(ws: Path, repair: bool = False) -> DoctorReport:
    """Leftovers of interrupted or hand-made operations; with ``repair``, recover what can be."""
    from registry.store import audit

    report = DoctorReport()
    if not (ws / ".dvc").is_dir():
        return report  # not a DVC workspace: nothing was ever published here
    with lock(ws):
        for op, subject in pending(ws):
            f = Finding("journal", f"unfinished {op} of {subject}")
            if repair:
                try:
                    f.repaired, f.hint = True, recover_one(ws, op, subject).outcome
                except SynthregError as e:
                    f.hint = str(e)
            report.findings.append(f)
        for p in stale_temporaries(ws):
            f = Finding("temporary", f"{p.relative_to(ws)} (no unfinished operation uses it)")
            if repair:
                remove_temporary(p)
                f.repaired = True
            report.findings.append(f)
        if not (ws / ".git").exists():
            return report
        listed = vcs.git(ws, "tag", "--list", "*@v*").split()
        tags = {t for t in listed if "/" not in t}  # not withdrawn/NAME@vX.Y.Z: it marks a withdrawal
        withdrawn = sorted(t for t in listed if t.startswith("withdrawn/"))
        tracked = (
            set(vcs.git(ws, "ls-files", "--", RELEASES.as_posix()).splitlines())
            if vcs.has_commits(ws)
            else set()
        )
        events = {(e.kind, e.subject) for e in audit.read(ws)}
        hidden = set(pending(ws))
        seen_tags = set()
        root = ws / RELEASES
        for dataset in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            for folder in sorted(p for p in dataset.iterdir() if p.is_dir() and not p.name.startswith(".")):
                subject = f"{dataset.name}@{folder.name}"
                if not (folder / "release.json").is_file() or any(s == subject for _, s in hidden):
                    continue
                tag = f"{dataset.name}@v{folder.name}"
                seen_tags.add(tag)
                rel = folder.relative_to(ws).as_posix()
                found = []
                if f"{rel}/release.json" not in tracked:
                    found.append(Finding("untracked", f"{rel} is not committed to git"))
                if tag not in tags and _is_final(ws, dataset.name, folder.name):  # a candidate has none
                    found.append(Finding("untagged", f"{subject} has no tag {tag}"))
                if ("release", subject) not in events and ("derive", subject) not in events:
                    found.append(Finding("no-audit-event", f"{subject} has no release or derive audit event"))
                if found and repair:
                    _finish_orphan(ws, dataset.name, folder.name, found)
                elif found:
                    hint = f"`synthreg doctor --repair` finishes it if it verifies; else remove {rel}"
                    for f in found:
                        f.hint = hint
                report.findings += found
        for tag in sorted(tags - seen_tags):
            name, _, version = tag.partition("@v")
            if (ws / RELEASES / name / version / "release.json").is_file():
                continue
            report.findings.append(
                Finding(
                    "tag-without-folder",
                    f"tag {tag} has no releases/{name}/{version}",
                    hint=f"restore the folder (`git checkout {tag} -- releases/{name}/{version}`)",
                )
            )
        report.findings += _lost_withdrawals(ws, withdrawn)
    return report


def _lost_withdrawals(ws: Path, withdrawn: list[str]) -> list[Finding]:
    """A ``withdrawn/`` tag whose release has no withdrawal record: it still counts, untrusted (issue
    24), and a person restores the record."""
    found = []
    for tag in withdrawn:
        name, _, version = tag.removeprefix("withdrawn/").partition("@v")
        folder = ws / RELEASES / name / version
        if not (folder / WITHDRAWAL).is_file() and not (folder / "withdrawal.json").is_file():
            found.append(
                Finding(
                    "withdrawal-without-record",
                    f"tag {tag} marks {name}@{version} withdrawn, but its withdrawal record is gone",
                    hint=f"restore it from git (`git checkout {tag} -- releases/{name}/{version}`)",
                )
            )
    return found


def _is_final(ws: Path, name: str, version: str) -> bool:
    """Whether the signed state says ``name@version`` is final (its sign-offs meet the trust root's
    thresholds), so it should be tagged. A candidate waiting for approvals is untagged by design (issue 24:
    doctor reported one as unfinished and `--repair` tagged it). When the state cannot be read (no trust
    root, a damaged envelope), the folder is reported as before."""
    from registry.trust.admission import ReleaseStatus, admission
    from registry.trust.root import load_trust

    try:
        state = admission(ws, name, version, lambda: load_trust(ws, strict=False)).status
    except (SynthregError, OSError, ValueError):
        return True
    return state is not ReleaseStatus.CANDIDATE


def _finish_orphan(ws: Path, name: str, version: str, found: list[Finding]) -> None:
    """Finish a version folder no journal explains, if it verifies; otherwise leave it as it was."""
    from registry.releases.publish import adopt

    subject = f"{name}@{version}"
    try:
        op = adopt(ws, name, version)
        try:
            recover_one(ws, op, subject)
        except BaseException:
            entry_path(ws, op, subject).unlink(missing_ok=True)  # as it was: reported, not hidden
            raise
    except SynthregError as e:
        for f in found:
            f.hint = str(e)
        return
    for f in found:
        f.repaired, f.hint = True, "finished"
