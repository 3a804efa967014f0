"""Reading the released versions: list them, show one, diff two (through DuckDB, not Python rows)."""

from __future__ import annotations

from pathlib import Path

from registry.core import duck
from registry.core.errors import SynthregError, TrustError
from registry.records.lineage import Change, ReleaseDiff, SampleChanges, SetChanges
from registry.records.release import Release
from registry.store.releases import RELEASES, load_release, release_folder, versions
from registry.trust.admission import Admission, ReleaseStatus, admission
from registry.trust.root import Trust, load_trust


def list_releases(ws: Path) -> dict[str, list[str]]:
    """Released versions by dataset, after recovering interrupted operations when nothing else runs."""
    from registry.store.journal import recover_if_idle

    recover_if_idle(ws)
    root = ws / RELEASES
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return {n: v for n in names if (v := versions(ws, n))}


class StatusLine(str):
    """A release's status as `synthreg list` prints it (``final``, ``solo``, ``candidate, approved by 1 of
    2 (...)``, ``UNTRUSTED: ...``, ``INVALID: ...``; ``, withdrawn`` added), carrying the typed state
    (``ReleaseStatus``) and whether it is withdrawn, so no caller parses the prose."""

    state: ReleaseStatus
    withdrawn: bool

    def __new__(cls, state: ReleaseStatus, text: str, withdrawn: bool = False) -> StatusLine:
        line = super().__new__(cls, f"{text}, withdrawn" if withdrawn else text)
        line.state, line.withdrawn = state, withdrawn
        return line


def release_status(ws: Path, name: str, version: str, trust: Trust | str | None = None) -> StatusLine:
    """``final``, ``solo``, ``candidate``, or what is wrong (``UNTRUSTED: ...``, ``INVALID: ...``);
    with ``withdrawn`` added when a withdrawal is recorded. Checks signatures and binding, not shards
    (``registry.trust.admission``). Under a versioned root, a final release names the root version it
    met: ``final, root v2``. ``trust`` may be why no root could be loaded (a str): the status is then
    ``UNCHECKED: ...`` (issue 20: reading never fails because of the trust root)."""
    return release_state(ws, name, version, trust)[0]


def release_state(
    ws: Path, name: str, version: str, trust: Trust | str | None = None
) -> tuple[StatusLine, Admission | None]:
    """``release_status`` and the ``Admission`` it was read from (None when the signed files could not
    even be read, or no root could be loaded), for a reader that also shows who signed (the catalog
    site) without checking twice."""
    if trust is None:
        trust = reading_trust(ws)
    if isinstance(trust, str):
        return StatusLine(ReleaseStatus.UNCHECKED, f"UNCHECKED: {trust}"), None
    try:
        a = admission(ws, name, version, trust)
        withdrawn = a.withdrawal is not None  # a damaged withdrawal record makes the release INVALID
    except (SynthregError, ValueError) as e:
        return StatusLine(ReleaseStatus.INVALID, f"INVALID: {e}"), None
    state = a.status
    if state is ReleaseStatus.UNTRUSTED:
        return StatusLine(state, f"UNTRUSTED: {a.approval.untrusted[0].why_untrusted}"), a
    if state is ReleaseStatus.INVALID:
        return StatusLine(state, f"INVALID: {a.problems[0]}"), a
    text = state.value if state is not ReleaseStatus.CANDIDATE else f"candidate, {a.approval.summary()}"
    if state is not ReleaseStatus.CANDIDATE and a.approval.root_version is not None:
        text += f", root v{a.approval.root_version}"
    return StatusLine(state, text, withdrawn=withdrawn), a


def reading_trust(ws: Path, trust_file: Path | str | None = None) -> Trust | str:
    """The trust root for a reader (list, show): loaded without refusing unreachable thresholds, or,
    when it cannot be loaded at all, why (a str): a reader shows that instead of failing (issue 20)."""
    try:
        return load_trust(ws, trust_file, strict=False)
    except TrustError as e:
        return str(e)


