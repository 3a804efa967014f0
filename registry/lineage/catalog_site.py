"""The catalog: a static, self-contained site of every release and every registered model, with an
offline search by sample id, generator digest and prompt text (``synthreg catalog --out DIR``).

    write_catalog(ws, Path("catalog"))   # -> CatalogSummary; the whole site, or nothing

What it shows, per version: the status `synthreg list` gives (``registry.releases.catalog``, from the one
admission check), who signed in which role with which key, the withdrawal, the policy status as the HTML
report's banner words it (``worst_status``) and a link to the version's HTML report, rendered now into the
site (``registry.lineage.report.dataset_html``: so a withdrawal since the release shows); the registered
models come from the MLflow store, asked only when one is configured.

The search index (issue 23): sample ids are what grows (1,000,000 rows per release), so they are written
as shards ``index/samples/XXXX.js`` keyed by the low bits of the id's 32-bit FNV-1a hash, with the number
of hex digits chosen so a shard holds about ``SHARD_ROWS`` rows (1M rows: 256 shards of ~4,000 rows,
about 350 KB each); a lookup reads one shard. A row names its release, generator and prompt by number
(the distinct generators are embedded in the search page; the distinct prompts are chunks
``index/prompts/NNNNN.js`` of ``PROMPT_CHUNK``, read in order by a prompt search until 200 rows are
found, and by index when a sample row is shown). The page itself stays a few KB at any size. The files
are JavaScript calling ``synthregShard(name, rows)``, loaded by ``<script src>``: a browser refuses
``fetch()`` of ``file:`` URLs, not scripts. Built with DuckDB straight from the released manifests,
streamed shard by shard, never a million rows in Python lists.

Writing is atomic: the site is built in a temporary folder beside ``out`` and renamed into place; an
existing ``out`` is replaced only when it is a catalog this command wrote (it holds ``MARKER``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.core import duck
from registry.core.errors import ConfigError, SynthregError, WorkspaceError
from registry.exports.catalog_html import (
    CatalogData,
    SignerRow,
    VersionEntry,
    catalog_pages,
    dataset_page_path,
    script_json,
)
from registry.exports.report_html import worst_status
from registry.records.lineage import ModelRow
from registry.releases.catalog import list_releases, reading_trust, release_state
from registry.store.releases import load_release, release_folder
from registry.trust.admission import ReleaseStatus

MARKER = ".synthreg-catalog"
SHARD_ROWS = 4096
PROMPT_CHUNK = 2000
MAX_HEX = 4  # 65,536 sample shards: ~268M rows at SHARD_ROWS each


@dataclass
class CatalogSummary:
    out: Path
    datasets: int
    versions: int
    models: int
    models_note: str
    indexed_rows: int
    not_indexed: list[tuple[str, str]] = field(default_factory=list)


def fnv1a(text: str) -> int:
    """32-bit FNV-1a over the UTF-8 bytes: the search script computes the same to find a shard."""
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def sample_hex(rows: int) -> int:
    """Hex digits of the shard name: the fewest that keep a shard near ``SHARD_ROWS`` rows."""
    k = 1
    while k < MAX_HEX and rows > SHARD_ROWS * 16**k:
        k += 1
    return k if rows else 0


# --- what each version is ------------------------------------------------------------------------------


def _category(line: Any) -> str:
    if line.withdrawn:
        return "withdrawn"
    return {
        ReleaseStatus.SOLO: "final",
        ReleaseStatus.FINAL: "final",
        ReleaseStatus.CANDIDATE: "candidate",
        ReleaseStatus.UNTRUSTED: "untrusted",
        ReleaseStatus.UNCHECKED: "unchecked",
    }.get(line.state, "invalid")


def _entry(ws: Path, name: str, version: str, trust: Any) -> VersionEntry:
    line, adm = release_state(ws, name, version, trust)
    try:
        record = load_release(ws, f"{name}@{version}")
    except SynthregError:
        record = None
    withdrawal = None
    if adm is not None:
        try:
            withdrawal = adm.withdrawal
        except SynthregError:  # a damaged withdrawal: the status line already says INVALID
            withdrawal = None
    policy = ("failed", "release record unreadable") if record is None else worst_status(record)
    if withdrawal is not None:
        policy = ("withdrawn", f"withdrawn; at release: {policy[1]}")
    signers = (
        [
            SignerRow(s.name, s.roles, s.keyid, f"{s.time:%Y-%m-%d %H:%M:%S}", s.trusted, s.why_untrusted)
            for s in adm.approval.signers
        ]
        if adm
        else []
    )
    return VersionEntry(
        name=name,
        version=version,
        status=_category(line),
        status_text=str(line),
        record=record,
        policy=policy,
        withdrawal=withdrawal,
        signers=signers,
        approvals=adm.approval.summary() if adm else "",
    )


def _models(ws: Path) -> tuple[list[ModelRow], str]:
    """Registered models from the MLflow store, or why there are none to show. MLflow is imported only
    when a store is configured."""
    from registry.downstream import tracking

    if "MLFLOW_TRACKING_URI" not in os.environ and not (ws / "mlflow.db").is_file():
        return [], (
            "No MLflow store is configured (no MLFLOW_TRACKING_URI and no mlflow.db in the workspace): "
            "no registered model is listed."
        )
    from registry.downstream.model_index import list_models

    try:
        return list_models(ws), ""
    except Exception as e:  # the site still shows every release, and says what it could not read
        try:
            uri = tracking.shown(tracking.tracking_uri(ws))
        except SynthregError:
            uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        return [], f"The MLflow store {uri} could not be read: {str(e).strip()[:300]}"


# --- the reports -------------------------------------------------------------------------------------


def _reports(ws: Path, site: Path, versions: list[VersionEntry]) -> None:
    """Each version's HTML report as it stands now, into ``reports/NAME/VERSION.html``; when it cannot be
    rendered, the report signed at release is copied, and the page says so."""
    from registry.lineage.report import dataset_html

    for v in versions:
        path = f"reports/{v.name}/{v.version}.html"
        target = site / path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_text(dataset_html(ws, v.ref))
            v.report = path
        except SynthregError as e:
            signed = release_folder(ws, v.name, v.version, "report.html")
            if signed.is_file():
                shutil.copyfile(signed, target)
                v.report, v.report_note = path, f"the report as released (it cannot be made again: {e})"
            else:
                v.report_note = str(e)


# --- the search index --------------------------------------------------------------------------------


def _sql(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _load_rows(con: Any, ws: Path, versions: list[VersionEntry]) -> None:
    import duckdb

    con.execute(
        "CREATE TABLE rows (rel INTEGER, sample_id VARCHAR, decision VARCHAR, identity VARCHAR, "
        "generator_name VARCHAR, weights_digest VARCHAR, generator_licence VARCHAR, prompt VARCHAR, "
        "reason VARCHAR)"
    )
    for i, v in enumerate(versions):
        try:
            manifest = release_folder(ws, v.name, v.version, "data", "manifest.parquet")
        except SynthregError as e:
            v.indexed = str(e)
            continue
        if not manifest.is_file():
            v.indexed = "its manifest is not in this workspace (DVC data): `dvc pull`, then make the catalog"
            continue
        try:
            con.execute(
                f"INSERT INTO rows SELECT {i}, sample_id, decision, identity, generator_name, "
                f"weights_digest, generator_licence, prompt, reason FROM read_parquet({_sql(manifest)})"
            )
        except duckdb.Error as e:
            if (why := duck.out_of_memory(e)) is not None:  # not the manifest's fault
                raise ConfigError(why) from None
            v.indexed = f"its manifest cannot be read ({str(e).splitlines()[0][:200]})"


def _write_js(path: Path, name: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="ascii") as f:
        f.write(f'synthregShard("{name}",[')
        f.write(",\n".join(rows))
        f.write("]);\n")


def _prompts(con: Any, site: Path) -> int:
    con.execute(
        "CREATE TABLE prompts AS SELECT prompt, (row_number() OVER (ORDER BY prompt) - 1)::BIGINT AS pid "
        "FROM (SELECT DISTINCT prompt FROM rows)"
    )
    stats = con.execute(
        "SELECT p.pid, p.prompt, r.rel, r.n, r.examples FROM prompts p "
        "JOIN (SELECT prompt, rel, count(*) AS n, list_slice(list(sample_id ORDER BY sample_id), 1, 3) "
        "AS examples FROM rows GROUP BY ALL) r "
        "USING (prompt) ORDER BY p.pid, r.rel"
    )
    chunks, chunk, current = 0, [], None
    entry: list[Any] = []

    def flush_entry() -> None:
        if entry:
            chunk.append(script_json(entry))

    while batch := stats.fetchmany(10_000):
        for pid, prompt, rel, n, examples in batch:
            if pid != current:
                flush_entry()
                if pid % PROMPT_CHUNK == 0 and chunk:
                    _write_js(site / f"index/prompts/{chunks:05d}.js", f"prompts/{chunks:05d}", chunk)
                    chunks, chunk = chunks + 1, []
                current, entry = pid, [prompt, []]
            entry[1].append([rel, n, list(examples)])
    flush_entry()
    if chunk:
        _write_js(site / f"index/prompts/{chunks:05d}.js", f"prompts/{chunks:05d}", chunk)
        chunks += 1
    return chunks


def _generators(con: Any) -> list[list[Any]]:
    con.execute(
        "CREATE TABLE gens AS SELECT generator_name, weights_digest, generator_licence, "
        "(row_number() OVER (ORDER BY generator_name, weights_digest, generator_licence) - 1)::BIGINT AS gid "
        "FROM (SELECT DISTINCT generator_name, weights_digest, generator_licence FROM rows)"
    )
    out: dict[int, list[Any]] = {}
    for gid, name, digest, licence, rel, n in con.execute(
        "SELECT g.gid, g.generator_name, g.weights_digest, g.generator_licence, r.rel, count(*) FROM rows r "
        "JOIN gens g USING (generator_name, weights_digest, generator_licence) GROUP BY ALL ORDER BY 1, 5"
    ).fetchall():
        out.setdefault(gid, [name, digest, licence, []])[3].append([rel, n])
    return [out[g] for g in sorted(out)]


def _samples(con: Any, site: Path, hexes: int) -> None:
    import duckdb

    mask = (1 << (4 * hexes)) - 1
    con.create_function(
        "fnv_shard", lambda s: fnv1a(s) & mask, [duckdb.sqltype("VARCHAR")], duckdb.sqltype("BIGINT")
    )
    cur = con.execute(
        "SELECT fnv_shard(r.sample_id) AS s, r.sample_id, r.rel, r.decision, r.identity, g.gid, p.pid, "
        "r.reason "
        "FROM rows r JOIN gens g USING (generator_name, weights_digest, generator_licence) "
        "JOIN prompts p USING (prompt) ORDER BY s, r.sample_id, r.rel"
    )
    current: int | None = None
    rows: list[str] = []

    def flush() -> None:
        if rows:
            name = f"samples/{current:0{hexes}x}"
            _write_js(site / f"index/{name}.js", name, rows)

    while batch := cur.fetchmany(10_000):
        for s, *row in batch:
            if s != current:
                flush()
                current, rows = s, []
            rows.append(script_json(row))
    flush()
    for empty in range(mask + 1):  # every shard exists, so a missing file is a damaged site, not "no match"
        name = f"samples/{empty:0{hexes}x}"
        if not (site / f"index/{name}.js").is_file():
            _write_js(site / f"index/{name}.js", name, [])


def build_index(ws: Path, site: Path, versions: list[VersionEntry]) -> dict[str, Any]:
    """Write ``index/`` under ``site`` from every version's released manifest; return the search page's
    metadata (shard layout, releases, generators, versions not indexed and why)."""

    con = duck.connect()
    try:
        _load_rows(con, ws, versions)
        total = con.execute("SELECT count(*) FROM rows").fetchall()[0][0]
        hexes = sample_hex(total)
        chunks = _prompts(con, site)
        generators = _generators(con)
        if total:
            _samples(con, site, hexes)  # every shard file, empty ones too
    finally:
        con.close()
    return {
        "rows": total,
        "sample_hex": hexes,
        "prompt_chunk": PROMPT_CHUNK,
        "prompt_chunks": chunks,
        "releases": [[v.ref, f"{dataset_page_path(v.name)}#v-{v.version}", v.status] for v in versions],
        "generators": generators,
        "not_indexed": [[v.ref, v.indexed] for v in versions if v.indexed],
    }


# --- the site, atomically ------------------------------------------------------------------------------


def _check_out(out: Path) -> None:
    if out.is_symlink():
        raise WorkspaceError(f"{out} is a symbolic link; give a real folder (or a new one) for the catalog")
    if out.exists() and not out.is_dir():
        raise WorkspaceError(f"{out} is a file, not a folder; give a new or empty folder for the catalog")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise WorkspaceError(
            f"{out} is not empty and is not a catalog synthreg wrote (no {MARKER}); give a new or empty "
            "folder, so nothing of yours is replaced"
        )


def _swap(tmp: Path, out: Path) -> None:
    """Rename the finished site into place: ``out`` is the old site or the new one, never a mix."""
    if out.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.rename(out, old / "site")
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def write_catalog(
    ws: Path, out: Path, trust_file: Path | str | None = None, progress: Callable[..., None] | None = None
) -> CatalogSummary:
    """Gather, render and write the catalog site to ``out`` (see the module's docstring)."""
    out = Path(os.path.abspath(out))
    _check_out(out)
    found = list_releases(ws)
    trust = reading_trust(ws, trust_file) if found else None  # no root: each version says UNCHECKED
    refs = [(n, v) for n, vs in found.items() for v in vs]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        versions = []
        for i, (n, v) in enumerate(refs):
            versions.append(_entry(ws, n, v, trust))
            if progress:
                progress(i + 1, 2 * len(refs) + 1, f"{n}@{v}")
        _reports(ws, tmp, versions)
        meta = build_index(ws, tmp, versions)
        if progress:
            progress(2 * len(refs), 2 * len(refs) + 1, "models")
        models, note = _models(ws)
        made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        for path, text in catalog_pages(CatalogData(versions, models, note, made, meta)).items():
            (tmp / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp / path).write_text(text, encoding="utf-8")
        (tmp / MARKER).write_text("a catalog written by `synthreg catalog`; it is replaced as a whole\n")
        os.chmod(tmp, 0o755)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if progress:
        progress(2 * len(refs) + 1, 2 * len(refs) + 1, "done")
    return CatalogSummary(
        out=out,
        datasets=len(found),
        versions=len(versions),
        models=len(models),
        models_note=note,
        indexed_rows=meta["rows"],
        not_indexed=[(v.ref, v.indexed) for v in versions if v.indexed],
    )


__all__ = ["MARKER", "CatalogSummary", "build_index", "fnv1a", "sample_hex", "write_catalog"]