def list_status(ws: Path, trust_file: Path | str | None = None) -> dict[str, list[tuple[str, StatusLine]]]:
    """Every version of every dataset with its status (see ``release_status``); never fails because of
    the trust root's contents: without a usable root each status is ``UNCHECKED: why``."""
    found = list_releases(ws)
    trust = reading_trust(ws, trust_file) if found else None
    return {n: [(v, release_status(ws, n, v, trust)) for v in vs] for n, vs in found.items()}


def diff(ws: Path, a: str, b: str) -> ReleaseDiff:
    """Samples added and removed, counts per identity, changed generators, sources and policy results."""

    ra, rb = load_release(ws, a), load_release(ws, b)
    ma, mb = (_manifest(ws, r) for r in (ra, rb))
    con = duck.connect()
    con.execute(f"CREATE VIEW a AS SELECT * FROM read_parquet('{_sql(ma)}')")
    con.execute(f"CREATE VIEW b AS SELECT * FROM read_parquet('{_sql(mb)}')")
    added = con.execute("SELECT count(*) FROM b ANTI JOIN a USING (sample_id)").fetchall()[0][0]
    removed = con.execute("SELECT count(*) FROM a ANTI JOIN b USING (sample_id)").fetchall()[0][0]
    sample_added = [
        r[0]
        for r in con.execute(
            "SELECT sample_id FROM b ANTI JOIN a USING (sample_id) ORDER BY sample_id LIMIT 20"
        ).fetchall()
    ]
    sample_removed = [
        r[0]
        for r in con.execute(
            "SELECT sample_id FROM a ANTI JOIN b USING (sample_id) ORDER BY sample_id LIMIT 20"
        ).fetchall()
    ]
    identities = sorted(set(ra.counts.per_identity) | set(rb.counts.per_identity))
    per_identity = {
        i: Change(
            a=ra.counts.per_identity.get(i, {}).get("accepted", 0),
            b=rb.counts.per_identity.get(i, {}).get("accepted", 0),
        )
        for i in identities
    }
    gen = lambda r: {(g.name, g.weights_digest, g.licence) for g in r.generators}  # noqa: E731
    src = lambda r: {(s.name, s.version, s.digest, s.licence, s.status) for s in r.sources}  # noqa: E731
    policy = {
        rule: Change(a=ra.policy_results.get(rule), b=rb.policy_results.get(rule))
        for rule in sorted(set(ra.policy_results) | set(rb.policy_results))
        if ra.policy_results.get(rule) != rb.policy_results.get(rule)
    }
    return ReleaseDiff(
        a=f"{ra.name}@{ra.version}",
        b=f"{rb.name}@{rb.version}",
        samples=SampleChanges(
            added=added, removed=removed, first_added=sample_added, first_removed=sample_removed
        ),
        accepted_per_identity={i: c for i, c in per_identity.items() if c.a != c.b},
        generators=SetChanges(
            added=sorted(map(list, gen(rb) - gen(ra))), removed=sorted(map(list, gen(ra) - gen(rb)))
        ),
        sources=SetChanges(
            added=sorted(map(str, src(rb) - src(ra))), removed=sorted(map(str, src(ra) - src(rb)))
        ),
        policy=policy,
    )


def _manifest(ws: Path, r: Release) -> Path:
    from registry.core.errors import ReleaseError

    path = release_folder(ws, r.name, r.version, "data", "manifest.parquet")
    if not path.is_file():
        raise ReleaseError(f"{path} is missing; run `dvc checkout` (or `dvc pull`) to restore it")
    return path


def _sql(path: Path) -> str:
    return str(path).replace("'", "''")


__all__ = [
    "StatusLine",
    "diff",
    "list_releases",
    "list_status",
    "reading_trust",
    "release_state",
    "release_status",
]
